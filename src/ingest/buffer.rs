//! Validated rows -> Arrow record batches, one buffer per `dt=` partition. A reading thread drains
//! it after each stretch of a file ([`super::parse`]), which keeps memory flat whatever the size
//! of the input file.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::NaiveDate;
use datafusion::arrow::array::{
    ArrayRef, Decimal128Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;

use super::validate::Value;
use crate::error::Result;

enum ColumnBuilder {
    Text(StringBuilder),
    Int(Int64Builder),
    Timestamp(TimestampMicrosecondBuilder, Option<Arc<str>>),
    Decimal(Decimal128Builder, u8, i8),
}

impl ColumnBuilder {
    fn new(data_type: &DataType) -> ColumnBuilder {
        match data_type {
            DataType::Int64 => ColumnBuilder::Int(Int64Builder::new()),
            DataType::Timestamp(_, tz) => {
                ColumnBuilder::Timestamp(TimestampMicrosecondBuilder::new(), tz.clone())
            }
            DataType::Decimal128(p, s) => ColumnBuilder::Decimal(Decimal128Builder::new(), *p, *s),
            _ => ColumnBuilder::Text(StringBuilder::new()),
        }
    }

    fn append(&mut self, value: &Value<'_>) {
        match (self, value) {
            (ColumnBuilder::Text(b), Value::Text(t)) => b.append_value(t),
            (ColumnBuilder::Int(b), Value::Int(i)) => b.append_value(*i),
            (ColumnBuilder::Timestamp(b, _), Value::Timestamp(t)) => b.append_value(*t),
            (ColumnBuilder::Decimal(b, ..), Value::Decimal(d)) => b.append_value(*d),
            (ColumnBuilder::Text(b), _) => b.append_null(),
            (ColumnBuilder::Int(b), _) => b.append_null(),
            (ColumnBuilder::Timestamp(b, _), _) => b.append_null(),
            (ColumnBuilder::Decimal(b, ..), _) => b.append_null(),
        }
    }

    fn finish(&mut self) -> Result<ArrayRef> {
        Ok(match self {
            ColumnBuilder::Text(b) => Arc::new(b.finish()),
            ColumnBuilder::Int(b) => Arc::new(b.finish()),
            ColumnBuilder::Timestamp(b, tz) => Arc::new(b.finish().with_timezone_opt(tz.clone())),
            ColumnBuilder::Decimal(b, p, s) => {
                Arc::new(b.finish().with_precision_and_scale(*p, *s)?)
            }
        })
    }
}

/// One partition's rows: a builder per column, and the key of each row when rows are keyed.
struct Partition {
    builders: Vec<ColumnBuilder>,
    keys: Vec<u128>,
}

/// A partition's rows as a batch, with the key of each row (empty when rows were not keyed).
pub type Drained = (NaiveDate, RecordBatch, Vec<u128>);

/// Rows waiting to be written, by local date.
pub struct PartitionBuffer {
    schema: SchemaRef,
    partitions: BTreeMap<NaiveDate, Partition>,
}

impl PartitionBuffer {
    pub fn new(schema: SchemaRef) -> PartitionBuffer {
        PartitionBuffer {
            schema,
            partitions: BTreeMap::new(),
        }
    }

    fn partition(&mut self, dt: NaiveDate) -> &mut Partition {
        let schema = &self.schema;
        self.partitions.entry(dt).or_insert_with(|| Partition {
            builders: schema
                .fields()
                .iter()
                .map(|f| ColumnBuilder::new(f.data_type()))
                .collect(),
            keys: Vec::new(),
        })
    }

    /// Appends one row; `values` follow the schema's column order.
    pub fn push<'v>(&mut self, dt: NaiveDate, values: impl IntoIterator<Item = &'v Value<'v>>) {
        let partition = self.partition(dt);
        for (builder, value) in partition.builders.iter_mut().zip(values) {
            builder.append(value);
        }
    }

    /// Appends one row with its key ([`super::keys`]), which [`PartitionBuffer::drain`] hands
    /// back beside the row.
    pub fn push_keyed<'v>(
        &mut self,
        dt: NaiveDate,
        key: u128,
        values: impl IntoIterator<Item = &'v Value<'v>>,
    ) {
        self.partition(dt).keys.push(key);
        self.push(dt, values);
    }

    /// Everything buffered, as one batch per partition with its rows' keys; the buffer is empty
    /// afterwards.
    pub fn drain(&mut self) -> Result<Vec<Drained>> {
        std::mem::take(&mut self.partitions)
            .into_iter()
            .map(|(dt, mut partition)| {
                let columns = partition
                    .builders
                    .iter_mut()
                    .map(ColumnBuilder::finish)
                    .collect::<Result<Vec<_>>>()?;
                Ok((
                    dt,
                    RecordBatch::try_new(self.schema.clone(), columns)?,
                    partition.keys,
                ))
            })
            .collect()
    }
}
