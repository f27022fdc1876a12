//! What an inbox file's arrival says before its rows are read: whether it is finished, whether it
//! is text at all, and what the ledger knows of it. Each check here keeps a wrong value out of
//! the lake or tells the user something the counts alone do not.
//!
//! - **Still being written.** A file modified within `inbox.settle_s` seconds, or a line-based
//!   file (CSV, NDJSON) whose last record has no line end yet, waits for a later run: landing it
//!   now would land its last value cut short, and when the file is complete the whole row would
//!   be a duplicate, so the cut value would stay.
//! - **Not a text file.** A binary file given a text extension is rejected with a short excerpt
//!   of its first bytes, not a page of mojibake.
//! - **What the ledger knows.** Same name with new content (changed), same content under a new
//!   name, or new content under a new name; and, for rows whose keys are already in the lake,
//!   that their first landing stays (an edited copy re-sent under another name does not change
//!   the rows it repeats).

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use chrono::{DateTime, Utc};

use super::source::Format;
use crate::lake::schema::Dataset;

/// Why a file is not landed yet (it is still being written), or `None` when it may land.
/// `modified` is the file's last change as the store reports it, `now` the run's clock.
pub fn waiting_for_writer(
    modified: DateTime<Utc>,
    now: DateTime<Utc>,
    settle_s: f64,
) -> Option<String> {
    let age = (now - modified).num_milliseconds() as f64 / 1000.0;
    (age < settle_s).then(|| {
        format!(
            "still being written: modified {:.0} s ago, and inbox.settle_s is {settle_s} s; it lands once it has been left alone that long",
            age.max(0.0)
        )
    })
}

/// For a line-based file (CSV, NDJSON): `Some(reason)` when its last record has no line end,
/// so the writer may not have finished it. Bytes at the very end that a writer leaves after the
/// last line (spaces, tabs, NUL padding, a DOS end-of-file mark) do not count; a UTF-16 line end
/// does. A `.json` file holding one array (its `head` starts with `[`) is left to the reader,
/// which rejects an array that never closes.
pub fn unterminated(
    path: &Path,
    format: Format,
    size: u64,
    head: &[u8],
) -> std::io::Result<Option<String>> {
    if format == Format::Xlsx || size == 0 {
        return Ok(None);
    }
    // The first character that is not white space, a byte order mark or UTF-16's NUL half.
    let first = head
        .strip_prefix(b"\xEF\xBB\xBF".as_slice())
        .unwrap_or(head)
        .iter()
        .find(|b| !b.is_ascii_whitespace() && **b != 0 && **b != 0xFF && **b != 0xFE);
    let array = format == Format::Json && first == Some(&b'[');
    let mut file = std::fs::File::open(path)?;
    let tail_len = size.min(64);
    file.seek(SeekFrom::End(-(tail_len as i64)))?;
    let mut tail = Vec::with_capacity(tail_len as usize);
    file.take(tail_len).read_to_end(&mut tail)?;
    let end = tail
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t' | 0 | 0x1A))
        .map_or(0, |i| i + 1);
    if array {
        return Ok(None);
    }
    // A UTF-16 line end is 00 0A (big-endian) or 0A 00 (little-endian, whose 00 the trim took).
    let ended = matches!(tail[..end].last(), Some(b'\n' | b'\r'));
    Ok((!ended).then(|| {
        "still being written: its last line has no line end yet (a finished export ends with one; \
         if this file is complete, end it with a newline)"
            .to_string()
    }))
}

/// `Some(reason)` when `head` (the first bytes of a file meant to be text) is not text: NUL
/// bytes (outside UTF-16/32, which announce themselves with a byte order mark) or mostly control
/// characters. The reason shows the first bytes escaped, not decoded.
pub fn not_text(head: &[u8]) -> Option<String> {
    let unicode_bom = [b"\xFF\xFE".as_slice(), b"\xFE\xFF", b"\x00\x00\xFE\xFF"]
        .iter()
        .any(|bom| head.starts_with(bom));
    if head.is_empty() || unicode_bom {
        return None;
    }
    // UTF-16 without a byte order mark: text whose NULs are every other byte (the decoder and
    // its hints tell the rest).
    let nuls_at = |parity: usize| {
        head.iter()
            .enumerate()
            .filter(|(i, b)| **b == 0 && i % 2 == parity)
            .count()
    };
    let (even, odd) = (nuls_at(0), nuls_at(1));
    let utf16 = (even == 0 || odd == 0) && (even + odd) * 4 >= head.len();
    if utf16 {
        return None;
    }
    let control = head
        .iter()
        .filter(|&&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0C | 0x1A | 0x1B))
        .count();
    let binary = head.contains(&0) || control * 10 > head.len();
    binary.then(|| {
        format!(
            "not a text file: it starts with {} (a CSV or NDJSON export is text; is this another kind of file with a text file's name?)",
            excerpt(head, 16)
        )
    })
}

