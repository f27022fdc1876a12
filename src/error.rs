//! One error type for the crate. Variants are by area; each message is lowercase, names the file,
//! dataset or key involved, and for a user error says what to change.
//!
//! Every error knows its [`Domain`], after arroyo's habit (`crates/arroyo-rpc/src/errors.rs`):
//! whether it is the user's to fix, a system flowhealth talks to failing, or flowhealth's own.
//! The domain sets the exit status (2 for the user's, 1 for the others: `docs/contract.md`
//! section 6), and [`Error::retryable`] says whether trying again later can help, which is what
//! the pipeline runner retries on: a bad query fails at once, an SMTP server that is down is
//! tried again.

use std::fmt;
use std::path::PathBuf;

use datafusion::error::DataFusionError;

/// `Result` with the crate's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Who can fix an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// The user's to fix: the configuration, a metric's SQL, a template, an input file, a flag.
    /// The message says what to change; the same input fails the same way, so it is never
    /// retried. Exit status 2.
    User,
    /// A system flowhealth talks to failed: the network, S3, an SMTP server, a webhook, the
    /// file system, or another process holding a lock. Trying again later may succeed (see
    /// [`Error::retryable`]). Exit status 1.
    External,
    /// flowhealth itself: a bug, or a lake holding what flowhealth did not write. Not retried.
    /// Exit status 1.
    Internal,
}

impl Domain {
    pub fn name(self) -> &'static str {
        match self {
            Domain::User => "user",
            Domain::External => "external",
            Domain::Internal => "internal",
        }
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is wrong: every problem found, each naming its file and key. User.
    #[error("{} problem(s) in the configuration:\n{}", .0.len(), .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Config(Vec<String>),

    /// An input file cannot be ingested as a whole (its rows would be quarantined otherwise).
    /// User.
    #[error("{file}: {reason}")]
    InputFile { file: String, reason: String },

    /// Something the user asked for does not exist or does not fit (a dataset name, a flag
    /// value). User.
    #[error("{0}")]
    Usage(String),

    /// A query or metric SQL that does not parse, plan or run, with the hint a user needs. User.
    #[error("{0}")]
    Query(String),

    /// A report or alert template that does not parse or render: names the template and line.
    /// User.
    #[error("{0}")]
    Template(String),

    /// A report or alert could not be delivered (SMTP, a webhook); it is kept for a later
    /// attempt. External. `permanent`: the server refused in a way waiting will not change (a
    /// wrong password, a rejected recipient), so retrying cannot help.
    #[error("{message}")]
    Delivery { message: String, permanent: bool },

    /// Another process holds a lock in the lake (an ingest, the same pipeline, the daemon).
    /// External, and retryable: it will be released.
    #[error("lake: {0}")]
    Busy(String),

    /// Something took longer than it may (a pipeline run's `timeout_s`). External.
    #[error("timed out after {seconds} s")]
    Timeout { seconds: f64 },

    /// The Ballista cluster (`engine: ballista`) cannot be reached, cannot see the lake, or lost
    /// a job (an executor that died): names the scheduler URL or the lake path. External, and
    /// retryable: a restarted scheduler or executor can serve the next attempt.
    #[error("{0}")]
    Cluster(String),

    /// The lake holds something flowhealth did not expect (a corrupt ledger entry, say).
    /// Internal.
    #[error("lake: {0}")]
    Lake(String),

    /// A bug, or a library failing at something flowhealth asked of it for itself (drawing the
    /// chart, writing the demo's files, starting the runtime). Internal.
    #[error("{0}")]
    Internal(String),

    /// A local file that cannot be read or written. External.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    /// The lake's or the inbox's store (S3, the local folder). External.
    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),

    /// Internal.
    #[error("parquet: {0}")]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),

    /// Internal.
    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),

    /// DataFusion running flowhealth's own SQL: External when it could not reach the data (the
    /// store, a file), else Internal. A user's SQL that fails is a [`Error::Query`] (see
    /// [`Error::from_user_sql`]).
    #[error("datafusion: {0}")]
    DataFusion(#[from] DataFusionError),

    /// Internal.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),

    /// Internal.
    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),

    /// What failed (a metric, a pipeline step), then why; the domain is the cause's.
    #[error("{context}: {source}")]
    Context { context: String, source: Box<Error> },

    /// Standard output was closed by its reader (`flowhealth query ... | head`): a normal end,
    /// not a failure. `main` exits 0 without a message.
    #[error("standard output closed")]
    OutputClosed,

    /// Several failures of one operation (the metrics of a run, the messages of an outbox),
    /// `; `-separated. User if any is the user's, else Internal if any is internal, else
    /// External; retryable when every one is.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Several(Vec<Error>),

    /// A failure an operation reported and carried on past (a file of an ingest, a metric
    /// skipped because the one it reads failed), with the domain and retry hint of its cause.
    #[error("{message}")]
    Reported {
        message: String,
        domain: Domain,
        retryable: bool,
    },
}

