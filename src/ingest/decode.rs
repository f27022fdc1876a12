//! Bytes -> text: which encoding a text file (CSV, NDJSON, JSON) is in, decided per file from
//! evidence, and which delimiter its CSV uses.
//!
//! The decision, in order:
//! 1. A byte order mark is always honoured: UTF-8, UTF-16 LE/BE (Excel's "Unicode Text"), and
//!    UTF-32 LE/BE.
//! 2. A declared `encoding:` other than `auto` is used as declared; UTF-8 declared for a file whose
//!    sampled non-ASCII lines are mostly not UTF-8 rejects the file, naming the encoding the
//!    detector sees (the old "set encoding: gbk" hint, now for any encoding).
//! 3. `auto`: a file whose every byte is UTF-8 is UTF-8 (the scan that hashes the file checks
//!    that, so the common case costs nothing more). Zero bytes in every other position are UTF-16
//!    without a BOM. Otherwise the evidence is a bounded sample ([`SAMPLE_BYTES`] from the start,
//!    around the first byte that is not UTF-8, and from the end): when at least as many of its
//!    lines holding non-ASCII bytes are valid UTF-8 as are not, the file is UTF-8 whose stray rows
//!    are quarantined ("not valid UTF-8"); otherwise Firefox's detector (`chardetng`), fed the
//!    lines that are not UTF-8, names the legacy encoding (GBK, Big5, Shift_JIS, Windows-1252).
//!    The detector is told the region of the file's timezone (`Asia/Shanghai`: a Chinese-speaking
//!    region), as a browser tells it the country of a page's domain: a short sample (one line of
//!    Chinese, one German word) can be read either way, and the region decides it; a longer one
//!    is decided by its content.
//!
//! Bytes that are valid UTF-8 are never decoded by a fallback: a file is either read as UTF-8
//! (row by row, a row that is not UTF-8 goes to quarantine) or, as a whole, in the one encoding
//! the evidence names.

use std::fmt;

use encoding_rs::{Encoding, UTF_8, UTF_16BE, UTF_16LE};

use crate::config::EncodingSetting;

/// Bytes of each sample the detector looks at (the start of the file, the lines around its first
/// byte that is not UTF-8, the end).
pub const SAMPLE_BYTES: usize = 64 * 1024;

/// How a file's bytes become text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextEncoding {
    /// Read as bytes; each record is checked to be UTF-8.
    Utf8,
    /// Decoded as a stream by `encoding_rs` (a legacy encoding, or UTF-16).
    Decoded(&'static Encoding),
    /// UTF-32 (only with a BOM: `encoding_rs` has no UTF-32 decoder).
    Utf32 { big_endian: bool },
}

impl TextEncoding {
    /// The lowercase WHATWG name (`utf-8`, `gbk`, `windows-1252`, `utf-16le`), as the ledger
    /// records it and as `encoding:` accepts it.
    pub fn name(self) -> String {
        match self {
            TextEncoding::Utf8 => "utf-8".into(),
            TextEncoding::Decoded(encoding) => encoding.name().to_ascii_lowercase(),
            TextEncoding::Utf32 { big_endian: false } => "utf-32le".into(),
            TextEncoding::Utf32 { big_endian: true } => "utf-32be".into(),
        }
    }
}

/// Why the encoding was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Basis {
    /// The file starts with a byte order mark.
    Bom,
    /// `encoding:` in the config.
    Declared,
    /// `encoding: auto`, from the file's bytes.
    Detected,
}

impl fmt::Display for Basis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Basis::Bom => "bom",
            Basis::Declared => "declared",
            Basis::Detected => "detected",
        })
    }
}

/// The encoding of one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub encoding: TextEncoding,
    pub basis: Basis,
    /// Bytes of byte order mark to skip.
    pub bom_len: usize,
    /// UTF-8 was chosen although some bytes are not UTF-8: the rows holding them are quarantined.
    /// What the detector makes of those rows, for the quarantine reason.
    pub strays_look_like: Option<&'static Encoding>,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.encoding.name(), self.basis)
    }
}

/// What the scan of a file saw, for the decision.
pub struct Evidence<'a> {
    /// The first [`SAMPLE_BYTES`] of the file (all of it when shorter).
    pub head: &'a [u8],
    /// Whether `head` is the whole file.
    pub head_is_whole: bool,
    /// Offset of the first byte that is not UTF-8; `None` when the whole file is UTF-8.
    pub first_non_utf8: Option<u64>,
    /// When the file is not UTF-8: the lines from the one holding the first bad byte, and the end
    /// of the file, each at most [`SAMPLE_BYTES`].
    pub more: &'a [&'a [u8]],
}

