//! Stage history derived from opportunity snapshots (`datasets.opportunities.stage_history`).
//!
//! Many CRMs export only the current state, one row per deal. When a snapshot's stage differs
//! from the opportunity's latest known stage, a stage change is derived: from that stage, to the
//! snapshot's, at the snapshot's change time (a mapped column, else its ingest time), by the
//! snapshot's owner, with the snapshot's file and line as its `source_file` and `source_line`.
//! An opportunity seen for the first time is created in its stage (an empty `from_stage`).
//!
//! The latest known stage comes from `raw/stage_changes` (derived and exported changes alike;
//! rows whose from_stage equals their to_stage are edits, not changes, and are passed over),
//! then from the snapshots of this run in file and line order. A snapshot whose stage and change
//! time are already in the history adds nothing (a re-exported file); one whose change time is
//! before the opportunity's latest change would rewrite history and is quarantined.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use datafusion::arrow::record_batch::RecordBatch;
use xxhash_rust::xxh3::xxh3_128;

use super::cell::Cell;
use super::keys::{self, KeyHasher, KeySet};
use super::spec::HistorySpec;
use super::validate::{Validator, Value};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::lake::schema::Dataset;

/// An opportunity's latest stage and when it was entered (UTC microseconds), with the ingest
/// time and line that break ties the way the metrics do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Latest {
    pub stage: String,
    pub changed_at: i64,
    order: (i64, i64),
}

/// What the history knows before a file: each opportunity's latest stage, every (opportunity,
/// stage, time) arrival, and the keys of the `stage_changes` rows in the lake.
#[derive(Debug, Default, Clone)]
pub struct HistoryState {
    pub latest: HashMap<String, Latest>,
    arrivals: KeySet,
    pub keys: KeySet,
}

fn arrival(opportunity: &str, stage: &str, changed_at: i64) -> u128 {
    let mut bytes = Vec::with_capacity(opportunity.len() + stage.len() + 16);
    bytes.extend_from_slice(&(opportunity.len() as u64).to_le_bytes());
    bytes.extend_from_slice(opportunity.as_bytes());
    bytes.extend_from_slice(stage.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(&changed_at.to_le_bytes());
    xxh3_128(&bytes)
}

impl HistoryState {
    /// Reads the stage history in the lake (one pass: the keys of its rows and each
    /// opportunity's latest change), and the files of it that could not be read.
    pub async fn load(lake: &Lake) -> Result<(HistoryState, Vec<String>)> {
        let mut state = HistoryState::default();
        let mut hasher = KeyHasher::new(Dataset::StageChanges);
        const COLUMNS: [&str; 6] = [
            "opportunity_id",
            "from_stage",
            "to_stage",
            "changed_at",
            "ingested_at",
            "source_line",
        ];
        let unreadable = keys::scan_raw(lake, Dataset::StageChanges, &COLUMNS, |batch| {
            hasher.add_batch(Dataset::StageChanges, batch, &mut state.keys)?;
            state.add_batch(batch)
        })
        .await?;
        Ok((state, unreadable))
    }

    fn add_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let column = |name: &str| {
            batch.column_by_name(name).cloned().ok_or_else(|| {
                Error::Lake(format!("raw/stage_changes: a file lacks column {name}"))
            })
        };
        let (ids, from, to) = (
            column("opportunity_id")?,
            column("from_stage")?,
            column("to_stage")?,
        );
        let (ids, from, to) = (
            ids.as_string::<i32>(),
            from.as_string::<i32>(),
            to.as_string::<i32>(),
        );
        let changed = column("changed_at")?;
        let changed = changed.as_primitive::<TimestampMicrosecondType>();
        let ingested = column("ingested_at")?;
        let ingested = ingested.as_primitive::<TimestampMicrosecondType>();
        let lines = column("source_line")?;
        let lines = lines.as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            let stage = to.value(i);
            // An edit (from = to) is not a change: it says nothing the history needs.
            if !from.is_null(i) && from.value(i) == stage {
                continue;
            }
            self.record(
                ids.value(i),
                stage,
                changed.value(i),
                (ingested.value(i), lines.value(i)),
            );
        }
        Ok(())
    }

    fn record(&mut self, opportunity: &str, stage: &str, changed_at: i64, order: (i64, i64)) {
        self.arrivals
            .insert(arrival(opportunity, stage, changed_at));
        let newer = self
            .latest
            .get(opportunity)
            .is_none_or(|l| (changed_at, order) >= (l.changed_at, l.order));
        if newer {
            self.latest.insert(
                opportunity.to_string(),
                Latest {
                    stage: stage.to_string(),
                    changed_at,
                    order,
                },
            );
        }
    }

    /// Takes in what one file added.
    pub fn merge(&mut self, added: Added) {
        self.latest.extend(added.latest);
        self.arrivals.extend(added.arrivals);
        self.keys.extend(added.keys);
    }
}

