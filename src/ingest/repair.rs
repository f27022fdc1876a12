//! `flowhealth doctor` and `flowhealth repair`: Parquet files in the lake that cannot be read
//! ([`crate::lake::health`]), and inputs whose landed files are not all there.
//!
//! A file of `raw/` or `quarantine/` holds rows of one inbox file, which its ledger entry names
//! (with the content hash). `repair`, under the `ingest` lock, sets the unreadable file aside in
//! `quarantine/_corrupt/<its path>` (kept, not deleted), and when the inbox still has that input
//! with the same content, forgets its ledger entry and the rest of its files and lands it again:
//! the rows come back exactly, deduplicated against the lake as any ingest is. An input whose file
//! is gone from the inbox cannot be landed again: `doctor` and `repair` say so, and `repair` does
//! it once the file is back. A file of a metric, a breach list, an export or the kept snapshot is
//! set aside with the command that computes it again.
//!
//! The order makes a crash harmless: the ledger entry (the commit) goes first, so a repair killed
//! midway leaves uncommitted files, which the next ingest removes before it lands the input. Both
//! commands first finish the commits an interrupted ingest left (`crate::lake::commit`):
//! `doctor` rolls them forward as every reader does, `repair`, under the lock, recovers.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;

use super::{Ingest, IngestReport, LedgerEntry, source};
use crate::config::Config;
use crate::error::Result;
use crate::lake::Lake;
use crate::lake::commit;
use crate::lake::health::{self, SET_ASIDE, Unreadable};
use crate::lake::lock::LakeLock;
use crate::lake::schema::Dataset;

/// What `doctor` found.
#[derive(Debug, Default)]
pub struct Diagnosis {
    /// Unreadable files and incomplete inputs, each with what `repair` does about it.
    pub findings: Vec<Finding>,
}

/// One problem, and what `repair` does about it.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The unreadable file (lake-relative), or `None` for an input whose files are missing.
    pub file: Option<String>,
    /// What is wrong.
    pub why: String,
    pub action: Action,
}

/// What `repair` does about a [`Finding`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Set the file aside and land the input again from the inbox.
    Reland { dataset: Dataset, source: String },
    /// Set the file aside; the input is not in the inbox as it was landed, so its rows stay
    /// missing until it is put back.
    Lost { dataset: Dataset, source: String },
    /// Set the file aside; no ledger entry names it (left by an interrupted ingest).
    Orphan,
    /// Set the file aside; this computes it again.
    Recompute(String),
}

impl Diagnosis {
    /// 0 when the lake is healthy, 1 when something is wrong.
    pub fn exit_code(&self) -> i32 {
        if self.findings.is_empty() { 0 } else { 1 }
    }
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.findings.is_empty() {
            return writeln!(
                f,
                "lake ok: every Parquet file reads, every landed input has its files"
            );
        }
        for finding in &self.findings {
            let what = finding.file.as_deref().unwrap_or("");
            let plan = match &finding.action {
                Action::Reland { source, .. } if finding.file.is_none() => {
                    format!("`flowhealth repair` lands {source} again from the inbox")
                }
                Action::Reland { source, .. } => format!(
                    "`flowhealth repair` sets it aside in {}/ and lands {source} again from the inbox",
                    SET_ASIDE.join("/")
                ),
                Action::Lost { source, .. } => format!(
                    "its rows came from {source}, which is not in the inbox as it was landed: put that file back \
                     and run `flowhealth repair` (until then `repair` sets the file aside and its rows are missing)"
                ),
                Action::Orphan => format!(
                    "no ingest ledger entry names it: `flowhealth repair` sets it aside in {}/",
                    SET_ASIDE.join("/")
                ),
                Action::Recompute(how) => format!(
                    "`flowhealth repair` sets it aside in {}/; then {how}",
                    SET_ASIDE.join("/")
                ),
            };
            if what.is_empty() {
                writeln!(f, "{}: {plan}", finding.why)?;
            } else {
                writeln!(f, "{what}: {}: {plan}", finding.why)?;
            }
        }
        Ok(())
    }
}

/// What `repair` did.
#[derive(Debug, Default)]
pub struct Repaired {
    pub diagnosis: Diagnosis,
    /// Files set aside (lake-relative, where they were).
    pub set_aside: Vec<String>,
    /// The ingest that landed the inputs again, if any.
    pub ingest: Option<IngestReport>,
}

