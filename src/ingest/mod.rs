//! Inbox files -> validated, deduplicated rows in `raw/<dataset>/dt=YYYY-MM-DD/` and rejected rows
//! in `quarantine/<dataset>/dt=YYYY-MM-DD/`, with a ledger entry per file.
//!
//! How a run stays exact:
//! - Every Parquet file an input file produces is named `<content hash prefix>-<n>.parquet` (the
//!   stage changes an opportunities snapshot derives too, in `raw/stage_changes/`) and staged
//!   under `_staging/` ([`crate::lake::commit`]); the input file's ledger entry
//!   (`_flowhealth/ingest/ledger/<dataset>/<content hash>.json`) is the commit, and only then are
//!   the files moved into `raw/` and `quarantine/`. No reader sees a row before its file commits.
//!   A run that dies before the commit leaves only staged files, which the next run removes before
//!   it ingests that input file again from scratch; one that dies after it leaves a commit whose
//!   moves the next reader or run finishes.
//! - A file whose hash is in the ledger is skipped (re-running is a no-op). A row whose key
//!   ([`Dataset::key_columns`]) is already in the lake, or earlier in the same file, is counted as
//!   a duplicate. A file that changed since it was ingested is reported as such.
//! - One run at a time, enforced by a lock in the lake.
//! - A file still being written waits, a file that is not text is rejected, and the report says
//!   what the ledger knows of each file ([`arrival`]).
//! - A Parquet file of `raw/` that cannot be read is named, the other files still land, and
//!   `flowhealth doctor` / `repair` ([`repair`]) set it aside and land its input again.
//!
//! For every file: landed + quarantined + duplicates + blank = rows read.
//!
//! The stages of one file: [`source`] makes its bytes local and hashes them; [`decode`] decides
//! its encoding; a [`reader`] turns it into records with their physical line, through the
//! [`columns`] of its [`spec`] (its dataset's settings and its source's); [`validate`] types each
//! record; [`history`] derives stage changes from snapshots; [`buffer`] groups rows by `dt=`.

pub(crate) mod arrival;
pub(crate) mod buffer;
pub(crate) mod cell;
pub(crate) mod columns;
pub(crate) mod decode;
pub(crate) mod history;
pub(crate) mod keys;
pub(crate) mod reader;
pub mod repair;
pub(crate) mod source;
pub(crate) mod spec;
pub(crate) mod validate;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use datafusion::arrow::record_batch::RecordBatch;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use self::buffer::PartitionBuffer;
use self::history::{Added, Derivation, HistoryState};
use self::keys::{KeyHasher, KeySet};
use self::reader::{CsvRecords, JsonRecords, Records, Step, XlsxRecords};
use self::source::{Format, InboxFile, Prepared};
use self::spec::FileSpec;
use self::validate::{Validator, Value};
use crate::config::Config;
use crate::error::{Domain, Error, Result};
use crate::lake::Lake;
use crate::lake::commit::{self, Transaction};
use crate::lake::lock::LakeLock;
use crate::lake::schema::Dataset;

/// Rows held in memory per input file before they are written out (for `raw/` and for
/// `quarantine/` each). Bounds memory whatever the input size; it is also the largest file size.
pub const MAX_BUFFERED_ROWS: usize = 256 * 1024;

/// What happened to one input file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    Ingested,
    /// Ingested, and an earlier version of the same file had been ingested before.
    Changed,
    /// Its content was ingested before: nothing to do.
    AlreadyIngested,
    /// Could not be ingested as a whole; nothing of it landed.
    Rejected,
    /// Failed for a reason outside the file (storage); nothing of it landed.
    Failed,
    /// Still being written (modified within `inbox.settle_s`, or its last line has no line end
    /// yet): nothing of it landed; a later run lands it.
    Waiting,
}

impl fmt::Display for FileStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileStatus::Ingested => "ingested",
            FileStatus::Changed => "changed",
            FileStatus::AlreadyIngested => "already ingested",
            FileStatus::Rejected => "rejected",
            FileStatus::Failed => "failed",
            FileStatus::Waiting => "waiting",
        })
    }
}

/// Row counts of one file. `landed + quarantined + duplicates + blank == rows_read`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub rows_read: u64,
    pub landed: u64,
    pub quarantined: u64,
    pub duplicates: u64,
    /// Blank rows skipped: empty lines, lines of bare delimiters, objects without a value, empty
    /// spreadsheet rows. (Ledger entries written before blank rows were counted lack it: 0.)
    #[serde(default)]
    pub blank: u64,
    /// Stage changes derived from the file's snapshots and landed in `stage_changes` (not rows
    /// of the file: outside the sum above).
    #[serde(default)]
    pub derived: u64,
}

