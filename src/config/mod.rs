//! `config.yaml` -> typed [`Config`].
//!
//! Loading is: read the file, parse it as YAML with `${VAR}` references interpolated inside its
//! scalars ([`vars`]: a value from the environment arrives byte for byte and is never shown),
//! deserialize each top-level section on its own, collecting every problem of the section
//! ([`load`]: a mistyped key does not hide the next), then run the semantic checks of
//! [`validation`] on every section that could be read. Every problem is collected and reported
//! together, each naming the file and the key path.

pub mod datasets;
pub(crate) mod load;
pub mod secret;
pub(crate) mod validation;
pub(crate) mod vars;

pub use datasets::{
    ColumnRule, DatasetConfig, DatasetsConfig, EncodingSetting, SourceConfig, StageHistoryConfig,
};

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono_tz::Tz;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};

/// The configuration shipped in the repository, embedded so `demo` runs without any file.
pub const EMBEDDED: &str = include_str!("../../config.yaml");

/// `Config::source` of the embedded configuration.
pub const EMBEDDED_SOURCE: &str = "<embedded config.yaml>";

/// The whole configuration. See `config.yaml` for a commented example of every field.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration came from, for messages (`config.yaml` or `<embedded>`).
    pub source: String,
    /// Folder that relative paths in the file are resolved against.
    pub base_dir: PathBuf,
    /// IANA timezone in which periods, local dates (`dt=` partitions) and naive timestamps are read.
    pub timezone: Tz,
    pub lake: StoreConfig,
    pub inbox: StoreConfig,
    /// The metric catalog folder (`queries/<metric>/v<N>.sql`), relative to this file.
    pub queries: String,
    /// The pipeline folder (`pipelines/<name>.yaml`), relative to this file.
    pub pipelines: String,
    pub datasets: DatasetsConfig,
    pub stages: Vec<StageConfig>,
    pub rules: RulesConfig,
    pub thresholds: BTreeMap<String, Threshold>,
    pub index_weights: IndexWeights,
    pub calendar: Option<CalendarConfig>,
    pub engine: EngineConfig,
    pub report: ReportConfig,
    pub email: EmailConfig,
    pub alerts: AlertsConfig,
}

/// A place holding files: a local folder or an object-store prefix.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// A local path (relative to the config file), `file:///abs/path` or `s3://bucket/prefix`.
    pub url: String,
    /// S3 settings; anything left out is read from the usual `AWS_*` environment variables.
    #[serde(default)]
    pub s3: Option<S3Config>,
    /// Inbox only: seconds a file must have been left unchanged before it lands (a file
    /// modified more recently is still being written and waits for the next run). 0 when absent.
    #[serde(default)]
    pub settle_s: Option<f64>,
}

impl StoreConfig {
    /// A local folder or URL, with nothing else set.
    pub fn at(url: impl Into<String>) -> StoreConfig {
        StoreConfig {
            url: url.into(),
            s3: None,
            settle_s: None,
        }
    }
}

/// Connection settings for an S3-compatible store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// Endpoint URL for S3-compatible servers (MinIO, moto, ...); AWS when absent.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region; `AWS_REGION` or `us-east-1` when absent.
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    /// Allow plain `http://` endpoints (test servers on loopback).
    #[serde(default)]
    pub allow_http: bool,
    /// Seconds one request may take, from connecting to the last byte of the answer; a request
    /// that fails for a reason a retry can help is tried twice more, so a store that accepts and
    /// then stalls fails the command after about three times this.
    #[serde(default = "default_s3_timeout_s")]
    pub timeout_s: f64,
}

const fn default_s3_timeout_s() -> f64 {
    30.0
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            allow_http: false,
            timeout_s: default_s3_timeout_s(),
        }
    }
}

/// One stage of the opportunity pipeline, in order (`docs/contract.md` section 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    pub name: String,
    /// Hours an opportunity may sit in this stage without activity before it is overdue.
    #[serde(default = "default_silent_timeout_h")]
    pub silent_timeout_h: f64,
    /// A closing stage (won, lost): opportunities in it are no longer open.
    #[serde(default)]
    pub terminal: bool,
    /// Any stage may move here without it counting as a skip (lost).
    #[serde(default)]
    pub from_any: bool,
    /// Opportunities may be created in this stage without it counting as a skip.
    #[serde(default)]
    pub entry: bool,
}

const fn default_silent_timeout_h() -> f64 {
    48.0
}

