//! `flowhealth metrics test`: golden tests of metric versions, like dbt unit tests. Each case is a
//! folder under `queries/_tests/`:
//!
//! ```text
//! queries/_tests/<case>/case.yaml              period: 2026-W13, optional as_of, timezone and
//!                                              before (periods computed first)
//! queries/_tests/<case>/inbox/<dataset>/*.csv  the input, as exports (ingested for real)
//! queries/_tests/<case>/expected/<metric>.csv  expected rows of the latest version, or
//!                                              <metric>@<N>.csv for a given version
//! ```
//!
//! The case's inbox is ingested into a temporary lake with the project's config (its timezone
//! replaced when the case gives one), the metrics run for the period, and each output (without
//! `run_id` and `as_of`) is compared with its expected CSV; a difference is shown line by line.
//! A metric that carries state (`carry:`) is checked a second time, after a run of the previous
//! period, so that it starts from that period's output.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use datafusion::arrow::array::RecordBatch;
use serde::Deserialize;

use super::catalog::Catalog;
use super::output;
use super::run::{self, Request};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::lake::Lake;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    period: String,
    #[serde(default)]
    as_of: Option<String>,
    #[serde(default)]
    timezone: Option<String>,
    /// Periods whose metrics (every metric of their kind) are computed first, at their own ends,
    /// for a metric that reads earlier periods' stored outputs (`looks_back`).
    #[serde(default)]
    before: Vec<String>,
}

/// The outcome of all cases: a readable report and whether every expectation held.
pub struct Outcome {
    pub report: String,
    pub passed: bool,
}

