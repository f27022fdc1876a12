//! Delivery: a durable outbox folder and the transports behind it.
//!
//! A message is first written to `outbox/pending/<key>.eml` (the exact bytes that will be sent)
//! with `<key>.json` beside it (envelope, attempts, last error). Delivery sends those bytes and
//! then moves the `.eml` to `outbox/sent/`; `transport: file` delivers by that move alone. A
//! message whose key is already in `sent/` is never queued again, so re-running a report does not
//! send it twice. The one window left is a crash between the server accepting the message and the
//! move: the message is then sent again on the next attempt (at least once, never silently lost).

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::{Deserialize, Serialize};

use crate::config::{Config, RetryConfig, SmtpConfig};
use crate::error::{Error, Result};

/// What the outbox keeps beside a pending message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pending {
    pub key: String,
    pub subject: String,
    pub from: String,
    pub to: Vec<String>,
    pub queued_at: DateTime<Utc>,
    pub attempts: u32,
    pub last_error: Option<String>,
}

/// The outcome of queueing a message.
#[derive(Debug, PartialEq, Eq)]
pub enum Queued {
    /// Waiting in `pending/`.
    Pending(PathBuf),
    /// Already delivered earlier: `sent/<key>.eml`; nothing was queued.
    AlreadySent(PathBuf),
}

/// The outcome of delivering one pending message.
#[derive(Debug)]
pub struct Delivery {
    pub key: String,
    /// Where the delivered message now is (`sent/<key>.eml`), or why it is still pending (an
    /// [`Error::Delivery`]).
    pub result: Result<PathBuf>,
}

pub struct Outbox {
    dir: PathBuf,
}

impl Outbox {
    pub fn open(config: &Config) -> Outbox {
        Outbox {
            dir: config.resolve_local(&config.email.outbox),
        }
    }

    fn pending_dir(&self) -> PathBuf {
        self.dir.join("pending")
    }

    pub fn sent_path(&self, key: &str) -> PathBuf {
        self.dir.join("sent").join(format!("{key}.eml"))
    }

    /// Queues `message` under `key` unless a message with that key was already sent.
    pub fn enqueue(&self, key: &str, message: &Message) -> Result<Queued> {
        let sent = self.sent_path(key);
        if sent.exists() {
            return Ok(Queued::AlreadySent(sent));
        }
        let dir = self.pending_dir();
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let envelope = message.envelope();
        let subject = message
            .headers()
            .get_raw("Subject")
            .unwrap_or_default()
            .to_string();
        let pending = Pending {
            key: key.to_string(),
            subject,
            from: envelope.from().map(ToString::to_string).unwrap_or_default(),
            to: envelope.to().iter().map(ToString::to_string).collect(),
            queued_at: Utc::now(),
            attempts: 0,
            last_error: None,
        };
        let eml = dir.join(format!("{key}.eml"));
        // The metadata first: a `.eml` in pending/ always has its envelope beside it.
        write_atomic(
            &dir.join(format!("{key}.json")),
            &serde_json::to_vec_pretty(&pending)?,
        )?;
        write_atomic(&eml, &message.formatted())?;
        Ok(Queued::Pending(eml))
    }

