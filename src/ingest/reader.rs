//! Inbox files -> records, one at a time, each with the physical line (or spreadsheet row) it
//! starts on: CSV (any encoding, see [`super::decode`]; quoted fields may hold delimiters and
//! newlines; CRLF, LF or CR line ends), JSON (one object per line, or one array of objects), and
//! XLSX (streamed cell by cell).
//!
//! Blank rows (empty lines, lines of bare delimiters, objects without a value, empty spreadsheet
//! rows) are reported as such, the same way in every format, so that they are counted and not
//! landed. The readers know nothing of validation: [`super::columns::Columns`] turns a record's
//! fields into the canonical cells the validator asks for.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::sync::mpsc::{Receiver, sync_channel};

use calamine::{DataRef, Reader as _, Xlsx};

use super::cell::Cell;
use super::chunk::{Chunk, Chunks, Cut, count_lines};
use super::columns::{Columns, HeaderContext};
use super::decode::TextEncoding;
use super::source::Text;
use super::spec::FileSpec;

/// What [`Records::advance`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A record: its cells, line and problem are available.
    Record,
    /// A blank row (counted, not landed).
    Blank,
    End,
}

/// A file's records, read one at a time.
pub trait Records: Send {
    /// Moves to the next record or blank row. An `Err` is a problem with the file as a whole
    /// (I/O, a broken archive, a JSON array that never closes), not with one record.
    fn advance(&mut self) -> Result<Step, String>;
    /// Physical line (or spreadsheet row) where the current record starts, 1-based.
    fn line(&self) -> u64;
    /// The current record's value of wanted column `column` (see [`FileSpec::wanted`]).
    fn cell(&self, column: usize) -> Cell<'_>;
    /// A problem with the current record as a whole (wrong field count, not JSON, bytes that are
    /// not in the file's encoding), if any.
    fn problem(&self) -> Option<String>;
    /// The current record exactly as read, as a JSON object of source column -> text.
    fn raw_json(&self) -> String;
    /// Bytes of input consumed so far, for progress.
    fn position(&self) -> u64;
}

/// A format whose files can be cut into [`Chunk`]s of whole records ([`super::chunk`]) and read a
/// chunk at a time on several threads: each chunk's records come out exactly as reading the whole
/// file would give them, with the same lines.
pub trait ChunkReader: Send + Sync {
    /// The records of one chunk.
    fn records(&self, chunk: Chunk) -> Box<dyn Records>;
}

/// How a file is read: as one stream of records, or (its header read) as chunks that several
/// threads read at once.
pub enum Input {
    Stream(Box<dyn Records>),
    Chunked {
        reader: std::sync::Arc<dyn ChunkReader>,
        chunks: Chunks,
    },
}

fn raw_object<'a>(pairs: impl Iterator<Item = (&'a str, Option<String>)>) -> String {
    let object: serde_json::Map<String, serde_json::Value> = pairs
        .map(|(k, v)| {
            (
                k.to_string(),
                v.map_or(serde_json::Value::Null, serde_json::Value::String),
            )
        })
        .collect();
    serde_json::Value::Object(object).to_string()
}

/// How a text record's bytes are checked: read as UTF-8 (each record is checked, a record that
/// is not is a problem), or decoded (U+FFFD marks bytes the decoder could not map).
#[derive(Debug, Clone)]
struct TextCheck {
    /// The file's bytes are UTF-8 as read (not decoded).
    raw_utf8: bool,
    /// Every byte of the file is UTF-8: nothing to check.
    all_valid: bool,
    /// The encoding's name for messages (`UTF-8`, `GBK`).
    name: &'static str,
    /// For a UTF-8 file with stray rows: what they look like.
    strays: Option<&'static str>,
}

impl TextCheck {
    fn new(text: &Text, all_utf8: bool) -> TextCheck {
        let decision = text.decision;
        TextCheck {
            raw_utf8: decision.encoding == TextEncoding::Utf8,
            all_valid: decision.encoding == TextEncoding::Utf8 && all_utf8,
            name: match decision.encoding {
                TextEncoding::Utf8 => "UTF-8",
                TextEncoding::Decoded(encoding) => encoding.name(),
                TextEncoding::Utf32 { big_endian: false } => "UTF-32LE",
                TextEncoding::Utf32 { big_endian: true } => "UTF-32BE",
            },
            strays: decision.strays_look_like.map(|e| e.name()),
        }
    }

