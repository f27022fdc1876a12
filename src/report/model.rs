//! What a report shows, read from the metric outputs in the lake (never recomputed): the numbers
//! the templates render. Everything here is plain data so a data team's template can use any of it.

use std::collections::{BTreeMap, HashMap};

use datafusion::arrow::datatypes::DataType;
use serde::Serialize;
use serde_json::{Map, Value};

use super::chart;
pub use super::heatmap::{HeatCell, HeatRow};
use super::render::CodeLabels;
use crate::config::{Config, Threshold};
use crate::engine::{json_rows, row_number, row_text};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::metrics::catalog::{Catalog, Metric};
use crate::metrics::output::{read_breaches, read_output};
use crate::time::Period;

/// The index components, in the order of the 6:3:1 formula.
pub const COMPONENTS: [&str; 3] = [
    "stage_compliance_rate",
    "evidence_rate",
    "silent_overtime_rate",
];

/// A rate with its healthy range, last period's value and a status colour.
#[derive(Debug, Clone, Serialize)]
pub struct Score {
    pub key: String,
    pub value: Option<f64>,
    pub previous: Option<f64>,
    pub change: Option<f64>,
    pub threshold: Option<f64>,
    /// `min` (healthy at or above the threshold) or `max` (at or below).
    pub direction: Option<&'static str>,
    /// `green` meets the threshold, `yellow` misses it by less than 5 points, `red` by more;
    /// `none` without a value or a threshold.
    pub status: &'static str,
}

impl Score {
    fn new(
        key: &str,
        value: Option<f64>,
        previous: Option<f64>,
        threshold: Option<Threshold>,
    ) -> Score {
        let (limit, direction) = match threshold {
            Some(Threshold { min: Some(min), .. }) => (Some(min), Some("min")),
            Some(Threshold { max: Some(max), .. }) => (Some(max), Some("max")),
            _ => (None, None),
        };
        let status = match (value, limit, direction) {
            (Some(v), Some(t), Some(d)) => {
                let shortfall = if d == "min" { t - v } else { v - t };
                if shortfall <= 0.0 {
                    "green"
                } else if shortfall < 0.05 {
                    "yellow"
                } else {
                    "red"
                }
            }
            _ => "none",
        };
        Score {
            key: key.to_string(),
            value,
            previous,
            change: value.zip(previous).map(|(v, p)| v - p),
            threshold: limit,
            direction,
            status,
        }
    }
}

/// Where to start: the index component furthest from healthy, and its worst team.
#[derive(Debug, Clone, Serialize)]
pub struct Focus {
    pub component: String,
    pub value: f64,
    pub threshold: f64,
    /// `min` or `max`, as the component's [`Score`].
    pub direction: &'static str,
    pub team: Option<String>,
    pub team_value: Option<f64>,
    /// Rendered by the report (`advice_focus` in labels.yaml).
    pub advice: String,
}

