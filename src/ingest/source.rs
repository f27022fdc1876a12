//! Inbox files: listing them, and preparing one for reading. Preparing makes the bytes local
//! (object-store inboxes are streamed to a temporary file) and makes one pass over them for the
//! content hash that identifies the file in the ledger, and, for text, the encoding check.
//! The hash is XXH3-128: it identifies exports, it does not defend against forgery, and it keeps
//! the pass as fast as reading the file.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use futures::StreamExt;
use object_store::ObjectStoreExt;
use xxhash_rust::xxh3::Xxh3;

use super::decode::{self, Decision, Evidence, SAMPLE_BYTES, TextEncoding, Utf32Reader};
use crate::config::EncodingSetting;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::lake::schema::Dataset;

/// A file found in `inbox/<dataset>/`.
#[derive(Debug, Clone)]
pub struct InboxFile {
    pub dataset: Dataset,
    /// Path relative to the inbox root, e.g. `actions/crm-2026-03.csv`.
    pub name: String,
    pub location: object_store::path::Path,
    /// When the file last changed, as the store says.
    pub modified: chrono::DateTime<chrono::Utc>,
}

/// Files of `dataset` in the inbox, sorted by name. Hidden files and Office lock files (`~$x.xlsx`)
/// are not exports and are passed over.
pub async fn list(inbox: &Lake, dataset: Dataset) -> Result<Vec<InboxFile>> {
    let mut files = Vec::new();
    for object in inbox.list(&[dataset.name()]).await? {
        let name = inbox.relative(&object.location);
        let file_name = object.location.filename().unwrap_or_default();
        if file_name.starts_with('.') || file_name.starts_with("~$") {
            continue;
        }
        files.push(InboxFile {
            dataset,
            name,
            modified: object.last_modified,
            location: object.location,
        });
    }
    Ok(files)
}

/// A file ready to read.
pub struct Prepared {
    pub path: PathBuf,
    /// Keeps a downloaded copy alive while it is read.
    _download: Option<tempfile::NamedTempFile>,
    /// XXH3-128 of the content, 32 hex digits.
    pub content_hash: String,
    pub size: u64,
    /// The first [`SAMPLE_BYTES`] of the file: its byte order mark, the header line, the start of
    /// the encoding evidence.
    pub head: Vec<u8>,
    /// Offset of the first byte that is not UTF-8, if any.
    pub first_non_utf8: Option<u64>,
}

