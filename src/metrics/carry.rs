//! Carried state. `silent_warnings` needs every open opportunity's latest stage change and last
//! action before `as_of`, which may lie anywhere in the history. Rather than read the whole
//! history every week, a metric whose front matter names `carry:` columns starts from its own
//! output for an earlier period: those columns are the table `<metric>_carried`, the state as
//! of `$carried_as_of`, and its SQL reads only the days from `$carried_as_of_date` on.
//!
//! An earlier output is used only while it is still true to the lake. Each output of such a
//! metric records in its Parquet metadata (`flowhealth.carry`) the instant it holds and a
//! fingerprint of what it was computed from: the metric's file, the timezone, the stages, and the
//! path, size and version of every `actions` and `stage_changes` file of a `dt=` day before that
//! instant. Late rows for an older day, a rewritten file, an edited definition or changed stages
//! change the fingerprint. A run starts from the newest earlier output whose fingerprint still
//! holds: the previous period's as a rule, an older one after rows landed late for a day of the
//! previous period. Without one the table is empty, `$carried_as_of` is 1900-01-01 and the same
//! SQL reads the whole history. Carried columns must therefore come from those two datasets and
//! the stages only, not from `opportunities` (snapshots that change without new event days).

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use object_store::ObjectMeta;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::catalog::Metric;
use super::output::{output_path, output_periods};
use crate::config::Config;
use crate::engine::Engine;
use crate::error::Result;
use crate::lake::schema::Dataset;
use crate::lake::{Lake, file_version, partition_day};
use crate::time::{Period, Zone};

/// The key of an output's metadata that records what it holds.
pub const METADATA_KEY: &str = "flowhealth.carry";

/// `$carried_as_of` when nothing is carried (1900-01-01T00:00:00Z): the SQL reads everything.
pub const BEGINNING: i64 = -2_208_988_800_000_000;

/// What an output of a carrying metric records about itself.
#[derive(Debug, Serialize, Deserialize)]
struct Stamp {
    as_of: i64,
    inputs: String,
}

/// The state one run starts from.
pub struct Carry {
    /// The period whose output is carried; `None` when the run reads the whole history.
    pub from: Option<String>,
    /// The instant the carried rows hold (`BEGINNING` when there are none).
    pub as_of: i64,
    /// The metadata this run's output records.
    pub metadata: HashMap<String, String>,
}

/// The table a metric's SQL reads its carried state from.
pub fn table_name(metric: &Metric) -> String {
    format!("{}_carried", metric.name())
}

fn schema(metric: &Metric) -> SchemaRef {
    let fields: Vec<Field> = metric
        .meta
        .carry
        .iter()
        .map(|(name, ty)| Field::new(name, ty.data_type(), true))
        .collect();
    Arc::new(Schema::new(fields))
}

async fn register(engine: &Engine, metric: &Metric, batches: Vec<RecordBatch>) -> Result<()> {
    engine
        .register_rows(&table_name(metric), schema(metric), batches)
        .await
}

/// Registers an empty state (the whole history is read): for planning without a lake.
pub async fn register_empty(engine: &Engine, metric: &Metric) -> Result<()> {
    register(engine, metric, Vec::new()).await
}

/// Registers `<metric>_carried` for a run of `period` at `as_of`: the newest earlier output still
/// true to the lake, else nothing. A metric without `carry:` gets nothing.
pub async fn prepare(
    engine: &Engine,
    config: &Config,
    lake: &Lake,
    metric: &Metric,
    period: &Period,
    as_of: i64,
) -> Result<Carry> {
    if metric.meta.carry.is_empty() {
        return Ok(Carry {
            from: None,
            as_of: BEGINNING,
            metadata: HashMap::new(),
        });
    }
    // Listed before the query reads anything: a file landing meanwhile makes the next run's
    // fingerprint differ, never this one's claim too broad.
    let files = listing(lake, metric).await?;
    let stamp = Stamp {
        as_of,
        inputs: fingerprint(config, metric, &files, as_of),
    };
    let metadata = HashMap::from([(
        METADATA_KEY.to_string(),
        serde_json::to_string(&stamp).expect("plain struct"),
    )]);
    let carry = match latest_usable(config, lake, metric, period, &files, as_of).await? {
        Some((from, carried_as_of, batches)) => {
            register(engine, metric, batches).await?;
            Carry {
                from: Some(from),
                as_of: carried_as_of,
                metadata,
            }
        }
        None => {
            register_empty(engine, metric).await?;
            Carry {
                from: None,
                as_of: BEGINNING,
                metadata,
            }
        }
    };
    Ok(carry)
}

