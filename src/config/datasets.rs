//! `datasets:`: how each input dataset's files are read (encoding, delimiter, sheet), mapped onto
//! the canonical columns (column names, fallback lists, derived ids, constants, value codes),
//! and typed (null tokens, decimal mark, timestamp formats, timezone, plausible years); the
//! `sources` of a dataset (file globs with their own settings); and the stage history derived
//! from opportunity snapshots. `check` holds the rules serde cannot see.

use std::collections::BTreeMap;

use chrono::format::{Item, StrftimeItems};
use chrono_tz::Tz;
use serde::{Deserialize, Deserializer};

use super::StageConfig;
use crate::lake::schema::Dataset;

/// How each input dataset's files are read and mapped onto the canonical columns.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetsConfig {
    #[serde(default)]
    pub actions: DatasetConfig,
    #[serde(default)]
    pub stage_changes: DatasetConfig,
    #[serde(default)]
    pub opportunities: DatasetConfig,
}

impl DatasetsConfig {
    pub fn get(&self, dataset: &str) -> Option<&DatasetConfig> {
        match dataset {
            "actions" => Some(&self.actions),
            "stage_changes" => Some(&self.stage_changes),
            "opportunities" => Some(&self.opportunities),
            _ => None,
        }
    }
}

/// The settings of one dataset's files (and the defaults of its `sources`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetConfig {
    /// Canonical column -> where its value comes from: a source column header, a list of them
    /// (the first one with a value), or `{ hash_of: [...] }` (a stable id derived from those
    /// columns). A canonical column without an entry is looked up under its own name; header
    /// matching ignores case and surrounding spaces.
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnRule>,
    /// Canonical column -> source value -> canonical value, for exports whose codes differ
    /// (e.g. `status: { Engaging: open, Won: won }`). Values not listed pass through unchanged.
    #[serde(default)]
    pub values: BTreeMap<String, BTreeMap<String, String>>,
    /// Canonical column -> a value every row of these files gets (`action_type: task` for a
    /// task export, `store_id: S001` for a store system's one-store file).
    #[serde(default)]
    pub constants: BTreeMap<String, String>,
    /// Values that mean "empty" besides the empty string, compared after trimming (e.g. `null`,
    /// `NULL`, `N/A`, `-`; quote `"null"` and `"NULL"`, which YAML otherwise reads as no value).
    /// None by default.
    #[serde(default, deserialize_with = "null_values")]
    pub null_values: Vec<String>,
    /// The decimal mark of `amount`: `.` (default; `,` and spaces group thousands) or `,`
    /// (European exports, `1.054,00`; `.` and spaces group thousands).
    #[serde(default = "default_decimal_mark")]
    pub decimal_mark: char,
    /// chrono `strftime` patterns tried, in order, for timestamps that are not ISO 8601
    /// (e.g. `"%m/%d/%Y %H:%M"`), and the named formats `epoch_seconds` and `epoch_millis`.
    /// ISO 8601 is always accepted. `%a`/`%A` also read Chinese weekdays (`星期五`, `周五`).
    #[serde(default)]
    pub timestamp_formats: Vec<String>,
    /// IANA timezone of timestamps written without an offset; the top-level `timezone` when absent.
    #[serde(default, deserialize_with = "timezone")]
    pub timezone: Option<Tz>,
    /// Years a timestamp may fall in (both included); a value outside is quarantined, never
    /// landed in an absurd `dt=` partition. Default 1970 to 2200.
    #[serde(default = "default_timestamp_years")]
    pub timestamp_years: [i32; 2],
    /// Text encoding of CSV and JSON files: `auto` (a byte order mark, else UTF-8 when the bytes
    /// are UTF-8, else what the detector finds) or any WHATWG label `encoding_rs` knows (`utf-8`,
    /// `gbk`, `gb18030`, `big5`, `shift_jis`, `windows-1252`, `iso-8859-1`, `utf-16le`, ...).
    #[serde(default)]
    pub encoding: EncodingSetting,
    /// CSV field delimiter (one ASCII character); when absent, tab for `.tsv` files, else sniffed
    /// from the header line among `,` tab `;` `|`.
    #[serde(default)]
    pub delimiter: Option<char>,
    /// XLSX sheet to read; the first sheet when absent.
    #[serde(default)]
    pub sheet: Option<String>,
    /// Files of this dataset that need other settings, by name: each source's `files` glob picks
    /// its files, and what it sets replaces the dataset's setting (`columns`, `values` and
    /// `constants` column by column). Files no source claims use the dataset's settings.
    #[serde(default)]
    pub sources: BTreeMap<String, SourceConfig>,
    /// `opportunities` only: derive `stage_changes` from successive snapshots.
    #[serde(default)]
    pub stage_history: Option<StageHistoryConfig>,
}