/// `message` followed by each underlying cause of `error` that it does not already say
/// (libraries often repeat a cause in their own message), `: `-separated.
pub fn with_causes(mut message: String, error: &dyn std::error::Error) -> String {
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// This error, saying first what failed (`evidence_rate@2`, `step 1 (sql)`).
    pub fn context(self, context: impl Into<String>) -> Self {
        Error::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }

    /// `message`, with the domain and retry hint of `cause` (which the caller keeps).
    pub fn reported(message: impl Into<String>, cause: &Error) -> Self {
        Error::Reported {
            message: message.into(),
            domain: cause.domain(),
            retryable: cause.retryable(),
        }
    }

    /// A failure of SQL the user wrote (a query, a metric, a pipeline's `sql:` step): the user's
    /// to fix (with `context` in front, e.g. the metric's file), unless it is the data that could
    /// not be reached, which is a run-time failure like any other.
    pub fn from_user_sql(error: DataFusionError, context: Option<&str>) -> Self {
        if reaching_the_data(&error) {
            return Error::DataFusion(error);
        }
        let message = error.strip_backtrace();
        Error::Query(match context {
            Some(context) => format!("{context}: {message}"),
            None => message,
        })
    }

    /// Who can fix this error (see [`Domain`]).
    pub fn domain(&self) -> Domain {
        match self {
            Error::Config(_)
            | Error::InputFile { .. }
            | Error::Usage(_)
            | Error::Query(_)
            | Error::Template(_) => Domain::User,
            Error::Delivery { .. }
            | Error::Cluster(_)
            | Error::Busy(_)
            | Error::Timeout { .. }
            | Error::Io { .. }
            | Error::OutputClosed
            | Error::ObjectStore(_) => Domain::External,
            Error::DataFusion(error) if reaching_the_data(error) => Domain::External,
            Error::Lake(_)
            | Error::Internal(_)
            | Error::Parquet(_)
            | Error::Arrow(_)
            | Error::DataFusion(_)
            | Error::Json(_)
            | Error::Join(_) => Domain::Internal,
            Error::Context { source, .. } => source.domain(),
            Error::Several(errors) => {
                let domains: Vec<Domain> = errors.iter().map(Error::domain).collect();
                [Domain::User, Domain::Internal]
                    .into_iter()
                    .find(|d| domains.contains(d))
                    .unwrap_or(if domains.is_empty() {
                        Domain::Internal
                    } else {
                        Domain::External
                    })
            }
            Error::Reported { domain, .. } => *domain,
        }
    }

    /// Whether trying the same thing again later can succeed: only some external failures (a
    /// network or store error, a server that is down, a lock that another process holds). A
    /// user's error, an internal one, a permanent refusal or a missing file cannot.
    pub fn retryable(&self) -> bool {
        match self {
            Error::Delivery { permanent, .. } => !permanent,
            Error::Busy(_) | Error::Cluster(_) => true,
            Error::Io { source, .. } => io_retryable(source),
            Error::ObjectStore(error) => store_retryable(error),
            Error::DataFusion(error) => match error.find_root() {
                DataFusionError::ObjectStore(error) => store_retryable(error),
                DataFusionError::IoError(error) => io_retryable(error),
                _ => false,
            },
            Error::Context { source, .. } => source.retryable(),
            Error::Several(errors) => !errors.is_empty() && errors.iter().all(Error::retryable),
            Error::Reported { retryable, .. } => *retryable,
            _ => false,
        }
    }

    /// The process exit status this error stands for: 2 for the user's errors (bad input or
    /// configuration), 1 for a failure at run time (`docs/contract.md` section 6).
    pub fn exit_code(&self) -> i32 {
        match self.domain() {
            Domain::User => 2,
            Domain::External | Domain::Internal => 1,
        }
    }
}

