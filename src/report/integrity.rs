//! The report's "Process integrity" section: the signals of the article's retail chain that the
//! rates do not show (zero-action streaks, month-end bunching, sign-up gaps, chronic follow-ups on
//! stale reports, templated notes, broken promises), each with its count, the worst examples,
//! and advice in plain language (`integrity_<signal>_advice` in labels.yaml); and what to try
//! per industry (`report.industry_advice`).
//!
//! Everything is read from the metric outputs of the period (never recomputed); a metric that
//! was not computed for it is shown as such.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use super::render::CodeLabels;
use crate::config::Config;
use crate::engine::{row_number, row_text};
use crate::error::Result;
use crate::lake::Lake;
use crate::metrics::catalog::Catalog;
use crate::time::Period;

/// Examples listed per signal.
const EXAMPLES: usize = 3;

/// One signal of the section.
#[derive(Debug, Clone, Serialize)]
pub struct Signal {
    /// The metric it comes from (`templated_notes`), or `broken_commitments`.
    pub key: &'static str,
    /// Whether the metric was computed for the period (the section says so when it was not).
    pub computed: bool,
    /// How many stores, owners, actions or promises it found.
    pub count: usize,
    /// Out of how many, where that means something (follow-ups judged, promises due).
    pub of: Option<usize>,
    /// The worst cases, worst first, as one line each.
    pub examples: Vec<String>,
    /// Rendered by the report from labels.yaml (`integrity_<key>_advice`).
    pub advice: String,
}

/// The overdue silent opportunities of each industry that has advice in the config: (industry,
/// the template's context: count, industry, stage (the most common), opportunities).
pub fn industries(
    config: &Config,
    overdue: &[Map<String, Value>],
) -> Vec<(String, serde_json::Value)> {
    let mut by_industry: BTreeMap<String, Vec<&Map<String, Value>>> = BTreeMap::new();
    for row in overdue {
        if let Some(industry) = row_text(row, "industry")
            && config.report.industry_advice.contains_key(&industry)
        {
            by_industry.entry(industry).or_default().push(row);
        }
    }
    by_industry
        .into_iter()
        .map(|(industry, rows)| {
            let mut stages: BTreeMap<String, usize> = BTreeMap::new();
            for row in &rows {
                *stages
                    .entry(row_text(row, "stage").unwrap_or_default())
                    .or_default() += 1;
            }
            let stage = stages
                .iter()
                .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
                .map(|(s, _)| s.clone())
                .unwrap_or_default();
            let ids: Vec<String> = rows
                .iter()
                .filter_map(|r| row_text(r, "opportunity_id"))
                .collect();
            let context = serde_json::json!({
                "count": rows.len(),
                "industry": industry,
                "stage": stage,
                "opportunities": ids,
            });
            (industry, context)
        })
        .collect()
}

/// `industries` narrowed to the opportunities in `overdue` (a team's copy).
pub fn industries_of(
    industries: &[(String, Value)],
    overdue: &[Map<String, Value>],
) -> Vec<(String, Value)> {
    let ids: Vec<String> = overdue
        .iter()
        .filter_map(|r| row_text(r, "opportunity_id"))
        .collect();
    industries
        .iter()
        .filter_map(|(industry, context)| {
            let mine: Vec<&Value> = context["opportunities"]
                .as_array()?
                .iter()
                .filter(|id| id.as_str().is_some_and(|id| ids.iter().any(|i| i == id)))
                .collect();
            if mine.is_empty() {
                return None;
            }
            let mut context = context.clone();
            context["count"] = mine.len().into();
            context["opportunities"] = mine.into_iter().cloned().collect();
            Some((industry.clone(), context))
        })
        .collect()
}

