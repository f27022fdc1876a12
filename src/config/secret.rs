//! Webhook URLs are secrets: whoever has one can post to the group. Their tokens sit in the query
//! (DingTalk's `access_token`, WeCom's `key`, the `timestamp` and `sign` flowhealth adds) or in
//! the path (Feishu's `/bot/v2/hook/<token>`, Slack's `/services/T../B../<token>`), so a URL is
//! shown as its scheme, host, port and first path segment only, and every message that may hold
//! one (an HTTP library's error names the URL it called) goes through [`mask`] before anyone sees
//! it: in a log line, an exit message, the alert ledger.

use std::fmt;
use std::sync::LazyLock;

use regex::Regex;
use serde::Deserialize;

/// A webhook URL. `Display` and `Debug` show it masked (see [`mask_url`]); only
/// [`SecretUrl::expose`] gives the whole URL, for the HTTP call itself.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    pub fn new(url: impl Into<String>) -> SecretUrl {
        SecretUrl(url.into())
    }

    /// The whole URL, token included: for the request, never for a message.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_url(&self.0))
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&mask_url(&self.0))
    }
}

/// `scheme://host[:port]/<first path segment>/***`: the first segment says which service it is
/// (`/robot`, `/cgi-bin`, `/open-apis`, `/services`); everything after it and the query, where
/// the vendors put their tokens and flowhealth its signature, is `***`. Text that is not a URL
/// with a host is `***` altogether.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    // user:password@host: the credentials go too.
    let host = authority.rsplit('@').next().unwrap_or(authority);
    if host.is_empty() {
        return "***".into();
    }
    let first = tail
        .strip_prefix('/')
        .and_then(|path| path.split(['/', '?', '#']).next())
        .filter(|segment| !segment.is_empty());
    let hidden = tail.len() > first.map_or(0, |s| s.len() + 1);
    match (first, hidden) {
        (Some(segment), true) => format!("{scheme}://{host}/{segment}/***"),
        (Some(segment), false) => format!("{scheme}://{host}/{segment}"),
        (None, true) => format!("{scheme}://{host}/***"),
        (None, false) => format!("{scheme}://{host}"),
    }
}

/// `text` with every URL in it masked by [`mask_url`], and any `access_token=`, `key=`, `sign=`
/// or `timestamp=` value outside a URL too. The one function every channel error, log line and
/// ledger entry of a notification goes through.
pub fn mask(text: &str) -> String {
    static URL: LazyLock<Regex> = LazyLock::new(|| {
        // A URL does not end with the punctuation after it ("...: HTTP 500").
        Regex::new(r#"[A-Za-z][A-Za-z0-9+.-]*://[^\s"'<>()\[\]{}]*[^\s"'<>()\[\]{}.,:;!?]"#)
            .expect("a valid pattern")
    });
    static PAIR: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"(?i)\b(access_token|key|sign|timestamp|secret)=[^\s&]+")
            .expect("a valid pattern")
    });
    let urls_masked = URL.replace_all(text, |c: &regex::Captures| mask_url(&c[0]));
    PAIR.replace_all(&urls_masked, "$1=***").into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_in_the_query_or_the_path_never_show() {
        for (url, shown) in [
            (
                "https://oapi.dingtalk.com/robot/send?access_token=abc123&timestamp=1&sign=x%2By",
                "https://oapi.dingtalk.com/robot/***",
            ),
            (
                "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6",
                "https://qyapi.weixin.qq.com/cgi-bin/***",
            ),
            (
                "https://open.feishu.cn/open-apis/bot/v2/hook/5e3d587e-d78e",
                "https://open.feishu.cn/open-apis/***",
            ),
            (
                "https://hooks.slack.com/services/T000/B000/XXXX",
                "https://hooks.slack.com/services/***",
            ),
            ("http://127.0.0.1:8080/json", "http://127.0.0.1:8080/json"),
            ("http://127.0.0.1:8080?key=k", "http://127.0.0.1:8080/***"),
            (
                "https://user:pw@example.com/a/b",
                "https://example.com/a/***",
            ),
            ("not a url", "***"),
        ] {
            assert_eq!(mask_url(url), shown, "{url}");
            assert_eq!(SecretUrl::new(url).to_string(), shown);
            assert_eq!(format!("{:?}", SecretUrl::new(url)), shown);
        }
    }

    #[test]
    fn mask_finds_urls_and_tokens_inside_messages() {
        let error = "error sending request for url (http://127.0.0.1:9/dingtalk/send?access_token=t0k&timestamp=17&sign=abc): connection refused";
        assert_eq!(
            mask(error),
            "error sending request for url (http://127.0.0.1:9/dingtalk/***): connection refused"
        );
        assert_eq!(mask("bad sign=abc and key=zzz"), "bad sign=*** and key=***");
        assert_eq!(mask("HTTP 500: try again"), "HTTP 500: try again");
        // Punctuation after a URL stays; masking twice changes nothing.
        let told = "POST http://127.0.0.1:9/robot/send?access_token=t0k: HTTP 500.";
        assert_eq!(mask(told), "POST http://127.0.0.1:9/robot/***: HTTP 500.");
        assert_eq!(mask(&mask(told)), mask(told));
    }
}
