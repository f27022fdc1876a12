//! `hours_remaining(last_activity, as_of, timeout_h)`: the silent period left before the timeout.

use std::sync::{Arc, LazyLock};

use chrono_tz::Tz;
use datafusion::arrow::array::{ArrayRef, AsArray, Float64Array};
use datafusion::arrow::compute::binary;
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::Result;
use datafusion::functions::utils::make_scalar_function;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::{DOC_SECTION, coerce, number_type, timestamp_type};

const SIGNATURE: &str =
    "hours_remaining(last_activity: timestamp, as_of: timestamp, timeout_h: number)";

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct HoursRemaining {
    tz: Tz,
    signature: Signature,
}

impl HoursRemaining {
    pub fn new(tz: Tz) -> HoursRemaining {
        HoursRemaining {
            tz,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for HoursRemaining {
    fn name(&self) -> &str {
        "hours_remaining"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        coerce(
            SIGNATURE,
            args,
            &[timestamp_type, timestamp_type, number_type],
        )
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        make_scalar_function(
            |arrays: &[ArrayRef]| {
                let silent = super::silent_hours::silent_hours(arrays, self.tz, self.name())?;
                let timeout = arrays[2].as_primitive::<Float64Type>();
                let remaining: Float64Array = binary(timeout, &silent, |t, s| t - s)?;
                Ok(Arc::new(remaining) as ArrayRef)
            },
            vec![],
        )(&args.args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            Documentation::builder(
                DOC_SECTION,
                "timeout_h - silent_hours(last_activity, as_of): hours left before the silent \
                 period times out, negative once overdue. NULL when any argument is NULL.",
                "hours_remaining(last_activity, as_of, timeout_h)",
            )
            .with_argument("last_activity", "A timestamp, date or ISO 8601 text.")
            .with_argument("as_of", "A timestamp, date or ISO 8601 text.")
            .with_argument("timeout_h", "The allowed silent hours, e.g. stage_timeout_h(stage).")
            .with_sql_example(
                "SELECT hours_remaining(TIMESTAMP '2026-03-02 09:00', TIMESTAMP '2026-03-04 09:00', 72); -- 24.0",
            )
            .build()
        });
        Some(&DOC)
    }
}
