//! `flowhealth metrics run`: computes metrics for a period and writes each, with its threshold
//! breaches, to the lake through [`super::output`] (which owns the layout).
//!
//! Metrics run in dependency levels: the ones of a level concurrently, a dependent after what it
//! reads (registered in the session as a table named after the metric). A metric that fails is
//! reported, its dependents are skipped, and the others carry on.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use chrono::{Duration, Utc};
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, Float64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::ScalarValue;
use datafusion::prelude::SessionContext;
use futures::future::join_all;

use super::catalog::{Catalog, LooksBack, Metric};
use super::output::{self, Breach};
use crate::config::{Config, Threshold};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::lake::health;
use crate::time::Period;

/// What to compute.
#[derive(Debug, Default)]
pub struct Request {
    /// `name` or `name@N`; every metric's latest version when empty.
    pub metrics: Vec<String>,
    /// A week (`2026-W09`) or month (`2026-03`) id; by default each metric's last complete period.
    pub period: Option<String>,
    /// ISO 8601; by default the end of the period.
    pub as_of: Option<String>,
}

/// The outcome of one metric.
#[derive(Debug)]
pub struct Outcome {
    pub metric: String,
    pub period: String,
    /// Rows written, or why not.
    pub result: Result<usize>,
    pub breaches: Vec<Breach>,
    /// The period whose output a carrying metric started from (see `carry.rs`).
    pub carried_from: Option<String>,
    /// Whether the rows were written to the lake: only a run at the period's own end, once that
    /// end has passed, writes (a period's stored output is that period as of its end).
    pub stored: bool,
    /// The rows computed (as written, without run_id and as_of), when the metric ran.
    pub rows: Option<RecordBatch>,
}

#[derive(Debug)]
pub struct Report {
    pub run_id: String,
    pub outcomes: Vec<Outcome>,
    /// The configured timezone, in which the rows shown are displayed.
    pub timezone: chrono_tz::Tz,
}

impl Report {
    pub fn exit_code(&self) -> i32 {
        if self.outcomes.iter().all(|o| o.result.is_ok()) {
            0
        } else {
            1
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "run {}", self.run_id)?;
        for outcome in &self.outcomes {
            match &outcome.result {
                Ok(rows) => {
                    writeln!(
                        f,
                        "  {:32} {:9} {:>10}  {}{}{}",
                        outcome.metric,
                        outcome.period,
                        super::display::count(*rows, "row", "rows"),
                        super::display::count(outcome.breaches.len(), "breach", "breaches"),
                        match &outcome.carried_from {
                            Some(from) => format!("  (from {from}'s state)"),
                            None => String::new(),
                        },
                        if outcome.stored {
                            ""
                        } else {
                            "  (not stored: a period is stored as of its own end, once that has passed)"
                        }
                    )?;
                    // What a run that stores nothing computed is shown instead (20 rows at most).
                    if let (false, Some(batch)) = (outcome.stored, &outcome.rows) {
                        let shown = batch.slice(0, batch.num_rows().min(20));
                        match super::display::table(&shown, self.timezone) {
                            Ok(table) => writeln!(f, "{table}")?,
                            Err(e) => writeln!(f, "      (rows not shown: {e})")?,
                        }
                    }
                }
                Err(error) => writeln!(
                    f,
                    "  {:32} {:9} FAILED: {error}",
                    outcome.metric, outcome.period
                )?,
            }
            for breach in &outcome.breaches {
                writeln!(f, "      ! {}", breach.advice)?;
            }
        }
        Ok(())
    }
}

