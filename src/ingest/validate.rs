//! One record's canonical cells -> typed values, or the reason it goes to quarantine.
//!
//! Amounts may carry a currency symbol or code, thousands separators and the file's decimal mark
//! (`$1,054.00`, `1.054,00 €`, `(12.50)` for a negative); a value that could be read two ways
//! (`1.054` with `.` as the mark: 1.054, or 1054 with `.` between thousands) is quarantined.
//!
//! Timestamps are read by [`crate::time::parse`]: ISO 8601, the named formats `epoch_seconds`
//! and `epoch_millis`, then the file's `timestamp_formats`; naive ones in the file's timezone.
//! Every timestamp must fall in the file's `timestamp_years`.

use std::borrow::Cow;
use std::collections::HashSet;

use chrono::NaiveDate;

use super::cell::Cell;
use super::spec::FileSpec;
use crate::config::Config;
use crate::config::datasets::NAMED_FORMATS;
use crate::lake::schema::{ColumnType, DECIMAL_PRECISION, DECIMAL_SCALE, Dataset, Domain};
use crate::time::Zone;
use crate::time::parse::{english_weekdays, parse_epoch, parse_timestamp, weekday_format};

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

/// Checks and types the records of one file.
pub struct Validator {
    dataset: Dataset,
    /// The configured timezone: local dates (`dt=` partitions).
    zone: Zone,
    /// The file's timezone: naive timestamps.
    read_zone: Zone,
    /// strftime patterns tried after ISO 8601.
    formats: Vec<String>,
    /// Named formats in `timestamp_formats`.
    epoch_seconds: bool,
    epoch_millis: bool,
    /// UTC microseconds of the first instant of the first plausible year, and of the year after
    /// the last.
    range: (i64, i64),
    years: [i32; 2],
    decimal_mark: char,
    /// The config key of the file's settings, for messages.
    key: String,
    stages: HashSet<String>,
    stage_list: String,
    /// Per canonical column, source value -> canonical value.
    values: Vec<Option<std::collections::BTreeMap<String, String>>>,
    recorded_at: Option<(usize, usize)>,
}

