//! flowhealth: sales process-flow health, from action logs to a Parquet lake to SQL metrics.
//!
//! # Layout
//!
//! Data flows top to bottom through floors, each built only on the floors below it (no module
//! imports from its own floor or one above; `scripts/check-layers` checks this and that no two
//! files import each other in a circle). The layers, where to add a metric, an input format, a
//! channel or an engine, and what flows between them: `docs/architecture.md`.
//!
//! 0. [`error`]: the crate's one error type; every error knows its domain (the user's to fix,
//!    an external system's, or internal), which sets the exit status and whether a retry helps.
//! 1. Vocabulary, depending on nothing else:
//!    - [`time`]: the configured timezone's local time (DST included), ISO weeks and months,
//!      timestamp and business-hours parsing, local display. Every module takes its time here.
//!    - [`lake::schema`]: the canonical dataset schemas (`docs/contract.md` section 1).
//! 2. [`config`]: `config.yaml` -> a typed [`config::Config`]: `${VAR}` interpolation,
//!    per-section parsing with unknown keys rejected, and semantic validation, one check per
//!    section, that reports every problem.
//! 3. [`lake`]: the lake on `object_store` (local folder or S3): the partition layout, atomic
//!    Parquet writes and the lock that keeps two runs apart.
//! 4. Into the lake, and the functions over it:
//!    - [`ingest`]: inbox files (CSV and JSON in any encoding, XLSX) -> validated Arrow batches
//!      -> `raw/` and `quarantine/`, with a ledger that makes runs idempotent and crash-safe.
//!    - [`udf`]: the process-flow SQL functions (stage rules, silent hours, business calendar,
//!      and what notes say: templates and promises), driven by the config.
//! 5. [`engine`]: the DataFusion session over the lake (every dataset a table, `dt` partitions
//!    pruned, the configured timezone, the [`udf`] library) and `flowhealth query`.
//!    [`engine::Engine`] is the one place a session is built: everything that runs SQL gets it
//!    there, in this process or on an Apache Ballista cluster ([`engine::cluster`]: the client,
//!    and the `flowhealth scheduler` and `flowhealth executor` processes).
//! 6. [`metrics`]: the versioned metric SQL in `queries/` (catalog, lock), the runner, the lake
//!    layout of their outputs and breaches and their SQL tables ([`metrics::output`]), the
//!    golden tests, and metric values as people read them ([`metrics::display`]).
//! 7. [`notify`]: the chat channels (DingTalk, WeCom, Feishu/Lark, Slack, generic JSON): one
//!    `Channel` trait, a file per vendor's format and signature, delivery with retries, every
//!    error masked (webhook URLs hold tokens).
//! 8. Outputs, read from the metric outputs (never recomputed):
//!    - [`report`]: the weekly and monthly reports, rendered through editable templates with a
//!      PNG trend chart and the chain-wide heat map, delivered through a durable outbox (a
//!      folder, or SMTP with lettre), and as a short card to chat channels.
//!    - [`alert`]: overdue key actions (silent timeouts, configured deadlines, broken promises
//!      in notes) pushed once per channel, routed by team, with escalation, from a ledger in the
//!      lake.
//! 9. Orchestration:
//!    - [`schedule`]: `pipelines/*.yaml` ([`schedule::pipeline`]) on a clock: the planner
//!      (DST-correct fire times, catch-up, no overlap), the runner (steps, retries of external
//!      failures only, timeout), the run ledger in `runs/`, the daemon.
//!    - [`demo`]: a generated organisation with the article's process problems planted in it,
//!      written to the inbox as real export files.
//! 10. [`cli`]: the commands, one function each; `main.rs` only parses arguments and calls
//!     [`cli::run`].

pub(crate) mod alert;
pub mod cli;
pub mod config;
pub mod demo;
pub mod engine;
pub mod error;
pub mod ingest;
pub mod lake;
pub mod metrics;
pub(crate) mod notify;
pub(crate) mod report;
pub(crate) mod schedule;
pub mod time;
pub(crate) mod udf;

pub use error::{Error, Result};
