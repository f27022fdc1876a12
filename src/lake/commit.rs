//! Committing a set of files to the lake so that no reader, flowhealth or a BI tool listing the
//! folders, sees one of them before the commit, and every reader sees all of them after it.
//!
//! The protocol ([`Transaction`]), one per input file of an ingest and per metric period:
//!
//! 1. **Stage.** Each file is written under `_staging/<transaction>/<its final path>`. Hive-style
//!    readers (DuckDB's `hive_partitioning`, pandas and pyarrow datasets, polars, Spark) skip
//!    folders whose names start with `_` or `.`, and `_staging/` is outside every dataset's
//!    folder, so `raw/actions/**/*.parquet` never matches a staged file either.
//! 2. **Intent.** `_flowhealth/commits/<transaction>.json` lists the moves (staged -> final) and
//!    the ledger entry that commits them (if any).
//! 3. **Commit.** The ledger entry is written (an ingest's `_flowhealth/ingest/ledger/...json`):
//!    one atomic put, the commit point. A transaction without a ledger entry (a metric's output)
//!    commits with the intent itself.
//! 4. **Apply.** Each staged file is moved into place (a rename on a local disk; a server-side
//!    copy and a delete on S3), then the intent is deleted.
//!
//! A process killed before 3 leaves staged files and perhaps an intent, both invisible to
//! readers; the next writer of the same kind rolls them back ([`recover`], under that kind's lock
//! in the lake: `ingest` for an ingest, `metrics` for a metric's output). Killed after 3, the
//! commit stands and its moves are finished by whoever comes next: every reader of flowhealth's
//! own ([`roll_forward`] when a SQL session opens or a report is read) and the next writer. Moves
//! are idempotent (a staged file already gone whose final file exists was moved), so a reader
//! finishing a commit while its writer is still moving is harmless. A reader never rolls back: it
//! cannot tell a writer that died before its commit from one about to commit. Finishing is
//! best-effort for a reader (one with read-only credentials cannot move): what it cannot move
//! stays for the next writer, and the reader reads the committed files in place.
//!
//! During the moves a reader that lists the folders may see some of a commit's files and not yet
//! the others: never a file that is not committed, and, as a transaction only adds files (a
//! replaced file is overwritten by its move), never more rows than the ledger holds. A metric's
//! output and breaches are two moves too: between them such a reader sees the new output beside
//! the old breaches. flowhealth's own readers are such readers for a commit made while they read
//! (they finish pending commits once, when they open): a `metrics run` during an ingest may
//! compute from part of a commit, a known limit the README states.
//!
//! For tests, `FLOWHEALTH_FAILPOINT=<point>[@n][=error|=panic]` stops the process at the n-th
//! (first) time it reaches `<point>`: `commit:staged`, `commit:intent`, `commit:committed`,
//! `commit:moved` (after the first move). It prints `paused at <point>` to standard error and
//! waits to be killed, so a test can `kill -9` it exactly there; with `=error` it fails there
//! instead, as a store that refuses a request would, and with `=panic` it panics there (a bug in
//! a step, which a pipeline run must survive).

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use super::{Lake, STAGING};
use crate::error::{Error, Result};

/// Where intents live, relative to the lake's root.
const INTENTS: [&str; 2] = ["_flowhealth", "commits"];

/// How long a staging folder of another kind of writer (metrics, a single put) may sit without an
/// intent before a recovery takes it for the leftover of a dead process. The writers that use
/// them finish in seconds; an hour leaves a wide margin for a slow store.
const ABANDONED_AFTER: chrono::Duration = chrono::Duration::hours(1);

/// A set of files that appear in the lake together, at one commit.
#[derive(Debug)]
pub struct Transaction {
    lake: Lake,
    id: String,
    /// (staged, final), in the order they were staged.
    moves: Vec<(Path, Path)>,
}