    /// Why `bytes` cannot be read as text of this file, if they cannot; `field` is the 0-based
    /// field they are (a CSV record's fields are checked one by one), `None` for a whole record.
    fn problem(&self, bytes: &[u8], field: Option<usize>) -> Option<String> {
        if self.all_valid {
            return None;
        }
        if self.raw_utf8 {
            let error = std::str::from_utf8(bytes).err()?;
            let at = error.valid_up_to();
            let bad: Vec<String> = bytes[at..bytes.len().min(at + 4)]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            let place = match field {
                Some(field) => format!("byte {} of field {}", at + 1, field + 1),
                None => format!("byte {} of the record", at + 1),
            };
            Some(match self.strays {
                Some(other) => format!(
                    "not valid UTF-8 (bytes {} at {place}); the rest of the file is UTF-8 and this \
                     row looks like {other}: fix the row at its source and export it again",
                    bad.join(" "),
                ),
                None => format!("not valid UTF-8 (bytes {} at {place})", bad.join(" ")),
            })
        } else {
            memchr::memmem::find(bytes, "\u{FFFD}".as_bytes()).map(|_| {
                format!(
                    "not valid {}: bytes the decoder could not map (shown as \u{FFFD}); check the file's encoding",
                    self.name
                )
            })
        }
    }
}

/// Blank rows found before a record (or blank row) that was read ahead: they are reported
/// first, one per `advance`, then what was read.
#[derive(Debug, Default)]
struct Ahead {
    blank: u64,
    record: bool,
}

impl Ahead {
    /// What to report before reading more, if anything is queued.
    fn next(&mut self) -> Option<Step> {
        if self.blank > 0 {
            self.blank -= 1;
            Some(Step::Blank)
        } else if self.record {
            self.record = false;
            Some(Step::Record)
        } else {
            None
        }
    }

    /// `step` was read after `blank` blank rows: the step to report now (the rest is queued).
    fn after(&mut self, blank: u64, step: Step) -> Step {
        if blank == 0 {
            return step;
        }
        self.blank = blank - 1 + u64::from(step == Step::Blank);
        self.record = step == Step::Record;
        Step::Blank
    }
}

// ---------------------------------------------------------------- CSV

/// The CSV quote character (`csv_core`'s rules: doubled inside a quoted field, no escape byte);
/// the chunk cutter follows the same rules.
const QUOTE: u8 = b'"';

fn parser(delimiter: u8) -> csv_core::Reader {
    csv_core::ReaderBuilder::new()
        .delimiter(delimiter)
        .quote(QUOTE)
        .build()
}

/// CSV records, parsed by `csv_core` with the line accounting done here: the line a record
/// starts on is the physical line of its first byte, after blank lines, CRLF line ends and quoted
/// fields holding newlines.
pub struct CsvRecords {
    input: Box<dyn BufRead + Send>,
    core: csv_core::Reader,
    delimiter: u8,
    header: Vec<String>,
    columns: Columns<usize>,
    check: TextCheck,
    /// The current record's field bytes (the buffer is larger; `len` bytes are used) and the end
    /// of each field.
    bytes: Vec<u8>,
    len: usize,
    ends: Vec<usize>,
    fields: usize,
    problem: Option<String>,
    /// Line where the current record starts.
    line: u64,
    /// Physical line at the read position.
    next_line: u64,
    /// The last byte consumed was a CR that ended a line: an LF right after it is the same line end.
    after_cr: bool,
    position: u64,
    ahead: Ahead,
}

/// What one raw read found.
enum Raw {
    /// A record, after this many blank lines.
    Record {
        blank: u64,
    },
    End {
        blank: u64,
    },
}

impl CsvRecords {
    /// Reads the header of `text` (a CSV file named `name`) and maps it onto the wanted columns.
    pub fn new(
        text: Text,
        all_utf8: bool,
        spec: &FileSpec,
        delimiter: u8,
    ) -> Result<CsvRecords, String> {
        let check = TextCheck::new(&text, all_utf8);
        let encoding = text.decision.to_string();
        let mut records = CsvRecords {
            input: text.input,
            core: parser(delimiter),
            delimiter,
            header: Vec::new(),
            columns: Columns::empty(),
            check,
            bytes: vec![0; 4096],
            len: 0,
            ends: vec![0; 64],
            fields: 0,
            problem: None,
            line: 0,
            next_line: 1,
            after_cr: false,
            position: 0,
            ahead: Ahead::default(),
        };
        // The header is the first record with a value; blank lines before it are not rows.
        loop {
            match records
                .read_raw()
                .map_err(|e| format!("cannot read the header: {e}"))?
            {
                Raw::End { .. } => return Err("the file is empty: expected a header row".into()),
                Raw::Record { .. } if records.is_blank_record() => continue,
                Raw::Record { .. } => break,
            }
        }
        if let Some(problem) = records.text_problem() {
            return Err(format!(
                "wrong encoding: the header is {problem}; set {}.encoding to the file's encoding",
                spec.key
            ));
        }
        records.header = (0..records.fields)
            .map(|i| records.field(i).trim().to_string())
            .collect();
        records.columns = Columns::from_header(
            spec,
            &records.header,
            &HeaderContext {
                delimiter: Some(delimiter),
                encoding: &encoding,
            },
        )?;
        Ok(records)
    }