/// The byte order mark at the start of `head`, if any: the encoding and the mark's length.
pub fn bom(head: &[u8]) -> Option<(TextEncoding, usize)> {
    // UTF-32LE's mark starts with UTF-16LE's: test it first.
    if head.starts_with(b"\xFF\xFE\x00\x00") {
        Some((TextEncoding::Utf32 { big_endian: false }, 4))
    } else if head.starts_with(b"\x00\x00\xFE\xFF") {
        Some((TextEncoding::Utf32 { big_endian: true }, 4))
    } else if head.starts_with(b"\xEF\xBB\xBF") {
        Some((TextEncoding::Utf8, 3))
    } else if head.starts_with(b"\xFF\xFE") {
        Some((TextEncoding::Decoded(UTF_16LE), 2))
    } else if head.starts_with(b"\xFE\xFF") {
        Some((TextEncoding::Decoded(UTF_16BE), 2))
    } else {
        None
    }
}

/// Decides the encoding of a file (see the module doc). `key` is the config key to name in
/// messages (`datasets.actions`, `datasets.actions.sources.tasks`). An `Err` rejects the file.
pub fn decide(
    setting: EncodingSetting,
    evidence: &Evidence<'_>,
    region: Option<&'static str>,
    key: &str,
) -> Result<Decision, String> {
    let decision = |encoding, basis, bom_len| Decision {
        encoding,
        basis,
        bom_len,
        strays_look_like: None,
    };
    if let Some((encoding, len)) = bom(evidence.head) {
        return Ok(decision(encoding, Basis::Bom, len));
    }
    if evidence.head.starts_with(b"PK\x03\x04") {
        return Err(
            "this is a zip archive (an XLSX workbook?), not text: give it the .xlsx extension"
                .into(),
        );
    }
    match setting {
        EncodingSetting::Declared(encoding) if encoding == UTF_8 => {
            let Some(at) = evidence.first_non_utf8 else {
                return Ok(decision(TextEncoding::Utf8, Basis::Declared, 0));
            };
            let lines = Lines::classify(evidence, region);
            if let Some(decision) = lines.mostly_utf8(Basis::Declared) {
                Ok(decision)
            } else {
                let guess = lines.guess();
                Err(format!(
                    "not valid UTF-8 (first bad byte at offset {at}); if this is a {} export, set {key}.encoding: {}",
                    guess.name(),
                    guess.name().to_ascii_lowercase()
                ))
            }
        }
        EncodingSetting::Declared(encoding) => Ok(decision(
            TextEncoding::Decoded(encoding),
            Basis::Declared,
            0,
        )),
        EncodingSetting::Auto => {
            if let Some(encoding) = utf16_without_bom(evidence.head) {
                return Ok(decision(encoding, Basis::Detected, 0));
            }
            if evidence.first_non_utf8.is_none() {
                return Ok(decision(TextEncoding::Utf8, Basis::Detected, 0));
            }
            let lines = Lines::classify(evidence, region);
            if let Some(decision) = lines.mostly_utf8(Basis::Detected) {
                Ok(decision)
            } else {
                Ok(decision(
                    TextEncoding::Decoded(lines.guess()),
                    Basis::Detected,
                    0,
                ))
            }
        }
    }
}

/// UTF-16 text without a BOM has a zero byte in most odd (LE) or even (BE) positions of
/// Latin-script text; no CSV in an 8-bit encoding has zero bytes at all.
fn utf16_without_bom(head: &[u8]) -> Option<TextEncoding> {
    let pairs = head.len() / 2;
    if pairs < 2 {
        return None;
    }
    let (mut even, mut odd) = (0usize, 0usize);
    for pair in head.chunks_exact(2) {
        even += usize::from(pair[0] == 0);
        odd += usize::from(pair[1] == 0);
    }
    if odd * 10 >= pairs * 3 && even * 20 < pairs {
        Some(TextEncoding::Decoded(UTF_16LE))
    } else if even * 10 >= pairs * 3 && odd * 20 < pairs {
        Some(TextEncoding::Decoded(UTF_16BE))
    } else {
        None
    }
}

