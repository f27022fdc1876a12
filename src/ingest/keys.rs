//! Row identity for deduplication: a 128-bit hash of a dataset's key columns
//! ([`Dataset::key_columns`]), computed the same way from values being ingested and from rows
//! already in the lake. At 128 bits an accidental collision is not a practical concern.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{DataType, Decimal128Type, TimestampMicrosecondType};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use xxhash_rust::xxh3::xxh3_128;

use super::validate::Value;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::lake::schema::Dataset;

/// The keys are already uniform hashes: use their low bits instead of hashing them again.
#[derive(Default)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 ^= u64::from_le_bytes(word);
        }
    }
    fn write_u128(&mut self, value: u128) {
        self.0 = value as u64;
    }
}

pub type KeySet = HashSet<u128, BuildHasherDefault<PassThrough>>;

/// Appends one key part, tagged by kind so `NULL`, `""` and numbers never collide.
fn encode(buffer: &mut Vec<u8>, value: &Value<'_>) {
    match value {
        Value::Null => buffer.push(0),
        Value::Text(t) => {
            buffer.push(1);
            buffer.extend_from_slice(&(t.len() as u64).to_le_bytes());
            buffer.extend_from_slice(t.as_bytes());
        }
        Value::Timestamp(t) | Value::Int(t) => {
            buffer.push(2);
            buffer.extend_from_slice(&t.to_le_bytes());
        }
        Value::Decimal(d) => {
            buffer.push(3);
            buffer.extend_from_slice(&d.to_le_bytes());
        }
    }
}

/// Hashes rows of one dataset.
pub struct KeyHasher {
    columns: Vec<usize>,
    buffer: Vec<u8>,
}

impl KeyHasher {
    pub fn new(dataset: Dataset) -> KeyHasher {
        let columns = dataset
            .key_columns()
            .iter()
            .map(|c| {
                dataset
                    .column_index(c)
                    .expect("key columns are dataset columns")
            })
            .collect();
        KeyHasher {
            columns,
            buffer: Vec::new(),
        }
    }

    /// The key of a validated row (`values` in the dataset's column order).
    pub fn key(&mut self, values: &[Value<'_>]) -> u128 {
        self.buffer.clear();
        for &i in &self.columns {
            encode(&mut self.buffer, &values[i]);
        }
        xxh3_128(&self.buffer)
    }

    /// Adds the keys of every row of a `raw/` batch holding (at least) the key columns.
    pub fn add_batch(
        &mut self,
        dataset: Dataset,
        batch: &RecordBatch,
        keys: &mut KeySet,
    ) -> Result<()> {
        let columns = dataset
            .key_columns()
            .iter()
            .map(|name| {
                batch.column_by_name(name).ok_or_else(|| {
                    Error::Lake(format!(
                        "raw/{}: a file lacks column {name}",
                        dataset.name()
                    ))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut row = Vec::with_capacity(columns.len());
        for i in 0..batch.num_rows() {
            row.clear();
            for array in &columns {
                row.push(if array.is_null(i) {
                    Value::Null
                } else {
                    match array.data_type() {
                        DataType::Utf8 => Value::Text(array.as_string::<i32>().value(i).into()),
                        DataType::Timestamp(..) => Value::Timestamp(
                            array.as_primitive::<TimestampMicrosecondType>().value(i),
                        ),
                        DataType::Decimal128(..) => {
                            Value::Decimal(array.as_primitive::<Decimal128Type>().value(i))
                        }
                        other => {
                            return Err(Error::Lake(format!(
                                "raw/{}: unexpected key column type {other}",
                                dataset.name()
                            )));
                        }
                    }
                });
            }
            self.buffer.clear();
            for value in &row {
                encode(&mut self.buffer, value);
            }
            keys.insert(xxh3_128(&self.buffer));
        }
        Ok(())
    }
}

/// The keys of every row of `dataset` already in the lake, reading only the key columns, and
/// the files that could not be read (lake-relative path and why): a truncated or foreign Parquet
/// file is named and passed over, so it does not stop every later ingest of the dataset.
pub async fn load(lake: &Lake, dataset: Dataset) -> Result<(KeySet, Vec<String>)> {
    let mut keys = KeySet::default();
    let mut hasher = KeyHasher::new(dataset);
    let unreadable = scan_raw(lake, dataset, dataset.key_columns(), |batch| {
        hasher.add_batch(dataset, batch, &mut keys)
    })
    .await?;
    Ok((keys, unreadable))
}

/// Calls `f` with every batch of `raw/<dataset>/`, reading only `columns`. Returns the files that
/// could not be read (`path: cannot be read (why)`), which it passes over.
pub async fn scan_raw(
    lake: &Lake,
    dataset: Dataset,
    columns: &[&str],
    mut f: impl FnMut(&RecordBatch) -> Result<()>,
) -> Result<Vec<String>> {
    let mut unreadable = Vec::new();
    for object in lake.list(&["raw", dataset.name()]).await? {
        if !object.location.as_ref().ends_with(".parquet") {
            continue;
        }
        let Some(bytes) = lake.get(&object.location).await? else {
            continue;
        };
        let file = lake.relative(&object.location);
        let mut unreadable_file = |e: &dyn std::fmt::Display| {
            tracing::error!(%file, error = %e, "A Parquet file of the lake cannot be read.");
            unreadable.push(format!("{file}: cannot be read ({e})"));
        };
        let builder = match ParquetRecordBatchReaderBuilder::try_new(bytes) {
            Ok(builder) => builder,
            Err(e) => {
                unreadable_file(&e);
                continue;
            }
        };
        let schema = builder.parquet_schema();
        let indices =
            (0..schema.num_columns()).filter(|&i| columns.contains(&schema.column(i).name()));
        let mask = ProjectionMask::leaves(schema, indices);
        let batches = match builder
            .with_projection(mask)
            .with_batch_size(64 * 1024)
            .build()
        {
            Ok(batches) => batches,
            Err(e) => {
                unreadable_file(&e);
                continue;
            }
        };
        for batch in batches {
            match batch {
                Ok(batch) => f(&batch)?,
                Err(e) => {
                    unreadable_file(&e);
                    break;
                }
            }
        }
    }
    Ok(unreadable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_and_empty_text_are_different_keys() {
        let mut hasher = KeyHasher::new(Dataset::Actions);
        let row = |id: Value<'static>| {
            let mut values = vec![Value::Null; Dataset::Actions.columns().len()];
            values[0] = id;
            values
        };
        let a = hasher.key(&row(Value::Null));
        let b = hasher.key(&row(Value::Text("".into())));
        let c = hasher.key(&row(Value::Text("a1".into())));
        assert!(a != b && b != c && a != c);
        assert_eq!(c, hasher.key(&row(Value::Text("a1".into()))));
    }
}
