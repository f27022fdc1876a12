//! One record's canonical cells -> typed values, or the reason it goes to quarantine.
//!
//! Timestamps are read by [`crate::time::parse::parse_timestamp`] (ISO 8601, then the dataset's
//! `timestamp_formats`), naive ones in the configured timezone.

use std::borrow::Cow;
use std::collections::HashSet;

use chrono::NaiveDate;

use super::reader::Cell;
use crate::config::Config;
use crate::lake::schema::{ColumnType, DECIMAL_PRECISION, DECIMAL_SCALE, Dataset, Domain};
use crate::time::Zone;
use crate::time::parse::parse_timestamp;

/// A validated value, ready for an Arrow builder.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Null,
    Text(Cow<'a, str>),
    /// UTC microseconds since the epoch.
    Timestamp(i64),
    /// Scaled by `DECIMAL_SCALE`.
    Decimal(i128),
    Int(i64),
}

pub struct Validator {
    dataset: Dataset,
    zone: Zone,
    formats: Vec<String>,
    stages: HashSet<String>,
    stage_list: String,
    /// Per canonical column, source value -> canonical value.
    values: Vec<Option<std::collections::BTreeMap<String, String>>>,
    recorded_at: Option<(usize, usize)>,
}

impl Validator {
    pub fn new(config: &Config, dataset: Dataset) -> Validator {
        let spec = config
            .datasets
            .get(dataset.name())
            .cloned()
            .unwrap_or_default();
        let recorded_at = match dataset {
            Dataset::Actions => dataset
                .column_index("recorded_at")
                .zip(dataset.column_index("occurred_at")),
            _ => None,
        };
        let values = dataset
            .columns()
            .iter()
            .map(|c| spec.values.get(c.name).cloned())
            .collect();
        Validator {
            values,
            dataset,
            zone: Zone::new(config.timezone),
            formats: spec.timestamp_formats,
            stages: config.stages.iter().map(|s| s.name.clone()).collect(),
            stage_list: config
                .stages
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            recorded_at,
        }
    }

    /// Validates the record whose canonical cell `i` is `cell(i)`.
    pub fn validate<'a>(&self, cell: impl Fn(usize) -> Cell<'a>) -> Result<Vec<Value<'a>>, String> {
        let columns = self.dataset.columns();
        let mut values = Vec::with_capacity(columns.len());
        for (i, column) in columns.iter().enumerate() {
            let name = column.name;
            let text = match cell(i) {
                Cell::Error(e) => return Err(format!("{name}: {e}")),
                Cell::DateTime(naive) if column.ty == ColumnType::Timestamp => {
                    values.push(Value::Timestamp(self.zone.local_to_utc(naive)));
                    continue;
                }
                Cell::DateTime(naive) => Cow::Owned(naive.format("%Y-%m-%dT%H:%M:%S").to_string()),
                Cell::Null => Cow::Borrowed(""),
                Cell::Text(text) => trim_cow(text),
            };
            let text = match self.values[i]
                .as_ref()
                .and_then(|map| map.get(text.as_ref()))
            {
                Some(mapped) => Cow::Owned(mapped.clone()),
                None => text,
            };
            if text.is_empty() {
                if column.required {
                    return Err(format!("{name}: required value is missing"));
                }
                values.push(Value::Null);
                continue;
            }
            let value = match column.ty {
                ColumnType::Timestamp => match parse_timestamp(&text, &self.zone, &self.formats) {
                    Some(micros) => Value::Timestamp(micros),
                    None => {
                        return Err(format!(
                            "{name}: `{text}` is not a timestamp (ISO 8601 or datasets.{}.timestamp_formats)",
                            self.dataset.name()
                        ));
                    }
                },
                ColumnType::Decimal => match parse_decimal(&text) {
                    Some(scaled) => Value::Decimal(scaled),
                    None => {
                        return Err(format!(
                            "{name}: `{text}` is not a decimal number of at most {} digits",
                            DECIMAL_PRECISION
                        ));
                    }
                },
                ColumnType::Text => match column.domain {
                    Domain::Any => Value::Text(text),
                    Domain::Stage if self.stages.contains(text.as_ref()) => Value::Text(text),
                    Domain::Stage => {
                        return Err(format!(
                            "{name}: unknown stage `{text}` (configured: {})",
                            self.stage_list
                        ));
                    }
                    // A syntax check only: the text is kept as it came, so there is no need to
                    // build the value.
                    Domain::JsonObject if !text.starts_with('{') => {
                        return Err(format!("{name}: must be a JSON object, got `{text}`"));
                    }
                    Domain::JsonObject => {
                        match serde_json::from_str::<serde::de::IgnoredAny>(&text) {
                            Ok(_) => Value::Text(text),
                            Err(e) => return Err(format!("{name}: malformed JSON ({e})")),
                        }
                    }
                    Domain::Status => match text.to_ascii_lowercase().as_str() {
                        status @ ("open" | "won" | "lost") => {
                            Value::Text(Cow::Owned(status.to_string()))
                        }
                        _ => return Err(format!("{name}: `{text}` is not one of open, won, lost")),
                    },
                },
            };
            values.push(value);
        }
        if let Some((recorded, occurred)) = self.recorded_at
            && values[recorded] == Value::Null
        {
            values[recorded] = values[occurred].clone();
        }
        Ok(values)
    }

    /// The local date of a UTC instant: the row's `dt=` partition.
    pub fn local_date(&self, micros: i64) -> NaiveDate {
        self.zone.local_date(micros)
    }
}

fn trim_cow(text: Cow<'_, str>) -> Cow<'_, str> {
    // Most values have no surrounding white space: check the end bytes before the Unicode trim.
    let plain = |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_graphic());
    if plain(text.as_bytes().first()) && plain(text.as_bytes().last()) {
        return text;
    }
    match text {
        Cow::Borrowed(s) => Cow::Borrowed(s.trim()),
        Cow::Owned(s) if s.trim().len() == s.len() => Cow::Owned(s),
        Cow::Owned(s) => Cow::Owned(s.trim().to_string()),
    }
}

/// A plain decimal (`-1234.5`) -> the value scaled by `DECIMAL_SCALE`, rounded half away from zero.
pub fn parse_decimal(text: &str) -> Option<i128> {
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
        || whole.trim_start_matches('0').len()
            > usize::from(DECIMAL_PRECISION) - DECIMAL_SCALE as usize
    {
        return None;
    }
    let scale = DECIMAL_SCALE as usize;
    let mut scaled: i128 = 0;
    for b in whole
        .bytes()
        .chain(fraction.bytes().chain(std::iter::repeat(b'0')).take(scale))
    {
        scaled = scaled * 10 + i128::from(b - b'0');
    }
    if fraction.as_bytes().get(scale).is_some_and(|b| *b >= b'5') {
        scaled += 1;
    }
    Some(if negative { -scaled } else { scaled })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_scale_and_round() {
        assert_eq!(parse_decimal("1234.5"), Some(123450));
        assert_eq!(parse_decimal("-0.005"), Some(-1));
        assert_eq!(parse_decimal("12"), Some(1200));
        assert_eq!(parse_decimal(".25"), Some(25));
        for bad in [
            "",
            "-",
            "1,234.00",
            "1e5",
            "12.3.4",
            "abc",
            "1234567890123456789",
        ] {
            assert_eq!(parse_decimal(bad), None, "{bad}");
        }
    }
}
