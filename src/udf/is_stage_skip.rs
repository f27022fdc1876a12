//! `is_stage_skip(from_stage, to_stage)`: whether a stage change skips a stage
//! (`docs/contract.md` section 4.1).

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{ArrayRef, BooleanArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::functions::utils::make_scalar_function;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};

use super::{DOC_SECTION, Stages, coerce, text_type, texts};

const SIGNATURE: &str = "is_stage_skip(from_stage: text, to_stage: text)";

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct IsStageSkip {
    stages: Arc<Stages>,
    signature: Signature,
}

impl IsStageSkip {
    pub fn new(stages: Arc<Stages>) -> IsStageSkip {
        IsStageSkip {
            stages,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for IsStageSkip {
    fn name(&self) -> &str {
        "is_stage_skip"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        coerce(SIGNATURE, args, &[text_type, text_type])
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        make_scalar_function(
            |arrays: &[ArrayRef]| {
                let skips: BooleanArray = texts(&arrays[0])
                    .zip(texts(&arrays[1]))
                    .map(|(from, to)| self.stages.is_skip(from, to))
                    .collect();
                Ok(Arc::new(skips) as ArrayRef)
            },
            vec![],
        )(&args.args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            Documentation::builder(
                DOC_SECTION,
                "True when the stage change skips a stage: it climbs more than one rank in the \
                 configured order. A creation (from_stage NULL or empty) comes from before the \
                 first stage, so creating an opportunity in a later stage is a skip unless that \
                 stage is `entry: true`. A move to a `from_any` stage (lost) and a backward move \
                 are never skips. NULL when to_stage is NULL or either stage is unknown.",
                "is_stage_skip(from_stage, to_stage)",
            )
            .with_argument("from_stage", "The stage left; NULL or '' for the creation.")
            .with_argument("to_stage", "The stage entered.")
            .with_sql_example(
                "SELECT count(*) FILTER (WHERE is_stage_skip(from_stage, to_stage)) FROM stage_changes",
            )
            .build()
        });
        Some(&DOC)
    }
}