/// Domain rules used by metrics and alerts.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// Action types that must carry evidence (attachment, recording, signature).
    #[serde(default = "default_evidence_required")]
    pub evidence_required: Vec<String>,
    /// Store action types and the daily minimum count of each.
    #[serde(default = "default_store_actions")]
    pub store_actions: BTreeMap<String, u32>,
    /// A silent opportunity with fewer hours remaining than this is `due_soon`.
    #[serde(default = "default_due_soon_h")]
    pub due_soon_h: f64,
    /// Member sign-ups further than this from the WeChat follow time are flagged.
    #[serde(default = "default_signup_gap_minutes")]
    pub signup_gap_minutes: f64,
    /// A chronic follow-up is valid only within this many days of the last test report.
    #[serde(default = "default_chronic_report_max_days")]
    pub chronic_report_max_days: u32,
    /// When a store's or owner's notes count as copies of a template (metric `templated_notes`).
    #[serde(default)]
    pub templated_notes: TemplatedNotesRules,
}

/// Templated notes: the article's stores that filled their follow-up log in bulk from one
/// template. Two notes are near-duplicates when `note_similarity` is at least `similarity`; a
/// store (or owner) is flagged when at least `min_share` of its `min_notes` or more notes of the
/// period have a near-duplicate among its other notes.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemplatedNotesRules {
    /// The note_similarity (0..1, Jaccard of character bigrams) from which two notes are copies.
    #[serde(default = "default_template_similarity")]
    pub similarity: f64,
    /// The share of notes with a copy (0..1) from which a store or owner is flagged.
    #[serde(default = "default_template_min_share")]
    pub min_share: f64,
    /// Fewer notes than this in the period are never flagged (three notes prove nothing).
    #[serde(default = "default_template_min_notes")]
    pub min_notes: u32,
    /// Compare notes within each action type (true), or all of a store's notes together.
    #[serde(default = "default_true")]
    pub per_action_type: bool,
}

impl Default for TemplatedNotesRules {
    fn default() -> Self {
        TemplatedNotesRules {
            similarity: default_template_similarity(),
            min_share: default_template_min_share(),
            min_notes: default_template_min_notes(),
            per_action_type: default_true(),
        }
    }
}

const fn default_template_similarity() -> f64 {
    0.8
}
const fn default_template_min_share() -> f64 {
    0.6
}
const fn default_template_min_notes() -> u32 {
    5
}

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            evidence_required: default_evidence_required(),
            store_actions: default_store_actions(),
            due_soon_h: default_due_soon_h(),
            signup_gap_minutes: default_signup_gap_minutes(),
            chronic_report_max_days: default_chronic_report_max_days(),
            templated_notes: TemplatedNotesRules::default(),
        }
    }
}

fn default_evidence_required() -> Vec<String> {
    [
        "demo",
        "proposal_sent",
        "contract_submitted",
        "member_signup",
        "chronic_followup",
        "high_margin_recommendation",
    ]
    .map(String::from)
    .to_vec()
}

fn default_store_actions() -> BTreeMap<String, u32> {
    [
        "member_signup",
        "chronic_followup",
        "high_margin_recommendation",
    ]
    .map(|a| (a.to_string(), 1))
    .into()
}

const fn default_due_soon_h() -> f64 {
    12.0
}

const fn default_signup_gap_minutes() -> f64 {
    15.0
}

const fn default_chronic_report_max_days() -> u32 {
    30
}

/// A metric's healthy range: `min` for rates that should be high, `max` for those that should be low.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    #[serde(default)]
    pub min: Option<f64>,
    #[serde(default)]
    pub max: Option<f64>,
}

/// Weights of the process health index components (6:3:1 by default); normalised when used.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexWeights {
    #[serde(default = "default_weight_stage_compliance")]
    pub stage_compliance: f64,
    #[serde(default = "default_weight_evidence")]
    pub evidence: f64,
    #[serde(default = "default_weight_silent")]
    pub silent: f64,
}

impl Default for IndexWeights {
    fn default() -> Self {
        IndexWeights {
            stage_compliance: default_weight_stage_compliance(),
            evidence: default_weight_evidence(),
            silent: default_weight_silent(),
        }
    }
}

const fn default_weight_stage_compliance() -> f64 {
    6.0
}
const fn default_weight_evidence() -> f64 {
    3.0
}
const fn default_weight_silent() -> f64 {
    1.0
}

/// The optional business calendar for `business_hours`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarConfig {
    /// Working weekdays, as `mon` .. `sun`.
    #[serde(default = "default_workdays")]
    pub workdays: Vec<String>,
    /// Working hours as `HH:MM-HH:MM`, local time.
    #[serde(default = "default_hours")]
    pub hours: String,
    /// Dates (`YYYY-MM-DD`) that are not working days.
    #[serde(default)]
    pub holidays: Vec<String>,
}

