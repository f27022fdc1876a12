//! `health_band(rate, green, yellow)`: a rate as a traffic light.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{ArrayRef, AsArray, StringArray};
use datafusion::arrow::datatypes::{DataType, Float64Type};
use datafusion::common::Result;
use datafusion::functions::utils::make_scalar_function;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::{DOC_SECTION, coerce, number_type};

const SIGNATURE: &str = "health_band(rate: number, green: number, yellow: number)";

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct HealthBand {
    signature: Signature,
}

impl HealthBand {
    pub fn new() -> HealthBand {
        HealthBand {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// Higher is better when `green >= yellow`, lower is better otherwise.
fn band(rate: f64, green: f64, yellow: f64) -> Option<&'static str> {
    if rate.is_nan() || green.is_nan() || yellow.is_nan() {
        return None;
    }
    let at_least = |bound: f64| {
        if green >= yellow {
            rate >= bound
        } else {
            rate <= bound
        }
    };
    Some(if at_least(green) {
        "green"
    } else if at_least(yellow) {
        "yellow"
    } else {
        "red"
    })
}

impl ScalarUDFImpl for HealthBand {
    fn name(&self) -> &str {
        "health_band"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        coerce(SIGNATURE, args, &[number_type, number_type, number_type])
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        make_scalar_function(
            |arrays: &[ArrayRef]| {
                let [rate, green, yellow] =
                    [0, 1, 2].map(|i| arrays[i].as_primitive::<Float64Type>());
                let bands: StringArray = rate
                    .iter()
                    .zip(green)
                    .zip(yellow)
                    .map(|((rate, green), yellow)| band(rate?, green?, yellow?))
                    .collect();
                Ok(Arc::new(bands) as ArrayRef)
            },
            vec![],
        )(&args.args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            Documentation::builder(
                DOC_SECTION,
                "'green' when rate >= green, else 'yellow' when rate >= yellow, else 'red'. When \
                 green < yellow, lower is better: 'green' when rate <= green, 'yellow' when rate \
                 <= yellow. NULL when any argument is NULL or NaN.",
                "health_band(rate, green, yellow)",
            )
            .with_argument("rate", "The value to classify.")
            .with_argument("green", "The bound of the green band.")
            .with_argument("yellow", "The bound of the yellow band.")
            .with_sql_example(
                "SELECT health_band(0.8, 0.9, 0.7); -- yellow\n\
                 SELECT health_band(0.2, 0.15, 0.25); -- yellow (an overtime rate: lower is better)",
            )
            .build()
        });
        Some(&DOC)
    }
}
