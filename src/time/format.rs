//! Time -> text: instants for people (local `YYYY-MM-DD HH:MM` in the configured timezone, as the
//! reports, alerts and `flowhealth runs` show them) and for machines (RFC 3339, UTC).

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;

/// `at` as `YYYY-MM-DD HH:MM` in `tz`.
pub fn local(tz: Tz, at: DateTime<impl TimeZone>) -> String {
    at.with_timezone(&tz).format("%Y-%m-%d %H:%M").to_string()
}

/// An instant as the lake's JSON rows spell it (RFC 3339, `Z` optional) as [`local`] text; `None`
/// when `text` is not such an instant.
pub fn local_text(tz: Tz, text: &str) -> Option<String> {
    let parsed = DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_rfc3339(&format!("{text}Z")))
        .ok()?;
    Some(local(tz, parsed))
}

/// Microseconds since the epoch as RFC 3339 in UTC, to the second (`2026-03-01T10:00:00Z`).
pub fn rfc3339(micros: i64) -> String {
    DateTime::<Utc>::from_timestamp_micros(micros)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_read_in_the_configured_timezone() {
        let berlin = chrono_tz::Europe::Berlin;
        assert_eq!(
            local_text(berlin, "2026-03-29T01:30:00Z").as_deref(),
            Some("2026-03-29 03:30")
        );
        assert_eq!(
            local_text(berlin, "2026-03-28T12:00:00").as_deref(),
            Some("2026-03-28 13:00")
        );
        assert_eq!(local_text(berlin, "yesterday"), None);
        assert_eq!(rfc3339(1_774_747_800_000_000), "2026-03-29T01:30:00Z");
    }
}