/// The signals of a weekly report.
pub async fn weekly(
    config: &Config,
    lake: &Lake,
    catalog: &Catalog,
    period: &Period,
    stores_seen: usize,
    codes: &CodeLabels,
) -> Result<Vec<Signal>> {
    let mut signals = Vec::new();

    let rows = output(lake, catalog, "zero_action_streaks", period).await?;
    let mut streaks = rows.clone().unwrap_or_default();
    streaks.sort_by(|a, b| number(b, "streak_days").total_cmp(&number(a, "streak_days")));
    signals.push(Signal {
        key: "zero_action_streaks",
        computed: rows.is_some(),
        count: distinct(&streaks, "store_id"),
        of: (stores_seen > 0).then_some(stores_seen),
        examples: streaks
            .iter()
            .take(EXAMPLES)
            .map(|r| {
                format!(
                    "{} {}: {} days, {} - {}",
                    text(r, "store_id"),
                    codes.label(&text(r, "action_type")),
                    number(r, "streak_days"),
                    text(r, "streak_start"),
                    text(r, "streak_end")
                )
            })
            .collect(),
        advice: String::new(),
    });

    let rows = output(lake, catalog, "signup_gap_flags", period).await?;
    let gaps = rows.clone().unwrap_or_default();
    signals.push(Signal {
        key: "signup_gap_flags",
        computed: rows.is_some(),
        count: gaps.len(),
        of: None,
        // The metric orders them by gap, the widest first.
        examples: gaps
            .iter()
            .take(EXAMPLES)
            .map(|r| {
                format!(
                    "{} {}: {:.0} min",
                    text(r, "store_id"),
                    text(r, "action_id"),
                    number(r, "gap_minutes")
                )
            })
            .collect(),
        advice: String::new(),
    });

    let rows = output(lake, catalog, "chronic_followup_validity", period).await?;
    let validity = rows.clone().unwrap_or_default();
    let overall = validity.iter().find(|r| row_text(r, "store_id").is_none());
    let population = overall.map_or(0.0, |r| number(r, "population"));
    let valid = overall.map_or(0.0, |r| number(r, "valid"));
    let mut stores: Vec<&Map<String, Value>> = validity
        .iter()
        .filter(|r| row_text(r, "store_id").is_some() && number(r, "population") > 0.0)
        .collect();
    stores.sort_by(|a, b| {
        row_number(a, "value")
            .unwrap_or(1.0)
            .total_cmp(&row_number(b, "value").unwrap_or(1.0))
            .then_with(|| number(b, "population").total_cmp(&number(a, "population")))
    });
    signals.push(Signal {
        key: "chronic_followup_validity",
        computed: rows.is_some(),
        count: (population - valid) as usize,
        of: Some(population as usize),
        examples: stores
            .iter()
            .filter(|r| number(r, "valid") < number(r, "population"))
            .take(EXAMPLES)
            .map(|r| {
                format!(
                    "{}: {} of {} valid",
                    text(r, "store_id"),
                    number(r, "valid"),
                    number(r, "population")
                )
            })
            .collect(),
        advice: String::new(),
    });

    let rows = output(lake, catalog, "templated_notes", period).await?;
    let mut flagged: Vec<Map<String, Value>> = rows
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.get("flagged").and_then(Value::as_bool) == Some(true))
        .collect();
    flagged.sort_by(|a, b| {
        number(b, "share")
            .total_cmp(&number(a, "share"))
            .then_with(|| number(b, "notes").total_cmp(&number(a, "notes")))
    });
    signals.push(Signal {
        key: "templated_notes",
        computed: rows.is_some(),
        count: flagged.len(),
        of: None,
        examples: flagged
            .iter()
            .take(EXAMPLES)
            .map(|r| {
                format!(
                    "{} {}: {} of {} notes copy \u{201c}{}\u{201d}",
                    row_text(r, "store_id")
                        .or_else(|| row_text(r, "owner_id"))
                        .unwrap_or_default(),
                    codes.label(&row_text(r, "action_type").unwrap_or_default()),
                    number(r, "templated"),
                    number(r, "notes"),
                    text(r, "template_text")
                )
            })
            .collect(),
        advice: String::new(),
    });

    let rows = output(lake, catalog, "commitments", period).await?;
    let (start, end) = period.bounds_utc(config.timezone);
    // The promises due in the period (the metric lists five weeks of them).
    let due: Vec<Map<String, Value>> = rows
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|r| due_in(r, start, end))
        .collect();
    let mut broken: Vec<&Map<String, Value>> = due
        .iter()
        .filter(|r| row_text(r, "status").as_deref() == Some("broken"))
        .collect();
    broken.sort_by(|a, b| number(a, "hours_left").total_cmp(&number(b, "hours_left")));
    signals.push(Signal {
        key: "broken_commitments",
        computed: rows.is_some(),
        count: broken.len(),
        of: Some(due.len()),
        examples: broken
            .iter()
            .take(EXAMPLES)
            .map(|r| {
                format!(
                    "{} ({}): \u{201c}{}\u{201d}, {:.0} h overdue",
                    row_text(r, "opportunity_id")
                        .or_else(|| row_text(r, "customer_id"))
                        .unwrap_or_default(),
                    text(r, "owner_id"),
                    text(r, "promise"),
                    -number(r, "hours_left")
                )
            })
            .collect(),
        advice: String::new(),
    });
    Ok(signals)
}

