//! Feishu / Lark custom bot (飞书自定义机器人), as Feishu documents it
//! (open.feishu.cn/document/client-docs/bot-v3/add-custom-bot):
//! - the bot's token is the last segment of the webhook URL;
//! - signing ("签名校验"): the body carries `timestamp` (now, in **seconds**, as a string) and
//!   `sign` = Base64(HMAC-SHA256(key = "<timestamp>\n<secret>", message = empty)); the bot
//!   refuses a timestamp more than an hour off;
//! - rich text: `{"msg_type": "post", "content": {"post": {"zh_cn": {"title", "content":
//!   [[{"tag": "text", "text"}, {"tag": "at", "user_id"}, {"tag": "a", "text", "href"}]]}}}}`,
//!   one inner list per paragraph; `at` mentions a member by open_id / user_id;
//! - reply: `{"code": 0, "msg": "success"}` (older bots `{"StatusCode": 0}`); otherwise an
//!   error (19021 "sign match fail or timestamp is not within one hour from current time").

use super::{Channel, Message, Request, SecretUrl, hmac_base64, zero_code};
use crate::config::WebhookKind;
use crate::error::Result;

pub struct Feishu {
    pub name: String,
    pub url: SecretUrl,
    /// The bot's signing secret, when signature verification is on.
    pub secret: Option<String>,
}

/// `timestamp` (seconds) and `sign` for the body of a signed Feishu bot message.
pub fn sign(secret: &str, timestamp_s: i64) -> Result<String> {
    hmac_base64(&format!("{timestamp_s}\n{secret}"), "")
}

impl Channel for Feishu {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> WebhookKind {
        WebhookKind::Feishu
    }

    fn request(&self, message: &Message, now_ms: i64) -> Result<Request> {
        let text = |t: String| serde_json::json!({ "tag": "text", "text": t });
        let mut paragraphs: Vec<serde_json::Value> = Vec::new();
        for line in &message.lines {
            let mut paragraph = vec![text(format!("• {}", line.text))];
            if let Some(id) = line.contact.as_ref().and_then(|c| c.feishu.as_deref()) {
                paragraph.push(text(" ".into()));
                paragraph.push(serde_json::json!({ "tag": "at", "user_id": id }));
            }
            paragraphs.push(paragraph.into());
        }
        if let Some(more) = message.more_text() {
            paragraphs.push(vec![text(format!("• {more}"))].into());
        }
        if let Some(link) = &message.link {
            paragraphs.push(serde_json::json!([{ "tag": "a", "text": link, "href": link }]));
        }
        let mut body = serde_json::json!({
            "msg_type": "post",
            "content": { "post": { "zh_cn": { "title": message.title, "content": paragraphs } } },
        });
        if let Some(secret) = &self.secret {
            let timestamp = now_ms.div_euclid(1000);
            body["timestamp"] = timestamp.to_string().into();
            body["sign"] = sign(secret, timestamp)?.into();
        }
        Ok(Request {
            url: self.url.expose().to_string(),
            body,
        })
    }

    fn signing_secret(&self) -> Option<&str> {
        self.secret.as_deref()
    }

    fn accepted(&self, reply: &str) -> Result<()> {
        zero_code(
            "Feishu",
            reply,
            &[("code", "msg"), ("StatusCode", "StatusMessage")],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Contact;
    use crate::notify::Line;

    #[test]
    fn signed_in_the_body_with_the_timestamp_in_seconds() {
        let channel = Feishu {
            name: "f".into(),
            url: SecretUrl::new("https://open.feishu.cn/open-apis/bot/v2/hook/tok"),
            secret: Some("s3cret".into()),
        };
        let message = Message {
            title: "1 overdue".into(),
            lines: vec![Line {
                text: "O1".into(),
                contact: Some(Contact {
                    feishu: Some("ou_1".into()),
                    ..Contact::default()
                }),
            }],
            ..Message::default()
        };
        let request = channel.request(&message, 1_700_000_000_999).unwrap();
        assert_eq!(
            request.url,
            "https://open.feishu.cn/open-apis/bot/v2/hook/tok"
        );
        let body = request.body;
        assert_eq!(body["timestamp"], "1700000000");
        assert_eq!(body["sign"], hmac_base64("1700000000\ns3cret", "").unwrap());
        assert_eq!(body["msg_type"], "post");
        let paragraph = &body["content"]["post"]["zh_cn"]["content"][0];
        assert_eq!(
            paragraph[2],
            serde_json::json!({ "tag": "at", "user_id": "ou_1" })
        );
    }
}
