//! `flowhealth alerts`: key actions that timed out, pushed to webhooks.
//!
//! Three kinds of alert, all computed at `as_of` (now by default):
//! - silent timeouts: the open opportunities the catalog's `silent_warnings` metric marks
//!   `overdue` (`docs/contract.md` section 4.5), one alert per opportunity and deadline (its
//!   last activity);
//! - key-action deadlines from `alerts.deadlines` (the article's "customer feedback within 48 h of
//!   the demo"): an `after` action with no `expect` action on the same open opportunity
//!   `within_h` later, one alert per starting action;
//! - broken promises: the promises in notes that the catalog's `commitments` metric marks
//!   `broken` (their deadline passed without a later action), one alert per promise.
//!
//! An alert goes to its team's channels (`alerts.routes`), else to the default ones
//! (`alerts.notify`), through [`crate::notify`], mentioning its owner where `alerts.owners` says
//! how. A ledger in the lake (`_flowhealth/alerts/ledger.json`, under the `alerts` lock) makes
//! each alert go once to each channel: it records which channels had it, and when it was sent,
//! escalated and resolved. A channel that fails (after the configured retries) is tried again at
//! the next run, the others are not. An alert still unresolved `escalate.after_h` after it was
//! sent goes to the escalation webhooks.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use datafusion::common::ScalarValue;
use serde::{Deserialize, Serialize};

use crate::config::{Config, DeadlineConfig};
use crate::engine::{Engine, json_rows, row_number, row_text};
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::lake::lock::LakeLock;
use crate::notify;
use crate::time::format::{local_text, rfc3339};
use crate::time::{Period, PeriodKind};

/// One overdue key action.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// `<rule>:<opportunity>:<what started the clock>`: the once-only identity.
    pub key: String,
    /// `silent_timeout`, or the name of a deadline rule.
    pub rule: String,
    pub opportunity_id: String,
    pub owner_id: Option<String>,
    pub team: Option<String>,
    /// When the action was due (RFC 3339, UTC).
    pub due_at: String,
    /// What a supervisor reads: the stage and silent hours, or the missing action.
    pub detail: String,
}

/// The ledger's record of an alert.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    #[serde(flatten)]
    pub alert: Alert,
    pub first_seen_at: DateTime<Utc>,
    pub notified_at: Option<DateTime<Utc>>,
    pub escalated_at: Option<DateTime<Utc>>,
    pub resolved_at: Option<DateTime<Utc>>,
    /// Masked (see [`notify::mask`]).
    pub last_error: Option<String>,
    /// The channels that have had it (an alert is notified when every channel of its route
    /// has): a channel that failed is tried again at the next run, the others are not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sent_to: Vec<String>,
    /// The escalation channels that have had it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub escalated_to: Vec<String>,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub open: usize,
    pub notified: Vec<String>,
    pub escalated: Vec<String>,
    pub resolved: Vec<String>,
    /// Webhook calls that failed after their retries (the alerts stay unsent, for the next run).
    pub failed: Vec<Error>,
    /// Alerts found but not sent because no webhook is configured (or `--dry-run`).
    pub unsent: Vec<Alert>,
}

impl Outcome {
    pub fn exit_code(&self) -> i32 {
        if self.failed.is_empty() { 0 } else { 1 }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "alerts: {} open, {} sent, {} escalated, {} resolved",
            self.open,
            self.notified.len(),
            self.escalated.len(),
            self.resolved.len()
        )?;
        for alert in &self.unsent {
            writeln!(
                f,
                "  (not sent) {} {}: {}",
                alert.opportunity_id, alert.rule, alert.detail
            )?;
        }
        for error in &self.failed {
            writeln!(f, "  FAILED {error}")?;
        }
        Ok(())
    }
}

const LEDGER: [&str; 3] = ["_flowhealth", "alerts", "ledger.json"];
/// Resolved entries are forgotten this long after resolution (their keys cannot come back: a
/// new deadline has a new key).
const FORGET_AFTER_DAYS: i64 = 30;

/// Finds the alerts at `as_of` (ISO 8601; now by default) and sends what is new or due for
/// escalation. `dry_run` lists them without sending or recording anything.
pub async fn run(config: &Config, as_of: Option<&str>, dry_run: bool) -> Result<Outcome> {
    let now = match as_of {
        Some(text) => crate::time::parse::parse_as_of(config.timezone, text)?,
        None => Utc::now().timestamp_micros(),
    };
    let now_utc = DateTime::from_timestamp_micros(now).unwrap_or_default();
    let lake = Lake::open(config)?;
    let alerts = find(config, &lake, now).await?;
    let routing = Routing::new(config)?;
    if dry_run || routing.is_empty() {
        if !dry_run {
            tracing::warn!(
                "No webhook in alerts.webhooks: alerts are listed, not sent or recorded."
            );
        }
        return Ok(Outcome {
            open: alerts.len(),
            unsent: alerts,
            ..Outcome::default()
        });
    }

    let lock = LakeLock::acquire(&lake, "alerts").await?;
    let result = deliver(config, &lake, &routing, alerts, now_utc).await;
    lock.release().await?;
    result
}