/// The ledger entry of an ingested file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub dataset: String,
    pub source: String,
    pub content_hash: String,
    pub size: u64,
    #[serde(flatten)]
    pub counts: Counts,
    pub ingested_at: DateTime<Utc>,
    /// Lake-relative paths of the Parquet files written for it.
    pub outputs: Vec<String>,
    /// How the file was read: its format, and for text its encoding (with how it was decided)
    /// and delimiter, e.g. `csv windows-1252 (detected) ';'`. Absent in older entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_as: Option<String>,
}

/// One line of the ingest report.
#[derive(Debug, Clone)]
pub struct FileOutcome {
    pub dataset: Dataset,
    pub source: String,
    pub status: FileStatus,
    pub counts: Counts,
    pub message: Option<String>,
    /// For a [`FileStatus::Failed`] file: whether trying it again later can help (the store was
    /// unreachable), as [`Error::retryable`] says of the failure.
    pub retryable: bool,
    /// How the file was read (see [`LedgerEntry::read_as`]), when it was.
    pub read_as: Option<String>,
}

#[derive(Debug, Default)]
pub struct IngestReport {
    pub files: Vec<FileOutcome>,
    /// Files (and staged transactions) of an interrupted earlier run that were removed before
    /// this one.
    pub recovered: usize,
    /// Commits of an interrupted earlier run whose files this run moved into place.
    pub finished: usize,
    /// Where the files were looked for, for messages.
    pub inbox: String,
    /// Parquet files of `raw/` that could not be read (lake-relative path: why). Their rows
    /// are not deduplicated against until `flowhealth repair` sets them aside and lands their
    /// inputs again.
    pub corrupt: Vec<String>,
}

impl IngestReport {
    pub fn totals(&self) -> Counts {
        self.files.iter().fold(Counts::default(), |t, f| Counts {
            rows_read: t.rows_read + f.counts.rows_read,
            landed: t.landed + f.counts.landed,
            quarantined: t.quarantined + f.counts.quarantined,
            duplicates: t.duplicates + f.counts.duplicates,
            blank: t.blank + f.counts.blank,
            derived: t.derived + f.counts.derived,
        })
    }

    /// 0 when every file was ingested or waits for its writer (quarantined rows are not a
    /// failure: they are accounted for), 2 when a file was rejected as bad input, 1 when storage
    /// failed or the lake holds a file that cannot be read.
    pub fn exit_code(&self) -> i32 {
        self.failure().map_or(0, |e| e.exit_code())
    }

    /// What went wrong, as one error with the whole report, in the domain that sets the exit
    /// status: a file that failed at run time (external; retryable when every such file is),
    /// else an unreadable file in the lake (internal), else a rejected file (the user's).
    /// `None` when nothing did. A pipeline's `ingest` step fails with it, as the command does.
    pub fn failure(&self) -> Option<Error> {
        let of = |status| self.files.iter().filter(move |f| f.status == status);
        let (domain, retryable) = if of(FileStatus::Failed).next().is_some() {
            (
                Domain::External,
                of(FileStatus::Failed).all(|f| f.retryable),
            )
        } else if !self.corrupt.is_empty() {
            (Domain::Internal, false)
        } else if of(FileStatus::Rejected).next().is_some() {
            (Domain::User, false)
        } else {
            return None;
        };
        Some(Error::Reported {
            message: self.to_string(),
            domain,
            retryable,
        })
    }

    /// One line for a run ledger: `ingest: 3 files (2 ingested, 1 waiting)`.
    pub fn summary(&self) -> String {
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for file in &self.files {
            *counts.entry(file.status.to_string()).or_default() += 1;
        }
        let counts: Vec<String> = counts.iter().map(|(s, n)| format!("{n} {s}")).collect();
        let n = self.files.len();
        format!(
            "ingest: {n} {}{}",
            if n == 1 { "file" } else { "files" },
            if counts.is_empty() {
                String::new()
            } else {
                format!(" ({})", counts.join(", "))
            }
        )
    }
}