impl Default for DatasetConfig {
    fn default() -> Self {
        DatasetConfig {
            columns: BTreeMap::new(),
            values: BTreeMap::new(),
            constants: BTreeMap::new(),
            null_values: Vec::new(),
            decimal_mark: default_decimal_mark(),
            timestamp_formats: Vec::new(),
            timezone: None,
            timestamp_years: default_timestamp_years(),
            encoding: EncodingSetting::default(),
            delimiter: None,
            sheet: None,
            sources: BTreeMap::new(),
            stage_history: None,
        }
    }
}

const fn default_decimal_mark() -> char {
    '.'
}

const fn default_timestamp_years() -> [i32; 2] {
    [1970, 2200]
}

/// One source of a dataset: the files its glob matches, and the settings they need. Anything not
/// set here is the dataset's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// A glob over file names relative to `inbox/<dataset>/` (`Task*.csv`, `stores/*.xlsx`),
    /// matched ignoring case. `*` does not cross a `/`; `**` does.
    pub files: String,
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnRule>,
    #[serde(default)]
    pub values: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(default)]
    pub constants: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "some_null_values")]
    pub null_values: Option<Vec<String>>,
    #[serde(default)]
    pub decimal_mark: Option<char>,
    #[serde(default)]
    pub timestamp_formats: Option<Vec<String>>,
    #[serde(default, deserialize_with = "timezone")]
    pub timezone: Option<Tz>,
    #[serde(default)]
    pub timestamp_years: Option<[i32; 2]>,
    #[serde(default)]
    pub encoding: Option<EncodingSetting>,
    #[serde(default)]
    pub delimiter: Option<char>,
    #[serde(default)]
    pub sheet: Option<String>,
}

/// Where a canonical column's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnRule {
    /// A source column: `owner_id: Sales Agent`.
    Name(String),
    /// The first of these source columns that has a value:
    /// `occurred_at: [Completed Date, Created Date]`.
    FirstOf(Vec<String>),
    /// A stable id: XXH3-128 (32 hex digits) of these columns' trimmed text joined by U+001F:
    /// `action_id: { hash_of: [card_no, sold_at, sku] }`.
    HashOf(Vec<String>),
}

impl ColumnRule {
    /// The source columns it reads.
    pub fn names(&self) -> &[String] {
        match self {
            ColumnRule::Name(name) => std::slice::from_ref(name),
            ColumnRule::FirstOf(names) | ColumnRule::HashOf(names) => names,
        }
    }
}

impl<'de> Deserialize<'de> for ColumnRule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Hash {
            hash_of: Vec<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Shape {
            Name(String),
            List(Vec<String>),
            Hash(Hash),
        }
        match Shape::deserialize(deserializer) {
            Ok(Shape::Name(name)) => Ok(ColumnRule::Name(name)),
            Ok(Shape::List(names)) => Ok(ColumnRule::FirstOf(names)),
            Ok(Shape::Hash(hash)) => Ok(ColumnRule::HashOf(hash.hash_of)),
            Err(_) => Err(serde::de::Error::custom(
                "expected a source column name, a list of them (the first with a value), or \
                 { hash_of: [column, ...] }",
            )),
        }
    }
}

/// Stage history derived from opportunity snapshots: when an opportunity's stage differs from
/// the one it last had, a stage change lands in `stage_changes` (from the last stage, to this one,
/// at `changed_at`, by the snapshot's owner), with the snapshot's file and line as its source.
/// An opportunity's first snapshot creates it in its stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageHistoryConfig {
    /// The source column (or list) with the opportunity's current stage.
    pub stage: ColumnRule,
    /// Source stage -> configured stage (e.g. `{ Prospecting: lead, Engaging: qualified }`);
    /// values not listed must be configured stages as written.
    #[serde(default)]
    pub values: BTreeMap<String, String>,
    /// The source column (or list) of when the stage was entered; when absent or empty, the
    /// snapshot's ingest time.
    #[serde(default)]
    pub changed_at: Option<ColumnRule>,
}

