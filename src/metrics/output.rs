//! Where a metric's outputs live in the lake, and the one place that writes and reads them
//! (`docs/contract.md` section 5):
//!
//! ```text
//! metrics/<metric>/version=<N>/period=<id>/part-0.parquet          the rows + run_id, as_of
//! breaches/metric=<metric>/version=<N>/period=<id>/part-0.parquet  team, value, threshold,
//!                       direction, advice, previous_value, change (+ run_id, as_of)
//! ```
//!
//! Each file is replaced in one atomic put per period. The runner writes them; carried state,
//! the golden tests, the reports, the alerts and the demo read them through here, and
//! [`register_tables`] makes them SQL tables (`metrics.<metric>`, `breaches`).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use super::catalog::{Catalog, Metric};
use crate::error::Result;
use crate::lake::{Lake, encode_parquet};
use crate::time::Period;

/// The columns every output and breach row carries besides the metric's own: the run that wrote
/// it and the instant it was computed as of.
pub(crate) const STAMP_COLUMNS: [&str; 2] = ["run_id", "as_of"];

/// A row whose `value` is outside the metric's healthy range.
#[derive(Debug, Clone)]
pub struct Breach {
    pub team: Option<String>,
    pub value: f64,
    pub threshold: f64,
    /// `below` (under `min`) or `above` (over `max`).
    pub direction: &'static str,
    pub advice: String,
    pub previous_value: Option<f64>,
}

/// Writes `rows` as `metric`'s output for `period_id`, stamped with `run_id` and `as_of`;
/// `metadata` goes into the file's schema (what carried state records about itself).
pub(crate) async fn write_rows(
    lake: &Lake,
    metric: &Metric,
    period_id: &str,
    rows: &RecordBatch,
    run_id: &str,
    as_of: i64,
    metadata: HashMap<String, String>,
) -> Result<()> {
    let stamped = stamp(rows, run_id, as_of)?;
    let schema = stamped.schema().as_ref().clone().with_metadata(metadata);
    let stamped = stamped.with_schema(Arc::new(schema))?;
    lake.put(
        &output_path(lake, metric, period_id),
        encode_parquet(&stamped)?,
    )
    .await
}

/// Writes `breaches` as `metric`'s breaches for `period_id` (an empty file when there are none:
/// the period was checked), stamped with `run_id` and `as_of`.
pub(crate) async fn write_breaches(
    lake: &Lake,
    metric: &Metric,
    period_id: &str,
    breaches: &[Breach],
    run_id: &str,
    as_of: i64,
) -> Result<()> {
    lake.put(
        &breaches_path(lake, metric, period_id),
        encode_parquet(&stamp(&breach_batch(breaches)?, run_id, as_of)?)?,
    )
    .await
}

