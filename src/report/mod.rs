//! `flowhealth report weekly|monthly`: the health reports, from the metric outputs in the lake.
//!
//! [`model`] reads what a report shows (never recomputing a metric), [`render`] turns it into HTML
//! and plain text through editable templates, [`chart`] draws the index trend as a PNG, and
//! [`mail`] queues the message in a durable outbox and delivers it (a file, or SMTP).
//!
//! Every run writes the report's HTML to `reports/<report>/<period>.html` in the lake (the chart
//! inlined, so a browser shows it); with `--send` the message also goes through the outbox, and
//! each delivered message is copied to `reports/<report>/<period>[.team-<team>].eml`.

pub mod card;
pub mod chart;
pub mod heatmap;
pub mod integrity;
pub mod mail;
pub mod model;
pub mod render;

use base64::Engine as _;
use bytes::Bytes;
use lettre::Message;
use lettre::message::header::ContentType;
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};
use sha2::Digest as _;

use self::mail::{Outbox, Queued};
use self::model::{COMPONENTS, Monthly, Weekly};
use self::render::Templates;
use crate::config::Config;
use crate::error::{Error, Result};
use crate::lake::Lake;
use crate::time::{Period, PeriodKind};

/// Which report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The weekly health report (the last complete ISO week by default).
    Weekly,
    /// The monthly breakpoints report (the last complete month by default).
    Monthly,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Weekly => "weekly",
            Kind::Monthly => "monthly",
        }
    }

    /// The kind of period the report covers.
    pub fn period_kind(self) -> PeriodKind {
        match self {
            Kind::Weekly => PeriodKind::Week,
            Kind::Monthly => PeriodKind::Month,
        }
    }
}

