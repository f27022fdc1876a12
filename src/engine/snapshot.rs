//! The latest opportunity snapshot, kept in the lake from one run to the next.
//!
//! `opportunities` is the latest row of each opportunity over every snapshot ever ingested: a
//! sort of the whole dimension, which grows with the history. A run that reads it (metrics,
//! alerts) starts instead from the table the previous run kept in
//! `_flowhealth/snapshots/opportunities.parquet`. That file records in its metadata the
//! `raw/opportunities` files it covers (path, size, modification time, e-tag); only the files
//! that landed since are read, the opportunities they mention are decided again, and the rest
//! are kept as they are. When a covered file changed or is gone, everything is read again.
//! Either way the rows are those of the `opportunities` view.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use chrono::NaiveDate;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{Date32Type, Schema, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::Compression;
use object_store::ObjectMeta;

use super::Engine;
use crate::error::{Error, Result};
use crate::lake::{Lake, decode_parquet, encode_parquet_as, file_version, partition_day};

const KEPT: [&str; 3] = ["_flowhealth", "snapshots", "opportunities.parquet"];
const FILES_KEY: &str = "flowhealth.files";

/// The latest row of each opportunity in `relation` (the latest ingest; within one ingest the
/// last file by name, then its last line). One sorted pass keeps each opportunity's first row: a
/// window partitioned by opportunity costs DataFusion a few microseconds per opportunity.
pub fn latest(relation: &str) -> String {
    format!(
        "SELECT * EXCLUDE (previous_id) FROM (
           SELECT *, lag(opportunity_id) OVER (
                       ORDER BY opportunity_id, ingested_at DESC, source_file DESC, source_line DESC) AS previous_id
           FROM {relation} AS candidates)
         WHERE previous_id IS DISTINCT FROM opportunity_id"
    )
}

/// The snapshots that landed since `$since` replace what was kept for their opportunities.
fn merge_sql() -> String {
    format!(
        "WITH fresh AS (SELECT * FROM opportunity_snapshots WHERE dt >= $since)
         SELECT * FROM opportunities_kept WHERE opportunity_id NOT IN (SELECT opportunity_id FROM fresh)
         UNION ALL
         {}",
        latest(
            "(SELECT * FROM opportunities_kept WHERE opportunity_id IN (SELECT opportunity_id FROM fresh)
              UNION ALL SELECT * FROM fresh)"
        )
    )
}

/// Replaces the `opportunities` view with its rows, from the kept snapshot and what landed
/// since; keeps the result for the next run.
pub async fn register_opportunities(engine: &Engine, lake: &Lake) -> Result<()> {
    // Listed before anything is read: a file landing meanwhile is merged again next time, which
    // changes nothing (its rows are already in).
    let files = lake.list(&["raw", "opportunities"]).await?;
    let versions: Vec<String> = files.iter().map(file_version).collect();
    let kept = kept(lake).await?;
    let (schema, batches) = match kept {
        Some((covered, schema, bytes)) if covered == versions => {
            // Read as a Parquet table, so a query decodes only the columns it needs; from a copy,
            // so a run replacing the file meanwhile cannot change it under us.
            tracing::info!("opportunities: the kept snapshot is current");
            return engine
                .register_parquet("opportunities", schema, bytes)
                .await;
        }
        Some((covered, schema, bytes)) => match since(&files, &versions, &covered) {
            Some(since) => {
                tracing::info!(
                    "opportunities: merging {} new file(s) from {since} into the kept snapshot",
                    versions.len() - covered.len()
                );
                let batches = decode(bytes, &schema)?;
                merge(engine, schema, batches, since).await?
            }
            None => everything(engine).await?,
        },
        None => everything(engine).await?,
    };
    keep(lake, &versions, &schema, &batches).await?;
    engine.register_rows("opportunities", schema, batches).await
}

/// The earliest `dt=` day of the files not covered yet; `None` when a covered file changed or is
/// gone, or a new file is outside the `dt=` folders (then everything is read again).
fn since(files: &[ObjectMeta], versions: &[String], covered: &[String]) -> Option<NaiveDate> {
    let (before, now): (HashSet<&String>, HashSet<&String>) =
        (covered.iter().collect(), versions.iter().collect());
    if !before.is_subset(&now) {
        return None;
    }
    files
        .iter()
        .zip(versions)
        .filter(|(_, version)| !before.contains(version))
        .map(|(file, _)| partition_day(file))
        .min()
        .flatten()
}

async fn everything(engine: &Engine) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    tracing::info!("opportunities: computing the snapshot from every file");
    let frame = engine.ctx().table("opportunities").await?;
    let schema = Arc::new(frame.schema().as_arrow().clone());
    Ok((schema, engine.collect(frame, Error::from).await?))
}

async fn merge(
    engine: &Engine,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
    since: NaiveDate,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    engine
        .register_rows("opportunities_kept", schema, batches)
        .await?;
    let ctx = engine.ctx();
    let frame = ctx.sql(&merge_sql()).await?.with_param_values(vec![(
        "since",
        ScalarValue::Date32(Some(Date32Type::from_naive_date(since))),
    )])?;
    let schema = Arc::new(frame.schema().as_arrow().clone());
    let batches = engine.collect(frame, Error::from).await?;
    ctx.deregister_table("opportunities_kept")?;
    Ok((schema, batches))
}

/// The kept snapshot: the file versions it covers, its schema (without metadata) and the file,
/// read whole in one request (a consistent copy even while another run replaces it).
async fn kept(lake: &Lake) -> Result<Option<(Vec<String>, SchemaRef, Bytes)>> {
    let Some(bytes) = lake.get(&lake.path(&KEPT)).await? else {
        return Ok(None);
    };
    let schema = ParquetRecordBatchReaderBuilder::try_new(bytes.clone())?
        .schema()
        .clone();
    let Some(covered) = schema
        .metadata()
        .get(FILES_KEY)
        .and_then(|text| serde_json::from_str::<Vec<String>>(text).ok())
    else {
        return Ok(None);
    };
    let plain = Arc::new(Schema::new(schema.fields().clone()));
    Ok(Some((covered, plain, bytes)))
}

/// The kept rows, with `schema` (without the metadata).
fn decode(bytes: Bytes, schema: &SchemaRef) -> Result<Vec<RecordBatch>> {
    let (_, batches) = decode_parquet(bytes)?;
    batches
        .into_iter()
        .map(|batch| Ok(batch.with_schema(schema.clone())?))
        .collect()
}

async fn keep(
    lake: &Lake,
    versions: &[String],
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<()> {
    let rows = concat_batches(schema, batches)?;
    let metadata = [(
        FILES_KEY.to_string(),
        serde_json::to_string(versions).expect("strings"),
    )];
    let schema = schema.as_ref().clone().with_metadata(metadata.into());
    let rows = rows.with_schema(Arc::new(schema))?;
    // The ids are unique: without a dictionary.
    let bytes = encode_parquet_as(&rows, Compression::SNAPPY, &["opportunity_id"])?;
    lake.put(&lake.path(&KEPT), bytes).await
}