/// Runs the metrics of `request`.
pub async fn run(
    config: &Config,
    lake: &Lake,
    catalog: &Catalog,
    request: &Request,
) -> Result<Report> {
    if catalog.metrics.is_empty() {
        return Err(Error::Usage(format!(
            "no metrics in {}: `queries:` in the config names the folder of <metric>/v<N>.sql files",
            catalog.dir.display()
        )));
    }
    let selected = select(catalog, &request.metrics)?;
    let today = crate::time::today(config.timezone);
    let given = request.period.as_deref().map(Period::parse).transpose()?;
    let period_of = |metric: &Metric| -> Result<Period> {
        match &given {
            Some(period) => {
                period.expect_kind(metric.meta.period, &metric.id())?;
                Ok(period.clone())
            }
            None => Ok(Period::last_complete(metric.meta.period, today)),
        }
    };
    // Without names, a period id picks the metrics computed per that kind of period.
    let selected: Vec<&Metric> = match &given {
        Some(period) if request.metrics.is_empty() => selected
            .into_iter()
            .filter(|m| m.meta.period == period.kind)
            .collect(),
        _ => selected,
    };
    let as_of = request
        .as_of
        .as_deref()
        .map(|text| crate::time::parse::parse_as_of(config.timezone, text))
        .transpose()?;

    // Every metric's period, before anything runs: a wrong kind of period is the user's to fix.
    let periods: HashMap<&str, Period> = selected
        .iter()
        .map(|m| Ok((m.name(), period_of(m)?)))
        .collect::<Result<_>>()?;
    let started = Instant::now();
    let engine = Engine::open(config, lake).await?;
    // The latest opportunity snapshot, from the one the previous run kept (see `snapshot.rs`).
    if selected.iter().any(|m| m.sql.contains("opportunities"))
        && let Err(error) = crate::engine::snapshot::register_opportunities(&engine, lake).await
    {
        engine.close().await?;
        return Err(health::name_unreadable(lake, error).await);
    }
    tracing::debug!("session ready in {:?}", started.elapsed());
    let report = run_levels(config, lake, catalog, &engine, &selected, &periods, as_of).await;
    engine.close().await?;
    report
}

/// Runs `selected` in dependency levels in `engine`'s session.
async fn run_levels(
    config: &Config,
    lake: &Lake,
    catalog: &Catalog,
    engine: &Engine,
    selected: &[&Metric],
    periods: &HashMap<&str, Period>,
    as_of: Option<i64>,
) -> Result<Report> {
    let run_id = format!(
        "{}-{:08x}",
        Utc::now().format("%Y%m%dT%H%M%SZ"),
        rand::random::<u32>()
    );
    let mut outcomes: Vec<Outcome> = Vec::new();
    // What failed so far, by metric name: its dependents are skipped with its domain.
    let mut failed: HashMap<String, Error> = HashMap::new();
    // A dependency is the metric's latest version asked for: when a run computes two versions of
    // one metric (a golden case checking both), the newer is the table the others read.
    let mut newest: HashMap<&str, u32> = HashMap::new();
    for metric in selected {
        let version = newest.entry(metric.name()).or_insert(metric.version());
        *version = (*version).max(metric.version());
    }
    for level in levels(selected) {
        let jobs = level.iter().map(|metric| {
            let failed = &failed;
            async move {
                let period = periods[metric.name()].clone();
                let dependency = metric.meta.depends.iter();
                if let Some((name, error)) = dependency
                    .filter_map(|d| failed.get(d).map(|e| (d, e)))
                    .next()
                {
                    let message = format!("skipped: depends on {name}, which failed");
                    return Err(Error::reported(message, error));
                }
                let mut params = Params::new(config, &period, as_of);
                let started = Instant::now();
                let carry =
                    super::carry::prepare(engine, config, lake, metric, &period, params.as_of)
                        .await?;
                params.carry_from(config, carry.as_of);
                if let Some(looks_back) = &metric.meta.looks_back {
                    register_history(engine, config, lake, catalog, looks_back, &period).await?;
                }
                let prepared = started.elapsed();
                let (schema, batches) = compute(engine, metric, &params).await?;
                tracing::debug!(
                    "{}: computed in {:?} (carried state: {prepared:?})",
                    metric.id(),
                    started.elapsed()
                );
                Ok((period, params, carry, schema, batches))
            }
        });
        let results = join_all(jobs).await;
        for (metric, result) in level.iter().zip(results) {
            let outcome = match result {
                Ok((period, params, carry, schema, batches)) => {
                    let carried_from = carry.from;
                    let output = Output {
                        schema,
                        batches: &batches,
                        metadata: carry.metadata,
                    };
                    // As of its own end, and only once that end has passed: a week computed
                    // on its Wednesday is shown, not stored as the week (contract section 3).
                    let end = period.bounds_utc(config.timezone).1;
                    let stored = params.as_of == end && Utc::now().timestamp_micros() >= end;
                    let written = write(
                        config, lake, metric, &period, &params, &run_id, output, stored,
                    )
                    .await;
                    // Dependents read the rows as written (timestamps as microseconds UTC),
                    // through a table any engine, local or a cluster, can read: the file just
                    // written (its run_id and as_of columns are not in the schema given), or,
                    // when nothing is stored, the rows themselves.
                    let written = match written {
                        Ok((rows, breaches))
                            if newest.get(metric.name()) == Some(&metric.version()) =>
                        {
                            let registered = if stored {
                                engine.register_file(
                                    metric.name(),
                                    &output::output_path(lake, metric, &period.id),
                                    rows.schema(),
                                )
                            } else {
                                engine
                                    .register_rows(metric.name(), rows.schema(), vec![rows.clone()])
                                    .await
                            };
                            registered.map(|()| (rows, breaches))
                        }
                        other => other,
                    };
                    match written {
                        Ok((rows, breaches)) => Outcome {
                            metric: metric.id(),
                            period: period.id,
                            result: Ok(rows.num_rows()),
                            breaches,
                            carried_from,
                            stored,
                            rows: Some(rows),
                        },
                        Err(e) => Outcome {
                            metric: metric.id(),
                            period: period.id,
                            result: Err(e),
                            breaches: vec![],
                            carried_from,
                            stored: false,
                            rows: None,
                        },
                    }
                }
                Err(error) => Outcome {
                    metric: metric.id(),
                    period: periods[metric.name()].id.clone(),
                    result: Err(error),
                    breaches: vec![],
                    carried_from: None,
                    stored: false,
                    rows: None,
                },
            };
            if let Err(error) = &outcome.result {
                let copy = Error::reported(error.to_string(), error);
                failed.insert(metric.name().to_string(), copy);
            }
            outcomes.push(outcome);
        }
    }
    // A metric that failed on a file of the lake that cannot be read says which file, and what
    // to do (the lake is scanned once, however many failed).
    if outcomes
        .iter()
        .any(|o| o.result.as_ref().is_err_and(health::is_unreadable_file))
    {
        let found = health::unreadable(lake).await?;
        if !found.is_empty() {
            for outcome in &mut outcomes {
                outcome.result = match std::mem::replace(&mut outcome.result, Ok(0)) {
                    Err(error) if health::is_unreadable_file(&error) => {
                        Err(health::named(error, &found))
                    }
                    result => result,
                };
            }
        }
    }
    Ok(Report {
        run_id,
        outcomes,
        timezone: config.timezone,
    })
}

