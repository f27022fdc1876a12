//! Local time in the configured timezone, DST included.
//!
//! A local time that a DST change skips (02:30 on the spring-forward night) is read with the
//! offset before the change, i.e. as the instant an hour later; one that occurs twice (the
//! autumn night) takes the earlier instant.

use chrono::{Duration, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeZone};
use chrono_tz::Tz;

/// A timezone that remembers the UTC offsets of the last few hours it converted, in each
/// direction. Rows of an export are mostly close in time (though `occurred_at` and `recorded_at`
/// of one row may be hours apart, hence more than one entry), and a tz lookup costs far more than
/// the check. An hour is remembered only when one offset holds from its first to its last second,
/// so an hour with a DST change inside is always looked up.
pub struct Zone {
    tz: Tz,
    /// Offsets of local wall-clock hours, for `local_to_utc`.
    local_hours: HourCache,
    /// Offsets of UTC hours, for `local_date`.
    utc_hours: HourCache,
}

/// (hour since the epoch, UTC offset in seconds) pairs, replaced round-robin.
struct HourCache {
    entries: [std::cell::Cell<(i64, i32)>; 4],
    next: std::cell::Cell<usize>,
}

impl HourCache {
    fn new() -> HourCache {
        HourCache {
            entries: std::array::from_fn(|_| std::cell::Cell::new((i64::MIN, 0))),
            next: std::cell::Cell::new(0),
        }
    }

    fn get(&self, hour: i64) -> Option<i32> {
        self.entries
            .iter()
            .map(std::cell::Cell::get)
            .find(|(h, _)| *h == hour)
            .map(|(_, offset)| offset)
    }

    fn put(&self, hour: i64, offset: i32) {
        let slot = self.next.get();
        self.entries[slot].set((hour, offset));
        self.next.set((slot + 1) % self.entries.len());
    }
}

impl Zone {
    pub fn new(tz: Tz) -> Zone {
        Zone {
            tz,
            local_hours: HourCache::new(),
            utc_hours: HourCache::new(),
        }
    }

    /// Local wall-clock time -> UTC microseconds (see the module doc for DST).
    pub fn local_to_utc(&self, naive: NaiveDateTime) -> i64 {
        let hour = naive.and_utc().timestamp().div_euclid(3600);
        let offset = self.local_hours.get(hour).or_else(|| {
            let single = |t: NaiveDateTime| match self.tz.offset_from_local_datetime(&t) {
                LocalResult::Single(o) => Some(o.fix().local_minus_utc()),
                _ => None,
            };
            let start = hour_start(hour);
            let offset =
                single(start).filter(|a| single(start + Duration::seconds(3599)) == Some(*a))?;
            self.local_hours.put(hour, offset);
            Some(offset)
        });
        match offset {
            Some(offset) => (naive - Duration::seconds(i64::from(offset)))
                .and_utc()
                .timestamp_micros(),
            // A DST change inside this hour: look the time itself up.
            None => local_to_utc(naive, self.tz),
        }
    }

    /// The local date of a UTC instant.
    pub fn local_date(&self, micros: i64) -> NaiveDate {
        let utc = chrono::DateTime::from_timestamp_micros(micros)
            .unwrap_or_default()
            .naive_utc();
        let hour = utc.and_utc().timestamp().div_euclid(3600);
        let at = |t: NaiveDateTime| self.tz.offset_from_utc_datetime(&t).fix().local_minus_utc();
        let offset = match self.utc_hours.get(hour) {
            Some(offset) => offset,
            None => {
                let start = hour_start(hour);
                let (a, b) = (at(start), at(start + Duration::seconds(3599)));
                if a == b {
                    self.utc_hours.put(hour, a);
                    a
                } else {
                    at(utc)
                }
            }
        };
        (utc + Duration::seconds(i64::from(offset))).date()
    }
}

/// The first second of `hour` (hours since the epoch) as a naive date-time.
fn hour_start(hour: i64) -> NaiveDateTime {
    chrono::DateTime::from_timestamp(hour * 3600, 0)
        .unwrap_or_default()
        .naive_utc()
}

/// Local wall-clock time in `tz` -> UTC microseconds (see the module doc for DST).
pub fn local_to_utc(naive: NaiveDateTime, tz: Tz) -> i64 {
    let offset: FixedOffset = match tz.offset_from_local_datetime(&naive) {
        LocalResult::Single(offset) | LocalResult::Ambiguous(offset, _) => offset.fix(),
        LocalResult::None => tz
            .offset_from_local_datetime(&(naive - Duration::hours(3)))
            .earliest()
            .map_or_else(
                || FixedOffset::east_opt(0).expect("zero offset"),
                |o| o.fix(),
            ),
    };
    (naive - offset).and_utc().timestamp_micros()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveTime;

    #[test]
    fn the_zone_cache_agrees_with_plain_lookups_minute_by_minute_across_dst() {
        let berlin = chrono_tz::Europe::Berlin;
        let zone = Zone::new(berlin);
        for day in ["2026-03-28", "2026-03-29", "2026-10-25", "2026-10-26"] {
            let start = NaiveDate::parse_from_str(day, "%Y-%m-%d")
                .unwrap()
                .and_time(NaiveTime::MIN);
            for minute in 0..(26 * 60) {
                let local = start + Duration::minutes(minute);
                assert_eq!(
                    zone.local_to_utc(local),
                    local_to_utc(local, berlin),
                    "{local}"
                );
                let micros = (start + Duration::minutes(minute))
                    .and_utc()
                    .timestamp_micros();
                let utc = start + Duration::minutes(minute);
                let expected = (utc + berlin.offset_from_utc_datetime(&utc).fix()).date();
                assert_eq!(zone.local_date(micros), expected, "{utc} UTC");
            }
        }
    }
}