/// The first `n` bytes of `bytes` as a short, printable excerpt: `"PK\x03\x04"...`.
pub fn excerpt(bytes: &[u8], n: usize) -> String {
    let shown: String = bytes
        .iter()
        .take(n)
        .flat_map(|&b| std::ascii::escape_default(b))
        .map(char::from)
        .collect();
    let more = if bytes.len() > n { "..." } else { "" };
    format!("\"{shown}\"{more}")
}

/// The first bytes of the file at `path` (up to 8 KiB), for [`not_text`].
pub fn head(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(8192);
    std::fs::File::open(path)?
        .take(8192)
        .read_to_end(&mut head)?;
    Ok(head)
}

/// What the report says of a file that landed under a name the ledger has not seen, when some
/// of its rows repeat keys already landed. Only for a dataset whose key is part of a row (an
/// action's id): there a repeated key may carry edited values, which do not land. A snapshot's
/// key is the whole row, so its repeats are the same rows.
pub fn repeated_rows(dataset: Dataset, duplicates: u64, rows_read: u64) -> Option<String> {
    let partial_key = dataset.key_columns().len() < dataset.columns().len();
    (partial_key && duplicates > 0).then(|| {
        format!(
            "a name and content new to the ledger; {duplicates} of its {rows_read} rows repeat keys already landed \
             (by earlier files, or earlier in this one), and those rows keep the values they first landed with: \
             an edited copy of an earlier export does not change the rows it repeats"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_last_line_without_its_end_waits_and_trailing_padding_does_not_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.csv");
        for (bytes, waits) in [
            (b"id\na1,2026-03-0".as_slice(), true),
            (b"id\na1\n", false),
            (b"id\r\na1\r\n", false),
            (b"id\na1\n  \x1A", false),
            (b"\xFF\xFEi\x00d\x00\n\x00", false),
            (b"\xFF\xFEi\x00d\x00", true),
        ] {
            std::fs::write(&path, bytes).unwrap();
            let found = unterminated(&path, Format::Csv, bytes.len() as u64, bytes).unwrap();
            assert_eq!(found.is_some(), waits, "{bytes:?}");
        }
        assert_eq!(unterminated(&path, Format::Xlsx, 6, b"").unwrap(), None);
        for (bytes, waits) in [
            (b"[{\"a\": 1},\n {\"a\": 2}]".as_slice(), false),
            (b"[{\"a\": 1},\n {\"a\"", false),
            (b"{\"a\": 1}\n{\"a\": 2}", true),
        ] {
            std::fs::write(&path, bytes).unwrap();
            let found = unterminated(&path, Format::Json, bytes.len() as u64, bytes).unwrap();
            assert_eq!(found.is_some(), waits, "{bytes:?}");
        }
    }

    #[test]
    fn binary_is_not_text_and_is_shown_escaped() {
        let png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x01\x00";
        let reason = not_text(png).unwrap();
        assert!(
            reason.starts_with(
                r#"not a text file: it starts with "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"..."#
            ),
            "{reason}"
        );
        assert!(reason.len() < 200);
        assert_eq!(not_text("id,名字\n1,张三\n".as_bytes()), None);
        let (gbk, _, _) = encoding_rs::GBK.encode("id,名字\n1,张三\n");
        assert_eq!(not_text(&gbk), None);
        assert_eq!(not_text(b"\xFF\xFEi\x00d\x00"), None, "UTF-16 has NULs");
        let utf16: Vec<u8> = "id,name\n1,x\n"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert_eq!(
            not_text(&utf16),
            None,
            "UTF-16 without a byte order mark too"
        );
    }

    #[test]
    fn settle_counts_from_the_last_change() {
        let now = Utc::now();
        assert!(waiting_for_writer(now - chrono::Duration::seconds(5), now, 60.0).is_some());
        assert!(waiting_for_writer(now - chrono::Duration::seconds(61), now, 60.0).is_none());
        assert!(waiting_for_writer(now, now, 0.0).is_none());
    }
}
