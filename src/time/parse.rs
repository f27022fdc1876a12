//! Text -> time: instants as ingest, `--as-of` and the SQL functions read them, and the business
//! calendar's working hours.
//!
//! Timestamps: ISO 8601; with an offset it is respected, without one it is local time in the
//! configured timezone (see [`super::zone`] for DST). Other formats come from
//! `datasets.<dataset>.timestamp_formats` (chrono `strftime` patterns, where `%A` also reads
//! Chinese weekdays, and the named formats `epoch_seconds` and `epoch_millis`), tried after
//! ISO 8601.

use std::borrow::Cow;

use chrono::{Duration, NaiveDate, NaiveDateTime};
use chrono_tz::Tz;

use super::zone::Zone;
use crate::error::{Error, Result};

/// Parses ISO 8601 (fast path) or one of `formats`, returning UTC microseconds.
pub fn parse_timestamp(text: &str, zone: &Zone, formats: &[String]) -> Option<i64> {
    if let Some((naive, offset)) = parse_iso(text.as_bytes()) {
        return Some(match offset {
            Some(seconds) => (naive - Duration::seconds(i64::from(seconds)))
                .and_utc()
                .timestamp_micros(),
            None => zone.local_to_utc(naive),
        });
    }
    for format in formats {
        if let Ok(dt) = chrono::DateTime::parse_from_str(text, format) {
            return Some(dt.timestamp_micros());
        }
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return Some(zone.local_to_utc(naive));
        }
        if let Ok(date) = NaiveDate::parse_from_str(text, format) {
            return Some(zone.local_to_utc(date.and_hms_opt(0, 0, 0)?));
        }
    }
    None
}

/// `YYYY-MM-DD[( |T)HH:MM[:SS[.fraction]]][Z|±HH[:MM]]` -> the wall-clock time and its offset
/// in seconds, if one was given.
fn parse_iso(s: &[u8]) -> Option<(NaiveDateTime, Option<i32>)> {
    fn num(s: &[u8], range: std::ops::Range<usize>) -> Option<u32> {
        let digits = s.get(range)?;
        digits.iter().try_fold(0u32, |acc, &b| {
            b.is_ascii_digit().then(|| acc * 10 + u32::from(b - b'0'))
        })
    }
    if s.len() < 10 || s[4] != b'-' || s[7] != b'-' {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(num(s, 0..4)? as i32, num(s, 5..7)?, num(s, 8..10)?)?;
    if s.len() == 10 {
        return Some((date.and_hms_opt(0, 0, 0)?, None));
    }
    if !matches!(s[10], b'T' | b't' | b' ') || s.len() < 16 || s[13] != b':' {
        return None;
    }
    let (hour, minute) = (num(s, 11..13)?, num(s, 14..16)?);
    let mut at = 16;
    let mut second = 0;
    let mut nanos = 0;
    if s.get(at) == Some(&b':') {
        second = num(s, at + 1..at + 3)?;
        at += 3;
        if matches!(s.get(at), Some(b'.' | b',')) {
            let start = at + 1;
            let mut end = start;
            while end < s.len() && s[end].is_ascii_digit() {
                end += 1;
            }
            if end == start || end - start > 9 {
                return None;
            }
            nanos = num(s, start..end)? * 10u32.pow(9 - (end - start) as u32);
            at = end;
        }
    }
    let time = date.and_hms_nano_opt(hour, minute, second, nanos)?;
    let offset = match s.get(at..)? {
        [] => None,
        [b'Z' | b'z'] => Some(0),
        [sign @ (b'+' | b'-'), rest @ ..] => {
            let (h, m) = match rest.len() {
                2 => (num(rest, 0..2)?, 0),
                4 => (num(rest, 0..2)?, num(rest, 2..4)?),
                5 if rest[2] == b':' => (num(rest, 0..2)?, num(rest, 3..5)?),
                _ => return None,
            };
            if h > 23 || m > 59 {
                return None;
            }
            let seconds = (h * 3600 + m * 60) as i32;
            Some(if *sign == b'-' { -seconds } else { seconds })
        }
        _ => return None,
    };
    Some((time, offset))
}

/// An `--as-of` instant (ISO 8601; without an offset, local time in `tz`) in microseconds.
pub fn parse_as_of(tz: Tz, text: &str) -> Result<i64> {
    parse_timestamp(text, &Zone::new(tz), &[])
        .ok_or_else(|| Error::Usage(format!("--as-of `{text}` is not an ISO 8601 timestamp")))
}

/// `HH:MM-HH:MM` -> minutes after midnight of start and end.
pub fn parse_hours(text: &str) -> Option<(u32, u32)> {
    let minutes = |t: &str| {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h <= 24 && m < 60 && h * 60 + m <= 24 * 60).then_some(h * 60 + m)
    };
    let (start, end) = text.split_once('-')?;
    let (start, end) = (minutes(start)?, minutes(end)?);
    (start < end).then_some((start, end))
}