/// Without a `calendar:` section, business hours are Monday to Friday, 09:00-18:00.
impl Default for CalendarConfig {
    fn default() -> Self {
        CalendarConfig {
            workdays: default_workdays(),
            hours: default_hours(),
            holidays: Vec::new(),
        }
    }
}

fn default_workdays() -> Vec<String> {
    ["mon", "tue", "wed", "thu", "fri"]
        .map(String::from)
        .to_vec()
}

fn default_hours() -> String {
    "09:00-18:00".into()
}

/// Where the SQL runs: in this process, or on an Apache Ballista cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// `local` (the default): in this process. `ballista`: on a cluster of `flowhealth scheduler`
    /// and `flowhealth executor` processes that see the same lake.
    #[serde(default)]
    pub kind: EngineKind,
    /// The Ballista scheduler, `df://host:port` (port 50050 when left out); used by `ballista`.
    #[serde(default = "default_scheduler")]
    pub scheduler: String,
    /// Partitions each query stage is split into; DataFusion's default (this machine's cores)
    /// when left out. On a cluster, about the task slots of all executors together.
    #[serde(default)]
    pub target_partitions: Option<usize>,
    /// Seconds the client waits for the scheduler: to connect, and for the answer to each call
    /// (Ballista's gRPC client deadlines, whole seconds; its own default is 20).
    #[serde(default = "default_engine_timeout_s")]
    pub timeout_s: f64,
    /// Seconds one query may run on the cluster, from being sent to its last row; past it the job
    /// is cancelled on the scheduler and the query fails as a cluster fault (a pipeline step runs
    /// again). Ballista 55 can wait for ever on a job whose stage it rolled back after losing an
    /// executor.
    #[serde(default = "default_engine_job_timeout_s")]
    pub job_timeout_s: f64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            kind: EngineKind::default(),
            scheduler: default_scheduler(),
            target_partitions: None,
            timeout_s: default_engine_timeout_s(),
            job_timeout_s: default_engine_job_timeout_s(),
        }
    }
}

const fn default_engine_timeout_s() -> f64 {
    20.0
}

const fn default_engine_job_timeout_s() -> f64 {
    1800.0
}

fn default_scheduler() -> String {
    "df://localhost:50050".into()
}

impl EngineConfig {
    /// The scheduler's host and port from `scheduler` (`df://host[:port]`, port 50050 by default);
    /// the problem otherwise.
    pub fn scheduler_address(&self) -> std::result::Result<(String, u16), String> {
        let url = self.scheduler.trim();
        let wrong = || format!("`{url}` is not a scheduler address like df://host:50050");
        let rest = url.strip_prefix("df://").ok_or_else(wrong)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = match rest.rsplit_once(':') {
            Some((host, port)) => (host, port.parse::<u16>().map_err(|_| wrong())?),
            None => (rest, 50050),
        };
        if host.is_empty() || host.contains(['/', '@', '?', '#']) || port == 0 {
            return Err(wrong());
        }
        Ok((host.to_string(), port))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    #[default]
    Local,
    Ballista,
}

/// What the weekly and monthly reports show and in which language. Used by `report`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    /// Labels of the templates: `en` or `zh`.
    #[serde(default = "default_language")]
    pub language: String,
    /// Folder of template overrides (weekly.html, weekly.txt, monthly.html, monthly.txt,
    /// labels.yaml), relative to this file; a file not there is the built-in one.
    #[serde(default = "default_templates")]
    pub templates: String,
    /// Weeks in the index trend chart.
    #[serde(default = "default_trend_weeks")]
    pub trend_weeks: u32,
    /// Overdue silent opportunities listed in the report (all of them go in the CSV attachment).
    #[serde(default = "default_top_overdue")]
    pub top_overdue: usize,
    /// Stores in the heat map, the worst first.
    #[serde(default = "default_heatmap_stores")]
    pub heatmap_stores: usize,
    /// Attach the overdue opportunities as CSV to the weekly report.
    #[serde(default = "default_true")]
    pub attach_overdue_csv: bool,
    /// Display names of stage and action-type codes in the reports (`contract_approval:
    /// Contract approval`), over the built-in ones of `language` (labels.yaml `codes`); the CSV
    /// attachment and the lake keep the codes.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Report (`weekly`, `monthly`) -> webhooks (names in `alerts.webhooks`) that get a short
    /// card of it (index, change, top breaches, the link) when it is sent, once each.
    #[serde(default)]
    pub channels: BTreeMap<String, Vec<String>>,
    /// Where a card's reader finds the whole report: a URL in which `{report}` and `{period}` are
    /// replaced (`https://bi.example.com/flowhealth/{report}/{period}.html`); the page's path in
    /// the lake when absent.
    #[serde(default)]
    pub link: Option<String>,
    /// Industry (as in `opportunities.industry`) -> advice for its overdue opportunities, a
    /// minijinja template with `count`, `industry`, `stage` and `opportunities` (ids): the
    /// article's "8 hospital customers are waiting for a proposal confirmation: have you sent a
    /// tertiary-hospital case study?".
    #[serde(default)]
    pub industry_advice: BTreeMap<String, String>,
}

