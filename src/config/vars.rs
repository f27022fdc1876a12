//! `${VAR}`, `${VAR:-default}` and `${VAR:?message}` interpolation, done *inside the parsed
//! scalars* of a YAML file, so a value from the environment arrives byte for byte whatever it
//! holds (`"`, `\`, `#`, `: `, newlines, a literal `${`), and no value is ever pasted where YAML
//! would read it as syntax. `$$` is a literal `$`. YAML comments are left as they are, so
//! commented-out examples may mention variables that are not set.
//!
//! How: each reference in the text (outside comments) is replaced by a placeholder that YAML
//! reads as plain text in any context (block, flow, quoted), the text is parsed, and then every
//! string scalar holding placeholders gets the values put in. A scalar that is one whole
//! reference (`port: ${SMTP_PORT}`) stays a string; [`super::load`] reads it as a number, a
//! boolean or a list when the setting wants one.
//!
//! No message ever shows a value from the environment, nor the text around a reference (which
//! may be a secret typed into the file): problems name the line, and
//! [`Expanded::hide`] replaces any value that a later message would quote by its reference.

use std::collections::BTreeMap;

use serde_yaml::Value;

/// One step of a key path: a mapping key or a sequence index (as written in the file). Here,
/// where the values from the environment are found by path; `load` names problems with it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// Start and end of a placeholder: private-use characters, printable for YAML in every context
/// and not something a config file holds.
const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

/// A parsed document with its references expanded.
#[derive(Debug)]
pub struct Document {
    pub value: Value,
    pub expanded: Expanded,
    /// The text as parsed (placeholders in place of the references), for a parser that says
    /// where in the file a problem is.
    pub(crate) marked: String,
}

/// What came from the environment: each reference's name and value, and which scalars hold one.
#[derive(Debug, Default, Clone)]
pub struct Expanded {
    /// (name, value) of each reference expanded, in the order of the file.
    values: Vec<(String, String)>,
    /// Scalars (by path from the document's root) that hold at least one value, with the names.
    scalars: BTreeMap<Vec<Seg>, Scalar>,
}

/// A scalar that holds values from the environment.
#[derive(Debug, Clone)]
pub struct Scalar {
    /// The references in it, as written (`${SMTP_PORT}`).
    pub references: Vec<String>,
    /// The scalar is one reference and nothing else: its value may be read as YAML (a number,
    /// a boolean, a list) when the setting wants one.
    pub whole: bool,
}

impl Expanded {
    /// The scalar at `path` (from the document's root), if it holds values from the environment.
    pub fn scalar(&self, path: &[Seg]) -> Option<&Scalar> {
        self.scalars.get(path)
    }

    /// `message` with every value from the environment it quotes replaced by its reference,
    /// so no error shows one. Values are replaced inside quotes (`` `...` `` or `"..."`, how
    /// messages quote), and anywhere when they are long enough not to be an ordinary word.
    pub fn hide(&self, message: &str) -> String {
        let mut values: Vec<&(String, String)> =
            self.values.iter().filter(|(_, v)| !v.is_empty()).collect();
        values.sort_by_key(|(_, v)| std::cmp::Reverse(v.len()));
        let mut out = message.to_string();
        for (name, value) in values {
            let reference = format!("${{{name}}}");
            if value.chars().count() >= 6 {
                out = out.replace(value.as_str(), &reference);
            } else {
                out = replace_quoted(&out, value, &reference);
            }
        }
        out
    }
}

