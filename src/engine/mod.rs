//! The DataFusion session over the lake: every dataset registered as a table (with its `dt`
//! partition column, so a filter on `dt` reads only those folders), the configured timezone and
//! the process-flow function library ([`crate::udf`]). Everything that runs SQL opens an
//! [`Engine`] here; nothing else registers tables or functions.
//!
//! Tables: `actions`, `stage_changes`, `opportunities` (the latest snapshot of each opportunity),
//! `opportunity_snapshots` (every snapshot), and `quarantine_<dataset>` for rejected rows; the
//! configured `stages`, `rules_evidence_required` and `rules_store_actions`; the table function
//! `read_parquet('path')` over any folder of the lake ([`tables`]). The outputs flowhealth
//! writes (metric outputs, breaches, runs) are registered by the modules that know their layout,
//! through [`tables::register_folder`].
//!
//! The SQL runs in this process (`engine.kind: local`, the default) or on an Apache Ballista
//! cluster ([`cluster`]). The two differ only in how the session is made and where a computed
//! table lives: every table is one a cluster can read (Parquet in the lake, or a view), so both
//! run the same SQL over the same tables and give the same rows.

pub mod cluster;
pub mod probe;
pub mod query;
pub mod snapshot;
pub mod tables;

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};
use datafusion::dataframe::DataFrame;
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::error::DataFusionError;
use datafusion::prelude::{SessionConfig, SessionContext};
use object_store::memory::InMemory;
use object_store::{ObjectStoreExt, PutPayload};

use crate::config::{Config, EngineKind};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::lake::schema::Dataset;

/// A SQL session over the lake, in this process or on a Ballista cluster (`engine.kind`).
pub struct Engine {
    ctx: SessionContext,
    lake: Lake,
    /// A cluster session's scheduler and the folder where it puts the tables it computes, so
    /// that the cluster can read them; `None` in a local session, which keeps them in memory.
    cluster: Option<cluster::client::Session>,
}

impl Engine {
    /// A session as `config.engine` says: local, or on the Ballista cluster (checked with a probe
    /// that reads the lake through it, so a cluster that cannot see the lake fails here, loudly).
    ///
    /// Either way, a commit whose writer was killed before its files were all in place is
    /// finished first, so the session reads exactly what the ledgers committed
    /// ([`crate::lake::commit::roll_forward`], best-effort: a reader that cannot move files
    /// reads those in place).
    pub async fn open(config: &Config, lake: &Lake) -> Result<Engine> {
        crate::lake::commit::roll_forward(lake).await;
        match config.engine.kind {
            EngineKind::Local => Engine::local(config, lake).await,
            EngineKind::Ballista => cluster::client::open(config, lake).await,
        }
    }

    /// A session in this process, whatever the configuration says (planning in `validate`).
    /// Unlike [`Engine::open`] it changes nothing in the lake: planning reads no data.
    pub async fn local(config: &Config, lake: &Lake) -> Result<Engine> {
        // Every hash join builds one table from its smaller side (by the inputs' statistics) and
        // probes it from every partition, instead of hash-partitioning both sides. Then the
        // join's dynamic filter on the probe side is a plain range of the build side's keys, which
        // skips whole `dt=` folders of a join on `dt` (silent_warnings v6 reads only the days
        // of the open opportunities' actions); a partitioned join's filter is one range per
        // partition, behind a hash of the row, which no folder can be skipped by. A cluster keeps
        // its own join settings (`cluster::client`).
        let session =
            session_config(config).set_bool("datafusion.optimizer.repartition_joins", false);
        let ctx = SessionContext::new_with_config(session);
        Engine::populate(ctx, config, lake, None).await
    }

