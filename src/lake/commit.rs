//! Committing a set of files to the lake so that no reader, flowhealth or a BI tool listing the
//! folders, sees one of them before the commit, and every reader sees all of them after it.
//!
//! The protocol ([`Transaction`]), one per input file of an ingest, per metric period, per
//! compaction:
//!
//! 1. **Stage.** Each file is written under `_staging/<transaction>/<its final path>`. Hive-style
//!    readers (DuckDB's `hive_partitioning`, pandas and pyarrow datasets, polars, Spark) skip
//!    folders whose names start with `_` or `.`, and `_staging/` is outside every dataset's
//!    folder, so `raw/actions/**/*.parquet` never matches a staged file either.
//! 2. **Intent.** `_flowhealth/commits/<transaction>.json` lists the moves (staged -> final), the
//!    files to remove, and the ledger entry that commits them (if any).
//! 3. **Commit.** The ledger entry is written (an ingest's `_flowhealth/ingest/ledger/...json`):
//!    one atomic put, the commit point. A transaction without a ledger entry (a metric's output)
//!    commits with the intent itself.
//! 4. **Apply.** Each staged file is moved into place (a rename on a local disk; a server-side
//!    copy and a delete on S3), then the files to remove are deleted, then the intent.
//!
//! A process killed before 3 leaves staged files and perhaps an intent, both invisible to
//! readers; the writer's next run rolls them back ([`recover`], under the writer's lock). Killed
//! after 3, the commit stands and its moves are finished by whoever comes next: every reader of
//! flowhealth's own ([`roll_forward`] when a SQL session opens or a report is read) and the next
//! writer. Moves are idempotent (a staged file already gone whose final file exists was moved),
//! so a reader finishing a commit while its writer is still moving is harmless. A reader never
//! rolls back: it cannot tell a writer that died before its commit from one about to commit.
//!
//! During the moves a reader that lists the folders may see some of a commit's files and not yet
//! the others: never a file that is not committed, never more rows than the ledger holds.
//!
//! For tests, `FLOWHEALTH_FAILPOINT=<point>[@n]` stops the process at the n-th (first) time it
//! reaches `<point>`: `commit:staged`, `commit:intent`, `commit:committed`, `commit:moved` (after
//! the first move). It prints `paused at <point>` to standard error and waits to be killed, so a
//! test can `kill -9` it exactly there. `<point>[@n]=panic` panics there instead (a bug in a
//! step, which a pipeline run must survive).

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};

use super::Lake;
use crate::error::{Error, Result};

pub use super::STAGING;

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
    removes: Vec<Path>,
}

/// What an intent records, lake-relative.
#[derive(Debug, Serialize, Deserialize)]
struct Intent {
    id: String,
    /// The ledger entry whose existence says the transaction committed; `None`: the intent
    /// itself is the commit.
    ledger: Option<String>,
    moves: Vec<Move>,
    #[serde(default)]
    removes: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Move {
    from: String,
    to: String,
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
    /// lock removes what a dead writer of that kind staged at once, others' after an hour).
    pub fn begin(lake: &Lake, kind: &str) -> Transaction {
        Transaction {
            lake: lake.clone(),
            id: super::staging_id(kind),
            moves: Vec::new(),
            removes: Vec::new(),
        }
    }

    /// The transaction's id: `<kind>-<UTC time>-<8 hex digits>`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Writes `bytes` as a staged file that appears at `to` when the transaction commits.
    pub async fn stage(&mut self, to: Path, bytes: Bytes) -> Result<()> {
        let staged = self.staged_path(&to);
        self.lake.put_direct(&staged, bytes).await?;
        self.moves.push((staged, to));
        Ok(())
    }

    /// Deletes `path` when the transaction commits (a file a compaction or a rewrite replaces).
    pub fn remove_on_commit(&mut self, path: Path) {
        self.removes.push(path);
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
    /// intent is), then the moves. Returns once every file is in place. An error before the
    /// commit point leaves nothing visible (the next [`recover`] removes the staged files); one
    /// after it leaves a commit that the next reader or writer finishes.
    pub async fn commit(self, ledger: Option<(Path, Bytes)>) -> Result<()> {
        if self.moves.is_empty() && self.removes.is_empty() {
            if let Some((path, bytes)) = ledger {
                self.lake.put(&path, bytes).await?;
            }
            return Ok(());
        }
        failpoint("commit:staged");
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
            removes: self.removes.iter().map(|p| self.lake.relative(p)).collect(),
        };
        let intent_path = intent_path(&self.lake, &self.id);
        self.lake
            .put(
                &intent_path,
                Bytes::from(serde_json::to_vec_pretty(&intent)?),
            )
            .await?;
        failpoint("commit:intent");
        if let Some((path, bytes)) = ledger {
            self.lake.put(&path, bytes).await?;
        }
        failpoint("commit:committed");
        apply(&self.lake, &intent).await
    }

    /// Removes what was staged: the transaction never happened.
    pub async fn abort(self) -> Result<()> {
        remove_staging(&self.lake, &self.id).await
    }
}

fn intent_path(lake: &Lake, id: &str) -> Path {
    lake.path(&[INTENTS[0], INTENTS[1], &format!("{id}.json")])
}

/// Moves a committed transaction's files into place, deletes what it removes, then its intent.
/// Idempotent: what was already moved is passed over.
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
            failpoint("commit:moved");
        }
    }
    for remove in &intent.removes {
        lake.delete(&lake.path_of(remove)).await?;
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

/// Finishes every commit whose moves did not finish (its writer was killed after the commit
/// point). Safe for any reader at any time: it never removes what may still commit. Returns how
/// many commits it finished; usually none, for the price of one listing.
pub async fn roll_forward(lake: &Lake) -> Result<usize> {
    let mut finished = 0;
    for intent in intents(lake).await? {
        if committed(lake, &intent).await? {
            tracing::warn!(commit = %intent.id, files = intent.moves.len(), "Finishing a commit whose writer stopped before its files were in place.");
            apply(lake, &intent).await?;
            finished += 1;
        }
    }
    Ok(finished)
}

/// Rolls every transaction forward or back: a committed one's moves are finished; one that did
/// not commit is removed, staged files and intent. Only a writer holding the lock of `kind` may
/// call this, so that no live writer of that kind is between staging and its commit: staging
/// folders of `kind` without a committed intent are removed at once, those of other kinds after
/// an hour.
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
        if ours || abandoned(&id) {
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

/// Stops here for a test that kills the process at `point` (see the module documentation).
pub fn failpoint(point: &str) {
    static SEEN: AtomicUsize = AtomicUsize::new(0);
    let Ok(wanted) = std::env::var("FLOWHEALTH_FAILPOINT") else {
        return;
    };
    let (wanted, panics) = match wanted.strip_suffix("=panic") {
        Some(wanted) => (wanted.to_string(), true),
        None => (wanted, false),
    };
    let (name, nth) = match wanted.split_once('@') {
        Some((name, n)) => (name.to_string(), n.parse::<usize>().unwrap_or(1)),
        None => (wanted.clone(), 1),
    };
    if name != point {
        return;
    }
    if SEEN.fetch_add(1, Ordering::SeqCst) + 1 != nth {
        return;
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
