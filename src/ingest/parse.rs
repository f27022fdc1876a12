//! One file's records -> validated, deduplicated rows grouped by `dt=`, as Arrow batches for the
//! writer, on every core when the file is cut into chunks ([`super::chunk`]).
//!
//! Each thread turns a stretch of records into a [`Piece`]: rows validated, keyed
//! ([`super::keys`]) and grouped by `dt=`, duplicates within the stretch already counted. The
//! [`Assembler`] takes the pieces in file order, so that "the first one landed wins" holds across
//! pieces exactly as within one, and writes each area's rows out when [`MAX_BUFFERED_ROWS`] are
//! buffered. A file read as one stream (XLSX, a JSON array, snapshots that derive stage history,
//! whose derivation depends on every earlier row) goes through the same pieces and assembler on
//! one thread.

use std::collections::BTreeMap;
use std::sync::mpsc::{channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::NaiveDate;
use datafusion::arrow::array::BooleanArray;
use datafusion::arrow::compute::{concat_batches, filter_record_batch};
use datafusion::arrow::record_batch::RecordBatch;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use super::buffer::{Drained, PartitionBuffer};
use super::chunk::Chunks;
use super::history::{Added, Derivation};
use super::keys::{KeyHasher, KeySet};
use super::reader::{ChunkReader, Input, Records, Step};
use super::validate::{Validator, Value};
use crate::lake::Lake;
use crate::lake::schema::Dataset;

/// Rows held in memory per input file before they are written out (for `raw/` and for
/// `quarantine/` each). Bounds memory whatever the input size; it is also the largest file size.
pub const MAX_BUFFERED_ROWS: usize = 256 * 1024;

/// Rows a file read as one stream hands to the assembler at a time.
const PIECE_ROWS: u64 = 16 * 1024;

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

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, other: Counts) {
        self.rows_read += other.rows_read;
        self.landed += other.landed;
        self.quarantined += other.quarantined;
        self.duplicates += other.duplicates;
        self.blank += other.blank;
        self.derived += other.derived;
    }
}

/// How a parse failure that is flowhealth's own, not the file's, begins (the file is `failed`,
/// exit 1, rather than `rejected`).
pub const INTERNAL: &str = "internal error: ";

/// Where batches go: the lake path of the file and its rows.
pub type Sink = tokio::sync::mpsc::Sender<(object_store::path::Path, RecordBatch)>;

/// What parsing one file gave: its counts, the keys it landed, what it added to the stage
/// history.
pub type Parsed = (Counts, KeySet, Option<Added>);

/// What every thread of one file's parse shares.
pub struct Setup {
    pub dataset: Dataset,
    /// The input file's name, for `source_file`.
    pub source: String,
    /// The file names' prefix (the content hash's first digits).
    pub prefix: String,
    /// UTC microseconds, for `ingested_at`.
    pub ingested_at: i64,
    pub lake: Lake,
    /// Keys already in the lake.
    pub known: Arc<KeySet>,
    pub progress: ProgressBar,
}

/// Parses `input` with one validator per thread (`validators`: at least one; a stream uses the
/// first) and sends its batches to `sink`. `Err` says why the file as a whole failed.
pub fn run(
    input: Input,
    setup: &Setup,
    validators: Vec<Validator>,
    history: Option<Derivation>,
    sink: Sink,
) -> Result<Parsed, String> {
    let mut assembler = Assembler::new(setup, sink);
    let mut threads: Vec<Rows> = validators
        .into_iter()
        .map(|validator| Rows::new(setup, validator))
        .collect();
    let added = match input {
        Input::Stream(records) => {
            let mut rows = threads.swap_remove(0);
            rows.history = history;
            stream(records, &mut rows, &mut assembler)?;
            rows.history.map(|h| h.added)
        }
        Input::Chunked { reader, chunks } => {
            chunked(reader, chunks, threads, &mut assembler)?;
            None
        }
    };
    let (mut counts, keys) = assembler.finish()?;
    counts.derived = added.as_ref().map_or(0, |a| a.derived);
    Ok((counts, keys, added))
}

