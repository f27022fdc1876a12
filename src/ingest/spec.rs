//! The settings one inbox file is read with: its dataset's (`datasets.<name>` in config.yaml),
//! overlaid by those of the source whose `files` glob matches it, resolved into what the readers
//! and the validator use.

use std::collections::BTreeMap;

use chrono_tz::Tz;

use crate::config::{ColumnRule, Config, DatasetConfig, EncodingSetting};
use crate::lake::schema::Dataset;

/// Where a wanted column's value comes from (see [`super::columns::Pick`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// The first of these source columns that has a value; the column's own name when the list
    /// is empty or none of them is in the file.
    Names(Vec<String>),
    /// A stable id: the hash of these source columns.
    HashOf(Vec<String>),
    Constant(String),
}

impl From<&ColumnRule> for Rule {
    fn from(rule: &ColumnRule) -> Rule {
        match rule {
            ColumnRule::Name(name) => Rule::Names(vec![name.clone()]),
            ColumnRule::FirstOf(names) => Rule::Names(names.clone()),
            ColumnRule::HashOf(names) => Rule::HashOf(names.clone()),
        }
    }
}

/// A column the readers deliver: a canonical column of the dataset, or an extra one.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub name: String,
    /// A file without it is rejected.
    pub required: bool,
    pub rule: Rule,
}

/// Stage history derived from snapshots: where its extra columns are in [`FileSpec::wanted`].
#[derive(Debug, Clone)]
pub struct HistorySpec {
    pub stage: usize,
    pub changed_at: Option<usize>,
    /// Source stage -> configured stage.
    pub values: BTreeMap<String, String>,
}

/// How one file is read.
#[derive(Debug, Clone)]
pub struct FileSpec {
    pub dataset: Dataset,
    /// The config key the settings come from, for messages (`datasets.actions`, or
    /// `datasets.actions.sources.tasks` for a file a source claims).
    pub key: String,
    /// The dataset's canonical columns, in order, then any extra columns (stage history).
    pub wanted: Vec<Wanted>,
    /// Canonical column -> source value -> canonical value.
    pub values: BTreeMap<String, BTreeMap<String, String>>,
    /// Values read as empty besides the empty string (after trimming), e.g. `NULL`, `N/A`.
    pub null_values: Vec<String>,
    /// `.` or `,`.
    pub decimal_mark: char,
    pub timestamp_formats: Vec<String>,
    /// For naive timestamps; the configured timezone when `None`.
    pub timezone: Option<Tz>,
    /// Plausible years of a timestamp, both included.
    pub timestamp_years: [i32; 2],
    pub encoding: EncodingSetting,
    /// The CSV delimiter when configured; otherwise tab for `.tsv`, else sniffed.
    pub delimiter: Option<u8>,
    pub sheet: Option<String>,
    pub history: Option<HistorySpec>,
}

impl FileSpec {
    /// Canonical column names and default settings.
    #[cfg(test)]
    pub fn plain(dataset: Dataset) -> FileSpec {
        FileSpec::resolve(dataset, &DatasetConfig::default(), None)
    }

    /// The settings for a file of `dataset` named `name` (relative to the inbox root, e.g.
    /// `actions/Task.csv`). A file two sources claim is an error naming them.
    pub fn new(config: &Config, dataset: Dataset, name: &str) -> Result<FileSpec, String> {
        let spec = config
            .datasets
            .get(dataset.name())
            .cloned()
            .unwrap_or_default();
        let relative = name
            .strip_prefix(dataset.name())
            .and_then(|rest| rest.strip_prefix('/'))
            .unwrap_or(name);
        match crate::config::datasets::source_of(&spec, relative) {
            Ok(source) => Ok(FileSpec::resolve(dataset, &spec, source)),
            Err(claims) => Err(format!(
                "sources {} of datasets.{} all match this file: narrow their `files` globs so that one does",
                claims.join(" and "),
                dataset.name()
            )),
        }
    }

    fn resolve(dataset: Dataset, spec: &DatasetConfig, source: Option<&str>) -> FileSpec {
        let own = source.and_then(|name| spec.sources.get(name));
        let rule = |column: &str| -> Rule {
            if let Some(source) = own {
                if let Some(value) = source.constants.get(column) {
                    return Rule::Constant(value.clone());
                }
                if let Some(rule) = source.columns.get(column) {
                    return rule.into();
                }
            }
            if let Some(value) = spec.constants.get(column) {
                return Rule::Constant(value.clone());
            }
            spec.columns
                .get(column)
                .map_or(Rule::Names(Vec::new()), Rule::from)
        };
        let mut wanted: Vec<Wanted> = dataset
            .columns()
            .iter()
            .map(|column| Wanted {
                name: column.name.to_string(),
                required: column.required,
                rule: rule(column.name),
            })
            .collect();
        let history = spec.stage_history.as_ref().map(|history| {
            let stage = wanted.len();
            wanted.push(Wanted {
                name: "stage_history.stage".into(),
                required: true,
                rule: (&history.stage).into(),
            });
            let changed_at = history.changed_at.as_ref().map(|rule| {
                wanted.push(Wanted {
                    name: "stage_history.changed_at".into(),
                    required: true,
                    rule: rule.into(),
                });
                wanted.len() - 1
            });
            HistorySpec {
                stage,
                changed_at,
                values: history.values.clone(),
            }
        });
        let mut values = spec.values.clone();
        if let Some(source) = own {
            values.extend(source.values.clone());
        }
        FileSpec {
            dataset,
            key: match source {
                Some(name) => format!("datasets.{}.sources.{name}", dataset.name()),
                None => format!("datasets.{}", dataset.name()),
            },
            wanted,
            values,
            null_values: own
                .and_then(|s| s.null_values.clone())
                .unwrap_or_else(|| spec.null_values.clone()),
            decimal_mark: own
                .and_then(|s| s.decimal_mark)
                .unwrap_or(spec.decimal_mark),
            timestamp_formats: own
                .and_then(|s| s.timestamp_formats.clone())
                .unwrap_or_else(|| spec.timestamp_formats.clone()),
            timezone: own.and_then(|s| s.timezone).or(spec.timezone),
            timestamp_years: own
                .and_then(|s| s.timestamp_years)
                .unwrap_or(spec.timestamp_years),
            encoding: own.and_then(|s| s.encoding).unwrap_or(spec.encoding),
            delimiter: own
                .and_then(|s| s.delimiter)
                .or(spec.delimiter)
                .map(|d| d as u8),
            sheet: own
                .and_then(|s| s.sheet.clone())
                .or_else(|| spec.sheet.clone()),
            history,
        }
    }

    /// The delimiter of a CSV file named `name` whose text starts with `prefix`.
    pub fn delimiter_for(&self, name: &str, prefix: &str) -> u8 {
        match self.delimiter {
            Some(delimiter) => delimiter,
            None if name.to_ascii_lowercase().ends_with(".tsv") => b'\t',
            None => super::decode::sniff_delimiter(prefix),
        }
    }
}