/// `encoding:` of a dataset or source: `auto`, or an encoding named by a WHATWG label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EncodingSetting {
    /// Decided per file from its bytes (see `ingest::decode`).
    #[default]
    Auto,
    /// Every file is in this encoding (a byte order mark still wins).
    Declared(&'static encoding_rs::Encoding),
}

impl<'de> Deserialize<'de> for EncodingSetting {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let label = String::deserialize(deserializer)?;
        if label.trim().eq_ignore_ascii_case("auto") {
            return Ok(EncodingSetting::Auto);
        }
        encoding_rs::Encoding::for_label(label.trim().as_bytes())
            .map(EncodingSetting::Declared)
            .ok_or_else(|| {
                serde::de::Error::custom(format!(
                    "unknown encoding label `{label}`: use auto, or a WHATWG label such as utf-8, \
                     gbk, gb18030, big5, shift_jis, euc-kr, windows-1252, iso-8859-1, utf-16le"
                ))
            })
    }
}

fn timezone<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Tz>, D::Error> {
    let name = String::deserialize(deserializer)?;
    name.parse::<Tz>().map(Some).map_err(|_| {
        serde::de::Error::custom(format!(
            "`{name}` is not an IANA timezone (e.g. UTC, Asia/Shanghai, America/New_York)"
        ))
    })
}

/// A list of null tokens, where an unquoted `null` (which YAML reads as no value) is an error
/// that says to quote it.
fn null_values<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let tokens = Vec::<Option<String>>::deserialize(deserializer)?;
    tokens
        .into_iter()
        .map(|token| {
            token.ok_or_else(|| {
                serde::de::Error::custom(
                    "YAML reads an unquoted null, NULL or ~ as no value: write the token in quotes, \
                     e.g. null_values: [\"null\", \"NULL\", N/A]",
                )
            })
        })
        .collect()
}

fn some_null_values<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<String>>, D::Error> {
    null_values(deserializer).map(Some)
}

/// The named timestamp formats (besides strftime patterns).
pub const NAMED_FORMATS: [&str; 2] = ["epoch_seconds", "epoch_millis"];

/// The problems of `datasets:` that serde cannot see, as (key, message).
pub fn check(datasets: &DatasetsConfig, stages: &[StageConfig]) -> Vec<(String, String)> {
    let mut problems = Vec::new();
    for dataset in Dataset::ALL {
        let Some(spec) = datasets.get(dataset.name()) else {
            continue;
        };
        let key = format!("datasets.{}", dataset.name());
        check_settings(
            &mut problems,
            dataset,
            &key,
            Settings {
                columns: &spec.columns,
                values: &spec.values,
                constants: &spec.constants,
                decimal_mark: Some(spec.decimal_mark),
                timestamp_formats: Some(&spec.timestamp_formats),
                timestamp_years: Some(spec.timestamp_years),
                delimiter: spec.delimiter,
            },
        );
        for (name, source) in &spec.sources {
            let key = format!("{key}.sources.{name}");
            check_glob(&mut problems, dataset, &key, &source.files);
            check_settings(
                &mut problems,
                dataset,
                &key,
                Settings {
                    columns: &source.columns,
                    values: &source.values,
                    constants: &source.constants,
                    decimal_mark: source.decimal_mark,
                    timestamp_formats: source.timestamp_formats.as_deref(),
                    timestamp_years: source.timestamp_years,
                    delimiter: source.delimiter,
                },
            );
            // A constant in the source and a column in the dataset (or the reverse) is fine: the
            // source's setting replaces the dataset's for that column.
        }
        if let Some(history) = &spec.stage_history {
            let key = format!("{key}.stage_history");
            if dataset != Dataset::Opportunities {
                problems.push((
                    key.clone(),
                    "only `opportunities` snapshots can derive a stage history".into(),
                ));
            }
            if matches!(history.stage, ColumnRule::HashOf(_)) {
                problems.push((
                    format!("{key}.stage"),
                    "a stage is read from a column, not hashed".into(),
                ));
            }
            if matches!(history.changed_at, Some(ColumnRule::HashOf(_))) {
                problems.push((
                    format!("{key}.changed_at"),
                    "a time is read from a column, not hashed".into(),
                ));
            }
            for (from, to) in &history.values {
                if !stages.iter().any(|s| s.name == *to) {
                    problems.push((
                        format!("{key}.values.{from}"),
                        format!(
                            "`{to}` is not a configured stage (stages: {})",
                            stage_names(stages)
                        ),
                    ));
                }
            }
        }
    }
    problems
}