/// One message of a report: the organisation's, or a team's copy.
struct Rendered {
    key: String,
    /// `None` for the organisation's copy.
    team: Option<String>,
    subject: String,
    to: Vec<String>,
    text: String,
    /// The HTML of the message, the pictures referenced as `cid:<name>`.
    html: String,
    /// The pictures inline beside the HTML: (Content-ID, PNG).
    images: Vec<(&'static str, Vec<u8>)>,
    csv: Option<(String, Vec<u8>)>,
}

/// What `report` did, for the caller (the demo prints the path of the message).
#[derive(Debug, Default)]
pub struct Outcome {
    pub html: String,
    /// Messages delivered now or earlier: (key, path in the outbox's `sent/`).
    pub sent: Vec<(String, std::path::PathBuf)>,
    /// Messages that could not be delivered, each error naming its message's key (they stay
    /// pending), and cards a channel did not take.
    pub failed: Vec<Error>,
    /// Channels (`report.channels`) that got the report's card now.
    pub cards: Vec<String>,
}

impl Outcome {
    pub fn exit_code(&self) -> i32 {
        if self.failed.is_empty() { 0 } else { 1 }
    }
}

/// Renders the report of `period` (default: the last complete one), writes its HTML to the lake
/// and, with `send`, delivers it to the configured recipients.
pub async fn run(config: &Config, kind: Kind, period: Option<&str>, send: bool) -> Result<Outcome> {
    let period = match period {
        Some(id) => Period::parse_as(
            id,
            kind.period_kind(),
            &format!("the {} report", kind.name()),
        )?,
        None => Period::last_complete(kind.period_kind(), crate::time::today(config.timezone)),
    };
    let catalog = crate::metrics::catalog(config)?;
    let lake = Lake::open(config)?;
    // A metrics run killed after its commit: its outputs are finished before they are read.
    crate::lake::commit::roll_forward(&lake).await;
    let templates = Templates::load(config)?;
    let recipients = config
        .email
        .recipients
        .get(kind.name())
        .unwrap_or(&config.email.to)
        .clone();
    let key = format!("{}-{}", kind.name(), period.id);

    let (messages, lake_html, mut card) = match kind {
        Kind::Weekly => {
            let report = Weekly::load(config, &lake, &catalog, &period, templates.codes()).await?;
            let threshold = report.index.threshold;
            let trend = chart::trend_png(&report.chart_points(), threshold)?;
            let pictures = pictures(&report, &trend)?;
            let data_uri = |png: &[u8]| {
                format!(
                    "data:image/png;base64,{}",
                    base64::engine::general_purpose::STANDARD.encode(png)
                )
            };
            let sources: Vec<(&str, String)> = pictures
                .iter()
                .map(|(cid, png)| (*cid, data_uri(png)))
                .collect();
            let lake_html = render_weekly(config, &templates, &report, &sources)?.1;
            let mut messages = vec![weekly_message(
                config,
                &templates,
                &report,
                pictures,
                key.clone(),
                recipients,
            )?];
            for (team, to) in &config.email.teams {
                let copy = report.for_team(team, config.report.top_overdue);
                let team_key = format!("{key}.team-{}", slug(team));
                messages.push(weekly_message(
                    config,
                    &templates,
                    &copy,
                    self::pictures(&copy, &trend)?,
                    team_key,
                    to.clone(),
                )?);
            }
            let card = card::weekly(&templates, &report, &messages[0].subject)?;
            (messages, lake_html, card)
        }
        Kind::Monthly => {
            let report = Monthly::load(config, &lake, &catalog, &period, templates.codes()).await?;
            let mut context = serde_json::to_value(&report)?;
            context["language"] = config.report.language.clone().into();
            templates.integrity_advice(&mut context)?;
            let subject = subject_line(&templates.render_label("monthly_subject", &context)?);
            context["subject"] = subject.clone().into();
            let html = templates.render("monthly.html", &context)?;
            let text = templates.render("monthly.txt", &context)?;
            let message = Rendered {
                key: key.clone(),
                team: None,
                subject,
                to: recipients,
                text,
                html: html.clone(),
                images: Vec::new(),
                csv: None,
            };
            let card = card::monthly(&templates, &report, &message.subject)?;
            (vec![message], html, card)
        }
    };

    let html_path = lake.path(&["reports", kind.name(), &format!("{}.html", period.id)]);
    lake.put(&html_path, Bytes::from(lake_html)).await?;
    let mut outcome = Outcome {
        html: format!("{}/{}", lake.display(), lake.relative(&html_path)),
        ..Outcome::default()
    };
    if !send {
        return Ok(outcome);
    }

    let outbox = Outbox::open(config);
    let mut queued = Vec::new();
    let cards = config
        .report
        .channels
        .get(kind.name())
        .is_some_and(|c| !c.is_empty());
    for message in &messages {
        // A report may go to chat channels only.
        if message.to.is_empty() && cards {
            continue;
        }
        if message.to.is_empty() {
            return Err(Error::Usage(format!(
                "no recipients for the {} report: set email.to or email.recipients.{}",
                kind.name(),
                kind.name()
            )));
        }
        match outbox.enqueue(&message.key, &build(config, message)?)? {
            Queued::AlreadySent(path) => {
                tracing::info!(key = %message.key, path = %path.display(), "Already sent; not sending again.");
                outcome.sent.push((message.key.clone(), path));
            }
            Queued::Pending(_) => queued.push(message),
        }
    }
    // Delivers what was just queued and whatever earlier runs left pending.
    for delivery in outbox.deliver(config).await? {
        match delivery.result {
            Ok(path) => {
                if let Some(message) = queued.iter().find(|m| m.key == delivery.key) {
                    let name = match &message.team {
                        None => format!("{}.eml", period.id),
                        Some(team) => format!("{}.team-{}.eml", period.id, slug(team)),
                    };
                    let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
                    lake.put(
                        &lake.path(&["reports", kind.name(), &name]),
                        Bytes::from(bytes),
                    )
                    .await?;
                }
                outcome.sent.push((delivery.key, path));
            }
            Err(error) => outcome.failed.push(error.context(delivery.key)),
        }
    }
    card.link = Some(card::link(config, kind.name(), &period.id, &outcome.html));
    let sent = card::send(config, &lake, kind.name(), &key, &card).await?;
    outcome.cards = sent.sent;
    outcome.failed.extend(sent.failed);
    Ok(outcome)
}

/// `flowhealth report outbox`: delivers every message still pending.
pub async fn flush(config: &Config) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    for delivery in Outbox::open(config).deliver(config).await? {
        match delivery.result {
            Ok(path) => outcome.sent.push((delivery.key, path)),
            Err(error) => outcome.failed.push(error.context(delivery.key)),
        }
    }
    Ok(outcome)
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if !self.html.is_empty() {
            writeln!(f, "report: {}", self.html)?;
        }
        for (key, path) in &self.sent {
            writeln!(f, "sent {key}: {}", path.display())?;
        }
        for channel in &self.cards {
            writeln!(f, "card to {channel}")?;
        }
        for error in &self.failed {
            writeln!(f, "NOT SENT {error}")?;
        }
        Ok(())
    }
}

