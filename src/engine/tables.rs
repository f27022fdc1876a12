//! Folders of the lake as tables, besides the datasets [`super::Engine`] registers: the outputs
//! flowhealth writes (metric outputs, breaches, the run ledger; registered by the modules that
//! own their layout, through [`register_folder`]) and the `read_parquet('path')` table function
//! over any folder or file of the lake.
//!
//! Each is a DataFusion `ListingTable` over the lake's Parquet files, never rows copied into
//! memory: a table is read when a query runs (so it sees what was written since the session
//! began), its `key=value` folders are partition columns a filter prunes, and a cluster engine
//! can read it as it reads the datasets.

use std::future::Future;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{MemorySchemaProvider, TableFunctionArgs, TableFunctionImpl};
use datafusion::common::{
    DataFusionError, ScalarValue, TableReference, plan_datafusion_err, plan_err,
};
use datafusion::datasource::TableProvider;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::logical_expr::Expr;
use datafusion::prelude::SessionContext;

use crate::error::Result;
use crate::lake::Lake;

/// The SQL name of the table function.
pub const READ_PARQUET: &str = "read_parquet";

/// Registers the Parquet files below `folder` (path parts under the lake's root) as table
/// `name` (`breaches`, or `metrics.evidence_rate` in the schema `metrics`, created when
/// needed), read with `schema`. `partitions` are the `key=value` folders between `folder` and
/// the files, outermost first, with their types; a column of `schema` named like one of them is
/// dropped (the folder's value is the one that counts).
pub(crate) fn register_folder(
    ctx: &SessionContext,
    lake: &Lake,
    name: TableReference,
    folder: &[&str],
    partitions: &[(&str, DataType)],
    schema: &Schema,
) -> Result<()> {
    if let Some(schema_name) = name.schema()
        && let Some(catalog) = ctx.catalog("datafusion")
        && catalog.schema(schema_name).is_none()
    {
        catalog.register_schema(schema_name, Arc::new(MemorySchemaProvider::new()))?;
    }
    let url = ListingTableUrl::parse(lake.folder_url(folder))?;
    let table = listing_table(url, partitions, schema)?;
    ctx.deregister_table(name.clone())?;
    ctx.register_table(name, Arc::new(table))?;
    Ok(())
}

/// A listing table of the Parquet files at `url` with `partitions` and the columns of `schema`
/// that are not partition columns (without the file's metadata).
fn listing_table(
    url: ListingTableUrl,
    partitions: &[(&str, DataType)],
    schema: &Schema,
) -> Result<ListingTable> {
    let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
        .with_file_extension(".parquet")
        .with_table_partition_cols(
            partitions
                .iter()
                .map(|(name, data_type)| (name.to_string(), data_type.clone()))
                .collect(),
        );
    // Nullable whatever one file says: a column can be NULL in another file, or absent there.
    let columns: Vec<Field> = schema
        .fields()
        .iter()
        .filter(|f| !partitions.iter().any(|(name, _)| f.name() == name))
        .map(|f| f.as_ref().clone().with_nullable(true))
        .collect();
    let config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(Arc::new(Schema::new(columns)));
    Ok(ListingTable::try_new(config)?)
}

/// The type of a partition column of a folder `read_parquet` reads, by its name: `dt` is the
/// lake's local day (a `DATE`), `version` a metric version (a `BIGINT`); anything else is text.
pub(crate) fn partition_type(name: &str) -> DataType {
    match name {
        "dt" => DataType::Date32,
        "version" => DataType::Int64,
        _ => DataType::Utf8,
    }
}

/// Registers `read_parquet('path')`: the Parquet files at `path` in the lake (a folder, one
/// file, or a folder and a pattern of file names such as `raw/actions/**/*.parquet`), with
/// their `key=value` folders as columns (filter on those, not on the pattern: DataFusion matches
/// a pattern against file names only). `path` is relative to the lake's root; the lake's own location in front of it
/// (`lake/metrics/...` as configured, or the full path or URL) is accepted too.
pub(crate) fn register_read_parquet(ctx: &SessionContext, lake: &Lake, configured: &str) {
    let mut prefixes = vec![lake.display().to_string()];
    let configured = configured
        .trim()
        .trim_start_matches("./")
        .trim_end_matches('/');
    if !configured.is_empty() && !configured.contains("://") {
        prefixes.push(configured.to_string());
    }
    ctx.register_udtf(
        READ_PARQUET,
        Arc::new(ReadParquet {
            base: lake.folder_url(&[]),
            display: lake.display().to_string(),
            prefixes,
        }),
    );
}