impl Repaired {
    /// 0 when everything found was repaired, 1 when rows are still missing (an input not in the
    /// inbox) or landing an input again failed.
    pub fn exit_code(&self) -> i32 {
        let lost = self
            .diagnosis
            .findings
            .iter()
            .any(|f| matches!(f.action, Action::Lost { .. }));
        let landed = self.ingest.as_ref().map_or(0, IngestReport::exit_code);
        if lost { 1 } else { landed }
    }
}

impl fmt::Display for Repaired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.diagnosis.findings.is_empty() {
            return write!(f, "{}", self.diagnosis);
        }
        write!(f, "{}", self.diagnosis)?;
        for file in &self.set_aside {
            writeln!(f, "set aside: {file} -> {}/{file}", SET_ASIDE.join("/"))?;
        }
        if let Some(ingest) = &self.ingest {
            writeln!(f, "landed again:")?;
            write!(f, "{ingest}")?;
        }
        Ok(())
    }
}

/// `flowhealth doctor`: what is wrong in the lake, and what `repair` would do. Changes nothing.
pub async fn doctor(config: &Config) -> Result<Diagnosis> {
    let lake = Lake::open(config)?;
    // A commit whose writer stopped before its files were in place is finished (as any reader
    // does), so that its files are not reported missing.
    commit::roll_forward(&lake).await;
    let inbox = Lake::open_store(config, &config.inbox)?;
    let ingest = Ingest::new(config, lake, inbox);
    diagnose(&ingest).await
}

/// `flowhealth repair`: sets unreadable files aside and lands their inputs again (see the module
/// documentation), under the `ingest` lock.
pub async fn repair(config: &Config) -> Result<Repaired> {
    let lake = Lake::open(config)?;
    let inbox = Lake::open_store(config, &config.inbox)?;
    let lock = LakeLock::acquire(&lake, "ingest").await?;
    let result = repair_locked(config, lake.clone(), inbox).await;
    lock.release().await?;
    result
}

async fn repair_locked(config: &Config, lake: Lake, inbox: Lake) -> Result<Repaired> {
    // Under the ingest lock: an interrupted ingest's commits are finished or rolled back first,
    // so that what is found is what the ledgers committed.
    commit::recover(&lake, "ingest").await?;
    let mut ingest = Ingest::new(config, lake.clone(), inbox);
    let diagnosis = diagnose(&ingest).await?;
    let mut repaired = Repaired::default();
    // Inputs to land again, by dataset.
    let mut again: BTreeMap<Dataset, HashSet<String>> = BTreeMap::new();
    let mut forgotten: BTreeSet<(Dataset, String)> = BTreeSet::new();
    for finding in &diagnosis.findings {
        if let Some(file) = &finding.file {
            set_aside(&lake, file).await?;
            repaired.set_aside.push(file.clone());
        }
        if let Action::Reland { dataset, source } = &finding.action
            && forgotten.insert((*dataset, source.clone()))
        {
            forget(&ingest, *dataset, source).await?;
            again.entry(*dataset).or_default().insert(source.clone());
        }
    }
    if !again.is_empty() {
        let datasets: Vec<Dataset> = again.keys().copied().collect();
        ingest.only = Some(again.into_values().flatten().collect());
        repaired.ingest = Some(ingest.run(&datasets).await?);
    }
    repaired.diagnosis = diagnosis;
    Ok(repaired)
}

/// Moves `file` (lake-relative) to `quarantine/_corrupt/<file>`.
async fn set_aside(lake: &Lake, file: &str) -> Result<()> {
    let parts: Vec<&str> = file.split('/').collect();
    let from = lake.path(&parts);
    let to = lake.path(&SET_ASIDE.iter().copied().chain(parts).collect::<Vec<_>>());
    if let Some(bytes) = lake.get(&from).await? {
        lake.put(&to, bytes).await?;
    }
    lake.delete(&from).await
}