impl Default for ReportConfig {
    fn default() -> Self {
        ReportConfig {
            language: default_language(),
            templates: default_templates(),
            trend_weeks: default_trend_weeks(),
            top_overdue: default_top_overdue(),
            heatmap_stores: default_heatmap_stores(),
            attach_overdue_csv: default_true(),
            labels: BTreeMap::new(),
            channels: BTreeMap::new(),
            link: None,
            industry_advice: BTreeMap::new(),
        }
    }
}

fn default_language() -> String {
    "en".into()
}
fn default_templates() -> String {
    "./templates".into()
}
const fn default_trend_weeks() -> u32 {
    12
}
const fn default_top_overdue() -> usize {
    10
}
const fn default_heatmap_stores() -> usize {
    10
}
const fn default_true() -> bool {
    true
}

/// Report delivery. `transport: file` puts messages in `outbox/sent/` (no server needed);
/// `smtp` sends them. Either way a message waits in `outbox/pending/` until delivered.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// `file` or `smtp`.
    #[serde(default = "default_transport")]
    pub transport: String,
    /// The durable outbox folder (relative to this file): `pending/` and `sent/` messages.
    #[serde(default = "default_outbox")]
    pub outbox: String,
    #[serde(default = "default_from")]
    pub from: String,
    /// Recipients of every report unless `recipients` names the report.
    #[serde(default)]
    pub to: Vec<String>,
    /// Recipients per report (`weekly`, `monthly`), replacing `to` for that report.
    #[serde(default)]
    pub recipients: BTreeMap<String, Vec<String>>,
    /// Team -> recipients who get a copy with only that team's section.
    #[serde(default)]
    pub teams: BTreeMap<String, Vec<String>>,
    /// Attempts per delivery and the backoff between them.
    #[serde(default)]
    pub retry: RetryConfig,
    #[serde(default)]
    pub smtp: Option<SmtpConfig>,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            transport: default_transport(),
            outbox: default_outbox(),
            from: default_from(),
            to: Vec::new(),
            recipients: BTreeMap::new(),
            teams: BTreeMap::new(),
            retry: RetryConfig::default(),
            smtp: None,
        }
    }
}

fn default_transport() -> String {
    "file".into()
}
fn default_outbox() -> String {
    "./outbox".into()
}
fn default_from() -> String {
    "flowhealth <flowhealth@localhost>".into()
}

/// Retries of one delivery: `attempts` in all, waiting `backoff_s`, then twice that, and so on.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    #[serde(default = "default_backoff_s")]
    pub backoff_s: f64,
}

impl RetryConfig {
    /// The wait after failed attempt `attempt` (1-based): `backoff_s`, then twice that, and so on
    /// (at most a day, whatever the numbers: see [`seconds`]).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        seconds(self.backoff_s * f64::from(factor))
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: default_attempts(),
            backoff_s: default_backoff_s(),
        }
    }
}

const fn default_attempts() -> u32 {
    3
}
const fn default_backoff_s() -> f64 {
    2.0
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// `starttls` (upgrade, required), `implicit` (TLS from the start, port 465) or `none`.
    #[serde(default = "default_smtp_tls")]
    pub tls: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<Secret>,
    /// Seconds one delivery attempt may take in all: connecting, TLS, login and sending. A
    /// server that accepts and then stalls fails the attempt after this long.
    #[serde(default = "default_smtp_timeout_s")]
    pub timeout_s: f64,
    /// A PEM file of extra root certificates to trust (a private CA), besides the system's.
    #[serde(default)]
    pub ca_file: Option<String>,
}

const fn default_smtp_port() -> u16 {
    587
}
fn default_smtp_tls() -> String {
    "starttls".into()
}
const fn default_smtp_timeout_s() -> f64 {
    30.0
}