impl fmt::Display for IngestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.files.is_empty() && self.corrupt.is_empty() {
            return writeln!(
                f,
                "no files to ingest in {}/<dataset>/ (datasets: actions, stage_changes, opportunities)",
                self.inbox
            );
        }
        let width = self
            .files
            .iter()
            .map(|o| o.source.len())
            .max()
            .unwrap_or(4)
            .max(4);
        // How each file was read and its blank rows go on an indented line under it, so that
        // every file line keeps the columns scripts and people expect, the status last.
        writeln!(
            f,
            "{:<width$}  {:>10}  {:>10}  {:>11}  {:>10}  status",
            "file", "read", "landed", "quarantined", "duplicates"
        )?;
        let blank = |n: u64| match n {
            0 => String::new(),
            1 => ", 1 blank row".to_string(),
            n => format!(", {n} blank rows"),
        };
        for o in &self.files {
            let c = o.counts;
            writeln!(
                f,
                "{:<width$}  {:>10}  {:>10}  {:>11}  {:>10}  {}",
                o.source, c.rows_read, c.landed, c.quarantined, c.duplicates, o.status
            )?;
            if let Some(read_as) = &o.read_as {
                writeln!(f, "    read as {read_as}{}", blank(c.blank))?;
            }
        }
        let t = self.totals();
        writeln!(
            f,
            "{:<width$}  {:>10}  {:>10}  {:>11}  {:>10}",
            "total", t.rows_read, t.landed, t.quarantined, t.duplicates
        )?;
        if t.blank > 0 {
            writeln!(
                f,
                "    and {} blank row(s) skipped: read = landed + quarantined + duplicates + blank",
                t.blank
            )?;
        }
        for o in self.files.iter().filter(|o| o.message.is_some()) {
            writeln!(
                f,
                "{}: {}: {}",
                o.source,
                o.status,
                o.message.as_deref().unwrap_or_default()
            )?;
        }
        if self.recovered > 0 {
            writeln!(
                f,
                "removed {} file(s) left by an interrupted earlier run; their inputs were ingested again",
                self.recovered
            )?;
        }
        if self.finished > 0 {
            writeln!(
                f,
                "finished {} commit(s) of an interrupted earlier run (their files moved into place)",
                self.finished
            )?;
        }
        for corrupt in &self.corrupt {
            writeln!(f, "{corrupt}")?;
        }
        if !self.corrupt.is_empty() {
            writeln!(
                f,
                "the lake holds {} Parquet file(s) that cannot be read; the other files landed, but rows repeating \
                 theirs could not be told apart: run `flowhealth doctor` to see what `flowhealth repair` will do \
                 (set them aside in quarantine/_corrupt/ and land their inbox files again)",
                self.corrupt.len()
            )?;
        }
        Ok(())
    }
}

/// Lands every new inbox file of `datasets` (all datasets when empty).
pub async fn ingest(config: &Config, datasets: &[Dataset]) -> Result<IngestReport> {
    let lake = Lake::open(config)?;
    let inbox = Lake::open_store(config, &config.inbox)?;
    let lock = LakeLock::acquire(&lake, "ingest").await?;
    let result = Ingest::new(config, lake.clone(), inbox)
        .run(if datasets.is_empty() {
            &Dataset::ALL
        } else {
            datasets
        })
        .await;
    lock.release().await?;
    result
}

/// Inbox files that more than one source of their dataset claims (`validate` reports them; an
/// ingest rejects them), as config problems. An inbox that cannot be listed is passed over: it
/// is not the configuration's problem.
pub async fn check_sources(config: &Config) -> Vec<String> {
    let Ok(inbox) = Lake::open_store(config, &config.inbox) else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    for dataset in Dataset::ALL {
        let has_sources = config
            .datasets
            .get(dataset.name())
            .is_some_and(|spec| !spec.sources.is_empty());
        if !has_sources {
            continue;
        }
        let files = match source::list(&inbox, dataset).await {
            Ok(files) => files,
            Err(e) => {
                tracing::warn!(dataset = dataset.name(), error = %e, "Cannot list the inbox to check the sources.");
                continue;
            }
        };
        for file in files {
            if let Err(reason) = FileSpec::new(config, dataset, &file.name) {
                problems.push(format!("{}: {}: {reason}", config.source, file.name));
            }
        }
    }
    problems
}

struct Ingest<'c> {
    config: &'c Config,
    lake: Lake,
    inbox: Lake,
    ingested_at: DateTime<Utc>,
    /// Only these inbox files (by name), when set: `repair` lands the inputs of what it set
    /// aside, and nothing else.
    only: Option<HashSet<String>>,
}

impl<'c> Ingest<'c> {
    fn new(config: &'c Config, lake: Lake, inbox: Lake) -> Self {
        Ingest {
            config,
            lake,
            inbox,
            ingested_at: Utc::now(),
            only: None,
        }
    }

