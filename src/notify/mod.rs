//! Notifications to the chat tools people work in: one [`Channel`] trait, one file per channel,
//! and the [`Notifier`] that delivers a [`Message`] to a channel with retries.
//!
//! | kind | channel | message | signature | @-mentions | accepted when |
//! |---|---|---|---|---|---|
//! | `dingtalk` | DingTalk group robot (钉钉) | markdown | `timestamp` (ms) and `sign` in the query | `at.atUserIds` / `at.atMobiles`, `@id` in the text | `errcode` 0 |
//! | `wecom` | WeCom group robot (企业微信) | markdown (or text) | none (the key is in the URL) | `<@userid>` in markdown; `mentioned_list` / `mentioned_mobile_list` in text | `errcode` 0 |
//! | `feishu` | Feishu / Lark custom bot (飞书) | rich text (`post`) | `timestamp` (s) and `sign` in the body | `{"tag": "at", "user_id"}` | `code` 0 |
//! | `slack` | Slack incoming webhook | `text` and `blocks` | none (the token is in the URL) | `<@U…>` | HTTP 2xx |
//! | `json` | any HTTP endpoint | `{"title", "text", ...data}` | none | none | HTTP 2xx |
//!
//! Each channel file cites the vendor documentation its format follows. A message lists at most
//! as many items as the caller put in it and says how many more there are; a channel whose
//! vendor caps the size (WeCom) drops items from the end into that count. Every error a channel
//! or the HTTP client reports goes through [`mask`] first: URLs carry the tokens, and a reply
//! that echoes the request loses this channel's tokens, signature and secret before that. Every
//! call has a deadline (`alerts.timeout_s`, connecting included), so a receiver that accepts and
//! then stalls cannot hold a run.

pub mod dingtalk;
pub mod feishu;
pub mod json;
pub mod slack;
pub mod wecom;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

pub use crate::config::secret::{SecretUrl, mask};
use crate::config::{AlertsConfig, Contact, RetryConfig, WebhookConfig, WebhookKind};
use crate::error::{Error, Result};

/// What a channel is told.
#[derive(Debug, Clone, Default)]
pub struct Message {
    pub title: String,
    /// The items, each a line of text, with the person it is about (to @-mention) when known.
    pub lines: Vec<Line>,
    /// Items left out of `lines`: the channel says "and N more".
    pub more: usize,
    /// Where the whole story is (the report page): a URL, or a path in the lake.
    pub link: Option<String>,
    /// Structured data the generic JSON channel sends beside the text (`{"alerts": [...]}`).
    pub data: serde_json::Map<String, serde_json::Value>,
}

/// One item of a message.
#[derive(Debug, Clone, Default)]
pub struct Line {
    pub text: String,
    /// How each channel addresses the person the item is about (`alerts.owners`).
    pub contact: Option<Contact>,
}

impl Message {
    /// "… and N more", when items were left out.
    fn more_text(&self) -> Option<String> {
        (self.more > 0).then(|| format!("… and {} more", self.more))
    }

    /// The message as plain text: the title, a line per item, how many more, the link.
    pub fn plain(&self) -> String {
        let mut text = format!("{}\n", self.title);
        for line in &self.lines {
            text.push_str(&format!("- {}\n", line.text));
        }
        if let Some(more) = self.more_text() {
            text.push_str(&format!("- {more}\n"));
        }
        if let Some(link) = &self.link {
            text.push_str(&format!("{link}\n"));
        }
        text
    }

    /// The same message without its last `n` items, counted in `more` instead.
    fn without_last(&self, n: usize) -> Message {
        let mut shorter = self.clone();
        let keep = shorter.lines.len().saturating_sub(n);
        shorter.more += shorter.lines.len() - keep;
        shorter.lines.truncate(keep);
        shorter
    }
}

/// An HTTP request that delivers a message: POSTed as JSON.
#[derive(Debug, Clone)]
pub struct Request {
    /// The whole URL, signature included: never printed (see [`mask`]).
    pub url: String,
    pub body: serde_json::Value,
}

/// A chat tool that takes messages over HTTP.
pub trait Channel: Send + Sync {
    /// The configured name, for messages and the ledgers.
    fn name(&self) -> &str;

    fn kind(&self) -> WebhookKind;