    /// Registers the lake's tables, the function library and the configured rules in `ctx`.
    async fn populate(
        ctx: SessionContext,
        config: &Config,
        lake: &Lake,
        cluster: Option<cluster::client::Session>,
    ) -> Result<Engine> {
        let lake_url = ListingTableUrl::parse(lake.folder_url(&[]))?;
        ctx.register_object_store(lake_url.object_store().as_ref(), lake.store().clone());
        for dataset in Dataset::ALL {
            let raw_name = match dataset {
                Dataset::Opportunities => "opportunity_snapshots",
                other => other.name(),
            };
            let folder =
                |area: &str| ListingTableUrl::parse(lake.folder_url(&[area, dataset.name()]));
            register(&ctx, raw_name, folder("raw")?, dataset.raw_schema(), true)?;
            let quarantine = format!("quarantine_{}", dataset.name());
            register(
                &ctx,
                &quarantine,
                folder("quarantine")?,
                dataset.quarantine_schema(),
                true,
            )?;
        }
        // After the session is made: a Ballista session replaces the function list it was given.
        crate::udf::register(&ctx, config);
        tables::register_read_parquet(&ctx, lake, &config.lake.url);
        for (name, sql) in rules::views(config) {
            ctx.sql(&format!("CREATE VIEW {name} AS {sql}")).await?;
        }
        // The dimension: latest snapshot wins.
        ctx.sql(&format!(
            "CREATE VIEW opportunities AS {}",
            snapshot::latest("opportunity_snapshots")
        ))
        .await?;
        Ok(Engine {
            ctx,
            lake: lake.clone(),
            cluster,
        })
    }

    /// The session, to plan and run SQL in.
    pub fn ctx(&self) -> &SessionContext {
        &self.ctx
    }

    /// Whether the SQL runs on a Ballista cluster.
    pub fn is_cluster(&self) -> bool {
        self.cluster.is_some()
    }

    /// Registers computed rows (a metric's carried state, the opportunity snapshot) as table
    /// `name`, replacing one registered before: in memory locally, a Parquet file in the session's
    /// scratch folder of the lake on a cluster.
    pub async fn register_rows(
        &self,
        name: &str,
        schema: SchemaRef,
        batches: Vec<RecordBatch>,
    ) -> Result<()> {
        match self.cluster.as_ref().map(|c| &c.scratch) {
            None => {
                let table = MemTable::try_new(schema, vec![batches])?;
                self.ctx.deregister_table(name)?;
                self.ctx.register_table(name, Arc::new(table))?;
                Ok(())
            }
            Some(scratch) => {
                let rows = datafusion::arrow::compute::concat_batches(&schema, &batches)?;
                let bytes = crate::lake::encode_parquet(&rows)?;
                self.register_copy(scratch, name, schema, bytes).await
            }
        }
    }

    /// Registers a Parquet file's bytes (a consistent copy of a lake file that another run may
    /// replace meanwhile) as table `name`, read with `schema`: from memory locally, from a copy in
    /// the session's scratch folder on a cluster. Either way a query decodes only the columns it
    /// needs.
    pub async fn register_parquet(
        &self,
        name: &str,
        schema: SchemaRef,
        bytes: Bytes,
    ) -> Result<()> {
        match self.cluster.as_ref().map(|c| &c.scratch) {
            None => {
                // A store of its own per table (`memory://<name>/`): registering one replaces
                // whatever was registered under the same URL.
                let memory = InMemory::new();
                let path = object_store::path::Path::from("part-0.parquet");
                memory.put(&path, PutPayload::from(bytes)).await?;
                let url = ListingTableUrl::parse(format!("memory://{name}/{path}"))?;
                self.ctx
                    .register_object_store(url.object_store().as_ref(), Arc::new(memory));
                register(&self.ctx, name, url, schema, false)
            }
            Some(scratch) => self.register_copy(scratch, name, schema, bytes).await,
        }
    }

    async fn register_copy(
        &self,
        scratch: &cluster::Scratch,
        name: &str,
        schema: SchemaRef,
        bytes: Bytes,
    ) -> Result<()> {
        let path = scratch.path(&self.lake, &format!("{name}.parquet"));
        self.lake.put(&path, bytes).await?;
        self.register_file(name, &path, schema)
    }

    /// Registers the Parquet file at `path` in the lake (a metric's output, read by the metrics
    /// that depend on it) as table `name` with `schema`; columns of the file not in `schema`
    /// are not read.
    pub fn register_file(
        &self,
        name: &str,
        path: &object_store::path::Path,
        schema: SchemaRef,
    ) -> Result<()> {
        let url = ListingTableUrl::parse(self.lake.object_url(path))?;
        register(&self.ctx, name, url, schema, false)
    }