    async fn run(&self, datasets: &[Dataset]) -> Result<IngestReport> {
        let mut report = IngestReport {
            inbox: self.inbox.display().to_string(),
            ..IngestReport::default()
        };
        // What an interrupted run left: its commits finished, its uncommitted files removed.
        let recovery = commit::recover(&self.lake, "ingest").await?;
        report.recovered += recovery.rolled_back;
        report.finished += recovery.rolled_forward;
        // Every dataset's ledger: an opportunities file commits the stage changes it derives too.
        let mut ledgers = BTreeMap::new();
        for dataset in Dataset::ALL {
            ledgers.insert(dataset, self.load_ledger(dataset).await?);
        }
        let committed: HashSet<String> = ledgers
            .values()
            .flat_map(BTreeMap::keys)
            .filter_map(|hash| hash.get(..16))
            .map(str::to_string)
            .collect();
        for &dataset in datasets {
            report.recovered += self.remove_uncommitted(dataset, &committed).await?;
            let mut state = DatasetState {
                ledger: ledgers.remove(&dataset).unwrap_or_default(),
                keys: None,
                history: None,
                unreadable: Vec::new(),
            };
            for file in source::list(&self.inbox, dataset).await? {
                if self
                    .only
                    .as_ref()
                    .is_some_and(|only| !only.contains(&file.name))
                {
                    continue;
                }
                let outcome = self.ingest_file(&file, &mut state).await;
                let outcome = match outcome {
                    Ok(outcome) => outcome,
                    Err(e) => FileOutcome {
                        dataset,
                        source: file.name.clone(),
                        status: if e.domain() == Domain::User {
                            FileStatus::Rejected
                        } else {
                            FileStatus::Failed
                        },
                        retryable: e.retryable(),
                        counts: Counts::default(),
                        // The report names the file already; keep just the reason.
                        message: Some(match e {
                            Error::InputFile { reason, .. } => reason,
                            other => other.to_string(),
                        }),
                        read_as: None,
                    },
                };
                match outcome.status {
                    FileStatus::Rejected | FileStatus::Failed => {
                        tracing::error!(dataset = dataset.name(), file = %outcome.source, status = %outcome.status, error = outcome.message.as_deref().unwrap_or_default(), "File not ingested.")
                    }
                    _ => tracing::info!(
                        dataset = dataset.name(),
                        file = %outcome.source,
                        status = %outcome.status,
                        rows_read = outcome.counts.rows_read,
                        landed = outcome.counts.landed,
                        quarantined = outcome.counts.quarantined,
                        duplicates = outcome.counts.duplicates,
                        blank = outcome.counts.blank,
                        read_as = outcome.read_as.as_deref().unwrap_or_default(),
                        "File done."
                    ),
                }
                report.files.push(outcome);
            }
            for unreadable in state.unreadable {
                if !report.corrupt.contains(&unreadable) {
                    report.corrupt.push(unreadable);
                }
            }
        }
        Ok(report)
    }

    fn ledger_dir(dataset: Dataset) -> [&'static str; 4] {
        ["_flowhealth", "ingest", "ledger", dataset.name()]
    }

    /// Ledger entries of `dataset`, by content hash.
    async fn load_ledger(&self, dataset: Dataset) -> Result<BTreeMap<String, LedgerEntry>> {
        let mut ledger = BTreeMap::new();
        for object in self.lake.list(&Self::ledger_dir(dataset)).await? {
            let Some(bytes) = self.lake.get(&object.location).await? else {
                continue;
            };
            let entry: LedgerEntry = serde_json::from_slice(&bytes).map_err(|e| {
                Error::Lake(format!(
                    "{}: corrupt ledger entry ({e}); delete it to ingest that file again",
                    self.lake.relative(&object.location)
                ))
            })?;
            ledger.insert(entry.content_hash.clone(), entry);
        }
        Ok(ledger)
    }

    /// Deletes data files of `dataset` that no ledger entry commits (`committed`: the content
    /// hash prefixes of every dataset's entries): what a run that was killed mid-file left behind.
    /// Returns how many were removed.
    async fn remove_uncommitted(
        &self,
        dataset: Dataset,
        committed: &HashSet<String>,
    ) -> Result<usize> {
        let mut removed = 0;
        for area in ["raw", "quarantine"] {
            for object in self.lake.list(&[area, dataset.name()]).await? {
                let name = object.location.filename().unwrap_or_default();
                let prefix = name.split('-').next().unwrap_or_default();
                if name.ends_with(".parquet") && !committed.contains(prefix) {
                    tracing::warn!(file = %self.lake.relative(&object.location), "Removing a file of an interrupted ingest.");
                    self.lake.delete(&object.location).await?;
                    removed += 1;
                }
            }
        }
        // A local store stages each write as `<name>#<n>` before renaming it into place; a
        // process killed mid-write leaves that staging file behind.
        if let Some(root) = self.lake.local_root() {
            for area in ["raw", "quarantine"] {
                removed += remove_staging_files(&root.join(area).join(dataset.name()))?;
            }
        }
        Ok(removed)
    }

