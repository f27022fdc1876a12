//! Semantic checks of a parsed [`Config`]: everything serde cannot see. Returns every problem,
//! each starting with the key path it is about.

use std::collections::HashSet;

use super::{Config, EngineKind, RetryConfig, StoreConfig};
use crate::time::parse::parse_hours;

/// Every problem of `config` that serde cannot see, each `key.path: message`, section by section
/// in the order of the file (after vector's `src/config/validation.rs`: one check per section,
/// each adding to the same list, so every problem is reported at once). The sections in
/// `unread` could not be read (their problems are reported already) and are not checked.
pub fn check(config: &Config, unread: &[&str]) -> Vec<String> {
    let mut problems = Problems::default();
    let found = &mut problems;
    type Check = fn(&Config, &mut Problems);
    let checks: [(&str, Check); 12] = [
        ("lake", lake),
        ("inbox", inbox),
        ("datasets", datasets),
        ("stages", stages),
        ("rules", rules),
        ("thresholds", thresholds),
        ("index_weights", index_weights),
        ("calendar", calendar),
        ("engine", engine),
        ("report", report),
        ("email", email),
        ("alerts", alerts),
    ];
    for (section, check) in checks {
        if !unread.contains(&section) {
            check(config, found);
        }
    }
    problems.0
}

/// The problems found so far, each `key: message`.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, key: &str, message: String) {
        self.0.push(format!("{key}: {message}"));
    }
}

/// `lake`: a local path, `file:///...` or `s3://bucket/prefix`; S3 timeouts; no `settle_s`
/// (only the inbox waits for files to settle).
fn lake(config: &Config, problems: &mut Problems) {
    store("lake", &config.lake, problems);
    if config.lake.settle_s.is_some() {
        problems.add(
            "lake.settle_s",
            "only the inbox waits for files to settle: move it to inbox.settle_s".into(),
        );
    }
}

/// `inbox`: as the lake, and `settle_s` from 0 to a day.
fn inbox(config: &Config, problems: &mut Problems) {
    store("inbox", &config.inbox, problems);
    if let Some(settle) = config.inbox.settle_s {
        check_range(problems, "inbox.settle_s", settle, 0.0, DAY_S, "seconds");
    }
}

fn store(key: &str, store: &StoreConfig, problems: &mut Problems) {
    if let Err(message) = check_store(store) {
        problems.add(&format!("{key}.url"), message);
    }
    if let Some(s3) = &store.s3 {
        check_positive(
            problems,
            &format!("{key}.s3.timeout_s"),
            s3.timeout_s,
            HOUR_S,
        );
    }
}

/// A day and an hour in seconds: the longest wait any setting may ask for.
const DAY_S: f64 = 86_400.0;
const HOUR_S: f64 = 3_600.0;

/// `value` must be a number from `min` to `max`.
fn check_range(problems: &mut Problems, key: &str, value: f64, min: f64, max: f64, unit: &str) {
    if !(value.is_finite() && (min..=max).contains(&value)) {
        problems.add(key, format!("must be from {min} to {max} {unit}"));
    }
}

/// `value` must be a number of seconds above 0 and at most `max`.
fn check_positive(problems: &mut Problems, key: &str, value: f64, max: f64) {
    if !(value.is_finite() && value > 0.0 && value <= max) {
        problems.add(
            key,
            format!("must be more than 0 and at most {max} seconds"),
        );
    }
}

/// `datasets.<dataset>` and its sources: columns, values and constants of columns that exist,
/// strftime patterns that parse, usable delimiters and decimal marks, globs that can match, a
/// stage history that maps onto stages (`super::datasets::check`).
fn datasets(config: &Config, problems: &mut Problems) {
    for (key, message) in super::datasets::check(&config.datasets, &config.stages) {
        problems.add(&key, message);
    }
}

/// `stages`: at least one, named once each, positive timeouts, not all terminal.
fn stages(config: &Config, problems: &mut Problems) {
    let mut problem = |key: &str, message: String| problems.add(key, message);
    if config.stages.is_empty() {
        problem("stages", "at least one stage is needed".into());
    }
    let mut seen = HashSet::new();
    for (i, stage) in config.stages.iter().enumerate() {
        let key = format!("stages[{i}]");
        if stage.name.trim().is_empty() || stage.name.trim() != stage.name {
            problem(
                &format!("{key}.name"),
                format!("`{}` is not a usable stage name", stage.name),
            );
        }
        if !seen.insert(stage.name.as_str()) {
            problem(
                &format!("{key}.name"),
                format!("stage `{}` is listed twice", stage.name),
            );
        }
        if !(stage.silent_timeout_h.is_finite() && stage.silent_timeout_h > 0.0) {
            problem(
                &format!("{key}.silent_timeout_h"),
                "must be a positive number of hours".into(),
            );
        }
    }
    if !config.stages.is_empty() && config.stages.iter().all(|s| s.terminal) {
        problem(
            "stages",
            "every stage is terminal: at least one open stage is needed".into(),
        );
    }
}

