//! Where each canonical column's value comes from in a source record: one source column, the
//! first non-empty of a list of them, a constant, or a hash of several (a derived id). Built once
//! per file from its header (tabular files) or used by key name (JSON); the readers ask it for
//! each canonical cell.

use std::borrow::Cow;

use xxhash_rust::xxh3::xxh3_128;

use super::cell::Cell;
use super::spec::{FileSpec, Rule};

/// How one canonical column is read; `K` addresses a source field (an index into a header, or a
/// JSON key).
#[derive(Debug, Clone)]
pub enum Pick<K> {
    /// Not in this file: the value is empty.
    Missing,
    Field(K),
    /// The first of these fields with a value.
    FirstOf(Vec<K>),
    Constant(String),
    /// XXH3-128 (32 hex digits) of these fields' trimmed text joined by U+001F; empty when they
    /// all are.
    HashOf(Vec<K>),
}

/// The picks of every wanted column (canonical columns first, then extras such as a snapshot's
/// stage), and the file's null tokens.
#[derive(Debug, Clone)]
pub struct Columns<K> {
    picks: Vec<Pick<K>>,
    nulls: Vec<String>,
}

impl<K> Columns<K> {
    /// No columns (a reader's state before its header is read).
    pub fn empty() -> Columns<K> {
        Columns {
            picks: Vec::new(),
            nulls: Vec::new(),
        }
    }

    /// The value of wanted column `i`, reading source fields with `field`. A value equal to one
    /// of the null tokens (after trimming) is empty.
    pub fn cell<'a>(&'a self, i: usize, field: impl Fn(&K) -> Cell<'a>) -> Cell<'a> {
        let cell = match &self.picks[i] {
            Pick::Missing => return Cell::Null,
            Pick::Constant(value) => return Cell::Text(Cow::Borrowed(value)),
            Pick::Field(k) => field(k),
            Pick::FirstOf(keys) => keys
                .iter()
                .map(|k| self.nulled(field(k)))
                .find(|c| !c.is_empty())
                .unwrap_or(Cell::Null),
            Pick::HashOf(keys) => {
                let parts: Vec<String> = keys
                    .iter()
                    .map(|k| {
                        self.nulled(field(k))
                            .to_text()
                            .map(|t| t.trim().to_string())
                            .unwrap_or_default()
                    })
                    .collect();
                if parts.iter().all(String::is_empty) {
                    return Cell::Null;
                }
                let digest = xxh3_128(parts.join("\u{1F}").as_bytes());
                return Cell::Text(Cow::Owned(format!("{digest:032x}")));
            }
        };
        self.nulled(cell)
    }

    fn nulled<'a>(&self, cell: Cell<'a>) -> Cell<'a> {
        match &cell {
            Cell::Text(text) if !self.nulls.is_empty() => {
                let trimmed = text.trim();
                if self.nulls.iter().any(|n| n == trimmed) {
                    Cell::Null
                } else {
                    cell
                }
            }
            _ => cell,
        }
    }
}

impl Columns<String> {
    /// For JSON records: fields are looked up by key (exactly, else ignoring case), a column
    /// without a rule under its own name.
    pub fn by_key(spec: &FileSpec) -> Columns<String> {
        let picks = spec
            .wanted
            .iter()
            .map(|wanted| match &wanted.rule {
                Rule::Constant(value) => Pick::Constant(value.clone()),
                Rule::HashOf(keys) => Pick::HashOf(keys.clone()),
                Rule::Names(names) if names.is_empty() => Pick::Field(wanted.name.clone()),
                Rule::Names(names) => {
                    let mut keys = names.clone();
                    keys.push(wanted.name.clone());
                    Pick::FirstOf(keys)
                }
            })
            .collect();
        Columns {
            picks,
            nulls: spec.null_values.clone(),
        }
    }
}

/// What a header's reader knows that helps explain a mismatch.
pub struct HeaderContext<'a> {
    /// The delimiter the header was split on (CSV).
    pub delimiter: Option<u8>,
    /// The encoding the header was decoded from, e.g. `utf-8 (detected)`.
    pub encoding: &'a str,
}