fn stage_names(stages: &[StageConfig]) -> String {
    stages
        .iter()
        .map(|s| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// What a dataset and a source both set.
struct Settings<'a> {
    columns: &'a BTreeMap<String, ColumnRule>,
    values: &'a BTreeMap<String, BTreeMap<String, String>>,
    constants: &'a BTreeMap<String, String>,
    decimal_mark: Option<char>,
    timestamp_formats: Option<&'a [String]>,
    timestamp_years: Option<[i32; 2]>,
    delimiter: Option<char>,
}

fn check_settings(
    problems: &mut Vec<(String, String)>,
    dataset: Dataset,
    key: &str,
    settings: Settings<'_>,
) {
    let expected = || {
        dataset
            .columns()
            .iter()
            .map(|c| c.name)
            .collect::<Vec<_>>()
            .join(", ")
    };
    for (section, names) in [
        ("columns", settings.columns.keys().collect::<Vec<_>>()),
        ("values", settings.values.keys().collect()),
        ("constants", settings.constants.keys().collect()),
    ] {
        for column in names {
            if dataset.column(column).is_none() {
                problems.push((
                    format!("{key}.{section}.{column}"),
                    format!(
                        "not a column of {} (expected one of {})",
                        dataset.name(),
                        expected()
                    ),
                ));
            }
        }
    }
    for column in settings.constants.keys() {
        if settings.columns.contains_key(column) {
            problems.push((
                format!("{key}.constants.{column}"),
                format!(
                    "{column} is also in {key}.columns: give it a column or a constant, not both"
                ),
            ));
        }
    }
    for (column, rule) in settings.columns {
        if rule.names().is_empty() || rule.names().iter().any(|n| n.trim().is_empty()) {
            problems.push((
                format!("{key}.columns.{column}"),
                "name at least one source column, none of them empty".into(),
            ));
        }
    }
    if let Some(mark) = settings.decimal_mark
        && mark != '.'
        && mark != ','
    {
        problems.push((
            format!("{key}.decimal_mark"),
            format!("`{mark}` is not a decimal mark: use \".\" or \",\""),
        ));
    }
    for (i, format) in settings
        .timestamp_formats
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if !NAMED_FORMATS.contains(&format.as_str())
            && StrftimeItems::new(format).any(|item| matches!(item, Item::Error))
        {
            problems.push((
                format!("{key}.timestamp_formats[{i}]"),
                format!(
                    "`{format}` is not a valid strftime pattern (or one of {})",
                    NAMED_FORMATS.join(", ")
                ),
            ));
        }
    }
    if let Some([from, to]) = settings.timestamp_years
        && from > to
    {
        problems.push((
            format!("{key}.timestamp_years"),
            format!("[{from}, {to}]: the first year is after the last"),
        ));
    }
    if let Some(delimiter) = settings.delimiter
        && (!delimiter.is_ascii() || matches!(delimiter, '"' | '\n' | '\r'))
    {
        problems.push((
            format!("{key}.delimiter"),
            format!("`{delimiter}` cannot be a CSV delimiter: use one ASCII character"),
        ));
    }
}

/// A source glob must parse, and be relative to the dataset's own folder: one that climbs out
/// of it or names another dataset's folder matches no file of this dataset.
fn check_glob(problems: &mut Vec<(String, String)>, dataset: Dataset, key: &str, glob: &str) {
    let key = format!("{key}.files");
    if let Err(e) = glob::Pattern::new(glob) {
        problems.push((key, format!("`{glob}` is not a glob: {e}")));
        return;
    }
    let first = glob.split('/').next().unwrap_or_default();
    let message = if glob.starts_with('/') || first == ".." {
        Some("globs are relative to the dataset's inbox folder".to_string())
    } else {
        Dataset::ALL
            .into_iter()
            .find(|d| d.name().eq_ignore_ascii_case(first) && glob.contains('/'))
            .map(|other| {
                if other == dataset {
                    format!(
                        "globs are relative to inbox/{}/ already: leave out `{first}/`",
                        dataset.name()
                    )
                } else {
                    format!(
                        "it names the folder of dataset `{}`: move this source to datasets.{}.sources",
                        other.name(),
                        other.name()
                    )
                }
            })
    };
    if let Some(message) = message {
        problems.push((
            key,
            format!(
                "`{glob}` matches no file of inbox/{}/: {message}",
                dataset.name()
            ),
        ));
    }
}

