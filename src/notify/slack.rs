//! Slack incoming webhook, as Slack documents it (api.slack.com/messaging/webhooks; Block Kit
//! limits at api.slack.com/reference/block-kit/blocks):
//! - the token is the path of the webhook URL; there is no signature;
//! - body: `{"text", "blocks"}`: `text` is the notification's fallback, the blocks are what the
//!   channel shows: a `header` (plain text, at most 150 characters) and `section`s of `mrkdwn`
//!   (at most 3000 characters each; at most 50 blocks);
//! - a member is mentioned with `<@U…>`; `&`, `<` and `>` in text are escaped as `&amp;`,
//!   `&lt;`, `&gt;`;
//! - reply: HTTP 200 `ok`; an error is a 4xx with a code in the body (`invalid_payload`,
//!   `no_service`, `channel_is_archived`).

use super::{Channel, Message, Request, SecretUrl};
use crate::config::WebhookKind;
use crate::error::Result;

const SECTION_CHARS: usize = 3000;
const HEADER_CHARS: usize = 150;
const MAX_BLOCKS: usize = 50;

pub struct Slack {
    pub name: String,
    pub url: SecretUrl,
}

/// Text as Slack's mrkdwn takes it.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

impl Channel for Slack {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> WebhookKind {
        WebhookKind::Slack
    }

    fn request(&self, message: &Message, _now_ms: i64) -> Result<Request> {
        let header: String = message.title.chars().take(HEADER_CHARS).collect();
        let mut blocks = vec![serde_json::json!({
            "type": "header",
            "text": { "type": "plain_text", "text": header },
        })];
        let mut section = String::new();
        let mut sections = Vec::new();
        let mut items: Vec<String> = message
            .lines
            .iter()
            .map(|line| {
                let mut item = format!("• {}", escape(&line.text));
                if let Some(id) = line.contact.as_ref().and_then(|c| c.slack.as_deref()) {
                    item.push_str(&format!(" <@{id}>"));
                }
                item
            })
            .collect();
        if let Some(more) = message.more_text() {
            items.push(format!("• {more}"));
        }
        if let Some(link) = &message.link {
            items.push(format!("<{link}>"));
        }
        for item in items {
            let item: String = item.chars().take(SECTION_CHARS - 1).collect();
            if section.chars().count() + item.chars().count() + 1 > SECTION_CHARS {
                sections.push(std::mem::take(&mut section));
            }
            section.push_str(&item);
            section.push('\n');
        }
        if !section.is_empty() {
            sections.push(section);
        }
        // The header and the sections, within Slack's 50 blocks.
        for text in sections.into_iter().take(MAX_BLOCKS - 1) {
            blocks.push(serde_json::json!({
                "type": "section",
                "text": { "type": "mrkdwn", "text": text },
            }));
        }
        let body = serde_json::json!({ "text": message.plain(), "blocks": blocks });
        Ok(Request {
            url: self.url.expose().to_string(),
            body,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Contact;
    use crate::notify::Line;

    #[test]
    fn blocks_escape_and_mention() {
        let channel = Slack {
            name: "s".into(),
            url: SecretUrl::new("https://hooks.slack.com/services/T/B/X"),
        };
        let message = Message {
            title: "1 overdue".into(),
            lines: vec![Line {
                text: "O1 <proposal> & co".into(),
                contact: Some(Contact {
                    slack: Some("U01".into()),
                    ..Contact::default()
                }),
            }],
            more: 3,
            ..Message::default()
        };
        let body = channel.request(&message, 0).unwrap().body;
        assert_eq!(body["blocks"][0]["type"], "header");
        assert_eq!(
            body["blocks"][1]["text"]["text"],
            "• O1 &lt;proposal&gt; &amp; co <@U01>\n• … and 3 more\n"
        );
        assert!(body["text"].as_str().unwrap().starts_with("1 overdue\n"));
    }
}