    /// Reads the next record's fields into `bytes`/`ends`, skipping (and counting) the empty
    /// lines before it.
    fn read_raw(&mut self) -> std::io::Result<Raw> {
        let mut blank = 0;
        loop {
            let buffer = self.input.fill_buf()?;
            let Some(&first) = buffer.first() else {
                break;
            };
            match first {
                b'\n' if self.after_cr => self.after_cr = false,
                b'\n' => {
                    self.next_line += 1;
                    blank += 1;
                }
                b'\r' => {
                    self.next_line += 1;
                    blank += 1;
                    self.after_cr = true;
                }
                _ => {
                    self.after_cr = false;
                    break;
                }
            }
            self.input.consume(1);
            self.position += 1;
        }
        self.line = self.next_line;
        let (mut len, mut fields) = (0, 0);
        loop {
            let input = self.input.fill_buf()?;
            let (result, read, written, ended) =
                self.core
                    .read_record(input, &mut self.bytes[len..], &mut self.ends[fields..]);
            count_lines(&input[..read], &mut self.next_line, &mut self.after_cr);
            self.input.consume(read);
            self.position += read as u64;
            len += written;
            fields += ended;
            match result {
                csv_core::ReadRecordResult::InputEmpty => {}
                csv_core::ReadRecordResult::OutputFull => {
                    let size = self.bytes.len() * 2;
                    self.bytes.resize(size, 0);
                }
                csv_core::ReadRecordResult::OutputEndsFull => {
                    let size = self.ends.len() * 2;
                    self.ends.resize(size, 0);
                }
                csv_core::ReadRecordResult::Record => {
                    self.len = len;
                    self.fields = fields;
                    return Ok(Raw::Record { blank });
                }
                csv_core::ReadRecordResult::End => {
                    self.len = 0;
                    self.fields = 0;
                    return Ok(Raw::End { blank });
                }
            }
        }
    }

    fn field_bytes(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    /// Field `i` as text (U+FFFD for bytes that are not UTF-8: only a record with a problem, which
    /// is quarantined, has any).
    fn field(&self, i: usize) -> Cow<'_, str> {
        let bytes = self.field_bytes(i);
        match std::str::from_utf8(bytes) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(bytes),
        }
    }

    /// Why the current record cannot be read as text, if it cannot. Read as UTF-8, each field is
    /// checked on its own: the parser drops the delimiters and quotes between fields, and two
    /// fields' bytes may be UTF-8 only when joined (`\xC3,\xA9` is not `é`).
    fn text_problem(&self) -> Option<String> {
        if self.check.all_valid {
            None
        } else if self.check.raw_utf8 {
            (0..self.fields).find_map(|i| self.check.problem(self.field_bytes(i), Some(i)))
        } else {
            self.check.problem(&self.bytes[..self.len], None)
        }
    }

    fn is_blank_record(&self) -> bool {
        self.bytes[..self.len].iter().all(u8::is_ascii_whitespace)
    }

    /// The rest of the file (after its header) as chunks of whole records of about `target`
    /// bytes, and the reader of one chunk.
    pub fn into_chunks(self, target: usize) -> Input {
        let chunks = Chunks::new(
            self.input,
            Cut::Csv {
                delimiter: self.delimiter,
                quote: QUOTE,
            },
            self.next_line,
            self.after_cr,
            self.position,
            target,
        );
        let reader = CsvChunkReader {
            header: self.header,
            columns: self.columns,
            check: self.check,
            delimiter: self.delimiter,
        };
        Input::Chunked {
            reader: std::sync::Arc::new(reader),
            chunks,
        }
    }
}

/// Reads the chunks of one CSV file with what its header resolved.
struct CsvChunkReader {
    header: Vec<String>,
    columns: Columns<usize>,
    check: TextCheck,
    delimiter: u8,
}