/// Reads a stream of records on this thread, a piece at a time.
fn stream(
    mut records: Box<dyn Records>,
    rows: &mut Rows,
    assembler: &mut Assembler,
) -> Result<(), String> {
    loop {
        let end = rows.read(&mut *records, PIECE_ROWS)?;
        assembler.add(rows.piece(records.position())?)?;
        if end {
            return Ok(());
        }
    }
}

/// Reads the chunks on one thread per `threads` entry while this thread assembles their pieces in
/// file order. At most a few chunks per thread are in flight, so memory stays bounded whatever
/// the file size, however unevenly the chunks take.
fn chunked(
    reader: Arc<dyn ChunkReader>,
    chunks: Chunks,
    threads: Vec<Rows>,
    assembler: &mut Assembler,
) -> Result<(), String> {
    let in_flight = 2 * threads.len() + 2;
    let (jobs, job_queue) = sync_channel(threads.len());
    // Held by the workers alone: once they have all stopped, a cutter blocked handing out a
    // chunk is let go.
    let job_queue = Arc::new(Mutex::new(job_queue));
    let reader = &reader;
    std::thread::scope(|scope| {
        let (done, pieces) = channel::<(usize, Result<Piece, String>)>();
        // A token per chunk in flight: the cutter takes one before it hands a chunk out, the
        // assembler gives it back when it has taken that chunk's piece.
        let (give_back, tokens) = sync_channel::<()>(in_flight);
        for _ in 0..in_flight {
            give_back
                .send(())
                .expect("the channel has room for every token");
        }
        for mut rows in threads {
            let done = done.clone();
            let job_queue = Arc::clone(&job_queue);
            scope.spawn(move || {
                loop {
                    let Ok(queue) = job_queue.lock() else { break };
                    let job = queue.recv();
                    drop(queue);
                    let Ok((index, chunk)) = job else { break };
                    // A panic is this chunk's error, so the assembler, waiting for the chunk in
                    // file order, fails the file instead of waiting for ever.
                    let piece = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let mut records = reader.records(chunk);
                        rows.read(&mut *records, u64::MAX)
                            .and_then(|_| rows.piece(records.position()))
                    }))
                    .unwrap_or_else(|panic| {
                        Err(format!(
                            "{INTERNAL}reading chunk {index} failed: {}",
                            crate::error::panic_message(panic.as_ref())
                        ))
                    });
                    let failed = piece.is_err();
                    if done.send((index, piece)).is_err() || failed {
                        break;
                    }
                }
            });
        }
        drop(job_queue);
        scope.spawn(move || {
            for (index, chunk) in chunks.enumerate() {
                if tokens.recv().is_err() {
                    break; // the assembler stopped
                }
                let sent = match chunk {
                    Ok(chunk) => jobs.send((index, chunk)).is_ok(),
                    Err(e) => {
                        let _ = done.send((index, Err(format!("read failed: {e}"))));
                        false
                    }
                };
                if !sent {
                    break;
                }
            }
        });
        // Every sender is gone once the cutter and the workers are done.
        let mut waiting = BTreeMap::new();
        let mut next = 0;
        for (index, piece) in pieces.iter() {
            waiting.insert(index, piece);
            while let Some(piece) = waiting.remove(&next) {
                next += 1;
                assembler.add(piece?)?;
                let _ = give_back.send(());
            }
        }
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(format!("{INTERNAL}chunk {next} of the file was never read"))
        }
    })
}

/// What a stretch of a file became. Its duplicates of earlier stretches are the assembler's to
/// find.
struct Piece {
    /// Rows read, blank, quarantined, and duplicates within the stretch.
    counts: Counts,
    /// Landed rows by `dt=`, with each row's key.
    raw: Vec<Drained>,
    /// Stage changes derived from snapshots.
    derived: Vec<Drained>,
    quarantine: Vec<Drained>,
    /// Input bytes consumed up to the end of the stretch.
    position: u64,
}