/// The metrics asked for, plus what they depend on (latest versions unless asked for by version).
fn select<'a>(catalog: &'a Catalog, specs: &[String]) -> Result<Vec<&'a Metric>> {
    let mut selected: Vec<&Metric> = if specs.is_empty() {
        catalog
            .names()
            .filter_map(|name| catalog.latest(name))
            .collect()
    } else {
        specs
            .iter()
            .map(|spec| catalog.resolve(spec))
            .collect::<Result<_>>()?
    };
    let mut i = 0;
    while i < selected.len() {
        for dependency in selected[i].meta.depends.clone() {
            if !selected.iter().any(|m| m.name() == dependency) {
                selected.push(catalog.resolve(&dependency)?);
            }
        }
        i += 1;
    }
    Ok(selected)
}

/// Metrics grouped so that each level only depends on earlier levels.
pub(crate) fn levels<'a>(metrics: &[&'a Metric]) -> Vec<Vec<&'a Metric>> {
    let mut level_of: HashMap<&str, usize> = HashMap::new();
    let mut remaining: Vec<&Metric> = metrics.to_vec();
    let mut levels: Vec<Vec<&Metric>> = Vec::new();
    while !remaining.is_empty() {
        let (ready, waiting): (Vec<&Metric>, Vec<&Metric>) = remaining.iter().partition(|m| {
            m.meta.depends.iter().all(|d| {
                level_of.contains_key(d.as_str()) || !metrics.iter().any(|x| x.name() == d)
            })
        });
        if ready.is_empty() {
            // A dependency cycle: run the rest anyway; their SQL will fail to find the tables.
            levels.push(waiting);
            break;
        }
        for metric in &ready {
            level_of.insert(metric.name(), levels.len());
        }
        levels.push(ready);
        remaining = waiting;
    }
    levels
}

