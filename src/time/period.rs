//! Periods (`docs/contract.md` section 3): ISO weeks `2026-W09` and months `2026-03`, local to
//! the configured timezone; a period runs from its first local midnight to the next period's.
//!
//! Metrics, reports and pipelines each work on one kind of period: [`Period::parse_as`] (or
//! [`Period::expect_kind`] for an id already parsed) is the one check that an id given by the
//! user is of that kind.

use chrono::{Datelike, Duration, NaiveDate, NaiveTime, Weekday};
use chrono_tz::Tz;
use serde::Deserialize;

use super::zone::local_to_utc;
use crate::error::{Error, Result};

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

    /// An id of this kind, for messages.
    pub fn example(self) -> &'static str {
        match self {
            PeriodKind::Week => "2026-W09",
            PeriodKind::Month => "2026-03",
        }
    }
}

impl std::fmt::Display for PeriodKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
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
    /// `2026-W09` or `2026-03`; anything else is a usage error.
    pub fn parse(id: &str) -> Result<Period> {
        let bad = || {
            Error::Usage(format!(
                "`{id}` is not a period: use an ISO week like 2026-W09 or a month like 2026-03"
            ))
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

    /// `id` as a period of `kind`, for `who` (a metric, a report, a pipeline) that works on
    /// periods of that kind only.
    pub fn parse_as(id: &str, kind: PeriodKind, who: &str) -> Result<Period> {
        let period = Period::parse(id)?;
        period.expect_kind(kind, who)?;
        Ok(period)
    }

    /// A usage error unless this period is of `kind`, the kind `who` works on.
    pub fn expect_kind(&self, kind: PeriodKind, who: &str) -> Result<()> {
        if self.kind == kind {
            return Ok(());
        }
        Err(Error::Usage(format!(
            "{who} works on {kind} periods, and `{}` is a {}: give a {kind} id like {}",
            self.id,
            self.kind,
            kind.example()
        )))
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
    fn a_period_of_the_wrong_kind_is_a_usage_error_naming_who_asked() {
        assert_eq!(
            Period::parse_as("2026-03", PeriodKind::Month, "the monthly report")
                .unwrap()
                .start,
            day("2026-03-01")
        );
        let Err(Error::Usage(message)) =
            Period::parse_as("2026-03", PeriodKind::Week, "pipeline weekly")
        else {
            panic!("expected a usage error")
        };
        assert_eq!(
            message,
            "pipeline weekly works on week periods, and `2026-03` is a month: give a week id like 2026-W09"
        );
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