/// `epoch_seconds` / `epoch_millis`: an integer (seconds may have a fraction) since
/// 1970-01-01T00:00:00Z. With both named, 12 digits or more are milliseconds.
pub fn parse_epoch(text: &str, seconds: bool, millis: bool) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty()
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let as_millis = millis && (!seconds || whole.len() >= 12);
    let sign = if text.starts_with('-') { -1 } else { 1 };
    if as_millis {
        if !fraction.is_empty() {
            return None;
        }
        whole.parse::<i64>().ok()?.checked_mul(1000 * sign)
    } else {
        let micros = whole.parse::<i64>().ok()?.checked_mul(1_000_000)?;
        let fraction: i64 = if fraction.is_empty() {
            0
        } else {
            format!("{:0<6}", fraction.get(..6).unwrap_or(fraction))
                .parse()
                .ok()?
        };
        Some(sign * (micros + fraction))
    }
}

/// Chinese weekday names, as exports write them after a date (`2018-01-05 星期五`, `周五`), and
/// the English names chrono's `%A` reads (it then checks that the weekday fits the date).
const CHINESE_WEEKDAYS: [(&str, &str); 16] = [
    ("星期一", "Monday"),
    ("星期二", "Tuesday"),
    ("星期三", "Wednesday"),
    ("星期四", "Thursday"),
    ("星期五", "Friday"),
    ("星期六", "Saturday"),
    ("星期日", "Sunday"),
    ("星期天", "Sunday"),
    ("周一", "Monday"),
    ("周二", "Tuesday"),
    ("周三", "Wednesday"),
    ("周四", "Thursday"),
    ("周五", "Friday"),
    ("周六", "Saturday"),
    ("周日", "Sunday"),
    ("周天", "Sunday"),
];

/// A `timestamp_formats` pattern as it is used: `%a` reads the same full English names as `%A`
/// (which is what Chinese weekdays are translated to).
pub fn weekday_format(format: &str) -> String {
    format.replace("%a", "%A")
}