/// One thread's row work: records -> values -> the right buffer.
struct Rows {
    dataset: Dataset,
    validator: Validator,
    history: Option<Derivation>,
    hasher: KeyHasher,
    known: Arc<KeySet>,
    /// Keys of the rows of the current piece.
    seen: KeySet,
    raw: PartitionBuffer,
    derived: PartitionBuffer,
    quarantine: PartitionBuffer,
    counts: Counts,
    source: Value<'static>,
    ingested_at: (i64, Value<'static>),
    ingest_date: NaiveDate,
}

impl Rows {
    fn new(setup: &Setup, validator: Validator) -> Rows {
        let dataset = setup.dataset;
        Rows {
            dataset,
            ingest_date: validator.local_date(setup.ingested_at),
            validator,
            history: None,
            hasher: KeyHasher::new(dataset),
            known: setup.known.clone(),
            seen: KeySet::default(),
            raw: PartitionBuffer::new(dataset.raw_schema()),
            derived: PartitionBuffer::new(Dataset::StageChanges.raw_schema()),
            quarantine: PartitionBuffer::new(dataset.quarantine_schema()),
            counts: Counts::default(),
            source: Value::Text(setup.source.clone().into()),
            ingested_at: (setup.ingested_at, Value::Timestamp(setup.ingested_at)),
        }
    }

    /// Takes up to `limit` rows from `records`; `true` when it reached their end.
    fn read(&mut self, records: &mut dyn Records, limit: u64) -> Result<bool, String> {
        for _ in 0..limit {
            match records.advance()? {
                Step::End => return Ok(true),
                Step::Blank => {
                    self.counts.rows_read += 1;
                    self.counts.blank += 1;
                }
                Step::Record => {
                    self.counts.rows_read += 1;
                    self.record(records);
                }
            }
        }
        Ok(false)
    }

    /// Validates the current record and buffers it: landed (unless its key was seen), derived,
    /// or quarantined.
    fn record(&mut self, records: &dyn Records) {
        let line = Value::Int(records.line() as i64);
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
                    (self.ingested_at.0, records.line() as i64),
                )
                .map(|change| (values, change)),
            (verdict, _) => verdict.map(|values| (values, None)),
        };
        let extra = [&self.source, &line, &self.ingested_at.1];
        match verdict {
            Ok((values, change)) => {
                if let Some(change) = change {
                    let dt = match change[3] {
                        Value::Timestamp(at) => self.validator.local_date(at),
                        _ => self.ingest_date,
                    };
                    self.derived.push(dt, change.iter().chain(extra));
                }
                let key = self.hasher.key(&values);
                if self.known.contains(&key) || !self.seen.insert(key) {
                    self.counts.duplicates += 1;
                } else {
                    let dt = match self.dataset.partition_column().map(|p| &values[p]) {
                        Some(Value::Timestamp(t)) => self.validator.local_date(*t),
                        _ => self.ingest_date,
                    };
                    self.raw.push_keyed(dt, key, values.iter().chain(extra));
                }
            }
            Err(reason) => {
                let texts: Vec<Value> = (0..self.dataset.columns().len())
                    .map(|i| {
                        records
                            .cell(i)
                            .to_text()
                            .map_or(Value::Null, |t| Value::Text(t.into()))
                    })
                    .collect();
                let reason = Value::Text(reason.into());
                let raw_record = Value::Text(records.raw_json().into());
                let extra = [
                    &reason,
                    &self.source,
                    &line,
                    &raw_record,
                    &self.ingested_at.1,
                ];
                self.quarantine
                    .push(self.ingest_date, texts.iter().chain(extra));
                self.counts.quarantined += 1;
            }
        }
    }

    /// What was read since the last piece.
    fn piece(&mut self, position: u64) -> Result<Piece, String> {
        self.seen.clear();
        let drain = |buffer: &mut PartitionBuffer| buffer.drain().map_err(|e| e.to_string());
        Ok(Piece {
            counts: std::mem::take(&mut self.counts),
            raw: drain(&mut self.raw)?,
            derived: drain(&mut self.derived)?,
            quarantine: drain(&mut self.quarantine)?,
            position,
        })
    }
}