/// The weakest component of `components` (the largest shortfall from its healthy bound; none
/// when all are healthy), with the team in `teams` that is worst at it.
pub fn focus(components: &[Score], teams: &[TeamRow]) -> Option<Focus> {
    let shortfall = |s: &Score| -> Option<f64> {
        let (value, threshold) = (s.value?, s.threshold?);
        let gap = if s.direction? == "min" {
            threshold - value
        } else {
            value - threshold
        };
        (gap > 0.0).then_some(gap)
    };
    let (index, weakest) = components
        .iter()
        .enumerate()
        .filter_map(|(i, s)| Some((i, s, shortfall(s)?)))
        .max_by(|a, b| a.2.total_cmp(&b.2))
        .map(|(i, s, _)| (i, s))?;
    let worse = |a: f64, b: f64| {
        if weakest.direction == Some("min") {
            a < b
        } else {
            a > b
        }
    };
    let mut worst: Option<(&str, f64)> = None;
    for row in teams {
        if let Some(value) = row.components.get(index).and_then(|c| c.value)
            && worst.is_none_or(|(_, w)| worse(value, w))
        {
            worst = Some((&row.team, value));
        }
    }
    Some(Focus {
        component: weakest.key.clone(),
        value: weakest.value?,
        threshold: weakest.threshold?,
        direction: weakest.direction?,
        team: worst.map(|(team, _)| team.to_string()),
        team_value: worst.map(|(_, value)| value),
        advice: String::new(),
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct TeamRow {
    pub team: String,
    pub index: Score,
    pub components: Vec<Score>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BreachRow {
    pub metric: String,
    pub team: Option<String>,
    pub value: f64,
    pub threshold: f64,
    pub direction: String,
    pub advice: String,
    pub change: Option<f64>,
    /// `new` this period, `still_open` (also breached last period) or `resolved` (last period only).
    pub state: &'static str,
}

#[derive(Debug, Clone, Serialize)]
pub struct Heatmap {
    pub action_types: Vec<String>,
    /// The worst stores (`report.heatmap_stores`), for the table under the picture.
    pub stores: Vec<HeatRow>,
    pub stores_total: usize,
    /// The picture's groups (teams, the worst first) with their cells counted by band: its
    /// caption and its text alternative.
    pub groups: Vec<HeatGroup>,
    /// Every store, for the picture.
    #[serde(skip)]
    pub all: Vec<HeatRow>,
}

/// A team's stores in the heat map picture.
#[derive(Debug, Clone, Serialize)]
pub struct HeatGroup {
    pub team: Option<String>,
    /// What the picture writes over the group (the team, or "team N" when the picture's font
    /// cannot draw the team's name).
    pub label: String,
    pub stores: usize,
    pub green: usize,
    pub yellow: usize,
    pub red: usize,
    /// The group's worst stores (up to three), worst first.
    pub worst: Vec<String>,
}

impl Heatmap {
    /// The picture's groups: every store by team, the worst team first (see `heatmap.rs`).
    pub fn picture_groups(&self) -> Vec<super::heatmap::Group<'_>> {
        super::heatmap::groups(&self.all)
            .into_iter()
            .enumerate()
            .map(|(i, (team, stores))| super::heatmap::Group {
                label: super::heatmap::label(team.as_deref(), i),
                stores,
            })
            .collect()
    }

    /// The same map with only `team`'s stores.
    fn for_team(&self, team: &str, size: usize) -> Heatmap {
        let all: Vec<HeatRow> = self
            .all
            .iter()
            .filter(|s| s.team.as_deref() == Some(team))
            .cloned()
            .collect();
        Heatmap::new(self.action_types.clone(), all, size)
    }

    fn new(action_types: Vec<String>, mut all: Vec<HeatRow>, size: usize) -> Heatmap {
        all.sort_by(|a, b| {
            a.rate
                .total_cmp(&b.rate)
                .then_with(|| a.store_id.cmp(&b.store_id))
        });
        let groups = super::heatmap::groups(&all)
            .into_iter()
            .enumerate()
            .map(|(i, (team, stores))| {
                let count = |band: &str| {
                    stores
                        .iter()
                        .flat_map(|s| &s.cells)
                        .filter(|c| c.band == band)
                        .count()
                };
                HeatGroup {
                    label: super::heatmap::label(team.as_deref(), i),
                    stores: stores.len(),
                    green: count("green"),
                    yellow: count("yellow"),
                    red: count("red"),
                    worst: stores.iter().take(3).map(|s| s.store_id.clone()).collect(),
                    team,
                }
            })
            .collect();
        Heatmap {
            action_types,
            stores: all.iter().take(size).cloned().collect(),
            stores_total: all.len(),
            groups,
            all,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TrendPoint {
    pub period: String,
    pub value: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PeriodView {
    pub id: String,
    pub first_day: String,
    pub last_day: String,
}

impl From<&Period> for PeriodView {
    fn from(period: &Period) -> Self {
        PeriodView {
            id: period.id.clone(),
            first_day: period.start.to_string(),
            last_day: (period.end - chrono::Duration::days(1)).to_string(),
        }
    }
}

/// The weekly health report.
#[derive(Debug, Clone, Serialize)]
pub struct Weekly {
    pub period: PeriodView,
    pub previous_period: String,
    /// Set in a team's copy: the team whose section it is.
    pub team: Option<String>,
    pub index: Score,
    pub components: Vec<Score>,
    pub teams: Vec<TeamRow>,
    /// This period's breaches (new or still open), then last period's that are resolved.
    pub breaches: Vec<BreachRow>,
    pub resolved: Vec<BreachRow>,
    pub heatmap: Heatmap,
    /// The most overdue silent opportunities (`report.top_overdue`); `overdue_total` counts all.
    pub overdue: Vec<Map<String, Value>>,
    pub overdue_total: usize,
    pub trend: Vec<TrendPoint>,
    /// The metric versions the report reads (`name@N`), for its footer.
    pub metric_versions: Vec<String>,
    /// Whether the index predicts wins: `health_outcome_correlation`'s rows (across teams, then
    /// owners); empty when the week's output has none of version 2's columns.
    pub outcome: Vec<Map<String, Value>>,
    /// The "Process integrity" section: what the action log says beyond the rates.
    pub integrity: Vec<super::integrity::Signal>,
    /// Where to start: the weakest index component and its worst team.
    pub focus: Option<Focus>,
    /// Advice per industry (`report.industry_advice`), rendered by the report.
    pub industry_advice: Vec<String>,
    /// The contexts of that advice: (industry, count, stage, opportunities).
    #[serde(skip)]
    pub industries: Vec<(String, Value)>,
    /// Every overdue opportunity, for the CSV attachment.
    #[serde(skip)]
    pub overdue_all: Vec<Map<String, Value>>,
    /// The columns of `silent_warnings`, in its order, with their types.
    #[serde(skip)]
    overdue_columns: Vec<(String, DataType)>,
}

impl Weekly {
    /// The report of `period`, codes in its text (the integrity examples) shown by `codes`.
    pub async fn load(
        config: &Config,
        lake: &Lake,
        catalog: &Catalog,
        period: &Period,
        codes: &CodeLabels,
    ) -> Result<Weekly> {
        let previous = period.previous();
        let index_metric = metric(catalog, "process_health_index")?;
        let rows = required(lake, index_metric, period).await?;
        let previous_rows = rows_of(lake, index_metric, &previous.id).await?;
        let by_team = |rows: &[Map<String, Value>]| -> HashMap<Option<String>, Map<String, Value>> {
            rows.iter()
                .map(|r| (row_text(r, "team"), r.clone()))
                .collect()
        };
        let previous_by_team = by_team(&previous_rows);
        let thresholds: HashMap<&str, Option<Threshold>> = std::iter::once("process_health_index")
            .chain(COMPONENTS)
            .map(|name| (name, catalog.latest(name).and_then(|m| m.threshold(config))))
            .collect();
        let scores = |row: &Map<String, Value>, team: &Option<String>| {
            let before = previous_by_team.get(team);
            let score = |key: &str, column: &str| {
                Score::new(
                    key,
                    row_number(row, column),
                    before.and_then(|b| row_number(b, column)),
                    thresholds[key],
                )
            };
            let index = score("process_health_index", "value");
            let components = COMPONENTS.iter().map(|c| score(c, c)).collect::<Vec<_>>();
            (index, components)
        };
        let org = rows
            .iter()
            .find(|r| row_text(r, "team").is_none())
            .ok_or_else(|| {
                Error::Lake(format!(
                    "{} for {} has no organisation row (team NULL)",
                    index_metric.id(),
                    period.id
                ))
            })?;
        let (index, components) = scores(org, &None);
        let teams: Vec<TeamRow> = rows
            .iter()
            .filter_map(|r| {
                let team = row_text(r, "team")?;
                let (index, components) = scores(r, &Some(team.clone()));
                Some(TeamRow {
                    team,
                    index,
                    components,
                })
            })
            .collect();

        let (breaches, resolved) = breaches(config, lake, catalog, period).await?;
        let heatmap = heatmap(config, lake, catalog, period).await?;
        let warnings = match catalog.latest("silent_warnings") {
            Some(m) => read_output(lake, m, &period.id).await?.unwrap_or_default(),
            None => Vec::new(),
        };
        // The CSV keeps the metric's column order (a JSON object's keys are sorted).
        let overdue_columns = warnings
            .first()
            .map(|b| {
                b.schema()
                    .fields()
                    .iter()
                    .map(|f| (f.name().clone(), f.data_type().clone()))
                    .collect()
            })
            .unwrap_or_default();
        let mut overdue_all: Vec<Map<String, Value>> = json_rows(&warnings)?
            .into_iter()
            .filter(|r| row_text(r, "status").as_deref() == Some("overdue"))
            .collect();
        // The metric orders by hours remaining; say so explicitly, it is what the list means.
        overdue_all.sort_by(|a, b| {
            row_number(a, "hours_remaining")
                .partial_cmp(&row_number(b, "hours_remaining"))
                .unwrap_or(std::cmp::Ordering::Equal)
        });

        let integrity =
            super::integrity::weekly(config, lake, catalog, period, heatmap.stores_total, codes)
                .await?;
        let focus = focus(&components, &teams);
        let industries = super::integrity::industries(config, &overdue_all);

        let mut trend = Vec::new();
        let mut week = period.clone();
        for _ in 0..config.report.trend_weeks {
            let value = rows_of(lake, index_metric, &week.id)
                .await?
                .iter()
                .find(|r| row_text(r, "team").is_none())
                .and_then(|r| row_number(r, "value"));
            trend.push(TrendPoint {
                period: week.id.clone(),
                value,
            });
            week = week.previous();
        }
        trend.reverse();

        let outcome = match catalog.latest("health_outcome_correlation") {
            Some(m) => json_rows(&read_output(lake, m, &period.id).await?.unwrap_or_default())?
                .into_iter()
                .filter(|r| r.contains_key("across"))
                .collect(),
            None => Vec::new(),
        };

        Ok(Weekly {
            period: period.into(),
            previous_period: previous.id,
            team: None,
            index,
            components,
            teams,
            breaches,
            resolved,
            heatmap,
            overdue: overdue_all
                .iter()
                .take(config.report.top_overdue)
                .cloned()
                .collect(),
            overdue_total: overdue_all.len(),
            trend,
            metric_versions: metric_versions(catalog, period),
            outcome,
            integrity,
            focus,
            industry_advice: Vec::new(),
            industries,
            overdue_all,
            overdue_columns,
        })
    }

    /// The copy for one team's recipients: that team's row, breaches and overdue opportunities.
    pub fn for_team(&self, team: &str, top_overdue: usize) -> Weekly {
        let mine = |t: &Option<String>| t.as_deref() == Some(team);
        let mut copy = self.clone();
        copy.team = Some(team.to_string());
        copy.teams.retain(|t| t.team == team);
        copy.breaches.retain(|b| mine(&b.team));
        copy.resolved.retain(|b| mine(&b.team));
        copy.overdue_all.retain(|r| mine(&row_text(r, "team")));
        copy.overdue = copy.overdue_all.iter().take(top_overdue).cloned().collect();
        copy.overdue_total = copy.overdue_all.len();
        copy.heatmap = self
            .heatmap
            .for_team(team, self.heatmap.stores.len().max(1));
        // The team's own weakest component.
        copy.focus = copy
            .teams
            .first()
            .and_then(|row| focus(&row.components, &[]));
        copy.industries = super::integrity::industries_of(&self.industries, &copy.overdue_all);
        copy
    }

    pub fn chart_points(&self) -> Vec<chart::Point> {
        self.trend
            .iter()
            .map(|p| chart::Point {
                period: p.period.clone(),
                value: p.value,
            })
            .collect()
    }

    /// The overdue opportunities as CSV (every column of `silent_warnings`, by its code), for a
    /// spreadsheet: UTF-8 with a byte-order mark (so Excel, a Chinese one included, reads it as
    /// UTF-8), instants as local times in `tz` (`2026-03-27 11:00`), hours and other decimals to
    /// one decimal.
    pub fn overdue_csv(&self, tz: chrono_tz::Tz) -> Result<Vec<u8>> {
        let columns = &self.overdue_columns;
        let mut writer = csv::Writer::from_writer(b"\xEF\xBB\xBF".to_vec());
        let fail = |e: csv::Error| Error::Internal(format!("overdue CSV: {e}"));
        writer
            .write_record(columns.iter().map(|(name, _)| name))
            .map_err(fail)?;
        for row in &self.overdue_all {
            writer
                .write_record(columns.iter().map(|(name, data_type)| {
                    match (row.get(name), data_type) {
                        (Some(Value::Null) | None, _) => String::new(),
                        (Some(Value::String(s)), DataType::Timestamp(_, _)) => {
                            crate::time::format::local_text(tz, s).unwrap_or_else(|| s.clone())
                        }
                        (
                            Some(Value::Number(n)),
                            DataType::Float16 | DataType::Float32 | DataType::Float64,
                        ) => n
                            .as_f64()
                            .map_or_else(|| n.to_string(), |v| format!("{v:.1}")),
                        (Some(Value::String(s)), _) => s.clone(),
                        (Some(other), _) => other.to_string(),
                    }
                }))
                .map_err(fail)?;
        }
        writer
            .into_inner()
            .map_err(|e| Error::Internal(format!("overdue CSV: {e}")))
    }
}

/// The latest version of every metric of `period`'s kind (what `metrics run --period` computes
/// and the report reads), as `name@N`.
fn metric_versions(catalog: &Catalog, period: &Period) -> Vec<String> {
    catalog
        .names()
        .filter_map(|name| catalog.latest(name))
        .filter(|metric| metric.meta.period == period.kind)
        .map(Metric::id)
        .collect()
}

/// The monthly breakpoints report.
#[derive(Debug, Clone, Serialize)]
pub struct Monthly {
    pub period: PeriodView,
    /// The five longest stays past their stage's timeout.
    pub stays: Vec<Map<String, Value>>,
    /// Average dwell per stage, with the stage's timeout.
    pub stages: Vec<Map<String, Value>>,
    pub breaches: Vec<BreachRow>,
    /// The metric versions the report reads (`name@N`), for its footer.
    pub metric_versions: Vec<String>,
    /// The "Process integrity" section of the month: month-end bunching.
    pub integrity: Vec<super::integrity::Signal>,
}

impl Monthly {
    /// The report of `period`, codes in its text shown by `codes`.
    pub async fn load(
        config: &Config,
        lake: &Lake,
        catalog: &Catalog,
        period: &Period,
        codes: &CodeLabels,
    ) -> Result<Monthly> {
        let rows = required(lake, metric(catalog, "breakpoints_top5")?, period).await?;
        let kind = |k: &str| {
            rows.iter()
                .filter(|r| row_text(r, "kind").as_deref() == Some(k))
                .cloned()
                .collect::<Vec<_>>()
        };
        let (breaches, _) = breaches(config, lake, catalog, period).await?;
        Ok(Monthly {
            period: period.into(),
            stays: kind("stay"),
            stages: kind("stage_average"),
            breaches,
            metric_versions: metric_versions(catalog, period),
            integrity: super::integrity::monthly(lake, catalog, period, codes).await?,
        })
    }
}

fn metric<'a>(catalog: &'a Catalog, name: &str) -> Result<&'a Metric> {
    catalog.latest(name).ok_or_else(|| {
        Error::Usage(format!(
            "the report needs the metric `{name}`, which is not in {}",
            catalog.dir.display()
        ))
    })
}

/// The rows of `metric` for `period`; an error saying how to compute them when they are missing.
async fn required(
    lake: &Lake,
    metric: &Metric,
    period: &Period,
) -> Result<Vec<Map<String, Value>>> {
    match read_output(lake, metric, &period.id).await? {
        Some(batches) => json_rows(&batches),
        None => Err(Error::Usage(format!(
            "{} has not been computed for {} in {}: run `flowhealth metrics run --period {}` first",
            metric.id(),
            period.id,
            lake.display(),
            period.id
        ))),
    }
}

pub(super) async fn rows_of(
    lake: &Lake,
    metric: &Metric,
    period_id: &str,
) -> Result<Vec<Map<String, Value>>> {
    match read_output(lake, metric, period_id).await? {
        Some(batches) => json_rows(&batches),
        None => Ok(Vec::new()),
    }
}

/// This period's breaches of every metric with a threshold, marked new or still open against
/// the previous period, and the previous period's that no longer breach.
async fn breaches(
    config: &Config,
    lake: &Lake,
    catalog: &Catalog,
    period: &Period,
) -> Result<(Vec<BreachRow>, Vec<BreachRow>)> {
    let mut current = Vec::new();
    let mut resolved = Vec::new();
    let names: Vec<&str> = catalog.names().collect();
    for name in names {
        let Some(metric) = catalog.latest(name) else {
            continue;
        };
        if metric.threshold(config).is_none() || metric.meta.period != period.kind {
            continue;
        }
        let read = |id: String| async move {
            match read_breaches(lake, metric, &id).await? {
                Some(batches) => json_rows(&batches),
                None => Ok(Vec::new()),
            }
        };
        let now = read(period.id.clone()).await?;
        let before = read(period.previous().id).await?;
        let teams_before: Vec<Option<String>> =
            before.iter().map(|r| row_text(r, "team")).collect();
        let teams_now: Vec<Option<String>> = now.iter().map(|r| row_text(r, "team")).collect();
        let row = |r: &Map<String, Value>, state| BreachRow {
            metric: name.to_string(),
            team: row_text(r, "team"),
            value: row_number(r, "value").unwrap_or(f64::NAN),
            threshold: row_number(r, "threshold").unwrap_or(f64::NAN),
            direction: row_text(r, "direction").unwrap_or_default(),
            advice: row_text(r, "advice").unwrap_or_default(),
            change: row_number(r, "change"),
            state,
        };
        for r in &now {
            let state = if teams_before.contains(&row_text(r, "team")) {
                "still_open"
            } else {
                "new"
            };
            current.push(row(r, state));
        }
        for r in &before {
            if !teams_now.contains(&row_text(r, "team")) {
                resolved.push(row(r, "resolved"));
            }
        }
    }
    Ok((current, resolved))
}

/// The store x action heat map, the stores with the lowest average rate first.
async fn heatmap(
    config: &Config,
    lake: &Lake,
    catalog: &Catalog,
    period: &Period,
) -> Result<Heatmap> {
    let action_types: Vec<String> = config.rules.store_actions.keys().cloned().collect();
    let rows = match catalog.latest("store_action_heatmap") {
        Some(m) => rows_of(lake, m, &period.id).await?,
        None => Vec::new(),
    };
    let mut stores: BTreeMap<String, HashMap<String, &Map<String, Value>>> = BTreeMap::new();
    for row in &rows {
        if let (Some(store), Some(action)) =
            (row_text(row, "store_id"), row_text(row, "action_type"))
        {
            stores.entry(store).or_default().insert(action, row);
        }
    }
    let map: Vec<HeatRow> = stores
        .into_iter()
        .map(|(store_id, cells)| {
            let team = cells.values().find_map(|r| row_text(r, "team"));
            let cells: Vec<HeatCell> = action_types
                .iter()
                .map(|a| match cells.get(a) {
                    Some(r) => HeatCell {
                        rate: row_number(r, "rate"),
                        days_met: row_number(r, "days_met").map(|d| d as i64),
                        band: row_text(r, "band").unwrap_or_else(|| "none".into()),
                    },
                    None => HeatCell {
                        rate: None,
                        days_met: None,
                        band: "none".into(),
                    },
                })
                .collect();
            let rates: Vec<f64> = cells.iter().filter_map(|c| c.rate).collect();
            let rate = rates.iter().sum::<f64>() / rates.len().max(1) as f64;
            HeatRow {
                store_id,
                team,
                rate,
                cells,
            }
        })
        .collect();
    Ok(Heatmap::new(
        action_types,
        map,
        config.report.heatmap_stores,
    ))
}