/// Webhook alerts (`flowhealth alerts`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertsConfig {
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
    /// Webhooks (by name) told when an alert fires; every webhook not used for escalation when empty.
    #[serde(default)]
    pub notify: Vec<String>,
    /// Who hears about an alert still unresolved after a while.
    #[serde(default)]
    pub escalate: Option<EscalationConfig>,
    /// Alert on open opportunities past their stage's silent timeout (`docs/contract.md`
    /// section 4.5).
    #[serde(default = "default_true")]
    pub silent_timeouts: bool,
    /// Key-action deadlines: an `expect` action must follow an `after` action within `within_h`.
    #[serde(default)]
    pub deadlines: Vec<DeadlineConfig>,
    /// Only deadlines that passed within this many days alert (a first run does not page for
    /// last year's misses).
    #[serde(default = "default_lookback_days")]
    pub lookback_days: u32,
    /// Attempts per webhook call and the backoff between them.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Seconds one webhook call may take, from connecting to the answer.
    #[serde(default = "default_webhook_timeout_s")]
    pub timeout_s: f64,
    /// Team -> the webhooks (by name) its alerts go to instead of `notify`. Alerts of a team
    /// without a route, and alerts without a team, go to `notify`.
    #[serde(default)]
    pub routes: BTreeMap<String, Vec<String>>,
    /// Owner id -> how each channel @-mentions that owner in the alerts about them.
    #[serde(default)]
    pub owners: BTreeMap<String, Contact>,
    /// At most this many alerts are spelled out in one message; the message says how many more.
    #[serde(default = "default_max_items")]
    pub max_items: usize,
    /// Alert on promises in notes whose deadline passed without an action (the catalog's
    /// `commitments`), like silent timeouts.
    #[serde(default = "default_true")]
    pub broken_commitments: bool,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            webhooks: Vec::new(),
            notify: Vec::new(),
            escalate: None,
            silent_timeouts: default_true(),
            deadlines: Vec::new(),
            lookback_days: default_lookback_days(),
            retry: RetryConfig::default(),
            timeout_s: default_webhook_timeout_s(),
            routes: BTreeMap::new(),
            owners: BTreeMap::new(),
            max_items: default_max_items(),
            broken_commitments: default_true(),
        }
    }
}

const fn default_lookback_days() -> u32 {
    7
}
const fn default_webhook_timeout_s() -> f64 {
    15.0
}

const fn default_max_items() -> usize {
    30
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscalationConfig {
    /// Hours after the first alert.
    pub after_h: f64,
    /// Webhooks (by name) to escalate to.
    pub webhooks: Vec<String>,
}

/// "Customer feedback within 48 h of the demo": `after: demo, expect: demo_feedback, within_h: 48`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeadlineConfig {
    /// Names the rule in alerts and in the ledger.
    pub name: String,
    /// The action type that starts the clock.
    pub after: String,
    /// The action type, on the same opportunity, that must follow.
    pub expect: String,
    pub within_h: f64,
}

/// A chat channel that alerts and report cards go to (see `src/notify/` for each kind's format).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Names the channel in `notify`, `routes`, `escalate`, `report.channels` and the ledgers.
    pub name: String,
    pub kind: WebhookKind,
    /// The webhook URL; it holds the channel's token, so it is shown masked everywhere.
    pub url: secret::SecretUrl,
    /// The signing secret of a `dingtalk` robot ("加签") or a `feishu` bot ("签名校验").
    #[serde(default)]
    pub secret: Option<Secret>,
    /// `wecom` only: `markdown` (the default; mentions as `<@userid>`) or `text` (mentions in
    /// `mentioned_list`, for WeCom clients that do not render markdown).
    #[serde(default)]
    pub format: Option<WebhookFormat>,
}

/// What a webhook receiver expects: the message's shape, its signing, its reply. A new channel is
/// a new kind here and a file in `src/notify/` (the compiler lists the `match`es to extend).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookKind {
    /// A DingTalk group robot: markdown, signed in the query when it has a secret.
    Dingtalk,
    /// A WeCom (企业微信) group robot: markdown or text.
    Wecom,
    /// A Feishu / Lark custom bot: rich text, signed in the body when it has a secret.
    Feishu,
    /// A Slack incoming webhook: text and blocks.
    Slack,
    /// Any HTTP endpoint: `{"title", "text", "alerts" | "report"}`.
    Json,
}

impl WebhookKind {
    pub fn name(self) -> &'static str {
        match self {
            WebhookKind::Dingtalk => "dingtalk",
            WebhookKind::Wecom => "wecom",
            WebhookKind::Feishu => "feishu",
            WebhookKind::Slack => "slack",
            WebhookKind::Json => "json",
        }
    }

    /// Whether the vendor signs requests with a secret of the channel's own.
    pub fn signs(self) -> bool {
        matches!(self, WebhookKind::Dingtalk | WebhookKind::Feishu)
    }
}

impl fmt::Display for WebhookKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// A WeCom robot's message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    Markdown,
    Text,
}

