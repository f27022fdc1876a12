//! Periods (contract section 3): ISO weeks `2026-W09` and months `2026-03`, local to the
//! configured timezone; a period runs from its first local midnight to the next period's.

use chrono::{Datelike, Duration, NaiveDate, NaiveTime, Weekday};
use chrono_tz::Tz;
use serde::Deserialize;

use crate::zone::local_to_utc;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeriodKind {
    Week,
    Month,
}

impl PeriodKind {
    pub fn name(self) -> &'static str {
        match self {
            PeriodKind::Week => "week",
            PeriodKind::Month => "month",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    pub kind: PeriodKind,
    pub id: String,
    /// First local day.
    pub start: NaiveDate,
    /// First local day after the period.
    pub end: NaiveDate,
}

impl Period {
    /// `2026-W09` or `2026-03`.
    pub fn parse(id: &str) -> Result<Period, String> {
        let bad = || {
            format!("`{id}` is not a period: use an ISO week like 2026-W09 or a month like 2026-03")
        };
        if let Some((year, week)) = id.split_once("-W") {
            let (year, week) = (
                year.parse().map_err(|_| bad())?,
                week.parse().map_err(|_| bad())?,
            );
            let start = NaiveDate::from_isoywd_opt(year, week, Weekday::Mon).ok_or_else(bad)?;
            return Ok(Period::containing(PeriodKind::Week, start));
        }
        let (year, month) = id.split_once('-').ok_or_else(bad)?;
        if month.len() != 2 {
            return Err(bad());
        }
        let start = NaiveDate::from_ymd_opt(
            year.parse().map_err(|_| bad())?,
            month.parse().map_err(|_| bad())?,
            1,
        )
        .ok_or_else(bad)?;
        Ok(Period::containing(PeriodKind::Month, start))
    }

    /// The period of `kind` that contains `day`.
    pub fn containing(kind: PeriodKind, day: NaiveDate) -> Period {
        match kind {
            PeriodKind::Week => {
                let start = day - Duration::days(i64::from(day.weekday().num_days_from_monday()));
                let week = start.iso_week();
                Period {
                    kind,
                    id: format!("{}-W{:02}", week.year(), week.week()),
                    start,
                    end: start + Duration::days(7),
                }
            }
            PeriodKind::Month => {
                let start = day.with_day(1).expect("day 1 exists");
                let end = start
                    .checked_add_months(chrono::Months::new(1))
                    .expect("a month after a valid date");
                Period {
                    kind,
                    id: start.format("%Y-%m").to_string(),
                    start,
                    end,
                }
            }
        }
    }

    /// The last complete period of `kind` before `today`.
    pub fn last_complete(kind: PeriodKind, today: NaiveDate) -> Period {
        Period::containing(kind, today).previous()
    }

    pub fn previous(&self) -> Period {
        Period::containing(self.kind, self.start - Duration::days(1))
    }

    /// Local midnight `days` after the period's end, as UTC microseconds.
    pub fn end_plus_days(&self, tz: Tz, days: i64) -> i64 {
        local_to_utc(
            (self.end + Duration::days(days)).and_time(NaiveTime::MIN),
            tz,
        )
    }

    /// The period's bounds as UTC microseconds: [start, end).
    pub fn bounds_utc(&self, tz: Tz) -> (i64, i64) {
        let midnight = |day: NaiveDate| local_to_utc(day.and_time(NaiveTime::MIN), tz);
        (midnight(self.start), midnight(self.end))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(text: &str) -> NaiveDate {
        NaiveDate::parse_from_str(text, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn weeks_and_months_parse_and_round_trip() {
        let week = Period::parse("2026-W09").unwrap();
        assert_eq!(
            (week.start, week.end),
            (day("2026-02-23"), day("2026-03-02"))
        );
        assert_eq!(
            Period::containing(PeriodKind::Week, day("2026-03-01")),
            week
        );
        // ISO week 1 of 2027 starts in 2027-01-04; 2026-12-31 is in 2026-W53.
        assert_eq!(
            Period::containing(PeriodKind::Week, day("2026-12-31")).id,
            "2026-W53"
        );
        assert_eq!(Period::parse("2026-W53").unwrap().start, day("2026-12-28"));
        let month = Period::parse("2026-02").unwrap();
        assert_eq!(
            (month.start, month.end),
            (day("2026-02-01"), day("2026-03-01"))
        );
        assert_eq!(month.previous().id, "2026-01");
        assert_eq!(Period::parse("2026-01").unwrap().previous().id, "2025-12");
        for bad in ["2026", "2026-W60", "2026-13", "2026-3", "W09", "2026-W"] {
            assert!(Period::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_week_across_the_spring_change_is_167_hours() {
        let berlin = chrono_tz::Europe::Berlin;
        let (start, end) = Period::parse("2026-W13").unwrap().bounds_utc(berlin);
        assert_eq!((end - start) / 3_600_000_000, 167);
        assert_eq!(
            Period::last_complete(PeriodKind::Week, day("2026-03-04")).id,
            "2026-W09"
        );
    }
}
