//! The metric catalog: `queries/<metric>/v<N>.sql`, one version per file, each opening with a
//! front matter of `-- key: value` comment lines (YAML, up to the first bare `--` line), and
//! `queries/versions.lock`, the content hashes of released versions. History stays
//! reproducible: a released version whose SQL changes without a new version number is a
//! `validate` error.
//!
//! ```sql
//! -- metric: evidence_rate
//! -- version: 1
//! -- owner: sales-ops
//! -- description: Share of evidence-required actions that carry evidence.
//! -- grain: team
//! -- period: week
//! -- threshold: { min: 0.85 }
//! -- advice: "{{ team or 'The organisation' }}: ..."
//! SELECT ...
//! ```
//!
//! A metric whose state carries over from one period to the next (the open opportunities) also
//! names the columns it carries, with their types: `-- carry: { opportunity_id: text, ... }`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use datafusion::arrow::datatypes::DataType;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::Threshold;
use crate::error::Error;
use crate::time::PeriodKind;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_queries.rs"));
}

/// The lock file, beside the metric folders.
pub const LOCK_FILE: &str = "versions.lock";

/// The front matter of a metric file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    pub metric: String,
    pub version: u32,
    pub owner: String,
    pub description: String,
    /// What one row is: `team` (one row per team plus the organisation's, team NULL), or e.g.
    /// `opportunity`, `store`, `owner`.
    pub grain: String,
    pub period: PeriodKind,
    /// The healthy range of `value`; `thresholds.<metric>` in config.yaml overrides it.
    #[serde(default)]
    pub threshold: Option<Threshold>,
    /// A minijinja template rendered for each breaching row, with the row's columns.
    #[serde(default)]
    pub advice: Option<String>,
    /// Metrics whose output this one reads as tables named after them.
    #[serde(default)]
    pub depends: Vec<String>,
    /// Columns of this metric's output that the next period starts from (see `carry.rs`): the
    /// previous period's rows are the table `<metric>_carried`, as of `$carried_as_of`.
    #[serde(default)]
    pub carry: BTreeMap<String, ColumnType>,
    /// Earlier periods whose stored outputs this metric reads (see [`LooksBack`]).
    #[serde(default)]
    pub looks_back: Option<LooksBack>,
}

/// `looks_back: { metrics: [process_health_index], periods: 12, after: 4 }`: a metric that
/// judges earlier periods by what followed them reads their **stored** outputs (computed at each
/// period's own end), never recomputing them at its own as_of. A run for period P gets the
/// `periods` periods that end `after` periods before P's end (their `after` periods have passed
/// by then) as the table `looked_back_periods` (period, period_start, period_end,
/// followed_until: the end of the `after` periods after it), and for each metric named, its
/// latest version's stored rows of those periods as `<metric>_history` (period, team, owner_id,
/// value; NULL where the metric has no such column). A period whose output is not stored, or
/// was not computed at its own end, has no rows there: a new version of a metric looked at has
/// no history until its earlier periods are stored (`flowhealth backfill`). Both numbers are at
/// least 1.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LooksBack {
    pub metrics: Vec<String>,
    pub periods: u32,
    pub after: u32,
}

/// The type of a carried column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Text,
    /// An instant (the lake's microsecond UTC timestamps).
    Timestamp,
    Float,
    Integer,
    Boolean,
    Date,
}

impl ColumnType {
    pub(crate) fn data_type(self) -> DataType {
        match self {
            ColumnType::Text => DataType::Utf8,
            ColumnType::Timestamp => crate::lake::schema::timestamp_type(),
            ColumnType::Float => DataType::Float64,
            ColumnType::Integer => DataType::Int64,
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Date => DataType::Date32,
        }
    }

