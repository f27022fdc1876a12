//! Our functions travel in the plans with their configuration.
//!
//! By default DataFusion sends a function by name, and the receiving process looks the name up in
//! its own registry. Ours are built from `config.yaml` (stages, timezone, business calendar), so
//! by name a scheduler or executor would compute with a configuration of its own: wrong numbers,
//! and no error, whenever two copies drift. Instead every one of our functions in a plan carries
//! [`crate::udf::Settings`] (JSON) in its `fun_definition`, and the receiving process builds the
//! function from that. A process that has no such payload for a name it does not know fails the
//! query; it never falls back to a configuration of its own, because it has none.
//!
//! [`Libraries`] remembers every function library a process has built: the client's own, and on
//! a scheduler the ones decoded from the plans it received, which it must encode again for the
//! executors. A function is encoded with the settings of a library holding a function equal to it
//! (DataFusion compares functions by value), so re-encoding never changes what it computes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::{Result, TableReference, plan_datafusion_err};
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{AggregateUDF, Extension, LogicalPlan, ScalarUDF};
use datafusion::physical_plan::ExecutionPlan;
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};

use crate::udf::Settings;

/// Marks a payload as ours, and its format version.
const FORMAT: &str = "flowhealth.functions.v1";

#[derive(serde::Serialize, serde::Deserialize)]
struct Payload {
    format: String,
    settings: Settings,
}

/// The function libraries this process has built, by payload, and the payload of each function.
#[derive(Debug, Default)]
pub struct Libraries {
    known: Mutex<Known>,
}

#[derive(Debug, Default)]
struct Known {
    /// Payload -> the library built from it.
    libraries: HashMap<Vec<u8>, (Vec<ScalarUDF>, Vec<AggregateUDF>)>,
    scalars: HashMap<ScalarUDF, Arc<[u8]>>,
    aggregates: HashMap<AggregateUDF, Arc<[u8]>>,
}

impl Libraries {
    /// Knows the library built from `settings` (the client's own).
    pub fn with(settings: &Settings) -> Result<Arc<Libraries>> {
        let libraries = Arc::new(Libraries::default());
        let payload = serde_json::to_vec(&Payload {
            format: FORMAT.into(),
            settings: settings.clone(),
        })
        .map_err(|e| plan_datafusion_err!("cannot encode the function settings: {e}"))?;
        libraries.library(&payload)?;
        Ok(libraries)
    }

    /// The library built from `payload`, built once per payload.
    fn library(&self, payload: &[u8]) -> Result<(Vec<ScalarUDF>, Vec<AggregateUDF>)> {
        let mut known = self.known.lock().expect("not poisoned");
        if let Some(library) = known.libraries.get(payload) {
            return Ok(library.clone());
        }
        let decoded: Payload = serde_json::from_slice(payload)
            .ok()
            .filter(|p: &Payload| p.format == FORMAT)
            .ok_or_else(|| {
                plan_datafusion_err!(
                    "a function in the plan carries settings this flowhealth cannot read: \
                     the client and the cluster must run the same flowhealth version"
                )
            })?;
        let library = crate::udf::from_settings(&decoded.settings)?;
        let shared: Arc<[u8]> = payload.into();
        for udf in &library.0 {
            known.scalars.insert(udf.clone(), shared.clone());
        }
        for udaf in &library.1 {
            known.aggregates.insert(udaf.clone(), shared.clone());
        }
        known.libraries.insert(payload.to_vec(), library.clone());
        Ok(library)
    }

    fn decode_udf(&self, name: &str, payload: &[u8]) -> Result<Arc<ScalarUDF>> {
        unknown(name, payload)?;
        named(self.library(payload)?.0, name, ScalarUDF::name)
    }

    fn decode_udaf(&self, name: &str, payload: &[u8]) -> Result<Arc<AggregateUDF>> {
        unknown(name, payload)?;
        named(self.library(payload)?.1, name, AggregateUDF::name)
    }

    /// Appends `udf`'s payload to `buf` when it is one of ours; DataFusion's own functions go by
    /// name, as usual.
    fn encode_udf(&self, udf: &ScalarUDF, buf: &mut Vec<u8>) {
        if let Some(payload) = self.known.lock().expect("not poisoned").scalars.get(udf) {
            buf.extend_from_slice(payload);
        }
    }

    fn encode_udaf(&self, udaf: &AggregateUDF, buf: &mut Vec<u8>) {
        if let Some(payload) = self
            .known
            .lock()
            .expect("not poisoned")
            .aggregates
            .get(udaf)
        {
            buf.extend_from_slice(payload);
        }
    }
}

/// The function called `name` of a library.
fn named<T>(functions: Vec<T>, name: &str, name_of: impl Fn(&T) -> &str) -> Result<Arc<T>> {
    functions
        .into_iter()
        .find(|function| name_of(function) == name)
        .map(Arc::new)
        .ok_or_else(|| plan_datafusion_err!("`{name}` is not a flowhealth function"))
}

/// A function sent by name that this process's registry does not have: not ours (ours always
/// carry their settings), so nothing here can compute it.
fn unknown(name: &str, payload: &[u8]) -> Result<()> {
    if payload.is_empty() {
        return Err(plan_datafusion_err!("unknown function `{name}`"));
    }
    Ok(())
}

