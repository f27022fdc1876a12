//! Validated rows -> Arrow record batches, one buffer per `dt=` partition. The caller flushes when
//! [`PartitionBuffer::rows`] reaches its bound, which is what keeps memory flat whatever the size
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

/// Rows waiting to be written, by local date.
pub struct PartitionBuffer {
    schema: SchemaRef,
    partitions: BTreeMap<NaiveDate, Vec<ColumnBuilder>>,
    rows: usize,
}

impl PartitionBuffer {
    pub fn new(schema: SchemaRef) -> PartitionBuffer {
        PartitionBuffer {
            schema,
            partitions: BTreeMap::new(),
            rows: 0,
        }
    }

    /// Appends one row; `values` follow the schema's column order.
    pub fn push<'v>(&mut self, dt: NaiveDate, values: impl IntoIterator<Item = &'v Value<'v>>) {
        let schema = &self.schema;
        let builders = self.partitions.entry(dt).or_insert_with(|| {
            schema
                .fields()
                .iter()
                .map(|f| ColumnBuilder::new(f.data_type()))
                .collect()
        });
        for (builder, value) in builders.iter_mut().zip(values) {
            builder.append(value);
        }
        self.rows += 1;
    }

    /// Rows buffered across all partitions.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Everything buffered, as one batch per partition; the buffer is empty afterwards.
    pub fn drain(&mut self) -> Result<Vec<(NaiveDate, RecordBatch)>> {
        self.rows = 0;
        std::mem::take(&mut self.partitions)
            .into_iter()
            .map(|(dt, mut builders)| {
                let columns = builders
                    .iter_mut()
                    .map(ColumnBuilder::finish)
                    .collect::<Result<Vec<_>>>()?;
                Ok((dt, RecordBatch::try_new(self.schema.clone(), columns)?))
            })
            .collect()
    }
}
