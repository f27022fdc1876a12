//! flowhealth: sales process-flow health, from action logs to a Parquet lake to SQL metrics.
//!
//! # Layout
//!
//! Data flows top to bottom:
//!
//! - [`config`]: `config.yaml` -> a typed [`config::Config`]: `${VAR}` interpolation, per-section
//!   parsing with unknown keys rejected, and semantic validation that reports every problem.
//! - [`lake`]: the lake on `object_store` (local folder or S3): the canonical dataset schemas
//!   ([`lake::schema`]), the partition layout, atomic Parquet writes and the lock that keeps two
//!   runs apart.
//! - [`ingest`]: inbox files (CSV in UTF-8 or GBK, NDJSON, XLSX) -> validated Arrow batches ->
//!   `raw/` and `quarantine/`, with a ledger that makes runs idempotent and crash-safe.
//! - [`engine`]: the DataFusion session over the lake (every dataset a table, `dt` partitions
//!   pruned, the configured timezone, the [`udf`] function library) and `flowhealth query`.
//! - [`udf`]: the process-flow SQL functions (stage rules, silent hours, business calendar),
//!   driven by the config; [`zone`] is the local-time arithmetic they share with ingest.
//! - [`metrics`]: the versioned metric SQL in `queries/` (catalog, lock, periods), the runner
//!   that writes `metrics/` and `breaches/` to the lake, and the golden tests.
//! - [`report`]: the weekly and monthly reports, read from the metric outputs (never
//!   recomputed), rendered through editable templates with a PNG trend chart, and delivered
//!   through a durable outbox (a folder, or SMTP with lettre).
//! - [`alert`]: overdue key actions (silent timeouts, configured deadlines) pushed once to
//!   DingTalk (signed) or JSON webhooks, with escalation, from a ledger in the lake.
//! - [`schedule`]: `pipelines/*.yaml` on a clock: the planner (DST-correct fire times, catch-up,
//!   no overlap), the runner (steps, retries, timeout), the run ledger in `runs/`, the daemon.
//! - [`demo`]: a generated organisation with the article's process problems planted in it,
//!   written to the inbox as real export files.
//! - [`cli`]: the commands; `main.rs` only parses arguments and calls [`cli::run`].

pub mod alert;
pub mod cli;
pub mod config;
pub mod demo;
pub mod engine;
pub mod error;
pub mod ingest;
pub mod lake;
pub mod metrics;
pub mod report;
pub mod schedule;
pub mod time;
pub mod udf;

pub use error::{Error, Result};
