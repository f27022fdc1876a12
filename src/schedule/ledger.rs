//! The run ledger: one Parquet file per run at
//! `runs/pipeline=<name>/<scheduled_for>-<run_id>.parquet`, written when the run starts (status
//! `running`) and replaced when it ends, so BI tools read the history with a glob and a crashed
//! run is visible as one still `running`. The pipeline's name is the `pipeline=` partition of
//! the folder, not a column: a column of the same name makes pandas and pyarrow refuse the folder.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::json::ReaderBuilder;
use serde::{Deserialize, Serialize};

use super::Trigger;
use crate::error::{Error, Result};
use crate::lake::{Lake, encode_parquet};

/// Where a run is: written `running` when it starts, then one of the others when it ends (or,
/// for a run a stopped daemon cut short, `interrupted` when the next daemon starts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Succeeded,
    Failed,
    Interrupted,
}

impl RunStatus {
    /// As the ledger and `flowhealth runs` spell it (serde spells it the same way), in the
    /// order of the variants.
    const NAMES: [&str; 4] = ["running", "succeeded", "failed", "interrupted"];

    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    pub pipeline: String,
    pub run_id: String,
    /// The fire time this run is for (the period follows from it).
    pub scheduled_for: DateTime<Utc>,
    pub period: Option<String>,
    /// schedule, catch_up, redo, manual or backfill.
    pub trigger: Trigger,
    pub started: DateTime<Utc>,
    pub finished: Option<DateTime<Utc>>,
    /// running, succeeded, failed or interrupted.
    pub status: RunStatus,
    pub error: Option<String>,
    /// Step attempts in all (retries included).
    pub attempts: i64,
    pub rows: i64,
    /// What the run wrote, `; `-separated.
    pub outputs: String,
    pub host: String,
    pub pid: i64,
}

fn schema() -> Arc<Schema> {
    let ts = || {
        DataType::Timestamp(
            datafusion::arrow::datatypes::TimeUnit::Microsecond,
            Some("UTC".into()),
        )
    };
    // No `pipeline`: the folder's partition gives it (the JSON field is left out on the way in).
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, false),
        Field::new("scheduled_for", ts(), false),
        Field::new("period", DataType::Utf8, true),
        Field::new("trigger", DataType::Utf8, false),
        Field::new("started", ts(), false),
        Field::new("finished", ts(), true),
        Field::new("status", DataType::Utf8, false),
        Field::new("error", DataType::Utf8, true),
        Field::new("attempts", DataType::Int64, false),
        Field::new("rows", DataType::Int64, false),
        Field::new("outputs", DataType::Utf8, false),
        Field::new("host", DataType::Utf8, false),
        Field::new("pid", DataType::Int64, false),
    ]))
}

impl RunRecord {
    fn path(&self, lake: &Lake) -> object_store::path::Path {
        lake.path(&[
            "runs",
            &format!("pipeline={}", self.pipeline),
            &format!(
                "{}-{}.parquet",
                self.scheduled_for.format("%Y%m%dT%H%M%SZ"),
                self.run_id
            ),
        ])
    }

    /// Writes (or replaces) this run's file.
    pub async fn write(&self, lake: &Lake) -> Result<()> {
        let json = serde_json::to_vec(self)?;
        let mut reader = ReaderBuilder::new(schema()).build(std::io::Cursor::new(json))?;
        let batch = reader
            .next()
            .transpose()?
            .ok_or_else(|| Error::Lake("run record encoded to no rows".into()))?;
        lake.put(&self.path(lake), encode_parquet(&batch)?).await
    }
}

/// Registers the run ledger as the SQL table `runs` (a listing table over `runs/`): one row per
/// run, with the `pipeline` column from the folder.
pub fn register_table(ctx: &datafusion::prelude::SessionContext, lake: &Lake) -> Result<()> {
    crate::engine::tables::register_folder(
        ctx,
        lake,
        datafusion::common::TableReference::bare("runs"),
        &["runs"],
        &[("pipeline", DataType::Utf8)],
        &schema(),
    )
}

/// Every run of `pipeline` (all pipelines when `None`), oldest scheduled first.
pub async fn read(lake: &Lake, pipeline: Option<&str>) -> Result<Vec<RunRecord>> {
    let folder = pipeline.map(|p| format!("pipeline={p}"));
    let mut parts = vec!["runs"];
    if let Some(folder) = &folder {
        parts.push(folder);
    }
    let mut records = Vec::new();
    for object in lake.list(&parts).await? {
        if !object.location.as_ref().ends_with(".parquet") {
            continue;
        }
        let pipeline = crate::lake::partition_value(&object, "pipeline").unwrap_or_default();
        if let Some(bytes) = lake.get(&object.location).await? {
            records.extend(decode(bytes, &pipeline).map_err(|e| {
                Error::Lake(format!(
                    "{}: not a run record: {e}",
                    lake.relative(&object.location)
                ))
            })?);
        }
    }
    records.sort_by_key(|r| (r.scheduled_for, r.started));
    Ok(records)
}

/// The records of one run file of folder `pipeline=<pipeline>` (files written before the name
/// left the columns have it as a column too).
fn decode(bytes: Bytes, pipeline: &str) -> Result<Vec<RunRecord>> {
    let (_, batches) = crate::lake::decode_parquet(bytes)?;
    crate::engine::json_rows(&batches)?
        .into_iter()
        .map(|mut row| {
            row.entry("pipeline")
                .or_insert_with(|| serde_json::Value::from(pipeline));
            serde_json::from_value(serde_json::Value::Object(row)).map_err(Error::from)
        })
        .collect()
}

/// The last `limit` runs as a table, newest first, times in `tz`.
pub fn table(records: &[RunRecord], limit: usize, tz: chrono_tz::Tz) -> String {
    let mut out = format!(
        "{:22} {:17} {:9} {:9} {:11} {:>7} {:>8}  {}\n",
        "pipeline", "scheduled for", "period", "trigger", "status", "took s", "rows", "error"
    );
    let mut newest: Vec<&RunRecord> = records.iter().collect();
    newest.sort_by_key(|r| std::cmp::Reverse((r.started, r.scheduled_for)));
    for r in newest.into_iter().take(limit) {
        let took = r
            .finished
            .map(|f| format!("{:.1}", (f - r.started).num_milliseconds() as f64 / 1000.0))
            .unwrap_or_else(|| "-".into());
        // The whole error is in the ledger (`query "select error from runs"`); a cut one says so.
        let full = r.error.as_deref().unwrap_or("");
        let mut error: String = full.chars().take(80).collect();
        if error.len() < full.len() {
            error.push('…');
        }
        out.push_str(&format!(
            "{:22} {:17} {:9} {:9} {:11} {took:>7} {:>8}  {error}\n",
            r.pipeline,
            crate::time::format::local(tz, r.scheduled_for),
            r.period.as_deref().unwrap_or("-"),
            r.trigger,
            r.status,
            r.rows,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_is_spelled_the_same_in_the_ledger_and_in_runs() {
        use RunStatus::*;
        for status in [Running, Succeeded, Failed, Interrupted] {
            let json = serde_json::to_value(status).unwrap();
            assert_eq!(json, status.name(), "{status:?}");
            assert_eq!(format!("{status:>11}"), format!("{:>11}", status.name()));
        }
    }
}