    /// Whether an output column of type `data_type` is of this kind.
    pub(crate) fn accepts(self, data_type: &DataType) -> bool {
        match self {
            ColumnType::Text => matches!(
                data_type,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            ),
            ColumnType::Timestamp => matches!(data_type, DataType::Timestamp(_, Some(_))),
            ColumnType::Float => data_type.is_floating(),
            ColumnType::Integer => data_type.is_integer(),
            ColumnType::Boolean => *data_type == DataType::Boolean,
            ColumnType::Date => matches!(data_type, DataType::Date32 | DataType::Date64),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Metric {
    pub meta: Meta,
    pub path: PathBuf,
    /// The whole file, front matter included (DataFusion ignores the comments).
    pub sql: String,
    /// SHA-256 of the file, hex.
    pub hash: String,
}

impl Metric {
    pub fn name(&self) -> &str {
        &self.meta.metric
    }

    pub fn version(&self) -> u32 {
        self.meta.version
    }

    /// `name@N`.
    pub fn id(&self) -> String {
        format!("{}@{}", self.meta.metric, self.meta.version)
    }

    /// The healthy range: `thresholds.<metric>` in the config, else the front matter's.
    pub fn threshold(&self, config: &crate::config::Config) -> Option<crate::config::Threshold> {
        config
            .thresholds
            .get(self.name())
            .copied()
            .or(self.meta.threshold)
    }
}

#[derive(Debug, Default)]
pub struct Catalog {
    pub dir: PathBuf,
    /// Sorted by name, then version.
    pub metrics: Vec<Metric>,
    /// `name@N` -> hash of released versions.
    pub lock: BTreeMap<String, String>,
}

impl Catalog {
    /// Loads every `<metric>/v<N>.sql` under `dir`; problems are `file:line: message`.
    pub fn load(dir: &Path) -> Result<Catalog, Vec<String>> {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            // No catalog yet: nothing to check, and `metrics run` says where it looked.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Catalog {
                    dir: dir.to_path_buf(),
                    ..Catalog::default()
                });
            }
            Err(e) => {
                return Err(vec![format!(
                    "{}: cannot read the queries folder: {e}",
                    dir.display()
                )]);
            }
        };
        let mut folders: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            // `_tests/` and other `_` folders are not metrics.
            .filter(|p| {
                p.is_dir()
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('_'))
            })
            .collect();
        folders.sort();
        let mut sources = Vec::new();
        let mut problems = Vec::new();
        for folder in folders {
            let mut files: Vec<PathBuf> = std::fs::read_dir(&folder)
                .map(|entries| entries.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            files.sort();
            for path in files
                .into_iter()
                .filter(|p| p.extension().is_some_and(|e| e == "sql"))
            {
                match std::fs::read_to_string(&path) {
                    Ok(text) => sources.push((path, text)),
                    Err(e) => problems.push(format!("{}:1: cannot read: {e}", path.display())),
                }
            }
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = match std::fs::read_to_string(&lock_path) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                problems.push(format!("{}: cannot read: {e}", lock_path.display()));
                None
            }
        };
        Catalog::from_sources(dir, sources, lock.as_deref(), problems)
    }

    /// The catalog shipped inside the binary (the repository's `queries/` at build time), for
    /// the embedded default configuration when there is no `queries/` folder.
    pub fn embedded() -> Catalog {
        let dir = Path::new("<embedded queries>");
        let sources = embedded::FILES
            .iter()
            .filter(|(path, _)| path.ends_with(".sql"))
            .map(|(path, text)| (dir.join(path), text.to_string()))
            .collect();
        let lock = embedded::FILES
            .iter()
            .find(|(path, _)| *path == LOCK_FILE)
            .map(|(_, text)| *text);
        Catalog::from_sources(dir, sources, lock, Vec::new())
            .expect("the shipped catalog is checked by the tests")
    }

    /// The catalog of metric files (path, content) and the lock's text.
    fn from_sources(
        dir: &Path,
        sources: Vec<(PathBuf, String)>,
        lock: Option<&str>,
        mut problems: Vec<String>,
    ) -> Result<Catalog, Vec<String>> {
        let mut metrics = Vec::new();
        for (path, text) in sources {
            match parse_file(&path, text) {
                Ok(metric) => metrics.push(metric),
                Err(problem) => problems.push(problem),
            }
        }
        metrics.sort_by(|a, b| (a.name(), a.version()).cmp(&(b.name(), b.version())));
        for pair in metrics.windows(2) {
            if pair[0].id() == pair[1].id() {
                problems.push(format!(
                    "{}:1: version collision: {} is also {}",
                    pair[1].path.display(),
                    pair[1].id(),
                    pair[0].path.display()
                ));
            }
        }
        let lock =
            parse_lock(&dir.join(LOCK_FILE), lock.unwrap_or_default()).unwrap_or_else(|problem| {
                problems.push(problem);
                BTreeMap::new()
            });
        let catalog = Catalog {
            dir: dir.to_path_buf(),
            metrics,
            lock,
        };
        problems.extend(catalog.check());
        if problems.is_empty() {
            Ok(catalog)
        } else {
            Err(problems)
        }
    }

    /// Dependencies that exist, and released versions that did not change.
    fn check(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for metric in &self.metrics {
            let looked_at = metric.meta.looks_back.iter().flat_map(|l| &l.metrics);
            for dependency in metric.meta.depends.iter().chain(looked_at) {
                if self.latest(dependency).is_none() {
                    problems.push(format!(
                        "{}:1: depends on `{dependency}`, which is not in {}",
                        metric.path.display(),
                        self.dir.display()
                    ));
                }
            }
            // `periods: 0` would still look at one period, and `after: 0` at the run's own
            // period, whose output the same run may be writing.
            if let Some(looks_back) = &metric.meta.looks_back
                && (looks_back.periods == 0 || looks_back.after == 0)
            {
                problems.push(format!(
                    "{}:1: looks_back needs periods >= 1 and after >= 1 (periods: {}, after: {})",
                    metric.path.display(),
                    looks_back.periods,
                    looks_back.after
                ));
            }
            if let Some(locked) = self.lock.get(&metric.id())
                && *locked != metric.hash
            {
                problems.push(format!(
                    "{}:1: {} was released with different SQL (versions.lock): released versions \
                     stay as they are; copy it to v{}.sql and change that",
                    metric.path.display(),
                    metric.id(),
                    self.next_version(metric.name())
                ));
            }
        }
        for id in self.lock.keys() {
            if !self.metrics.iter().any(|m| m.id() == *id) {
                problems.push(format!(
                    "{}: {id} is released but its file is gone; restore it (history must stay reproducible)",
                    self.dir.join(LOCK_FILE).display()
                ));
            }
        }
        problems
    }

    /// The highest version of `name`.
    pub fn latest(&self, name: &str) -> Option<&Metric> {
        self.metrics.iter().rfind(|m| m.name() == name)
    }

    fn next_version(&self, name: &str) -> u32 {
        self.latest(name).map_or(1, |m| m.version() + 1)
    }

    /// `name` (the latest version) or `name@N`; anything else is a usage error listing the
    /// metrics there are.
    pub fn resolve(&self, spec: &str) -> crate::error::Result<&Metric> {
        let (name, version) = match spec.split_once('@') {
            Some((name, version)) => {
                let version: u32 = version.parse().map_err(|_| {
                    Error::Usage(format!("`{spec}`: the version after @ must be a number"))
                })?;
                (name, Some(version))
            }
            None => (spec, None),
        };
        let found = match version {
            Some(version) => self
                .metrics
                .iter()
                .find(|m| m.name() == name && m.version() == version),
            None => self.latest(name),
        };
        found.ok_or_else(|| {
            let versions: Vec<String> = self
                .metrics
                .iter()
                .filter(|m| m.name() == name)
                .map(|m| m.version().to_string())
                .collect();
            if !versions.is_empty() {
                return Error::Usage(format!(
                    "`{name}` has no version {} in {} (versions: {}; `{name}` alone is the latest)",
                    version.unwrap_or_default(),
                    self.dir.display(),
                    versions.join(", ")
                ));
            }
            let names: Vec<String> = self.names().map(String::from).collect();
            Error::Usage(format!(
                "no metric `{spec}` in {} (metrics: {})",
                self.dir.display(),
                names.join(", ")
            ))
        })
    }

    /// Distinct metric names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        let mut names: Vec<&str> = self.metrics.iter().map(Metric::name).collect();
        names.dedup();
        names.into_iter()
    }

    /// Whether `metric`'s version is released (in the lock).
    pub fn released(&self, metric: &Metric) -> bool {
        self.lock.contains_key(&metric.id())
    }

    /// Adds every unreleased version to the lock file; returns their ids.
    pub fn release_all(&mut self) -> std::io::Result<Vec<String>> {
        let new: Vec<(String, String)> = self
            .metrics
            .iter()
            .filter(|m| !self.lock.contains_key(&m.id()))
            .map(|m| (m.id(), m.hash.clone()))
            .collect();
        self.lock.extend(new.iter().cloned());
        let mut text = String::from(
            "# Released metric versions and the SHA-256 of their files. Written by\n\
             # `flowhealth metrics release`; a released file must not change: add a new version.\n",
        );
        for (id, hash) in &self.lock {
            text.push_str(&format!("{id} {hash}\n"));
        }
        std::fs::write(self.dir.join(LOCK_FILE), text)?;
        Ok(new.into_iter().map(|(id, _)| id).collect())
    }
}