/// The named parameters every metric can use, bound (never pasted into the SQL).
pub(crate) struct Params {
    values: Vec<(String, ScalarValue)>,
    pub as_of: i64,
}

impl Params {
    pub fn new(config: &Config, period: &Period, as_of: Option<i64>) -> Params {
        let (start, end) = period.bounds_utc(config.timezone);
        let as_of = as_of.unwrap_or(end);
        let zone = crate::time::Zone::new(config.timezone);
        let ts = |micros: i64| ScalarValue::TimestampMicrosecond(Some(micros), Some("UTC".into()));
        let date = |day: chrono::NaiveDate| {
            ScalarValue::Date32(Some(
                datafusion::arrow::datatypes::Date32Type::from_naive_date(day),
            ))
        };
        let w = config.index_weights;
        let rules = &config.rules;
        let values = vec![
            ("period_id", ScalarValue::Utf8(Some(period.id.clone()))),
            ("period_start", ts(start)),
            ("period_end", ts(end)),
            ("as_of", ts(as_of)),
            ("period_start_date", date(period.start)),
            ("period_end_date", date(period.end)),
            // The last local day before as_of (as_of itself is exclusive).
            ("as_of_date", date(zone.local_date(as_of - 1))),
            // The 28 local days that end with as_of_date (zero streaks).
            (
                "window_start_date",
                date(zone.local_date(as_of - 1) - Duration::days(27)),
            ),
            // The 28 days before the period (stores seen recently).
            (
                "lookback_start_date",
                date(period.start - Duration::days(28)),
            ),
            // Four weeks after the period (outcomes the index should predict).
            ("outcome_end", ts(period.end_plus_days(config.timezone, 28))),
            ("due_soon_h", ScalarValue::Float64(Some(rules.due_soon_h))),
            (
                "signup_gap_minutes",
                ScalarValue::Float64(Some(rules.signup_gap_minutes)),
            ),
            (
                "chronic_report_max_days",
                ScalarValue::Float64(Some(f64::from(rules.chronic_report_max_days))),
            ),
            (
                "weight_stage_compliance",
                ScalarValue::Float64(Some(w.stage_compliance)),
            ),
            ("weight_evidence", ScalarValue::Float64(Some(w.evidence))),
            ("weight_silent", ScalarValue::Float64(Some(w.silent))),
            (
                "template_similarity",
                ScalarValue::Float64(Some(rules.templated_notes.similarity)),
            ),
            (
                "template_min_share",
                ScalarValue::Float64(Some(rules.templated_notes.min_share)),
            ),
            (
                "template_min_notes",
                ScalarValue::Int64(Some(i64::from(rules.templated_notes.min_notes))),
            ),
            (
                "template_per_action_type",
                ScalarValue::Boolean(Some(rules.templated_notes.per_action_type)),
            ),
        ];
        let mut params = Params {
            values: values
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            as_of,
        };
        // What a carrying metric's state holds (see `carry.rs`); by default nothing.
        params.carry_from(config, super::carry::BEGINNING);
        params
    }
}

impl Params {
    /// Binds `$carried_as_of` (and its local date) to the instant the carried state holds.
    pub fn carry_from(&mut self, config: &Config, micros: i64) {
        let day = crate::time::Zone::new(config.timezone).local_date(micros);
        self.values
            .retain(|(name, _)| !name.starts_with("carried_as_of"));
        self.values.extend([
            (
                "carried_as_of".to_string(),
                ScalarValue::TimestampMicrosecond(Some(micros), Some("UTC".into())),
            ),
            (
                "carried_as_of_date".to_string(),
                ScalarValue::Date32(Some(
                    datafusion::arrow::datatypes::Date32Type::from_naive_date(day),
                )),
            ),
        ]);
    }

    /// `frame` with these parameters bound.
    pub fn bind(
        &self,
        frame: datafusion::dataframe::DataFrame,
    ) -> datafusion::error::Result<datafusion::dataframe::DataFrame> {
        frame.with_param_values(self.values.clone())
    }
}

/// Plans `metric` with `params` bound: the errors `validate` reports.
pub(crate) async fn plan(
    ctx: &SessionContext,
    metric: &Metric,
    params: &Params,
) -> Result<datafusion::dataframe::DataFrame> {
    let frame = ctx.sql(&metric.sql).await.map_err(|e| located(metric, e))?;
    let frame = params.bind(frame).map_err(|e| located(metric, e))?;
    Ok(frame)
}