/// The newest output of an earlier period that is still true to the lake: its period, the
/// instant it holds and its carried columns. Rows landing late for a day make every output from
/// that day on unusable, so the run starts from the last one before it and reads the days since.
async fn latest_usable(
    config: &Config,
    lake: &Lake,
    metric: &Metric,
    period: &Period,
    files: &[ObjectMeta],
    as_of: i64,
) -> Result<Option<(String, i64, Vec<RecordBatch>)>> {
    let mut earlier: Vec<Period> = output_periods(lake, metric)
        .await?
        .into_iter()
        .filter(|p| p.kind == period.kind && p.start < period.start)
        .collect();
    earlier.sort_by_key(|p| std::cmp::Reverse(p.start));
    let mut passed = 0;
    for candidate in earlier {
        let path = output_path(lake, metric, &candidate.id);
        // The footer first (an unusable output is not read), then the file, checked again: it may
        // have been replaced in between.
        let usable = match lake.parquet_schema(&path).await? {
            None => continue,
            Some(schema) => stamped(config, metric, files, as_of, &schema),
        };
        let carried = match usable {
            Err(why) => Err(why),
            Ok(_) => match lake.get_parquet(&path).await? {
                None => continue,
                Some((schema, batches)) => stamped(config, metric, files, as_of, &schema)
                    .and_then(|carried_as_of| Ok((carried_as_of, project(metric, &batches)?))),
            },
        };
        match carried {
            Ok((carried_as_of, batches)) => {
                return Ok(Some((candidate.id, carried_as_of, batches)));
            }
            // The newest one's reason is news; the older ones' usually the same.
            Err(why) if passed == 0 => tracing::info!(
                "{}: not starting from {}'s output: {why}",
                metric.id(),
                candidate.id
            ),
            Err(why) => tracing::debug!(
                "{}: not starting from {}'s output: {why}",
                metric.id(),
                candidate.id
            ),
        }
        passed += 1;
    }
    tracing::info!(
        "{}: no earlier output to start from ({passed} passed over): reading the whole history",
        metric.id()
    );
    Ok(None)
}

/// The instant an output holds, if its stamp says it is still true to the lake as listed (and
/// not later than `as_of`); else why not.
fn stamped(
    config: &Config,
    metric: &Metric,
    files: &[ObjectMeta],
    as_of: i64,
    schema: &Schema,
) -> std::result::Result<i64, String> {
    let stamp: Stamp = schema
        .metadata()
        .get(METADATA_KEY)
        .and_then(|text| serde_json::from_str(text).ok())
        .ok_or("it has no carry stamp")?;
    if stamp.as_of > as_of {
        return Err("it is as of a later instant".into());
    }
    if stamp.inputs != fingerprint(config, metric, files, stamp.as_of) {
        return Err("rows before its as_of, the definition or the stages changed since".into());
    }
    Ok(stamp.as_of)
}

/// An output's carried columns, cast to their declared types.
fn project(
    metric: &Metric,
    batches: &[RecordBatch],
) -> std::result::Result<Vec<RecordBatch>, String> {
    let target = self::schema(metric);
    batches
        .iter()
        .map(|batch| {
            let columns = target
                .fields()
                .iter()
                .map(|field| {
                    let column = batch
                        .column_by_name(field.name())
                        .ok_or_else(|| format!("it has no column `{}`", field.name()))?;
                    cast(column, field.data_type()).map_err(|e| e.to_string())
                })
                .collect::<std::result::Result<Vec<_>, String>>()?;
            RecordBatch::try_new(target.clone(), columns).map_err(|e| e.to_string())
        })
        .collect()
}

/// The `raw/` files of the event datasets the metric reads.
async fn listing(lake: &Lake, metric: &Metric) -> Result<Vec<ObjectMeta>> {
    let lists = [Dataset::Actions, Dataset::StageChanges]
        .into_iter()
        .filter(|dataset| metric.sql.contains(dataset.name()))
        .map(|dataset| async move { lake.list(&["raw", dataset.name()]).await });
    Ok(futures::future::try_join_all(lists).await?.concat())
}

/// What a state as of `as_of` depends on: the definition, the timezone, the stages, and every
/// listed file of a day that begins before `as_of`.
fn fingerprint(config: &Config, metric: &Metric, files: &[ObjectMeta], as_of: i64) -> String {
    let last_day = Zone::new(config.timezone).local_date(as_of - 1);
    let mut hash = Sha256::new();
    hash.update(format!(
        "{}\n{}\n{:?}\n",
        metric.hash,
        config.timezone.name(),
        config.stages
    ));
    for file in files {
        if partition_day(file).is_none_or(|day| day <= last_day) {
            hash.update(file_version(file) + "\n");
        }
    }
    hash.finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Problems with a metric's `carry:` columns against its planned output.
pub fn check(metric: &Metric, output: &Schema) -> Vec<String> {
    metric
        .meta
        .carry
        .iter()
        .filter_map(|(name, ty)| match output.field_with_name(name) {
            Err(_) => Some(format!(
                "{}:1: carry: `{name}` is not a column of the output",
                metric.path.display()
            )),
            Ok(field) if !ty.accepts(field.data_type()) => Some(format!(
                "{}:1: carry: `{name}` is {} in the output, which is not a {ty:?}",
                metric.path.display(),
                field.data_type()
            )),
            Ok(_) => None,
        })
        .collect()
}