/// What an intent records, lake-relative.
#[derive(Debug, Serialize, Deserialize)]
struct Intent {
    id: String,
    /// The ledger entry whose existence says the transaction committed; `None`: the intent
    /// itself is the commit.
    ledger: Option<String>,
    moves: Vec<Move>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Move {
    from: String,
    to: String,
}

/// A transaction past its commit point: its files are committed, whether or not all of them are
/// in place yet.
#[derive(Debug)]
#[must_use = "a commit whose moves failed still stands: see `pending`"]
pub struct Committed {
    /// Why some of its files are not in place yet (a move failed after the commit point): the
    /// commit stands, and the next reader or writer moves them ([`roll_forward`], [`recover`]).
    /// `None`: every file is in place.
    pub pending: Option<Error>,
}

/// What [`recover`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recovery {
    /// Commits whose moves were finished.
    pub rolled_forward: usize,
    /// Transactions that never committed, whose staged files were removed.
    pub rolled_back: usize,
}

impl Transaction {
    /// Begins a transaction of `kind` (`ingest`, `metrics`, ...: a recovery under the writer's
    /// lock removes what a dead writer of that kind staged at once, see [`recover`]).
    pub fn begin(lake: &Lake, kind: &str) -> Transaction {
        Transaction {
            lake: lake.clone(),
            id: super::staging_id(kind),
            moves: Vec::new(),
        }
    }

    /// Writes `bytes` as a staged file that appears at `to` when the transaction commits.
    pub async fn stage(&mut self, to: Path, bytes: Bytes) -> Result<()> {
        let staged = self.staged_path(&to);
        self.lake.put_direct(&staged, bytes).await?;
        self.moves.push((staged, to));
        Ok(())
    }

    /// The final paths of the files staged so far.
    pub fn staged(&self) -> impl Iterator<Item = &Path> {
        self.moves.iter().map(|(_, to)| to)
    }

    fn staged_path(&self, to: &Path) -> Path {
        let relative = self.lake.relative(to);
        relative
            .split('/')
            .filter(|p| !p.is_empty())
            .fold(self.lake.path(&[STAGING, &self.id]), |path, part| {
                path.join(part)
            })
    }

    /// Commits: the intent, then `ledger` (path and bytes, the commit point; without one the
    /// intent is), then the moves. An error means the commit point was not passed: nothing is
    /// visible, and the next [`recover`] removes the staged files. Past it the transaction is
    /// committed even when a move fails: [`Committed::pending`] says why not every file is in
    /// place yet, and the next reader or writer finishes the moves. A caller that keeps state
    /// (an ingest's keys) must take the files as landed either way.
    pub async fn commit(self, ledger: Option<(Path, Bytes)>) -> Result<Committed> {
        if self.moves.is_empty() {
            if let Some((path, bytes)) = ledger {
                self.lake.put(&path, bytes).await?;
            }
            return Ok(Committed { pending: None });
        }
        failpoint("commit:staged")?;
        let intent = Intent {
            id: self.id.clone(),
            ledger: ledger.as_ref().map(|(path, _)| self.lake.relative(path)),
            moves: self
                .moves
                .iter()
                .map(|(from, to)| Move {
                    from: self.lake.relative(from),
                    to: self.lake.relative(to),
                })
                .collect(),
        };
        let intent_path = intent_path(&self.lake, &self.id);
        self.lake
            .put(
                &intent_path,
                Bytes::from(serde_json::to_vec_pretty(&intent)?),
            )
            .await?;
        failpoint("commit:intent")?;
        if let Some((path, bytes)) = ledger
            && let Err(error) = self.lake.put(&path, bytes).await
        {
            // A put that failed may still have been stored (a timeout after the store took
            // it): then the commit stands, and taking it for not committed would land its rows
            // again.
            if !committed(&self.lake, &intent).await.unwrap_or(false) {
                return Err(error);
            }
        }
        failpoint("commit:committed")?;
        let pending = apply(&self.lake, &intent).await.err();
        Ok(Committed { pending })
    }

    /// Removes what was staged: the transaction never happened.
    pub async fn abort(self) -> Result<()> {
        remove_staging(&self.lake, &self.id).await
    }
}

fn intent_path(lake: &Lake, id: &str) -> Path {
    lake.path(&[INTENTS[0], INTENTS[1], &format!("{id}.json")])
}