    /// Runs `frame` and returns its rows. `failed` makes the caller's error of a failure of the
    /// SQL (a user's query, flowhealth's own); on a cluster, a failure of the cluster itself (the
    /// scheduler out of reach, an executor lost) is an [`crate::error::Error::Cluster`], which a
    /// pipeline retries.
    pub async fn collect(
        &self,
        frame: DataFrame,
        failed: impl FnOnce(DataFusionError) -> Error,
    ) -> Result<Vec<RecordBatch>> {
        match &self.cluster {
            None => frame.collect().await.map_err(failed),
            Some(session) => session.collect(frame, failed).await,
        }
    }

    /// Ends the session: a cluster session removes its scratch folder (one left behind by a
    /// process that died is removed by a later session).
    pub async fn close(self) -> Result<()> {
        match self.cluster {
            Some(session) => session.scratch.remove(&self.lake).await,
            None => Ok(()),
        }
    }
}

/// The options every session starts from, local or on a cluster: the configured timezone, the
/// information schema, and the string types Ballista uses (it turns Utf8View off, so a local
/// session does too: the same query gives the same column types on both).
pub(crate) fn session_config(config: &Config) -> SessionConfig {
    let mut session = SessionConfig::new()
        .with_information_schema(true)
        .set_str("datafusion.execution.time_zone", config.timezone.name())
        .set_bool(
            "datafusion.execution.parquet.schema_force_view_types",
            false,
        )
        .set_bool("datafusion.sql_parser.map_string_types_to_utf8view", false);
    if let Some(partitions) = config.engine.target_partitions {
        session = session.with_target_partitions(partitions);
    }
    session
}

/// The configured stages and rules as views over `VALUES`, so metric SQL joins them instead of
/// repeating the config. A view is part of the plan, so a cluster needs nothing else to read it.
mod rules {
    use crate::config::Config;

    /// `(name, SELECT ...)` of `stages`, `rules_evidence_required` and `rules_store_actions`.
    pub fn views(config: &Config) -> Vec<(&'static str, String)> {
        let text = |s: &str| format!("'{}'", s.replace('\'', "''"));
        let stages = config
            .stages
            .iter()
            .enumerate()
            .map(|(i, s)| {
                format!(
                    "({}, {}, '{}', {}, {}, {})",
                    text(&s.name),
                    i + 1,
                    s.silent_timeout_h,
                    s.terminal,
                    s.from_any,
                    s.entry
                )
            })
            .collect();
        let evidence = config
            .rules
            .evidence_required
            .iter()
            .map(|a| format!("({})", text(a)));
        let store = config
            .rules
            .store_actions
            .iter()
            .map(|(action, minimum)| format!("({}, {minimum})", text(action)));
        vec![
            (
                "stages",
                select(
                    "CAST(column1 AS VARCHAR) AS name, CAST(column2 AS BIGINT) AS stage_rank, \
                     CAST(column3 AS DOUBLE) AS silent_timeout_h, CAST(column4 AS BOOLEAN) AS terminal, \
                     CAST(column5 AS BOOLEAN) AS from_any, CAST(column6 AS BOOLEAN) AS entry",
                    stages,
                    "(NULL, NULL, NULL, NULL, NULL, NULL)",
                ),
            ),
            (
                "rules_evidence_required",
                select(
                    "CAST(column1 AS VARCHAR) AS action_type",
                    evidence.collect(),
                    "(NULL)",
                ),
            ),
            (
                "rules_store_actions",
                select(
                    "CAST(column1 AS VARCHAR) AS action_type, CAST(column2 AS BIGINT) AS daily_minimum",
                    store.collect(),
                    "(NULL, NULL)",
                ),
            ),
        ]
    }

    /// `SELECT columns FROM (VALUES rows)`. An empty list is one row of NULLs filtered out by a
    /// condition the optimizer cannot fold to `false`: a plan it proves empty becomes an empty
    /// relation, which loses its columns on the way to a cluster.
    fn select(columns: &str, rows: Vec<String>, nulls: &str) -> String {
        if rows.is_empty() {
            format!("SELECT {columns} FROM (VALUES {nulls}) AS v WHERE column1 IS NOT NULL")
        } else {
            format!("SELECT {columns} FROM (VALUES {}) AS v", rows.join(", "))
        }
    }
}

