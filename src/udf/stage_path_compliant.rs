//! `stage_path_compliant(from_stage, to_stage [ORDER BY changed_at])`: aggregate, true when no
//! stage change of the group skips a stage.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::{AggregateOrderSensitivity, format_state_name};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, Documentation, EmitTo, GroupsAccumulator, Signature, Volatility,
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

    /// Grouped by opportunity, a week has tens of thousands of groups: one state per group in a
    /// vector, rather than an accumulator object each.
    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        _args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(PathGroups {
            stages: self.stages.clone(),
            compliant: Vec::new(),
        }))
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

/// [`PathAccumulator`] for every group at once.
struct PathGroups {
    stages: Arc<Stages>,
    /// Per group: `None` until a change has been judged.
    compliant: Vec<Option<bool>>,
}

impl PathGroups {
    fn add(&mut self, group: usize, compliant: Option<bool>) {
        if let Some(compliant) = compliant {
            let state = &mut self.compliant[group];
            *state = Some(state.unwrap_or(true) && compliant);
        }
    }

    /// Each change's own verdict, NULL where `filter` leaves the change out.
    fn judge(&self, values: &[ArrayRef], filter: Option<&BooleanArray>) -> BooleanArray {
        texts(&values[0])
            .zip(texts(&values[1]))
            .enumerate()
            .map(|(i, (from, to))| {
                let kept = filter.is_none_or(|f| f.is_valid(i) && f.value(i));
                kept.then(|| self.stages.is_skip(from, to).map(|skip| !skip))
                    .flatten()
            })
            .collect()
    }
}

impl GroupsAccumulator for PathGroups {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.compliant.resize(total_num_groups, None);
        let verdicts = self.judge(values, opt_filter);
        for (verdict, &group) in verdicts.iter().zip(group_indices) {
            self.add(group, verdict);
        }
        Ok(())
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        Ok(Arc::new(BooleanArray::from(
            emit_to.take_needed(&mut self.compliant),
        )))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        Ok(vec![self.evaluate(emit_to)?])
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.compliant.resize(total_num_groups, None);
        for (compliant, &group) in values[0].as_boolean().iter().zip(group_indices) {
            self.add(group, compliant);
        }
        Ok(())
    }

    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        Ok(vec![Arc::new(self.judge(values, opt_filter))])
    }

    fn size(&self) -> usize {
        size_of::<Self>() + self.compliant.capacity() * size_of::<Option<bool>>()
    }
}
