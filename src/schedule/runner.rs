//! One run of a pipeline: its steps in order, the whole run under its timeout, recorded in the
//! ledger from start to end. A step that fails is tried again, as the pipeline's `retries` say,
//! only when a retry can help ([`Error::retryable`]: the network, S3, an SMTP server or a webhook
//! that failed, a lock another process holds); a user's error (bad SQL, a bad period, a
//! template) or an internal one fails the run at once. A lock per pipeline in the lake
//! (`pipeline-<name>`) means no two processes run the same pipeline at once (`flowhealth run`
//! beside the daemon, or two daemons on one lake).
//!
//! Nothing a step does can wedge what comes after it: a step that panics is a `failed` run, and
//! every lock a run took is released when it ends, however it ends (done, failed, timed out,
//! panicked: the locks are guards tied to the run, see [`crate::lake::lock`]). A run that had to
//! wait for a lock another run of the daemon held says so in its `outputs`.

use std::panic::AssertUnwindSafe;

use chrono::{DateTime, Utc};
use datafusion::arrow::compute::concat_batches;
use futures::FutureExt;

use super::Trigger;
use super::ledger::{RunRecord, RunStatus};
use super::pipeline::{PipelineSpec, Step};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::lake::lock::{self, LakeLock};
use crate::lake::{Lake, encode_parquet};
use crate::time::Period;

/// Whether a run delivers what it makes: report emails, alerts and the outbox's waiting
/// messages. Scheduled and manual runs send; a backfill holds them unless `--send` (recomputing
/// old periods must not email last quarter's reports to leadership).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    Send,
    /// Reports are rendered into the lake only; alerts are found and not sent; the outbox step
    /// is skipped.
    Hold,
}

/// A run about to start: its ledger record (status `running`).
pub fn record(
    spec: &PipelineSpec,
    scheduled_for: DateTime<Utc>,
    period: &Period,
    trigger: Trigger,
) -> RunRecord {
    let started = Utc::now();
    RunRecord {
        pipeline: spec.name.clone(),
        run_id: format!(
            "{}-{:04x}",
            started.format("%Y%m%dT%H%M%S%.3f"),
            rand::random::<u16>()
        ),
        scheduled_for,
        period: Some(period.id.clone()),
        trigger,
        started,
        finished: None,
        status: RunStatus::Running,
        error: None,
        attempts: 0,
        rows: 0,
        outputs: String::new(),
        host: hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_default(),
        pid: i64::from(std::process::id()),
    }
}

/// Runs `spec` for `period`, recording it as `record` (written at the start and at the end).
/// Returns the final record; an error only when the run could not start or the ledger could not
/// be written (a failing step is a `failed` record, not an error).
pub async fn execute(
    config: &Config,
    lake: &Lake,
    spec: &PipelineSpec,
    period: &Period,
    mut record: RunRecord,
    delivery: Delivery,
) -> Result<RunRecord> {
    let lock = LakeLock::acquire(lake, &format!("pipeline-{}", spec.name)).await?;
    record.write(lake).await?;
    tracing::info!(pipeline = %spec.name, run_id = %record.run_id, period = %period.id, trigger = %record.trigger, "Run started.");
    let label = format!("pipeline {}, run {}", spec.name, record.run_id);
    let run =
        AssertUnwindSafe(steps(config, lake, spec, period, &mut record, delivery)).catch_unwind();
    let (scope, run) = lock::scoped(label, run);
    let outcome = match tokio::time::timeout(crate::config::seconds(spec.timeout_s), run).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(panic)) => Err(Error::Internal(format!(
            "a step panicked (a bug; please report it): {}",
            crate::error::panic_message(panic.as_ref())
        ))),
        Err(_) => {
            let timeout = Error::Timeout {
                seconds: spec.timeout_s,
            };
            Err(match scope.waiting() {
                Some(lock) => timeout.context(format!("waiting for {lock}")),
                None => timeout,
            })
        }
    };
    // The locks of a step that was stopped are released before the run is recorded as ended.
    lock::finish_releases().await;
    let waits = scope.waits();
    if !waits.is_empty() {
        let mut outputs = waits;
        outputs.extend((!record.outputs.is_empty()).then(|| std::mem::take(&mut record.outputs)));
        record.outputs = outputs.join("; ");
    }
    record.finished = Some(Utc::now());
    match outcome {
        Ok(()) => record.status = RunStatus::Succeeded,
        Err(error) => {
            tracing::warn!(pipeline = %spec.name, run_id = %record.run_id, domain = %error.domain(), %error, "Run failed.");
            record.status = RunStatus::Failed;
            record.error = Some(error.to_string());
        }
    }
    record.write(lake).await?;
    lock.release().await?;
    tracing::info!(pipeline = %spec.name, run_id = %record.run_id, status = %record.status, "Run ended.");
    Ok(record)
}

