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
pub(crate) mod chunk;
pub(crate) mod columns;
pub(crate) mod decode;
pub(crate) mod history;
pub(crate) mod keys;
pub(crate) mod parse;
pub(crate) mod reader;
pub mod repair;
pub(crate) mod source;
pub(crate) mod spec;
pub(crate) mod validate;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::record_batch::RecordBatch;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};

use self::history::{Added, Derivation, HistoryState};
use self::keys::KeySet;
use self::reader::{CsvRecords, Input, JsonRecords, Records, XlsxRecords};
use self::source::{Format, InboxFile, Prepared};
use self::spec::FileSpec;
use self::validate::Validator;
use crate::config::Config;
use crate::error::{Domain, Error, Result};
use crate::lake::Lake;
use crate::lake::commit::{self, Transaction};
use crate::lake::lock::LakeLock;
use crate::lake::schema::Dataset;

pub use self::parse::{Counts, MAX_BUFFERED_ROWS};

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
        let mut totals = Counts::default();
        for file in &self.files {
            totals += file.counts;
        }
        totals
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
    /// Threads that read the chunks of a text file: one per core.
    threads: usize,
    /// Whether text files are cut into chunks read on every core (tests compare it with one
    /// pass), and the size chunks aim at ([`chunk::CHUNK_BYTES`]; tests cut files much finer).
    parallel: bool,
    chunk_bytes: usize,
}