impl ChunkReader for CsvChunkReader {
    fn records(&self, chunk: Chunk) -> Box<dyn Records> {
        // A parser that has read strips no byte order mark: a chunk's first record may start with
        // one that is data (U+FEFF). (A clone of the header's parser would do, but csv_core 0.1's
        // `Clone` for its DFA copies only the transition table: a clone misparses.)
        let mut core = parser(self.delimiter);
        let (mut output, mut ends) = ([0u8; 1], [0usize; 1]);
        let primed = core.read_record(b"\n", &mut output, &mut ends);
        debug_assert_eq!(primed.0, csv_core::ReadRecordResult::InputEmpty);
        Box::new(CsvRecords {
            input: Box::new(std::io::Cursor::new(chunk.bytes)),
            core,
            header: self.header.clone(),
            columns: self.columns.clone(),
            check: self.check.clone(),
            delimiter: self.delimiter,
            bytes: vec![0; 4096],
            len: 0,
            ends: vec![0; 64],
            fields: 0,
            problem: None,
            line: 0,
            next_line: chunk.first_line,
            after_cr: chunk.after_cr,
            position: chunk.start,
            ahead: Ahead::default(),
        })
    }
}

impl Records for CsvRecords {
    fn advance(&mut self) -> Result<Step, String> {
        if let Some(step) = self.ahead.next() {
            return Ok(step);
        }
        self.problem = None;
        match self.read_raw().map_err(|e| format!("read failed: {e}"))? {
            Raw::End { blank: 0 } => Ok(Step::End),
            // The blank lines at the end, then (at a later call) the end.
            Raw::End { blank } => Ok(self.ahead.after(blank - 1, Step::Blank)),
            Raw::Record { blank } => {
                let step = if self.is_blank_record() {
                    Step::Blank
                } else {
                    self.problem = self.text_problem();
                    if self.problem.is_none() && self.fields != self.header.len() {
                        self.problem = Some(format!(
                            "the row has {} fields, the header has {}",
                            self.fields,
                            self.header.len()
                        ));
                    }
                    Step::Record
                };
                Ok(self.ahead.after(blank, step))
            }
        }
    }

    fn line(&self) -> u64 {
        self.line
    }

    fn cell(&self, column: usize) -> Cell<'_> {
        self.columns.cell(column, |&i| {
            if i < self.fields {
                Cell::Text(self.field(i))
            } else {
                Cell::Null
            }
        })
    }

    fn problem(&self) -> Option<String> {
        self.problem.clone()
    }

    fn raw_json(&self) -> String {
        let extra = (self.header.len()..self.fields)
            .map(|i| format!("_extra_{}", i + 1))
            .collect::<Vec<_>>();
        let names = self
            .header
            .iter()
            .map(String::as_str)
            .chain(extra.iter().map(String::as_str));
        raw_object(names.zip((0..self.fields).map(|i| Some(self.field(i).into_owned()))))
    }

    fn position(&self) -> u64 {
        self.position
    }
}

// ---------------------------------------------------------------- JSON

/// JSON records: one object per line (NDJSON), or the objects of one top-level array.
pub struct JsonRecords {
    input: Box<dyn BufRead + Send>,
    columns: Columns<String>,
    check: TextCheck,
    /// The top-level array mode: `None` for NDJSON; the array reader's state otherwise.
    array: Option<ArrayState>,
    buffer: Vec<u8>,
    line: u64,
    next_line: u64,
    position: u64,
    object: serde_json::Map<String, serde_json::Value>,
    problem: Option<String>,
}

/// Where the array reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ArrayState {
    /// Before the opening `[`.
    Start,
    /// Inside the array, before an element or a `,`.
    Between,
    /// After the closing `]`.
    Done,
}

impl JsonRecords {
    pub fn new(text: Text, all_utf8: bool, spec: &FileSpec) -> JsonRecords {
        let check = TextCheck::new(&text, all_utf8);
        let array = text
            .prefix
            .trim_start()
            .starts_with('[')
            .then_some(ArrayState::Start);
        JsonRecords {
            input: text.input,
            columns: Columns::by_key(spec),
            check,
            array,
            buffer: Vec::new(),
            line: 0,
            next_line: 1,
            position: 0,
            object: serde_json::Map::new(),
            problem: None,
        }
    }

    /// Reads the next line into `buffer`; `false` at the end.
    fn next_line(&mut self) -> Result<bool, String> {
        self.buffer.clear();
        let read = self
            .input
            .read_until(b'\n', &mut self.buffer)
            .map_err(|e| format!("read failed: {e}"))?;
        self.position += read as u64;
        self.line = self.next_line;
        self.next_line += 1;
        Ok(read > 0)
    }