impl Columns<usize> {
    /// For tabular files: each wanted column's source field in `header`. A required column the
    /// header lacks, a column named twice, or a `hash_of` column that is missing rejects the file.
    pub fn from_header(
        spec: &FileSpec,
        header: &[String],
        context: &HeaderContext<'_>,
    ) -> Result<Columns<usize>, String> {
        let find = |name: &str| -> Result<Option<usize>, String> {
            let exact: Vec<usize> = (0..header.len()).filter(|&i| header[i] == name).collect();
            let found = if exact.is_empty() {
                (0..header.len())
                    .filter(|&i| header[i].trim().eq_ignore_ascii_case(name.trim()))
                    .collect()
            } else {
                exact
            };
            match found.as_slice() {
                [] => Ok(None),
                [one] => Ok(Some(*one)),
                [first, second, ..] => Err(format!(
                    "the header names column `{}` twice (columns {} and {}): rename one of them, \
                     or map the column in {}.columns to the other's name",
                    header[*first],
                    first + 1,
                    second + 1,
                    spec.key
                )),
            }
        };
        let mut missing = Vec::new();
        let mut picks = Vec::with_capacity(spec.wanted.len());
        for wanted in &spec.wanted {
            let pick = match &wanted.rule {
                Rule::Constant(value) => Pick::Constant(value.clone()),
                Rule::HashOf(names) => {
                    let mut fields = Vec::new();
                    for name in names {
                        match find(name)? {
                            Some(i) => fields.push(i),
                            None => missing.push(format!(
                                "{name} (for {}: {{ hash_of: [{}] }})",
                                wanted.name,
                                names.join(", ")
                            )),
                        }
                    }
                    Pick::HashOf(fields)
                }
                Rule::Names(names) => {
                    let mut fields = Vec::new();
                    for name in names {
                        if let Some(i) = find(name)? {
                            fields.push(i);
                        }
                    }
                    if fields.is_empty()
                        && let Some(i) = find(&wanted.name)?
                    {
                        fields.push(i);
                    }
                    match fields.len() {
                        0 => {
                            if wanted.required {
                                missing.push(match names.as_slice() {
                                    [] => wanted.name.clone(),
                                    [one] if *one == wanted.name => wanted.name.clone(),
                                    _ => format!("{} (for {})", names.join(" or "), wanted.name),
                                });
                            }
                            Pick::Missing
                        }
                        1 => Pick::Field(fields[0]),
                        _ => Pick::FirstOf(fields),
                    }
                }
            };
            picks.push(pick);
        }
        if missing.is_empty() {
            return Ok(Columns {
                picks,
                nulls: spec.null_values.clone(),
            });
        }
        let base = format!(
            "the header lacks required column(s) {}; it has: {}",
            missing.join(", "),
            header.join(", "),
        );
        Err(match header_hint(header, context, &spec.key) {
            Some(hint) => format!("{base} ({hint})"),
            None => format!("{base} (map source columns in {}.columns)", spec.key),
        })
    }
}

