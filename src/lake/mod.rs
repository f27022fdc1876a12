//! The lake: a root on an object store (a local folder or `s3://bucket/prefix`), its layout
//! (`docs/contract.md` section 5), atomic Parquet writes, and the small JSON state objects
//! flowhealth keeps beside the data under `_flowhealth/` (which Hive-style readers skip).
//!
//! Atomicity: every object is written with one `put` ([`Lake::put`]). On S3 a PUT is atomic. On
//! a local disk the file is written under `_staging/` (a folder Hive-style readers skip) and
//! renamed into place, so a reader listing a folder never meets a file being written. A set of
//! files that must appear together (an ingested file's Parquet files, a metric's output and its
//! breaches) goes through [`commit::Transaction`]: staged, committed by one ledger write, then
//! moved into place.

pub mod commit;
pub mod health;
pub(crate) mod lock;
pub mod schema;

/// The folder at the lake's root where files are written before they are moved into place
/// (`_`: Hive-style readers skip it).
pub const STAGING: &str = "_staging";

/// A new staging id: `<kind>-<UTC time>-<8 hex digits>`, unique, sorted by time within a kind,
/// and telling a recovery how old a staging folder is without looking inside.
pub(crate) fn staging_id(kind: &str) -> String {
    format!(
        "{kind}-{}-{:08x}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S"),
        rand::random::<u32>()
    )
}

use std::sync::Arc;

use bytes::Bytes;
use chrono::NaiveDate;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::physical_plan::parquet::metadata::DFParquetMetadata;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use datafusion::parquet::schema::types::ColumnPath;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    ClientOptions, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};

use crate::config::{Config, StoreConfig};
use crate::error::{Error, Result};

/// A folder of objects on some store: the lake, or an object-store inbox.
#[derive(Debug, Clone)]
pub struct Lake {
    store: Arc<dyn ObjectStore>,
    /// The same store when it is the local file system, to map objects to files.
    local: Option<Arc<LocalFileSystem>>,
    /// The store's base URL (`file:///` or `s3://bucket/`), as DataFusion names stores.
    base_url: String,
    /// The lake's root inside `store`.
    root: Path,
    /// What users see in messages.
    display: String,
}

impl Lake {
    /// Opens the lake of `config`, creating a local root folder if needed.
    pub fn open(config: &Config) -> Result<Lake> {
        Lake::open_store(config, &config.lake)
    }

    /// Opens any configured store location (the lake or an object-store inbox).
    pub fn open_store(config: &Config, store: &StoreConfig) -> Result<Lake> {
        Lake::open_with(store, |path| config.resolve_local(path), true)
    }

    /// Opens the lake of a cluster process (`flowhealth scheduler` / `executor`) from its `lake:`
    /// section alone, relative paths taken from `base_dir`. A local folder must exist: an
    /// executor on a machine where the lake is not mounted must not start on an empty folder.
    pub fn open_existing(store: &StoreConfig, base_dir: &std::path::Path) -> Result<Lake> {
        let resolve = |path: &str| {
            let path = std::path::Path::new(path);
            if path.is_absolute() {
                path.to_path_buf()
            } else {
                base_dir.join(path)
            }
        };
        Lake::open_with(store, resolve, false)
    }