    /// Every pending message, oldest first.
    pub fn pending(&self) -> Result<Vec<Pending>> {
        let dir = self.pending_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(&dir, e)),
        };
        let mut pending = Vec::new();
        for entry in entries {
            let path = entry.map_err(|e| Error::io(&dir, e))?.path();
            if path.extension().is_some_and(|e| e == "json") {
                let text = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
                let item: Pending = serde_json::from_slice(&text).map_err(|e| {
                    Error::Usage(format!("{}: not an outbox entry: {e}", path.display()))
                })?;
                pending.push(item);
            }
        }
        pending.sort_by(|a, b| (a.queued_at, &a.key).cmp(&(b.queued_at, &b.key)));
        Ok(pending)
    }

    /// Delivers every pending message through the configured transport, each with the
    /// configured retries; what fails stays pending with its error recorded.
    pub async fn deliver(&self, config: &Config) -> Result<Vec<Delivery>> {
        let pending = self.pending()?;
        if pending.is_empty() {
            return Ok(Vec::new());
        }
        let transport = Transport::new(config)?;
        let mut deliveries = Vec::new();
        for mut item in pending {
            let eml = self.pending_dir().join(format!("{}.eml", item.key));
            let bytes = std::fs::read(&eml).map_err(|e| Error::io(&eml, e))?;
            let result = transport
                .send_with_retry(&item, &bytes, &config.email.retry)
                .await;
            item.attempts += result.attempts;
            let result = match result.error {
                None => {
                    let sent = self.sent_path(&item.key);
                    let sent_dir = self.dir.join("sent");
                    std::fs::create_dir_all(&sent_dir).map_err(|e| Error::io(&sent_dir, e))?;
                    std::fs::rename(&eml, &sent).map_err(|e| Error::io(&sent, e))?;
                    let meta = self.pending_dir().join(format!("{}.json", item.key));
                    std::fs::remove_file(&meta).map_err(|e| Error::io(&meta, e))?;
                    tracing::info!(key = %item.key, to = ?item.to, "Delivered report.");
                    Ok(sent)
                }
                Some(Refusal { message, permanent }) => {
                    item.last_error = Some(message.clone());
                    let meta = self.pending_dir().join(format!("{}.json", item.key));
                    write_atomic(&meta, &serde_json::to_vec_pretty(&item)?)?;
                    tracing::warn!(key = %item.key, attempts = item.attempts, error = %message, "Report kept in the outbox.");
                    Err(Error::Delivery {
                        message: format!("{message} (kept in {})", eml.display()),
                        permanent,
                    })
                }
            };
            deliveries.push(Delivery {
                key: item.key,
                result,
            });
        }
        Ok(deliveries)
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let staging = path.with_extension("partial");
    std::fs::write(&staging, bytes).map_err(|e| Error::io(&staging, e))?;
    std::fs::rename(&staging, path).map_err(|e| Error::io(path, e))
}

struct Attempted {
    attempts: u32,
    error: Option<Refusal>,
}

/// Why a message was not delivered, and whether waiting can change that.
struct Refusal {
    message: String,
    /// A refusal by the server that will not change by waiting (bad credentials, a rejected
    /// recipient), or an envelope that cannot be sent at all.
    permanent: bool,
}

enum Transport {
    /// Delivery is the move into `sent/`.
    File,
    Smtp {
        client: Box<AsyncSmtpTransport<Tokio1Executor>>,
        /// `host:port`, for messages.
        server: String,
        /// The most one attempt may take (`email.smtp.timeout_s`): lettre bounds only the
        /// connect, so a server that accepts and then stalls (after EHLO, after AUTH) would hold
        /// the send for as long as the socket lives.
        deadline: Duration,
    },
}

impl Transport {
    fn new(config: &Config) -> Result<Transport> {
        match (config.email.transport.as_str(), &config.email.smtp) {
            ("smtp", Some(smtp)) => Ok(Transport::Smtp {
                client: Box::new(smtp_client(config, smtp)?),
                server: format!("{}:{}", smtp.host, smtp.port),
                deadline: crate::config::seconds(smtp.timeout_s),
            }),
            _ => Ok(Transport::File),
        }
    }

