//! `arg_max(value, key [, key ...])`: aggregate, the value of the row with the greatest key.
//!
//! The latest row of a group (an opportunity's latest stage change) in one hash aggregation, where
//! a `row_number()` window sorts the whole input first. Each group keeps a reference to its best
//! row so far ([`Best`] says how rows are compared). The batches that hold a group's best are
//! retained, and compacted to one row per group once their rows outnumber the groups twice over:
//! memory stays proportional to the groups, not the input.

use std::sync::{Arc, LazyLock};

use std::cmp::Ordering;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, UInt32Array, new_empty_array,
};
use datafusion::arrow::compute::{interleave, nullif, prep_null_mask_filter, take};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Int64Type};
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
///
/// Each group's best row is found in one of the retained batches by its position. Most rows are
/// decided by the first key alone: when it is an integer in disguise (a timestamp, a date, an
/// integer), each group's best first key is kept in a vector of its own, so a row that is not
/// better costs one comparison of two integers. A tie of the first key (or a first key of
/// another type) compares the rows in arrow's row format (the keys, then the value), made for a
/// batch only when one of its rows needs it. The output is gathered from the retained batches
/// as it is (`interleave`), never decoded from the row format.
struct Best {
    /// Rows of the keys, then the value (so a tie of the keys goes to the greater value).
    converter: RowConverter,
    /// The argument types: the value, then the keys.
    types: Vec<DataType>,
    /// Batches (the value, then the keys) holding at least one group's best when they were added.
    chunks: Vec<Chunk>,
    /// Per group: chunk index << 32 | row index, or [`NONE`].
    best: Vec<u64>,
    /// Per group: the first key of its best row, when the first key is an integer in disguise.
    first: Option<Vec<i64>>,
    /// Rows in `chunks`.
    retained: usize,
}

struct Chunk {
    columns: Vec<ArrayRef>,
    /// The columns in row format, once a comparison needed them.
    rows: Option<Rows>,
}

impl std::fmt::Debug for Best {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Best")
            .field("groups", &self.best.len())
            .field("retained", &self.retained)
            .finish()
    }
}

/// Whether a key of type `t` orders like the i64 it casts to: the signed integers, dates,
/// times, timestamps and durations (all stored as integers), and the narrower unsigned ones.
fn integer_like(t: &DataType) -> bool {
    use DataType::*;
    matches!(
        t,
        Int8 | Int16
            | Int32
            | Int64
            | UInt8
            | UInt16
            | UInt32
            | Date32
            | Date64
            | Time32(_)
            | Time64(_)
            | Timestamp(_, _)
            | Duration(_)
    )
}

/// `columns` (the value, then the keys) in the converter's order: the keys, then the value.
fn ordered(columns: &[ArrayRef]) -> Vec<ArrayRef> {
    let mut ordered = columns[1..].to_vec();
    ordered.push(columns[0].clone());
    ordered
}

fn unpack(at: u64) -> (usize, usize) {
    ((at >> 32) as usize, (at & 0xffff_ffff) as usize)
}

impl Best {
    /// For the arguments `fields` (the value, then the keys).
    fn new(fields: &[FieldRef]) -> Result<Best> {
        let types: Vec<DataType> = fields.iter().map(|f| f.data_type().clone()).collect();
        let order = types[1..]
            .iter()
            .chain(&types[..1])
            .map(|t| SortField::new(t.clone()))
            .collect();
        Ok(Best {
            converter: RowConverter::new(order)?,
            first: integer_like(&types[1]).then(Vec::new),
            types,
            chunks: Vec::new(),
            best: Vec::new(),
            retained: 0,
        })
    }

    /// The rows of chunk `chunk` in row format, made once.
    fn chunk_rows(&mut self, chunk: usize) -> Result<&Rows> {
        let chunk = &mut self.chunks[chunk];
        if chunk.rows.is_none() {
            chunk.rows = Some(self.converter.convert_columns(&ordered(&chunk.columns))?);
        }
        Ok(chunk.rows.as_ref().expect("made above"))
    }

    /// The best rows of `groups` that have one, as columns (the value, then the keys).
    fn gather(&self, groups: &[u64]) -> Result<Vec<ArrayRef>> {
        let indices: Vec<(usize, usize)> = groups
            .iter()
            .filter(|&&at| at != NONE)
            .map(|&at| unpack(at))
            .collect();
        (0..self.types.len())
            .map(|column| {
                let sources: Vec<&dyn Array> = self
                    .chunks
                    .iter()
                    .map(|chunk| chunk.columns[column].as_ref())
                    .collect();
                if sources.is_empty() {
                    return Ok(new_empty_array(&self.types[column]));
                }
                Ok(interleave(&sources, &indices)?)
            })
            .collect()
    }