    fn open_with(
        store: &StoreConfig,
        resolve: impl Fn(&str) -> std::path::PathBuf,
        create: bool,
    ) -> Result<Lake> {
        let url = store.url.trim();
        match url.split_once("://") {
            Some(("s3", rest)) => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                let s3 = store.s3.clone().unwrap_or_default();
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                if let Some(endpoint) = &s3.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let Some(region) = &s3.region {
                    builder = builder.with_region(region);
                }
                if let Some(key) = &s3.access_key_id {
                    builder = builder.with_access_key_id(key);
                }
                if let Some(secret) = &s3.secret_access_key {
                    builder = builder.with_secret_access_key(secret.expose());
                }
                // A deadline on every request (object_store's default is 30 s per request, retried
                // for up to three minutes): a store that accepts and then stalls fails the command
                // after about three times `timeout_s`.
                let timeout = crate::config::seconds(s3.timeout_s);
                let mut client = ClientOptions::new()
                    .with_timeout(timeout)
                    .with_connect_timeout(timeout.min(std::time::Duration::from_secs(10)));
                if s3.allow_http {
                    client = client.with_allow_http(true);
                }
                builder = builder.with_client_options(client).with_retry(RetryConfig {
                    max_retries: 2,
                    retry_timeout: timeout * 3,
                    ..RetryConfig::default()
                });
                let store = builder.build()?;
                Ok(Lake {
                    store: Arc::new(store),
                    local: None,
                    base_url: format!("s3://{bucket}/"),
                    root: Path::from(prefix),
                    display: url.trim_end_matches('/').to_string(),
                })
            }
            _ => {
                let local = match url.strip_prefix("file://") {
                    Some(path) => std::path::PathBuf::from(path),
                    None => resolve(url),
                };
                if create {
                    std::fs::create_dir_all(&local).map_err(|e| Error::io(&local, e))?;
                }
                let local = local.canonicalize().map_err(|e| Error::io(&local, e))?;
                let store = Arc::new(LocalFileSystem::new());
                Ok(Lake {
                    store: store.clone(),
                    local: Some(store),
                    base_url: "file:///".into(),
                    root: Path::from_absolute_path(&local)
                        .map_err(|e| Error::Lake(format!("{}: {e}", local.display())))?,
                    display: local.display().to_string(),
                })
            }
        }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The lake's location, for messages.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The URL of a folder of the lake, as DataFusion's listing tables take it.
    pub fn folder_url(&self, parts: &[&str]) -> String {
        format!("{}/", self.file_url(parts))
    }

    /// The URL of `path` (a path of this store), as DataFusion's listing tables take it.
    pub fn object_url(&self, path: &Path) -> String {
        format!("{}{path}", self.base_url)
    }

    /// The store's base URL (`file:///` or `s3://bucket/`), under which DataFusion looks it up.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// The URL of the object at `root/parts...`.
    pub fn file_url(&self, parts: &[&str]) -> String {
        format!("{}{}", self.base_url, self.path(parts))
    }

    /// The local file behind `location`, when the store is the local file system.
    pub fn local_path(&self, location: &Path) -> Option<std::path::PathBuf> {
        self.local
            .as_ref()
            .and_then(|fs| fs.path_to_filesystem(location).ok())
    }

    /// The local folder of the lake, when it is one.
    pub fn local_root(&self) -> Option<std::path::PathBuf> {
        self.local_path(&self.root)
    }

    /// `root/part/part/...`. Each part is one path segment: `/` and `..` inside a part are
    /// percent-encoded by `object_store`, so no value can name a place outside the root.
    pub fn path(&self, parts: &[&str]) -> Path {
        parts
            .iter()
            .fold(self.root.clone(), |path, part| path.join(*part))
    }