/// Runs every case under `<catalog>/_tests`.
pub async fn run_all(config: &Config, catalog: &Catalog) -> Result<Outcome> {
    let root = catalog.dir.join("_tests");
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&root)
        .map_err(|e| Error::io(&root, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    let mut report = String::new();
    let (mut checked, mut failed) = (0, 0);
    for case in &cases {
        for (name, result) in run_case(config, catalog, case).await? {
            checked += 1;
            match result {
                Ok(()) => {
                    let _ = writeln!(report, "ok     {} {name}", case_name(case));
                }
                Err(diff) => {
                    failed += 1;
                    let _ = writeln!(report, "FAILED {} {name}\n{diff}", case_name(case));
                }
            }
        }
    }
    let _ = writeln!(
        report,
        "{}, {}, {failed} failed",
        super::display::count(cases.len(), "case", "cases"),
        super::display::count(checked, "expectation", "expectations")
    );
    Ok(Outcome {
        report,
        passed: failed == 0 && checked > 0,
    })
}

fn case_name(case: &Path) -> String {
    case.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// One case: (expectation, Ok or the diff) per expected file.
async fn run_case(
    config: &Config,
    catalog: &Catalog,
    case: &Path,
) -> Result<Vec<(String, std::result::Result<(), String>)>> {
    let spec_path = case.join("case.yaml");
    let text = std::fs::read_to_string(&spec_path).map_err(|e| Error::io(&spec_path, e))?;
    let spec: Case = serde_yaml::from_str(&text)
        .map_err(|e| Error::Config(vec![format!("{}: {e}", spec_path.display())]))?;
    let work = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let mut config = config.clone();
    config.lake.url = work.path().join("lake").display().to_string();
    config.lake.s3 = None;
    config.inbox.url = case.join("inbox").display().to_string();
    config.inbox.s3 = None;
    // The case's files are whole (a fresh clone makes them look just written).
    config.inbox.settle_s = None;
    if let Some(tz) = &spec.timezone {
        config.timezone = tz.parse().map_err(|_| {
            Error::Config(vec![format!(
                "{}: timezone `{tz}` is not an IANA timezone",
                spec_path.display()
            )])
        })?;
    }
    let ingest = crate::ingest::ingest(&config, &[]).await?;
    if ingest.exit_code() != 0 {
        return Err(Error::Usage(format!(
            "{}: the case's inbox did not ingest cleanly:\n{ingest}",
            case.display()
        )));
    }

    let expected_dir = case.join("expected");
    let mut expectations: Vec<PathBuf> = std::fs::read_dir(&expected_dir)
        .map_err(|e| Error::io(&expected_dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "csv"))
        .collect();
    expectations.sort();
    let specs: Vec<String> = expectations
        .iter()
        .map(|p| {
            p.file_stem()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let lake = Lake::open(&config)?;
    for period in &spec.before {
        let earlier = Request {
            metrics: Vec::new(),
            period: Some(period.clone()),
            as_of: None,
        };
        // A failing earlier period would show as a baffling value mismatch later: say it here.
        let report = run::run(&config, &lake, catalog, &earlier).await?;
        if let Some((metric, e)) = report
            .outcomes
            .iter()
            .find_map(|o| o.result.as_ref().err().map(|e| (&o.metric, e)))
        {
            return Err(Error::Usage(format!(
                "{}: {metric} failed for the earlier period {period}: {e}",
                case.display()
            )));
        }
    }
    let request = Request {
        metrics: specs.clone(),
        period: Some(spec.period.clone()),
        as_of: spec.as_of.clone(),
    };
    let report = run::run(&config, &lake, catalog, &request).await?;
    let mut results = Vec::new();
    for (name, expected_path) in specs.iter().zip(&expectations) {
        let metric = catalog.resolve(name)?;
        let expected =
            std::fs::read_to_string(expected_path).map_err(|e| Error::io(expected_path, e))?;
        let result = check(&lake, &report, metric, &spec.period, &expected).await?;
        results.push((name.clone(), result));
    }

    // A metric that carries state is checked again, starting from the previous period's output:
    // the same rows are expected.
    let carrying: Vec<(&String, &PathBuf)> = specs
        .iter()
        .zip(&expectations)
        .filter(|(name, _)| {
            catalog
                .resolve(name)
                .is_ok_and(|m| !m.meta.carry.is_empty())
        })
        .collect();
    if !carrying.is_empty() {
        let previous = crate::time::Period::parse(&spec.period)?.previous();
        let metrics: Vec<String> = carrying.iter().map(|(name, _)| (*name).clone()).collect();
        let before = Request {
            metrics: metrics.clone(),
            period: Some(previous.id.clone()),
            as_of: None,
        };
        run::run(&config, &lake, catalog, &before).await?;
        let again = Request {
            metrics,
            period: Some(spec.period.clone()),
            as_of: spec.as_of.clone(),
        };
        let report = run::run(&config, &lake, catalog, &again).await?;
        for (name, expected_path) in carrying {
            let metric = catalog.resolve(name)?;
            let label = format!("{name} (from {}'s state)", previous.id);
            let carried = report
                .outcomes
                .iter()
                .any(|o| o.metric == metric.id() && o.carried_from == Some(previous.id.clone()));
            let result = if carried {
                let expected = std::fs::read_to_string(expected_path)
                    .map_err(|e| Error::io(expected_path, e))?;
                check(&lake, &report, metric, &spec.period, &expected).await?
            } else {
                Err("  did not start from the previous period's output".into())
            };
            results.push((label, result));
        }
    }
    Ok(results)
}

/// One metric's output for `period` against its expected CSV.
async fn check(
    lake: &Lake,
    report: &run::Report,
    metric: &super::catalog::Metric,
    period: &str,
    expected: &str,
) -> Result<std::result::Result<(), String>> {
    let outcome = report.outcomes.iter().find(|o| o.metric == metric.id());
    if let Some(error) = outcome.and_then(|o| o.result.as_ref().err()) {
        return Ok(Err(format!("  the metric failed: {error}")));
    }
    // A case at another as_of than the period's end stores nothing: its rows are the run's.
    if let Some(rows) = outcome.filter(|o| !o.stored).and_then(|o| o.rows.as_ref()) {
        return Ok(compare(expected, &csv(std::slice::from_ref(rows))?));
    }
    let batches = output::read_output(lake, metric, period)
        .await?
        .ok_or_else(|| {
            let path = output::output_path(lake, metric, period);
            Error::Lake(format!("{path}: not written"))
        })?;
    Ok(compare(expected, &csv(&batches)?))
}

/// The rows as CSV with a header, without `run_id` and `as_of`.
fn csv(batches: &[RecordBatch]) -> Result<String> {
    let mut out = Vec::new();
    {
        let mut writer = datafusion::arrow::csv::WriterBuilder::new()
            .with_header(true)
            .build(&mut out);
        for batch in batches {
            let keep: Vec<usize> = (0..batch.num_columns())
                .filter(|&i| {
                    !output::STAMP_COLUMNS.contains(&batch.schema().field(i).name().as_str())
                })
                .collect();
            writer.write(&batch.project(&keep)?)?;
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// Ok when equal line by line (ignoring a trailing newline), numbers to 12 significant digits;
/// else a `-expected +actual` diff.
fn compare(expected: &str, actual: &str) -> std::result::Result<(), String> {
    let (expected, actual) = (expected.trim_end(), actual.trim_end());
    if expected.lines().count() == actual.lines().count()
        && expected
            .lines()
            .zip(actual.lines())
            .all(|(e, a)| same_row(e, a))
    {
        return Ok(());
    }
    let diff = similar::TextDiff::from_lines(expected, actual);
    let mut out = String::from("  (-expected +actual)\n");
    for change in diff.iter_all_changes() {
        let sign = match change.tag() {
            similar::ChangeTag::Delete => '-',
            similar::ChangeTag::Insert => '+',
            similar::ChangeTag::Equal => ' ',
        };
        let _ = write!(out, "  {sign} {}", change);
        if change.missing_newline() {
            out.push('\n');
        }
    }
    Err(out)
}

/// Whether two CSV lines hold the same values. A floating-point sum may differ in its last digit
/// with the order in which DataFusion adds its partitions' parts, so numbers that agree to 12
/// significant digits are the same (the cluster test compares the same way).
fn same_row(expected: &str, actual: &str) -> bool {
    let close = |e: &str, a: &str| match (e.parse::<f64>(), a.parse::<f64>()) {
        (Ok(e), Ok(a)) => (e - a).abs() <= 1e-12 * e.abs().max(a.abs()),
        _ => false,
    };
    expected == actual
        || (expected.split(',').count() == actual.split(',').count()
            && expected
                .split(',')
                .zip(actual.split(','))
                .all(|(e, a)| e == a || close(e, a)))
}

#[cfg(test)]
mod tests {
    use super::same_row;

    #[test]
    fn numbers_agree_to_twelve_significant_digits_and_text_exactly() {
        assert!(same_row(
            ",owner,5,0.3361169167485947",
            ",owner,5,0.33611691674859473"
        ));
        assert!(!same_row(",owner,5,0.3361169167", ",owner,5,0.3361169168"));
        assert!(!same_row(",owner,5,0.5", ",team,5,0.5"));
        assert!(!same_row("a,1", "a,1,"));
    }
}