/// Writes `text` to standard output (flushed, so a reader sees it at once). A reader that went
/// away (`| head`) is [`Error::OutputClosed`]: the command stops there and exits 0. Every command
/// prints through this (the [`say!`] macro) rather than `print!`, which panics on a closed pipe.
pub fn write_stdout(text: fmt::Arguments) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_fmt(text)
        .and_then(|()| out.flush())
        .map_err(stdout_error)
}

/// A failed write to standard output: [`Error::OutputClosed`] when its reader went away.
pub fn stdout_error(error: std::io::Error) -> Error {
    match error.kind() {
        std::io::ErrorKind::BrokenPipe => Error::OutputClosed,
        _ => Error::io("<stdout>", error),
    }
}

/// `print!` for commands: formats its arguments and writes them with [`write_stdout`], returning
/// its `Result` (so `say!(...)?` stops quietly when the reader is gone).
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::error::write_stdout(format_args!($($arg)*))
    };
}
pub(crate) use say;

/// What a panic said (`panic!("...")` gives a `&str` or a `String`).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

/// A DataFusion error that is about reaching the data (the store, a file), not the SQL.
fn reaching_the_data(error: &DataFusionError) -> bool {
    matches!(
        error.find_root(),
        DataFusionError::ObjectStore(_)
            | DataFusionError::IoError(_)
            | DataFusionError::ParquetError(_)
    )
}

/// A store failure that may pass: the network, the service (object_store has already retried
/// what it retries itself). A missing object, a refused permission or a conflict will not.
fn store_retryable(error: &object_store::Error) -> bool {
    matches!(
        error,
        object_store::Error::Generic { .. } | object_store::Error::JoinError { .. }
    )
}

/// A file-system failure that may pass (an interrupted or timed-out call, a busy resource);
/// a missing file or a refused permission will not.
fn io_retryable(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    !matches!(
        error.kind(),
        NotFound | PermissionDenied | AlreadyExists | InvalidInput | InvalidData | Unsupported
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_domain_sets_the_exit_status_and_only_external_failures_are_retried() {
        let user = Error::Query("no such column".into());
        let down = Error::Delivery {
            message: "smtp 127.0.0.1:25: connection refused".into(),
            permanent: false,
        };
        let refused = Error::Delivery {
            message: "smtp 127.0.0.1:25: 535 authentication failed".into(),
            permanent: true,
        };
        let bug = Error::Internal("trend chart: out of range".into());
        assert_eq!((user.domain(), user.exit_code()), (Domain::User, 2));
        assert_eq!((down.domain(), down.exit_code()), (Domain::External, 1));
        assert_eq!((bug.domain(), bug.exit_code()), (Domain::Internal, 1));
        assert!(!user.retryable() && down.retryable() && !refused.retryable() && !bug.retryable());

        let step = Error::Several(vec![
            down.context("weekly-2026-W13"),
            Error::reported("skipped: depends on x, which failed", &user),
        ])
        .context("step 2 (report)");
        assert_eq!(step.domain(), Domain::User);
        assert!(!step.retryable(), "a retry cannot fix the user's part");
        assert_eq!(
            step.to_string(),
            "step 2 (report): weekly-2026-W13: smtp 127.0.0.1:25: connection refused; \
             skipped: depends on x, which failed"
        );
        let outage = Error::Several(vec![Error::Delivery {
            message: "webhook ops: HTTP 503".into(),
            permanent: false,
        }]);
        assert!(outage.retryable() && outage.domain() == Domain::External);
    }

    #[test]
    fn sql_that_fails_is_the_users_unless_the_data_could_not_be_reached() {
        let plan = DataFusionError::Plan("no field named x".into());
        let error = Error::from_user_sql(plan, Some("queries/m/v1.sql"));
        assert_eq!(error.domain(), Domain::User);
        assert_eq!(
            error.to_string(),
            "queries/m/v1.sql: Error during planning: no field named x"
        );
        let store = DataFusionError::ObjectStore(Box::new(object_store::Error::Generic {
            store: "S3",
            source: "connection reset".into(),
        }));
        let error = Error::from_user_sql(store, None);
        assert_eq!(error.domain(), Domain::External);
        assert!(error.retryable());
    }
}
