//! The SQL on an Apache Ballista cluster (`engine.kind: ballista`).
//!
//! Three kinds of process, all this binary: the client (any command that runs SQL, through
//! [`client::open`]), `flowhealth scheduler` ([`scheduler`]) and `flowhealth executor`
//! ([`executor`]). The client plans each query, the scheduler lists the lake's files and splits
//! the plan into stages, the executors read the lake and compute. So every process must see the
//! lake at the same URL: one file system mounted at the same path everywhere, or S3. The
//! scheduler and executors read only the `lake:` section of their config (their S3 secrets stay
//! with them); everything else a query needs travels in its plan: the functions with their
//! configuration ([`codec`]), the config tables as views, computed tables as Parquet files in the
//! lake ([`Scratch`]).
//!
//! A process that does not see the lake must fail loudly, not answer from an empty listing
//! (apache/datafusion-ballista#353): the scheduler and the executors list the lake when they
//! start ([`check_lake`]), and every client session reads a file it just wrote through the
//! cluster before it runs anything ([`client::open`]).

pub mod client;
pub mod codec;
pub mod executor;
pub mod scheduler;

use std::collections::BTreeMap;

use chrono::Utc;
use object_store::path::Path;

use crate::error::{Error, Result};
use crate::lake::Lake;

/// Where a client session keeps the tables it computes (a metric's carried state, the
/// opportunity snapshot), so the cluster can read them: `_flowhealth/scratch/<session>/` in the
/// lake, removed when the session ends.
pub struct Scratch {
    id: String,
}

/// How old a scratch folder must be before a later session removes it (its session died).
const ABANDONED_AFTER: chrono::Duration = chrono::Duration::hours(24);

impl Scratch {
    pub fn new() -> Scratch {
        Scratch {
            id: format!(
                "{}-{:08x}",
                Utc::now().format("%Y%m%dT%H%M%SZ"),
                rand::random::<u32>()
            ),
        }
    }

    /// The path of `file` in this session's folder.
    pub fn path(&self, lake: &Lake, file: &str) -> Path {
        lake.path(&["_flowhealth", "scratch", &self.id, file])
    }

    /// Removes this session's folder.
    pub async fn remove(&self, lake: &Lake) -> Result<()> {
        remove_folder(lake, &self.id).await
    }

    /// Removes the folders of sessions that ended without removing theirs (a killed process).
    pub async fn sweep(lake: &Lake) -> Result<()> {
        let mut newest: BTreeMap<String, chrono::DateTime<Utc>> = BTreeMap::new();
        for object in lake.list(&["_flowhealth", "scratch"]).await? {
            let relative = lake.relative(&object.location);
            if let Some(id) = relative.split('/').nth(2) {
                let entry = newest.entry(id.to_string()).or_insert(object.last_modified);
                *entry = (*entry).max(object.last_modified);
            }
        }
        for (id, modified) in newest {
            if Utc::now() - modified > ABANDONED_AFTER {
                tracing::info!(scratch = %id, "Removing the scratch folder of a session that ended without removing it.");
                remove_folder(lake, &id).await?;
            }
        }
        Ok(())
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

async fn remove_folder(lake: &Lake, id: &str) -> Result<()> {
    let parts = ["_flowhealth", "scratch", id];
    for object in lake.list(&parts).await? {
        lake.delete(&object.location).await?;
    }
    // A local store leaves the emptied folder behind.
    if let Some(folder) = lake.local_path(&lake.path(&parts))
        && folder.exists()
    {
        std::fs::remove_dir_all(&folder).map_err(|e| Error::io(&folder, e))?;
    }
    Ok(())
}

/// The start-up check of a scheduler or an executor (`role`): the lake's top level must list.
/// A missing mount, a wrong bucket or bad credentials fail here, naming the lake, instead of
/// giving empty results later. An empty lake only warns: a new deployment starts with one.
pub async fn check_lake(lake: &Lake, role: &str) -> Result<()> {
    let listing = lake
        .store()
        .list_with_delimiter(Some(&lake.path(&[])))
        .await
        .map_err(|e| {
            Error::Cluster(crate::error::with_causes(
                format!("{role}: cannot list the lake at {}: {e}", lake.display()),
                &e,
            ))
        })?;
    let entries = listing.objects.len() + listing.common_prefixes.len();
    if entries == 0 {
        tracing::warn!(
            lake = %lake.display(),
            "{role}: the lake is empty. If it should hold data, this machine does not see it: \
             mount it at the same path as the other processes, or use S3."
        );
    } else {
        tracing::info!(lake = %lake.display(), entries, "{role}: the lake is visible.");
    }
    Ok(())
}

/// Waits for SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