    async fn ingest_file(&self, file: &InboxFile, state: &mut DatasetState) -> Result<FileOutcome> {
        let dataset = file.dataset;
        let ledger = &mut state.ledger;
        let rejected = |reason: String| Error::InputFile {
            file: file.name.clone(),
            reason,
        };
        let format = source::format_of(&file.name).map_err(rejected)?;
        let spec = FileSpec::new(self.config, dataset, &file.name).map_err(rejected)?;
        let outcome = |status, counts, message, read_as| FileOutcome {
            dataset,
            source: file.name.clone(),
            status,
            counts,
            message,
            retryable: false,
            read_as,
        };
        let settle_s = self.config.inbox.settle_s.unwrap_or(0.0);
        if let Some(why) = arrival::waiting_for_writer(file.modified, self.ingested_at, settle_s) {
            return Ok(outcome(
                FileStatus::Waiting,
                Counts::default(),
                Some(why),
                None,
            ));
        }
        let prepared = source::prepare(&self.inbox, file).await?;
        if let Some(entry) = ledger.get(&prepared.content_hash) {
            let message =
                (entry.source != file.name).then(|| format!("same content as {}", entry.source));
            return Ok(outcome(
                FileStatus::AlreadyIngested,
                Counts::default(),
                message,
                entry.read_as.clone(),
            ));
        }
        if prepared.size == 0 {
            return Err(rejected("the file is empty: expected a header row".into()));
        }
        if format != Format::Xlsx {
            let head = arrival::head(&prepared.path).map_err(|e| Error::io(&prepared.path, e))?;
            // UTF-16 has NUL bytes: declared so, it is text even without a byte order mark.
            let utf16 = matches!(spec.encoding, crate::config::EncodingSetting::Declared(e)
                if e == encoding_rs::UTF_16LE || e == encoding_rs::UTF_16BE);
            if let Some(why) = arrival::not_text(&head).filter(|_| !utf16) {
                return Err(rejected(why));
            }
            let cut = arrival::unterminated(&prepared.path, format, prepared.size, &head)
                .map_err(|e| Error::io(&prepared.path, e))?;
            if let Some(why) = cut {
                return Ok(outcome(
                    FileStatus::Waiting,
                    Counts::default(),
                    Some(why),
                    None,
                ));
            }
        }
        let previous = ledger
            .values()
            .filter(|e| e.source == file.name)
            .max_by_key(|e| e.ingested_at);
        let changed = previous.map(|previous| {
            format!(
                "changed since it was ingested at {} (content hash {} -> {}); rows already landed counted as duplicates",
                previous.ingested_at.format("%Y-%m-%d %H:%M:%S UTC"),
                previous.content_hash.get(..12).unwrap_or(&previous.content_hash),
                &prepared.content_hash[..12]
            )
        });
        if state.keys.is_none() {
            let (loaded, unreadable) = keys::load(&self.lake, dataset).await?;
            state.unreadable.extend(unreadable);
            state.keys = Some(loaded);
        }
        if spec.history.is_some() && state.history.is_none() {
            let (history, unreadable) = HistoryState::load(&self.lake).await?;
            state.unreadable.extend(unreadable);
            state.history = Some(history);
        }
        let known = Arc::new(state.keys.take().expect("loaded above"));
        let history = state.history.take().map(Arc::new);
        let result = self
            .land(
                file,
                format,
                &spec,
                &prepared,
                known.clone(),
                history.clone(),
            )
            .await;
        state.keys = Some(Arc::try_unwrap(known).unwrap_or_else(|shared| (*shared).clone()));
        state.history =
            history.map(|h| Arc::try_unwrap(h).unwrap_or_else(|shared| (*shared).clone()));
        let Landed {
            counts,
            transaction,
            new_keys,
            read_as,
            history: added,
        } = result?;
        let outputs = transaction
            .staged()
            .map(|path| self.lake.relative(path))
            .collect();
        let entry = LedgerEntry {
            dataset: dataset.name().into(),
            source: file.name.clone(),
            content_hash: prepared.content_hash.clone(),
            size: prepared.size,
            counts,
            ingested_at: self.ingested_at,
            outputs,
            read_as: Some(read_as.clone()),
        };
        let entry_name = format!("{}.json", prepared.content_hash);
        let mut entry_parts = Self::ledger_dir(dataset).to_vec();
        entry_parts.push(&entry_name);
        let entry_path = self.lake.path(&entry_parts);
        let entry_bytes = bytes::Bytes::from(serde_json::to_vec_pretty(&entry)?);
        // Past the commit point the file is landed, even when a move failed: its keys and history
        // count for the files after it, or an overlapping export would land its rows again.
        let committed = transaction.commit(Some((entry_path, entry_bytes))).await?;
        ledger.insert(entry.content_hash.clone(), entry);
        state
            .keys
            .as_mut()
            .expect("restored above")
            .extend(new_keys);
        if let (Some(history), Some(added)) = (state.history.as_mut(), added) {
            history.merge(added);
        }
        let status = if changed.is_some() {
            FileStatus::Changed
        } else {
            FileStatus::Ingested
        };
        // Changed: the ledger knew the name. Otherwise the name and the content are new to it,
        // and rows it repeats are worth saying (an edited copy sent under another name).
        let known = changed
            .or_else(|| arrival::repeated_rows(dataset, counts.duplicates, counts.rows_read));
        let message = match (known, counts.derived) {
            (known, 0) => known,
            (None, n) => Some(format!("{n} stage change(s) derived from the snapshots")),
            (Some(known), n) => Some(format!(
                "{known}; {n} stage change(s) derived from the snapshots"
            )),
        };
        let message = match committed.pending {
            None => message,
            Some(error) => {
                tracing::warn!(dataset = dataset.name(), file = %file.name, %error, "Committed, but not every file is in place yet.");
                let pending = format!(
                    "committed, but not every file is in place yet ({error}): the next query, metrics run, report or ingest moves them"
                );
                Some(match message {
                    Some(message) => format!("{message}; {pending}"),
                    None => pending,
                })
            }
        };
        Ok(outcome(status, counts, message, Some(read_as)))
    }