/// The weekly report's pictures: (Content-ID, PNG) of the index trend and, when there are
/// stores, the chain-wide heat map.
fn pictures(report: &Weekly, trend: &[u8]) -> Result<Vec<(&'static str, Vec<u8>)>> {
    let mut pictures = vec![("trend", trend.to_vec())];
    if !report.heatmap.all.is_empty() {
        let groups = report.heatmap.picture_groups();
        pictures.push((
            "heatmap",
            heatmap::heatmap_png(&report.heatmap.action_types, &groups)?,
        ));
    }
    Ok(pictures)
}

/// Renders the weekly report's subject and HTML, each picture at its source in `sources`
/// (`cid:trend` in a message, a data URI in the lake's page), as `<name>_src`.
fn render_weekly(
    config: &Config,
    templates: &Templates,
    report: &Weekly,
    sources: &[(&str, String)],
) -> Result<(serde_json::Value, String)> {
    let mut context = serde_json::to_value(report)?;
    context["language"] = config.report.language.clone().into();
    context["component_keys"] = serde_json::json!(COMPONENTS);
    context["attach_csv"] = config.report.attach_overdue_csv.into();
    for (name, source) in sources {
        context[format!("{name}_src")] = source.clone().into();
    }
    templates.integrity_advice(&mut context)?;
    if let Some(focus) = context.get("focus").filter(|f| !f.is_null()).cloned() {
        context["focus"]["advice"] = templates.render_label("advice_focus", &focus)?.into();
    }
    let mut industry_advice = Vec::new();
    for (industry, facts) in &report.industries {
        if let Some(text) = config.report.industry_advice.get(industry) {
            let origin = format!("{}: report.industry_advice.{industry}", config.source);
            // People read the stage's name, not its code.
            let mut facts = facts.clone();
            if let Some(stage) = facts["stage"].as_str() {
                facts["stage"] = templates.codes().label(stage).into();
            }
            industry_advice.push(templates.render_text(&origin, text, &facts)?);
        }
    }
    context["industry_advice"] = industry_advice.into();
    let mut subject = templates.render_label("weekly_subject", &context)?;
    if let Some(team) = &report.team {
        let prefix = templates.render_label("team_prefix", &serde_json::json!({ "team": team }))?;
        subject = format!("[{prefix}] {subject}");
    }
    context["subject"] = subject_line(&subject).into();
    let html = templates.render("weekly.html", &context)?;
    Ok((context, html))
}