    /// The request that delivers `message`, signed for `now_ms` (milliseconds since the epoch)
    /// where the vendor signs requests: a retry signs again (DingTalk and Feishu refuse a
    /// timestamp an hour old).
    /// A URL that does not parse is the configuration's to fix.
    fn request(&self, message: &Message, now_ms: i64) -> Result<Request>;

    /// Whether the body of a 2xx reply says the message was accepted: DingTalk, WeCom and Feishu
    /// answer 200 with an error code inside (a bad signature, a rate limit). The error is a
    /// [`Error::Delivery`] with the vendor's code and message.
    fn accepted(&self, reply: &str) -> Result<()> {
        let _ = reply;
        Ok(())
    }

    /// The secret the channel signs with, if any: never shown, even when a receiver echoes it.
    fn signing_secret(&self) -> Option<&str> {
        None
    }
}

/// The channel a webhook's configuration describes.
pub fn channel(config: &WebhookConfig) -> Box<dyn Channel> {
    let name = config.name.clone();
    let url = config.url.clone();
    let secret = config.secret.as_ref().map(|s| s.expose().to_string());
    match config.kind {
        WebhookKind::Dingtalk => Box::new(dingtalk::DingTalk { name, url, secret }),
        WebhookKind::Wecom => Box::new(wecom::WeCom {
            name,
            url,
            text: config.format == Some(crate::config::WebhookFormat::Text),
        }),
        WebhookKind::Feishu => Box::new(feishu::Feishu { name, url, secret }),
        WebhookKind::Slack => Box::new(slack::Slack { name, url }),
        WebhookKind::Json => Box::new(json::Json { name, url }),
    }
}

/// Delivers messages over HTTP, each attempt signed anew, retried as `retry` says.
pub struct Notifier {
    client: reqwest::Client,
    retry: RetryConfig,
}

impl Notifier {
    /// Retries as `alerts.retry` says; each call may take `alerts.timeout_s`, from connecting
    /// to the last byte of the reply.
    pub fn new(alerts: &AlertsConfig) -> Result<Notifier> {
        let deadline = crate::config::seconds(alerts.timeout_s);
        let client = reqwest::Client::builder()
            .timeout(deadline)
            .connect_timeout(deadline)
            .build()
            .map_err(|e| Error::Internal(mask(&format!("cannot start the HTTP client: {e}"))))?;
        Ok(Notifier {
            client,
            retry: alerts.retry,
        })
    }

    /// Sends `message` to `channel`. A failure after the retries is a [`Error::Delivery`]
    /// (external, retried at the next run) whose message is masked and names what failed last:
    /// the connection, the HTTP status, or the vendor's error code.
    pub async fn send(&self, channel: &dyn Channel, message: &Message) -> Result<()> {
        let mut error = Error::Internal("no attempt made".into());
        for attempt in 0..self.retry.attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(self.retry.backoff(attempt)).await;
            }
            let request = channel.request(message, chrono::Utc::now().timestamp_millis())?;
            match self.post(channel, &request).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(channel = %channel.name(), kind = %channel.kind(), attempt = attempt + 1, error = %e, "Notification failed.");
                    error = e;
                }
            }
        }
        Err(error)
    }

    /// One call. A failed connection or an HTTP error status says `POST <the URL, masked>: <what
    /// failed>`, a vendor's refusal its code and message; neither holds the channel's tokens,
    /// signature or secret, even where the receiver's reply repeats them.
    async fn post(&self, channel: &dyn Channel, request: &Request) -> Result<()> {
        let failed = |message: &str| {
            refused(format!(
                "POST {}: {}",
                SecretUrl::new(request.url.as_str()),
                scrub(message, channel, request)
            ))
        };
        let describe = |e: reqwest::Error| {
            let timed_out = e.is_timeout();
            let e = e.without_url();
            let mut message = crate::error::with_causes(e.to_string(), &e);
            if timed_out {
                message.push_str(" (alerts.timeout_s)");
            }
            failed(&message)
        };
        let response = self
            .client
            .post(&request.url)
            .header("Content-Type", "application/json")
            .body(request.body.to_string())
            .send()
            .await
            .map_err(describe)?;
        let status = response.status();
        let reply = response.text().await.map_err(describe)?;
        if !status.is_success() {
            return Err(failed(&format!("HTTP {status}: {}", excerpt(&reply))));
        }
        // The vendor answered: its refusal is told as it is, without the URL.
        channel.accepted(&reply).map_err(|e| match e {
            Error::Delivery { message, .. } => refused(scrub(&message, channel, request)),
            other => other,
        })
    }
}