/// Where alerts go: every configured channel by name, the default channels (`alerts.notify`,
/// or else every webhook that no route, escalation or report names), the teams' routes and the
/// escalation channels.
struct Routing {
    channels: BTreeMap<String, Box<dyn notify::Channel>>,
    notifier: notify::Notifier,
    default: Vec<String>,
    routes: BTreeMap<String, Vec<String>>,
    escalate: Vec<String>,
}

impl Routing {
    fn new(config: &Config) -> Result<Routing> {
        let alerts = &config.alerts;
        let escalate: Vec<String> = alerts
            .escalate
            .iter()
            .flat_map(|e| e.webhooks.clone())
            .collect();
        let named_elsewhere = |name: &String| {
            escalate.contains(name)
                || alerts.routes.values().any(|hooks| hooks.contains(name))
                || config
                    .report
                    .channels
                    .values()
                    .any(|hooks| hooks.contains(name))
        };
        let default = if alerts.notify.is_empty() {
            alerts
                .webhooks
                .iter()
                .map(|h| h.name.clone())
                .filter(|name| !named_elsewhere(name))
                .collect()
        } else {
            alerts.notify.clone()
        };
        Ok(Routing {
            notifier: notify::Notifier::new(alerts)?,
            channels: alerts
                .webhooks
                .iter()
                .map(|h| (h.name.clone(), notify::channel(h)))
                .collect(),
            default,
            routes: alerts.routes.clone(),
            escalate,
        })
    }

    fn is_empty(&self) -> bool {
        self.default.is_empty() && self.routes.values().all(Vec::is_empty)
    }

    /// The channels `alert` goes to: its team's route, or the default ones.
    fn targets(&self, alert: &Alert) -> &[String] {
        alert
            .team
            .as_ref()
            .and_then(|team| self.routes.get(team))
            .unwrap_or(&self.default)
    }
}

/// One message listing `alerts` (at most `alerts.max_items`; the rest counted), each line
/// mentioning its owner where `alerts.owners` says how.
fn message(config: &Config, title: String, alerts: &[&Alert]) -> notify::Message {
    let shown = config.alerts.max_items.min(alerts.len());
    notify::Message {
        title,
        lines: alerts[..shown]
            .iter()
            .map(|alert| notify::Line {
                text: line(alert),
                contact: alert
                    .owner_id
                    .as_ref()
                    .and_then(|owner| config.alerts.owners.get(owner))
                    .cloned(),
            })
            .collect(),
        more: alerts.len() - shown,
        link: None,
        data: [(
            "alerts".to_string(),
            serde_json::to_value(alerts).unwrap_or_default(),
        )]
        .into_iter()
        .collect(),
    }
}

/// "O4 (north, R2) silent_timeout: lead: silent 131.0 h, timeout 48 h (...)".
fn line(alert: &Alert) -> String {
    let who = [alert.team.as_deref(), alert.owner_id.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{} ({who}) {}: {}",
        alert.opportunity_id, alert.rule, alert.detail
    )
}

/// An alert's two deliveries: the first notice (to its route) and the escalation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    Notice,
    Escalation,
}

impl Entry {
    /// The channels that have had `round`.
    fn channels(&mut self, round: Round) -> &mut Vec<String> {
        match round {
            Round::Notice => &mut self.sent_to,
            Round::Escalation => &mut self.escalated_to,
        }
    }

    /// When every channel of `round` had it.
    fn done(&mut self, round: Round) -> &mut Option<DateTime<Utc>> {
        match round {
            Round::Notice => &mut self.notified_at,
            Round::Escalation => &mut self.escalated_at,
        }
    }
}