fn parse_lock(path: &Path, text: &str) -> Result<BTreeMap<String, String>, String> {
    let mut lock = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once(' ') {
            Some((id, hash)) if id.contains('@') && hash.len() == 64 => {
                lock.insert(id.to_string(), hash.to_string());
            }
            _ => {
                return Err(format!(
                    "{}:{}: expected `metric@N <sha256>`",
                    path.display(),
                    i + 1
                ));
            }
        }
    }
    Ok(lock)
}

/// One metric file: its front matter, checked against its path.
fn parse_file(path: &Path, sql: String) -> Result<Metric, String> {
    let at = |line: usize, message: String| format!("{}:{line}: {message}", path.display());
    let front: Vec<&str> = sql
        .lines()
        .take_while(|line| line.starts_with("--") && line.trim_end() != "--")
        .map(|line| {
            let text = &line[2..];
            text.strip_prefix(' ').unwrap_or(text)
        })
        .collect();
    if front.is_empty() {
        return Err(at(
            1,
            "no front matter: start the file with `-- metric: <name>`, `-- version: <N>` ... comment lines".into(),
        ));
    }
    let meta: Meta = serde_yaml::from_str(&front.join("\n")).map_err(|e| {
        let line = e.location().map_or(1, |l| l.line());
        let message = e.to_string();
        // serde_yaml ends with ` at line N column M`: the line is already in front.
        let message = message.split(" at line ").next().unwrap_or(&message);
        at(line, format!("front matter: {message}"))
    })?;
    let folder = path
        .parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if meta.metric != folder {
        return Err(at(
            1,
            format!(
                "metric `{}` is in folder `{folder}`: they must match",
                meta.metric
            ),
        ));
    }
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if stem != format!("v{}", meta.version) {
        return Err(at(
            2,
            format!(
                "version {} is in file {stem}.sql: name it v{}.sql",
                meta.version, meta.version
            ),
        ));
    }
    if sql.lines().skip(front.len()).all(|l| l.trim().is_empty()) {
        return Err(at(front.len() + 1, "no SQL after the front matter".into()));
    }
    let hash: String = Sha256::digest(sql.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    Ok(Metric {
        meta,
        path: path.to_path_buf(),
        sql,
        hash,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_catalog_is_embedded_whole_and_released() {
        let catalog = Catalog::embedded();
        // The contract's thirteen, templated_notes, commitments and owner_health_index.
        assert_eq!(catalog.names().count(), 16);
        assert!(catalog.metrics.iter().all(|m| catalog.released(m)));
        let on_disk =
            Catalog::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("queries")).unwrap();
        let hashes = |c: &Catalog| {
            c.metrics
                .iter()
                .map(|m| (m.id(), m.hash.clone()))
                .collect::<Vec<_>>()
        };
        assert_eq!(hashes(&catalog), hashes(&on_disk));
    }
}