    /// Reads the next element of the top-level array into `buffer`; `false` after the `]`.
    fn next_element(&mut self) -> Result<bool, String> {
        self.buffer.clear();
        let mut depth = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        loop {
            let input = self
                .input
                .fill_buf()
                .map_err(|e| format!("read failed: {e}"))?;
            if input.is_empty() {
                return match self.array {
                    Some(ArrayState::Done) => Ok(false),
                    Some(ArrayState::Start) => {
                        Err("expected a JSON array: the file is empty".into())
                    }
                    _ if self.buffer.is_empty() => {
                        Err("the JSON array is not closed: the file ends before its `]`".into())
                    }
                    _ => {
                        Err("the JSON array is not closed: the file ends inside an element".into())
                    }
                };
            }
            let mut used = 0;
            let mut complete = false;
            for &b in input {
                used += 1;
                if b == b'\n' {
                    self.next_line += 1;
                }
                if self.buffer.is_empty() && depth == 0 && !in_string {
                    // Between elements.
                    match (self.array, b) {
                        (_, b' ' | b'\t' | b'\r' | b'\n') => continue,
                        (Some(ArrayState::Start), b'[') => {
                            self.array = Some(ArrayState::Between);
                            continue;
                        }
                        (Some(ArrayState::Start), _) => {
                            return Err("expected a JSON array starting with `[`".into());
                        }
                        (Some(ArrayState::Between), b',') => continue,
                        (Some(ArrayState::Between), b']') => {
                            self.array = Some(ArrayState::Done);
                            continue;
                        }
                        (Some(ArrayState::Done), _) => {
                            return Err("text after the end of the JSON array".into());
                        }
                        _ => self.line = self.next_line,
                    }
                }
                if in_string {
                    self.buffer.push(b);
                    if escaped {
                        escaped = false;
                    } else if b == b'\\' {
                        escaped = true;
                    } else if b == b'"' {
                        in_string = false;
                        if depth == 0 {
                            complete = true;
                            break;
                        }
                    }
                    continue;
                }
                match b {
                    b'"' => in_string = true,
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' if depth > 0 => depth -= 1,
                    // A scalar element ends at the next `,` or `]`, which stay unread.
                    b',' | b']' if depth == 0 => {
                        used -= 1;
                        complete = true;
                        break;
                    }
                    _ => {}
                }
                self.buffer.push(b);
                if depth == 0 && matches!(b, b'}' | b']') {
                    complete = true;
                    break;
                }
            }
            self.input.consume(used);
            self.position += used as u64;
            if complete {
                return Ok(true);
            }
        }
    }

    fn parse(&mut self) -> Step {
        let text: &[u8] = &self.buffer;
        if text.iter().all(u8::is_ascii_whitespace) {
            return Step::Blank;
        }
        self.object.clear();
        if let Some(problem) = self.check.problem(text, None) {
            self.problem = Some(problem);
            return Step::Record;
        }
        self.problem = match serde_json::from_slice::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(object)) => {
                let blank = object.values().all(|v| match v {
                    serde_json::Value::Null => true,
                    serde_json::Value::String(s) => s.trim().is_empty(),
                    _ => false,
                });
                if blank {
                    return Step::Blank;
                }
                self.object = object;
                None
            }
            Ok(other) => Some(format!("not a JSON object but {}", json_kind(&other))),
            Err(e) => Some(format!("not valid JSON: {e}")),
        };
        Step::Record
    }
}

impl JsonRecords {
    /// One object per line: the file as chunks of whole lines of about `target` bytes, and the
    /// reader of one chunk. A file holding one array is read as a stream.
    pub fn into_input(self, target: usize) -> Input {
        if self.array.is_some() {
            return Input::Stream(Box::new(self));
        }
        let chunks = Chunks::new(
            self.input,
            Cut::Lines,
            self.next_line,
            false,
            self.position,
            target,
        );
        let reader = JsonChunkReader {
            columns: self.columns,
            check: self.check,
        };
        Input::Chunked {
            reader: std::sync::Arc::new(reader),
            chunks,
        }
    }
}

/// Reads the chunks of one NDJSON file.
struct JsonChunkReader {
    columns: Columns<String>,
    check: TextCheck,
}

impl ChunkReader for JsonChunkReader {
    fn records(&self, chunk: Chunk) -> Box<dyn Records> {
        Box::new(JsonRecords {
            input: Box::new(std::io::Cursor::new(chunk.bytes)),
            columns: self.columns.clone(),
            check: self.check.clone(),
            array: None,
            buffer: Vec::new(),
            line: 0,
            next_line: chunk.first_line,
            position: chunk.start,
            object: serde_json::Map::new(),
            problem: None,
        })
    }
}

impl Records for JsonRecords {
    fn advance(&mut self) -> Result<Step, String> {
        self.problem = None;
        let more = if self.array.is_some() {
            self.next_element()?
        } else {
            self.next_line()?
        };
        if !more {
            return Ok(Step::End);
        }
        Ok(self.parse())
    }

