//! A report's short card for chat channels (`report.channels`): the subject, the index and its
//! components with their change, the top breaches as instructions, where to start, what the
//! "Process integrity" section found, and the link to the whole report. Sent once per channel
//! and report: a ledger in the lake (`_flowhealth/notify/reports.json`) records which channels
//! had it, so sending the report again does not post it again, and a channel that failed is
//! tried again at the next `report --send`.

use std::collections::BTreeMap;

use chrono::Utc;

use super::model::{Monthly, Weekly};
use super::render::Templates;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::lake::lock::LakeLock;
use crate::notify::{self, Line, Message};

/// Breaches spelled out on a card; the rest are counted.
const TOP: usize = 3;

const LEDGER: [&str; 3] = ["_flowhealth", "notify", "reports.json"];

/// The card of a weekly report.
pub fn weekly(templates: &Templates, report: &Weekly, subject: &str) -> Result<Message> {
    let label = |key: &str| templates.label(key);
    let pct = crate::metrics::display::rate;
    let pts = |v: Option<f64>| v.map_or("n/a".into(), |v| format!("{:+.1} pts", v * 100.0));
    let mut lines = vec![Line {
        text: std::iter::once(&report.index)
            .chain(&report.components)
            .map(|s| format!("{} {} ({})", label(&s.key), pct(s.value), pts(s.change)))
            .collect::<Vec<_>>()
            .join(" · "),
        contact: None,
    }];
    lines.extend(report.breaches.iter().take(TOP).map(|b| Line {
        text: b.advice.clone(),
        contact: None,
    }));
    let more = report.breaches.len().saturating_sub(TOP);
    if let Some(focus) = &report.focus {
        let facts = serde_json::to_value(focus)?;
        lines.push(Line {
            text: templates.render_label("advice_focus", &facts)?,
            contact: None,
        });
    }
    let found: Vec<String> = report
        .integrity
        .iter()
        .filter(|s| s.computed && s.count > 0)
        .map(|s| format!("{} {}", label(&format!("integrity_{}", s.key)), s.count))
        .collect();
    if !found.is_empty() {
        lines.push(Line {
            text: format!("{}: {}", label("integrity_title"), found.join(", ")),
            contact: None,
        });
    }
    Ok(Message {
        title: subject.to_string(),
        lines,
        more,
        link: None,
        data: data(serde_json::json!({
            "report": "weekly",
            "period": report.period.id,
            "index": report.index.value,
            "change": report.index.change,
            "breaches": report.breaches.len(),
        })),
    })
}

/// The card of a monthly report: its five longest stays past their timeout.
pub fn monthly(templates: &Templates, report: &Monthly, subject: &str) -> Result<Message> {
    let mut lines: Vec<Line> = report
        .stays
        .iter()
        .map(|s| {
            let text = |c: &str| crate::engine::row_text(s, c).unwrap_or_default();
            Line {
                text: format!(
                    "{} {} ({}): {:.0} h",
                    text("opportunity_id"),
                    templates.codes().label(&text("stage")),
                    text("owner_id"),
                    crate::engine::row_number(s, "dwell_hours").unwrap_or(0.0)
                ),
                contact: None,
            }
        })
        .collect();
    if lines.is_empty() {
        lines.push(Line {
            text: templates.label("no_stays"),
            contact: None,
        });
    }
    Ok(Message {
        title: subject.to_string(),
        lines,
        more: 0,
        link: None,
        data: data(serde_json::json!({
            "report": "monthly",
            "period": report.period.id,
            "stays": report.stays.len(),
        })),
    })
}

fn data(report: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    [("report".to_string(), report)].into_iter().collect()
}

/// Where the card points: `report.link` with `{report}` and `{period}` replaced, or the page's
/// place in the lake.
pub fn link(config: &Config, report: &str, period: &str, page: &str) -> String {
    match &config.report.link {
        Some(link) => link.replace("{report}", report).replace("{period}", period),
        None => page.to_string(),
    }
}

/// What sending a card did: the channels it went to now, and an error per channel that failed.
#[derive(Debug, Default)]
pub struct Sent {
    pub sent: Vec<String>,
    pub failed: Vec<Error>,
}

/// Sends `card` to the channels `report.channels.<report>` names that have not had the card of
/// `key` (e.g. `weekly-2026-W13`).
pub async fn send(
    config: &Config,
    lake: &Lake,
    report: &str,
    key: &str,
    card: &Message,
) -> Result<Sent> {
    let names = config
        .report
        .channels
        .get(report)
        .cloned()
        .unwrap_or_default();
    if names.is_empty() {
        return Ok(Sent::default());
    }
    let lock = LakeLock::acquire(lake, "notify").await?;
    let result = deliver(config, lake, key, card, &names).await;
    lock.release().await?;
    result
}

async fn deliver(
    config: &Config,
    lake: &Lake,
    key: &str,
    card: &Message,
    names: &[String],
) -> Result<Sent> {
    let path = lake.path(&LEDGER);
    // report key -> channel -> when it was sent
    let mut ledger: BTreeMap<String, BTreeMap<String, chrono::DateTime<Utc>>> =
        match lake.get(&path).await? {
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::Lake(format!(
                    "{}: not a report card ledger: {e}",
                    lake.relative(&path)
                ))
            })?,
            None => BTreeMap::new(),
        };
    let notifier = notify::Notifier::new(&config.alerts)?;
    let mut outcome = Sent::default();
    for name in names {
        if ledger.get(key).is_some_and(|sent| sent.contains_key(name)) {
            tracing::info!(key, channel = %name, "Card already sent; not sending again.");
            continue;
        }
        let Some(hook) = config.alerts.webhooks.iter().find(|h| &h.name == name) else {
            continue;
        };
        match notifier.send(notify::channel(hook).as_ref(), card).await {
            Ok(()) => {
                ledger
                    .entry(key.to_string())
                    .or_default()
                    .insert(name.clone(), Utc::now());
                outcome.sent.push(name.clone());
            }
            Err(error) => outcome
                .failed
                .push(error.context(format!("card {key} to {name}"))),
        }
    }
    lake.put_json(&path, &ledger).await?;
    Ok(outcome)
}