/// What one file added to the history (kept apart until the file is committed).
#[derive(Debug, Default)]
pub struct Added {
    latest: HashMap<String, Latest>,
    arrivals: KeySet,
    keys: KeySet,
    /// Stage changes derived (and landed) from the file.
    pub derived: u64,
}

/// Derives the stage changes of one snapshot file.
pub struct Derivation {
    spec: HistorySpec,
    base: Arc<HistoryState>,
    pub added: Added,
    hasher: KeyHasher,
    opportunity: usize,
    owner: usize,
}

impl Derivation {
    pub fn new(spec: HistorySpec, base: Arc<HistoryState>) -> Derivation {
        let column = |name| {
            Dataset::Opportunities
                .column_index(name)
                .expect("a column of opportunities")
        };
        Derivation {
            spec,
            base,
            added: Added::default(),
            hasher: KeyHasher::new(Dataset::StageChanges),
            opportunity: column("opportunity_id"),
            owner: column("owner_id"),
        }
    }

    fn latest(&self, opportunity: &str) -> Option<&Latest> {
        self.added
            .latest
            .get(opportunity)
            .or_else(|| self.base.latest.get(opportunity))
    }

    /// The stage change a validated snapshot row implies, in `stage_changes` column order, or
    /// `None` when its stage is the one the history has; `Err` quarantines the snapshot.
    /// `cell(i)` reads wanted column `i`; `order` is (ingest time, line) of the snapshot.
    pub fn derive<'a>(
        &mut self,
        values: &[Value<'a>],
        cell: impl Fn(usize) -> Cell<'a>,
        validator: &Validator,
        order: (i64, i64),
    ) -> std::result::Result<Option<Vec<Value<'a>>>, String> {
        let Value::Text(opportunity) = &values[self.opportunity] else {
            return Ok(None);
        };
        let text = cell(self.spec.stage).to_text().unwrap_or_default();
        let text = text.trim();
        if text.is_empty() {
            return Err(
                "stage_history.stage: required value is missing (the snapshot's stage)".into(),
            );
        }
        let stage = self
            .spec
            .values
            .get(text)
            .map_or(text, String::as_str)
            .to_string();
        validator
            .stage("stage_history.stage", &stage)
            .map_err(|e| format!("{e}; map it in datasets.opportunities.stage_history.values"))?;
        let changed_at = match self.spec.changed_at {
            Some(i) => validator
                .timestamp_cell("stage_history.changed_at", cell(i))?
                .unwrap_or(order.0),
            None => order.0,
        };
        if self
            .base
            .arrivals
            .contains(&arrival(opportunity, &stage, changed_at))
            || self
                .added
                .arrivals
                .contains(&arrival(opportunity, &stage, changed_at))
        {
            return Ok(None);
        }
        let from = match self.latest(opportunity) {
            Some(latest) if latest.stage == stage => return Ok(None),
            Some(latest) if latest.changed_at > changed_at => {
                return Err(format!(
                    "stage_history: the snapshot puts the opportunity in `{stage}` from {}, before its latest known change (to `{}` at {}): ingest snapshots in the order they were taken",
                    micros_text(changed_at),
                    latest.stage,
                    micros_text(latest.changed_at)
                ));
            }
            Some(latest) => Value::Text(latest.stage.clone().into()),
            None => Value::Null,
        };
        let owner = match &values[self.owner] {
            Value::Null => {
                return Err(
                    "owner_id: required to derive a stage change (datasets.opportunities.stage_history)"
                        .into(),
                );
            }
            owner => owner.clone(),
        };
        let row = vec![
            Value::Text(opportunity.clone()),
            from,
            Value::Text(stage.clone().into()),
            Value::Timestamp(changed_at),
            owner,
        ];
        let key = self.hasher.key(&row);
        self.added
            .arrivals
            .insert(arrival(opportunity, &stage, changed_at));
        self.added.latest.insert(
            opportunity.to_string(),
            Latest {
                stage,
                changed_at,
                order,
            },
        );
        if self.base.keys.contains(&key) || !self.added.keys.insert(key) {
            return Ok(None);
        }
        self.added.derived += 1;
        Ok(Some(row))
    }
}

fn micros_text(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros).map_or_else(
        || micros.to_string(),
        |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
    )
}