/// `rules`: daily minimums of at least 1, named action types, non-negative hours and minutes, and
/// templated-note settings in range.
fn rules(config: &Config, problems: &mut Problems) {
    let mut problem = |key: &str, message: String| problems.add(key, message);
    for (action, minimum) in &config.rules.store_actions {
        if *minimum == 0 {
            problem(
                &format!("rules.store_actions.{action}"),
                "the daily minimum must be at least 1".into(),
            );
        }
    }
    if config
        .rules
        .evidence_required
        .iter()
        .any(|a| a.trim().is_empty())
    {
        problem(
            "rules.evidence_required",
            "action types cannot be empty".into(),
        );
    }
    for (key, value) in [
        ("rules.due_soon_h", config.rules.due_soon_h),
        ("rules.signup_gap_minutes", config.rules.signup_gap_minutes),
    ] {
        if !(value.is_finite() && value >= 0.0) {
            problem(key, "must be zero or more".into());
        }
    }
    if config.rules.chronic_report_max_days == 0 {
        problem(
            "rules.chronic_report_max_days",
            "must be at least 1 (no follow-up could be valid)".into(),
        );
    }
    let templated = config.rules.templated_notes;
    if !(templated.similarity > 0.0 && templated.similarity <= 1.0) {
        problem(
            "rules.templated_notes.similarity",
            "must be above 0 and at most 1 (a note_similarity)".into(),
        );
    }
    if !(0.0..=1.0).contains(&templated.min_share) {
        problem(
            "rules.templated_notes.min_share",
            "must be a share from 0 to 1".into(),
        );
    }
    if templated.min_notes < 2 {
        problem(
            "rules.templated_notes.min_notes",
            "must be at least 2 (a note needs another to be a copy of)".into(),
        );
    }
}

/// `thresholds.<metric>`: `min`, `max` or both, in order.
fn thresholds(config: &Config, problems: &mut Problems) {
    let mut problem = |key: &str, message: String| problems.add(key, message);
    for (metric, threshold) in &config.thresholds {
        let key = format!("thresholds.{metric}");
        for (bound, value) in [("min", threshold.min), ("max", threshold.max)] {
            if value.is_some_and(|v| !v.is_finite()) {
                problem(&format!("{key}.{bound}"), "must be a finite number".into());
            }
        }
        match (threshold.min, threshold.max) {
            (None, None) => problem(&key, "give `min`, `max` or both".into()),
            (Some(min), Some(max)) if min > max => {
                problem(&key, format!("min {min} is above max {max}"))
            }
            _ => {}
        }
    }
}

/// `index_weights`: zero or more, not all zero.
fn index_weights(config: &Config, problems: &mut Problems) {
    let mut problem = |key: &str, message: String| problems.add(key, message);
    let w = config.index_weights;
    let weights = [w.stage_compliance, w.evidence, w.silent];
    if weights.iter().any(|w| !(w.is_finite() && *w >= 0.0)) || weights.iter().sum::<f64>() <= 0.0 {
        problem(
            "index_weights",
            "weights must be zero or more, and not all zero".into(),
        );
    }
}

/// `calendar`: weekday names, `HH:MM-HH:MM` hours, `YYYY-MM-DD` holidays.
fn calendar(config: &Config, problems: &mut Problems) {
    let mut problem = |key: &str, message: String| problems.add(key, message);
    if let Some(calendar) = &config.calendar {
        const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
        for (i, day) in calendar.workdays.iter().enumerate() {
            if !DAYS.contains(&day.as_str()) {
                problem(
                    &format!("calendar.workdays[{i}]"),
                    format!("`{day}` is not one of {}", DAYS.join(", ")),
                );
            }
        }
        if parse_hours(&calendar.hours).is_none() {
            problem(
                "calendar.hours",
                format!(
                    "`{}` is not `HH:MM-HH:MM` with the start before the end",
                    calendar.hours
                ),
            );
        }
        for (i, day) in calendar.holidays.iter().enumerate() {
            if chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d").is_err() {
                problem(
                    &format!("calendar.holidays[{i}]"),
                    format!("`{day}` is not a YYYY-MM-DD date"),
                );
            }
        }
    }
}