async fn steps(
    config: &Config,
    lake: &Lake,
    spec: &PipelineSpec,
    period: &Period,
    record: &mut RunRecord,
    delivery: Delivery,
) -> Result<()> {
    let mut outputs = Vec::new();
    for (i, step) in spec.steps.iter().enumerate() {
        let mut attempt = 0;
        let done = loop {
            attempt += 1;
            record.attempts += 1;
            match run_step(config, lake, spec, step, period, delivery).await {
                Ok(done) => break done,
                Err(error) if attempt < spec.retries.attempts && error.retryable() => {
                    let wait = spec.retries.backoff(attempt);
                    tracing::warn!(pipeline = %spec.name, step = step.name(), attempt, %error, wait_s = wait.as_secs_f64(), "Step failed; retrying.");
                    tokio::time::sleep(wait).await;
                }
                Err(error) => {
                    return Err(error.context(format!("step {} ({})", i + 1, step.name())));
                }
            }
        };
        record.rows += done.0;
        outputs.extend(done.1);
        record.outputs = outputs.join("; ");
    }
    Ok(())
}

/// Rows and outputs of one step, or why it failed.
async fn run_step(
    config: &Config,
    lake: &Lake,
    spec: &PipelineSpec,
    step: &Step,
    period: &Period,
    delivery: Delivery,
) -> Result<(i64, Vec<String>)> {
    let send = delivery == Delivery::Send;
    match step {
        Step::Ingest(names) => {
            let datasets: Vec<_> = names
                .iter()
                .filter_map(|n| crate::lake::schema::Dataset::from_name(n))
                .collect();
            let report = crate::ingest::ingest(config, &datasets).await?;
            // The step fails as `flowhealth ingest` does (a rejected file: the user's, exit 2).
            if let Some(failure) = report.failure() {
                return Err(failure);
            }
            Ok((report.totals().landed as i64, vec![report.summary()]))
        }
        Step::Metrics(names) => {
            let catalog = crate::metrics::catalog(config)?;
            let metrics = if names.is_empty() {
                let mut latest: Vec<String> = catalog
                    .names()
                    .filter(|n| {
                        catalog
                            .latest(n)
                            .is_some_and(|m| m.meta.period == spec.period)
                    })
                    .map(String::from)
                    .collect();
                latest.sort();
                latest
            } else {
                names.clone()
            };
            let request = crate::metrics::run::Request {
                metrics,
                period: Some(period.id.clone()),
                as_of: None,
            };
            let report = crate::metrics::run::run(config, lake, &catalog, &request).await?;
            let (mut rows, mut written, mut failed) = (0, Vec::new(), Vec::new());
            for outcome in report.outcomes {
                written.push(format!("metrics/{}/{}", outcome.metric, outcome.period));
                match outcome.result {
                    Ok(n) => rows += n,
                    Err(error) => failed.push(error.context(outcome.metric)),
                }
            }
            if !failed.is_empty() {
                return Err(Error::Several(failed));
            }
            Ok((rows as i64, written))
        }
        Step::Report(kind) => {
            let outcome = crate::report::run(config, *kind, Some(&period.id), send).await?;
            if !outcome.failed.is_empty() {
                return Err(Error::Several(outcome.failed));
            }
            let mut written = vec![outcome.html];
            if !send {
                written.push(format!("{} report not sent", kind.name()));
            }
            written.extend(outcome.sent.iter().map(|(key, _)| format!("sent {key}")));
            Ok((outcome.sent.len() as i64, written))
        }
        Step::Alerts(_) => {
            let outcome = crate::alert::run(config, None, !send).await?;
            if !send {
                let found = outcome.unsent.len();
                return Ok((0, vec![format!("alerts: {found} found, not sent")]));
            }
            if !outcome.failed.is_empty() {
                return Err(Error::Several(outcome.failed));
            }
            Ok((
                outcome.notified.len() as i64 + outcome.escalated.len() as i64,
                vec![format!("alerts: {} sent", outcome.notified.len())],
            ))
        }
        Step::Outbox(_) if !send => Ok((0, vec!["outbox: not delivered".into()])),
        Step::Outbox(_) => {
            let outcome = crate::report::flush(config).await?;
            if !outcome.failed.is_empty() {
                return Err(Error::Several(outcome.failed));
            }
            let sent = outcome.sent.iter().map(|(key, _)| format!("sent {key}"));
            Ok((outcome.sent.len() as i64, sent.collect()))
        }
        Step::Sql(sql) => {
            let engine = crate::engine::Engine::open(config, lake).await?;
            let catalog = crate::metrics::catalog(config)?;
            let params = crate::metrics::run::Params::new(config, period, None);
            // The query is the user's: one that does not plan is theirs to fix, not retried.
            let user_sql = |e| Error::from_user_sql(e, None);
            let computed = async {
                // The outputs (metrics.<metric>, breaches, runs) are tables too.
                super::register_output_tables(engine.ctx(), lake, &catalog).await?;
                let frame = engine.ctx().sql(&sql.query).await.map_err(user_sql)?;
                let frame = params.bind(frame).map_err(user_sql)?;
                let schema = std::sync::Arc::new(frame.schema().as_arrow().clone());
                if let Some(problem) = export_columns_problem(&schema, config.timezone) {
                    return Err(Error::Query(format!("{}: {problem}", sql.output)));
                }
                Ok::<_, Error>((schema, engine.collect(frame, user_sql).await?))
            }
            .await;
            engine.close().await?;
            let (schema, batches) = computed?;
            let rows = concat_batches(&schema, &batches)?;
            let rows = crate::lake::for_readers(&rows, config.timezone)?;
            let path = lake.path(&[
                "exports",
                &sql.output,
                &format!("period={}", period.id),
                "part-0.parquet",
            ]);
            lake.put(&path, encode_parquet(&rows)?).await?;
            Ok((rows.num_rows() as i64, vec![lake.relative(&path)]))
        }
    }
}