/// The sampled lines that hold non-ASCII bytes: how many are UTF-8, how many are not, and the
/// detector fed with the ones that are not.
struct Lines {
    utf8: usize,
    other: usize,
    detector: chardetng::EncodingDetector,
    region: Option<&'static str>,
}

impl Lines {
    fn classify(evidence: &Evidence<'_>, region: Option<&'static str>) -> Lines {
        let mut lines = Lines {
            utf8: 0,
            other: 0,
            detector: chardetng::EncodingDetector::new(),
            region,
        };
        let head_lines = whole_lines(evidence.head, !evidence.head_is_whole);
        let more = evidence
            .more
            .iter()
            .flat_map(|sample| whole_lines(sample, true).skip(1));
        for line in head_lines.chain(more) {
            if line.is_ascii() {
                continue;
            }
            if std::str::from_utf8(line).is_ok() {
                lines.utf8 += 1;
            } else {
                lines.other += 1;
                lines.detector.feed(line, false);
                lines.detector.feed(b"\n", false);
            }
        }
        lines
    }

    /// UTF-8 with stray rows, when at least as many of the lines are UTF-8 as are not.
    fn mostly_utf8(&self, basis: Basis) -> Option<Decision> {
        (self.utf8 > 0 && self.utf8 >= self.other).then(|| Decision {
            encoding: TextEncoding::Utf8,
            basis,
            bom_len: 0,
            strays_look_like: Some(self.guess()),
        })
    }

    /// The detector's guess for the lines that are not UTF-8.
    fn guess(&self) -> &'static Encoding {
        self.detector.guess(self.region.map(str::as_bytes), false)
    }
}

/// The country-code top-level domain standing for the region of a timezone, for the detector:
/// only regions whose legacy encodings differ from Western European ones are named.
pub fn region_of(tz: chrono_tz::Tz) -> Option<&'static str> {
    const REGIONS: [(&str, &str); 33] = [
        ("Asia/Shanghai", "cn"),
        ("Asia/Chongqing", "cn"),
        ("Asia/Chungking", "cn"),
        ("Asia/Harbin", "cn"),
        ("Asia/Urumqi", "cn"),
        ("PRC", "cn"),
        ("Asia/Taipei", "tw"),
        ("ROC", "tw"),
        ("Asia/Hong_Kong", "hk"),
        ("Hongkong", "hk"),
        ("Asia/Macau", "mo"),
        ("Asia/Tokyo", "jp"),
        ("Japan", "jp"),
        ("Asia/Seoul", "kr"),
        ("ROK", "kr"),
        ("Europe/Moscow", "ru"),
        ("Europe/Kiev", "ua"),
        ("Europe/Kyiv", "ua"),
        ("Europe/Minsk", "by"),
        ("Europe/Athens", "gr"),
        ("Europe/Istanbul", "tr"),
        ("Asia/Jerusalem", "il"),
        ("Asia/Riyadh", "sa"),
        ("Africa/Cairo", "eg"),
        ("Asia/Bangkok", "th"),
        ("Asia/Ho_Chi_Minh", "vn"),
        ("Europe/Warsaw", "pl"),
        ("Europe/Prague", "cz"),
        ("Europe/Budapest", "hu"),
        ("Europe/Vilnius", "lt"),
        ("Europe/Riga", "lv"),
        ("Europe/Tallinn", "ee"),
        ("Europe/Bucharest", "ro"),
    ];
    REGIONS
        .iter()
        .find(|(name, _)| *name == tz.name())
        .map(|(_, region)| *region)
}

/// The `\n`-terminated lines of a sample; with `cut`, the last piece (cut off by the sample's
/// end, maybe inside a character) is left out. Samples taken from the middle of a file also start
/// inside a line: callers skip the first piece.
fn whole_lines(sample: &[u8], cut: bool) -> impl Iterator<Item = &[u8]> {
    let end = if cut {
        sample
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1)
    } else {
        sample.len()
    };
    sample[..end]
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
}

/// Decodes a bounded prefix (for the delimiter sniff and messages); the BOM is already skipped.
pub fn decode_prefix(encoding: TextEncoding, bytes: &[u8]) -> String {
    match encoding {
        TextEncoding::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
        TextEncoding::Decoded(encoding) => {
            encoding.decode_without_bom_handling(bytes).0.into_owned()
        }
        TextEncoding::Utf32 { big_endian } => bytes
            .chunks_exact(4)
            .map(|c| {
                let word = [c[0], c[1], c[2], c[3]];
                let code = if big_endian {
                    u32::from_be_bytes(word)
                } else {
                    u32::from_le_bytes(word)
                };
                char::from_u32(code).unwrap_or('\u{FFFD}')
            })
            .collect(),
    }
}