/// `report`: a language with labels, at least one trend week, advice templates that parse, cards
/// for reports that exist.
fn report(config: &Config, problems: &mut Problems) {
    let mut problem = |key: &str, message: String| problems.add(key, message);
    let report = &config.report;
    if !["en", "zh"].contains(&report.language.as_str()) {
        problem(
            "report.language",
            format!("`{}` is not one of en, zh", report.language),
        );
    }
    if !(1..=520).contains(&report.trend_weeks) {
        problem("report.trend_weeks", "must be from 1 to 520 weeks".into());
    }
    for (industry, advice) in &report.industry_advice {
        if let Err(e) = minijinja::Environment::new().template_from_str(advice) {
            problem(
                &format!("report.industry_advice.{industry}"),
                format!("not a valid template: {e}"),
            );
        }
    }
    for name in report.channels.keys() {
        if !["weekly", "monthly"].contains(&name.as_str()) {
            problem(
                &format!("report.channels.{name}"),
                "is not a report: expected weekly or monthly".into(),
            );
        }
    }
}

/// `email`: a transport with what it needs, addresses that parse, reports that exist, retries.
fn email(config: &Config, problems: &mut Problems) {
    let mut problem = |key: &str, message: String| problems.add(key, message);
    let email = &config.email;
    match email.transport.as_str() {
        "file" => {}
        "smtp" => match &email.smtp {
            None => problem(
                "email.smtp",
                "`transport: smtp` needs an `smtp:` section with at least `host`".into(),
            ),
            Some(smtp) => {
                if !["starttls", "implicit", "none"].contains(&smtp.tls.as_str()) {
                    problem(
                        "email.smtp.tls",
                        format!("`{}` is not one of starttls, implicit, none", smtp.tls),
                    );
                }
                if !(smtp.timeout_s.is_finite() && smtp.timeout_s > 0.0 && smtp.timeout_s <= HOUR_S)
                {
                    problem(
                        "email.smtp.timeout_s",
                        format!("must be more than 0 and at most {HOUR_S} seconds"),
                    );
                }
                if smtp.port == 0 {
                    problem("email.smtp.port", "must be from 1 to 65535".into());
                }
                if smtp.password.is_some() && smtp.username.is_none() {
                    problem(
                        "email.smtp.username",
                        "a password is set but no username".into(),
                    );
                }
            }
        },
        other => problem(
            "email.transport",
            format!("`{other}` is not one of file, smtp"),
        ),
    }
    let mut check_addresses = |key: &str, addresses: &[String]| {
        for (i, address) in addresses.iter().enumerate() {
            if let Err(e) = address.parse::<lettre::message::Mailbox>() {
                problem(
                    &format!("{key}[{i}]"),
                    format!("`{address}` is not an email address ({e})"),
                );
            }
        }
    };
    check_addresses("email.to", &email.to);
    for (report, addresses) in &email.recipients {
        check_addresses(&format!("email.recipients.{report}"), addresses);
    }
    for (team, addresses) in &email.teams {
        check_addresses(&format!("email.teams.{team}"), addresses);
    }
    if let Err(e) = email.from.parse::<lettre::message::Mailbox>() {
        problem(
            "email.from",
            format!("`{}` is not an email address ({e})", email.from),
        );
    }
    for report in email.recipients.keys() {
        if !["weekly", "monthly"].contains(&report.as_str()) {
            problem(
                &format!("email.recipients.{report}"),
                "is not a report: expected weekly or monthly".into(),
            );
        }
    }
    check_retry(&mut problem, "email.retry", &email.retry);
}

