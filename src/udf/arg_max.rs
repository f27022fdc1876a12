//! `arg_max(value, key [, key ...])`: aggregate, the value of the row with the greatest key.
//!
//! The latest row of a group (an opportunity's latest stage change, its latest snapshot) in one
//! hash aggregation, where a `row_number()` window sorts the whole input first. Each group keeps
//! a reference to its best row so far; rows are compared in arrow's row format (keys first, then
//! the value), so any orderable type works and a comparison is one `memcmp`. The rows of each
//! batch that holds a group's best are retained, and compacted to one row per group once they
//! outnumber the groups twice over: memory stays proportional to the groups, not the input.

use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, UInt32Array};
use datafusion::arrow::compute::{nullif, prep_null_mask_filter, take};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::arrow::row::{RowConverter, Rows, SortField};
use datafusion::common::{Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::{AggregateOrderSensitivity, format_state_name};
use datafusion::logical_expr::{
    Accumulator, AggregateUDFImpl, Documentation, EmitTo, GroupsAccumulator, Signature, Volatility,
};

use super::{DOC_SECTION, coerce};

const SIGNATURE: &str = "arg_max(value: any, key: orderable [, key: orderable ...])";

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct ArgMax {
    signature: Signature,
}

impl ArgMax {
    pub fn new() -> ArgMax {
        ArgMax {
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// Coercion of an argument: a dictionary is compared (and returned) as its values; any other
/// type the row format can order passes.
fn orderable(t: &DataType) -> Option<DataType> {
    let t = match t {
        DataType::Dictionary(_, value) => value.as_ref().clone(),
        other => other.clone(),
    };
    RowConverter::supports_fields(&[SortField::new(t.clone())]).then_some(t)
}

impl AggregateUDFImpl for ArgMax {
    fn name(&self) -> &str {
        "arg_max"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let rules = vec![orderable as super::Coercion; args.len().max(2)];
        coerce(SIGNATURE, args, &rules)
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        Ok(args[0].clone())
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(ArgMaxAccumulator(Best::new(args.expr_fields)?)))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        Ok(args
            .input_fields
            .iter()
            .enumerate()
            .map(|(i, field)| {
                let part = if i == 0 {
                    "value".to_string()
                } else {
                    format!("key{i}")
                };
                Arc::new(Field::new(
                    format_state_name(args.name, &part),
                    field.data_type().clone(),
                    true,
                ))
            })
            .collect())
    }

    fn groups_accumulator_supported(&self, _args: AccumulatorArgs) -> bool {
        true
    }

    fn create_groups_accumulator(
        &self,
        args: AccumulatorArgs,
    ) -> Result<Box<dyn GroupsAccumulator>> {
        Ok(Box::new(Best::new(args.expr_fields)?))
    }

    /// Rows are compared on their keys and value, never on their position.
    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::Insensitive
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            Documentation::builder(
                DOC_SECTION,
                "Aggregate: the value of the group's row with the greatest key. Further keys \
                 break ties of the ones before them, and a tie of every key goes to the greatest \
                 value, so the result never depends on the order of the rows. Rows with a NULL \
                 key are left out; NULL when none is left (a NULL value is returned as it is). \
                 Keys and value may be of any orderable type (text, numbers, timestamps, dates, \
                 booleans); for several values of the same row, pass a struct and read its \
                 fields. A hash aggregation: much cheaper than a row_number() window over the \
                 group.",
                "arg_max(value, key [, key ...])",
            )
            .with_argument(
                "value",
                "What to return from the row with the greatest key.",
            )
            .with_argument(
                "key",
                "What to compare, in order: a later key breaks a tie of the ones before it.",
            )
            .with_sql_example(
                "SELECT opportunity_id,\n\
                 \x20      max(changed_at) AS entered_at,\n\
                 \x20      arg_max(named_struct('stage', to_stage, 'owner_id', owner_id),\n\
                 \x20              changed_at, ingested_at, source_line)['stage'] AS stage\n\
                 FROM stage_changes GROUP BY opportunity_id",
            )
            .build()
        });
        Some(&DOC)
    }
}