/// The delimiters a header is sniffed for, in the order that breaks ties.
pub const SNIFFED_DELIMITERS: [u8; 4] = [b',', b'\t', b';', b'|'];

/// The delimiter of a CSV file whose decoded text starts with `text`: the one of
/// [`SNIFFED_DELIMITERS`] that occurs most often in the header line outside quotes; `,` when
/// none does.
pub fn sniff_delimiter(text: &str) -> u8 {
    let mut counts = [0usize; SNIFFED_DELIMITERS.len()];
    let mut quoted = false;
    for b in text.bytes() {
        match b {
            b'"' => quoted = !quoted,
            b'\n' | b'\r' if !quoted => break,
            _ if !quoted => {
                if let Some(i) = SNIFFED_DELIMITERS.iter().position(|&d| d == b) {
                    counts[i] += 1;
                }
            }
            _ => {}
        }
    }
    let best = (0..counts.len())
        .max_by_key(|&i| (counts[i], std::cmp::Reverse(i)))
        .filter(|&i| counts[i] > 0);
    best.map_or(b',', |i| SNIFFED_DELIMITERS[i])
}

/// A Read adapter from UTF-32 to UTF-8 (a code point that is not a scalar value becomes U+FFFD,
/// which quarantines its row as "not valid UTF-32").
pub struct Utf32Reader<R> {
    inner: R,
    big_endian: bool,
    pending: Vec<u8>,
    out: Vec<u8>,
    out_pos: usize,
}

impl<R: std::io::Read> Utf32Reader<R> {
    pub fn new(inner: R, big_endian: bool) -> Self {
        Utf32Reader {
            inner,
            big_endian,
            pending: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
        }
    }
}