/// A call a channel did not take: external, and tried again (a vendor's refusal is often a rate
/// limit or an outage, and a bad signature is fixed in the config before the next run). The
/// message is masked.
fn refused(message: String) -> Error {
    Error::Delivery {
        message: mask(&message),
        permanent: false,
    }
}

/// `text` (a receiver's reply, which may repeat the request without the URL's scheme and host)
/// without `request`'s secret pieces: the URL's path after its first segment, its query's
/// values, the body's signature, the channel's signing secret. [`mask`] does the rest.
fn scrub(text: &str, channel: &dyn Channel, request: &Request) -> String {
    let mut pieces: Vec<String> = Vec::new();
    if let Ok(url) = reqwest::Url::parse(&request.url) {
        pieces.extend(
            url.path_segments()
                .into_iter()
                .flatten()
                .skip(1)
                .map(String::from),
        );
        pieces.extend(url.query_pairs().map(|(_, v)| v.into_owned()));
    }
    pieces.extend(
        request
            .body
            .get("sign")
            .and_then(|s| s.as_str())
            .map(String::from),
    );
    pieces.extend(channel.signing_secret().map(String::from));
    pieces.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let mut out = text.to_string();
    // Shorter pieces (`send`, `hook`, `v2`) are words, not secrets: tokens, signatures and
    // timestamps are longer.
    for piece in pieces.iter().filter(|p| p.len() >= 8) {
        out = out.replace(piece.as_str(), "***");
    }
    out
}

/// The first 200 characters of a reply, for an error message.
fn excerpt(reply: &str) -> String {
    reply.chars().take(200).collect()
}

/// Base64(HMAC-SHA256(key, message)): DingTalk signs "<timestamp>\n<secret>" keyed by the
/// secret, Feishu signs nothing keyed by "<timestamp>\n<secret>".
fn hmac_base64(key: &str, message: &str) -> Result<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes())
        .map_err(|e| Error::Internal(format!("signing key: {e}")))?;
    mac.update(message.as_bytes());
    Ok(base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

/// A reply that must be a JSON object whose `field` is 0 (`errcode` for DingTalk and WeCom,
/// `code` for Feishu); otherwise the vendor's code and message.
fn zero_code(vendor: &str, reply: &str, fields: &[(&str, &str)]) -> Result<()> {
    let value: serde_json::Value = serde_json::from_str(reply)
        .map_err(|_| refused(format!("not a {vendor} reply: {}", excerpt(reply))))?;
    for (code, message) in fields {
        if let Some(n) = value.get(*code).and_then(serde_json::Value::as_i64) {
            if n == 0 {
                return Ok(());
            }
            let text = value.get(*message).and_then(|m| m.as_str()).unwrap_or("");
            return Err(refused(format!("{vendor} {code} {n}: {text}")));
        }
    }
    Err(refused(format!("not a {vendor} reply: {}", excerpt(reply))))
}

/// The distinct values of `ids`, in first-seen order.
fn distinct<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for id in ids {
        if !out.iter().any(|o| o == id) {
            out.push(id.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fewer_items_are_counted_as_more() {
        let message = Message {
            title: "t".into(),
            lines: (0..5)
                .map(|i| Line {
                    text: format!("item {i}"),
                    contact: None,
                })
                .collect(),
            more: 2,
            ..Message::default()
        };
        let shorter = message.without_last(3);
        assert_eq!(shorter.lines.len(), 2);
        assert_eq!(shorter.more, 5);
        assert!(shorter.plain().ends_with("- item 1\n- … and 5 more\n"));
    }

    #[test]
    fn vendor_codes() {
        assert!(
            zero_code(
                "DingTalk",
                r#"{"errcode":0,"errmsg":"ok"}"#,
                &[("errcode", "errmsg")]
            )
            .is_ok()
        );
        assert_eq!(
            zero_code(
                "DingTalk",
                r#"{"errcode":310000,"errmsg":"sign not match"}"#,
                &[("errcode", "errmsg")]
            )
            .unwrap_err()
            .to_string(),
            "DingTalk errcode 310000: sign not match"
        );
        assert!(zero_code("Feishu", "<html>", &[("code", "msg")]).is_err());
    }
}
