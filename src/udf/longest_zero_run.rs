//! `longest_zero_run(day, from_day, to_day)`: aggregate, the longest run of consecutive days in
//! [from_day, to_day] on which the group has no row; `longest_zero_run_start` gives its first day.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{ArrayRef, AsArray, Date32Array, ListArray};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::{DataType, Date32Type, Field, FieldRef};
use datafusion::common::{Result, ScalarValue, exec_err};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::{AggregateOrderSensitivity, format_state_name};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, Documentation, Signature, Volatility,
};

use super::{DOC_SECTION, coerce};

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct LongestZeroRun {
    /// `longest_zero_run_start`: the run's first day instead of its length.
    start: bool,
    signature: Signature,
}

impl LongestZeroRun {
    pub fn length() -> LongestZeroRun {
        LongestZeroRun {
            start: false,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }

    pub fn start() -> LongestZeroRun {
        LongestZeroRun {
            start: true,
            ..LongestZeroRun::length()
        }
    }
}

/// Coercion of a day argument: dates and date text. Timestamps are refused: which day an instant
/// falls on depends on the timezone, so the caller says (`dt`, or `local_date(ts)`).
fn day_type(t: &DataType) -> Option<DataType> {
    match t {
        DataType::Date32
        | DataType::Date64
        | DataType::Null
        | DataType::Utf8
        | DataType::Utf8View
        | DataType::LargeUtf8 => Some(DataType::Date32),
        _ => None,
    }
}

impl AggregateUDFImpl for LongestZeroRun {
    fn name(&self) -> &str {
        if self.start {
            "longest_zero_run_start"
        } else {
            "longest_zero_run"
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let signature = format!(
            "{}(day: date, from_day: date, to_day: date) (for a timestamp, use local_date(ts))",
            self.name()
        );
        coerce(&signature, args, &[day_type, day_type, day_type])
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(if self.start {
            DataType::Date32
        } else {
            DataType::Int64
        })
    }

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(RunAccumulator {
            start: self.start,
            days: Vec::new(),
            window: None,
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let item = Arc::new(Field::new_list_field(DataType::Date32, true));
        Ok(vec![
            Arc::new(Field::new(
                format_state_name(args.name, "days"),
                DataType::List(item),
                true,
            )),
            Arc::new(Field::new(
                format_state_name(args.name, "from_day"),
                DataType::Date32,
                true,
            )),
            Arc::new(Field::new(
                format_state_name(args.name, "to_day"),
                DataType::Date32,
                true,
            )),
        ])
    }

    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::Insensitive
    }

    fn documentation(&self) -> Option<&Documentation> {
        static LENGTH: LazyLock<Documentation> = LazyLock::new(|| {
            Documentation::builder(
                DOC_SECTION,
                "Aggregate: the length in days of the longest run of consecutive days in \
                 [from_day, to_day] (both included) that no row of the group falls on. NULL days \
                 are ignored, so a LEFT JOIN that finds nothing gives the whole window. from_day \
                 and to_day must be the same on every row of a group (an execution error \
                 otherwise); NULL when they are NULL on every row.",
                "longest_zero_run(day, from_day, to_day)",
            )
            .with_argument(
                "day",
                "The day of a row, e.g. dt or local_date(occurred_at).",
            )
            .with_argument("from_day", "The first day of the window.")
            .with_argument("to_day", "The last day of the window.")
            .with_sql_example(
                "SELECT store_id, longest_zero_run(dt, DATE '2026-02-01', DATE '2026-02-28')\n\
                 FROM actions WHERE action_type = 'chronic_followup' GROUP BY store_id",
            )
            .with_related_udf("longest_zero_run_start")
            .build()
        });
        static START: LazyLock<Documentation> = LazyLock::new(|| {
            Documentation::builder(
                DOC_SECTION,
                "Aggregate: the first day of the run longest_zero_run measures (the earliest \
                 when runs tie); NULL when there is no such day. The run ends on \
                 start + longest_zero_run - 1.",
                "longest_zero_run_start(day, from_day, to_day)",
            )
            .with_argument(
                "day",
                "The day of a row, e.g. dt or local_date(occurred_at).",
            )
            .with_argument("from_day", "The first day of the window.")
            .with_argument("to_day", "The last day of the window.")
            .with_related_udf("longest_zero_run")
            .build()
        });
        Some(if self.start { &START } else { &LENGTH })
    }
}

#[derive(Debug)]
struct RunAccumulator {
    start: bool,
    /// Days seen inside or outside the window, as days since the epoch (sorted at the end).
    days: Vec<i32>,
    /// The window, from the first row that gives one.
    window: Option<(i32, i32)>,
}

impl RunAccumulator {
    fn set_window(&mut self, from: Option<i32>, to: Option<i32>) -> Result<()> {
        let (Some(from), Some(to)) = (from, to) else {
            return Ok(());
        };
        match self.window {
            None => self.window = Some((from, to)),
            Some(window) if window == (from, to) => {}
            Some(_) => {
                return exec_err!(
                    "longest_zero_run: from_day and to_day differ between rows of one group; \
                     give the same window to every row"
                );
            }
        }
        Ok(())
    }

    /// (length, first day) of the longest run of absent days; the earliest run wins a tie.
    fn longest(&mut self) -> Option<(i64, Option<i32>)> {
        let (from, to) = self.window?;
        self.days.sort_unstable();
        self.days.dedup();
        let (mut best, mut best_start) = (0i64, None);
        let mut next_free = from;
        let present = self
            .days
            .iter()
            .copied()
            .filter(|d| (from..=to).contains(d));
        // A sentinel day after the window closes the last run.
        for day in present.chain([to.saturating_add(1)]) {
            let run = i64::from(day) - i64::from(next_free);
            if run > best {
                (best, best_start) = (run, Some(next_free));
            }
            next_free = day.saturating_add(1);
        }
        Some((best, best_start))
    }
}

impl Accumulator for RunAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let [days, from, to] = [0, 1, 2].map(|i| values[i].as_primitive::<Date32Type>());
        self.days.extend(days.iter().flatten());
        for (from, to) in from.iter().zip(to) {
            self.set_window(from, to)?;
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let lists = states[0].as_list::<i32>();
        for days in lists.iter().flatten() {
            self.days
                .extend(days.as_primitive::<Date32Type>().iter().flatten());
        }
        let [from, to] = [1, 2].map(|i| states[i].as_primitive::<Date32Type>());
        for (from, to) in from.iter().zip(to) {
            self.set_window(from, to)?;
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.days.sort_unstable();
        self.days.dedup();
        let days: ArrayRef = Arc::new(Date32Array::from(self.days.clone()));
        let list = ListArray::new(
            Arc::new(Field::new_list_field(DataType::Date32, true)),
            OffsetBuffer::from_lengths([days.len()]),
            days,
            None,
        );
        let (from, to) = self.window.unzip();
        Ok(vec![
            ScalarValue::List(Arc::new(list)),
            ScalarValue::Date32(from),
            ScalarValue::Date32(to),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let longest = self.longest();
        Ok(if self.start {
            ScalarValue::Date32(longest.and_then(|(_, start)| start))
        } else {
            ScalarValue::Int64(longest.map(|(length, _)| length))
        })
    }

    fn size(&self) -> usize {
        size_of::<Self>() + self.days.capacity() * size_of::<i32>()
    }
}