/// Sends `round` of `wanted` (each alert with its channels) to the channels that have not had
/// it, one message per channel, and records in `ledger` which did. Returns the keys of the
/// alerts every channel has now had, and what failed (those channels are tried again at the
/// next run, the others are not).
async fn send_round(
    config: &Config,
    routing: &Routing,
    ledger: &mut BTreeMap<String, Entry>,
    round: Round,
    title: impl Fn(usize) -> String,
    wanted: &[(Alert, Vec<String>)],
    now: DateTime<Utc>,
) -> (Vec<String>, Vec<Error>) {
    let mut by_channel: BTreeMap<&str, Vec<&Alert>> = BTreeMap::new();
    for (alert, targets) in wanted {
        let Some(entry) = ledger.get_mut(&alert.key) else {
            continue;
        };
        for target in targets {
            if !entry.channels(round).contains(target) {
                by_channel.entry(target).or_default().push(alert);
            }
        }
    }
    let mut failed = Vec::new();
    for (name, list) in by_channel {
        let Some(channel) = routing.channels.get(name) else {
            continue;
        };
        let message = message(config, title(list.len()), &list);
        match routing.notifier.send(channel.as_ref(), &message).await {
            Ok(()) => {
                for alert in list {
                    if let Some(entry) = ledger.get_mut(&alert.key) {
                        entry.channels(round).push(name.to_string());
                    }
                }
            }
            Err(error) => failed.push(error.context(format!("webhook {name}"))),
        }
    }
    let mut complete = Vec::new();
    for (alert, targets) in wanted {
        let Some(entry) = ledger.get_mut(&alert.key) else {
            continue;
        };
        if targets.iter().all(|t| entry.channels(round).contains(t)) {
            *entry.done(round) = Some(now);
            complete.push(alert.key.clone());
            if round == Round::Notice {
                entry.last_error = None;
            }
        } else if round == Round::Notice {
            let errors: Vec<String> = failed.iter().map(ToString::to_string).collect();
            entry.last_error = Some(notify::mask(&errors.join("; ")));
        }
    }
    (complete, failed)
}

async fn deliver(
    config: &Config,
    lake: &Lake,
    routing: &Routing,
    alerts: Vec<Alert>,
    now: DateTime<Utc>,
) -> Result<Outcome> {
    let path = lake.path(&LEDGER);
    let mut ledger: BTreeMap<String, Entry> = match lake.get(&path).await? {
        Some(bytes) => serde_json::from_slice::<Vec<Entry>>(&bytes)
            .map_err(|e| {
                Error::Lake(format!(
                    "{}: not an alert ledger: {e}",
                    lake.relative(&path)
                ))
            })?
            .into_iter()
            .map(|e| (e.alert.key.clone(), e))
            .collect(),
        None => BTreeMap::new(),
    };
    let mut outcome = Outcome {
        open: alerts.len(),
        ..Outcome::default()
    };

    // Resolved: open in the ledger, no longer overdue now.
    for entry in ledger.values_mut() {
        if entry.resolved_at.is_none() && !alerts.iter().any(|a| a.key == entry.alert.key) {
            entry.resolved_at = Some(now);
            outcome.resolved.push(entry.alert.key.clone());
        }
    }
    ledger.retain(|_, e| {
        e.resolved_at
            .is_none_or(|r| now - r < Duration::days(FORGET_AFTER_DAYS))
    });

    // New alerts (and ones some channel has not had yet), with the channels they go to.
    let mut fresh: Vec<(Alert, Vec<String>)> = Vec::new();
    for alert in &alerts {
        let targets = routing.targets(alert).to_vec();
        if targets.is_empty() {
            outcome.unsent.push(alert.clone());
            continue;
        }
        let entry = ledger.entry(alert.key.clone()).or_insert_with(|| Entry {
            alert: alert.clone(),
            first_seen_at: now,
            notified_at: None,
            escalated_at: None,
            resolved_at: None,
            last_error: None,
            sent_to: Vec::new(),
            escalated_to: Vec::new(),
        });
        if entry.notified_at.is_none() {
            fresh.push((alert.clone(), targets));
        }
    }
    let (notified, failed) = send_round(
        config,
        routing,
        &mut ledger,
        Round::Notice,
        |n| format!("flowhealth: {n} key actions overdue"),
        &fresh,
        now,
    )
    .await;
    outcome.notified = notified;
    outcome.failed.extend(failed);

    if let Some(escalate) = &config.alerts.escalate {
        let after = Duration::milliseconds((escalate.after_h * 3_600_000.0) as i64);
        let due: Vec<(Alert, Vec<String>)> = ledger
            .values()
            .filter(|e| {
                e.resolved_at.is_none()
                    && e.escalated_at.is_none()
                    && e.notified_at.is_some_and(|n| now - n >= after)
            })
            .map(|e| (e.alert.clone(), routing.escalate.clone()))
            .collect();
        let (escalated, failed) = send_round(
            config,
            routing,
            &mut ledger,
            Round::Escalation,
            |n| {
                format!(
                    "flowhealth escalation: {} unresolved after {} h",
                    crate::metrics::display::count(n, "alert", "alerts"),
                    escalate.after_h
                )
            },
            &due,
            now,
        )
        .await;
        outcome.escalated = escalated;
        outcome.failed.extend(failed);
    }

    let entries: Vec<&Entry> = ledger.values().collect();
    lake.put_json(&path, &entries).await?;
    Ok(outcome)
}

