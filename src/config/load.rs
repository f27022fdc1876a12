//! A parsed YAML value -> a typed setting, with **every** problem found in one pass, not just
//! the first (serde stops at the first): deserialize; on an error, note it with its key path,
//! take the value it is about out of the tree (a setting with a default falls back to it), and
//! deserialize again, until it works or nothing is left to take out. A `missing field` that only
//! follows from a value taken out is not reported again.
//!
//! Values that came from the environment are never shown: a problem with one names its
//! reference instead (`${SMTP_PORT}`). A scalar that is one whole reference is text after
//! interpolation; where the setting wants a number, a boolean or a list, it is read as YAML.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use serde_yaml::Value;

pub use super::vars::Seg;
use super::vars::{Document, Expanded};

/// `email.smtp.port`, `stages[2].name`.
pub fn display(path: &[Seg]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Seg::Key(key) if out.is_empty() => out.push_str(key),
            Seg::Key(key) => {
                out.push('.');
                out.push_str(key);
            }
            Seg::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Which elements of each sequence are still there after some were taken out: the file's index
/// of each, so that a later message about element `i` names the one of the file.
#[derive(Debug, Default, Clone)]
pub struct Kept(BTreeMap<String, Vec<usize>>);

impl Kept {
    /// `message` with each `path[i]` of a sequence that lost elements turned into the file's
    /// index (`stages[1]` is the file's `stages[2]` when `stages[0]` was taken out).
    pub fn reindex(&self, message: &str) -> String {
        let mut out = message.to_string();
        for (path, kept) in &self.0 {
            let needle = format!("{path}[");
            let mut rebuilt = String::with_capacity(out.len());
            let mut rest = out.as_str();
            while let Some(at) = rest.find(&needle) {
                let after = &rest[at + needle.len()..];
                let digits = after.chars().take_while(char::is_ascii_digit).count();
                rebuilt.push_str(&rest[..at + needle.len()]);
                match after[..digits]
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| kept.get(i))
                {
                    Some(original) => rebuilt.push_str(&original.to_string()),
                    None => rebuilt.push_str(&after[..digits]),
                }
                rest = &after[digits..];
            }
            rebuilt.push_str(rest);
            out = rebuilt;
        }
        out
    }

    /// Both lists.
    pub fn extend(&mut self, other: Kept) {
        self.0.extend(other.0);
    }
}

/// Deserializes `value`, found at `at` in its document, as `T`. Returns `T` (built from what is
/// left when some values had to be taken out) unless nothing usable was left, every problem as
/// `key.path: message`, and which sequence elements are left.
pub fn typed<T: DeserializeOwned>(
    value: Value,
    at: &[Seg],
    expanded: &Expanded,
) -> (Option<T>, Vec<String>, Kept) {
    let mut tree = Tree {
        value,
        shifts: BTreeMap::new(),
    };
    let mut problems = Vec::new();
    let mut removed: BTreeSet<Vec<Seg>> = BTreeSet::new();
    let mut retyped: BTreeSet<Vec<Seg>> = BTreeSet::new();
    let kept = |tree: &Tree| {
        Kept(
            tree.shifts
                .iter()
                .map(|(path, kept)| {
                    let full: Vec<Seg> = at.iter().chain(path).cloned().collect();
                    (display(&full), kept.clone())
                })
                .collect(),
        )
    };
    // Each round takes a value out or reads one as YAML, so this ends; the bound is a guard.
    for _ in 0..10_000 {
        let error = match serde_path_to_error::deserialize::<_, T>(tree.value.clone()) {
            Ok(typed) => return (Some(typed), problems, kept(&tree)),
            Err(error) => error,
        };
        let Some(current) = segments(error.path()) else {
            problems.push(locate_message(
                at,
                &[],
                &error.inner().to_string(),
                expanded,
            ));
            return (None, problems, kept(&tree));
        };
        let original = tree.original(&current);
        let message = error.into_inner().to_string();
        let full: Vec<Seg> = at.iter().chain(&original).cloned().collect();

        // `port: ${SMTP_PORT}` is text after interpolation: read it as YAML where a number, a
        // boolean or a list is wanted.
        if message.starts_with("invalid type: string")
            && expanded.scalar(&full).is_some_and(|s| s.whole)
            && retyped.insert(original.clone())
            && tree.retype(&current)
        {
            continue;
        }

        // A problem that follows from a value taken out is not reported again: the field that
        // is now missing, or a value left with no part that says what it is (a step without
        // its kind). Another missing field is a problem of its own.
        let consequence = match missing_field(&message) {
            Some(field) => {
                let mut path = original.clone();
                path.push(Seg::Key(field.to_string()));
                removed.contains(&path)
            }
            None => removed
                .iter()
                .any(|path| path.len() == original.len() + 1 && path.starts_with(&original)),
        };
        if !consequence {
            problems.push(locate_message(at, &original, &message, expanded));
        }
        if current.is_empty() || !tree.remove(&current) {
            return (None, problems, kept(&tree));
        }
        removed.insert(original);
    }
    problems.push(format!("{}: too many problems to list", display(at)));
    (None, problems, kept(&tree))
}