/// No best row for the group yet.
const NONE: u64 = u64::MAX;

/// The best row of every group so far: the state of both accumulators.
struct Best {
    /// Rows of the keys, then the value (so a tie of the keys goes to the greater value).
    converter: RowConverter,
    /// Batches of rows holding at least one group's best when they were added.
    chunks: Vec<Rows>,
    /// Per group: chunk index << 32 | row index, or [`NONE`].
    best: Vec<u64>,
    /// Rows in `chunks`.
    retained: usize,
}

impl std::fmt::Debug for Best {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Best")
            .field("groups", &self.best.len())
            .field("retained", &self.retained)
            .finish()
    }
}

impl Best {
    /// For the arguments `fields` (the value, then the keys).
    fn new(fields: &[FieldRef]) -> Result<Best> {
        let order = fields[1..]
            .iter()
            .chain(&fields[..1])
            .map(|field| SortField::new(field.data_type().clone()))
            .collect();
        Ok(Best {
            converter: RowConverter::new(order)?,
            chunks: Vec::new(),
            best: Vec::new(),
            retained: 0,
        })
    }

    fn row(&self, at: u64) -> datafusion::arrow::row::Row<'_> {
        self.chunks[(at >> 32) as usize].row((at & 0xffff_ffff) as usize)
    }

    /// Takes `columns` (the value, then the keys) into the groups `groups`, leaving out rows that
    /// `filter` does not pass and rows with a NULL key.
    fn update(
        &mut self,
        columns: &[ArrayRef],
        groups: &[usize],
        filter: Option<&BooleanArray>,
        total_groups: usize,
    ) -> Result<()> {
        self.best.resize(total_groups, NONE);
        let mut ordered: Vec<ArrayRef> = columns[1..].to_vec();
        ordered.push(columns[0].clone());
        let rows = self.converter.convert_columns(&ordered)?;
        let keys = &columns[1..];
        let usable = |i: usize| {
            filter.is_none_or(|f| f.is_valid(i) && f.value(i)) && keys.iter().all(|k| k.is_valid(i))
        };
        // This batch's rows become chunk `next` if one of them is taken.
        let next = self.chunks.len();
        let mut taken = false;
        for (i, &group) in groups.iter().enumerate() {
            if !usable(i) {
                continue;
            }
            let current = self.best[group];
            let better = current == NONE
                || if (current >> 32) as usize == next {
                    rows.row(i) > rows.row((current & 0xffff_ffff) as usize)
                } else {
                    rows.row(i) > self.row(current)
                };
            if better {
                self.best[group] = (next as u64) << 32 | i as u64;
                taken = true;
            }
        }
        if taken {
            self.retained += rows.num_rows();
            self.chunks.push(rows);
            if self.retained > 2 * self.best.len() + 65_536 {
                self.compact();
            }
        }
        Ok(())
    }

    /// Keeps only the rows that are some group's best, in one chunk.
    fn compact(&mut self) {
        let winners = self.best.iter().filter(|&&at| at != NONE).count();
        let bytes = self
            .best
            .iter()
            .filter(|&&at| at != NONE)
            .map(|&at| self.row(at).as_ref().len())
            .sum();
        let mut rows = self.converter.empty_rows(winners, bytes);
        let mut best = Vec::with_capacity(self.best.len());
        for &at in &self.best {
            if at == NONE {
                best.push(NONE);
            } else {
                best.push(rows.num_rows() as u64);
                rows.push(self.row(at));
            }
        }
        self.retained = rows.num_rows();
        self.chunks = vec![rows];
        self.best = best;
    }

    /// The best rows of the first `count` groups as columns (the value, then the keys), NULL
    /// for a group without one.
    fn columns(&self, count: usize) -> Result<Vec<ArrayRef>> {
        let groups = &self.best[..count];
        let mut ordered = self.converter.convert_rows(
            groups
                .iter()
                .filter(|&&at| at != NONE)
                .map(|&at| self.row(at)),
        )?;
        let value = ordered.pop().expect("a value column");
        let mut columns = vec![value];
        columns.append(&mut ordered);
        if groups.contains(&NONE) {
            let mut next = 0u32;
            let positions: UInt32Array = groups
                .iter()
                .map(|&at| {
                    (at != NONE).then(|| {
                        next += 1;
                        next - 1
                    })
                })
                .collect();
            columns = columns
                .iter()
                .map(|column| Ok(take(column, &positions, None)?))
                .collect::<Result<_>>()?;
        }
        Ok(columns)
    }

    /// The columns of the groups `emit_to` names, which are then forgotten.
    fn emit(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        let count = match emit_to {
            EmitTo::All => self.best.len(),
            EmitTo::First(n) => n,
        };
        let columns = self.columns(count)?;
        self.best.drain(..count);
        if self.best.is_empty() {
            self.chunks.clear();
            self.retained = 0;
        }
        Ok(columns)
    }

    fn bytes(&self) -> usize {
        self.chunks.iter().map(Rows::size).sum::<usize>()
            + self.best.capacity() * size_of::<u64>()
            + self.converter.size()
    }
}

