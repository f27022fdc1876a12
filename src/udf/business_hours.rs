//! `business_hours(start, end)`: hours between two instants counting only the business calendar.

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};

use chrono::{Datelike, Duration, NaiveDate, NaiveTime};
use chrono_tz::Tz;
use datafusion::arrow::array::{ArrayRef, Float64Array};
use datafusion::arrow::compute::binary;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::functions::utils::make_scalar_function;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::{DOC_SECTION, coerce, hours, instants, timestamp_type};
use crate::config::CalendarConfig;
use crate::time::parse::parse_hours;
use crate::time::zone::{Zone, local_to_utc};

const SIGNATURE: &str = "business_hours(start: timestamp, end: timestamp)";

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct BusinessHours {
    calendar: Calendar,
    signature: Signature,
}

/// The configured calendar (validated at load), or Monday to Friday 09:00-18:00 without one.
/// `note_commitments` counts working days with it too.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct Calendar {
    tz: Tz,
    /// Working days, Monday first.
    workdays: [bool; 7],
    /// Working hours as minutes after local midnight; `close` may be 24:00.
    open: u32,
    close: u32,
    holidays: BTreeSet<NaiveDate>,
}

impl BusinessHours {
    pub fn new(calendar: Calendar) -> BusinessHours {
        BusinessHours {
            calendar,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl Calendar {
    /// `calendar` (Monday to Friday 09:00-18:00 without one), in `tz`.
    pub(super) fn new(calendar: Option<&CalendarConfig>, tz: Tz) -> Calendar {
        let calendar = calendar.cloned().unwrap_or_default();
        const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        let (open, close) = parse_hours(&calendar.hours).unwrap_or((9 * 60, 18 * 60));
        Calendar {
            tz,
            workdays: DAYS.map(|day| calendar.workdays.iter().any(|d| d == day)),
            open,
            close,
            holidays: calendar
                .holidays
                .iter()
                .filter_map(|day| NaiveDate::parse_from_str(day, "%Y-%m-%d").ok())
                .collect(),
        }
    }

    /// The configured timezone.
    pub(super) fn tz(&self) -> Tz {
        self.tz
    }

    /// A working day: a configured weekday that is not a holiday.
    pub(super) fn is_workday(&self, day: NaiveDate) -> bool {
        self.workdays[day.weekday().num_days_from_monday() as usize]
            && !self.holidays.contains(&day)
    }

    /// Business microseconds in [start, end); negative when end is before start.
    fn micros(&self, zone: &Zone, start: i64, end: i64) -> i64 {
        if end < start {
            return -self.micros(zone, end, start);
        }
        let local_time = |day: NaiveDate, minutes: u32| {
            local_to_utc(
                day.and_time(NaiveTime::MIN) + Duration::minutes(i64::from(minutes)),
                self.tz,
            )
        };
        let mut total = 0;
        let mut day = zone.local_date(start);
        let last = zone.local_date(end);
        while day <= last {
            if self.is_workday(day) {
                // Opening and closing are wall-clock times: on a DST day the window is an
                // hour shorter or longer in elapsed time when it spans the change.
                let open = local_time(day, self.open).max(start);
                let close = local_time(day, self.close).min(end);
                total += (close - open).max(0);
            }
            let Some(next) = day.succ_opt() else { break };
            day = next;
        }
        total
    }
}

impl ScalarUDFImpl for BusinessHours {
    fn name(&self) -> &str {
        "business_hours"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        coerce(SIGNATURE, args, &[timestamp_type, timestamp_type])
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        make_scalar_function(
            |arrays: &[ArrayRef]| {
                let tz = self.calendar.tz;
                let start = instants(&arrays[0], tz, self.name())?;
                let end = instants(&arrays[1], tz, self.name())?;
                let zone = Zone::new(tz);
                let result: Float64Array = binary(&start, &end, |start, end| {
                    hours(self.calendar.micros(&zone, start, end))
                })?;
                Ok(Arc::new(result) as ArrayRef)
            },
            vec![],
        )(&args.args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            Documentation::builder(
                DOC_SECTION,
                "Hours from start to end that fall inside the business calendar (`calendar:` in \
                 config.yaml: working days, working hours, holidays, in the configured timezone; \
                 Monday to Friday 09:00-18:00 when there is no calendar). Working hours are \
                 wall-clock times, so a window that spans a DST change is an hour shorter or \
                 longer. Negative when end is before start; NULL when either is NULL.",
                "business_hours(start, end)",
            )
            .with_argument("start", "A timestamp, date or ISO 8601 text.")
            .with_argument("end", "A timestamp, date or ISO 8601 text.")
            .with_sql_example(
                "SELECT business_hours(TIMESTAMP '2026-03-06 17:00', TIMESTAMP '2026-03-09 10:00');\n\
                 -- 2.0: Friday 17-18 and Monday 9-10",
            )
            .build()
        });
        Some(&DOC)
    }
}