/// The four methods of a codec that carry our functions with their settings: the same in the
/// logical and the physical codec (two traits), each holding `libraries`.
macro_rules! functions_with_settings {
    () => {
        fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
            self.libraries.decode_udf(name, buf)
        }

        fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
            self.libraries.encode_udf(node, buf);
            Ok(())
        }

        fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
            self.libraries.decode_udaf(name, buf)
        }

        fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
            self.libraries.encode_udaf(node, buf);
            Ok(())
        }
    };
}

/// One of Ballista's codecs (`C`: the logical or the physical one), with our functions carrying
/// their settings.
#[derive(Debug)]
pub struct WithSettings<C: ?Sized> {
    inner: Arc<C>,
    libraries: Arc<Libraries>,
}

/// Ballista's logical codec (the client encodes, the scheduler decodes), with our functions.
pub type LogicalCodec = WithSettings<dyn LogicalExtensionCodec>;

/// Ballista's physical codec (the scheduler encodes, the executors decode), with our functions.
pub type PhysicalCodec = WithSettings<dyn PhysicalExtensionCodec>;

impl LogicalCodec {
    pub fn new(libraries: Arc<Libraries>) -> LogicalCodec {
        WithSettings {
            inner: Arc::new(ballista_core::serde::BallistaLogicalExtensionCodec::default()),
            libraries,
        }
    }
}

impl PhysicalCodec {
    pub fn new(libraries: Arc<Libraries>) -> PhysicalCodec {
        WithSettings {
            inner: Arc::new(ballista_core::serde::BallistaPhysicalExtensionCodec::default()),
            libraries,
        }
    }
}

impl LogicalExtensionCodec for LogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> Result<Extension> {
        self.inner.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        self.inner
            .try_decode_table_provider(buf, table_ref, schema, ctx)
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        self.inner.try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> Result<Arc<dyn FileFormatFactory>> {
        self.inner.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> Result<()> {
        self.inner.try_encode_file_format(buf, node)
    }

    functions_with_settings!();
}

impl PhysicalExtensionCodec for PhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.inner.try_decode(buf, inputs, ctx, proto_converter)
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> Result<()> {
        self.inner.try_encode(node, buf, proto_converter)
    }

    functions_with_settings!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn config(stages: &str) -> Config {
        Config::parse(
            &format!("timezone: Europe/Berlin\nstages: {stages}\n"),
            "test.yaml",
            ".".into(),
            |_| None,
        )
        .unwrap()
    }

    #[test]
    fn a_function_travels_with_its_settings_and_comes_back_equal() {
        let client = config("[{ name: a }, { name: b, silent_timeout_h: 12 }]");
        let libraries = Libraries::with(&crate::udf::Settings::of(&client)).unwrap();
        let (scalars, aggregates) = crate::udf::functions(&client);
        let codec = LogicalCodec::new(libraries);
        for udf in &scalars {
            let mut buf = Vec::new();
            codec.try_encode_udf(udf, &mut buf).unwrap();
            assert!(!buf.is_empty(), "{} carries its settings", udf.name());
            // A process that knows nothing of the client's config builds the same function.
            let elsewhere = LogicalCodec::new(Arc::new(Libraries::default()));
            let decoded = elsewhere.try_decode_udf(udf.name(), &buf).unwrap();
            assert_eq!(decoded.as_ref(), udf);
            // ... and encodes it again with the same settings (the scheduler, for executors).
            let mut again = Vec::new();
            elsewhere.try_encode_udf(&decoded, &mut again).unwrap();
            assert_eq!(again, buf);
        }
        for udaf in &aggregates {
            let mut buf = Vec::new();
            codec.try_encode_udaf(udaf, &mut buf).unwrap();
            let decoded = LogicalCodec::new(Arc::new(Libraries::default()))
                .try_decode_udaf(udaf.name(), &buf)
                .unwrap();
            assert_eq!(decoded.as_ref(), udaf);
        }
    }

    #[test]
    fn functions_of_another_configuration_are_not_equal_and_keep_their_own_settings() {
        let one = config("[{ name: a }, { name: b }]");
        let two = config("[{ name: a }, { name: b, silent_timeout_h: 12 }]");
        let libraries = Libraries::with(&crate::udf::Settings::of(&one)).unwrap();
        let codec = PhysicalCodec::new(libraries);
        let timeout = |config: &Config| {
            crate::udf::functions(config)
                .0
                .into_iter()
                .find(|f| f.name() == "stage_timeout_h")
                .unwrap()
        };
        let mut buf = Vec::new();
        codec.try_encode_udf(&timeout(&two), &mut buf).unwrap();
        // Not known here: not encoded (and a process without it fails the query by name).
        assert!(buf.is_empty());
        codec.try_encode_udf(&timeout(&one), &mut buf).unwrap();
        let decoded = codec.try_decode_udf("stage_timeout_h", &buf).unwrap();
        assert_eq!(decoded.as_ref(), &timeout(&one));
        assert_ne!(decoded.as_ref(), &timeout(&two));
    }

    #[test]
    fn a_payload_of_another_format_is_refused() {
        let codec = LogicalCodec::new(Arc::new(Libraries::default()));
        let error = codec
            .try_decode_udf("stage_rank", b"{\"x\": 1}")
            .unwrap_err();
        assert!(
            error.to_string().contains("same flowhealth version"),
            "{error}"
        );
    }
}
