//! `pipelines/<name>.yaml` -> [`PipelineSpec`]: a job on a clock. Loading checks every file
//! against the config and the metric catalog, and reports each problem with the file and the
//! field (`validate` shows them all at once). The schedule owns its spec: it names metrics and
//! reports, which sit below it.

use std::path::{Path, PathBuf};

use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use serde::Deserialize;

use crate::config::{Config, RetryConfig};
use crate::lake::schema::Dataset;
use crate::metrics::catalog::Catalog;
use crate::time::PeriodKind;

/// One pipeline. See the shipped `pipelines/*.yaml` for an example of every field.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineSpec {
    /// Equals the file stem.
    pub name: String,
    /// What the pipeline is for, for people reading the file; flowhealth itself does not use it.
    #[serde(default)]
    #[allow(dead_code)]
    pub description: String,
    /// tokio-cron-scheduler syntax: `sec min hour day-of-month month day-of-week [year]`, e.g.
    /// `0 0 8 * * Mon`. Day of month and day of week must both match when both are given.
    pub schedule: String,
    /// IANA timezone of the schedule's wall-clock times; the config's `timezone` when absent.
    #[serde(default)]
    pub timezone: Option<String>,
    /// The period the `metrics` and `report` steps work on: the last complete `week` or `month`
    /// at the scheduled time. `backfill` takes ids of this kind.
    #[serde(default = "default_period")]
    pub period: PeriodKind,
    pub steps: Vec<Step>,
    /// Attempts per step and the backoff between them.
    #[serde(default)]
    pub retries: RetryConfig,
    /// Seconds a whole run may take before it is stopped and recorded as failed.
    #[serde(default = "default_timeout_s")]
    pub timeout_s: f64,
    /// Runs missed while the daemon was down (or busy with the previous run): `all` of them in
    /// order, only the `latest`, or `none`.
    #[serde(default)]
    pub catch_up: CatchUp,
    /// The parsed schedule and timezone, filled in by [`load`].
    #[serde(skip)]
    pub clock: Option<(Cron, Tz)>,
    #[serde(skip)]
    pub path: PathBuf,
}

/// The longest a run may be given: a week.
const MAX_TIMEOUT_S: f64 = 7.0 * 86_400.0;

const fn default_period() -> PeriodKind {
    PeriodKind::Week
}
const fn default_timeout_s() -> f64 {
    3600.0
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CatchUp {
    All,
    #[default]
    Latest,
    None,
}

/// One step of a pipeline; steps run in order and a failed step stops the run.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "StepMap")]
pub enum Step {
    /// `ingest: [actions, stage_changes]`; `ingest: []` lands every dataset.
    Ingest(Vec<String>),
    /// `metrics: [process_health_index, silent_warnings@2]`: names (latest version) or pinned
    /// `name@N`; `metrics: []` is every metric of the pipeline's period kind.
    Metrics(Vec<String>),
    /// `report: weekly` or `report: monthly`: render and send the period's report.
    Report(crate::report::Kind),
    /// `alerts: {}`: push overdue key actions to the webhooks.
    Alerts(NoOptions),
    /// `outbox: {}`: deliver report messages that earlier runs could not send.
    Outbox(NoOptions),
    /// `sql: { query: "...", output: name }`: a custom export, written to
    /// `exports/<output>/period=<id>/part-0.parquet` (the metric parameters are bound).
    Sql(SqlStep),
}

/// A step as written: a mapping with one key (serde_yaml would want `!ingest` tags for an enum).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepMap {
    ingest: Option<Vec<String>>,
    metrics: Option<Vec<String>>,
    report: Option<crate::report::Kind>,
    alerts: Option<NoOptions>,
    outbox: Option<NoOptions>,
    sql: Option<SqlStep>,
}

impl TryFrom<StepMap> for Step {
    type Error = String;

