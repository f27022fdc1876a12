//! Versioned SQL metric definitions (`docs/contract.md` section 4): the catalog in `queries/`,
//! the runner, the layout of their outputs in the lake, and the checks `validate` runs.
//!
//! - [`catalog`]: `queries/<metric>/v<N>.sql` and `versions.lock` -> [`catalog::Metric`]s.
//! - [`output`]: where outputs and breaches live in the lake (`metrics/`, `breaches/`); the one
//!   place that writes and reads them.
//! - [`carry`]: the state a carrying metric starts from (an earlier output still true to the lake).
//! - [`run`]: computing metrics for a period, in dependency order, with their breaches.
//! - [`golden`]: `flowhealth metrics test`.
//! - [`display`]: metric values as people read them (percentages, the organisation's row).

pub(crate) mod carry;
pub mod catalog;
pub mod display;
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

/// `flowhealth metrics list`: a header, then one line per metric: its versions, period, owner,
/// healthy range and description.
pub(crate) fn list(config: &Config, catalog: &Catalog) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:28} {:14} {:6} {:10} {:9} description",
        "metric", "versions", "period", "owner", "healthy"
    );
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
        let range = display::healthy(threshold.and_then(|t| t.min), threshold.and_then(|t| t.max));
        let _ = writeln!(
            out,
            "{name:28} {:14} {:6} {:10} {range:9} {}",
            versions.join(","),
            meta.period.name().to_string(),
            meta.owner,
            meta.description
        );
    }
    out
}

/// The columns a metric version's SQL plans to, as `validate` found them.
pub(crate) type Planned<'c> = Vec<(&'c catalog::Metric, datafusion::arrow::datatypes::SchemaRef)>;

/// Plans every metric version against the lake's schemas with the parameters bound, in
/// dependency order: `validate` reports each that does not parse or plan, with its file and line.
/// Also returns the columns of each version that plans (for the pipelines' `sql:` steps, which
/// read `metrics.<metric>`).
pub(crate) async fn check_plans<'c>(
    config: &Config,
    catalog: &'c Catalog,
) -> Result<(Vec<String>, Planned<'c>)> {
    let lake = crate::lake::Lake::open(config)?;
    // Planning needs no cluster: `validate` runs nothing, whatever `engine` says.
    let engine = crate::engine::Engine::local(config, &lake).await?;
    let ctx = engine.ctx();
    let all: Vec<&catalog::Metric> = catalog.metrics.iter().collect();
    let mut problems = Vec::new();
    let mut planned = Vec::new();
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
                    let schema = std::sync::Arc::new(frame.schema().as_arrow().clone());
                    if catalog
                        .latest(metric.name())
                        .is_some_and(|m| m.version() == metric.version())
                    {
                        engine
                            .register_rows(metric.name(), schema.clone(), vec![])
                            .await?;
                    }
                    planned.push((metric, schema));
                }
                Err(e) => problems.push(with_line(&e.to_string(), metric)),
            }
        }
    }
    Ok((problems, planned))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_list_has_a_header_and_healthy_ranges_in_percent() {
        let config = Config::load(None).unwrap();
        let text = list(&config, &Catalog::embedded());
        let mut lines = text.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            [
                "metric",
                "versions",
                "period",
                "owner",
                "healthy",
                "description"
            ]
        );
        let evidence = lines.find(|l| l.starts_with("evidence_rate ")).unwrap();
        assert!(evidence.contains(" >= 85.0% "), "{evidence}");
        let silent = text
            .lines()
            .find(|l| l.starts_with("silent_overtime_rate "))
            .unwrap();
        assert!(silent.contains(" <= 15.0% "), "{silent}");
    }
}
