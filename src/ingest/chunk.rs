//! Cutting a text file into chunks of whole records, so that several threads can read it at once
//! and every record still comes out exactly as one reader going through the file would give it,
//! with the same physical line.
//!
//! A chunk ends only where that reader would be between two records: after a line end that is
//! not inside a quoted CSV field ([`Cut::Csv`], which follows `csv_core`'s rules for quotes: a
//! quote opens a quoted field only at the start of a field, `""` inside one is a quote, a quote
//! elsewhere is an ordinary byte), or after any `\n` for one-object-per-line JSON ([`Cut::Lines`]:
//! JSON text cannot hold a raw newline). The cutter tracks the line count and the carried-over
//! CR the readers track, so each chunk starts with the state the reader would have there.
//!
//! Finding the cuts is a scan for the few bytes that matter (`memchr`), far cheaper than parsing:
//! the reading itself is what the threads share.

use std::io::BufRead;

/// Bytes a chunk aims at: once this many are read, the chunk ends at the last cut among them (or
/// at the first cut after them, or at the file's end).
pub const CHUNK_BYTES: usize = 1 << 20;

/// A stretch of a file holding whole records.
#[derive(Debug)]
pub struct Chunk {
    /// The records' bytes (decoded text, UTF-8 or the file's own bytes checked per record).
    pub bytes: Vec<u8>,
    /// Physical line of the chunk's first byte, as the reader counts lines.
    pub first_line: u64,
    /// The byte before the chunk is a CR that ended a line (an LF first in the chunk is the same
    /// line end).
    pub after_cr: bool,
    /// Input bytes before the chunk, for progress.
    pub start: u64,
}

/// Where a file may be cut.
#[derive(Debug, Clone, Copy)]
pub enum Cut {
    /// Between CSV records: after a line end (LF, CRLF or a lone CR) outside quotes.
    Csv { delimiter: u8, quote: u8 },
    /// After any LF (one JSON object per line).
    Lines,
}

/// Where the CSV scan is, in `csv_core`'s terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// At the start of a field (or of a record).
    FieldStart,
    /// Inside an unquoted field: a quote here is an ordinary byte.
    InField,
    /// Inside a quoted field: only a quote matters.
    Quoted,
    /// Just after a quote inside a quoted field: another quote is an escaped quote, anything
    /// else ends the quoted part.
    QuoteInQuoted,
}

/// The chunks of one file, read from `input` in order.
pub struct Chunks {
    input: Box<dyn BufRead + Send>,
    cut: Cut,
    target: usize,
    /// Bytes read and not yet handed out; `buffer[..scanned]` has been scanned.
    buffer: Vec<u8>,
    scanned: usize,
    /// The last cut found in `buffer[..scanned]`.
    last_cut: Option<usize>,
    /// A CR outside quotes ended the scanned bytes: a cut after it, unless an LF follows.
    pending_cr: bool,
    state: Scan,
    /// Line and carried CR at the start of `buffer`.
    line: u64,
    after_cr: bool,
    position: u64,
    done: bool,
}

impl Chunks {
    /// Chunks of what remains of `input`, whose next byte is on physical line `line` (with a CR
    /// just before it when `after_cr`), `position` bytes into the input; `target` is the size
    /// chunks aim at ([`CHUNK_BYTES`]; tests use tiny ones).
    pub fn new(
        input: Box<dyn BufRead + Send>,
        cut: Cut,
        line: u64,
        after_cr: bool,
        position: u64,
        target: usize,
    ) -> Chunks {
        Chunks {
            input,
            cut,
            target: target.max(1),
            buffer: Vec::new(),
            scanned: 0,
            last_cut: None,
            pending_cr: false,
            state: Scan::FieldStart,
            line,
            after_cr,
            position,
            done: false,
        }
    }

