//! Inbox files -> records, one at a time, whatever the format: CSV (UTF-8, UTF-8 with BOM or GBK;
//! quoted fields may hold newlines), NDJSON, and XLSX (streamed cell by cell). Each reader maps
//! the source columns onto the dataset's canonical columns once, from the header.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::mpsc::{Receiver, sync_channel};

use calamine::{DataRef, Reader as _, Xlsx};
use chrono::NaiveDateTime;

use crate::config::DatasetConfig;
use crate::lake::schema::Dataset;

/// One value of a source record.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    Null,
    Text(Cow<'a, str>),
    /// A date cell from a spreadsheet (a local wall-clock time).
    DateTime(NaiveDateTime),
    /// A spreadsheet error cell such as `#N/A`.
    Error(Cow<'a, str>),
}

impl Cell<'_> {
    fn borrowed(&self) -> Cell<'_> {
        match self {
            Cell::Null => Cell::Null,
            Cell::Text(t) => Cell::Text(Cow::Borrowed(t)),
            Cell::DateTime(d) => Cell::DateTime(*d),
            Cell::Error(e) => Cell::Error(Cow::Borrowed(e)),
        }
    }

    /// The cell as text, as it is kept in quarantine.
    pub fn to_text(&self) -> Option<String> {
        match self {
            Cell::Null => None,
            Cell::Text(t) => Some(t.to_string()),
            Cell::DateTime(d) => Some(d.format("%Y-%m-%dT%H:%M:%S%.f").to_string()),
            Cell::Error(e) => Some(e.to_string()),
        }
    }
}

/// The input formats, chosen by file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    Ndjson,
    Xlsx,
}

impl Format {
    pub fn from_name(name: &str) -> Option<Format> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "csv" | "txt" | "tsv" => Some(Format::Csv),
            "ndjson" | "jsonl" | "json" => Some(Format::Ndjson),
            "xlsx" | "xlsm" => Some(Format::Xlsx),
            _ => None,
        }
    }
}

/// A file's records, read one at a time.
pub trait Records: Send {
    /// Moves to the next record; `Ok(false)` at the end of the file. An `Err` is a problem with
    /// the file as a whole (I/O, a broken archive), not with one record.
    fn advance(&mut self) -> Result<bool, String>;
    /// Source line (or spreadsheet row) where the current record starts, 1-based.
    fn line(&self) -> u64;
    /// The current record's value of canonical column `column` (index into the dataset's columns).
    fn cell(&self, column: usize) -> Cell<'_>;
    /// A problem with the current record as a whole (wrong field count, not JSON), if any.
    fn problem(&self) -> Option<String>;
    /// The current record exactly as read, as a JSON object of source column -> text.
    fn raw_json(&self) -> String;
    /// Bytes of input consumed so far, for progress.
    fn position(&self) -> u64;
}

/// For each canonical column, the index of its source column in `header`. Required columns that
/// are missing make the whole file unreadable.
fn map_header(
    dataset: Dataset,
    spec: &DatasetConfig,
    header: &[String],
) -> Result<Vec<Option<usize>>, String> {
    let find = |name: &str| {
        header.iter().position(|h| h == name).or_else(|| {
            header
                .iter()
                .position(|h| h.trim().eq_ignore_ascii_case(name.trim()))
        })
    };
    let mut missing = Vec::new();
    let map = dataset
        .columns()
        .iter()
        .map(|column| {
            let source = spec
                .columns
                .get(column.name)
                .map(String::as_str)
                .unwrap_or(column.name);
            let index = find(source).or_else(|| find(column.name));
            if index.is_none() && column.required {
                missing.push(if source == column.name {
                    column.name.to_string()
                } else {
                    format!("{source} (for {})", column.name)
                });
            }
            index
        })
        .collect();
    if missing.is_empty() {
        Ok(map)
    } else {
        Err(format!(
            "the header lacks required column(s) {}; it has: {} (map source columns in datasets.{}.columns)",
            missing.join(", "),
            header.join(", "),
            dataset.name()
        ))
    }
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

// ---------------------------------------------------------------- CSV

pub struct CsvRecords {
    reader: csv::Reader<Box<dyn Read + Send>>,
    header: Vec<String>,
    map: Vec<Option<usize>>,
    record: csv::StringRecord,
    problem: Option<String>,
    /// Text came through a GBK decoder: U+FFFD marks bytes that were not GBK.
    decoded: bool,
}

impl CsvRecords {
    /// `input` must already be UTF-8 (decoded when the file is GBK; BOM removed).
    pub fn new(
        input: Box<dyn Read + Send>,
        decoded: bool,
        dataset: Dataset,
        spec: &DatasetConfig,
    ) -> Result<CsvRecords, String> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(spec.delimiter as u8)
            .buffer_capacity(1 << 20)
            .from_reader(input);
        let mut header = csv::StringRecord::new();
        match reader.read_record(&mut header) {
            Ok(true) => {}
            Ok(false) => return Err("the file is empty: expected a header row".into()),
            Err(e) => return Err(format!("cannot read the header: {e}")),
        }
        let header: Vec<String> = header.iter().map(|h| h.trim().to_string()).collect();
        let map = map_header(dataset, spec, &header)?;
        Ok(CsvRecords {
            reader,
            header,
            map,
            record: csv::StringRecord::new(),
            problem: None,
            decoded,
        })
    }
}