    async fn send_with_retry(
        &self,
        item: &Pending,
        bytes: &[u8],
        retry: &RetryConfig,
    ) -> Attempted {
        let Transport::Smtp {
            client,
            server,
            deadline,
        } = self
        else {
            return Attempted {
                attempts: 1,
                error: None,
            };
        };
        let envelope = match envelope(item) {
            Ok(envelope) => envelope,
            Err(message) => {
                return Attempted {
                    attempts: 0,
                    error: Some(Refusal {
                        message,
                        permanent: true,
                    }),
                };
            }
        };
        let mut error = None;
        for attempt in 0..retry.attempts {
            if attempt > 0 {
                tokio::time::sleep(retry.backoff(attempt)).await;
            }
            let sent = tokio::time::timeout(*deadline, client.send_raw(&envelope, bytes)).await;
            let Ok(sent) = sent else {
                let message = format!(
                    "smtp {server}: no answer within {} s (email.smtp.timeout_s)",
                    deadline.as_secs_f64()
                );
                tracing::warn!(key = %item.key, attempt = attempt + 1, error = %message, "SMTP delivery failed.");
                error = Some(Refusal {
                    message,
                    permanent: false,
                });
                continue;
            };
            match sent {
                Ok(_) => {
                    return Attempted {
                        attempts: attempt + 1,
                        error: None,
                    };
                }
                Err(e) => {
                    let message = smtp_error(server, &e);
                    tracing::warn!(key = %item.key, attempt = attempt + 1, error = %message, "SMTP delivery failed.");
                    // A permanent refusal (bad credentials, rejected recipient) will not change
                    // by waiting.
                    error = Some(Refusal {
                        message,
                        permanent: e.is_permanent(),
                    });
                    if e.is_permanent() {
                        return Attempted {
                            attempts: attempt + 1,
                            error,
                        };
                    }
                }
            }
        }
        Attempted {
            attempts: retry.attempts,
            error,
        }
    }
}

fn envelope(item: &Pending) -> std::result::Result<Envelope, String> {
    let parse = |a: &str| {
        a.parse::<Address>()
            .map_err(|e| format!("outbox entry {}: `{a}`: {e}", item.key))
    };
    let from = if item.from.is_empty() {
        None
    } else {
        Some(parse(&item.from)?)
    };
    let to = item
        .to
        .iter()
        .map(|a| parse(a))
        .collect::<std::result::Result<Vec<_>, _>>()?;
    Envelope::new(from, to).map_err(|e| format!("outbox entry {}: {e}", item.key))
}

/// "smtp mail.example.com:587: <cause>", with the underlying causes spelled out (lettre's
/// top-level message alone says only "Connection error").
fn smtp_error(server: &str, error: &lettre::transport::smtp::Error) -> String {
    crate::error::with_causes(format!("smtp {server}: {error}"), error)
}

fn smtp_client(config: &Config, smtp: &SmtpConfig) -> Result<AsyncSmtpTransport<Tokio1Executor>> {
    let tls_error = |e: lettre::transport::smtp::Error| {
        Error::Usage(format!("email.smtp: TLS set-up for {}: {e}", smtp.host))
    };
    let tls_parameters = || -> Result<TlsParameters> {
        let mut builder = TlsParameters::builder(smtp.host.clone());
        if let Some(ca_file) = &smtp.ca_file {
            let path = config.resolve_local(ca_file);
            let pem = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            let certificate = Certificate::from_pem(&pem).map_err(|e| {
                Error::Usage(format!(
                    "email.smtp.ca_file: {}: not a PEM certificate: {e}",
                    path.display()
                ))
            })?;
            builder = builder.add_root_certificate(certificate);
        }
        builder.build_rustls().map_err(tls_error)
    };
    let tls = match smtp.tls.as_str() {
        "implicit" => Tls::Wrapper(tls_parameters()?),
        "none" => Tls::None,
        _ => Tls::Required(tls_parameters()?),
    };
    let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&smtp.host)
        .port(smtp.port)
        .tls(tls)
        .timeout(Some(crate::config::seconds(smtp.timeout_s)));
    if let Some(username) = &smtp.username {
        let password = smtp.password.as_ref().map(|p| p.expose().to_string());
        builder = builder.credentials(Credentials::new(
            username.clone(),
            password.unwrap_or_default(),
        ));
    }
    Ok(builder.build())
}