#[derive(Debug)]
struct ReadParquet {
    /// The lake root's URL, ending in `/`.
    base: String,
    /// The lake's location, for messages.
    display: String,
    /// What may stand in front of a path for the lake's root (its location as configured and
    /// as shown).
    prefixes: Vec<String>,
}

impl ReadParquet {
    /// `text` as a path below the lake's root, or why it is not one.
    fn relative<'a>(&self, text: &'a str) -> datafusion::error::Result<&'a str> {
        let mut path = text.trim().trim_start_matches("./");
        for prefix in &self.prefixes {
            if let Some(rest) = path.strip_prefix(prefix.as_str())
                && (rest.is_empty() || rest.starts_with('/'))
            {
                path = rest.trim_start_matches('/');
                break;
            }
        }
        let outside = path.starts_with('/')
            || path.contains("://")
            || path.split('/').any(|segment| segment == "..");
        if outside {
            return plan_err!(
                "read_parquet reads the lake ({}): give a path inside it, e.g. \
                 read_parquet('metrics/process_health_index/version=1') (not `{text}`)",
                self.display
            );
        }
        Ok(path)
    }
}

impl TableFunctionImpl for ReadParquet {
    fn call_with_args(
        &self,
        args: TableFunctionArgs,
    ) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        let text = match args.exprs() {
            [Expr::Literal(ScalarValue::Utf8(Some(text)), _)] => text,
            _ => {
                return plan_err!(
                    "read_parquet takes one text argument, a path in the lake: \
                     read_parquet('metrics/evidence_rate/version=3')"
                );
            }
        };
        let path = self.relative(text)?;
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let glob_at = segments.iter().position(|s| s.contains(['*', '?', '[']));
        let is_glob = glob_at.is_some();
        let url = match glob_at {
            // The folder up to the first segment with a wildcard, and the rest as the pattern.
            Some(at) if segments[at..].iter().any(|s| s.contains('=')) => {
                return plan_err!(
                    "read_parquet('{text}'): a pattern is matched against file names only, not \
                     `key=value` folders: read the folder above them and filter on the column, \
                     e.g. read_parquet('metrics/evidence_rate') WHERE version = 3"
                );
            }
            Some(at) => {
                let folder = format!("{}{}", self.base, segments[..at].join("/"));
                let folder = ListingTableUrl::parse(format!("{}/", folder.trim_end_matches('/')))?;
                let pattern = glob::Pattern::new(&segments[at..].join("/"))
                    .map_err(|e| plan_datafusion_err!("read_parquet('{text}'): {e}"))?;
                ListingTableUrl::try_new(folder.get_url().clone(), Some(pattern))?
            }
            None if path.ends_with(".parquet") => {
                ListingTableUrl::parse(format!("{}{path}", self.base))?
            }
            None => ListingTableUrl::parse(format!("{}{}/", self.base, segments.join("/")))?,
        };
        let session = args.session();
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let (partitions, schema) = block_on(async {
            let partitions = if url.is_collection() || is_glob {
                options.infer_partitions(session, &url).await?
            } else {
                Vec::new()
            };
            let schema = options.infer_schema(session, &url).await;
            Ok::<_, DataFusionError>((partitions, schema))
        })??;
        let schema = schema.map_err(|e| {
            let message = match e {
                DataFusionError::Plan(message) => message,
                other => other.strip_backtrace(),
            };
            plan_datafusion_err!(
                "read_parquet('{text}'): {}",
                message.replace(&self.base, "")
            )
        })?;
        let partitions: Vec<(&str, DataType)> = partitions
            .iter()
            .map(|name| (name.as_str(), partition_type(name)))
            .collect();
        let table = listing_table(url, &partitions, &schema)
            .map_err(|e| plan_datafusion_err!("read_parquet('{text}'): {e}"))?;
        Ok(Arc::new(table))
    }
}

/// Runs `future` to its end from synchronous code inside the runtime (a table function plans
/// synchronously, and finding a folder's files and schema is I/O). It needs the commands'
/// multi-threaded runtime, which lets this worker block while the others carry on.
fn block_on<F: Future>(future: F) -> datafusion::error::Result<F::Output> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            Ok(tokio::task::block_in_place(|| handle.block_on(future)))
        }
        _ => plan_err!("read_parquet needs a multi-threaded runtime"),
    }
}
