//! `stage_path_compliant(from_stage, to_stage [ORDER BY changed_at])`: aggregate, true when no
//! stage change of the group skips a stage.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::{AggregateOrderSensitivity, format_state_name};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, Documentation, Signature, Volatility,
};

use super::{DOC_SECTION, Stages, coerce, text_type, texts};

const SIGNATURE: &str = "stage_path_compliant(from_stage: text, to_stage: text)";

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct StagePathCompliant {
    stages: Arc<Stages>,
    signature: Signature,
}

impl StagePathCompliant {
    pub fn new(stages: Arc<Stages>) -> StagePathCompliant {
        StagePathCompliant {
            stages,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

impl AggregateUDFImpl for StagePathCompliant {
    fn name(&self) -> &str {
        "stage_path_compliant"
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

    fn accumulator(&self, _args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(PathAccumulator {
            stages: self.stages.clone(),
            compliant: None,
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let name = format_state_name(args.name, "compliant");
        Ok(vec![Arc::new(Field::new(name, DataType::Boolean, true))])
    }

    /// Each change is judged on its own from_stage and to_stage, so the order does not change
    /// the result: `ORDER BY changed_at` is accepted for readability and costs nothing.
    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::Insensitive
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            Documentation::builder(
                DOC_SECTION,
                "Aggregate: true when no stage change in the group skips a stage (the rules of \
                 is_stage_skip), false when at least one does. Changes with a NULL to_stage or an \
                 unknown stage are left out; NULL when none is left.",
                "stage_path_compliant(from_stage, to_stage ORDER BY changed_at)",
            )
            .with_argument("from_stage", "The stage left; NULL or '' for the creation.")
            .with_argument("to_stage", "The stage entered.")
            .with_sql_example(
                "SELECT opportunity_id, stage_path_compliant(from_stage, to_stage ORDER BY changed_at)\n\
                 FROM stage_changes GROUP BY opportunity_id",
            )
            .build()
        });
        Some(&DOC)
    }
}

#[derive(Debug)]
struct PathAccumulator {
    stages: Arc<Stages>,
    /// `None` until a change has been judged.
    compliant: Option<bool>,
}

impl PathAccumulator {
    fn add(&mut self, compliant: Option<bool>) {
        if let Some(compliant) = compliant {
            self.compliant = Some(self.compliant.unwrap_or(true) && compliant);
        }
    }
}

impl Accumulator for PathAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        for (from, to) in texts(&values[0]).zip(texts(&values[1])) {
            self.add(self.stages.is_skip(from, to).map(|skip| !skip));
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        for compliant in states[0].as_boolean() {
            self.add(compliant);
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        Ok(vec![ScalarValue::Boolean(self.compliant)])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(ScalarValue::Boolean(self.compliant))
    }

    fn size(&self) -> usize {
        size_of::<Self>()
    }
}