/// The signals of a monthly report: month-end bunching.
pub async fn monthly(
    lake: &Lake,
    catalog: &Catalog,
    period: &Period,
    codes: &CodeLabels,
) -> Result<Vec<Signal>> {
    let rows = output(lake, catalog, "month_end_bunching", period).await?;
    let bunched = rows.clone().unwrap_or_default();
    Ok(vec![Signal {
        key: "month_end_bunching",
        computed: rows.is_some(),
        count: bunched.len(),
        of: None,
        // The metric orders them by the month-end share, the highest first.
        examples: bunched
            .iter()
            .take(EXAMPLES)
            .map(|r| {
                format!(
                    "{} {}: {:.0}% of {} on days 25-28",
                    text(r, "store_id"),
                    codes.label(&text(r, "action_type")),
                    number(r, "month_end_share") * 100.0,
                    number(r, "actions")
                )
            })
            .collect(),
        advice: String::new(),
    }])
}

/// Whether a `commitments` row's deadline (an RFC 3339 instant) falls in [start, end)
/// (microseconds, UTC).
fn due_in(row: &Map<String, Value>, start: i64, end: i64) -> bool {
    row_text(row, "deadline")
        .and_then(|d| chrono::DateTime::parse_from_rfc3339(&d).ok())
        .is_some_and(|d| (start..end).contains(&d.timestamp_micros()))
}

/// The rows of the latest version of `name` for `period`; `None` when it was not computed (or
/// the catalog has no such metric, or it is of the other period kind).
async fn output(
    lake: &Lake,
    catalog: &Catalog,
    name: &str,
    period: &Period,
) -> Result<Option<Vec<Map<String, Value>>>> {
    let Some(metric) = catalog.latest(name) else {
        return Ok(None);
    };
    if metric.meta.period != period.kind {
        return Ok(None);
    }
    match crate::metrics::output::read_output(lake, metric, &period.id).await? {
        Some(batches) => Ok(Some(crate::engine::json_rows(&batches)?)),
        None => Ok(None),
    }
}

fn text(row: &Map<String, Value>, column: &str) -> String {
    row_text(row, column).unwrap_or_default()
}

fn number(row: &Map<String, Value>, column: &str) -> f64 {
    row_number(row, column).unwrap_or(0.0)
}

/// How many distinct values `column` has in `rows`.
fn distinct(rows: &[Map<String, Value>], column: &str) -> usize {
    let mut values: Vec<String> = rows.iter().filter_map(|r| row_text(r, column)).collect();
    values.sort();
    values.dedup();
    values.len()
}