    /// Keeps only the rows that are some group's best, in one chunk.
    fn compact(&mut self) -> Result<()> {
        let columns = self.gather(&self.best)?;
        let mut next = 0u64;
        for at in &mut self.best {
            if *at != NONE {
                *at = next;
                next += 1;
            }
        }
        self.retained = next as usize;
        self.chunks = vec![Chunk {
            columns,
            rows: None,
        }];
        Ok(())
    }

    /// The best rows of the first `count` groups as columns (the value, then the keys), NULL
    /// for a group without one.
    fn columns(&self, count: usize) -> Result<Vec<ArrayRef>> {
        let groups = &self.best[..count];
        let mut columns = self.gather(groups)?;
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
        if let Some(first) = &mut self.first {
            first.drain(..count);
        }
        if self.best.is_empty() {
            self.chunks.clear();
            self.retained = 0;
        }
        Ok(columns)
    }

    fn bytes(&self) -> usize {
        self.chunks
            .iter()
            .map(|chunk| {
                chunk
                    .columns
                    .iter()
                    .map(|c| c.get_array_memory_size())
                    .sum::<usize>()
                    + chunk.rows.as_ref().map_or(0, Rows::size)
            })
            .sum::<usize>()
            + self.best.capacity() * size_of::<u64>()
            + self
                .first
                .as_ref()
                .map_or(0, |f| f.capacity() * size_of::<i64>())
            + self.converter.size()
    }
}

impl GroupsAccumulator for Best {
    /// Takes `columns` (the value, then the keys) into the groups `groups`, leaving out rows that
    /// `filter` does not pass and rows with a NULL key.
    fn update_batch(
        &mut self,
        columns: &[ArrayRef],
        groups: &[usize],
        filter: Option<&BooleanArray>,
        total_groups: usize,
    ) -> Result<()> {
        self.best.resize(total_groups, NONE);
        let keys = &columns[1..];
        let first_keys = match &mut self.first {
            Some(first) => {
                first.resize(total_groups, 0);
                let cast = datafusion::arrow::compute::cast(&keys[0], &DataType::Int64)?;
                Some(cast.as_primitive::<Int64Type>().clone())
            }
            None => None,
        };
        let usable = |i: usize| {
            filter.is_none_or(|f| f.is_valid(i) && f.value(i)) && keys.iter().all(|k| k.is_valid(i))
        };
        // This batch becomes chunk `next` if one of its rows is taken; its rows in row format
        // are made at the first tie.
        let next = self.chunks.len();
        let mut rows: Option<Rows> = None;
        let mut taken = false;
        for (i, &group) in groups.iter().enumerate() {
            if !usable(i) {
                continue;
            }
            let current = self.best[group];
            let better = if current == NONE {
                true
            } else {
                let by_first = match (&first_keys, &self.first) {
                    (Some(keys), Some(first)) => keys.value(i).cmp(&first[group]),
                    _ => Ordering::Equal,
                };
                match by_first {
                    Ordering::Greater => true,
                    Ordering::Less => false,
                    Ordering::Equal => {
                        if rows.is_none() {
                            rows = Some(self.converter.convert_columns(&ordered(columns))?);
                        }
                        let rows = rows.as_ref().expect("made above");
                        let (chunk, at) = unpack(current);
                        if chunk == next {
                            rows.row(i) > rows.row(at)
                        } else {
                            rows.row(i) > self.chunk_rows(chunk)?.row(at)
                        }
                    }
                }
            };
            if better {
                self.best[group] = (next as u64) << 32 | i as u64;
                if let (Some(keys), Some(first)) = (&first_keys, &mut self.first) {
                    first[group] = keys.value(i);
                }
                taken = true;
            }
        }
        if taken {
            self.retained += groups.len();
            self.chunks.push(Chunk {
                columns: columns.to_vec(),
                rows,
            });
            if self.retained > 2 * self.best.len() + 65_536 {
                self.compact()?;
            }
        }
        Ok(())
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
        self.update_batch(values, group_indices, None, total_num_groups)
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
            self.0
                .types
                .iter()
                .map(|t| datafusion::arrow::array::new_null_array(t, 1))
                .collect()
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
        self.0.update_batch(values, &groups, None, 1)
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