/// Every alert that is overdue at `as_of` (microseconds, UTC).
pub async fn find(config: &Config, lake: &Lake, as_of: i64) -> Result<Vec<Alert>> {
    let engine = crate::engine::Engine::open(config, lake).await?;
    let found = find_in(config, lake, &engine, as_of).await;
    engine.close().await?;
    found
}

async fn find_in(config: &Config, lake: &Lake, engine: &Engine, as_of: i64) -> Result<Vec<Alert>> {
    crate::engine::snapshot::register_opportunities(engine, lake).await?;
    let ctx = engine.ctx();
    let tz = config.timezone;
    let today = DateTime::from_timestamp_micros(as_of)
        .unwrap_or_default()
        .with_timezone(&tz)
        .date_naive();
    let week = Period::containing(PeriodKind::Week, today);
    let mut params = crate::metrics::run::Params::new(config, &week, Some(as_of));
    let mut alerts = Vec::new();

    if config.alerts.silent_timeouts {
        let catalog = crate::metrics::catalog(config)?;
        let metric = catalog.latest("silent_warnings").ok_or_else(|| {
            Error::Usage(format!(
                "alerts.silent_timeouts needs the metric `silent_warnings`, which is not in {}",
                catalog.dir.display()
            ))
        })?;
        // Last week's output holds the open opportunities as of this week's start.
        let carry =
            crate::metrics::carry::prepare(engine, config, lake, metric, &week, as_of).await?;
        params.carry_from(config, carry.as_of);
        let frame = crate::metrics::run::plan(ctx, metric, &params).await?;
        for row in json_rows(&engine.collect(frame, Error::from).await?)? {
            let text = |c: &str| row_text(&row, c);
            let number = |c: &str| row_number(&row, c);
            if text("status").as_deref() != Some("overdue") {
                continue;
            }
            let (Some(opportunity), Some(last_activity)) =
                (text("opportunity_id"), text("last_activity_at"))
            else {
                continue;
            };
            let remaining = number("hours_remaining").unwrap_or(0.0);
            let due = as_of + (remaining * 3_600_000_000.0) as i64;
            let stage = text("stage").unwrap_or_default();
            alerts.push(Alert {
                key: format!("silent_timeout:{opportunity}:{last_activity}"),
                rule: "silent_timeout".into(),
                opportunity_id: opportunity,
                owner_id: text("owner_id"),
                team: text("team"),
                due_at: rfc3339(due),
                detail: format!(
                    "{stage}: silent {:.1} h, timeout {:.0} h (last activity {})",
                    number("silent_hours").unwrap_or(0.0),
                    number("timeout_h").unwrap_or(0.0),
                    local(tz, &last_activity)
                ),
            });
        }
    }

    if config.alerts.broken_commitments {
        alerts.extend(broken_commitments(config, engine, &params).await?);
    }
    for rule in &config.alerts.deadlines {
        alerts.extend(deadline(config, engine, rule, as_of).await?);
    }
    Ok(alerts)
}

/// Promises in notes whose deadline passed without a later action on their opportunity (or
/// customer): the catalog's `commitments` rows that are `broken` at `as_of`, their deadline
/// within `alerts.lookback_days`. A catalog without the metric has none.
async fn broken_commitments(
    config: &Config,
    engine: &Engine,
    params: &crate::metrics::run::Params,
) -> Result<Vec<Alert>> {
    let catalog = crate::metrics::catalog(config)?;
    let Some(metric) = catalog.latest("commitments") else {
        tracing::debug!("No `commitments` metric in the catalog: no broken-promise alerts.");
        return Ok(Vec::new());
    };
    let frame = crate::metrics::run::plan(engine.ctx(), metric, params).await?;
    let lookback_h = f64::from(config.alerts.lookback_days) * 24.0;
    let mut alerts = Vec::new();
    for row in json_rows(&engine.collect(frame, Error::from).await?)? {
        let text = |c: &str| row_text(&row, c);
        let hours_left = row_number(&row, "hours_left").unwrap_or(0.0);
        if text("status").as_deref() != Some("broken") || hours_left < -lookback_h {
            continue;
        }
        let (Some(action), Some(deadline), Some(subject)) = (
            text("action_id"),
            text("deadline"),
            text("opportunity_id").or_else(|| text("customer_id")),
        ) else {
            continue;
        };
        let due = DateTime::parse_from_rfc3339(&deadline)
            .map(|d| {
                d.to_utc()
                    .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            })
            .unwrap_or_else(|_| deadline.clone());
        alerts.push(Alert {
            key: format!("broken_commitment:{action}:{deadline}"),
            rule: "broken_commitment".into(),
            opportunity_id: subject,
            owner_id: text("owner_id"),
            team: text("team"),
            due_at: due,
            detail: format!(
                "promised \"{}\" by {}, no action on it since ({:.1} h overdue)",
                text("promise").unwrap_or_default(),
                local(config.timezone, &deadline),
                -hours_left
            ),
        });
    }
    Ok(alerts)
}

