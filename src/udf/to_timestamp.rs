//! `to_timestamp(text)` and its unit variants, as DataFusion ships them, with their results
//! annotated with the session's timezone.
//!
//! With `datafusion.execution.time_zone` set (flowhealth always sets the configured timezone),
//! DataFusion 55 declares `to_timestamp(column)` as `Timestamp(ns, "<tz>")` but returns an array of
//! `Timestamp(ns)` for a text column, so a query that plans fails when it runs ("column types
//! must match schema types, expected Timestamp(ns, "Asia/Shanghai") but found Timestamp(ns)"):
//! apache/datafusion#24632, fixed upstream by #24636 (the array result annotated with the
//! timezone). The values are right, instants parsed in the session's timezone; only the
//! annotation is missing. Until flowhealth is on a DataFusion with the fix, each of these
//! functions is the built-in one wrapped so that an array result gets the type the function
//! declared. Scalar arguments (constant-folded) were never affected.

use std::sync::Arc;

use datafusion::arrow::array::make_array;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::common::config::ConfigOptions;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature,
};
use datafusion::prelude::SessionContext;

/// The functions with the missing annotation: every `to_timestamp*` of DataFusion 55.
pub const AFFECTED: [&str; 5] = [
    "to_timestamp",
    "to_timestamp_seconds",
    "to_timestamp_millis",
    "to_timestamp_micros",
    "to_timestamp_nanos",
];

/// A built-in function whose array results are given the timestamp type it declared.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Annotated {
    inner: Arc<ScalarUDF>,
}

impl Annotated {
    pub fn new(inner: Arc<ScalarUDF>) -> Annotated {
        Annotated { inner }
    }
}

/// Replaces each of [`AFFECTED`] in `ctx` with its annotated version (the built-in, as the
/// session configured it, inside).
pub fn register(ctx: &SessionContext) {
    let state = ctx.state();
    for name in AFFECTED {
        if let Some(inner) = state.scalar_functions().get(name) {
            ctx.register_udf(ScalarUDF::new_from_impl(Annotated::new(inner.clone())));
        }
    }
}

impl ScalarUDFImpl for Annotated {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(
        &self,
        args: ReturnFieldArgs,
    ) -> Result<datafusion::arrow::datatypes::FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn with_updated_config(&self, config: &ConfigOptions) -> Option<ScalarUDF> {
        let inner = self.inner.inner().with_updated_config(config)?;
        Some(ScalarUDF::new_from_impl(Annotated::new(Arc::new(inner))))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let declared = args.return_field.data_type().clone();
        // The implementation itself: `ScalarUDF::invoke_with_args` asserts the type this fixes.
        match self.inner.inner().invoke_with_args(args)? {
            ColumnarValue::Array(array) => {
                let annotate = matches!(
                    (array.data_type(), &declared),
                    (DataType::Timestamp(unit, have), DataType::Timestamp(want_unit, want))
                        if unit == want_unit && have != want
                );
                if !annotate {
                    return Ok(ColumnarValue::Array(array));
                }
                // Same values (UTC epoch instants), the declared timezone: a relabel, not a
                // conversion, which a cast from a timestamp without a timezone would be.
                let data = array.to_data().into_builder().data_type(declared).build()?;
                Ok(ColumnarValue::Array(make_array(data)))
            }
            scalar => Ok(scalar),
        }
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

#[cfg(test)]
mod tests {
    use datafusion::prelude::SessionConfig;

    use super::*;

    async fn types(annotated: bool) -> Result<Vec<String>> {
        let config =
            SessionConfig::new().set_str("datafusion.execution.time_zone", "Asia/Shanghai");
        let ctx = SessionContext::new_with_config(config);
        if annotated {
            register(&ctx);
        }
        let batches = ctx
            .sql(
                "SELECT to_timestamp(s) AS a, to_timestamp_micros(s) AS b, to_timestamp(s) < now() AS c \
                 FROM (VALUES ('2026-01-01T08:00:00'), ('2026-01-01T08:00:00Z')) AS t(s)",
            )
            .await?
            .collect()
            .await?;
        let batch = &batches[0];
        let a = batch
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::TimestampNanosecondArray>()
            .expect("nanoseconds");
        // 08:00 in Shanghai is 00:00 UTC; 08:00Z is 08:00 UTC.
        assert_eq!(a.value(0), 1_767_225_600_000_000_000);
        assert_eq!(a.value(1), 1_767_254_400_000_000_000);
        Ok(batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.data_type().to_string())
            .collect())
    }

    #[tokio::test]
    async fn a_text_column_gets_the_declared_timezone() {
        // The built-in alone fails at run time (apache/datafusion#24632); when DataFusion has the
        // fix, this fails and the wrapper can go.
        assert!(types(false).await.is_err());
        assert_eq!(
            types(true).await.unwrap(),
            [
                "Timestamp(ns, \"Asia/Shanghai\")",
                "Timestamp(µs, \"Asia/Shanghai\")",
                "Boolean"
            ]
        );
    }
}
