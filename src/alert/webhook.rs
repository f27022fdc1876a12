//! Webhook delivery: DingTalk robots (signed: `timestamp` and `sign` = Base64(HMAC-SHA256 of
//! "<timestamp>\n<secret>" keyed by the secret) in the query string; the reply's `errcode` must be
//! 0) and generic JSON hooks (`{"text": ..., "alerts": [...]}`, which Slack-style incoming hooks
//! show as a message).
//!
//! Webhook URLs are secrets (the token is in the query or the path) and the signature is one too:
//! every failure is told through [`mask`], the one masking function, before it reaches a log
//! line, an error, the alert ledger or the run ledger. Every call has a deadline
//! (`alerts.timeout_s`), so a receiver that accepts and then stalls cannot hold a run.

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use super::Alert;
use crate::config::secret::mask;
use crate::config::{Config, RetryConfig, WebhookConfig, WebhookKind};
use crate::error::{Error, Result};

/// At most this many alerts are spelled out in one message (DingTalk caps a message's size).
const MAX_LINES: usize = 30;

pub struct Hooks {
    client: reqwest::Client,
    retry: RetryConfig,
    pub notify: Vec<WebhookConfig>,
    pub escalate: Vec<WebhookConfig>,
}

impl Hooks {
    pub fn new(config: &Config) -> Result<Hooks> {
        let alerts = &config.alerts;
        let escalation: Vec<&String> = alerts.escalate.iter().flat_map(|e| &e.webhooks).collect();
        let by_name = |names: &[&String]| -> Vec<WebhookConfig> {
            alerts
                .webhooks
                .iter()
                .filter(|h| names.contains(&&h.name))
                .cloned()
                .collect()
        };
        let notify = if alerts.notify.is_empty() {
            alerts
                .webhooks
                .iter()
                .filter(|h| !escalation.contains(&&h.name))
                .cloned()
                .collect()
        } else {
            by_name(&alerts.notify.iter().collect::<Vec<_>>())
        };
        let deadline = crate::config::seconds(alerts.timeout_s);
        let client = reqwest::Client::builder()
            .timeout(deadline)
            .connect_timeout(deadline)
            .build()
            .map_err(|e| Error::Internal(format!("cannot start the HTTP client: {e}")))?;
        Ok(Hooks {
            client,
            retry: alerts.retry,
            notify,
            escalate: by_name(&escalation),
        })
    }

    /// Sends one message listing `alerts` to every hook in `hooks`; an error names each hook that
    /// failed after the retries.
    pub async fn send(&self, hooks: &[WebhookConfig], title: &str, alerts: &[Alert]) -> Result<()> {
        let mut errors = Vec::new();
        for hook in hooks {
            if let Err(error) = self.send_one(hook, title, alerts).await {
                errors.push(error.context(format!("webhook {}", hook.name)));
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Several(errors))
        }
    }

    async fn send_one(&self, hook: &WebhookConfig, title: &str, alerts: &[Alert]) -> Result<()> {
        let body = match hook.kind {
            WebhookKind::Dingtalk => serde_json::json!({
                "msgtype": "markdown",
                "markdown": { "title": title, "text": markdown(title, alerts) },
            }),
            WebhookKind::Json => serde_json::json!({
                "text": plain(title, alerts),
                "title": title,
                "alerts": alerts,
            }),
        };
        let mut error = Error::Internal("no attempt made (alerts.retry.attempts is 0)".into());
        for attempt in 0..self.retry.attempts {
            if attempt > 0 {
                tokio::time::sleep(self.retry.backoff(attempt)).await;
            }
            // Signed anew each attempt: DingTalk rejects a timestamp older than an hour.
            let url = match (hook.kind, &hook.secret) {
                (WebhookKind::Dingtalk, Some(secret)) => signed_url(
                    hook.url.expose(),
                    secret.expose(),
                    chrono::Utc::now().timestamp_millis(),
                )?,
                (WebhookKind::Dingtalk, None) | (WebhookKind::Json, _) => {
                    hook.url.expose().to_string()
                }
            };
            let called = self.post(&url, &body, hook).await;
            match called.map_err(|message| failed(format!("POST {}: {message}", hook.url))) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(webhook = %hook.name, attempt = attempt + 1, error = %e, "Webhook call failed.");
                    error = e;
                }
            }
        }
        Err(error)
    }

    /// One call; the error is already masked (it never holds the URL, its token or the
    /// signature, even when the receiver echoes them).
    async fn post(
        &self,
        url: &str,
        body: &serde_json::Value,
        hook: &WebhookConfig,
    ) -> std::result::Result<(), String> {
        let response = self
            .client
            .post(url)
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| describe(e))?;
        let status = response.status();
        let text = response.text().await.map_err(describe)?;
        let excerpt = || scrub(&text.chars().take(200).collect::<String>(), hook);
        if !status.is_success() {
            return Err(format!("HTTP {status}: {}", excerpt()));
        }
        // DingTalk answers 200 with an error code in the body (bad signature, rate limit).
        if hook.kind == WebhookKind::Dingtalk {
            let reply: serde_json::Value = serde_json::from_str(&text)
                .map_err(|_| format!("not a DingTalk reply: {}", excerpt()))?;
            if reply["errcode"].as_i64() != Some(0) {
                let reply = format!("DingTalk errcode {}: {}", reply["errcode"], reply["errmsg"]);
                return Err(scrub(&reply, hook));
            }
        }
        Ok(())
    }
}