/// `text` with `value` replaced by `by` inside `` `...` `` and `"..."` spans only.
fn replace_quoted(text: &str, value: &str, by: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(['`', '"']) {
        let quote = rest[start..].chars().next().unwrap_or('`');
        out.push_str(&rest[..=start]);
        let after = &rest[start + 1..];
        match after.find(quote) {
            Some(end) => {
                out.push_str(&after[..end].replace(value, by));
                out.push(quote);
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(after);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

/// Parses `text` as YAML with every `${...}` reference expanded from `lookup` inside the scalar
/// it is part of. Returns every problem (unset variables, malformed references, YAML syntax),
/// each with its line, none showing a value or the text around it.
pub fn parse(text: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<Document, Vec<String>> {
    let (marked, references, problems) = mark(text, &lookup);
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut value: Value = serde_yaml::from_str(&marked).map_err(|e| {
        // serde_yaml says where (line and column), not what; a placeholder it quotes is shown
        // as its reference.
        vec![format!(
            "not valid YAML: {}",
            show_references(&e.to_string(), &references)
        )]
    })?;
    let mut expanded = Expanded {
        values: references
            .iter()
            .map(|r| (r.name.clone(), r.value.clone()))
            .collect(),
        scalars: BTreeMap::new(),
    };
    let mut path = Vec::new();
    fill(&mut value, &references, &mut path, &mut expanded);
    Ok(Document {
        value,
        expanded,
        marked,
    })
}

/// One reference found in the text.
struct Reference {
    name: String,
    /// As written, for messages: `${NAME}` (the default or message left out).
    written: String,
    value: String,
}

/// The text with each reference replaced by a placeholder, the references, and the problems.
fn mark(
    text: &str,
    lookup: &impl Fn(&str) -> Option<String>,
) -> (String, Vec<Reference>, Vec<String>) {
    let mut out = String::with_capacity(text.len());
    let mut references = Vec::new();
    let mut problems = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let (code, comment) = line.split_at(comment_start(line).unwrap_or(line.len()));
        let at = format!("line {}", index + 1);
        let mut rest = code;
        while let Some(dollar) = rest.find('$') {
            out.push_str(&rest[..dollar]);
            let after = &rest[dollar + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(body) = after.strip_prefix('{') {
                let Some(end) = body.find('}') else {
                    problems.push(format!(
                        "{}: `${{` without its closing `}}` (write $${{ for a literal ${{)",
                        at
                    ));
                    rest = "";
                    continue;
                };
                match expand(&body[..end], lookup) {
                    Ok((name, value)) => {
                        out.push(OPEN);
                        out.push_str(&references.len().to_string());
                        out.push(CLOSE);
                        references.push(Reference {
                            written: format!("${{{name}}}"),
                            name,
                            value,
                        });
                    }
                    Err(problem) => problems.push(format!("{at}: {problem}")),
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
        out.push_str(comment);
    }
    (out, references, problems)
}

/// Puts the values into every string scalar (and mapping key) holding placeholders, recording
/// which scalars they are.
fn fill(value: &mut Value, references: &[Reference], path: &mut Vec<Seg>, out: &mut Expanded) {
    match value {
        Value::String(text) if text.contains(OPEN) => {
            let (filled, used, whole) = substitute(text, references);
            *text = filled;
            out.scalars.insert(
                path.clone(),
                Scalar {
                    references: used,
                    whole,
                },
            );
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(Seg::Index(i));
                fill(item, references, path, out);
                path.pop();
            }
        }
        Value::Mapping(map) => {
            let entries = std::mem::take(map);
            for (mut key, mut item) in entries {
                if let Value::String(text) = &mut key
                    && text.contains(OPEN)
                {
                    *text = substitute(text, references).0;
                }
                path.push(Seg::Key(match &key {
                    Value::String(k) => k.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_string(),
                }));
                fill(&mut item, references, path, out);
                path.pop();
                map.insert(key, item);
            }
        }
        Value::Tagged(tagged) => fill(&mut tagged.value, references, path, out),
        _ => {}
    }
}

/// `text` with its placeholders replaced by their values; the references used; whether the
/// text was one placeholder and nothing else.
fn substitute(text: &str, references: &[Reference]) -> (String, Vec<String>, bool) {
    let mut out = String::with_capacity(text.len());
    let mut used = Vec::new();
    let mut rest = text;
    let mut pieces = 0;
    while let Some(start) = rest.find(OPEN) {
        if start > 0 {
            pieces += 1;
        }
        out.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len_utf8()..];
        let end = after.find(CLOSE).unwrap_or(after.len());
        match after[..end]
            .parse::<usize>()
            .ok()
            .and_then(|i| references.get(i))
        {
            Some(reference) => {
                out.push_str(&reference.value);
                used.push(reference.written.clone());
            }
            None => out.push_str(&rest[start..start + OPEN.len_utf8() + end]),
        }
        pieces += 1;
        rest = after.get(end + CLOSE.len_utf8()..).unwrap_or("");
    }
    if !rest.is_empty() {
        pieces += 1;
    }
    out.push_str(rest);
    (out, used, pieces == 1)
}

/// A message (from the YAML parser) with any placeholder it quotes shown as its reference.
fn show_references(message: &str, references: &[Reference]) -> String {
    if !message.contains(OPEN) {
        return message.to_string();
    }
    let mut out = String::new();
    let mut rest = message;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len_utf8()..];
        let end = after.find(CLOSE).unwrap_or(after.len());
        if let Some(reference) = after[..end]
            .parse::<usize>()
            .ok()
            .and_then(|i| references.get(i))
        {
            out.push_str(&reference.written);
        }
        rest = after.get(end + CLOSE.len_utf8()..).unwrap_or("");
    }
    out.push_str(rest);
    out
}

/// Where a YAML comment starts in `line`: a `#` at the start or after white space, outside quotes.
fn comment_start(line: &str) -> Option<usize> {
    let mut quote = None;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '#') if previous.is_whitespace() => return Some(i),
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
        previous = c;
    }
    None
}

/// The name and value of the reference `${body}`, or why it cannot be expanded (naming the
/// variable, never showing a value).
fn expand(
    body: &str,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<(String, String), String> {
    let (name, op) = match body.find(':') {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(
            "`${` starts a variable reference: a name of letters, digits and _ (write $$ for a literal $)"
                .into(),
        );
    }
    let value = lookup(name).filter(|v| !v.is_empty());
    let value = match op {
        None => value.ok_or_else(|| {
            format!("environment variable {name} is not set (write ${{{name}:-default}} to give a default)")
        })?,
        Some(op) => {
            if let Some(default) = op.strip_prefix('-') {
                value.unwrap_or_else(|| default.to_string())
            } else if let Some(message) = op.strip_prefix('?') {
                value.ok_or_else(|| format!("environment variable {name} is required: {message}"))?
            } else {
                return Err(format!(
                    "`${{{name}:...}}`: expected `:-default` or `:?message` after the name"
                ));
            }
        }
    };
    Ok((name.to_string(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("smtp.example.com".into()),
            "EMPTY" => Some(String::new()),
            "PASSWORD" => Some("C:\\new\\x41pp \"q\" # ${X} 'y': z\nw".into()),
            "PORT" => Some("0587".into()),
            _ => None,
        }
    }

    fn text_at(value: &Value, key: &str) -> String {
        value[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key}: {value:?}"))
            .to_string()
    }

    #[test]
    fn expands_plain_default_and_required_forms() {
        let text = "a: ${HOST}\nb: ${MISSING:-x}\nc: ${EMPTY:-y}\nd: $$5 and $5\n";
        let doc = parse(text, env).unwrap();
        assert_eq!(text_at(&doc.value, "a"), "smtp.example.com");
        assert_eq!(text_at(&doc.value, "b"), "x");
        assert_eq!(text_at(&doc.value, "c"), "y");
        assert_eq!(text_at(&doc.value, "d"), "$5 and $5");
    }

    /// Whatever the value holds, it arrives as it is, in any YAML context.
    #[test]
    fn values_arrive_byte_for_byte_in_every_context() {
        let text = "a: \"${PASSWORD}\"\nb: '${PASSWORD}'\nc: ${PASSWORD}\nd: { e: ${PASSWORD} }\nf: [\"x${PASSWORD}y\"]\ng: ${PORT}\n";
        let doc = parse(text, env).unwrap();
        let password = env("PASSWORD").unwrap();
        for key in ["a", "b", "c"] {
            assert_eq!(text_at(&doc.value, key), password, "{key}");
        }
        assert_eq!(doc.value["d"]["e"].as_str(), Some(password.as_str()));
        assert_eq!(
            doc.value["f"][0].as_str(),
            Some(format!("x{password}y").as_str())
        );
        // A whole reference stays text ("0587", not 587); the loader reads it as a number
        // only where a number is wanted.
        assert_eq!(text_at(&doc.value, "g"), "0587");
        let g = doc.expanded.scalar(&[Seg::Key("g".into())]).unwrap();
        assert!(g.whole && g.references == ["${PORT}"]);
        let f = doc
            .expanded
            .scalar(&[Seg::Key("f".into()), Seg::Index(0)])
            .unwrap();
        assert!(!f.whole);
    }

    #[test]
    fn reports_every_problem_with_its_line_and_never_the_text() {
        let problems = parse(
            "a: ${NOPE}\nb: ok\nc: ${PW:?set the SMTP password}\npassword: hunter2${oops\nd: pa${bad name}ss\n",
            env,
        )
        .unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(problems[0].starts_with("line 1: environment variable NOPE is not set"));
        assert_eq!(
            problems[1],
            "line 3: environment variable PW is required: set the SMTP password"
        );
        assert!(problems[2].starts_with("line 4: `${` without its closing `}`"));
        assert!(problems[3].starts_with("line 5: `${` starts a variable reference"));
        let all = problems.join("\n");
        assert!(
            !all.contains("hunter2") && !all.contains("bad name"),
            "{all}"
        );
    }

    #[test]
    fn comments_are_left_alone() {
        let text = "# url: ${NOPE}\na: ${HOST} # or ${NOPE}\nb: \"x # ${HOST}\"\n";
        let doc = parse(text, env).unwrap();
        assert_eq!(text_at(&doc.value, "a"), "smtp.example.com");
        assert_eq!(text_at(&doc.value, "b"), "x # smtp.example.com");
    }

    #[test]
    fn values_are_hidden_from_messages() {
        let doc = parse("a: ${HOST}\nb: ${SHORT:-en}\n", env).unwrap();
        assert_eq!(
            doc.expanded
                .hide("timezone: `smtp.example.com` is not a zone; smtp.example.com again"),
            "timezone: `${HOST}` is not a zone; ${HOST} again"
        );
        // A short value is replaced where a message quotes it, not inside other words.
        assert_eq!(
            doc.expanded
                .hide("language: `en` is not one of en, zh (then)"),
            "language: `${SHORT}` is not one of en, zh (then)"
        );
    }
}
