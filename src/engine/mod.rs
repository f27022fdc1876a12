//! The DataFusion session over the lake: every dataset registered as a table (with its `dt`
//! partition column, so a filter on `dt` reads only those folders), the configured timezone and
//! the process-flow function library ([`crate::udf`]). Everything that runs SQL builds its
//! session here; nothing else registers tables or functions.
//!
//! That makes [`session`] the seam for another engine (a cluster, say): it is the only place a
//! `SessionContext` is made, and every caller (metrics, alerts, a pipeline's `sql:` step,
//! `flowhealth query`) only plans SQL on it, binds parameters and collects.
//!
//! Tables: `actions`, `stage_changes`, `opportunities` (the latest snapshot of each opportunity),
//! `opportunity_snapshots` (every snapshot), and `quarantine_<dataset>` for rejected rows; the
//! configured `stages`, `rules_evidence_required` and `rules_store_actions`; the table function
//! `read_parquet('path')` over any folder of the lake ([`tables`]). The outputs flowhealth
//! writes (metric outputs, breaches, runs) are registered by the modules that know their layout,
//! through [`tables::register_folder`].

pub mod query;
pub mod snapshot;
pub mod tables;

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Schema};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::config::Config;
use crate::error::Result;
use crate::lake::Lake;
use crate::lake::schema::Dataset;

/// A session with every lake table registered.
pub async fn session(config: &Config, lake: &Lake) -> Result<SessionContext> {
    let session_config = SessionConfig::new()
        .with_information_schema(true)
        .set_str("datafusion.execution.time_zone", config.timezone.name());
    let ctx = SessionContext::new_with_config(session_config);
    let lake_url = ListingTableUrl::parse(lake.folder_url(&[]))?;
    ctx.register_object_store(lake_url.object_store().as_ref(), lake.store().clone());
    for dataset in Dataset::ALL {
        let raw_name = match dataset {
            Dataset::Opportunities => "opportunity_snapshots",
            other => other.name(),
        };
        let folder = |area: &str| ListingTableUrl::parse(lake.folder_url(&[area, dataset.name()]));
        register(&ctx, raw_name, folder("raw")?, dataset.raw_schema(), true)?;
        let quarantine = format!("quarantine_{}", dataset.name());
        register(
            &ctx,
            &quarantine,
            folder("quarantine")?,
            dataset.quarantine_schema(),
            true,
        )?;
    }
    crate::udf::register(&ctx, config);
    tables::register_read_parquet(&ctx, lake, &config.lake.url);
    register_rules(&ctx, config)?;
    // The dimension: latest snapshot wins.
    ctx.sql(&format!(
        "CREATE VIEW opportunities AS {}",
        snapshot::latest("opportunity_snapshots")
    ))
    .await?;
    Ok(ctx)
}

/// The configured stages and rules as small tables, so metric SQL joins them instead of
/// repeating the config: `stages`, `rules_evidence_required`, `rules_store_actions`.
fn register_rules(ctx: &SessionContext, config: &Config) -> Result<()> {
    let stages = &config.stages;
    let table = |columns: Vec<(&str, ArrayRef)>| -> Result<Arc<MemTable>> {
        let batch = RecordBatch::try_from_iter(columns)?;
        Ok(Arc::new(MemTable::try_new(
            batch.schema(),
            vec![vec![batch]],
        )?))
    };
    ctx.register_table(
        "stages",
        table(vec![
            (
                "name",
                Arc::new(StringArray::from_iter_values(
                    stages.iter().map(|s| &s.name),
                )),
            ),
            (
                "stage_rank",
                Arc::new(Int64Array::from_iter_values(1..=stages.len() as i64)),
            ),
            (
                "silent_timeout_h",
                Arc::new(Float64Array::from_iter_values(
                    stages.iter().map(|s| s.silent_timeout_h),
                )),
            ),
            (
                "terminal",
                Arc::new(BooleanArray::from_iter(
                    stages.iter().map(|s| Some(s.terminal)),
                )),
            ),
            (
                "from_any",
                Arc::new(BooleanArray::from_iter(
                    stages.iter().map(|s| Some(s.from_any)),
                )),
            ),
            (
                "entry",
                Arc::new(BooleanArray::from_iter(
                    stages.iter().map(|s| Some(s.entry)),
                )),
            ),
        ])?,
    )?;
    let rules = &config.rules;
    ctx.register_table(
        "rules_evidence_required",
        table(vec![(
            "action_type",
            Arc::new(StringArray::from_iter_values(&rules.evidence_required)),
        )])?,
    )?;
    ctx.register_table(
        "rules_store_actions",
        table(vec![
            (
                "action_type",
                Arc::new(StringArray::from_iter_values(rules.store_actions.keys())),
            ),
            (
                "daily_minimum",
                Arc::new(Int64Array::from_iter_values(
                    rules.store_actions.values().map(|m| *m as i64),
                )),
            ),
        ])?,
    )?;
    Ok(())
}

