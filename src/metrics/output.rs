//! Where a metric's outputs live in the lake, and the one place that writes and reads them
//! (`docs/contract.md` section 5):
//!
//! ```text
//! metrics/<metric>/version=<N>/period=<id>/part-0.parquet          the rows + run_id, as_of
//! breaches/metric=<metric>/version=<N>/period=<id>/part-0.parquet  team, value, threshold,
//!                       direction, advice, previous_value, change (+ run_id, as_of)
//! ```
//!
//! A period's output and breaches are replaced in one commit, by one writer at a time (the lake
//! lock `metrics`). The runner writes them; carried state, the golden tests, the reports, the
//! alerts and the demo read them through here, and [`register_tables`] makes them SQL tables
//! (`metrics.<metric>`, `breaches`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{
    ArrayRef, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use super::catalog::{Catalog, Metric};
use crate::error::{Error, Result};
use crate::lake::commit::{self, Transaction};
use crate::lake::lock::LakeLock;
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

/// What one run computed for one metric and period.
pub(crate) struct PeriodOutput<'a> {
    pub rows: &'a RecordBatch,
    /// The breaches, for a metric with a threshold (an empty file when there are none: the
    /// period was checked); `None` for a metric without one.
    pub breaches: Option<&'a [Breach]>,
    pub run_id: &'a str,
    pub as_of: i64,
    /// Goes into the output file's schema (what carried state records about itself).
    pub metadata: HashMap<String, String>,
}

/// How long a writer of metric outputs waits for another one's commit (which takes well under a
/// second) before it gives up, naming the holder.
const LOCK_WAIT: Duration = Duration::from_secs(120);

/// Writes `metric`'s output for `period_id` and its breaches, stamped with `run_id` and `as_of`,
/// as one commit ([`crate::lake::commit`]), never a file being written visible to a reader.
///
/// Under the lake lock `metrics`, so that writers of metric outputs (a scheduled pipeline and a
/// `metrics run` by hand, two pipelines of the daemon) take turns: the last to commit wins, for
/// the output and the breaches alike. Under it, first what a writer killed before left is
/// cleaned up ([`commit::recover`]): its commit finished (before this one, so that it can never
/// be finished over this one), its staged files removed. The two files are then moved one after
/// the other, so a reader that lists the folders between the two moves (milliseconds) sees the
/// new output beside the old breaches; flowhealth's readers finish a commit they find pending
/// before they read, but can meet one made while they read.
pub(crate) async fn write_period(
    lake: &Lake,
    metric: &Metric,
    period_id: &str,
    output: PeriodOutput<'_>,
) -> Result<()> {
    let stamped = stamp(output.rows, output.run_id, output.as_of)?;
    let schema = stamped
        .schema()
        .as_ref()
        .clone()
        .with_metadata(output.metadata);
    let stamped = stamped.with_schema(Arc::new(schema))?;
    let mut files = vec![(
        output_path(lake, metric, period_id),
        encode_parquet(&stamped)?,
    )];
    if let Some(breaches) = output.breaches {
        let rows = stamp(&breach_batch(breaches)?, output.run_id, output.as_of)?;
        files.push((
            breaches_path(lake, metric, period_id),
            encode_parquet(&rows)?,
        ));
    }
    let mut lock = Held(Some(lock_metrics(lake).await?));
    let written = async {
        commit::recover(lake, "metrics").await?;
        let mut transaction = Transaction::begin(lake, "metrics");
        for (path, bytes) in files {
            transaction.stage(path, bytes).await?;
        }
        transaction.commit(None).await
    }
    .await;
    let released = match lock.0.take() {
        Some(lock) => lock.release().await,
        None => Ok(()),
    };
    if let Some(error) = written?.pending {
        tracing::warn!(metric = %metric.id(), period = period_id, %error, "The output is committed, but not every file is in place yet: the next reader or metrics run moves them.");
    }
    released
}