pub async fn prepare(inbox: &Lake, file: &InboxFile) -> Result<Prepared> {
    let (path, download) = match inbox.local_path(&file.location) {
        Some(path) => (path, None),
        None => {
            let mut temp =
                tempfile::NamedTempFile::new().map_err(|e| Error::io(std::env::temp_dir(), e))?;
            let mut stream = inbox.store().get(&file.location).await?.into_stream();
            while let Some(chunk) = stream.next().await {
                temp.write_all(&chunk?)
                    .map_err(|e| Error::io(temp.path(), e))?;
            }
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    let scan_path = path.clone();
    let scanned = tokio::task::spawn_blocking(move || scan(&scan_path)).await??;
    Ok(Prepared {
        path,
        _download: download,
        content_hash: scanned.content_hash,
        size: scanned.size,
        head: scanned.head,
        first_non_utf8: scanned.first_non_utf8,
    })
}

struct Scanned {
    content_hash: String,
    size: u64,
    head: Vec<u8>,
    first_non_utf8: Option<u64>,
}

/// One pass: the content hash, the head, and where the text stops being UTF-8.
fn scan(path: &Path) -> Result<Scanned> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Xxh3::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut carry = 0usize; // bytes of an incomplete UTF-8 sequence at the end of the last chunk
    let mut offset = 0u64;
    let mut first_non_utf8 = None;
    let mut head = Vec::new();
    loop {
        let read = file
            .read(&mut buffer[carry..])
            .map_err(|e| Error::io(path, e))?;
        if head.len() < SAMPLE_BYTES {
            let wanted = (SAMPLE_BYTES - head.len()).min(read);
            head.extend_from_slice(&buffer[carry..carry + wanted]);
        }
        hasher.update(&buffer[carry..carry + read]);
        let filled = carry + read;
        if read == 0 {
            if carry > 0 && first_non_utf8.is_none() {
                first_non_utf8 = Some(offset);
            }
            break;
        }
        carry = 0;
        if first_non_utf8.is_none()
            && let Err(e) = std::str::from_utf8(&buffer[..filled])
        {
            match e.error_len() {
                Some(_) => first_non_utf8 = Some(offset + e.valid_up_to() as u64),
                None => carry = filled - e.valid_up_to(),
            }
        }
        buffer.copy_within(filled - carry..filled, 0);
        offset += (filled - carry) as u64;
    }
    Ok(Scanned {
        content_hash: format!("{:032x}", hasher.digest128()),
        size: offset + carry as u64,
        head,
        first_non_utf8,
    })
}

/// The encoding evidence beyond the head of a file that is not all UTF-8: the lines from just
/// before its first bad byte, and its end (each at most [`SAMPLE_BYTES`]).
fn more_evidence(prepared: &Prepared) -> std::io::Result<Vec<Vec<u8>>> {
    let Some(bad) = prepared.first_non_utf8 else {
        return Ok(Vec::new());
    };
    let mut file = File::open(&prepared.path)?;
    let mut read_at = |start: u64| -> std::io::Result<Vec<u8>> {
        file.seek(SeekFrom::Start(start))?;
        let mut bytes = Vec::with_capacity(SAMPLE_BYTES);
        (&mut file)
            .take(SAMPLE_BYTES as u64)
            .read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    let mut samples = Vec::new();
    // From a little before the bad byte, so that its line is whole after the first cut piece.
    let window = bad.saturating_sub(4096);
    if window + 4096 > prepared.head.len() as u64 {
        samples.push(read_at(window)?);
    }
    let tail = prepared.size.saturating_sub(SAMPLE_BYTES as u64);
    if tail > window + SAMPLE_BYTES as u64 {
        samples.push(read_at(tail)?);
    }
    Ok(samples)
}

/// A text file opened for reading: its decoded text (UTF-8, BOM skipped) and how it was decoded.
pub struct Text {
    /// The text as UTF-8: the file's own bytes when it is UTF-8 (each record is checked), else
    /// decoded as a stream.
    pub input: Box<dyn BufRead + Send>,
    pub decision: Decision,
    /// The start of the decoded text (up to [`SAMPLE_BYTES`] of the file), for the delimiter sniff.
    pub prefix: String,
}

/// Opens a CSV or JSON file as text, deciding its encoding (see [`super::decode`]). `key` is the
/// config key its settings come from, for messages.
pub fn open_text(
    prepared: &Prepared,
    setting: EncodingSetting,
    region: Option<&'static str>,
    key: &str,
) -> std::result::Result<Text, String> {
    let more = more_evidence(prepared).map_err(|e| format!("cannot read: {e}"))?;
    let more: Vec<&[u8]> = more.iter().map(Vec::as_slice).collect();
    let evidence = Evidence {
        head: &prepared.head,
        head_is_whole: prepared.head.len() as u64 == prepared.size,
        first_non_utf8: prepared.first_non_utf8,
        more: &more,
    };
    let decision = decode::decide(setting, &evidence, region, key)?;
    let mut file = File::open(&prepared.path).map_err(|e| format!("cannot open: {e}"))?;
    file.seek(SeekFrom::Start(decision.bom_len as u64))
        .map_err(|e| format!("cannot read: {e}"))?;
    let prefix = decode::decode_prefix(
        decision.encoding,
        &prepared.head[decision.bom_len.min(prepared.head.len())..],
    );
    const BUFFER: usize = 1 << 20;
    let input: Box<dyn BufRead + Send> = match decision.encoding {
        TextEncoding::Utf8 => Box::new(BufReader::with_capacity(BUFFER, file)),
        TextEncoding::Decoded(encoding) => Box::new(BufReader::with_capacity(
            BUFFER,
            encoding_rs_io::DecodeReaderBytesBuilder::new()
                .encoding(Some(encoding))
                .bom_sniffing(false)
                .build(BufReader::with_capacity(BUFFER, file)),
        )),
        TextEncoding::Utf32 { big_endian } => Box::new(BufReader::with_capacity(
            BUFFER,
            Utf32Reader::new(BufReader::with_capacity(BUFFER, file), big_endian),
        )),
    };
    Ok(Text {
        input,
        decision,
        prefix,
    })
}

/// The input formats, chosen by file extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Csv,
    /// NDJSON, or a `.json` file holding one array of objects.
    Json,
    Xlsx,
}

impl Format {
    pub fn from_name(name: &str) -> Option<Format> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "csv" | "txt" | "tsv" => Some(Format::Csv),
            "ndjson" | "jsonl" | "json" => Some(Format::Json),
            "xlsx" | "xlsm" => Some(Format::Xlsx),
            _ => None,
        }
    }
}

pub fn format_of(name: &str) -> std::result::Result<Format, String> {
    Format::from_name(name).ok_or_else(|| {
        "unsupported file type: expected .csv, .tsv, .txt, .ndjson, .jsonl, .json or .xlsx"
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_the_first_non_utf8_byte_across_chunk_edges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        // A 3-byte character straddling the 1 MiB chunk boundary is still UTF-8.
        let mut text = vec![b'a'; (1 << 20) - 1];
        text.extend_from_slice("中".as_bytes());
        std::fs::write(&path, &text).unwrap();
        let scanned = scan(&path).unwrap();
        assert_eq!(
            (scanned.size, scanned.first_non_utf8, scanned.head.len()),
            (text.len() as u64, None, SAMPLE_BYTES)
        );

        let (gbk, _, _) = encoding_rs::GBK.encode("id,名字\n1,张三\n");
        std::fs::write(&path, [b"\xEF\xBB\xBF".as_slice(), &gbk].concat()).unwrap();
        let scanned = scan(&path).unwrap();
        assert!(scanned.head.starts_with(b"\xEF\xBB\xBF"));
        assert_eq!(scanned.first_non_utf8, Some(6));
    }
}