/// Forgets the ledger entry of `source` in `dataset` (the commit goes first), then deletes the
/// files it committed.
async fn forget(ingest: &Ingest<'_>, dataset: Dataset, source: &str) -> Result<()> {
    let lake = &ingest.lake;
    for entry in ingest.load_ledger(dataset).await?.into_values() {
        if entry.source != source {
            continue;
        }
        let name = format!("{}.json", entry.content_hash);
        let mut parts = Ingest::ledger_dir(dataset).to_vec();
        parts.push(&name);
        lake.delete(&lake.path(&parts)).await?;
        for output in &entry.outputs {
            let parts: Vec<&str> = output.split('/').collect();
            lake.delete(&lake.path(&parts)).await?;
        }
    }
    Ok(())
}

async fn diagnose(ingest: &Ingest<'_>) -> Result<Diagnosis> {
    let lake = &ingest.lake;
    let unreadable = health::unreadable(lake).await?;
    let mut findings = Vec::new();
    let mut owned = HashSet::new();
    for dataset in Dataset::ALL {
        let ledger = ingest.load_ledger(dataset).await?;
        let mut present = HashSet::new();
        for area in ["raw", "quarantine"] {
            for object in lake.list(&[area, dataset.name()]).await? {
                present.insert(lake.relative(&object.location));
            }
        }
        for entry in ledger.values() {
            let bad: Vec<&Unreadable> = unreadable
                .iter()
                .filter(|u| entry.outputs.contains(&u.file))
                .collect();
            let missing = entry
                .outputs
                .iter()
                .filter(|o| !present.contains(o.as_str()))
                .count();
            if bad.is_empty() && missing == 0 {
                continue;
            }
            let action = if inbox_has(ingest, dataset, entry).await? {
                Action::Reland {
                    dataset,
                    source: entry.source.clone(),
                }
            } else {
                Action::Lost {
                    dataset,
                    source: entry.source.clone(),
                }
            };
            for file in &bad {
                owned.insert(file.file.clone());
                findings.push(Finding {
                    file: Some(file.file.clone()),
                    why: format!("cannot be read ({})", file.why),
                    action: action.clone(),
                });
            }
            if missing > 0 {
                findings.push(Finding {
                    file: None,
                    why: format!(
                        "{}: {missing} of the {} file(s) it landed are missing from the lake",
                        entry.source,
                        entry.outputs.len()
                    ),
                    action,
                });
            }
        }
    }
    for file in unreadable.iter().filter(|u| !owned.contains(&u.file)) {
        findings.push(Finding {
            file: Some(file.file.clone()),
            why: format!("cannot be read ({})", file.why),
            action: recompute(&file.file),
        });
    }
    Ok(Diagnosis { findings })
}

/// Whether the inbox still has `entry`'s input with the content that was landed.
async fn inbox_has(ingest: &Ingest<'_>, dataset: Dataset, entry: &LedgerEntry) -> Result<bool> {
    for file in source::list(&ingest.inbox, dataset).await? {
        if file.name == entry.source {
            let prepared = source::prepare(&ingest.inbox, &file).await?;
            return Ok(prepared.content_hash == entry.content_hash);
        }
    }
    Ok(false)
}

/// What computes an unreadable file outside `raw/` and `quarantine/` again.
fn recompute(file: &str) -> Action {
    let parts: Vec<&str> = file.split('/').collect();
    let value = |key: &str| {
        parts
            .iter()
            .find_map(|p| p.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .unwrap_or("?")
    };
    match parts.first().copied() {
        Some("raw" | "quarantine") => Action::Orphan,
        Some("metrics") => Action::Recompute(format!(
            "`flowhealth metrics run {}@{} --period {}` computes it again",
            parts.get(1).unwrap_or(&"?"),
            value("version"),
            value("period")
        )),
        Some("breaches") => Action::Recompute(format!(
            "`flowhealth metrics run {}@{} --period {}` computes it again",
            value("metric"),
            value("version"),
            value("period")
        )),
        Some("exports") => Action::Recompute(format!(
            "the pipeline whose `sql` step writes exports/{} writes it again when run for {}",
            parts.get(1).unwrap_or(&"?"),
            value("period")
        )),
        Some("runs") => Action::Recompute(
            "nothing computes it again: it recorded a past run of a pipeline".into(),
        ),
        _ => Action::Recompute(
            "the next `metrics run` or `alerts` reads raw/opportunities again and keeps a new one"
                .into(),
        ),
    }
}