/// Rows of one area waiting to be written, by `dt=`.
struct Pending {
    area: &'static str,
    dataset: Dataset,
    batches: BTreeMap<NaiveDate, Vec<RecordBatch>>,
    rows: usize,
}

impl Pending {
    fn new(area: &'static str, dataset: Dataset) -> Pending {
        Pending {
            area,
            dataset,
            batches: BTreeMap::new(),
            rows: 0,
        }
    }
}

/// Takes the pieces in file order and writes their rows out.
struct Assembler {
    prefix: String,
    lake: Lake,
    sink: Sink,
    sequence: usize,
    /// Keys landed so far.
    keys: KeySet,
    counts: Counts,
    raw: Pending,
    derived: Pending,
    quarantine: Pending,
    progress: ProgressBar,
    started: Instant,
}

impl Assembler {
    fn new(setup: &Setup, sink: Sink) -> Assembler {
        Assembler {
            prefix: setup.prefix.clone(),
            lake: setup.lake.clone(),
            sink,
            sequence: 0,
            keys: KeySet::default(),
            counts: Counts::default(),
            raw: Pending::new("raw", setup.dataset),
            derived: Pending::new("raw", Dataset::StageChanges),
            quarantine: Pending::new("quarantine", setup.dataset),
            progress: setup.progress.clone(),
            started: Instant::now(),
        }
    }

    fn add(&mut self, piece: Piece) -> Result<(), String> {
        let before = self.counts.rows_read;
        self.counts += piece.counts;
        for (dt, batch, keys) in piece.raw {
            let keep: BooleanArray = keys.iter().map(|k| Some(self.keys.insert(*k))).collect();
            let kept = keep.true_count();
            self.counts.landed += kept as u64;
            self.counts.duplicates += (keys.len() - kept) as u64;
            let batch = if kept == keys.len() {
                batch
            } else {
                filter_record_batch(&batch, &keep).map_err(|e| e.to_string())?
            };
            self.push(Area::Raw, dt, batch)?;
        }
        for (dt, batch, _) in piece.derived {
            self.push(Area::Derived, dt, batch)?;
        }
        for (dt, batch, _) in piece.quarantine {
            self.push(Area::Quarantine, dt, batch)?;
        }
        if before / 65536 != self.counts.rows_read / 65536 {
            self.progress.set_position(piece.position);
            let rate =
                self.counts.rows_read as f64 / self.started.elapsed().as_secs_f64().max(1e-3);
            self.progress.set_message(format!(
                "{} rows, {:.0} rows/s",
                self.counts.rows_read, rate
            ));
        }
        Ok(())
    }

    fn pending(&mut self, area: Area) -> &mut Pending {
        match area {
            Area::Raw => &mut self.raw,
            Area::Derived => &mut self.derived,
            Area::Quarantine => &mut self.quarantine,
        }
    }

    /// Buffers `batch`, writing the area out whenever it reaches [`MAX_BUFFERED_ROWS`].
    fn push(&mut self, area: Area, dt: NaiveDate, mut batch: RecordBatch) -> Result<(), String> {
        while batch.num_rows() > 0 {
            let pending = self.pending(area);
            let room = MAX_BUFFERED_ROWS - pending.rows;
            let take = room.min(batch.num_rows());
            pending.rows += take;
            pending
                .batches
                .entry(dt)
                .or_default()
                .push(batch.slice(0, take));
            batch = batch.slice(take, batch.num_rows() - take);
            if pending.rows == MAX_BUFFERED_ROWS {
                self.flush(area)?;
            }
        }
        Ok(())
    }

