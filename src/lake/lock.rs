//! A lock object in the lake, so two processes never work on the same part of it at once.
//!
//! Taken with a create-only put (`PutMode::Create`), so of two racing processes one wins. A lock
//! left by a process that died on this host is taken over (its pid is gone); one held from another
//! host is reported with how to remove it by hand.

use bytes::Bytes;
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use super::Lake;
use crate::error::{Error, Result};

#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    host: String,
    pid: u32,
    since: String,
}

/// A held lock; release it with [`LakeLock::release`] (a crashed holder is detected by pid).
#[derive(Debug)]
pub struct LakeLock {
    lake: Lake,
    path: Path,
}

impl LakeLock {
    /// Takes the lock `name` (e.g. `ingest`) or fails saying who holds it.
    pub async fn acquire(lake: &Lake, name: &str) -> Result<LakeLock> {
        let path = lock_path(lake, name);
        let me = Holder {
            host: host(),
            pid: std::process::id(),
            since: chrono::Utc::now().to_rfc3339(),
        };
        let body = Bytes::from(serde_json::to_vec(&me)?);
        for _ in 0..2 {
            let options = PutOptions {
                mode: PutMode::Create,
                ..Default::default()
            };
            match lake
                .store()
                .put_opts(&path, PutPayload::from(body.clone()), options)
                .await
            {
                Ok(_) => {
                    return Ok(LakeLock {
                        lake: lake.clone(),
                        path,
                    });
                }
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => {
                    let holder: Option<Holder> = lake
                        .get(&path)
                        .await?
                        .and_then(|bytes| serde_json::from_slice(&bytes).ok());
                    match holder {
                        Some(h) if h.host == me.host && !process_alive(h.pid) => {
                            tracing::warn!(lock = name, pid = h.pid, since = %h.since, "Taking over a lock left by a process that is gone.");
                            lake.delete(&path).await?;
                        }
                        Some(h) => {
                            return Err(Error::Busy(format!(
                                "{name} is already running (host {}, pid {}, since {}); if that process is gone, delete {}/{}",
                                h.host,
                                h.pid,
                                h.since,
                                lake.display(),
                                lake.relative(&path)
                            )));
                        }
                        // Unreadable or vanished between the put and the get: try once more.
                        None => lake.delete(&path).await?,
                    }
                }
                // Stores without conditional puts: check, then write (not race-free, but the
                // best such a store offers).
                Err(object_store::Error::NotImplemented { .. }) => {
                    if lake.get(&path).await?.is_some() {
                        return Err(Error::Busy(format!(
                            "{name} is already running; if not, delete {}/{}",
                            lake.display(),
                            lake.relative(&path)
                        )));
                    }
                    lake.put(&path, body.clone()).await?;
                    return Ok(LakeLock {
                        lake: lake.clone(),
                        path,
                    });
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Busy(format!(
            "could not take the {name} lock at {}",
            lake.relative(&path)
        )))
    }

    pub async fn release(self) -> Result<()> {
        self.lake.delete(&self.path).await
    }

    /// Removes the lock `name` held by this process through a task that was stopped.
    pub async fn force_release(lake: &Lake, name: &str) -> Result<()> {
        lake.delete(&lock_path(lake, name)).await
    }
}

fn lock_path(lake: &Lake, name: &str) -> Path {
    lake.path(&["_flowhealth", "locks", &format!("{name}.json")])
}

fn host() -> String {
    hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}