/// Moves a committed transaction's files into place, then deletes its intent. Idempotent: what
/// was already moved is passed over.
async fn apply(lake: &Lake, intent: &Intent) -> Result<()> {
    let store = lake.store();
    for (i, step) in intent.moves.iter().enumerate() {
        let (from, to) = (lake.path_of(&step.from), lake.path_of(&step.to));
        match store.rename(&from, &to).await {
            Ok(()) => {}
            Err(object_store::Error::NotFound { .. }) => {
                // Moved already (by this commit's writer or another reader finishing it)?
                if store.head(&to).await.is_err() {
                    return Err(Error::Lake(format!(
                        "commit {}: neither {} nor {} exists; the commit cannot be finished",
                        intent.id, step.from, step.to
                    )));
                }
            }
            Err(e) => return Err(e.into()),
        }
        if i == 0 {
            failpoint("commit:moved")?;
        }
    }
    remove_staging(lake, &intent.id).await?;
    lake.delete(&intent_path(lake, &intent.id)).await
}

/// Deletes the staging folder of transaction `id` (what is left in it). Another process
/// finishing the same commit may be removing it at the same time: what is gone is gone.
async fn remove_staging(lake: &Lake, id: &str) -> Result<()> {
    let objects = match lake.list(&[STAGING, id]).await {
        Ok(objects) => objects,
        Err(Error::ObjectStore(object_store::Error::NotFound { .. })) => Vec::new(),
        Err(e) => return Err(e),
    };
    for object in objects {
        lake.delete(&object.location).await?;
    }
    // A local store keeps the emptied folders: remove them, so `_staging/` does not fill up.
    if let Some(dir) = lake.local_path(&lake.path(&[STAGING, id])) {
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::io(&dir, e));
            }
            _ => {}
        }
    }
    Ok(())
}

/// The intents in the lake, oldest first.
async fn intents(lake: &Lake) -> Result<Vec<Intent>> {
    let mut intents = Vec::new();
    for object in lake.list(&INTENTS).await? {
        if !object.location.as_ref().ends_with(".json") {
            continue;
        }
        let Some(bytes) = lake.get(&object.location).await? else {
            continue; // finished meanwhile
        };
        let intent: Intent = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Lake(format!(
                "{}: corrupt commit intent ({e}); delete it and its _staging/ folder",
                lake.relative(&object.location)
            ))
        })?;
        intents.push(intent);
    }
    Ok(intents)
}

/// Whether `intent` committed: its ledger entry exists (or it has none: the intent is the commit).
async fn committed(lake: &Lake, intent: &Intent) -> Result<bool> {
    match &intent.ledger {
        None => Ok(true),
        Some(ledger) => match lake.store().head(&lake.path_of(ledger)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        },
    }
}

/// Finishes every commit whose moves did not finish (its writer stopped after the commit point,
/// or is still moving). Safe for any reader at any time: it never removes what may still commit.
/// Best-effort: a reader must not fail because it cannot write (read-only credentials, a store
/// that refuses a move), so what it cannot finish is logged and left for the next writer, and
/// the reader reads the committed files that are in place. Returns how many commits it
/// finished; usually none, for the price of one listing.
pub async fn roll_forward(lake: &Lake) -> usize {
    let intents = match intents(lake).await {
        Ok(intents) => intents,
        Err(error) => {
            tracing::info!(%error, "Cannot list the pending commits; reading the files in place.");
            return 0;
        }
    };
    let mut finished = 0;
    for intent in intents {
        let done = async {
            if !committed(lake, &intent).await? {
                return Ok(false);
            }
            tracing::info!(commit = %intent.id, files = intent.moves.len(), "Finishing a commit (its writer stopped, or is still moving its files).");
            apply(lake, &intent).await.map(|()| true)
        };
        match done.await {
            Ok(finished_it) => finished += usize::from(finished_it),
            Err(error) => {
                tracing::info!(commit = %intent.id, %error, "A commit is pending: its files not yet in place are not read until a writer finishes it.");
            }
        }
    }
    finished
}