impl GroupsAccumulator for Best {
    fn update_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        opt_filter: Option<&BooleanArray>,
        total_num_groups: usize,
    ) -> Result<()> {
        self.update(values, group_indices, opt_filter, total_num_groups)
    }

    fn evaluate(&mut self, emit_to: EmitTo) -> Result<ArrayRef> {
        Ok(self.emit(emit_to)?.swap_remove(0))
    }

    fn state(&mut self, emit_to: EmitTo) -> Result<Vec<ArrayRef>> {
        self.emit(emit_to)
    }

    fn merge_batch(
        &mut self,
        values: &[ArrayRef],
        group_indices: &[usize],
        total_num_groups: usize,
    ) -> Result<()> {
        self.update(values, group_indices, None, total_num_groups)
    }

    /// Each row is its own state; a row the filter leaves out gets NULL keys, so it is left out
    /// when merged too.
    fn convert_to_state(
        &self,
        values: &[ArrayRef],
        opt_filter: Option<&BooleanArray>,
    ) -> Result<Vec<ArrayRef>> {
        let Some(filter) = opt_filter else {
            return Ok(values.to_vec());
        };
        let left_out = datafusion::arrow::compute::not(&prep_null_mask_filter(filter))?;
        let mut state = vec![values[0].clone()];
        for key in &values[1..] {
            state.push(nullif(key, &left_out)?);
        }
        Ok(state)
    }

    fn size(&self) -> usize {
        self.bytes()
    }
}

/// Without GROUP BY (and in windows): one group.
#[derive(Debug)]
struct ArgMaxAccumulator(Best);

impl ArgMaxAccumulator {
    fn scalars(&self) -> Result<Vec<ScalarValue>> {
        let columns = if self.0.best.is_empty() {
            // No row yet: NULLs of the argument types.
            let types = self.0.converter.convert_rows(std::iter::empty())?;
            let mut nulls: Vec<ArrayRef> = types
                .iter()
                .map(|c| datafusion::arrow::array::new_null_array(c.data_type(), 1))
                .collect();
            let value = nulls.pop().expect("a value column");
            nulls.insert(0, value);
            nulls
        } else {
            self.0.columns(1)?
        };
        columns
            .iter()
            .map(|column| ScalarValue::try_from_array(column, 0))
            .collect()
    }
}

impl Accumulator for ArgMaxAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let groups = vec![0; values[0].len()];
        self.0.update(values, &groups, None, 1)
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.update_batch(states)
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        self.scalars()
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        Ok(self.scalars()?.swap_remove(0))
    }

    fn size(&self) -> usize {
        size_of::<Self>() + self.0.bytes()
    }
}
