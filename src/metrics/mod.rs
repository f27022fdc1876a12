//! Versioned SQL metric definitions (`docs/contract.md` section 4): the catalog in `queries/`,
//! the runner, the layout of their outputs in the lake, and the checks `validate` runs.
//!
//! - [`catalog`]: `queries/<metric>/v<N>.sql` and `versions.lock` -> [`catalog::Metric`]s.
//! - [`output`]: where outputs and breaches live in the lake (`metrics/`, `breaches/`); the one
//!   place that writes and reads them.
//! - [`carry`]: the state a carrying metric starts from (an earlier output still true to the lake).
//! - [`run`]: computing metrics for a period, in dependency order, with their breaches.
//! - [`golden`]: `flowhealth metrics test`.

pub(crate) mod carry;
pub mod catalog;
pub(crate) mod golden;
pub mod output;
pub mod run;

use std::fmt::Write;

use catalog::Catalog;

use crate::config::Config;
use crate::error::{Error, Result};

/// The catalog `config.queries` points at, with the config's names of metrics checked against
/// it ([`unknown_metrics`]): a misspelled `thresholds.<metric>` is an error, not a threshold
/// that silently applies to nothing.
pub fn catalog(config: &Config) -> Result<Catalog> {
    let catalog = load_catalog(config)?;
    let problems = unknown_metrics(config, &catalog);
    if problems.is_empty() {
        Ok(catalog)
    } else {
        Err(Error::Config(problems))
    }
}

/// The catalog `config.queries` points at. The embedded default configuration, run where there
/// is no such folder, uses the catalog shipped inside the binary.
pub(crate) fn load_catalog(config: &Config) -> Result<Catalog> {
    let dir = config.resolve_local(&config.queries);
    if config.source == crate::config::EMBEDDED_SOURCE && !dir.exists() {
        return Ok(Catalog::embedded());
    }
    Catalog::load(&dir).map_err(Error::Config)
}

/// Every key of the config that names a metric the catalog does not have (`thresholds.<metric>`),
/// as `file: key: message`. Without a catalog at all there is nothing to check against (and
/// `metrics run` says the folder is empty).
pub(crate) fn unknown_metrics(config: &Config, catalog: &Catalog) -> Vec<String> {
    let names: Vec<&str> = catalog.names().collect();
    if names.is_empty() {
        return Vec::new();
    }
    config
        .thresholds
        .keys()
        .filter(|metric| catalog.latest(metric).is_none())
        .map(|metric| {
            format!(
                "{}: thresholds.{metric}: no metric `{metric}` in {} (metrics: {})",
                config.source,
                catalog.dir.display(),
                names.join(", ")
            )
        })
        .collect()
}

/// `flowhealth metrics list`: one line per metric, its versions, owner and healthy range.
pub(crate) fn list(config: &Config, catalog: &Catalog) -> String {
    let mut out = String::new();
    for name in catalog.names() {
        let versions: Vec<String> = catalog
            .metrics
            .iter()
            .filter(|m| m.name() == name)
            .map(|m| {
                if catalog.released(m) {
                    format!("v{}", m.version())
                } else {
                    format!("v{} (draft)", m.version())
                }
            })
            .collect();
        let latest = catalog.latest(name).expect("listed names exist");
        let meta = &latest.meta;
        let threshold = latest.threshold(config);
        let range = match threshold.map(|t| (t.min, t.max)) {
            Some((Some(min), Some(max))) => format!("{min}..{max}"),
            Some((Some(min), None)) => format!(">= {min}"),
            Some((None, Some(max))) => format!("<= {max}"),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "{name:28} {:14} {:6} {:10} {range:8} {}",
            versions.join(","),
            meta.period.name().to_string(),
            meta.owner,
            meta.description
        );
    }
    out
}

/// Plans every metric version against the lake's schemas with the parameters bound, in
/// dependency order: `validate` reports each that does not parse or plan, with its file and line.
pub(crate) async fn check_plans(config: &Config, catalog: &Catalog) -> Result<Vec<String>> {
    let lake = crate::lake::Lake::open(config)?;
    // Planning needs no cluster: `validate` runs nothing, whatever `engine` says.
    let engine = crate::engine::Engine::local(config, &lake).await?;
    let ctx = engine.ctx();
    let all: Vec<&catalog::Metric> = catalog.metrics.iter().collect();
    let mut problems = Vec::new();
    for level in run::levels(&all) {
        for metric in level {
            let period = crate::time::Period::last_complete(
                metric.meta.period,
                crate::time::today(config.timezone),
            );
            let params = run::Params::new(config, &period, None);
            if !metric.meta.carry.is_empty() {
                carry::register_empty(&engine, metric).await?;
            }
            if let Some(looks_back) = &metric.meta.looks_back {
                run::register_history(&engine, config, &lake, catalog, looks_back, &period).await?;
            }
            match run::plan(ctx, metric, &params).await {
                Ok(frame) => {
                    problems.extend(carry::check(metric, frame.schema().as_arrow()));
                    problems.extend(
                        crate::lake::naive_timestamp_problem(
                            frame.schema().as_arrow(),
                            config.timezone,
                        )
                        .map(|problem| format!("{}: {problem}", metric.path.display())),
                    );
                    // What plans but would fail on data (a function returning another type
                    // than it declares).
                    let path = metric.path.display();
                    problems.extend(
                        crate::engine::probe::functions(ctx, frame.logical_plan())
                            .into_iter()
                            .map(|problem| format!("{path}: {problem}")),
                    );
                    // Dependents plan against this one's columns.
                    if catalog
                        .latest(metric.name())
                        .is_some_and(|m| m.version() == metric.version())
                    {
                        let schema = std::sync::Arc::new(frame.schema().as_arrow().clone());
                        engine.register_rows(metric.name(), schema, vec![]).await?;
                    }
                }
                Err(e) => problems.push(with_line(&e.to_string(), metric)),
            }
        }
    }
    Ok(problems)
}

/// DataFusion says `at Line: 12, Column: 5` for parse errors; make it `file:12: ...`.
fn with_line(message: &str, metric: &catalog::Metric) -> String {
    let line = message
        .split_once("Line: ")
        .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(1);
    let path = metric.path.display().to_string();
    let message = message
        .strip_prefix(&format!("{path}: "))
        .unwrap_or(message);
    format!("{path}:{line}: {message}")
}