/// How each channel addresses one owner, for @-mentions (`alerts.owners.<owner_id>`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Contact {
    /// DingTalk user id (`at.atUserIds`).
    #[serde(default)]
    pub dingtalk: Option<String>,
    /// Mobile number: DingTalk `at.atMobiles` and WeCom `mentioned_mobile_list` when there is no
    /// user id for that channel.
    #[serde(default)]
    pub mobile: Option<String>,
    /// WeCom user id (`<@userid>`, `mentioned_list`).
    #[serde(default)]
    pub wecom: Option<String>,
    /// Feishu open_id or user_id (`{"tag": "at", "user_id"}`).
    #[serde(default)]
    pub feishu: Option<String>,
    /// Slack member id (`<@U…>`).
    #[serde(default)]
    pub slack: Option<String>,
}

/// A value that must never be printed: `Debug` and `Display` show `***`, and a value of the
/// wrong type in the file is refused without being shown.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Secret, D::Error> {
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("text")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            fn visit_string<E: serde::de::Error>(
                self,
                v: String,
            ) -> std::result::Result<Secret, E> {
                Ok(Secret(v))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> std::result::Result<Secret, E> {
                Err(not_text())
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> std::result::Result<Secret, E> {
                Err(not_text())
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> std::result::Result<Secret, E> {
                Err(not_text())
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> std::result::Result<Secret, E> {
                Err(not_text())
            }
        }
        fn not_text<E: serde::de::Error>() -> E {
            E::custom("a secret must be text: put it in quotes (its value is not shown)")
        }
        deserializer.deserialize_string(Text)
    }
}

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// `s` seconds as a [`Duration`], never panicking: negative or NaN is zero, more than a day (or
/// infinite) is a day. `validate` refuses such numbers; this keeps a value that got past it
/// (a computed backoff, a command-line flag) from stopping the process.
pub fn seconds(s: f64) -> Duration {
    const DAY: f64 = 86_400.0;
    if s.is_nan() || s <= 0.0 {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(s.min(DAY))
    }
}

impl Config {
    /// Loads `path`, or the embedded default configuration when `path` is `None`.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        let (config, problems) = Config::read(path)?;
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(Error::Config(problems))
        }
    }

    /// Loads `path` (or the embedded configuration) as far as it can be read, with every
    /// problem: a setting that could not be read stands in with its default, so that
    /// `validate` can go on to check what depends on the config (the pipelines) in the same run.
    /// An error only when there is no configuration to speak of (no file, not YAML).
    pub fn read(path: Option<&Path>) -> Result<(Config, Vec<String>)> {
        let env = |k: &str| std::env::var(k).ok();
        match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    Error::Config(vec![format!("{}: cannot read: {e}", path.display())])
                })?;
                let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
                Config::read_text(&text, &path.display().to_string(), base, env)
            }
            None => Config::read_text(EMBEDDED, EMBEDDED_SOURCE, PathBuf::from("."), env),
        }
    }

    /// Parses configuration text. `source` names it in messages; relative paths resolve
    /// against `base_dir`.
    pub fn parse(
        text: &str,
        source: &str,
        base_dir: PathBuf,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config> {
        let (config, problems) = Config::read_text(text, source, base_dir, env)?;
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(Error::Config(problems))
        }
    }

    /// [`Config::parse`], returning the config as far as it could be read with every problem
    /// (each `source: key: message`).
    fn read_text(
        text: &str,
        source: &str,
        base_dir: PathBuf,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<(Config, Vec<String>)> {
        let fail = |problems: Vec<String>| {
            Error::Config(
                problems
                    .into_iter()
                    .map(|p| format!("{source}: {p}"))
                    .collect(),
            )
        };
        let document = vars::parse(text, env).map_err(fail)?;
        let expanded = document.expanded;
        let serde_yaml::Value::Mapping(mut root) = document.value else {
            return Err(fail(vec![
                "expected a mapping of settings at the top level".into(),
            ]));
        };
        let mut problems = Vec::new();
        let mut sections = Sections {
            root: &mut root,
            problems: &mut problems,
            expanded: &expanded,
            unread: Vec::new(),
            kept: load::Kept::default(),
        };
        let timezone = sections.take::<String>("timezone", || Some("Asia/Shanghai".into()));
        let timezone = timezone.and_then(|name| match name.parse::<Tz>() {
            Ok(tz) => Some(tz),
            Err(_) => {
                sections.problems.push(format!(
                    "timezone: `{name}` is not an IANA timezone (e.g. Asia/Shanghai, Europe/Berlin)"
                ));
                None
            }
        });
        let lake = sections.take("lake", || Some(StoreConfig::at("./lake")));
        let inbox = sections.take("inbox", || Some(StoreConfig::at("./inbox")));
        let queries = sections.take("queries", || Some("./queries".to_string()));
        let pipelines = sections.take("pipelines", || Some("./pipelines".to_string()));
        let datasets = sections.take("datasets", || Some(DatasetsConfig::default()));
        let stages = sections.take("stages", || None);
        let rules = sections.take("rules", || Some(RulesConfig::default()));
        let thresholds = sections.take("thresholds", || Some(BTreeMap::new()));
        let index_weights = sections.take("index_weights", || Some(IndexWeights::default()));
        let calendar = sections.take("calendar", || Some(None));
        let engine = sections.take("engine", || Some(EngineConfig::default()));
        let report = sections.take("report", || Some(ReportConfig::default()));
        let email = sections.take("email", || Some(EmailConfig::default()));
        let alerts = sections.take("alerts", || Some(AlertsConfig::default()));
        let unread = std::mem::take(&mut sections.unread);
        let kept = std::mem::take(&mut sections.kept);
        for key in root.keys() {
            problems.push(format!(
                "{}: unknown setting (expected one of timezone, lake, inbox, queries, pipelines, datasets, stages, rules, \
                 thresholds, index_weights, calendar, engine, report, email, alerts)",
                serde_yaml::to_string(key).unwrap_or_default().trim()
            ));
        }
        // A section that could not be read stands in with its default, so that the checks of
        // every other section still run (and that one's are left out).
        let config = Config {
            source: source.to_string(),
            base_dir,
            timezone: timezone.unwrap_or(Tz::UTC),
            lake: lake.unwrap_or_else(|| StoreConfig::at("./lake")),
            inbox: inbox.unwrap_or_else(|| StoreConfig::at("./inbox")),
            queries: queries.unwrap_or_default(),
            pipelines: pipelines.unwrap_or_default(),
            datasets: datasets.unwrap_or_default(),
            stages: stages.unwrap_or_default(),
            rules: rules.unwrap_or_default(),
            thresholds: thresholds.unwrap_or_default(),
            index_weights: index_weights.unwrap_or_default(),
            calendar: calendar.unwrap_or_default(),
            engine: engine.unwrap_or_default(),
            report: report.unwrap_or_default(),
            email: email.unwrap_or_default(),
            alerts: alerts.unwrap_or_default(),
        };
        // The checks see lists without the elements that could not be read: their messages
        // name elements by the file's index.
        problems.extend(
            validation::check(&config, &unread)
                .iter()
                .map(|p| kept.reindex(p)),
        );
        let problems: Vec<String> = problems
            .iter()
            .map(|p| format!("{source}: {}", expanded.hide(p)))
            .collect();
        Ok((config, problems))
    }

    /// The `lake:` section of `path` (the embedded configuration when `None`) alone, and the
    /// folder its relative paths are taken from: what a cluster process (`flowhealth scheduler`,
    /// `flowhealth executor`) reads. It needs nothing else, since the functions' configuration
    /// travels in the plans, and its S3 secrets stay on its own machine.
    pub fn load_lake(path: Option<&Path>) -> Result<(StoreConfig, PathBuf)> {
        let (text, source, base) = match path {
            Some(path) => (
                std::fs::read_to_string(path).map_err(|e| {
                    Error::Config(vec![format!("{}: cannot read: {e}", path.display())])
                })?,
                path.display().to_string(),
                path.parent().map(Path::to_path_buf).unwrap_or_default(),
            ),
            None => (
                EMBEDDED.to_string(),
                EMBEDDED_SOURCE.to_string(),
                ".".into(),
            ),
        };
        let fail = |problems: Vec<String>| {
            Error::Config(
                problems
                    .into_iter()
                    .map(|p| format!("{source}: {p}"))
                    .collect(),
            )
        };
        let document = vars::parse(&text, |k| std::env::var(k).ok()).map_err(fail)?;
        let serde_yaml::Value::Mapping(mut root) = document.value else {
            return Err(fail(vec![
                "expected a mapping of settings at the top level".into(),
            ]));
        };
        let mut problems = Vec::new();
        let lake = Sections {
            root: &mut root,
            problems: &mut problems,
            expanded: &document.expanded,
            unread: Vec::new(),
            kept: load::Kept::default(),
        }
        .take("lake", || Some(StoreConfig::at("./lake")));
        let problems: Vec<String> = problems.iter().map(|p| document.expanded.hide(p)).collect();
        let lake = lake.ok_or_else(|| fail(problems))?;
        validation::check_store(&lake).map_err(|p| fail(vec![format!("lake.url: {p}")]))?;
        Ok((lake, base))
    }

    /// Resolves a path or URL from the config file: relative local paths are taken from the
    /// config file's folder.
    pub fn resolve_local(&self, path: &str) -> PathBuf {
        let p = Path::new(path);
        if p.is_absolute()
            || self.base_dir.as_os_str().is_empty()
            || self.base_dir == Path::new(".")
        {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// The stage named `name`, with its 1-based rank.
    pub fn stage(&self, name: &str) -> Option<(usize, &StageConfig)> {
        self.stages
            .iter()
            .enumerate()
            .find(|(_, s)| s.name == name)
            .map(|(i, s)| (i + 1, s))
    }
}

/// Takes top-level sections out of the YAML mapping one at a time, collecting every problem of
/// each ([`load::typed`]) and which sections could not be read at all.
struct Sections<'a> {
    root: &'a mut serde_yaml::Mapping,
    problems: &'a mut Vec<String>,
    expanded: &'a vars::Expanded,
    /// Sections left at their default because they could not be read.
    unread: Vec<&'static str>,
    /// What is left of lists that lost elements.
    kept: load::Kept,
}

impl Sections<'_> {
    fn take<T: DeserializeOwned>(
        &mut self,
        key: &'static str,
        default: impl FnOnce() -> Option<T>,
    ) -> Option<T> {
        match self.root.remove(key) {
            None | Some(serde_yaml::Value::Null) => {
                let value = default();
                if value.is_none() {
                    self.problems
                        .push(format!("{key}: missing (it is required)"));
                    self.unread.push(key);
                }
                value
            }
            Some(value) => {
                let (typed, problems, kept) =
                    load::typed::<T>(value, &[load::Seg::Key(key.into())], self.expanded);
                self.problems.extend(problems);
                self.kept.extend(kept);
                if typed.is_none() {
                    self.unread.push(key);
                }
                typed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, "test.yaml", PathBuf::from("."), |_| None)
    }

    #[test]
    fn the_shipped_config_loads() {
        let config = Config::parse(EMBEDDED, "config.yaml", PathBuf::from("."), |_| None).unwrap();
        assert_eq!(config.stage("lead").map(|(rank, _)| rank), Some(1));
        assert!(config.stages.iter().any(|s| s.terminal && s.from_any));
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let text = "timezone: Mars/Olympus\nlake: { url: ./lake, bucket: x }\nstages:\n  - { name: a, silent_timeout_h: soon }\nwhatever: 1\n";
        let Err(Error::Config(problems)) = parse(text) else {
            panic!("expected config errors")
        };
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(
            problems[0].starts_with("test.yaml: timezone:"),
            "{}",
            problems[0]
        );
        assert!(
            problems[1].starts_with("test.yaml: lake.bucket: unknown field `bucket`"),
            "{}",
            problems[1]
        );
        assert!(
            problems[2].starts_with("test.yaml: stages[0].silent_timeout_h:"),
            "{}",
            problems[2]
        );
        assert!(
            problems[3].starts_with("test.yaml: whatever: unknown setting"),
            "{}",
            problems[3]
        );
    }

    #[test]
    fn the_engine_is_local_unless_a_cluster_is_named_with_an_address_that_parses() {
        let config = parse("stages: [{ name: a }]\n").unwrap();
        assert_eq!(config.engine.kind, EngineKind::Local);
        let config =
            parse("stages: [{ name: a }]\nengine: { kind: ballista, scheduler: df://sched }\n")
                .unwrap();
        assert_eq!(
            config.engine.scheduler_address(),
            Ok(("sched".into(), 50050))
        );
        let text = "stages: [{ name: a }]\nengine: { kind: ballista, scheduler: \"http://sched:1\", target_partitions: 0 }\n";
        let Err(Error::Config(problems)) = parse(text) else {
            panic!("expected config errors")
        };
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(
            problems[0].contains("engine.scheduler: `http://sched:1` is not a scheduler address")
        );
        assert!(problems[1].contains("engine.target_partitions: must be at least 1"));
    }

    #[test]
    fn a_cluster_process_reads_the_lake_section_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.yaml");
        // Sections a scheduler does not read may be missing or even wrong.
        std::fs::write(
            &path,
            "lake: { url: ./lake }\nemail: { transport: carrier-pigeon }\n",
        )
        .unwrap();
        let (lake, base) = Config::load_lake(Some(&path)).unwrap();
        assert_eq!((lake.url.as_str(), base.as_path()), ("./lake", dir.path()));
        std::fs::write(&path, "lake: { url: \"ftp://x\" }\n").unwrap();
        let Err(Error::Config(problems)) = Config::load_lake(Some(&path)) else {
            panic!("expected a config error")
        };
        assert!(
            problems[0].contains("lake.url: `ftp://x` is not"),
            "{problems:?}"
        );
    }

    #[test]
    fn secrets_are_masked_in_debug_output() {
        let text =
            "stages: [{ name: a }]\nlake: { url: s3://b/p, s3: { secret_access_key: hunter2 } }\n";
        let config = parse(text).unwrap();
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2") && shown.contains("***"));
    }
}