fn weekly_message(
    config: &Config,
    templates: &Templates,
    report: &Weekly,
    images: Vec<(&'static str, Vec<u8>)>,
    key: String,
    to: Vec<String>,
) -> Result<Rendered> {
    let sources: Vec<(&str, String)> = images
        .iter()
        .map(|(cid, _)| (*cid, format!("cid:{cid}")))
        .collect();
    let (context, html) = render_weekly(config, templates, report, &sources)?;
    let text = templates.render("weekly.txt", &context)?;
    let csv = (config.report.attach_overdue_csv && !report.overdue_all.is_empty())
        .then(|| report.overdue_csv(config.timezone))
        .transpose()?
        .map(|csv| (format!("overdue-{}.csv", report.period.id), csv));
    Ok(Rendered {
        key,
        team: report.team.clone(),
        subject: context["subject"].as_str().unwrap_or_default().to_string(),
        to,
        text,
        html,
        images,
        csv,
    })
}

/// The message: text and HTML alternatives, the pictures inline (by Content-ID) beside the HTML,
/// and the CSV attached.
fn build(config: &Config, message: &Rendered) -> Result<Message> {
    let mailbox = |address: &str| {
        address
            .parse::<Mailbox>()
            .map_err(|e| Error::Config(vec![format!("{}: email: `{address}`: {e}", config.source)]))
    };
    let html = SinglePart::html(message.html.clone());
    let mut html_part = MultiPart::related().singlepart(html);
    for (cid, png) in &message.images {
        html_part = html_part.singlepart(
            Attachment::new_inline(cid.to_string()).body(png.clone(), content_type("image/png")),
        );
    }
    let alternative = MultiPart::alternative()
        .singlepart(SinglePart::plain(message.text.clone()))
        .multipart(html_part);
    let body = match &message.csv {
        Some((name, csv)) => MultiPart::mixed().multipart(alternative).singlepart(
            Attachment::new(name.clone())
                .body(csv.clone(), content_type("text/csv; charset=utf-8")),
        ),
        None => alternative,
    };
    let mut builder = Message::builder()
        .from(mailbox(&config.email.from)?)
        .subject(message.subject.clone())
        .message_id(Some(message_id(&message.key)));
    for address in &message.to {
        builder = builder.to(mailbox(address)?);
    }
    builder.multipart(body).map_err(|e| {
        Error::Internal(format!(
            "report {}: cannot build the message: {e}",
            message.key
        ))
    })
}

fn content_type(text: &str) -> ContentType {
    ContentType::parse(text).expect("a valid literal content type")
}

/// A subject is one line whatever the data says: control characters (a team name with a newline)
/// become spaces, so nothing from the lake can add a header.
fn subject_line(text: &str) -> String {
    let line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    line.trim().to_string()
}

/// The Message-ID of the message with `key`: the same for every attempt at one message (so a
/// mail client sees a re-delivery as the same message), and ASCII as RFC 5322 requires. A key
/// with other characters (a team copy of `华东`) keeps its ASCII part and gets a hash of the
/// whole key, so that two teams never share an id.
fn message_id(key: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    if key.chars().all(plain) {
        return format!("<{key}@flowhealth>");
    }
    let ascii: String = key.chars().filter(|c| plain(*c)).collect();
    let hash = sha2::Sha256::digest(key.as_bytes());
    let hex: String = hash[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "<{}.{hex}@flowhealth>",
        ascii.trim_end_matches(['-', '.', '_'])
    )
}

/// A team name as part of a file name.
fn slug(team: &str) -> String {
    team.chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_is_one_line() {
        assert_eq!(
            subject_line("[Team north\r\nBcc: x@evil.example] index 80%"),
            "[Team north  Bcc: x@evil.example] index 80%"
        );
    }

    #[test]
    fn message_ids_are_ascii_and_one_per_message() {
        assert_eq!(
            message_id("weekly-2026-W13"),
            "<weekly-2026-W13@flowhealth>"
        );
        let east = message_id("weekly-2026-W13.team-华东");
        let south = message_id("weekly-2026-W13.team-华南");
        assert!(east.is_ascii() && south.is_ascii(), "{east} {south}");
        assert!(east.starts_with("<weekly-2026-W13.team."), "{east}");
        assert_ne!(east, south);
        assert_eq!(east, message_id("weekly-2026-W13.team-华东"));
    }

    #[test]
    fn slug_keeps_letters() {
        assert_eq!(slug("华东 team/1"), "华东_team_1");
    }
}
