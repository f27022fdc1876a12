//! One error type for the crate. Variants are by area; each message is lowercase, names the file,
//! dataset or key involved, and for a user error says what to change.

use std::path::PathBuf;

/// `Result` with the crate's [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is wrong: every problem found, each naming its file and key.
    #[error("{} problem(s) in the configuration:\n{}", .0.len(), .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Config(Vec<String>),

    /// An input file cannot be ingested as a whole (its rows would be quarantined otherwise).
    #[error("{file}: {reason}")]
    InputFile { file: String, reason: String },

    /// Something the user asked for does not exist or does not fit (a dataset name, a flag value).
    #[error("{0}")]
    Usage(String),

    /// A query that does not parse or plan, with the hint a user needs.
    #[error("{0}")]
    Query(String),

    /// A report or alert template that does not parse or render: names the template and line.
    #[error("{0}")]
    Template(String),

    /// A report or alert could not be delivered (it is kept for a retry).
    #[error("{0}")]
    Delivery(String),

    /// The lake holds something flowhealth did not expect (a corrupt ledger entry, say).
    #[error("lake: {0}")]
    Lake(String),

    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),

    #[error("parquet: {0}")]
    Parquet(#[from] datafusion::parquet::errors::ParquetError),

    #[error("arrow: {0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),

    #[error("datafusion: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),

    #[error("json: {0}")]
    Json(#[from] serde_json::Error),

    #[error("background task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
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

    /// The process exit status this error stands for: 2 for bad input or configuration, 1 for a
    /// failure at run time (contract section 6).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_)
            | Error::InputFile { .. }
            | Error::Usage(_)
            | Error::Query(_)
            | Error::Template(_) => 2,
            _ => 1,
        }
    }
}