    /// The path of `full` relative to the root, for messages and ledgers.
    pub fn relative(&self, full: &Path) -> String {
        match full.prefix_match(&self.root) {
            Some(parts) => parts
                .map(|p| p.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/"),
            None => full.to_string(),
        }
    }

    /// The path of a lake-relative path as [`Lake::relative`] gives it (`raw/actions/dt=.../x`).
    pub fn path_of(&self, relative: &str) -> Path {
        relative
            .split('/')
            .filter(|part| !part.is_empty())
            .fold(self.root.clone(), |path, part| path.join(part))
    }

    /// Writes `bytes` at `path` in one atomic put: a reader sees the whole file or the one it
    /// replaces, and never a partial file beside it. On a local disk the file is written under
    /// `_staging/` and renamed into place (the store's own put would write `<name>#<n>` in the
    /// same folder, which a directory reader such as pandas lists and fails on).
    pub async fn put(&self, path: &Path, bytes: Bytes) -> Result<()> {
        if self.local.is_none() {
            return self.put_direct(path, bytes).await;
        }
        let id = staging_id("put");
        let staged = self
            .path(&[STAGING, &id])
            .join(path.filename().unwrap_or("file"));
        self.put_direct(&staged, bytes).await?;
        let moved = self.store.rename(&staged, path).await;
        if let Some(dir) = self.local_path(&self.path(&[STAGING, &id])) {
            let _ = std::fs::remove_dir_all(dir);
        }
        moved?;
        Ok(())
    }

    /// Writes `bytes` at `path` with the store's own put (a file under `_staging/` or
    /// `_flowhealth/`, which no reader lists).
    pub async fn put_direct(&self, path: &Path, bytes: Bytes) -> Result<()> {
        self.store.put(path, PutPayload::from(bytes)).await?;
        Ok(())
    }

    pub async fn get(&self, path: &Path) -> Result<Option<Bytes>> {
        match self.store.get(path).await {
            Ok(result) => Ok(Some(result.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn delete(&self, path: &Path) -> Result<()> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Every object under `root/parts...`, sorted by path.
    pub async fn list(&self, parts: &[&str]) -> Result<Vec<ObjectMeta>> {
        let prefix = self.path(parts);
        let mut objects: Vec<ObjectMeta> = self.store.list(Some(&prefix)).try_collect().await?;
        objects.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(objects)
    }

    /// A Parquet file's schema (with its metadata) and rows; `None` when there is no such file.
    pub async fn get_parquet(&self, path: &Path) -> Result<Option<(SchemaRef, Vec<RecordBatch>)>> {
        match self.get(path).await? {
            Some(bytes) => Ok(Some(decode_parquet(bytes)?)),
            None => Ok(None),
        }
    }

    /// A Parquet file's schema (with its metadata) from its footer alone; `None` when there is no
    /// such file.
    pub async fn parquet_schema(&self, path: &Path) -> Result<Option<SchemaRef>> {
        let meta = match self.store.head(path).await {
            Ok(meta) => meta,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let schema = DFParquetMetadata::new(self.store.as_ref(), &meta)
            .fetch_schema()
            .await?;
        Ok(Some(Arc::new(schema)))
    }

    /// Stores a JSON state object.
    pub async fn put_json<T: serde::Serialize>(&self, path: &Path, value: &T) -> Result<()> {
        self.put(path, Bytes::from(serde_json::to_vec_pretty(value)?))
            .await
    }
}

/// A Parquet file's schema (with its metadata) and rows.
pub(crate) fn decode_parquet(bytes: Bytes) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?;
    let schema = builder.schema().clone();
    let batches = builder
        .build()?
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Ok((schema, batches))
}

/// The value of a file's Hive partition `key` (`<key>=<value>` in its path), if it has one.
pub(crate) fn partition_value(file: &ObjectMeta, key: &str) -> Option<String> {
    file.location.parts().find_map(|part| {
        part.as_ref()
            .strip_prefix(key)
            .and_then(|rest| rest.strip_prefix('='))
            .map(String::from)
    })
}

/// The `dt=` day of a file, if its path has one.
pub(crate) fn partition_day(file: &ObjectMeta) -> Option<NaiveDate> {
    partition_value(file, "dt").and_then(|text| NaiveDate::parse_from_str(&text, "%Y-%m-%d").ok())
}

/// What identifies one version of a file: path, size, modification time and e-tag.
pub(crate) fn file_version(file: &ObjectMeta) -> String {
    format!(
        "{} {} {} {}",
        file.location,
        file.size,
        file.last_modified.timestamp_micros(),
        file.e_tag.as_deref().unwrap_or_default()
    )
}

/// Columns whose values are (nearly) all different: a dictionary would be built and then thrown
/// away, and building it costs more than the rest of the encoding.
const UNIQUE_COLUMNS: [&str; 7] = [
    "action_id",
    "occurred_at",
    "recorded_at",
    "changed_at",
    "evidence",
    "source_line",
    "raw_record",
];

/// Rows per Parquet row group: a reader splits a file's work by row group, so a large file is read
/// by every core, and statistics prune at this grain.
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Encodes a batch as a Parquet file in memory. Snappy, as most BI tools' own writers use, so
/// every reader opens it.
pub(crate) fn encode_parquet(batch: &RecordBatch) -> Result<Bytes> {
    encode_parquet_as(batch, Compression::SNAPPY, &[])
}

/// Encodes a batch as a Parquet file in memory with `compression`; the `unique` columns (besides
/// the lake's own) are written without a dictionary.
pub(crate) fn encode_parquet_as(
    batch: &RecordBatch,
    compression: Compression,
    unique: &[&str],
) -> Result<Bytes> {
    let mut props = WriterProperties::builder()
        .set_compression(compression)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    for column in UNIQUE_COLUMNS.iter().chain(unique) {
        if batch.schema().column_with_name(column).is_some() {
            props = props.set_column_dictionary_enabled(ColumnPath::from(*column), false);
        }
    }
    let props = props.build();
    let mut buffer = Vec::with_capacity(batch.get_array_memory_size() / 4);
    let mut writer = ArrowWriter::try_new(&mut buffer, batch.schema(), Some(props))?;
    writer.write(batch)?;
    writer.close()?;
    Ok(Bytes::from(buffer))
}

/// Why rows of `schema` cannot be written for readers, if they cannot: a timestamp column
/// without a timezone. The SQL leaves its instant open (`CAST(<lake column> AS TIMESTAMP)` gives
/// UTC wall-clock time, a `TIMESTAMP '...'` literal the time as written, even with an offset), and
/// a time flowhealth guesses may be hours off. `tz` names the zone in the hint.
pub(crate) fn naive_timestamp_problem(
    schema: &datafusion::arrow::datatypes::Schema,
    tz: chrono_tz::Tz,
) -> Option<String> {
    use datafusion::arrow::datatypes::DataType;
    let field = schema
        .fields()
        .iter()
        .find(|f| matches!(f.data_type(), DataType::Timestamp(_, None)))?;
    Some(format!(
        "column `{}` is a timestamp without a timezone, so its instant is not known \
         (CAST(<column> AS TIMESTAMP) gives UTC wall-clock time, a TIMESTAMP '...' literal the \
         time as written): say which with AT TIME ZONE, e.g. \
         `CAST(occurred_at AS TIMESTAMP) AT TIME ZONE 'UTC'` or \
         `TIMESTAMP '2026-03-02 10:00:00' AT TIME ZONE '{}'`, or keep the lake's column as it is",
        field.name(),
        tz.name()
    ))
}

/// `batch` as every Parquet reader (DuckDB, pandas, polars, Spark) reads it alike, for files
/// whose columns come from user SQL (pipeline `sql:` exports, `query --format parquet`, metric
/// outputs; `docs/contract.md` section 5):
/// - every timestamp becomes microseconds, adjusted to UTC (`now()` and `to_timestamp()` give
///   nanoseconds, which Spark refuses), keeping its instant;
/// - string and binary views become plain strings and binaries (older readers lack views).
pub(crate) fn for_readers(batch: &RecordBatch, tz: chrono_tz::Tz) -> Result<RecordBatch> {
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::{DataType, Field};

    if let Some(problem) = naive_timestamp_problem(&batch.schema(), tz) {
        return Err(Error::Query(problem));
    }
    let utc = schema::timestamp_type();
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut columns = Vec::with_capacity(batch.num_columns());
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        let column = match field.data_type() {
            DataType::Timestamp(_, Some(_)) => cast(column, &utc)?,
            DataType::Utf8View => cast(column, &DataType::Utf8)?,
            DataType::BinaryView => cast(column, &DataType::Binary)?,
            _ => column.clone(),
        };
        fields.push(
            Field::new(
                field.name(),
                column.data_type().clone(),
                field.is_nullable(),
            )
            .with_metadata(field.metadata().clone()),
        );
        columns.push(column);
    }
    let schema = datafusion::arrow::datatypes::Schema::new(fields)
        .with_metadata(batch.schema().metadata().clone());
    Ok(RecordBatch::try_new(std::sync::Arc::new(schema), columns)?)
}