/// [`typed`] for a whole document, the first problem with its line (serde_yaml says where it
/// is when it reads the text itself; the later ones name their key path only).
pub fn typed_document<T: DeserializeOwned>(document: &Document) -> (Option<T>, Vec<String>, Kept) {
    let (typed, mut problems, kept) =
        self::typed::<T>(document.value.clone(), &[], &document.expanded);
    if let Some(first) = problems.first_mut()
        && let Err(located) = serde_yaml::from_str::<T>(&document.marked)
    {
        // serde_yaml names the path its own way (`steps[0]` for an unknown key in it); the
        // message after the path is the same.
        let located = located.to_string();
        let message = first.split_once(": ").map_or(first.as_str(), |(_, m)| m);
        if located.contains(message) {
            *first = document.expanded.hide(&located);
        }
    }
    (typed, problems, kept)
}

/// `key.path: message`, the message saying which reference a value came from instead of
/// showing it.
fn locate_message(at: &[Seg], path: &[Seg], message: &str, expanded: &Expanded) -> String {
    let full: Vec<Seg> = at.iter().chain(path).cloned().collect();
    let message = match expanded.scalar(&full) {
        Some(scalar) => {
            let expected = message
                .split_once("expected ")
                .map_or("another value", |(_, tail)| tail);
            format!(
                "the value of {} (from the environment, not shown) does not fit here: expected {expected}",
                scalar.references.join(" and ")
            )
        }
        None => message.to_string(),
    };
    let message = expanded.hide(&message);
    let key = display(&full);
    if key.is_empty() {
        message
    } else {
        format!("{key}: {message}")
    }
}

/// `missing field `name`` -> `name`.
fn missing_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next())
}

/// The error path as steps; `None` when part of it is unknown.
fn segments(path: &serde_path_to_error::Path) -> Option<Vec<Seg>> {
    use serde_path_to_error::Segment;
    let mut out = Vec::new();
    for segment in path {
        match segment {
            Segment::Seq { index } => out.push(Seg::Index(*index)),
            Segment::Map { key } => out.push(Seg::Key(key.clone())),
            // Variant content sits at the same place in the file.
            Segment::Enum { .. } => {}
            Segment::Unknown => return None,
        }
    }
    Some(out)
}

/// The value being deserialized, with what was taken out of its sequences, so that paths keep
/// the indices of the file.
struct Tree {
    value: Value,
    /// Sequence (by its path in the file) -> the file's index of each element still in it.
    shifts: BTreeMap<Vec<Seg>, Vec<usize>>,
}

impl Tree {
    /// The path in the file of `current` (a path in the tree as it is now).
    fn original(&self, current: &[Seg]) -> Vec<Seg> {
        let mut out = Vec::with_capacity(current.len());
        for seg in current {
            let step = match seg {
                Seg::Index(i) => match self.shifts.get(&out) {
                    Some(kept) => Seg::Index(kept.get(*i).copied().unwrap_or(*i)),
                    None => Seg::Index(*i),
                },
                key => key.clone(),
            };
            out.push(step);
        }
        out
    }