impl<'c> Ingest<'c> {
    fn new(config: &'c Config, lake: Lake, inbox: Lake) -> Self {
        Ingest {
            config,
            lake,
            inbox,
            ingested_at: Utc::now(),
            only: None,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            parallel: true,
            chunk_bytes: chunk::CHUNK_BYTES,
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
        // Snapshots that derive stage history are read in order: each derivation depends on the
        // rows before it. Other text files are cut into chunks read on every core.
        let chunked = self.parallel && spec.history.is_none();
        let (input, read_as): (Input, String) = match format {
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
                let input = if chunked {
                    records.into_chunks(self.chunk_bytes)
                } else {
                    Input::Stream(Box::new(records))
                };
                (input, read_as)
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
                let records = JsonRecords::new(text, all_utf8, spec);
                let input = if chunked {
                    records.into_input(self.chunk_bytes)
                } else {
                    Input::Stream(Box::new(records))
                };
                (input, read_as)
            }
            Format::Xlsx => {
                let path = prepared.path.clone();
                let xlsx_spec = spec.clone();
                let opened =
                    tokio::task::spawn_blocking(move || XlsxRecords::open(&path, &xlsx_spec))
                        .await?;
                let sheet = spec.sheet.as_deref().unwrap_or("first sheet");
                let records: Box<dyn Records> = Box::new(opened.map_err(rejected)?);
                (Input::Stream(records), format!("xlsx {sheet}"))
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
        let threads = match &input {
            Input::Chunked { .. } => self.threads,
            Input::Stream(_) => 1,
        };
        let validators = (0..threads)
            .map(|_| Validator::new(self.config, spec))
            .collect();
        let derivation = match (&spec.history, history) {
            (Some(history_spec), Some(state)) => Some(Derivation::new(history_spec.clone(), state)),
            _ => None,
        };
        let setup = parse::Setup {
            dataset,
            source: file.name.clone(),
            prefix: prepared.content_hash[..16].to_string(),
            ingested_at: self.ingested_at.timestamp_micros(),
            lake: self.lake.clone(),
            known,
            progress: progress.clone(),
        };
        let parser = tokio::task::spawn_blocking(move || {
            parse::run(input, &setup, validators, derivation, sender)
        });
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
            // A reader that failed in flowhealth's own code is not the file's fault.
            (Ok(Err(reason)), _) if reason.starts_with(parse::INTERNAL) => {
                Err(Error::Internal(format!("{}: {reason}", file.name)))
            }
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

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    use super::*;

    /// Every row under `dir` as a line of text, sorted.
    fn rows(dir: &Path) -> Vec<String> {
        let mut rows = Vec::new();
        let mut dirs = vec![dir.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let file = std::fs::File::open(&path).unwrap();
                let dt = dir.file_name().unwrap().to_string_lossy().into_owned();
                for batch in ParquetRecordBatchReaderBuilder::try_new(file)
                    .unwrap()
                    .build()
                    .unwrap()
                {
                    let batch = batch.unwrap();
                    let options = FormatOptions::default().with_null("NULL");
                    let columns: Vec<ArrayFormatter> = batch
                        .columns()
                        .iter()
                        .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
                        .collect();
                    for i in 0..batch.num_rows() {
                        let cells: Vec<String> =
                            columns.iter().map(|c| c.value(i).to_string()).collect();
                        rows.push(format!("{dt} {}", cells.join(" | ")));
                    }
                }
            }
        }
        rows.sort();
        rows
    }

    /// A file with what makes cutting hard: multi-line quoted fields, CRLF and lone CR line ends,
    /// blank lines, ids repeated far apart (in other chunks), rows to quarantine, a record
    /// starting with U+FEFF, a last line without its end.
    fn tricky_file() -> String {
        let mut text = String::from("action_id,occurred_at,owner_id,action_type,note\r\n");
        for i in 0..3000 {
            let id = if i % 97 == 5 { i - 5 } else { i };
            let time = if i % 211 == 3 {
                "yesterday".to_string()
            } else {
                format!("2026-03-{:02} {:02}:{:02}", 1 + i % 28, i % 24, i % 60)
            };
            let note = match i % 7 {
                0 => "\"two\nlines, \"\"quoted\"\"\"".to_string(),
                1 => "\"cr\r\nlf\"".to_string(),
                2 => String::new(),
                _ => format!("n{i}"),
            };
            let end = match i % 5 {
                0 => "\r\n",
                1 => "\n\n",
                2 => "\r",
                _ => "\n",
            };
            let bom = if i % 503 == 9 { "\u{FEFF}" } else { "" };
            text += &format!("{bom}a{id},{time},R{},call,{note}{end}", i % 13);
        }
        text + "a-last,2026-03-03 10:00,R1,call,end\n"
    }

    async fn ingest(work: &Path, content: &str, parallel: bool, chunk_bytes: usize) -> Counts {
        let (lake, inbox) = (work.join("lake"), work.join("inbox"));
        std::fs::create_dir_all(inbox.join("actions")).unwrap();
        std::fs::write(inbox.join("actions/a.csv"), content).unwrap();
        let env = |key: &str| match key {
            "FLOWHEALTH_LAKE" => Some(lake.display().to_string()),
            "FLOWHEALTH_INBOX" => Some(inbox.display().to_string()),
            _ => None,
        };
        let mut config = Config::parse(
            crate::config::EMBEDDED,
            "config.yaml",
            PathBuf::from("."),
            env,
        )
        .unwrap();
        // The file was written a moment ago.
        config.inbox.settle_s = None;
        let mut ingest = Ingest::new(
            &config,
            Lake::open(&config).unwrap(),
            Lake::open_store(&config, &config.inbox).unwrap(),
        );
        ingest.ingested_at = DateTime::from_timestamp(4_000_000_000, 0).unwrap();
        ingest.parallel = parallel;
        ingest.chunk_bytes = chunk_bytes;
        ingest.threads = 3;
        let report = ingest.run(&[Dataset::Actions]).await.unwrap();
        assert_eq!(report.files.len(), 1);
        assert_eq!(report.files[0].status, FileStatus::Ingested, "{report}");
        report.files[0].counts
    }

    #[tokio::test]
    async fn chunked_ingest_lands_exactly_what_one_pass_lands() {
        let content = tricky_file();
        let dir = tempfile::tempdir().unwrap();
        let one_pass = dir.path().join("one-pass");
        let counts = ingest(&one_pass, &content, false, 0).await;
        assert!(counts.duplicates > 20 && counts.quarantined > 10 && counts.blank > 500);
        let (raw, quarantine) = (
            rows(&one_pass.join("lake/raw")),
            rows(&one_pass.join("lake/quarantine")),
        );
        assert_eq!(raw.len() as u64, counts.landed);
        for chunk_bytes in [1, 100, 4096, chunk::CHUNK_BYTES] {
            let work = dir.path().join(format!("chunks-{chunk_bytes}"));
            assert_eq!(ingest(&work, &content, true, chunk_bytes).await, counts);
            assert_eq!(rows(&work.join("lake/raw")), raw, "chunks of {chunk_bytes}");
            assert_eq!(
                rows(&work.join("lake/quarantine")),
                quarantine,
                "chunks of {chunk_bytes}"
            );
        }
    }
}