impl Validator {
    pub fn new(config: &Config, spec: &FileSpec) -> Validator {
        let dataset = spec.dataset;
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
        let year_start = |year: i32| {
            NaiveDate::from_ymd_opt(year, 1, 1)
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map_or(i64::MAX, |t| t.and_utc().timestamp_micros())
        };
        let [first, last] = spec.timestamp_years;
        let named = |name: &str| spec.timestamp_formats.iter().any(|f| f == name);
        Validator {
            values,
            dataset,
            zone: Zone::new(config.timezone),
            read_zone: Zone::new(spec.timezone.unwrap_or(config.timezone)),
            formats: spec
                .timestamp_formats
                .iter()
                .filter(|f| !NAMED_FORMATS.contains(&f.as_str()))
                .map(|f| weekday_format(f))
                .collect(),
            epoch_seconds: named("epoch_seconds"),
            epoch_millis: named("epoch_millis"),
            range: (year_start(first), year_start(last.saturating_add(1))),
            years: spec.timestamp_years,
            decimal_mark: spec.decimal_mark,
            key: spec.key.clone(),
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

    /// A timestamp's text -> UTC microseconds: ISO 8601, the epoch formats, then the patterns.
    pub fn parse_time(&self, text: &str) -> Option<i64> {
        if let Some(micros) = parse_timestamp(text, &self.read_zone, &[]) {
            return Some(micros);
        }
        if (self.epoch_seconds || self.epoch_millis)
            && let Some(micros) = parse_epoch(text, self.epoch_seconds, self.epoch_millis)
        {
            return Some(micros);
        }
        if self.formats.is_empty() {
            return None;
        }
        let english = english_weekdays(text);
        parse_timestamp(&english, &self.read_zone, &self.formats)
    }

    /// `Err` unless `text` is a configured stage (`name` is the column, for the message).
    pub fn stage(&self, name: &str, text: &str) -> Result<(), String> {
        if self.stages.contains(text) {
            Ok(())
        } else {
            Err(format!(
                "{name}: unknown stage `{text}` (configured: {})",
                self.stage_list
            ))
        }
    }

    /// A timestamp cell outside the canonical columns (`name` for messages): `None` when empty.
    pub fn timestamp_cell(&self, name: &str, cell: Cell<'_>) -> Result<Option<i64>, String> {
        match cell {
            Cell::DateTime(naive) => {
                let text = naive.format("%Y-%m-%d %H:%M:%S").to_string();
                self.in_range(name, &text, self.read_zone.local_to_utc(naive))
                    .map(Some)
            }
            Cell::Error(e) => Err(format!("{name}: {e}")),
            Cell::Null => Ok(None),
            Cell::Text(text) if text.trim().is_empty() => Ok(None),
            Cell::Text(text) => {
                let text = text.trim();
                match self.parse_time(text) {
                    Some(micros) => self.in_range(name, text, micros).map(Some),
                    None => Err(format!(
                        "{name}: `{text}` is not a timestamp (ISO 8601 or {}.timestamp_formats)",
                        self.key
                    )),
                }
            }
        }
    }

    /// `Err` when a parsed instant falls outside the plausible years.
    fn in_range(&self, name: &str, text: &str, micros: i64) -> Result<i64, String> {
        if micros >= self.range.0 && micros < self.range.1 {
            Ok(micros)
        } else {
            Err(format!(
                "{name}: `{text}` is outside the years {} to {} ({}.timestamp_years)",
                self.years[0], self.years[1], self.key
            ))
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
                    let micros = self.read_zone.local_to_utc(naive);
                    let text = naive.format("%Y-%m-%d %H:%M:%S").to_string();
                    values.push(Value::Timestamp(self.in_range(name, &text, micros)?));
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
                ColumnType::Timestamp => match self.parse_time(&text) {
                    Some(micros) => Value::Timestamp(self.in_range(name, &text, micros)?),
                    None => {
                        return Err(format!(
                            "{name}: `{text}` is not a timestamp (ISO 8601 or {}.timestamp_formats)",
                            self.key
                        ));
                    }
                },
                ColumnType::Decimal => match parse_amount(&text, self.decimal_mark) {
                    Ok(scaled) => Value::Decimal(scaled),
                    Err(why) => {
                        return Err(format!(
                            "{name}: `{text}` {why} ({}.decimal_mark is `{}`)",
                            self.key, self.decimal_mark
                        ));
                    }
                },
                ColumnType::Text => match column.domain {
                    Domain::Any => Value::Text(text),
                    Domain::Stage => {
                        self.stage(name, &text)?;
                        Value::Text(text)
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

/// An amount as exports write it -> the value scaled by `DECIMAL_SCALE`: an optional sign or
/// accounting parentheses, a currency symbol or ISO code before or after, thousands grouped by
/// the separator that is not the decimal mark (or a space), and `mark` before the fraction.
/// `Err` says what was expected.
pub fn parse_amount(text: &str, mark: char) -> Result<i128, String> {
    let expected = || {
        let example = if mark == ',' { "1.054,00" } else { "1,054.00" };
        Err(format!(
            "is not an amount: expected digits with `{mark}` before the decimals and thousands \
             grouped by threes, with an optional sign and currency (e.g. {example} or -$12{mark}50)"
        ))
    };
    let mut s = text.trim();
    let mut negative = false;
    if let Some(inner) = s.strip_prefix('(').and_then(|t| t.strip_suffix(')')) {
        negative = true;
        s = inner.trim();
    }
    for _ in 0..2 {
        if let Some(rest) = s.strip_prefix('-') {
            if negative {
                return expected();
            }
            negative = true;
            s = rest.trim_start();
        } else if let Some(rest) = s.strip_prefix('+') {
            s = rest.trim_start();
        }
        s = strip_currency(s);
    }
    let group = |c: char| {
        c == ' '
            || c == '\u{a0}'
            || c == '\u{202f}'
            || c == '\''
            || c == if mark == ',' { '.' } else { ',' }
    };
    let (whole, fraction) = match s.rsplit_once(mark) {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (s, None),
    };
    let groups: Vec<&str> = whole.split(group).collect();
    let grouped = groups.len() > 1;
    let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
    let well_grouped = groups
        .iter()
        .enumerate()
        .all(|(i, g)| digits(g) && (!grouped || if i == 0 { g.len() <= 3 } else { g.len() == 3 }));
    if !well_grouped || fraction.is_some_and(|f| !digits(f)) {
        return expected();
    }
    let whole: String = groups.concat();
    if let Some(fraction) = fraction
        && !grouped
        && fraction.len() == 3
        && (1..=3).contains(&whole.len())
        && !whole.starts_with('0')
    {
        let other = if mark == ',' { '.' } else { ',' };
        return Err(format!(
            "could be read two ways: with `{mark}` as the decimal mark it has three decimals, but it \
             looks like {whole}{fraction} with `{mark}` between thousands; if so set decimal_mark \
             to `{other}`, else write it with {} decimals",
            DECIMAL_SCALE
        ));
    }
    let plain = match fraction {
        Some(fraction) => format!("{whole}.{fraction}"),
        None => whole,
    };
    match parse_decimal(&plain) {
        Some(scaled) => Ok(if negative { -scaled } else { scaled }),
        None => Err(format!(
            "has more than {} digits before the decimals",
            usize::from(DECIMAL_PRECISION) - DECIMAL_SCALE as usize
        )),
    }
}

/// Strips one currency symbol (`$`, `€`, `¥`, `US$`, `元`, ...) or ISO 4217 code (`USD`, `EUR`)
/// from either end of `s`.
fn strip_currency(s: &str) -> &str {
    const SYMBOLS: [&str; 16] = [
        "US$", "HK$", "NT$", "R$", "A$", "C$", "S$", "$", "€", "£", "¥", "￥", "₩", "₹", "元",
        "RMB",
    ];
    let mut s = s.trim();
    for symbol in SYMBOLS {
        if let Some(rest) = s.strip_prefix(symbol) {
            s = rest.trim_start();
            break;
        }
        if let Some(rest) = s.strip_suffix(symbol) {
            s = rest.trim_end();
            break;
        }
    }
    let code = |t: &str| t.len() == 3 && t.bytes().all(|b| b.is_ascii_uppercase());
    if let Some((first, rest)) = s.split_once(' ')
        && code(first)
    {
        return rest.trim_start();
    }
    if let Some((rest, last)) = s.rsplit_once(' ')
        && code(last)
    {
        return rest.trim_end();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_with_currency_grouping_and_either_mark() {
        assert_eq!(parse_amount("$1,054.00", '.'), Ok(105400));
        assert_eq!(parse_amount("  1054 ", '.'), Ok(105400));
        assert_eq!(parse_amount("-$12.50", '.'), Ok(-1250));
        assert_eq!(parse_amount("$-12.50", '.'), Ok(-1250));
        assert_eq!(parse_amount("(1,200.5)", '.'), Ok(-120050));
        assert_eq!(parse_amount("USD 2,000,000", '.'), Ok(200000000));
        assert_eq!(parse_amount("1.054,00 €", ','), Ok(105400));
        assert_eq!(parse_amount("1 054,5 EUR", ','), Ok(105450));
        assert_eq!(parse_amount("￥3,980.00", '.'), Ok(398000));
        assert_eq!(parse_amount("0.125", '.'), Ok(13));
        for (bad, mark) in [
            ("1,05,4.00", '.'),
            ("1.054,00", '.'),
            ("12,3", '.'),
            ("$", '.'),
            ("abc", '.'),
            ("--5", '.'),
            ("1,054.00", ','),
        ] {
            let err = parse_amount(bad, mark).unwrap_err();
            assert!(err.starts_with("is not an amount"), "{bad}: {err}");
        }
        let err = parse_amount("1.054", '.').unwrap_err();
        assert!(err.starts_with("could be read two ways"), "{err}");
        assert_eq!(parse_amount("1.054", ','), Ok(105400));
    }

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