/// Takes the lake lock `metrics`, waiting while another process holds it.
async fn lock_metrics(lake: &Lake) -> Result<LakeLock> {
    let deadline = Instant::now() + LOCK_WAIT;
    let mut waiting = false;
    loop {
        match LakeLock::acquire(lake, "metrics").await {
            Err(Error::Busy(holder)) if Instant::now() < deadline => {
                if !waiting {
                    tracing::info!(%holder, "Waiting for another writer of metric outputs to finish its commit.");
                    waiting = true;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            taken => return taken,
        }
    }
}

/// The `metrics` lock while it is held. Dropped held (the write was cancelled: a pipeline step
/// stopped at its timeout), it is released in the background: this process lives on, so no one
/// else would ever take it over.
struct Held(Option<LakeLock>);

impl Drop for Held {
    fn drop(&mut self) {
        if let (Some(lock), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(async move {
                if let Err(error) = lock.release().await {
                    tracing::warn!(%error, "Cannot release the metrics lock of a stopped write.");
                }
            });
        }
    }
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

/// Registers `metrics.<metric>_v<N>` (and `metrics.<metric>` when `metric` is the catalog's
/// latest version) with the columns its SQL plans to (`planned`), the stamps and `period`, unless
/// [`register_tables`] found outputs for it: so `validate` plans a pipeline's `sql:` step that
/// reads a metric an earlier step computes, on a lake without its outputs yet.
pub(crate) fn register_planned(
    ctx: &datafusion::prelude::SessionContext,
    lake: &Lake,
    catalog: &Catalog,
    metric: &Metric,
    planned: &Schema,
) -> Result<()> {
    use datafusion::common::TableReference;
    let stamped = stamp(&RecordBatch::new_empty(Arc::new(planned.clone())), "", 0)?;
    let folder = [
        "metrics",
        metric.name(),
        &format!("version={}", metric.version()),
    ];
    let mut names = vec![format!("{}_v{}", metric.name(), metric.version())];
    if catalog
        .latest(metric.name())
        .is_some_and(|latest| latest.version() == metric.version())
    {
        names.push(metric.name().to_string());
    }
    for name in names {
        let table = TableReference::partial("metrics", name);
        // An error here is a schema `metrics` not made yet: no outputs at all.
        if !ctx.table_exist(table.clone()).unwrap_or(false) {
            crate::engine::tables::register_folder(
                ctx,
                lake,
                table,
                &folder,
                &[("period", DataType::Utf8)],
                &stamped.schema(),
            )?;
        }
    }
    Ok(())
}

/// The stored rows of `metric` for `periods` as one batch (period, team, owner_id, value): what
/// a metric that looks back reads of it (`LooksBack` in the catalog). Only outputs computed at
/// their own period's end (`as_of` = the end, in `tz`) are taken: another as_of would judge the
/// period by what happened after it.
pub(crate) async fn history(
    lake: &Lake,
    metric: &Metric,
    periods: &[Period],
    tz: chrono_tz::Tz,
) -> Result<RecordBatch> {
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::compute::cast;
    let (mut period, mut team, mut owner, mut value) = (vec![], vec![], vec![], vec![]);
    for looked_at in periods {
        let end = looked_at.bounds_utc(tz).1;
        for batch in read_output(lake, metric, &looked_at.id)
            .await?
            .unwrap_or_default()
        {
            let text = |name: &str| -> Result<Vec<Option<String>>> {
                Ok(match batch.column_by_name(name) {
                    Some(column) => cast(column, &DataType::Utf8)?
                        .as_string::<i32>()
                        .iter()
                        .map(|v| v.map(String::from))
                        .collect(),
                    None => vec![None; batch.num_rows()],
                })
            };
            let values: Vec<Option<f64>> = match batch.column_by_name("value") {
                Some(column) => {
                    let column = cast(column, &DataType::Float64)?;
                    let column = column.as_primitive::<datafusion::arrow::datatypes::Float64Type>();
                    (0..column.len())
                        .map(|i| column.is_valid(i).then(|| column.value(i)))
                        .collect()
                }
                None => vec![None; batch.num_rows()],
            };
            let as_of = batch.column_by_name(STAMP_COLUMNS[1]).map(|c| {
                c.as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>()
                    .clone()
            });
            let (teams, owners) = (text("team")?, text("owner_id")?);
            for row in 0..batch.num_rows() {
                let at_its_end = as_of
                    .as_ref()
                    .is_some_and(|a| a.is_valid(row) && a.value(row) == end);
                if !at_its_end {
                    continue;
                }
                period.push(looked_at.id.clone());
                team.push(teams[row].clone());
                owner.push(owners[row].clone());
                value.push(values[row]);
            }
        }
    }
    let columns: Vec<(&str, ArrayRef)> = vec![
        ("period", Arc::new(StringArray::from(period))),
        ("team", Arc::new(StringArray::from(team))),
        ("owner_id", Arc::new(StringArray::from(owner))),
        ("value", Arc::new(Float64Array::from(value))),
    ];
    Ok(RecordBatch::try_from_iter_with_nullable(
        columns
            .into_iter()
            .map(|(name, column)| (name, column, true)),
    )?)
}