/// Rolls every transaction forward or back: a committed one's moves are finished; one that did
/// not commit is removed, staged files and intent. Only a writer holding the lock of `kind` may
/// call this, so that no live writer of that kind is between staging and its commit: staging
/// folders of `kind` without a committed intent are removed at once, those of short-lived
/// writers of other kinds (a metric's output, a single put) after an hour. An ingest's are left
/// to an ingest: one transaction lasts as long as its input file takes to read, hours for a
/// large one.
pub async fn recover(lake: &Lake, kind: &str) -> Result<Recovery> {
    let mut recovery = Recovery::default();
    let mut known = std::collections::HashSet::new();
    for intent in intents(lake).await? {
        known.insert(intent.id.clone());
        if committed(lake, &intent).await? {
            apply(lake, &intent).await?;
            recovery.rolled_forward += 1;
        } else if intent.id.starts_with(&format!("{kind}-")) {
            tracing::warn!(commit = %intent.id, "Removing the staged files of a transaction that never committed.");
            remove_staging(lake, &intent.id).await?;
            lake.delete(&intent_path(lake, &intent.id)).await?;
            recovery.rolled_back += 1;
        }
    }
    // Staging folders without an intent: writers that died while staging.
    for id in staging_folders(lake).await? {
        if known.contains(&id) {
            continue;
        }
        let ours = id.starts_with(&format!("{kind}-"));
        if ours || (abandoned(&id) && !id.starts_with("ingest-")) {
            tracing::warn!(transaction = %id, "Removing the staged files of a writer that stopped before its commit.");
            remove_staging(lake, &id).await?;
            recovery.rolled_back += usize::from(ours);
        }
    }
    Ok(recovery)
}

/// The transaction ids that have a folder under `_staging/`.
async fn staging_folders(lake: &Lake) -> Result<Vec<String>> {
    let prefix = lake.path(&[STAGING]);
    let listed = lake.store().list_with_delimiter(Some(&prefix)).await?;
    let mut ids: Vec<String> = listed
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(String::from))
        .collect();
    // A local store lists folders that hold no file too (emptied by the moves).
    if let Some(dir) = lake.local_path(&prefix) {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                ids.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Whether a staging folder's id says it is older than [`ABANDONED_AFTER`]; an id that does not
/// parse is not flowhealth's and is left alone.
fn abandoned(id: &str) -> bool {
    let mut parts = id.rsplitn(3, '-');
    let (_, Some(time)) = (parts.next(), parts.next()) else {
        return false;
    };
    chrono::NaiveDateTime::parse_from_str(time, "%Y%m%dT%H%M%S")
        .map(|t| chrono::Utc::now().naive_utc() - t > ABANDONED_AFTER)
        .unwrap_or(false)
}

/// Stops here, or fails here, for a test (see the module documentation).
fn failpoint(point: &str) -> Result<()> {
    static SEEN: AtomicUsize = AtomicUsize::new(0);
    let Ok(wanted) = std::env::var("FLOWHEALTH_FAILPOINT") else {
        return Ok(());
    };
    let (wanted, fail) = match wanted.strip_suffix("=error") {
        Some(wanted) => (wanted, true),
        None => (wanted.as_str(), false),
    };
    let (wanted, panics) = match wanted.strip_suffix("=panic") {
        Some(wanted) => (wanted, true),
        None => (wanted, false),
    };
    let (name, nth) = match wanted.split_once('@') {
        Some((name, n)) => (name, n.parse::<usize>().unwrap_or(1)),
        None => (wanted, 1),
    };
    if name != point || SEEN.fetch_add(1, Ordering::SeqCst) + 1 != nth {
        return Ok(());
    }
    if fail {
        return Err(Error::ObjectStore(object_store::Error::Generic {
            store: "failpoint",
            source: format!("FLOWHEALTH_FAILPOINT: failing at {point}").into(),
        }));
    }
    if panics {
        panic!("failpoint {point}");
    }
    eprintln!("paused at {point}");
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_tells_its_age() {
        let id = super::super::staging_id("metrics");
        assert!(id.starts_with("metrics-"), "{id}");
        assert!(!abandoned(&id));
        assert!(abandoned("metrics-20200101T000000-0000abcd"));
        assert!(abandoned("put-20200101T000000-0000abcd"));
        assert!(!abandoned("something-else"));
    }
}
