//! Parquet files in the lake that cannot be read (a truncated copy, a disk that filled up, a file
//! someone else wrote), found by reading each file's footer. A query or a metric that fails on
//! one names it, with what to do: `flowhealth doctor` lists them and `flowhealth repair` sets
//! them aside (`crate::ingest::repair`).

use datafusion::error::DataFusionError;

use super::Lake;
use crate::error::{Error, Result};

/// The areas flowhealth writes Parquet to, lake-relative. `quarantine/_corrupt/` (where
/// `repair` puts unreadable files) is not checked.
pub const AREAS: [&[&str]; 7] = [
    &["raw"],
    &["quarantine"],
    &["metrics"],
    &["breaches"],
    &["runs"],
    &["exports"],
    &["_flowhealth", "snapshots"],
];

/// Where `repair` sets an unreadable file aside: `quarantine/_corrupt/<its path>`.
pub const SET_ASIDE: [&str; 2] = ["quarantine", "_corrupt"];

/// One file that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// Lake-relative path, e.g. `raw/actions/dt=2026-03-24/0a1b...-00001.parquet`.
    pub file: String,
    pub why: String,
}

/// Every Parquet file of the lake whose footer cannot be read, in path order.
pub async fn unreadable(lake: &Lake) -> Result<Vec<Unreadable>> {
    let mut found = Vec::new();
    let aside = SET_ASIDE.join("/");
    for area in AREAS {
        for object in lake.list(area).await? {
            let file = lake.relative(&object.location);
            if !file.ends_with(".parquet") || file.starts_with(&aside) {
                continue;
            }
            if let Err(e) = lake.parquet_schema(&object.location).await {
                found.push(Unreadable {
                    file,
                    why: e.to_string(),
                });
            }
        }
    }
    Ok(found)
}

/// Whether `error` is a Parquet file that could not be decoded (as opposed to bad SQL or an
/// unreachable store).
pub fn is_unreadable_file(error: &Error) -> bool {
    match error {
        Error::Parquet(_) => true,
        Error::DataFusion(e) => {
            matches!(e.find_root(), DataFusionError::ParquetError(_))
                || e.to_string().contains("Parquet error")
        }
        Error::Context { source, .. } => is_unreadable_file(source),
        Error::Several(errors) => errors.iter().any(is_unreadable_file),
        _ => false,
    }
}

/// `error`, naming the unreadable files of the lake and what to do, when it is an unreadable
/// Parquet file (see [`is_unreadable_file`]); otherwise `error` as it is.
pub async fn name_unreadable(lake: &Lake, error: Error) -> Error {
    if !is_unreadable_file(&error) {
        return error;
    }
    match unreadable(lake).await {
        Ok(found) if !found.is_empty() => named(error, &found),
        _ => error,
    }
}

/// `error` with the unreadable files listed and the way out.
pub fn named(error: Error, found: &[Unreadable]) -> Error {
    let files: Vec<String> = found
        .iter()
        .map(|u| format!("{} ({})", u.file, u.why))
        .collect();
    Error::Lake(format!(
        "{error}: the lake holds {} Parquet file(s) that cannot be read: {}; run `flowhealth doctor` to see \
         them and what `flowhealth repair` will do (set them aside in quarantine/_corrupt/ and land their \
         inbox files again, or say what recomputes them)",
        found.len(),
        files.join(", ")
    ))
}