/// Why a header that does not match may be unreadable rather than unmapped: the text was decoded
/// in the wrong encoding, or split on the wrong delimiter.
fn header_hint(header: &[String], context: &HeaderContext<'_>, key: &str) -> Option<String> {
    let text = header.join("");
    if text.contains('\0') {
        return Some(format!(
            "wrong encoding: the header holds zero bytes, as UTF-16 text read as {} does; set \
             {key}.encoding: utf-16le (or utf-16be), or save the file as UTF-8",
            context.encoding
        ));
    }
    if text.contains('\u{FFFD}') {
        return Some(format!(
            "wrong encoding: the header has bytes that are not valid {}; set {key}.encoding to the \
             file's encoding (e.g. gbk, windows-1252), or auto",
            context.encoding
        ));
    }
    let used = context.delimiter.unwrap_or(b',');
    for (byte, name) in [(b'\t', "tab"), (b';', "`;`"), (b'|', "`|`"), (b',', "`,`")] {
        if byte != used && header.iter().any(|h| h.as_bytes().contains(&byte)) {
            let quoted = if byte == b'\t' {
                "\"\\t\"".to_string()
            } else {
                format!("'{}'", byte as char)
            };
            return Some(format!(
                "wrong delimiter: a header field holds {name}, so the file was split on `{}`; set \
                 {key}.delimiter: {quoted}",
                if used == b'\t' {
                    "\\t".to_string()
                } else {
                    (used as char).to_string()
                }
            ));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::spec::Wanted;
    use crate::lake::schema::Dataset;

    fn spec(wanted: Vec<Wanted>) -> FileSpec {
        FileSpec {
            wanted,
            null_values: vec!["null".into(), "N/A".into()],
            ..FileSpec::plain(Dataset::Actions)
        }
    }

    fn wanted(name: &str, required: bool, rule: Rule) -> Wanted {
        Wanted {
            name: name.into(),
            required,
            rule,
        }
    }

    fn header(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    const CONTEXT: HeaderContext<'static> = HeaderContext {
        delimiter: Some(b','),
        encoding: "utf-8 (detected)",
    };

    #[test]
    fn fallbacks_constants_hashes_and_null_tokens() {
        let spec = spec(vec![
            wanted(
                "recorded_at",
                false,
                Rule::Names(vec!["Completed Date".into(), "Created Date".into()]),
            ),
            wanted("action_type", true, Rule::Constant("task".into())),
            wanted(
                "action_id",
                true,
                Rule::HashOf(vec!["card_no".into(), "sku".into()]),
            ),
        ]);
        let columns = Columns::from_header(
            &spec,
            &header(&["Created Date", "card_no", "Completed Date", "sku"]),
            &CONTEXT,
        )
        .unwrap();
        let row = ["2026-03-01", "C1", "null", " A9 "];
        let field = |i: &usize| Cell::Text(Cow::Borrowed(row[*i]));
        assert_eq!(columns.cell(0, field).to_text().unwrap(), "2026-03-01");
        assert_eq!(columns.cell(1, field).to_text().unwrap(), "task");
        let id = columns.cell(2, field).to_text().unwrap();
        assert_eq!(id, format!("{:032x}", xxh3_128("C1\u{1F}A9".as_bytes())));
        let empty = ["", "", "N/A", ""];
        let field = |i: &usize| Cell::Text(Cow::Borrowed(empty[*i]));
        assert_eq!(columns.cell(0, field), Cell::Null);
        assert_eq!(columns.cell(2, field), Cell::Null);
    }

    #[test]
    fn a_used_column_named_twice_rejects_the_file() {
        let spec = spec(vec![wanted("owner_id", true, Rule::Names(vec![]))]);
        let err = Columns::from_header(&spec, &header(&["owner_id", "x", "owner_id"]), &CONTEXT)
            .unwrap_err();
        assert!(
            err.starts_with("the header names column `owner_id` twice (columns 1 and 3)"),
            "{err}"
        );
        let err =
            Columns::from_header(&spec, &header(&["Owner_ID", "OWNER_ID "]), &CONTEXT).unwrap_err();
        assert!(err.contains("(columns 1 and 2)"), "{err}");
        // An exact match settles it.
        assert!(
            Columns::from_header(&spec, &header(&["id", "owner_id", "Owner_ID"]), &CONTEXT).is_ok()
        );
        // A duplicate nobody reads is fine.
        assert!(Columns::from_header(&spec, &header(&["owner_id", "x", "x"]), &CONTEXT).is_ok());
    }

    #[test]
    fn headers_that_do_not_match_say_wrong_encoding_or_delimiter() {
        let spec = spec(vec![wanted("owner_id", true, Rule::Names(vec![]))]);
        let err =
            Columns::from_header(&spec, &header(&["id;owner_id;note"]), &CONTEXT).unwrap_err();
        assert!(
            err.contains("wrong delimiter") && err.contains("delimiter: ';'"),
            "{err}"
        );
        assert!(!err.contains("map source columns"), "{err}");
        let err = Columns::from_header(&spec, &header(&["\0i\0d", "\0o"]), &CONTEXT).unwrap_err();
        assert!(err.contains("wrong encoding"), "{err}");
        let err =
            Columns::from_header(&spec, &header(&["N\u{FFFD}mero", "x"]), &CONTEXT).unwrap_err();
        assert!(err.contains("wrong encoding"), "{err}");
        let err = Columns::from_header(&spec, &header(&["id", "x"]), &CONTEXT).unwrap_err();
        assert!(
            err.contains("map source columns in datasets.actions.columns"),
            "{err}"
        );
    }
}