impl Records for CsvRecords {
    fn advance(&mut self) -> Result<bool, String> {
        self.problem = None;
        match self.reader.read_record(&mut self.record) {
            Ok(more) => {
                if more && self.record.len() != self.header.len() {
                    self.problem = Some(format!(
                        "the row has {} fields, the header has {}",
                        self.record.len(),
                        self.header.len()
                    ));
                }
                Ok(more)
            }
            Err(e) => match e.kind() {
                csv::ErrorKind::Io(_) => Err(format!("read failed: {e}")),
                _ => {
                    // A record the CSV parser rejects (e.g. bytes that are not UTF-8) is one bad
                    // row: keep it in quarantine and carry on.
                    self.record.clear();
                    self.problem = Some(format!("unreadable row: {e}"));
                    Ok(true)
                }
            },
        }
    }

    fn line(&self) -> u64 {
        self.record.position().map_or(0, |p| p.line())
    }

    fn cell(&self, column: usize) -> Cell<'_> {
        match self.map[column].and_then(|i| self.record.get(i)) {
            None => Cell::Null,
            Some(text) if self.decoded && text.contains('\u{FFFD}') => {
                Cell::Error(Cow::Borrowed("bytes that are not valid GBK"))
            }
            Some(text) => Cell::Text(Cow::Borrowed(text)),
        }
    }

    fn problem(&self) -> Option<String> {
        self.problem.clone()
    }

    fn raw_json(&self) -> String {
        let extra = (self.header.len()..self.record.len())
            .map(|i| format!("_extra_{}", i + 1))
            .collect::<Vec<_>>();
        let names = self
            .header
            .iter()
            .map(String::as_str)
            .chain(extra.iter().map(String::as_str));
        raw_object(names.zip(self.record.iter().map(|v| Some(v.to_string()))))
    }

    fn position(&self) -> u64 {
        self.reader.position().byte()
    }
}

// ---------------------------------------------------------------- NDJSON

pub struct NdjsonRecords {
    reader: BufReader<Box<dyn Read + Send>>,
    /// Source key of each canonical column.
    keys: Vec<String>,
    buffer: Vec<u8>,
    line: u64,
    next_line: u64,
    position: u64,
    object: serde_json::Map<String, serde_json::Value>,
    problem: Option<String>,
}

impl NdjsonRecords {
    pub fn new(
        input: Box<dyn Read + Send>,
        dataset: Dataset,
        spec: &DatasetConfig,
    ) -> NdjsonRecords {
        let keys = dataset
            .columns()
            .iter()
            .map(|c| {
                spec.columns
                    .get(c.name)
                    .cloned()
                    .unwrap_or_else(|| c.name.to_string())
            })
            .collect();
        NdjsonRecords {
            reader: BufReader::with_capacity(1 << 20, input),
            keys,
            buffer: Vec::new(),
            line: 0,
            next_line: 1,
            position: 0,
            object: serde_json::Map::new(),
            problem: None,
        }
    }
}

impl Records for NdjsonRecords {
    fn advance(&mut self) -> Result<bool, String> {
        loop {
            self.buffer.clear();
            let read = self
                .reader
                .read_until(b'\n', &mut self.buffer)
                .map_err(|e| format!("read failed: {e}"))?;
            if read == 0 {
                return Ok(false);
            }
            self.position += read as u64;
            self.line = self.next_line;
            self.next_line += 1;
            let mut text: &[u8] = &self.buffer;
            if self.line == 1 {
                text = text.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(text);
            }
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.object.clear();
            self.problem = match serde_json::from_slice::<serde_json::Value>(text) {
                Ok(serde_json::Value::Object(object)) => {
                    self.object = object;
                    None
                }
                Ok(other) => Some(format!("not a JSON object but {}", json_kind(&other))),
                Err(e) => Some(format!("not valid JSON: {e}")),
            };
            return Ok(true);
        }
    }

    fn line(&self) -> u64 {
        self.line
    }

    fn cell(&self, column: usize) -> Cell<'_> {
        let key = &self.keys[column];
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
    map: Vec<Option<usize>>,
    current: XlsxRow,
    rows_seen: u64,
}

impl XlsxRecords {
    pub fn open(
        path: &Path,
        dataset: Dataset,
        spec: &DatasetConfig,
    ) -> Result<XlsxRecords, String> {
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
        let header = loop {
            match rows.recv() {
                Ok(Ok((_, cells))) if cells.iter().any(|c| *c != Cell::Null) => {
                    break cells
                        .iter()
                        .map(|c| c.to_text().unwrap_or_default().trim().to_string())
                        .collect::<Vec<_>>();
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
        let map = map_header(dataset, spec, &header)?;
        Ok(XlsxRecords {
            rows,
            header,
            map,
            current: (0, Vec::new()),
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
    fn advance(&mut self) -> Result<bool, String> {
        loop {
            match self.rows.recv() {
                Ok(Ok(row)) if row.1.iter().all(|c| *c == Cell::Null) => continue,
                Ok(Ok(row)) => {
                    self.current = row;
                    self.rows_seen += 1;
                    return Ok(true);
                }
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(false),
            }
        }
    }

    fn line(&self) -> u64 {
        u64::from(self.current.0) + 1
    }

    fn cell(&self, column: usize) -> Cell<'_> {
        match self.map[column].and_then(|i| self.current.1.get(i)) {
            Some(cell) => cell.borrowed(),
            None => Cell::Null,
        }
    }

    fn problem(&self) -> Option<String> {
        let width = self
            .current
            .1
            .iter()
            .rposition(|c| *c != Cell::Null)
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