    fn try_from(map: StepMap) -> Result<Step, String> {
        let steps: Vec<Step> = [
            map.ingest.map(Step::Ingest),
            map.metrics.map(Step::Metrics),
            map.report.map(Step::Report),
            map.alerts.map(Step::Alerts),
            map.outbox.map(Step::Outbox),
            map.sql.map(Step::Sql),
        ]
        .into_iter()
        .flatten()
        .collect();
        match <[Step; 1]>::try_from(steps) {
            Ok([step]) => Ok(step),
            Err(steps) => Err(format!(
                "a step is one of ingest, metrics, report, alerts, outbox, sql; this one has {}",
                steps.len()
            )),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoOptions {}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqlStep {
    pub query: String,
    /// Letters, digits, `_` and `-`.
    pub output: String,
}

impl Step {
    pub fn name(&self) -> &'static str {
        match self {
            Step::Ingest(_) => "ingest",
            Step::Metrics(_) => "metrics",
            Step::Report(_) => "report",
            Step::Alerts(_) => "alerts",
            Step::Outbox(_) => "outbox",
            Step::Sql(_) => "sql",
        }
    }
}

impl PipelineSpec {
    pub fn cron(&self) -> &Cron {
        &self
            .clock
            .as_ref()
            .expect("loaded pipelines have a parsed schedule")
            .0
    }

    pub fn tz(&self) -> Tz {
        self.clock
            .as_ref()
            .expect("loaded pipelines have a parsed schedule")
            .1
    }
}

/// Parses a schedule the way tokio-cron-scheduler does (seconds required, day of month AND day of
/// week).
pub fn parse_schedule(text: &str) -> Result<Cron, String> {
    CronParser::builder()
        .seconds(Seconds::Required)
        .dom_and_dow(true)
        .build()
        .parse(text)
        .map_err(|e| format!("`{text}` is not a schedule (sec min hour day month weekday): {e}"))
}

/// The pipelines in `config.pipelines`, checked against the config and the metric `catalog`.
pub fn load(config: &Config, catalog: &Catalog) -> Result<Vec<PipelineSpec>, Vec<String>> {
    let dir = config.resolve_local(&config.pipelines);
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(vec![format!("{}: cannot read: {e}", dir.display())]),
    };
    files.sort();
    let mut specs = Vec::new();
    let mut problems = Vec::new();
    for file in files {
        match load_one(config, catalog, &file) {
            Ok(spec) => specs.push(spec),
            Err(mut errors) => problems.append(&mut errors),
        }
    }
    if problems.is_empty() {
        Ok(specs)
    } else {
        Err(problems)
    }
}

fn load_one(config: &Config, catalog: &Catalog, file: &Path) -> Result<PipelineSpec, Vec<String>> {
    let shown = file.display().to_string();
    let text =
        std::fs::read_to_string(file).map_err(|e| vec![format!("{shown}: cannot read: {e}")])?;
    let document =
        crate::config::vars::parse(&text, |k| std::env::var(k).ok()).map_err(|errors| {
            errors
                .into_iter()
                .map(|e| format!("{shown}: {e}"))
                .collect::<Vec<_>>()
        })?;
    // Every problem of the file at once; the first with its line.
    let (spec, read, kept) = crate::config::load::typed_document::<PipelineSpec>(&document);
    let mut problems: Vec<String> = read.iter().map(|p| format!("{shown}: {p}")).collect();
    let Some(mut spec) = spec else {
        return Err(problems);
    };
    spec.path = file.to_path_buf();
    // Steps that could not be read are left out: a later message names a step by its index in
    // the file.
    let mut problem = |field: &str, message: String| {
        let message = format!("{shown}: {}: {message}", kept.reindex(field));
        problems.push(document.expanded.hide(&message))
    };
    let stem = file
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or_default();
    if spec.name != stem {
        problem(
            "name",
            format!("`{}` must equal the file name `{stem}`", spec.name),
        );
    }
    let tz = match &spec.timezone {
        None => Some(config.timezone),
        Some(name) => match name.parse::<Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => {
                problem(
                    "timezone",
                    format!("`{name}` is not an IANA timezone (e.g. Asia/Shanghai)"),
                );
                None
            }
        },
    };
    let cron = parse_schedule(&spec.schedule)
        .map_err(|e| problem("schedule", e))
        .ok();
    if spec.steps.is_empty() {
        problem("steps", "a pipeline needs at least one step".into());
    }
    crate::config::validation::check_retry(&mut problem, "retries", &spec.retries);
    if !(spec.timeout_s.is_finite() && spec.timeout_s > 0.0 && spec.timeout_s <= MAX_TIMEOUT_S) {
        problem(
            "timeout_s",
            format!("must be more than 0 and at most {MAX_TIMEOUT_S} seconds (a week)"),
        );
    }
    for (i, step) in spec.steps.iter().enumerate() {
        let field = format!("steps[{i}].{}", step.name());
        match step {
            Step::Ingest(datasets) => {
                for name in datasets {
                    if Dataset::from_name(name).is_none() {
                        problem(
                            &field,
                            format!(
                                "unknown dataset `{name}` (expected one of {})",
                                Dataset::ALL.map(Dataset::name).join(", ")
                            ),
                        );
                    }
                }
            }
            Step::Metrics(names) => {
                for name in names {
                    match catalog.resolve(name) {
                        Err(e) => problem(&field, e.to_string()),
                        Ok(metric) if metric.meta.period != spec.period => problem(
                            &field,
                            format!(
                                "`{name}` is a {} metric but the pipeline's period is {}",
                                metric.meta.period.name(),
                                spec.period.name()
                            ),
                        ),
                        Ok(_) => {}
                    }
                }
            }
            Step::Report(kind) => {
                let wanted = kind.period_kind();
                if wanted != spec.period {
                    problem(
                        &field,
                        format!("a {} report needs `period: {}`", kind.name(), wanted.name()),
                    );
                }
            }
            Step::Alerts(_) | Step::Outbox(_) => {}
            Step::Sql(sql) => {
                if sql.output.is_empty()
                    || !sql
                        .output
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    problem(
                        &format!("{field}.output"),
                        format!("`{}` must be letters, digits, _ or -", sql.output),
                    );
                }
                if let Err(e) = datafusion::sql::parser::DFParser::parse_sql(&sql.query) {
                    problem(&format!("{field}.query"), format!("does not parse: {e}"));
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    spec.clock = cron.zip(tz);
    Ok(spec)
}