    /// Parses, validates and stages one file's rows in a transaction for the caller to commit.
    /// On failure, whatever it staged is removed again.
    async fn land(
        &self,
        file: &InboxFile,
        format: Format,
        spec: &FileSpec,
        prepared: &Prepared,
        known: Arc<KeySet>,
        history: Option<Arc<HistoryState>>,
    ) -> Result<Landed> {
        let dataset = file.dataset;
        let rejected = |reason: String| Error::InputFile {
            file: file.name.clone(),
            reason,
        };
        let all_utf8 = prepared.first_non_utf8.is_none();
        let region = decode::region_of(spec.timezone.unwrap_or(self.config.timezone));
        let (records, read_as): (Box<dyn Records>, String) = match format {
            Format::Csv => {
                let text = source::open_text(prepared, spec.encoding, region, &spec.key)
                    .map_err(rejected)?;
                let delimiter = spec.delimiter_for(&file.name, &text.prefix);
                let read_as = format!(
                    "csv {} {}",
                    text.decision,
                    match delimiter {
                        b'\t' => "tab".to_string(),
                        other => format!("'{}'", other as char),
                    }
                );
                let records = CsvRecords::new(text, all_utf8, spec, delimiter).map_err(rejected)?;
                (Box::new(records), read_as)
            }
            Format::Json => {
                let text = source::open_text(prepared, spec.encoding, region, &spec.key)
                    .map_err(rejected)?;
                let shape = if text.prefix.trim_start().starts_with('[') {
                    "array"
                } else {
                    "lines"
                };
                let read_as = format!("json {shape} {}", text.decision);
                (Box::new(JsonRecords::new(text, all_utf8, spec)), read_as)
            }
            Format::Xlsx => {
                let path = prepared.path.clone();
                let xlsx_spec = spec.clone();
                let opened =
                    tokio::task::spawn_blocking(move || XlsxRecords::open(&path, &xlsx_spec))
                        .await?;
                let sheet = spec.sheet.as_deref().unwrap_or("first sheet");
                (Box::new(opened.map_err(rejected)?), format!("xlsx {sheet}"))
            }
        };
        let progress = progress_bar(
            &file.name,
            if format == Format::Xlsx {
                None
            } else {
                Some(prepared.size)
            },
        );
        let (sender, mut receiver) =
            tokio::sync::mpsc::channel::<(object_store::path::Path, RecordBatch)>(2);
        let parse = FileParse {
            records,
            validator: Validator::new(self.config, spec),
            history: match (&spec.history, history) {
                (Some(history_spec), Some(state)) => {
                    Some(Derivation::new(history_spec.clone(), state))
                }
                _ => None,
            },
            dataset,
            source: file.name.clone(),
            prefix: prepared.content_hash[..16].to_string(),
            ingested_at: self.ingested_at.timestamp_micros(),
            lake: self.lake.clone(),
            known,
            progress: progress.clone(),
        };
        let parser = tokio::task::spawn_blocking(move || parse.run(sender));
        let mut transaction = Transaction::begin(&self.lake, "ingest");
        let mut write_error = None;
        while let Some((path, batch)) = receiver.recv().await {
            if write_error.is_some() {
                continue; // drain, so the parser finishes
            }
            let encoded =
                tokio::task::spawn_blocking(move || crate::lake::encode_parquet(&batch)).await;
            match encoded {
                Ok(Ok(bytes)) => {
                    if let Err(e) = transaction.stage(path, bytes).await {
                        write_error = Some(e);
                    }
                }
                Ok(Err(e)) => write_error = Some(e),
                Err(e) => write_error = Some(e.into()),
            }
        }
        let parsed = parser.await;
        progress.finish_and_clear();
        let result = match (parsed, write_error) {
            (Ok(Ok(parsed)), None) => Ok(parsed),
            (Ok(Err(reason)), _) => Err(Error::InputFile {
                file: file.name.clone(),
                reason,
            }),
            (Err(e), _) => Err(e.into()),
            (_, Some(e)) => Err(e),
        };
        match result {
            Ok((counts, new_keys, history)) => Ok(Landed {
                counts,
                transaction,
                new_keys,
                read_as,
                history,
            }),
            Err(e) => {
                transaction.abort().await?;
                Err(e)
            }
        }
    }
}