pub fn english_weekdays(text: &str) -> Cow<'_, str> {
    if text.is_ascii() {
        return Cow::Borrowed(text);
    }
    let mut text = text.to_string();
    for (chinese, english) in CHINESE_WEEKDAYS {
        if text.contains(chinese) {
            text = text.replace(chinese, english);
        }
    }
    Cow::Owned(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(text: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_micros()
    }

    #[test]
    fn iso_timestamps_with_and_without_offsets() {
        let berlin = chrono_tz::Europe::Berlin;
        let shanghai = chrono_tz::Asia::Shanghai;
        assert_eq!(
            parse_timestamp("2026-03-01T10:00:00Z", &Zone::new(berlin), &[]),
            Some(utc("2026-03-01T10:00:00Z"))
        );
        assert_eq!(
            parse_timestamp("2026-03-01 10:00:00+08:00", &Zone::new(berlin), &[]),
            Some(utc("2026-03-01T02:00:00Z"))
        );
        assert_eq!(
            parse_timestamp("2026-03-01T10:00:00.250-0130", &Zone::new(berlin), &[]),
            Some(utc("2026-03-01T11:30:00.250Z"))
        );
        assert_eq!(
            parse_timestamp("2026-03-01 10:00", &Zone::new(shanghai), &[]),
            Some(utc("2026-03-01T02:00:00Z"))
        );
        assert_eq!(
            parse_timestamp("2026-03-01", &Zone::new(shanghai), &[]),
            Some(utc("2026-02-28T16:00:00Z"))
        );
        for bad in [
            "2026-02-30",
            "2026-03-01T25:00",
            "yesterday",
            "2026-03-01T10:00:00+2",
            "2026-03-01T10:00:00 UTC",
        ] {
            assert_eq!(
                parse_timestamp(bad, &Zone::new(shanghai), &[]),
                None,
                "{bad}"
            );
        }
    }

    #[test]
    fn configured_formats_are_tried_after_iso() {
        let tz = chrono_tz::Asia::Shanghai;
        let formats = vec!["%m/%d/%Y %H:%M".to_string(), "%m/%d/%Y".to_string()];
        assert_eq!(
            parse_timestamp("03/01/2026 10:00", &Zone::new(tz), &formats),
            Some(utc("2026-03-01T02:00:00Z"))
        );
        assert_eq!(
            parse_timestamp("03/01/2026", &Zone::new(tz), &formats),
            Some(utc("2026-02-28T16:00:00Z"))
        );
    }

    #[test]
    fn dst_gaps_and_overlaps_in_berlin() {
        let berlin = chrono_tz::Europe::Berlin;
        // 2026-03-29 02:30 does not exist: read with the winter offset (+01:00).
        assert_eq!(
            parse_timestamp("2026-03-29T02:30:00", &Zone::new(berlin), &[]),
            Some(utc("2026-03-29T01:30:00Z"))
        );
        // 2026-10-25 02:30 happens twice: the earlier one (+02:00).
        assert_eq!(
            parse_timestamp("2026-10-25T02:30:00", &Zone::new(berlin), &[]),
            Some(utc("2026-10-25T00:30:00Z"))
        );
        assert_eq!(
            parse_timestamp("2026-07-01T12:00:00", &Zone::new(berlin), &[]),
            Some(utc("2026-07-01T10:00:00Z"))
        );
    }

    #[test]
    fn business_hours_are_a_start_before_an_end() {
        assert_eq!(parse_hours("09:00-18:00"), Some((540, 1080)));
        assert_eq!(parse_hours(" 8:30 - 24:00 "), Some((510, 1440)));
        for bad in ["18:00-09:00", "09:00", "25:00-26:00", "09:60-10:00", "9-17"] {
            assert_eq!(parse_hours(bad), None, "{bad}");
        }
    }

    #[test]
    fn epoch_formats_and_chinese_weekdays() {
        assert_eq!(
            parse_epoch("1772442000", true, false),
            Some(utc("2026-03-02T09:00:00Z"))
        );
        assert_eq!(
            parse_epoch("1772442000123", true, true),
            Some(utc("2026-03-02T09:00:00.123Z"))
        );
        assert_eq!(
            parse_epoch("1772442000.5", true, false),
            Some(utc("2026-03-02T09:00:00.5Z"))
        );
        assert_eq!(parse_epoch("17724x", true, true), None);
        let formats = vec![weekday_format("%Y-%m-%d %a")];
        let zone = Zone::new(chrono_tz::Asia::Shanghai);
        assert_eq!(
            parse_timestamp(&english_weekdays("2018-01-05 星期五"), &zone, &formats),
            Some(utc("2018-01-04T16:00:00Z"))
        );
        // The weekday must fit the date: 2018-01-01 was a Monday.
        assert_eq!(
            parse_timestamp(&english_weekdays("2018-01-01 星期五"), &zone, &formats),
            None
        );
    }
}
