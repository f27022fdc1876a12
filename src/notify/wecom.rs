//! WeCom group robot (企业微信群机器人), as WeCom documents it
//! (developer.work.weixin.qq.com/document/path/91770, "群机器人配置说明"):
//! - the robot's `key` is in the webhook URL; there is no signature;
//! - `markdown` messages: `{"msgtype": "markdown", "markdown": {"content"}}`, at most 4096
//!   bytes of UTF-8; a group member is mentioned with `<@userid>` in the content;
//! - `text` messages: `{"msgtype": "text", "text": {"content", "mentioned_list",
//!   "mentioned_mobile_list"}}`, at most 2048 bytes; the two lists are how a text message
//!   mentions (markdown has no such lists);
//! - reply: `{"errcode": 0, "errmsg": "ok"}`; anything else is an error (93000 a wrong key,
//!   45009 too many messages: 20 a minute).

use super::{Channel, Message, Request, SecretUrl, distinct, zero_code};
use crate::config::WebhookKind;
use crate::error::Result;

/// WeCom's caps on a message's content, in bytes.
const MARKDOWN_BYTES: usize = 4096;
const TEXT_BYTES: usize = 2048;

pub struct WeCom {
    pub name: String,
    pub url: SecretUrl,
    /// `format: text`: plain text with `mentioned_list` instead of markdown.
    pub text: bool,
}

impl WeCom {
    fn markdown(message: &Message) -> String {
        let mut content = format!("### {}\n", message.title);
        for line in &message.lines {
            content.push_str(&format!("> {}", line.text));
            if let Some(id) = line.contact.as_ref().and_then(|c| c.wecom.as_deref()) {
                content.push_str(&format!(" <@{id}>"));
            }
            content.push('\n');
        }
        if let Some(more) = message.more_text() {
            content.push_str(&format!("> <font color=\"comment\">{more}</font>\n"));
        }
        if let Some(link) = &message.link {
            content.push_str(&format!("[{link}]({link})\n"));
        }
        content
    }

    fn body(&self, message: &Message) -> (serde_json::Value, usize) {
        if !self.text {
            let content = WeCom::markdown(message);
            let size = content.len();
            let body =
                serde_json::json!({ "msgtype": "markdown", "markdown": { "content": content } });
            return (body, size);
        }
        let contacts = || message.lines.iter().filter_map(|l| l.contact.as_ref());
        let content = message.plain();
        let size = content.len();
        let body = serde_json::json!({
            "msgtype": "text",
            "text": {
                "content": content,
                "mentioned_list": distinct(contacts().filter_map(|c| c.wecom.as_deref())),
                "mentioned_mobile_list": distinct(contacts().filter(|c| c.wecom.is_none()).filter_map(|c| c.mobile.as_deref())),
            },
        });
        (body, size)
    }
}

impl Channel for WeCom {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> WebhookKind {
        WebhookKind::Wecom
    }

    fn request(&self, message: &Message, _now_ms: i64) -> Result<Request> {
        let cap = if self.text {
            TEXT_BYTES
        } else {
            MARKDOWN_BYTES
        };
        // Items come off the end (and count as "more") until the content fits.
        for dropped in 0..=message.lines.len() {
            let (body, size) = self.body(&message.without_last(dropped));
            if size <= cap {
                return Ok(Request {
                    url: self.url.expose().to_string(),
                    body,
                });
            }
        }
        Err(crate::error::Error::Internal(format!(
            "the title alone is longer than WeCom's {cap} bytes: {}",
            message.title.chars().take(60).collect::<String>()
        )))
    }

    fn accepted(&self, reply: &str) -> Result<()> {
        zero_code("WeCom", reply, &[("errcode", "errmsg")])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Contact;
    use crate::notify::Line;

    fn message(items: usize) -> Message {
        Message {
            title: "门店打卡".into(),
            lines: (0..items)
                .map(|i| Line {
                    text: format!("OPP-{i:05} 沉默超时：方案阶段已沉默 80 小时"),
                    contact: Some(Contact {
                        wecom: Some(format!("user{i}")),
                        ..Contact::default()
                    }),
                })
                .collect(),
            ..Message::default()
        }
    }

    #[test]
    fn markdown_mentions_inline_and_fits_in_4096_bytes() {
        let channel = WeCom {
            name: "w".into(),
            url: SecretUrl::new("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k"),
            text: false,
        };
        let body = channel.request(&message(2), 0).unwrap().body;
        assert_eq!(body["msgtype"], "markdown");
        let content = body["markdown"]["content"].as_str().unwrap();
        assert!(
            content.contains("OPP-00001 沉默超时：方案阶段已沉默 80 小时 <@user1>"),
            "{content}"
        );
        // 200 items do not fit: the last ones become "… and N more", and the whole fits.
        let body = channel.request(&message(200), 0).unwrap().body;
        let content = body["markdown"]["content"].as_str().unwrap();
        assert!(
            content.len() <= 4096 && content.len() > 3500,
            "{}",
            content.len()
        );
        let shown = content.matches("<@user").count();
        assert!(
            content.contains(&format!("… and {} more", 200 - shown)),
            "{content}"
        );
    }

    #[test]
    fn text_mentions_by_list() {
        let channel = WeCom {
            name: "w".into(),
            url: SecretUrl::new("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k"),
            text: true,
        };
        let body = channel.request(&message(2), 0).unwrap().body;
        assert_eq!(body["msgtype"], "text");
        assert_eq!(
            body["text"]["mentioned_list"],
            serde_json::json!(["user0", "user1"])
        );
        assert!(body["text"]["content"].as_str().unwrap().len() <= 2048);
    }
}