/// What landing one file produced.
struct Landed {
    counts: Counts,
    /// The Parquet files staged, for the caller to commit with the ledger entry.
    transaction: Transaction,
    /// The keys of the rows it landed.
    new_keys: KeySet,
    /// How it was read, for the report and the ledger.
    read_as: String,
    /// What it added to the stage history (snapshots with `stage_history`).
    history: Option<Added>,
}

/// One dataset's state during a run.
struct DatasetState {
    /// Its ledger, by content hash.
    ledger: BTreeMap<String, LedgerEntry>,
    /// The keys of its rows in the lake, loaded at its first new file.
    keys: Option<KeySet>,
    /// The stage history, loaded at the first snapshot file that derives from it.
    history: Option<HistoryState>,
    /// Files of `raw/` that could not be read while loading the keys or the history.
    unreadable: Vec<String>,
}

/// The blocking half of landing a file: records in, batches out.
struct FileParse {
    records: Box<dyn Records>,
    validator: Validator,
    dataset: Dataset,
    source: String,
    prefix: String,
    ingested_at: i64,
    lake: Lake,
    known: Arc<KeySet>,
    /// Stage changes derived from snapshots, when the file's dataset derives them.
    history: Option<Derivation>,
    progress: ProgressBar,
}

type Sink = tokio::sync::mpsc::Sender<(object_store::path::Path, RecordBatch)>;

/// What parsing one file gave: its counts, the keys it added, what it added to the stage history.
type Parsed = (Counts, KeySet, Option<Added>);

fn line_number(records: &dyn Records) -> i64 {
    records.line() as i64
}