/// The webhook URL with DingTalk's `timestamp` and `sign` parameters added; a URL that does not
/// parse is the configuration's to fix.
pub fn signed_url(url: &str, secret: &str, timestamp_ms: i64) -> Result<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .map_err(|e| Error::Internal(format!("signing secret: {e}")))?;
    mac.update(format!("{timestamp_ms}\n{secret}").as_bytes());
    let sign = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let mut url = reqwest::Url::parse(url).map_err(|e| Error::Usage(format!("url: {e}")))?;
    url.query_pairs_mut()
        .append_pair("timestamp", &timestamp_ms.to_string())
        .append_pair("sign", &sign);
    Ok(url.to_string())
}

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

fn markdown(title: &str, alerts: &[Alert]) -> String {
    listing(format!("### {title}\n\n"), alerts, |l| format!("**{l}**"))
}

fn plain(title: &str, alerts: &[Alert]) -> String {
    listing(format!("{title}\n"), alerts, |l| l)
}

/// `heading` and a bullet per alert (at most [`MAX_LINES`]), each line styled by `style`.
fn listing(mut text: String, alerts: &[Alert], style: impl Fn(String) -> String) -> String {
    for alert in alerts.iter().take(MAX_LINES) {
        text.push_str(&format!("- {}\n", style(line(alert))));
    }
    if alerts.len() > MAX_LINES {
        text.push_str(&format!("- ... and {} more\n", alerts.len() - MAX_LINES));
    }
    text
}

/// A call that did not go through; every such failure is tried again (after the configured
/// backoff), as a receiver's refusal is often a rate limit or an outage.
fn failed(message: String) -> Error {
    Error::Delivery {
        message,
        permanent: false,
    }
}

/// A receiver's reply (which may repeat the URL it was called with, without its scheme and
/// host) without this hook's secret pieces: the path after its first segment, the query's
/// values, the signing secret; then through [`mask`], as every message is.
fn scrub(text: &str, hook: &WebhookConfig) -> String {
    let mut out = text.to_string();
    if let Ok(url) = reqwest::Url::parse(hook.url.expose()) {
        let path = url.path_segments().into_iter().flatten().skip(1);
        let query = url.query_pairs().map(|(_, v)| v.into_owned());
        let mut pieces: Vec<String> = path.map(String::from).chain(query).collect();
        pieces.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for piece in pieces.iter().filter(|p| p.len() >= 4) {
            out = out.replace(piece.as_str(), "***");
        }
    }
    if let Some(secret) = hook.secret.as_ref().filter(|s| !s.expose().is_empty()) {
        out = out.replace(secret.expose(), "***");
    }
    mask(&out)
}

/// A reqwest error with its causes ("error sending request: connection refused"), without the
/// URL it names (the caller says which webhook, masked) and masked all the same.
fn describe(error: reqwest::Error) -> String {
    let timed_out = error.is_timeout();
    let error = error.without_url();
    let mut message = crate::error::with_causes(error.to_string(), &error);
    if timed_out {
        message.push_str(" (alerts.timeout_s)");
    }
    mask(&message)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of DingTalk's documentation, recomputed: the same inputs give the same
    /// query string shape, and the signature decodes to 32 bytes.
    #[test]
    fn signature_goes_in_the_query() {
        let url = signed_url(
            "https://oapi.dingtalk.com/robot/send?access_token=abc",
            "SEC123",
            1_700_000_000_000,
        )
        .unwrap();
        let parsed = reqwest::Url::parse(&url).unwrap();
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        assert_eq!(pairs[0], ("access_token".into(), "abc".into()));
        assert_eq!(pairs[1], ("timestamp".into(), "1700000000000".into()));
        let sign = base64::engine::general_purpose::STANDARD
            .decode(&pairs[2].1)
            .unwrap();
        assert_eq!(sign.len(), 32);
    }
}
