//! `stage_timeout_h(stage)`: the stage's configured silent-period timeout in hours.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{ArrayRef, Float64Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::functions::utils::make_scalar_function;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::{DOC_SECTION, Stages, coerce, text_type, texts};

const SIGNATURE: &str = "stage_timeout_h(stage: text)";

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct StageTimeoutH {
    stages: Arc<Stages>,
    signature: Signature,
}

impl StageTimeoutH {
    pub fn new(stages: Arc<Stages>) -> StageTimeoutH {
        StageTimeoutH {
            stages,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for StageTimeoutH {
    fn name(&self) -> &str {
        "stage_timeout_h"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        coerce(SIGNATURE, args, &[text_type])
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Float64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        make_scalar_function(
            |arrays: &[ArrayRef]| {
                let timeouts: Float64Array = texts(&arrays[0])
                    .map(|stage| self.stages.timeout_h(stage?))
                    .collect();
                Ok(Arc::new(timeouts) as ArrayRef)
            },
            vec![],
        )(&args.args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            Documentation::builder(
                DOC_SECTION,
                "Hours an opportunity may stay silent in the stage (`silent_timeout_h`, 48 unless \
                 configured); NULL for an unknown stage or NULL.",
                "stage_timeout_h(stage)",
            )
            .with_argument("stage", "A stage name as configured under `stages:`.")
            .with_sql_example("SELECT stage_timeout_h('proposal'); -- 72 with the shipped config")
            .build()
        });
        Some(&DOC)
    }
}