impl FileParse {
    /// Returns the counts, the keys this file added and what it added to the stage history, or
    /// why the file as a whole failed.
    fn run(mut self, sink: Sink) -> std::result::Result<Parsed, String> {
        let dataset = self.dataset;
        let mut raw = PartitionBuffer::new(dataset.raw_schema());
        let mut derived = PartitionBuffer::new(Dataset::StageChanges.raw_schema());
        let mut quarantine = PartitionBuffer::new(dataset.quarantine_schema());
        let mut hasher = KeyHasher::new(dataset);
        let mut new_keys = KeySet::default();
        let mut counts = Counts::default();
        let mut sequence = 0usize;
        let ingest_date = self.validator.local_date(self.ingested_at);
        let partition = dataset.partition_column();
        let source = Value::Text(self.source.clone().into());
        let ingested_at = Value::Timestamp(self.ingested_at);
        let started = Instant::now();
        let width = dataset.columns().len();
        loop {
            match self.records.advance()? {
                Step::End => break,
                Step::Blank => {
                    counts.rows_read += 1;
                    counts.blank += 1;
                    continue;
                }
                Step::Record => counts.rows_read += 1,
            }
            let line = Value::Int(self.records.line() as i64);
            let records = &*self.records;
            let verdict = match records.problem() {
                Some(problem) => Err(problem),
                None => self.validator.validate(|i| records.cell(i)),
            };
            // A snapshot whose stage change cannot be derived goes to quarantine whole.
            let verdict = match (verdict, self.history.as_mut()) {
                (Ok(values), Some(history)) => history
                    .derive(
                        &values,
                        |i| records.cell(i),
                        &self.validator,
                        (self.ingested_at, line_number(records)),
                    )
                    .map(|change| (values, change)),
                (verdict, _) => verdict.map(|values| (values, None)),
            };
            match verdict {
                Ok((values, change)) => {
                    if let Some(change) = change {
                        let dt = match change[3] {
                            Value::Timestamp(at) => self.validator.local_date(at),
                            _ => ingest_date,
                        };
                        derived.push(dt, change.iter().chain([&source, &line, &ingested_at]));
                    }
                    let key = hasher.key(&values);
                    if self.known.contains(&key) || !new_keys.insert(key) {
                        counts.duplicates += 1;
                    } else {
                        let dt = match partition.map(|p| &values[p]) {
                            Some(Value::Timestamp(t)) => self.validator.local_date(*t),
                            _ => ingest_date,
                        };
                        raw.push(dt, values.iter().chain([&source, &line, &ingested_at]));
                        counts.landed += 1;
                    }
                }
                Err(reason) => {
                    let texts: Vec<Value> = (0..width)
                        .map(|i| {
                            records
                                .cell(i)
                                .to_text()
                                .map_or(Value::Null, |t| Value::Text(t.into()))
                        })
                        .collect();
                    let extra = [
                        Value::Text(reason.into()),
                        source.clone(),
                        line.clone(),
                        Value::Text(records.raw_json().into()),
                        ingested_at.clone(),
                    ];
                    quarantine.push(ingest_date, texts.iter().chain(extra.iter()));
                    counts.quarantined += 1;
                }
            }
            if raw.rows() >= MAX_BUFFERED_ROWS {
                self.flush(&mut raw, "raw", dataset, &mut sequence, &sink)?;
            }
            if quarantine.rows() >= MAX_BUFFERED_ROWS {
                self.flush(&mut quarantine, "quarantine", dataset, &mut sequence, &sink)?;
            }
            if derived.rows() >= MAX_BUFFERED_ROWS {
                let to = Dataset::StageChanges;
                self.flush(&mut derived, "raw", to, &mut sequence, &sink)?;
            }
            if counts.rows_read % 16384 == 0 {
                self.progress.set_position(self.records.position());
                let rate = counts.rows_read as f64 / started.elapsed().as_secs_f64().max(1e-3);
                self.progress
                    .set_message(format!("{} rows, {:.0} rows/s", counts.rows_read, rate));
            }
        }
        self.flush(&mut raw, "raw", dataset, &mut sequence, &sink)?;
        self.flush(&mut quarantine, "quarantine", dataset, &mut sequence, &sink)?;
        let to = Dataset::StageChanges;
        self.flush(&mut derived, "raw", to, &mut sequence, &sink)?;
        let history = self.history.map(|h| h.added);
        counts.derived = history.as_ref().map_or(0, |h| h.derived);
        Ok((counts, new_keys, history))
    }

    /// Sends what `buffer` holds to `<area>/<dataset>/dt=.../<prefix>-<n>.parquet`.
    fn flush(
        &self,
        buffer: &mut PartitionBuffer,
        area: &str,
        dataset: Dataset,
        sequence: &mut usize,
        sink: &Sink,
    ) -> std::result::Result<(), String> {
        for (dt, batch) in buffer.drain().map_err(|e| e.to_string())? {
            *sequence += 1;
            let path = self.lake.path(&[
                area,
                dataset.name(),
                &format!("dt={}", dt.format("%Y-%m-%d")),
                &format!("{}-{:05}.parquet", self.prefix, sequence),
            ]);
            sink.blocking_send((path, batch))
                .map_err(|_| "the writer stopped".to_string())?;
        }
        Ok(())
    }
}

fn progress_bar(name: &str, bytes: Option<u64>) -> ProgressBar {
    let bar = match bytes {
        Some(total) => ProgressBar::new(total).with_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {msg} ({eta})")
                .expect("static template")
                .progress_chars("=> "),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {prefix} {msg}").expect("static template"),
        ),
    };
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    bar.with_prefix(name.to_string())
}

/// Removes `<name>#<digits>` staging files below `dir`; returns how many.
fn remove_staging_files(dir: &std::path::Path) -> Result<usize> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            removed += remove_staging_files(&path)?;
        } else if let Some((_, suffix)) = entry.file_name().to_string_lossy().rsplit_once('#')
            && !suffix.is_empty()
            && suffix.bytes().all(|b| b.is_ascii_digit())
        {
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
            removed += 1;
        }
    }
    Ok(removed)
}