fn located(metric: &Metric, error: datafusion::error::DataFusionError) -> Error {
    Error::from_user_sql(error, Some(&metric.path.display().to_string()))
}

async fn compute(
    engine: &Engine,
    metric: &Metric,
    params: &Params,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let frame = plan(engine.ctx(), metric, params).await?;
    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    // What EXPLAIN ANALYZE would print, for the run that really happened (parameters bound,
    // carried state in place): `RUST_LOG=flowhealth::metrics::plan=debug`. Local sessions only:
    // a cluster's plan runs in its executors, which keep the metrics.
    let batches = if !engine.is_cluster()
        && tracing::enabled!(target: "flowhealth::metrics::plan", tracing::Level::DEBUG)
    {
        let task = frame.task_ctx();
        let physical = frame.create_physical_plan().await?;
        let batches = datafusion::physical_plan::collect(physical.clone(), Arc::new(task)).await?;
        tracing::debug!(
            target: "flowhealth::metrics::plan",
            "{}: plan with metrics:\n{}",
            metric.id(),
            datafusion::physical_plan::display::DisplayableExecutionPlan::with_metrics(
                physical.as_ref()
            )
            .indent(true)
        );
        batches
    } else {
        engine.collect(frame, Error::from).await?
    };
    Ok((schema, batches))
}

/// A metric's computed rows, and the metadata its file records.
struct Output<'a> {
    schema: SchemaRef,
    batches: &'a [RecordBatch],
    metadata: HashMap<String, String>,
}

/// Finds the metric's breaches and, when `store` (a run at the period's own end), writes its
/// rows and breaches; returns the rows and the breaches.
#[allow(clippy::too_many_arguments)]
async fn write(
    config: &Config,
    lake: &Lake,
    metric: &Metric,
    period: &Period,
    params: &Params,
    run_id: &str,
    output: Output<'_>,
    store: bool,
) -> Result<(RecordBatch, Vec<Breach>)> {
    let rows = concat_batches(&output.schema, output.batches)?;
    // Timestamps as microseconds UTC, whatever the SQL made (`now()` gives nanoseconds).
    let rows = crate::lake::for_readers(&rows, config.timezone)?;
    let threshold = metric.threshold(config);
    let breaches = match threshold {
        Some(threshold) if rows.schema().column_with_name("value").is_some() => {
            let previous = previous_values(lake, metric, period).await?;
            breaches(metric, &rows, threshold, &previous)?
        }
        _ => Vec::new(),
    };
    let written = output::PeriodOutput {
        rows: &rows,
        breaches: threshold.is_some().then_some(breaches.as_slice()),
        run_id,
        as_of: params.as_of,
        metadata: output.metadata,
    };
    if store {
        output::write_period(lake, metric, &period.id, written).await?;
    }
    Ok((rows, breaches))
}

/// The `periods` periods whose `after` following periods end when `period` ends, oldest first:
/// what a metric that looks back (`LooksBack`) judges in a run for `period`.
pub(crate) fn looked_back(period: &Period, looks_back: &LooksBack) -> Vec<Period> {
    let mut newest = period.clone();
    for _ in 0..looks_back.after {
        newest = newest.previous();
    }
    let mut periods = vec![newest];
    while periods.len() < looks_back.periods as usize {
        let older = periods.last().expect("not empty").previous();
        periods.push(older);
    }
    periods.reverse();
    periods
}