    /// Sends what `area` holds to `<area>/<dataset>/dt=.../<prefix>-<n>.parquet`.
    fn flush(&mut self, area: Area) -> Result<(), String> {
        let pending = self.pending(area);
        let (name, dataset) = (pending.area, pending.dataset);
        pending.rows = 0;
        for (dt, batches) in std::mem::take(&mut pending.batches) {
            let batch = match batches.as_slice() {
                [one] => one.clone(),
                _ => concat_batches(&batches[0].schema(), &batches).map_err(|e| e.to_string())?,
            };
            self.sequence += 1;
            let path = self.lake.path(&[
                name,
                dataset.name(),
                &format!("dt={}", dt.format("%Y-%m-%d")),
                &format!("{}-{:05}.parquet", self.prefix, self.sequence),
            ]);
            self.sink
                .blocking_send((path, batch))
                .map_err(|_| "the writer stopped".to_string())?;
        }
        Ok(())
    }

    /// Writes out what is left; the file's counts and the keys it landed.
    fn finish(mut self) -> Result<(Counts, KeySet), String> {
        for area in [Area::Raw, Area::Quarantine, Area::Derived] {
            self.flush(area)?;
        }
        Ok((self.counts, self.keys))
    }
}

#[derive(Debug, Clone, Copy)]
enum Area {
    Raw,
    Derived,
    Quarantine,
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::Config;
    use crate::ingest::chunk::Cut;
    use crate::ingest::spec::FileSpec;

    /// Reads every chunk but the third (line 3, as chunks of one line each); that one panics, as
    /// a bug in a reader would. The others hold no record.
    struct PanicsAtTheThird;

    impl ChunkReader for PanicsAtTheThird {
        fn records(&self, chunk: crate::ingest::chunk::Chunk) -> Box<dyn Records> {
            assert!(chunk.first_line != 3, "a bug in the reader");
            Box::new(Nothing)
        }
    }

    struct Nothing;

    impl Records for Nothing {
        fn advance(&mut self) -> Result<Step, String> {
            Ok(Step::End)
        }
        fn line(&self) -> u64 {
            0
        }
        fn cell(&self, _: usize) -> crate::ingest::cell::Cell<'_> {
            crate::ingest::cell::Cell::Null
        }
        fn problem(&self) -> Option<String> {
            None
        }
        fn raw_json(&self) -> String {
            String::new()
        }
        fn position(&self) -> u64 {
            0
        }
    }

    #[test]
    fn a_reader_that_panics_fails_the_file_instead_of_hanging() {
        let dir = tempfile::tempdir().unwrap();
        let lake = dir.path().display().to_string();
        let env = |key: &str| (key == "FLOWHEALTH_LAKE").then(|| lake.clone());
        let config = Config::parse(
            crate::config::EMBEDDED,
            "config.yaml",
            PathBuf::from("."),
            env,
        )
        .unwrap();
        let spec = FileSpec::new(&config, Dataset::Actions, "actions/a.csv").unwrap();
        let setup = Setup {
            dataset: Dataset::Actions,
            source: "actions/a.csv".into(),
            prefix: "0123456789abcdef".into(),
            ingested_at: 0,
            lake: Lake::open(&config).unwrap(),
            known: Arc::new(KeySet::default()),
            progress: ProgressBar::hidden(),
        };
        // One record per line, a chunk each: the third chunk starts on line 3.
        let text = (0..50).map(|i| format!("a{i}\n")).collect::<String>();
        let chunks = Chunks::new(
            Box::new(std::io::Cursor::new(text.into_bytes())),
            Cut::Lines,
            1,
            false,
            0,
            1,
        );
        let input = Input::Chunked {
            reader: Arc::new(PanicsAtTheThird),
            chunks,
        };
        let validators = (0..2).map(|_| Validator::new(&config, &spec)).collect();
        let (sink, mut batches) = tokio::sync::mpsc::channel(1000);
        let (finished, result) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = finished.send(run(input, &setup, validators, None, sink).map(|_| ()));
        });
        let result = result
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("the parse ends");
        let error = result.expect_err("the file fails");
        assert!(
            error.contains("internal error: reading chunk 2 failed: a bug in the reader"),
            "{error}"
        );
        batches.close();
    }
}