/// Opportunities whose `after` action had no `expect` action within `within_h`, as of `as_of`.
async fn deadline(
    config: &Config,
    engine: &Engine,
    rule: &DeadlineConfig,
    as_of: i64,
) -> Result<Vec<Alert>> {
    const SQL: &str = "
        SELECT a.opportunity_id, a.action_id, coalesce(o.owner_id, a.owner_id) AS owner_id,
               coalesce(o.team, a.team) AS team, a.occurred_at,
               silent_hours(a.occurred_at, $as_of) - $within_h AS hours_over
        FROM actions a
        LEFT JOIN opportunities o ON o.opportunity_id = a.opportunity_id
        WHERE a.action_type = $after AND a.opportunity_id IS NOT NULL
          AND a.dt >= $since_date AND a.occurred_at < $as_of
          AND coalesce(o.status, 'open') = 'open'
          AND silent_hours(a.occurred_at, $as_of) > $within_h
          AND silent_hours(a.occurred_at, $as_of) <= $within_h + $lookback_h
          AND NOT EXISTS (
            SELECT 1 FROM actions b
            WHERE b.opportunity_id = a.opportunity_id AND b.action_type = $expect
              AND b.dt >= $since_date AND b.occurred_at >= a.occurred_at AND b.occurred_at < $as_of)
        ORDER BY hours_over DESC, a.opportunity_id";
    let tz = config.timezone;
    let lookback_h = f64::from(config.alerts.lookback_days) * 24.0;
    let earliest = as_of - ((rule.within_h + lookback_h + 24.0) * 3_600_000_000.0) as i64;
    let since = DateTime::from_timestamp_micros(earliest)
        .unwrap_or_default()
        .with_timezone(&tz)
        .date_naive();
    let params: Vec<(String, ScalarValue)> = vec![
        (
            "as_of".into(),
            ScalarValue::TimestampMicrosecond(Some(as_of), Some("UTC".into())),
        ),
        ("within_h".into(), ScalarValue::Float64(Some(rule.within_h))),
        ("lookback_h".into(), ScalarValue::Float64(Some(lookback_h))),
        ("after".into(), ScalarValue::Utf8(Some(rule.after.clone()))),
        (
            "expect".into(),
            ScalarValue::Utf8(Some(rule.expect.clone())),
        ),
        (
            "since_date".into(),
            ScalarValue::Date32(Some(
                datafusion::arrow::datatypes::Date32Type::from_naive_date(since),
            )),
        ),
    ];
    let frame = engine.ctx().sql(SQL).await?.with_param_values(params)?;
    let mut alerts = Vec::new();
    for row in json_rows(&engine.collect(frame, Error::from).await?)? {
        let text = |c: &str| row_text(&row, c);
        let (Some(opportunity), Some(action), Some(started)) = (
            text("opportunity_id"),
            text("action_id"),
            text("occurred_at"),
        ) else {
            continue;
        };
        let over = row_number(&row, "hours_over").unwrap_or(0.0);
        let due = as_of - (over * 3_600_000_000.0) as i64;
        alerts.push(Alert {
            key: format!("{}:{opportunity}:{action}", rule.name),
            rule: rule.name.clone(),
            opportunity_id: opportunity,
            owner_id: text("owner_id"),
            team: text("team"),
            due_at: rfc3339(due),
            detail: format!(
                "{} at {}, no {} within {} h ({over:.1} h overdue)",
                rule.after,
                local(tz, &started),
                rule.expect,
                rule.within_h
            ),
        });
    }
    Ok(alerts)
}

/// An instant from the lake, in the configured timezone for people to read.
fn local(tz: chrono_tz::Tz, text: &str) -> String {
    local_text(tz, text).unwrap_or_else(|| text.to_string())
}
