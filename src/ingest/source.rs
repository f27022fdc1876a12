//! Inbox files: listing them, and preparing one for reading. Preparing makes the bytes local
//! (object-store inboxes are streamed to a temporary file) and makes one pass over them for the
//! content hash that identifies the file in the ledger, and, for text, the encoding check.
//! The hash is XXH3-128: it identifies exports, it does not defend against forgery, and it keeps
//! the pass as fast as reading the file.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use futures::StreamExt;
use object_store::ObjectStoreExt;
use xxhash_rust::xxh3::Xxh3;

use super::reader::Format;
use crate::config::Encoding;
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
    /// Starts with a UTF-8 byte order mark.
    pub bom: bool,
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
    let (content_hash, size, bom, first_non_utf8) =
        tokio::task::spawn_blocking(move || scan(&scan_path)).await??;
    Ok(Prepared {
        path,
        _download: download,
        content_hash,
        size,
        bom,
        first_non_utf8,
    })
}

/// One pass: the content hash, BOM, and where the text stops being UTF-8.
fn scan(path: &std::path::Path) -> Result<(String, u64, bool, Option<u64>)> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Xxh3::new();
    let mut buffer = vec![0u8; 1 << 20];
    let mut carry = 0usize; // bytes of an incomplete UTF-8 sequence at the end of the last chunk
    let mut offset = 0u64;
    let mut first_non_utf8 = None;
    let mut bom = false;
    loop {
        let read = file
            .read(&mut buffer[carry..])
            .map_err(|e| Error::io(path, e))?;
        if offset == 0 && carry == 0 {
            bom = buffer[..read].starts_with(b"\xEF\xBB\xBF");
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
    Ok((
        format!("{:032x}", hasher.digest128()),
        offset + carry as u64,
        bom,
        first_non_utf8,
    ))
}

/// The decoded text of a CSV file, and whether it went through the GBK decoder.
pub fn open_text(
    prepared: &Prepared,
    encoding: Encoding,
    dataset: Dataset,
) -> std::result::Result<(Box<dyn Read + Send>, bool), String> {
    let mut file = File::open(&prepared.path).map_err(|e| format!("cannot open: {e}"))?;
    let utf8 =
        |mut file: File, bom: bool| -> std::result::Result<(Box<dyn Read + Send>, bool), String> {
            if bom {
                file.seek(SeekFrom::Start(3))
                    .map_err(|e| format!("cannot read: {e}"))?;
            }
            Ok((Box::new(file), false))
        };
    let gbk = |file: File| -> (Box<dyn Read + Send>, bool) {
        let decoder = encoding_rs_io::DecodeReaderBytesBuilder::new()
            .encoding(Some(encoding_rs::GB18030))
            .build(BufReader::new(file));
        (Box::new(decoder), true)
    };
    match (encoding, prepared.bom, prepared.first_non_utf8) {
        (_, true, _) => utf8(file, true),
        (Encoding::Gbk, ..) => Ok(gbk(file)),
        (Encoding::Utf8 | Encoding::Auto, false, None) => utf8(file, false),
        (Encoding::Utf8, false, Some(at)) => Err(format!(
            "not valid UTF-8 (first bad byte at offset {at}); if this is a GBK export, set datasets.{}.encoding: gbk",
            dataset.name()
        )),
        (Encoding::Auto, false, Some(_)) => {
            file.seek(SeekFrom::Start(0))
                .map_err(|e| format!("cannot read: {e}"))?;
            Ok(gbk(file))
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
    fn scan_finds_bom_and_the_first_non_utf8_byte_across_chunk_edges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        // A 3-byte character straddling the 1 MiB chunk boundary is still UTF-8.
        let mut text = vec![b'a'; (1 << 20) - 1];
        text.extend_from_slice("中".as_bytes());
        std::fs::write(&path, &text).unwrap();
        let (_, size, bom, bad) = scan(&path).unwrap();
        assert_eq!((size, bom, bad), (text.len() as u64, false, None));

        let (gbk, _, _) = encoding_rs::GBK.encode("id,名字\n1,张三\n");
        std::fs::write(&path, [b"\xEF\xBB\xBF".as_slice(), &gbk].concat()).unwrap();
        let (_, _, bom, bad) = scan(&path).unwrap();
        assert!(bom);
        assert_eq!(bad, Some(6));
    }
}
