//! `silent_hours(last_activity, as_of)`: elapsed hours between two instants.

use std::sync::{Arc, LazyLock};

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

const SIGNATURE: &str = "silent_hours(last_activity: timestamp, as_of: timestamp)";

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SilentHours {
    tz: Tz,
    signature: Signature,
}

impl SilentHours {
    pub fn new(tz: Tz) -> SilentHours {
        SilentHours {
            tz,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// `as_of - last_activity` in hours, row by row.
pub(super) fn silent_hours(arrays: &[ArrayRef], tz: Tz, function: &str) -> Result<Float64Array> {
    let last = instants(&arrays[0], tz, function)?;
    let as_of = instants(&arrays[1], tz, function)?;
    Ok(binary(&last, &as_of, |last, as_of| {
        hours(as_of.saturating_sub(last))
    })?)
}

impl ScalarUDFImpl for SilentHours {
    fn name(&self) -> &str {
        "silent_hours"
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
                Ok(Arc::new(silent_hours(arrays, self.tz, self.name())?) as ArrayRef)
            },
            vec![],
        )(&args.args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            Documentation::builder(
                DOC_SECTION,
                "Hours from last_activity to as_of, as a double (negative when as_of is earlier). \
                 Elapsed time: timestamps without a timezone are wall-clock times in the \
                 configured timezone, so a span across a DST change counts the hour the clocks \
                 skipped or repeated. NULL when either is NULL.",
                "silent_hours(last_activity, as_of)",
            )
            .with_argument("last_activity", "A timestamp, date or ISO 8601 text.")
            .with_argument("as_of", "A timestamp, date or ISO 8601 text.")
            .with_sql_example(
                "SELECT silent_hours(TIMESTAMP '2026-03-28 12:00', TIMESTAMP '2026-03-29 12:00');\n\
                 -- 23.0 in Europe/Berlin: the clocks skipped an hour that night",
            )
            .build()
        });
        Some(&DOC)
    }
}