/// `alerts`: webhook URLs and each kind's own fields, names used once and referred to correctly
/// (by `notify`, `escalate`, `routes` and `report.channels`), deadlines, retries (the kinds are
/// checked when parsing).
fn alerts(config: &Config, problems: &mut Problems) {
    let mut problem = |key: &str, message: String| problems.add(key, message);
    let alerts = &config.alerts;
    let mut names = Vec::new();
    for (i, hook) in alerts.webhooks.iter().enumerate() {
        let key = format!("alerts.webhooks[{i}]");
        // Each kind's own fields: a secret signs DingTalk and Feishu requests only, a format is
        // WeCom's choice of message type.
        if hook.secret.is_some() && !hook.kind.signs() {
            problem(
                &format!("{key}.secret"),
                format!(
                    "a {} webhook is not signed: only dingtalk and feishu take a secret",
                    hook.kind
                ),
            );
        }
        if hook.format.is_some() && hook.kind != crate::config::WebhookKind::Wecom {
            problem(
                &format!("{key}.format"),
                format!("only a wecom webhook has a format, not a {} one", hook.kind),
            );
        }
        let url = hook.url.expose();
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            problem(&format!("{key}.url"), "must be an http(s) URL".into());
        }
        if names.contains(&hook.name.as_str()) {
            problem(
                &format!("{key}.name"),
                format!("`{}` names two webhooks", hook.name),
            );
        }
        names.push(hook.name.as_str());
    }
    let escalation = alerts.escalate.iter().flat_map(|e| &e.webhooks);
    let routes = alerts.routes.iter().flat_map(|(team, hooks)| {
        hooks
            .iter()
            .map(move |n| (format!("alerts.routes.{team}"), n))
    });
    let reports = config.report.channels.iter().flat_map(|(report, hooks)| {
        hooks
            .iter()
            .map(move |n| (format!("report.channels.{report}"), n))
    });
    for (key, name) in alerts
        .notify
        .iter()
        .map(|n| ("alerts.notify".to_string(), n))
        .chain(escalation.map(|n| ("alerts.escalate.webhooks".to_string(), n)))
        .chain(routes)
        .chain(reports)
    {
        let key = key.as_str();
        if !names.contains(&name.as_str()) {
            problem(
                key,
                format!(
                    "`{name}` is not a webhook in alerts.webhooks (names: {})",
                    names.join(", ")
                ),
            );
        }
    }
    if let Some(escalate) = &alerts.escalate
        && !(escalate.after_h.is_finite() && escalate.after_h >= 0.0)
    {
        problem("alerts.escalate.after_h", "must be 0 or more".into());
    }
    if !(alerts.timeout_s.is_finite() && alerts.timeout_s > 0.0 && alerts.timeout_s <= HOUR_S) {
        problem(
            "alerts.timeout_s",
            format!("must be more than 0 and at most {HOUR_S} seconds"),
        );
    }
    for (i, deadline) in alerts.deadlines.iter().enumerate() {
        if !(deadline.within_h.is_finite() && deadline.within_h > 0.0) {
            problem(
                &format!("alerts.deadlines[{i}].within_h"),
                "must be more than 0".into(),
            );
        }
        if alerts.deadlines[..i]
            .iter()
            .any(|d| d.name == deadline.name)
        {
            problem(
                &format!("alerts.deadlines[{i}].name"),
                format!("`{}` names two deadlines", deadline.name),
            );
        }
    }
    check_retry(&mut problem, "alerts.retry", &alerts.retry);
    if alerts.max_items == 0 {
        problem("alerts.max_items", "must be at least 1".into());
    }
}

/// `engine`: a scheduler address that parses (when the SQL runs on a cluster), a partition count.
fn engine(config: &Config, problems: &mut Problems) {
    let engine = &config.engine;
    if engine.kind == EngineKind::Ballista
        && let Err(message) = engine.scheduler_address()
    {
        problems.add("engine.scheduler", message);
    }
    if engine.target_partitions == Some(0) {
        problems.add("engine.target_partitions", "must be at least 1".into());
    }
    check_positive(problems, "engine.timeout_s", engine.timeout_s, HOUR_S);
    check_positive(
        problems,
        "engine.job_timeout_s",
        engine.job_timeout_s,
        DAY_S,
    );
}

/// `attempts` from 1 to 100, `backoff_s` from 0 to an hour (it doubles after each attempt).
/// Also used for a pipeline's `retries`.
pub(crate) fn check_retry(problem: &mut impl FnMut(&str, String), key: &str, retry: &RetryConfig) {
    if !(1..=100).contains(&retry.attempts) {
        problem(&format!("{key}.attempts"), "must be from 1 to 100".into());
    }
    if !(retry.backoff_s.is_finite() && (0.0..=HOUR_S).contains(&retry.backoff_s)) {
        problem(
            &format!("{key}.backoff_s"),
            format!("must be from 0 to {HOUR_S} seconds"),
        );
    }
}

pub(crate) fn check_store(store: &StoreConfig) -> Result<(), String> {
    let url = store.url.trim();
    if url.is_empty() {
        return Err("must not be empty".into());
    }
    match url.split_once("://") {
        None => Ok(()),
        Some(("file", rest)) if rest.starts_with('/') => Ok(()),
        Some(("s3", rest)) if !rest.is_empty() && !rest.starts_with('/') => Ok(()),
        Some(_) => Err(format!(
            "`{url}` is not a local path, file:///absolute/path or s3://bucket/prefix"
        )),
    }
}
