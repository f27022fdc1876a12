//! `local_date(ts)`: the date of an instant in the configured timezone.

use std::sync::{Arc, LazyLock};

use chrono_tz::Tz;
use datafusion::arrow::array::{ArrayRef, Date32Array};
use datafusion::arrow::datatypes::{DataType, Date32Type};
use datafusion::common::Result;
use datafusion::functions::utils::make_scalar_function;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::{DOC_SECTION, coerce, instants, timestamp_type};
use crate::time::Zone;

const SIGNATURE: &str = "local_date(ts: timestamp)";

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct LocalDate {
    tz: Tz,
    signature: Signature,
}

impl LocalDate {
    pub fn new(tz: Tz) -> LocalDate {
        LocalDate {
            tz,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for LocalDate {
    fn name(&self) -> &str {
        "local_date"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        coerce(SIGNATURE, args, &[timestamp_type])
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Date32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        make_scalar_function(
            |arrays: &[ArrayRef]| {
                let zone = Zone::new(self.tz);
                let dates: Date32Array = instants(&arrays[0], self.tz, self.name())?
                    .unary(|micros| Date32Type::from_naive_date(zone.local_date(micros)));
                Ok(Arc::new(dates) as ArrayRef)
            },
            vec![],
        )(&args.args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            Documentation::builder(
                DOC_SECTION,
                "The local date of an instant in the configured timezone: the day a rep or store \
                 manager saw on the wall (the lake's dt= partitions use the same rule). A \
                 timestamp without a timezone is already local: its date is returned. Use it \
                 rather than CAST(ts AS DATE) or date_trunc('day', ts), which take the UTC day of \
                 the lake's UTC timestamps.",
                "local_date(ts)",
            )
            .with_argument("ts", "A timestamp, date or ISO 8601 text.")
            .with_sql_example(
                "SELECT local_date(changed_at) AS day, count(*) FROM stage_changes GROUP BY 1",
            )
            .build()
        });
        Some(&DOC)
    }
}