    fn line(&self) -> u64 {
        self.line
    }

    fn cell(&self, column: usize) -> Cell<'_> {
        self.columns.cell(column, |key| {
            let value = self.object.get(key).or_else(|| {
                self.object
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(key))
                    .map(|(_, v)| v)
            });
            match value {
                None | Some(serde_json::Value::Null) => Cell::Null,
                Some(serde_json::Value::String(s)) => Cell::Text(Cow::Borrowed(s)),
                Some(other) => Cell::Text(Cow::Owned(other.to_string())),
            }
        })
    }

    fn problem(&self) -> Option<String> {
        self.problem.clone()
    }

    fn raw_json(&self) -> String {
        let text = String::from_utf8_lossy(&self.buffer);
        if self.problem.is_none() {
            text.trim().to_string()
        } else {
            raw_object(std::iter::once((
                "_line",
                Some(text.trim_end().to_string()),
            )))
        }
    }

    fn position(&self) -> u64 {
        self.position
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Null => "null",
        serde_json::Value::Object(_) => "an object",
    }
}

// ---------------------------------------------------------------- XLSX

type XlsxRow = (u32, Vec<Cell<'static>>);

/// Rows of one sheet. calamine's streaming cell reader borrows the workbook, so it runs on its
/// own thread and hands rows over a small bounded channel: memory stays at a few rows (plus the
/// workbook's shared-string table, which XLSX keeps in one part).
pub struct XlsxRecords {
    rows: Receiver<Result<XlsxRow, String>>,
    header: Vec<String>,
    columns: Columns<usize>,
    current: XlsxRow,
    /// Row index of the last row delivered (the header's at first).
    last_row: u32,
    ahead: Ahead,
    rows_seen: u64,
}

impl XlsxRecords {
    pub fn open(path: &Path, spec: &FileSpec) -> Result<XlsxRecords, String> {
        let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        let mut workbook = Xlsx::new(BufReader::new(file))
            .map_err(|e| format!("not a readable XLSX workbook: {e}"))?;
        let sheet = match &spec.sheet {
            Some(name) => name.clone(),
            None => workbook
                .sheet_names()
                .first()
                .cloned()
                .ok_or("the workbook has no sheets")?,
        };
        if !workbook.sheet_names().contains(&sheet) {
            return Err(format!(
                "no sheet named `{sheet}` (sheets: {})",
                workbook.sheet_names().join(", ")
            ));
        }
        let (sender, rows) = sync_channel::<Result<XlsxRow, String>>(64);
        std::thread::spawn(move || {
            let mut cells = match workbook.worksheet_cells_reader(&sheet) {
                Ok(cells) => cells,
                Err(e) => {
                    let _ = sender.send(Err(format!("cannot read sheet `{sheet}`: {e}")));
                    return;
                }
            };
            let mut row: Option<XlsxRow> = None;
            loop {
                match cells.next_cell() {
                    Ok(Some(cell)) => {
                        let (r, c) = cell.get_position();
                        if row.as_ref().is_some_and(|(current, _)| *current != r)
                            && sender.send(Ok(row.take().expect("checked"))).is_err()
                        {
                            return;
                        }
                        let (_, values) = row.get_or_insert_with(|| (r, Vec::new()));
                        let c = c as usize;
                        if values.len() <= c {
                            values.resize(c + 1, Cell::Null);
                        }
                        values[c] = xlsx_cell(cell.get_value());
                    }
                    Ok(None) => {
                        if let Some(last) = row.take() {
                            let _ = sender.send(Ok(last));
                        }
                        return;
                    }
                    Err(e) => {
                        let _ = sender.send(Err(format!("broken worksheet: {e}")));
                        return;
                    }
                }
            }
        });
        // The header is the first row that has any value.
        let (header_row, header) = loop {
            match rows.recv() {
                Ok(Ok((r, cells))) if cells.iter().any(|c| !c.is_empty()) => {
                    break (
                        r,
                        cells
                            .iter()
                            .map(|c| c.to_text().unwrap_or_default().trim().to_string())
                            .collect::<Vec<_>>(),
                    );
                }
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => return Err(e),
                Err(_) => {
                    return Err(format!(
                        "sheet `{}` is empty: expected a header row",
                        spec.sheet.as_deref().unwrap_or("1")
                    ));
                }
            }
        };
        let columns = Columns::from_header(
            spec,
            &header,
            &HeaderContext {
                delimiter: None,
                encoding: "xlsx",
            },
        )?;
        Ok(XlsxRecords {
            rows,
            header,
            columns,
            current: (header_row, Vec::new()),
            last_row: header_row,
            ahead: Ahead::default(),
            rows_seen: 0,
        })
    }
}

fn xlsx_cell(value: &DataRef<'_>) -> Cell<'static> {
    match value {
        DataRef::Empty => Cell::Null,
        DataRef::String(s) => Cell::Text(Cow::Owned(s.clone())),
        DataRef::SharedString(s) => Cell::Text(Cow::Owned(s.to_string())),
        DataRef::Int(i) => Cell::Text(Cow::Owned(i.to_string())),
        // Whole numbers (ids typed into Excel) read as integers, not "1001.0".
        DataRef::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => {
            Cell::Text(Cow::Owned(format!("{}", *f as i64)))
        }
        DataRef::Float(f) => Cell::Text(Cow::Owned(f.to_string())),
        DataRef::Bool(b) => Cell::Text(Cow::Owned(b.to_string())),
        DataRef::DateTime(d) => match d.as_datetime() {
            Some(dt) => Cell::DateTime(dt),
            None => Cell::Error(Cow::Owned(format!(
                "date cell out of range ({})",
                d.as_f64()
            ))),
        },
        DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => Cell::Text(Cow::Owned(s.clone())),
        DataRef::Error(e) => Cell::Error(Cow::Owned(format!("spreadsheet error {e}"))),
    }
}

impl Records for XlsxRecords {
    fn advance(&mut self) -> Result<Step, String> {
        if let Some(step) = self.ahead.next() {
            return Ok(step);
        }
        match self.rows.recv() {
            Ok(Ok(row)) => {
                // Rows the sheet does not store at all are blank rows too.
                let skipped = u64::from(row.0.saturating_sub(self.last_row + 1));
                self.last_row = row.0;
                let blank = row.1.iter().all(Cell::is_empty);
                self.current = row;
                if !blank {
                    self.rows_seen += 1;
                }
                let step = if blank { Step::Blank } else { Step::Record };
                Ok(self.ahead.after(skipped, step))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Ok(Step::End),
        }
    }

    fn line(&self) -> u64 {
        u64::from(self.current.0) + 1
    }

    fn cell(&self, column: usize) -> Cell<'_> {
        self.columns.cell(column, |&i| match self.current.1.get(i) {
            Some(cell) => cell.borrowed(),
            None => Cell::Null,
        })
    }

    fn problem(&self) -> Option<String> {
        let width = self
            .current
            .1
            .iter()
            .rposition(|c| !c.is_empty())
            .map_or(0, |i| i + 1);
        (width > self.header.len()).then(|| {
            format!(
                "the row has values in {width} columns, the header has {}",
                self.header.len()
            )
        })
    }

    fn raw_json(&self) -> String {
        let names: Vec<String> = (0..self.current.1.len())
            .map(|i| {
                self.header
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| format!("_extra_{}", i + 1))
            })
            .collect();
        raw_object(
            names
                .iter()
                .map(String::as_str)
                .zip(self.current.1.iter().map(Cell::to_text)),
        )
    }

    fn position(&self) -> u64 {
        self.rows_seen
    }
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::ingest::decode::{Basis, Decision};
    use crate::lake::schema::Dataset;

    /// Everything a record gives the rest of ingest, step by step.
    fn outline(records: &mut dyn Records, into: &mut Vec<String>) {
        for _ in 0..100_000 {
            let step = records.advance().unwrap();
            match step {
                Step::End => return,
                Step::Blank => into.push("blank".into()),
                Step::Record => into.push(format!(
                    "{} {:?} {:?} {}",
                    records.line(),
                    (0..4).map(|i| records.cell(i)).collect::<Vec<_>>(),
                    records.problem(),
                    records.raw_json()
                )),
            }
        }
        panic!(
            "no end after 100,000 steps: {:?}",
            &into[..10.min(into.len())]
        );
    }

    fn text(bytes: &[u8]) -> Text {
        Text {
            input: Box::new(std::io::Cursor::new(bytes.to_vec())),
            decision: Decision {
                encoding: TextEncoding::Utf8,
                basis: Basis::Detected,
                bom_len: 0,
                strays_look_like: None,
            },
            prefix: String::from_utf8_lossy(bytes).into_owned(),
        }
    }

    fn read_whole(bytes: &[u8], json: bool) -> Vec<String> {
        let spec = FileSpec::plain(Dataset::Actions);
        let mut out = Vec::new();
        if json {
            outline(&mut JsonRecords::new(text(bytes), false, &spec), &mut out);
        } else {
            outline(
                &mut CsvRecords::new(text(bytes), false, &spec, b',').unwrap(),
                &mut out,
            );
        }
        out
    }

    fn read_chunked(bytes: &[u8], json: bool, target: usize) -> Vec<String> {
        let spec = FileSpec::plain(Dataset::Actions);
        let input = if json {
            JsonRecords::new(text(bytes), false, &spec).into_input(target)
        } else {
            CsvRecords::new(text(bytes), false, &spec, b',')
                .unwrap()
                .into_chunks(target)
        };
        let Input::Chunked { reader, chunks } = input else {
            panic!("not chunked");
        };
        let mut out = Vec::new();
        for chunk in chunks {
            outline(&mut *reader.records(chunk.unwrap()), &mut out);
        }
        out
    }

    /// Random files built from the pieces that make CSV hard: quoted delimiters and line ends,
    /// doubled quotes, quotes inside unquoted fields, an unclosed quote, CR, LF and CRLF, blank
    /// lines, byte order marks and bytes that are not UTF-8 mid-file.
    fn random_csv(rng: &mut impl Rng) -> Vec<u8> {
        const FIELDS: [&[u8]; 14] = [
            b"a1",
            b"",
            b" ",
            b"\"x,y\"",
            b"\"multi\nline\"",
            b"\"cr\r\nlf\"",
            b"\"q\"\"q\"",
            b"ab\"c",
            b"\"ab\"c",
            b"2026-03-02 09:00",
            b"\xEF\xBB\xBFbom",
            b"\xff\xfe",
            b"\"\"",
            b"\"unclosed",
        ];
        const ENDS: [&[u8]; 5] = [b"\n", b"\r\n", b"\r", b"\n\n", b"\r\n\r\n"];
        let mut bytes = b"action_id,occurred_at,owner_id,action_type\n".to_vec();
        for _ in 0..rng.random_range(0..40) {
            let fields = rng.random_range(1..6);
            for f in 0..fields {
                if f > 0 {
                    bytes.push(b',');
                }
                // An unclosed quote swallows the rest of the file: only now and then.
                let mut pick = rng.random_range(0..FIELDS.len());
                if pick == FIELDS.len() - 1 && rng.random_range(0..8) > 0 {
                    pick = 0;
                }
                bytes.extend_from_slice(FIELDS[pick]);
            }
            bytes.extend_from_slice(ENDS[rng.random_range(0..ENDS.len())]);
        }
        if rng.random_bool(0.3) {
            bytes.extend_from_slice(b"last,without,line,end");
        }
        bytes
    }

    #[test]
    fn bytes_that_are_utf8_only_across_a_delimiter_are_a_problem() {
        // `\xC3` and `\xA9` in two fields: joined (as the parser hands fields over) they read
        // as `é`, but each field alone is not UTF-8, and must not land as U+FFFD.
        let file = b"action_id,occurred_at,owner_id,action_type\n\xC3\xA91,x,y,z\n\xC3\xA92,x\xC3,\xA9y,z\n";
        let lines = read_whole(file, false);
        assert!(
            lines[0].starts_with("2 ") && lines[0].contains("None"),
            "{lines:?}"
        );
        assert!(
            lines[1].contains("not valid UTF-8 (bytes c3 at byte 2 of field 2)"),
            "{lines:?}"
        );
    }

    #[test]
    fn csv_chunks_give_exactly_the_records_and_lines_of_one_pass() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(18);
        for _ in 0..400 {
            let bytes = random_csv(&mut rng);
            let whole = read_whole(&bytes, false);
            for target in [1, 2, 3, 5, 8, 13, 40, 1 << 20] {
                assert_eq!(
                    read_chunked(&bytes, false, target),
                    whole,
                    "target {target}, file {:?}",
                    String::from_utf8_lossy(&bytes)
                );
            }
        }
    }

    #[test]
    fn ndjson_chunks_give_exactly_the_records_and_lines_of_one_pass() {
        let lines: [&[u8]; 7] = [
            br#"{"action_id": "a1", "owner_id": "R1"}"#,
            b"",
            b"  ",
            br#"{"action_id": "a2", "note": "x\ny"}"#,
            b"not json",
            b"{\"action_id\": \"\xff\"}",
            br#"{"action_id": null}"#,
        ];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(18);
        for _ in 0..200 {
            let mut bytes = Vec::new();
            for _ in 0..rng.random_range(0..30) {
                bytes.extend_from_slice(lines[rng.random_range(0..lines.len())]);
                bytes.extend_from_slice(if rng.random_bool(0.2) { b"\r\n" } else { b"\n" });
            }
            let whole = read_whole(&bytes, true);
            for target in [1, 2, 7, 50, 1 << 20] {
                assert_eq!(read_chunked(&bytes, true, target), whole, "target {target}");
            }
        }
    }
}