/// `flowhealth run PIPELINE [--period ID]`: one run now.
pub async fn run_now(config: &Config, name: &str, period: Option<&str>) -> Result<RunRecord> {
    let spec = find(config, name)?;
    let lake = Lake::open(config)?;
    let now = Utc::now();
    let period = match period {
        Some(id) => parse_period(config, &spec, id)?,
        None => super::period_for(&spec, config.timezone, now),
    };
    let record = record(&spec, now, &period, Trigger::Manual);
    execute(config, &lake, &spec, &period, record, Delivery::Send).await
}

/// `flowhealth backfill PIPELINE --from ID --to ID [--send]`: a run for every period in the
/// range, oldest first, with a progress bar, delivering as `delivery` says. Periods with a
/// succeeded run in the ledger are skipped, so an interrupted backfill resumes where it stopped.
/// Returns the records of the runs it made.
pub async fn backfill(
    config: &Config,
    name: &str,
    (from, to): (&str, &str),
    delivery: Delivery,
) -> Result<Vec<RunRecord>> {
    let spec = find(config, name)?;
    let (first, last) = (
        parse_period(config, &spec, from)?,
        parse_period(config, &spec, to)?,
    );
    if first.start > last.start {
        return Err(Error::Usage(format!("--from {from} is after --to {to}")));
    }
    let mut periods = vec![first];
    while let Some(p) = periods.last().filter(|p| p.start < last.start) {
        periods.push(Period::containing(p.kind, p.end));
    }
    let lake = Lake::open(config)?;
    let done: std::collections::HashSet<String> = super::ledger::read(&lake, Some(&spec.name))
        .await?
        .into_iter()
        .filter(|r| r.status == RunStatus::Succeeded)
        .filter_map(|r| r.period)
        .collect();
    let bar = indicatif::ProgressBar::new(periods.len() as u64).with_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} periods, {elapsed}")
            .expect("a valid template"),
    );
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let mut records = Vec::new();
    for period in periods {
        bar.set_message(format!("{} {}", spec.name, period.id));
        if done.contains(&period.id) {
            tracing::info!(pipeline = %spec.name, period = %period.id, "Already done; skipped.");
        } else {
            // The run is recorded as if it had happened when the period ended.
            let at = crate::time::zone::local_to_utc(
                period.end.and_hms_opt(0, 0, 0).expect("midnight"),
                config.timezone,
            );
            let scheduled_for = DateTime::from_timestamp_micros(at).unwrap_or_default();
            let record = record(&spec, scheduled_for, &period, Trigger::Backfill);
            records.push(execute(config, &lake, &spec, &period, record, delivery).await?);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(records)
}

fn find(config: &Config, name: &str) -> Result<PipelineSpec> {
    let catalog = crate::metrics::catalog(config)?;
    let specs = super::pipeline::load(config, &catalog).map_err(Error::Config)?;
    let names: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    specs.into_iter().find(|s| s.name == name).ok_or_else(|| {
        Error::Usage(format!(
            "no pipeline `{name}` in {} (`pipelines:` in the config; pipelines there: {})",
            config.pipelines,
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        ))
    })
}

/// A period asked for by hand (`run --period`, `backfill --from/--to`): one of the pipeline's
/// kind that has ended, since a run stores a period's outputs only once it has (a report of a
/// week still under way would have no stored metrics to show).
fn parse_period(config: &Config, spec: &PipelineSpec, id: &str) -> Result<Period> {
    let period = Period::parse_as(id, spec.period, &format!("pipeline {}", spec.name))?;
    if period.bounds_utc(config.timezone).1 > Utc::now().timestamp_micros() {
        let last = Period::last_complete(spec.period, crate::time::today(config.timezone));
        return Err(Error::Usage(format!(
            "pipeline {}: {id} has not ended yet (it ends {} 00:00 {}), and a run stores a \
             period's outputs once it has ended; the last complete one is {}",
            spec.name,
            period.end,
            config.timezone.name(),
            last.id
        )));
    }
    Ok(period)
}

/// Why the columns of a `sql:` step's rows cannot be written to `exports/<output>/period=<id>/`,
/// if they cannot: a `period` column would duplicate the folder's Hive partition, which pandas
/// and pyarrow refuse to read, and a timestamp without a timezone has no known instant
/// (`docs/contract.md` section 5).
pub(crate) fn export_columns_problem(
    schema: &datafusion::arrow::datatypes::Schema,
    tz: chrono_tz::Tz,
) -> Option<String> {
    match schema.column_with_name("period") {
        Some(_) => Some(
            "the query has a column `period`, which the export's period=<id> folder already gives \
             every reader: rename it (`AS period_id`) or leave it out"
                .to_string(),
        ),
        None => crate::lake::naive_timestamp_problem(schema, tz),
    }
}

/// What `validate` finds in the pipelines' `sql:` steps beyond parsing: each query planned with
/// the parameters of its pipeline's last complete period, its function calls run once on a
/// column of NULLs (`engine::probe`), and its columns checked against the export's folder.
/// The output tables are there as at run time (`metrics.<metric>`, `breaches`, `runs`); a metric
/// version without outputs yet has its table with the columns `validate` planned (`planned`).
pub(crate) async fn check_sql(
    config: &Config,
    catalog: &crate::metrics::catalog::Catalog,
    planned: &crate::metrics::Planned<'_>,
    pipelines: &[PipelineSpec],
) -> Result<Vec<String>> {
    let steps: Vec<(&PipelineSpec, usize, &super::pipeline::SqlStep)> = pipelines
        .iter()
        .flat_map(|spec| {
            spec.steps
                .iter()
                .enumerate()
                .filter_map(move |(i, step)| match step {
                    Step::Sql(sql) => Some((spec, i, sql)),
                    _ => None,
                })
        })
        .collect();
    if steps.is_empty() {
        return Ok(Vec::new());
    }
    let lake = Lake::open(config)?;
    // Planning needs no cluster: `validate` runs nothing, whatever `engine` says.
    let engine = crate::engine::Engine::local(config, &lake).await?;
    let ctx = engine.ctx();
    super::register_output_tables(ctx, &lake, catalog).await?;
    for (metric, schema) in planned {
        crate::metrics::output::register_planned(ctx, &lake, catalog, metric, schema)?;
    }
    let mut problems = Vec::new();
    for (spec, i, sql) in steps {
        let field = format!("{}: steps[{i}].sql.query", spec.path.display());
        let period = Period::last_complete(spec.period, crate::time::today(config.timezone));
        let params = crate::metrics::run::Params::new(config, &period, None);
        let planned = match ctx.sql(&sql.query).await {
            Ok(frame) => params.bind(frame),
            Err(e) => Err(e),
        };
        match planned {
            Err(e) => problems.push(format!("{field}: {}", Error::from_user_sql(e, None))),
            Ok(frame) => {
                problems.extend(
                    crate::engine::probe::functions(ctx, frame.logical_plan())
                        .into_iter()
                        .map(|problem| format!("{field}: {problem}")),
                );
                if let Some(problem) =
                    export_columns_problem(frame.schema().as_arrow(), config.timezone)
                {
                    problems.push(format!("{field}: {problem}"));
                }
            }
        }
    }
    Ok(problems)
}