/// The name of the source of `dataset` whose glob matches `name` (a path relative to the
/// dataset's inbox folder), `None` when no source claims it. `Err` names every source that does
/// when more than one claims it.
pub fn source_of<'a>(spec: &'a DatasetConfig, name: &str) -> Result<Option<&'a str>, Vec<&'a str>> {
    let options = glob::MatchOptions {
        case_sensitive: false,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let claims: Vec<&str> = spec
        .sources
        .iter()
        .filter(|(_, source)| {
            glob::Pattern::new(&source.files).is_ok_and(|p| p.matches_with(name, options))
        })
        .map(|(name, _)| name.as_str())
        .collect();
    match claims.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one)),
        _ => Err(claims),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<DatasetConfig, String> {
        serde_yaml::from_str(yaml).map_err(|e| e.to_string())
    }

    #[test]
    fn column_rules_take_three_shapes() {
        let spec = parse(
            "columns:\n  owner_id: Sales Agent\n  recorded_at: [Completed Date, Created Date]\n  action_id: { hash_of: [card_no, sold_at, sku] }\n",
        )
        .unwrap();
        assert_eq!(
            spec.columns["owner_id"],
            ColumnRule::Name("Sales Agent".into())
        );
        assert_eq!(
            spec.columns["recorded_at"],
            ColumnRule::FirstOf(vec!["Completed Date".into(), "Created Date".into()])
        );
        assert_eq!(
            spec.columns["action_id"],
            ColumnRule::HashOf(vec!["card_no".into(), "sold_at".into(), "sku".into()])
        );
        let err = parse("columns: { action_id: { hash: [a] } }").unwrap_err();
        assert!(err.contains("hash_of"), "{err}");
        let err = parse("encoding: klingon").unwrap_err();
        assert!(err.contains("unknown encoding label `klingon`"), "{err}");
        let err = parse("null_values: [null, N/A]").unwrap_err();
        assert!(err.contains("write the token in quotes"), "{err}");
        assert_eq!(
            parse("null_values: [\"null\", N/A]").unwrap().null_values,
            ["null", "N/A"]
        );
        let err = parse("timezone: Mars/Olympus").unwrap_err();
        assert!(err.contains("not an IANA timezone"), "{err}");
    }

    #[test]
    fn impossible_settings_are_reported_with_their_keys() {
        let datasets = DatasetsConfig {
            actions: parse(
            "constants: { action_kind: task }\nsources:\n  tasks: { files: 'opportunities/*.csv', constants: { action_type: task }, columns: { action_type: Type } }\n  events: { files: '../x.csv', decimal_mark: ';' }\nstage_history: { stage: Stage }\n",
            )
            .unwrap(),
            ..DatasetsConfig::default()
        };
        let problems = check(&datasets, &[]);
        let keys: Vec<&str> = problems.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "datasets.actions.constants.action_kind",
                "datasets.actions.sources.events.files",
                "datasets.actions.sources.events.decimal_mark",
                "datasets.actions.sources.tasks.files",
                "datasets.actions.sources.tasks.constants.action_type",
                "datasets.actions.stage_history",
            ],
            "{problems:#?}"
        );
        assert!(
            problems[3]
                .1
                .contains("move this source to datasets.opportunities.sources")
        );
    }

    #[test]
    fn a_file_claimed_by_two_sources_is_named_with_both() {
        let spec = parse(
            "sources:\n  tasks: { files: 'Task*.csv' }\n  all: { files: '*.csv' }\n  stores: { files: 'stores/*.xlsx' }\n",
        )
        .unwrap();
        assert_eq!(source_of(&spec, "Event.csv"), Ok(Some("all")));
        assert_eq!(source_of(&spec, "task-2026.CSV"), Err(vec!["all", "tasks"]));
        assert_eq!(source_of(&spec, "stores/s1.xlsx"), Ok(Some("stores")));
        assert_eq!(source_of(&spec, "other/s1.xlsx"), Ok(None));
    }
}