/// Registers the Parquet files at `url` (a folder or one file, on the lake's store, registered
/// by the caller) as table `name`, with the schema given (so an empty folder is an empty table);
/// with `hive_dt`, a folder's `dt=` subfolders are the `dt` partition column.
fn register(
    ctx: &SessionContext,
    name: &str,
    url: ListingTableUrl,
    schema: Arc<Schema>,
    hive_dt: bool,
) -> Result<()> {
    let mut options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    if hive_dt {
        options = options.with_table_partition_cols(vec![("dt".to_string(), DataType::Date32)]);
    }
    let table_config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(schema);
    ctx.deregister_table(name)?;
    ctx.register_table(name, Arc::new(ListingTable::try_new(table_config)?))?;
    Ok(())
}

/// Registers a computed result (a metric another metric reads) as table `name`, replacing one
/// registered before.
pub(crate) fn register_result(
    ctx: &SessionContext,
    name: &str,
    schema: Arc<Schema>,
    batches: Vec<RecordBatch>,
) -> Result<()> {
    let table = MemTable::try_new(schema, vec![batches])?;
    ctx.deregister_table(name)?;
    ctx.register_table(name, Arc::new(table))?;
    Ok(())
}

/// Names of the tables and views a query can use, for hints and `\d`: those of the default
/// schema by name, the others qualified (`metrics.evidence_rate`), `information_schema` left out.
pub(crate) fn table_names(ctx: &SessionContext) -> Vec<String> {
    let Some(catalog) = ctx.catalog("datafusion") else {
        return Vec::new();
    };
    let mut names = Vec::new();
    let mut schemas = catalog.schema_names();
    // The default schema first, then the others by name.
    schemas.sort_by_key(|s| (s != "public", s.clone()));
    for schema_name in schemas {
        if schema_name == "information_schema" {
            continue;
        }
        let Some(schema) = catalog.schema(&schema_name) else {
            continue;
        };
        let mut tables = schema.table_names();
        tables.sort();
        names.extend(tables.into_iter().map(|t| match schema_name.as_str() {
            "public" => t,
            other => format!("{other}.{t}"),
        }));
    }
    names
}

/// Record batches -> one JSON object per row, for templates and serde: NULLs are kept as null
/// (`none` in a template, not undefined), timestamps are RFC 3339 text.
pub fn json_rows(
    batches: &[RecordBatch],
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    use datafusion::arrow::json::{WriterBuilder, writer::JsonArray};
    let mut writer = WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, JsonArray>(Vec::new());
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    Ok(serde_json::from_slice(&bytes)?)
}

/// A column of a [`json_rows`] row as text (numbers spelled out); None for NULL or absent.
pub(crate) fn row_text(
    row: &serde_json::Map<String, serde_json::Value>,
    column: &str,
) -> Option<String> {
    match row.get(column)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// A column of a [`json_rows`] row as a number (numeric text parsed); None otherwise.
pub(crate) fn row_number(
    row: &serde_json::Map<String, serde_json::Value>,
    column: &str,
) -> Option<f64> {
    match row.get(column)? {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}