    /// Reads up to `target` more bytes of input into the buffer; `false` at the end of the input.
    /// Appends what the reader has buffered rather than reading into a zeroed target-sized tail:
    /// a decoding reader hands over a few KiB at a time, and zeroing 1 MiB for each would cost
    /// more than the parse.
    fn fill(&mut self) -> std::io::Result<bool> {
        let available = loop {
            match self.input.fill_buf() {
                Ok(bytes) => break bytes,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        let read = available.len().min(self.target);
        self.buffer.extend_from_slice(&available[..read]);
        self.input.consume(read);
        Ok(read > 0)
    }

    /// Scans the unscanned bytes for cuts.
    fn scan(&mut self) {
        let bytes = &self.buffer[self.scanned..];
        let base = self.scanned;
        match self.cut {
            Cut::Lines => {
                if let Some(i) = memchr::memrchr(b'\n', bytes) {
                    self.last_cut = Some(base + i + 1);
                }
            }
            Cut::Csv { delimiter, quote } => {
                let mut i = 0;
                if self.pending_cr && !bytes.is_empty() {
                    self.pending_cr = false;
                    if bytes[0] != b'\n' {
                        self.last_cut = Some(base);
                    }
                }
                while i < bytes.len() {
                    match self.state {
                        Scan::Quoted => match memchr::memchr(quote, &bytes[i..]) {
                            Some(j) => {
                                i += j + 1;
                                self.state = Scan::QuoteInQuoted;
                            }
                            None => i = bytes.len(),
                        },
                        Scan::QuoteInQuoted if bytes[i] == quote => {
                            i += 1;
                            self.state = Scan::Quoted;
                        }
                        Scan::FieldStart if bytes[i] == quote => {
                            i += 1;
                            self.state = Scan::Quoted;
                        }
                        Scan::FieldStart | Scan::QuoteInQuoted => {
                            let b = bytes[i];
                            i += 1;
                            self.state = if b == delimiter || b == b'\n' || b == b'\r' {
                                Scan::FieldStart
                            } else {
                                Scan::InField
                            };
                            if b == b'\n' {
                                self.last_cut = Some(base + i);
                            } else if b == b'\r' {
                                match bytes.get(i) {
                                    Some(b'\n') => {}
                                    Some(_) => self.last_cut = Some(base + i),
                                    None => self.pending_cr = true,
                                }
                            }
                        }
                        Scan::InField => {
                            // Only a quote, CR or LF can change what matters; between here and the
                            // next of them, a delimiter just before a quote makes it open a field.
                            match memchr::memchr3(quote, b'\n', b'\r', &bytes[i..]) {
                                None => {
                                    self.state = if bytes.last() == Some(&delimiter) {
                                        Scan::FieldStart
                                    } else {
                                        Scan::InField
                                    };
                                    i = bytes.len();
                                }
                                Some(j) => {
                                    let at = i + j;
                                    if bytes[at] == quote && !(j > 0 && bytes[at - 1] == delimiter)
                                    {
                                        // A quote inside an unquoted field is an ordinary byte.
                                        i = at + 1;
                                    } else {
                                        i = at;
                                        self.state = Scan::FieldStart;
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        self.scanned = self.buffer.len();
    }

    /// Hands out `buffer[..end]` as a chunk, advancing the line count over it.
    fn take(&mut self, end: usize) -> Chunk {
        let rest = self.buffer.split_off(end);
        let bytes = std::mem::replace(&mut self.buffer, rest);
        let chunk = Chunk {
            first_line: self.line,
            after_cr: self.after_cr,
            start: self.position,
            bytes,
        };
        match self.cut {
            Cut::Lines => {
                self.line += memchr::memchr_iter(b'\n', &chunk.bytes).count() as u64;
            }
            Cut::Csv { .. } => count_lines(&chunk.bytes, &mut self.line, &mut self.after_cr),
        }
        self.position += chunk.bytes.len() as u64;
        self.scanned -= end;
        self.last_cut = None;
        chunk
    }
}

impl Iterator for Chunks {
    type Item = std::io::Result<Chunk>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            // Once `target` bytes are read, the chunk ends at the last cut among them.
            if let Some(cut) = self.last_cut
                && cut > 0
                && self.buffer.len() >= self.target
            {
                return Some(Ok(self.take(cut)));
            }
            match self.fill() {
                Ok(true) => self.scan(),
                Ok(false) => {
                    self.done = true;
                    if self.buffer.is_empty() {
                        return None;
                    }
                    let end = self.buffer.len();
                    return Some(Ok(self.take(end)));
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// Advances `line` over `bytes`: LF, CRLF and a lone CR each end a line. `after_cr` carries a
/// CR at the end of one slice over to an LF at the start of the next.
pub fn count_lines(bytes: &[u8], line: &mut u64, after_cr: &mut bool) {
    let mut next = 0;
    for i in memchr::memchr2_iter(b'\r', b'\n', bytes) {
        if i > next {
            *after_cr = false;
        }
        if bytes[i] == b'\n' {
            if !*after_cr {
                *line += 1;
            }
            *after_cr = false;
        } else {
            *line += 1;
            *after_cr = true;
        }
        next = i + 1;
    }
    if next < bytes.len() {
        *after_cr = false;
    }
}