/// Registers the Parquet files at `url` (a folder or one file, on the lake's store, registered
/// by the caller) as table `name`, with the schema given (so an empty folder is an empty table);
/// with `hive_dt`, a folder's `dt=` subfolders are the `dt` partition column.
fn register(
    ctx: &SessionContext,
    name: &str,
    url: ListingTableUrl,
    schema: Arc<Schema>,
    hive_dt: bool,
) -> Result<()> {
    let mut options =
        ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
    if hive_dt {
        options = options.with_table_partition_cols(vec![("dt".to_string(), DataType::Date32)]);
    }
    let table_config = ListingTableConfig::new(url)
        .with_listing_options(options)
        .with_schema(schema);
    ctx.deregister_table(name)?;
    ctx.register_table(name, Arc::new(ListingTable::try_new(table_config)?))?;
    Ok(())
}

/// Names of the tables and views a query can use, for hints and `\d`: those of the default
/// schema by name, the others qualified (`metrics.evidence_rate`), `information_schema` left out.
pub(crate) fn table_names(ctx: &SessionContext) -> Vec<String> {
    let Some(catalog) = ctx.catalog("datafusion") else {
        return Vec::new();
    };
    let mut names = Vec::new();
    let mut schemas = catalog.schema_names();
    // The default schema first, then the others by name.
    schemas.sort_by_key(|s| (s != "public", s.clone()));
    for schema_name in schemas {
        if schema_name == "information_schema" {
            continue;
        }
        let Some(schema) = catalog.schema(&schema_name) else {
            continue;
        };
        let mut tables = schema.table_names();
        tables.sort();
        names.extend(tables.into_iter().map(|t| match schema_name.as_str() {
            "public" => t,
            other => format!("{other}.{t}"),
        }));
    }
    names
}

/// Record batches -> one JSON object per row, for templates and serde: NULLs are kept as null
/// (`none` in a template, not undefined), timestamps are RFC 3339 text.
pub fn json_rows(
    batches: &[RecordBatch],
) -> Result<Vec<serde_json::Map<String, serde_json::Value>>> {
    use datafusion::arrow::json::{WriterBuilder, writer::JsonArray};
    let mut writer = WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, JsonArray>(Vec::new());
    for batch in batches {
        writer.write(batch)?;
    }
    writer.finish()?;
    let bytes = writer.into_inner();
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    Ok(serde_json::from_slice(&bytes)?)
}

/// A column of a [`json_rows`] row as text (numbers spelled out); None for NULL or absent.
pub(crate) fn row_text(
    row: &serde_json::Map<String, serde_json::Value>,
    column: &str,
) -> Option<String> {
    match row.get(column)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// A column of a [`json_rows`] row as a number (numeric text parsed); None otherwise.
pub(crate) fn row_number(
    row: &serde_json::Map<String, serde_json::Value>,
    column: &str,
) -> Option<f64> {
    match row.get(column)? {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_rule_tables_are_views_that_keep_their_columns_when_empty() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "lake: {{ url: {}/lake }}\nstages: [{{ name: \"it's\" }}, {{ name: b, silent_timeout_h: 0.25 }}]\n\
             rules: {{ evidence_required: [], store_actions: {{}} }}\n",
            dir.path().display()
        );
        let config = Config::parse(&text, "test.yaml", ".".into(), |_| None).unwrap();
        let lake = Lake::open(&config).unwrap();
        let engine = Engine::local(&config, &lake).await.unwrap();
        let ctx = engine.ctx();
        for table in ["rules_evidence_required", "rules_store_actions"] {
            let frame = ctx.sql(&format!("SELECT * FROM {table}")).await.unwrap();
            // An empty relation loses its columns on the way to a cluster: the optimizer must
            // not see through the view.
            let plan = frame.clone().into_optimized_plan().unwrap();
            assert!(
                !plan.display_indent().to_string().contains("EmptyRelation"),
                "{plan}"
            );
            assert_eq!(
                frame
                    .collect()
                    .await
                    .unwrap()
                    .iter()
                    .map(|b| b.num_rows())
                    .sum::<usize>(),
                0
            );
        }
        let rows = ctx
            .sql("SELECT name, stage_rank, silent_timeout_h, terminal FROM stages ORDER BY stage_rank")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let schema = rows[0].schema();
        let types: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().to_string())
            .collect();
        assert_eq!(types, ["Utf8", "Int64", "Float64", "Boolean"]);
        let text = datafusion::arrow::util::pretty::pretty_format_batches(&rows)
            .unwrap()
            .to_string();
        assert!(
            text.contains("| it's | 1          | 48.0")
                && text.contains("| b    | 2          | 0.25"),
            "{text}"
        );
    }
}