/// Registers `looked_back_periods` and each looked-at metric's `<metric>_history` (see
/// `LooksBack`) for a run of `period`: stored outputs only, never recomputed at this run's as_of.
pub(crate) async fn register_history(
    engine: &Engine,
    config: &Config,
    lake: &Lake,
    catalog: &Catalog,
    looks_back: &LooksBack,
    period: &Period,
) -> Result<()> {
    let periods = looked_back(period, looks_back);
    let tz = config.timezone;
    let followed_until = |p: &Period| {
        let mut later = p.clone();
        for _ in 0..looks_back.after {
            later = Period::containing(later.kind, later.end);
        }
        later.bounds_utc(tz).1
    };
    let ts = |values: Vec<i64>| {
        Arc::new(TimestampMicrosecondArray::from(values).with_timezone("UTC")) as ArrayRef
    };
    let table = RecordBatch::try_from_iter(vec![
        (
            "period",
            Arc::new(StringArray::from_iter_values(periods.iter().map(|p| &p.id))) as ArrayRef,
        ),
        (
            "period_start",
            ts(periods.iter().map(|p| p.bounds_utc(tz).0).collect()),
        ),
        (
            "period_end",
            ts(periods.iter().map(|p| p.bounds_utc(tz).1).collect()),
        ),
        (
            "followed_until",
            ts(periods.iter().map(followed_until).collect()),
        ),
    ])?;
    engine
        .register_rows("looked_back_periods", table.schema(), vec![table])
        .await?;
    for name in &looks_back.metrics {
        let metric = catalog.resolve(name)?;
        let rows = output::history(lake, metric, &periods, tz).await?;
        let table = format!("{name}_history");
        engine
            .register_rows(&table, rows.schema(), vec![rows])
            .await?;
    }
    Ok(())
}

/// The previous period's `value` per team (None for the organisation row), from the lake.
async fn previous_values(
    lake: &Lake,
    metric: &Metric,
    period: &Period,
) -> Result<HashMap<Option<String>, f64>> {
    let batches = output::read_output(lake, metric, &period.previous().id)
        .await?
        .unwrap_or_default();
    let mut previous = HashMap::new();
    for batch in batches {
        let (teams, values) = team_and_value(&batch)?;
        for row in 0..batch.num_rows() {
            if values.is_valid(row) {
                previous.insert(teams.get(row).cloned().flatten(), values.value(row));
            }
        }
    }
    Ok(previous)
}

/// The `team` (NULL when absent) and `value` columns of a metric's rows.
fn team_and_value(batch: &RecordBatch) -> Result<(Vec<Option<String>>, Float64Array)> {
    let value = batch
        .column_by_name("value")
        .ok_or_else(|| Error::Lake("metric rows lack a `value` column".into()))?;
    let values = cast(value, &DataType::Float64)?.as_primitive().clone();
    let teams = match batch.column_by_name("team") {
        Some(team) => {
            let team = cast(team, &DataType::Utf8)?;
            team.as_string::<i32>()
                .iter()
                .map(|t| t.map(String::from))
                .collect()
        }
        None => vec![None; batch.num_rows()],
    };
    Ok((teams, values))
}

fn breaches(
    metric: &Metric,
    rows: &RecordBatch,
    threshold: Threshold,
    previous: &HashMap<Option<String>, f64>,
) -> Result<Vec<Breach>> {
    let (teams, values) = team_and_value(rows)?;
    let records = crate::engine::json_rows(std::slice::from_ref(rows))?;
    let mut env = minijinja::Environment::new();
    // Advice reads like the report it appears in: `{{ value | pct }}` is `89.6%`.
    env.add_filter("pct", |value: Option<f64>| super::display::rate(value));
    let advice = metric.meta.advice.clone().unwrap_or_else(|| {
        "{{ team or 'Organisation' }}: {{ metric }} is {{ value | pct }}, {{ direction }} the healthy {{ threshold | pct }}".into()
    });
    env.add_template("advice", &advice)
        .map_err(|e| Error::Usage(format!("{}: advice template: {e}", metric.path.display())))?;
    let template = env.get_template("advice").expect("just added");
    let mut out = Vec::new();
    for row in 0..rows.num_rows() {
        if values.is_null(row) {
            continue;
        }
        let value = values.value(row);
        let (bound, direction) = match (threshold.min, threshold.max) {
            (Some(min), _) if value < min => (min, "below"),
            (_, Some(max)) if value > max => (max, "above"),
            _ => continue,
        };
        let team = teams[row].clone();
        let previous_value = previous.get(&team).copied();
        let mut context = records[row].clone();
        context.insert("metric".into(), metric.name().into());
        context.insert("threshold".into(), bound.into());
        context.insert("direction".into(), direction.into());
        context.insert("previous_value".into(), previous_value.into());
        let advice = template.render(&context).map_err(|e| {
            Error::Usage(format!("{}: advice template: {e}", metric.path.display()))
        })?;
        out.push(Breach {
            team,
            value,
            threshold: bound,
            direction,
            advice,
            previous_value,
        });
    }
    Ok(out)
}
