//! A generic JSON webhook: `{"title", "text", ...data}`, where `text` is the message as plain
//! text and `data` what the caller attached (`"alerts": [...]` for alerts, `"report": {...}` for a
//! report card). Any HTTP 2xx is success. For receivers of flowhealth's own making, BI tools, or
//! hooks that take a `text` field.

use super::{Channel, Message, Request, SecretUrl};
use crate::config::WebhookKind;
use crate::error::Result;

pub struct Json {
    pub name: String,
    pub url: SecretUrl,
}

impl Channel for Json {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> WebhookKind {
        WebhookKind::Json
    }

    fn request(&self, message: &Message, _now_ms: i64) -> Result<Request> {
        let mut body = serde_json::Map::new();
        body.insert("title".into(), message.title.clone().into());
        body.insert("text".into(), message.plain().into());
        body.extend(message.data.clone());
        Ok(Request {
            url: self.url.expose().to_string(),
            body: body.into(),
        })
    }
}