    fn node(&mut self, path: &[Seg]) -> Option<&mut Value> {
        let mut node = &mut self.value;
        for seg in path {
            node = match (seg, node) {
                (Seg::Key(key), Value::Mapping(map)) => map.get_mut(key.as_str())?,
                (Seg::Index(i), Value::Sequence(items)) => items.get_mut(*i)?,
                (seg, Value::Tagged(tagged)) => match (seg, &mut tagged.value) {
                    (Seg::Key(key), Value::Mapping(map)) => map.get_mut(key.as_str())?,
                    (Seg::Index(i), Value::Sequence(items)) => items.get_mut(*i)?,
                    _ => return None,
                },
                _ => return None,
            };
        }
        Some(node)
    }

    /// Takes the value at `path` out of its mapping or sequence; false if it is not there.
    fn remove(&mut self, path: &[Seg]) -> bool {
        let Some((last, parent_path)) = path.split_last() else {
            return false;
        };
        let original_parent = self.original(parent_path);
        let Some(parent) = self.node(parent_path) else {
            return false;
        };
        match (last, parent) {
            (Seg::Key(key), Value::Mapping(map)) => map.remove(key.as_str()).is_some(),
            (Seg::Index(i), Value::Sequence(items)) if *i < items.len() => {
                let len = items.len();
                items.remove(*i);
                let kept = self
                    .shifts
                    .entry(original_parent)
                    .or_insert_with(|| (0..len).collect());
                kept.remove(*i);
                true
            }
            _ => false,
        }
    }

    /// Reads the text at `path` as YAML (a number, a boolean, a list); false if it does not
    /// read as something other than text.
    fn retype(&mut self, path: &[Seg]) -> bool {
        let Some(node) = self.node(path) else {
            return false;
        };
        let Value::String(text) = node else {
            return false;
        };
        match serde_yaml::from_str::<Value>(text) {
            Ok(Value::String(_)) | Err(_) => false,
            Ok(value) => {
                *node = value;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Server {
        host: String,
        #[serde(default)]
        port: u16,
        #[serde(default)]
        tls: bool,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Section {
        #[serde(default)]
        name: String,
        servers: Vec<Server>,
        #[serde(default)]
        retries: u32,
    }

    #[test]
    fn every_problem_of_a_section_is_found_with_the_file_s_indices() {
        let value: Value = serde_yaml::from_str(
            "name: [x]\nservers:\n  - { host: a, port: high }\n  - { port: 1 }\n  - { host: c, tls: maybe, colour: red }\nretries: -1\n",
        )
        .unwrap();
        let (section, problems, kept) =
            typed::<Section>(value, &[Seg::Key("mail".into())], &Expanded::default());
        assert_eq!(
            kept.reindex("mail.servers[1].host: a later check"),
            "mail.servers[2].host: a later check"
        );
        let section = section.expect("what is left still makes a section");
        assert_eq!(
            section.servers.len(),
            2,
            "the server without a host is dropped"
        );
        assert_eq!(problems.len(), 6, "{problems:#?}");
        for start in [
            "mail.name: invalid type: sequence",
            "mail.servers[0].port: invalid type: string \"high\"",
            "mail.servers[1]: missing field `host`",
            "mail.servers[2].tls: invalid type: string \"maybe\"",
            "mail.servers[2].colour: unknown field `colour`",
            "mail.retries: invalid value: integer `-1`",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(start)),
                "{start} in {problems:#?}"
            );
        }
    }

    #[test]
    fn a_whole_reference_is_read_as_a_number_where_one_is_wanted_and_never_shown() {
        let env = |name: &str| match name {
            "PORT" => Some("2525".to_string()),
            "HOST" => Some("mail.example.com".to_string()),
            "TLS" => Some("perhaps-secret".to_string()),
            _ => None,
        };
        let doc = super::super::vars::parse(
            "servers: [{ host: \"${HOST}\", port: ${PORT} }, { host: x, tls: ${TLS} }]\n",
            env,
        )
        .unwrap();
        let (section, problems, _) = typed::<Section>(doc.value, &[], &doc.expanded);
        assert_eq!(section.unwrap().servers[0].port, 2525);
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(
            problems[0],
            "servers[1].tls: the value of ${TLS} (from the environment, not shown) does not fit here: expected a boolean"
        );
    }
}
