//! `stage_rank(stage)`: the stage's 1-based position in the configured order.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{ArrayRef, Int64Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::functions::utils::make_scalar_function;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::{DOC_SECTION, Stages, coerce, text_type, texts};

const SIGNATURE: &str = "stage_rank(stage: text)";

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct StageRank {
    stages: Arc<Stages>,
    signature: Signature,
}

impl StageRank {
    pub fn new(stages: Arc<Stages>) -> StageRank {
        StageRank {
            stages,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for StageRank {
    fn name(&self) -> &str {
        "stage_rank"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        coerce(SIGNATURE, args, &[text_type])
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        make_scalar_function(
            |arrays: &[ArrayRef]| {
                let ranks: Int64Array = texts(&arrays[0])
                    .map(|stage| Some(self.stages.rank(stage?)? as i64))
                    .collect();
                Ok(Arc::new(ranks) as ArrayRef)
            },
            vec![],
        )(&args.args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            Documentation::builder(
                DOC_SECTION,
                "The stage's position in the configured stage order, 1 for the first; NULL for \
                 an unknown stage or NULL.",
                "stage_rank(stage)",
            )
            .with_argument("stage", "A stage name as configured under `stages:`.")
            .with_sql_example("SELECT stage_rank('proposal'); -- 4 with the shipped config")
            .build()
        });
        Some(&DOC)
    }
}