impl<R: std::io::Read> std::io::Read for Utf32Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.out_pos == self.out.len() {
            let mut chunk = [0u8; 64 * 1024];
            let read = self.inner.read(&mut chunk)?;
            if read == 0 {
                if self.pending.is_empty() {
                    return Ok(0);
                }
                // A truncated last character.
                self.pending.clear();
                self.out = "\u{FFFD}".as_bytes().to_vec();
                self.out_pos = 0;
                break;
            }
            self.pending.extend_from_slice(&chunk[..read]);
            let whole = self.pending.len() / 4 * 4;
            let text = decode_prefix(
                TextEncoding::Utf32 {
                    big_endian: self.big_endian,
                },
                &self.pending[..whole],
            );
            self.pending.drain(..whole);
            self.out = text.into_bytes();
            self.out_pos = 0;
        }
        let n = buf.len().min(self.out.len() - self.out_pos);
        buf[..n].copy_from_slice(&self.out[self.out_pos..self.out_pos + n]);
        self.out_pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn evidence<'a>(bytes: &'a [u8], more: &'a [&'a [u8]]) -> Evidence<'a> {
        Evidence {
            head: bytes,
            head_is_whole: true,
            first_non_utf8: std::str::from_utf8(bytes)
                .err()
                .map(|e| e.valid_up_to() as u64),
            more,
        }
    }

    fn auto(bytes: &[u8]) -> Decision {
        decide(
            EncodingSetting::Auto,
            &evidence(bytes, &[]),
            None,
            "datasets.x",
        )
        .unwrap()
    }

    #[test]
    fn every_bom_is_honoured_whatever_is_declared() {
        let gbk = EncodingSetting::Declared(encoding_rs::GBK);
        for (bytes, name, len) in [
            (&b"\xEF\xBB\xBFa,b\n"[..], "utf-8", 3),
            (b"\xFF\xFEa\x00,\x00", "utf-16le", 2),
            (b"\xFE\xFF\x00a\x00,", "utf-16be", 2),
            (b"\xFF\xFE\x00\x00a\x00\x00\x00", "utf-32le", 4),
            (b"\x00\x00\xFE\xFF\x00\x00\x00a", "utf-32be", 4),
        ] {
            let d = decide(gbk, &evidence(bytes, &[]), None, "k").unwrap();
            assert_eq!(
                (d.encoding.name(), d.basis, d.bom_len),
                (name.into(), Basis::Bom, len)
            );
        }
    }

    #[test]
    fn auto_detects_latin_and_chinese_legacy_exports() {
        let (latin, _, _) = encoding_rs::WINDOWS_1252.encode(
            "Id,Stage,Description\n1,Negociación,Señal de compra\n2,Calificación,Reunión con el director\n",
        );
        assert_eq!(
            auto(&latin).encoding,
            TextEncoding::Decoded(encoding_rs::WINDOWS_1252)
        );
        let (gbk, _, _) = encoding_rs::GBK.encode(
            "卡号,销售时间,商品\n1001,2018-01-01 星期五,阿莫西林胶囊\n1002,2018-01-02 星期六,复方丹参滴丸\n",
        );
        assert_eq!(auto(&gbk).encoding, TextEncoding::Decoded(encoding_rs::GBK));
        assert_eq!(auto("a,é\n".as_bytes()).encoding, TextEncoding::Utf8);
    }

    #[test]
    fn a_utf8_file_with_stray_rows_stays_utf8() {
        let (stray, _, _) = encoding_rs::GBK.encode("3,王五,北京市朝阳区\n");
        let text = [
            "id,name,city\n1,张三,上海市浦东新区\n2,李四,广州市天河区\n".as_bytes(),
            &stray,
        ]
        .concat();
        let d = auto(&text);
        assert_eq!(d.encoding, TextEncoding::Utf8);
        assert_eq!(d.strays_look_like, Some(encoding_rs::GBK));
        // Declared UTF-8 on a file that is plainly GBK: rejected with the detector's hint.
        let (gbk, _, _) = encoding_rs::GBK.encode("id,name\n1,张三\n2,李四\n");
        let err = decide(
            EncodingSetting::Declared(UTF_8),
            &evidence(&gbk, &[]),
            None,
            "datasets.actions",
        )
        .unwrap_err();
        assert_eq!(
            err,
            "not valid UTF-8 (first bad byte at offset 10); if this is a GBK export, set datasets.actions.encoding: gbk"
        );
    }

    #[test]
    fn a_short_sample_is_read_as_the_timezone_region_expects() {
        let (gbk, _, _) = encoding_rs::GBK.encode("商机1,,lead,2026-03-02 09:00,R1\n");
        let (latin, _, _) = encoding_rs::WINDOWS_1252.encode("1,Müller GmbH,Straße\n");
        let guess = |bytes: &[u8], tz: chrono_tz::Tz| {
            decide(
                EncodingSetting::Auto,
                &evidence(bytes, &[]),
                region_of(tz),
                "k",
            )
            .unwrap()
            .encoding
        };
        let shanghai = chrono_tz::Asia::Shanghai;
        let berlin = chrono_tz::Europe::Berlin;
        assert_eq!(
            guess(&gbk, shanghai),
            TextEncoding::Decoded(encoding_rs::GBK)
        );
        assert_eq!(
            guess(&latin, berlin),
            TextEncoding::Decoded(encoding_rs::WINDOWS_1252)
        );
        // A longer sample speaks for itself, whatever the region.
        let (spanish, _, _) = encoding_rs::WINDOWS_1252.encode(
            "1,Negociación con el cliente: señal de compra\n2,Reunión técnica en Logroño – próxima cita\n",
        );
        assert_eq!(
            guess(&spanish, shanghai),
            TextEncoding::Decoded(encoding_rs::WINDOWS_1252)
        );
    }

    #[test]
    fn utf16_without_a_bom_is_recognised_by_its_zero_bytes() {
        let le: Vec<u8> = "id\tname\n1\tJosé\n"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert_eq!(auto(&le).encoding, TextEncoding::Decoded(UTF_16LE));
    }

    #[test]
    fn delimiters_are_sniffed_from_the_header_outside_quotes() {
        assert_eq!(sniff_delimiter("a,b,c\n1;2;3;4;5\n"), b',');
        assert_eq!(sniff_delimiter("a;b;\"c,d,e\"\n"), b';');
        assert_eq!(sniff_delimiter("a\tb\tc"), b'\t');
        assert_eq!(sniff_delimiter("a|b|c\r\n"), b'|');
        assert_eq!(sniff_delimiter("single\n"), b',');
    }

    #[test]
    fn utf32_reads_through_the_adapter() {
        use std::io::Read;
        let bytes: Vec<u8> = "id,名\n"
            .chars()
            .flat_map(|c| (c as u32).to_be_bytes())
            .collect();
        let mut text = String::new();
        Utf32Reader::new(&bytes[..], true)
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "id,名\n");
    }
}