/// `rows` with `run_id` and `as_of` columns added.
fn stamp(rows: &RecordBatch, run_id: &str, as_of: i64) -> Result<RecordBatch> {
    let n = rows.num_rows();
    let mut fields: Vec<Arc<Field>> = rows.schema().fields().iter().cloned().collect();
    let mut columns: Vec<ArrayRef> = rows.columns().to_vec();
    let [run_id_column, as_of_column] = STAMP_COLUMNS;
    fields.push(Arc::new(Field::new(run_id_column, DataType::Utf8, false)));
    columns.push(Arc::new(StringArray::from(vec![run_id; n])));
    fields.push(Arc::new(Field::new(
        as_of_column,
        crate::lake::schema::timestamp_type(),
        false,
    )));
    columns.push(Arc::new(
        TimestampMicrosecondArray::from(vec![as_of; n]).with_timezone("UTC"),
    ));
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// Where `metric`'s rows for period `period_id` live in the lake.
pub(crate) fn output_path(
    lake: &Lake,
    metric: &Metric,
    period_id: &str,
) -> object_store::path::Path {
    lake.path(&[
        "metrics",
        metric.name(),
        &format!("version={}", metric.version()),
        &format!("period={period_id}"),
        "part-0.parquet",
    ])
}

/// Where the breaches of `metric` for period `period_id` live in the lake.
pub(crate) fn breaches_path(
    lake: &Lake,
    metric: &Metric,
    period_id: &str,
) -> object_store::path::Path {
    lake.path(&[
        "breaches",
        &format!("metric={}", metric.name()),
        &format!("version={}", metric.version()),
        &format!("period={period_id}"),
        "part-0.parquet",
    ])
}

/// The rows written for `metric` and period `period_id`; `None` when that period was not computed.
pub(crate) async fn read_output(
    lake: &Lake,
    metric: &Metric,
    period_id: &str,
) -> Result<Option<Vec<RecordBatch>>> {
    Ok(lake
        .get_parquet(&output_path(lake, metric, period_id))
        .await?
        .map(|(_, batches)| batches))
}

/// The periods `metric` (this version) has output for.
pub(crate) async fn output_periods(lake: &Lake, metric: &Metric) -> Result<Vec<Period>> {
    let version = format!("version={}", metric.version());
    let files = lake.list(&["metrics", metric.name(), &version]).await?;
    Ok(files
        .iter()
        .filter_map(|file| crate::lake::partition_value(file, "period"))
        .filter_map(|id| Period::parse(&id).ok())
        .collect())
}

/// The breaches written for `metric` and period `period_id`; `None` when not computed.
pub(crate) async fn read_breaches(
    lake: &Lake,
    metric: &Metric,
    period_id: &str,
) -> Result<Option<Vec<RecordBatch>>> {
    Ok(lake
        .get_parquet(&breaches_path(lake, metric, period_id))
        .await?
        .map(|(_, batches)| batches))
}

/// The breaches as the rows of their file (see the module documentation).
fn breach_batch(breaches: &[Breach]) -> Result<RecordBatch> {
    let columns: Vec<(&str, ArrayRef)> = vec![
        (
            "team",
            Arc::new(StringArray::from_iter(
                breaches.iter().map(|b| b.team.clone()),
            )),
        ),
        (
            "value",
            Arc::new(Float64Array::from_iter_values(
                breaches.iter().map(|b| b.value),
            )),
        ),
        (
            "threshold",
            Arc::new(Float64Array::from_iter_values(
                breaches.iter().map(|b| b.threshold),
            )),
        ),
        (
            "direction",
            Arc::new(StringArray::from_iter_values(
                breaches.iter().map(|b| b.direction),
            )),
        ),
        (
            "advice",
            Arc::new(StringArray::from_iter_values(
                breaches.iter().map(|b| b.advice.as_str()),
            )),
        ),
        (
            "previous_value",
            Arc::new(Float64Array::from_iter(
                breaches.iter().map(|b| b.previous_value),
            )),
        ),
        (
            "change",
            Arc::new(Float64Array::from_iter(
                breaches
                    .iter()
                    .map(|b| b.previous_value.map(|p| b.value - p)),
            )),
        ),
    ];
    Ok(RecordBatch::try_from_iter(columns)?)
}

/// Registers the metric outputs in the lake as SQL tables (`docs/contract.md` section 5), each
/// over its folder of Parquet files with the period as a column:
///
/// - `metrics.<metric>`: the catalog's latest version of the metric (the one `metrics run` and
///   the reports use), and `metrics.<metric>_v<N>` for every version, the latest included.
///   Versions are tables of their own because a version may change the columns. A version with
///   no output yet has no table. Columns: the metric's own, `run_id`, `as_of`, then `period`.
/// - `breaches`: every metric's breaches, with `metric`, `version` and `period` columns.
///
/// A table's columns are those of its most recently written file; older files are read as
/// those columns (a column they lack is NULL).
pub async fn register_tables(
    ctx: &datafusion::prelude::SessionContext,
    lake: &Lake,
    catalog: &Catalog,
) -> Result<()> {
    use datafusion::common::TableReference;
    // Every output file, by (metric, version): the newest one gives the table's columns.
    let mut newest: std::collections::BTreeMap<(String, u32), object_store::ObjectMeta> =
        Default::default();
    for file in lake.list(&["metrics"]).await? {
        let parts: Vec<String> = lake
            .relative(&file.location)
            .split('/')
            .map(String::from)
            .collect();
        let (Some(name), Some(version)) = (
            parts.get(1).filter(|_| parts.len() == 5),
            crate::lake::partition_value(&file, "version").and_then(|v| v.parse::<u32>().ok()),
        ) else {
            continue;
        };
        if !file.location.as_ref().ends_with(".parquet") {
            continue;
        }
        let key = (name.clone(), version);
        if newest
            .get(&key)
            .is_none_or(|seen| seen.last_modified < file.last_modified)
        {
            newest.insert(key, file);
        }
    }
    let period = [("period", DataType::Utf8)];
    for ((name, version), file) in &newest {
        let Some(schema) = lake.parquet_schema(&file.location).await? else {
            continue; // replaced or removed meanwhile: the next session sees it
        };
        let folder = ["metrics", name.as_str(), &format!("version={version}")];
        let mut names = vec![format!("{name}_v{version}")];
        if catalog
            .latest(name)
            .is_some_and(|latest| latest.version() == *version)
        {
            names.push(name.clone());
        }
        for table in names {
            crate::engine::tables::register_folder(
                ctx,
                lake,
                TableReference::partial("metrics", table),
                &folder,
                &period,
                &schema,
            )?;
        }
    }
    let breaches = stamp(&breach_batch(&[])?, "", 0)?;
    crate::engine::tables::register_folder(
        ctx,
        lake,
        TableReference::bare("breaches"),
        &["breaches"],
        &[
            ("metric", DataType::Utf8),
            ("version", DataType::Int64),
            ("period", DataType::Utf8),
        ],
        &breaches.schema(),
    )
}
