//! A lock in the lake, so two processes never work on the same part of it at once, and a guard
//! tied to the run that took it.
//!
//! **In the lake** a lock is a folder of generations, `_flowhealth/locks/<name>/<gen>.json`, each
//! naming its holder (host, pid, since, and the process's identity: the boot and its start time,
//! so that a pid reused by another process does not keep a dead holder's lock). The lock is held
//! while a generation's holder is alive; a generation whose holder is gone is stale: a process
//! that died on this host, or this very process when no run in it holds the lock any more (a run
//! stopped before it could release).
//! Taking the lock, when every generation there is stale (or there is none), is creating the
//! generation after the highest with a create-only put (`PutMode::Create`: a hard link on the
//! local store, `If-None-Match: *` on S3): of any number of processes racing over the same stale
//! lock, exactly one creates it and the others then find it held. The creator then lists the
//! folder again and backs off if another live generation is there (a contender that created a
//! different number meanwhile), so two holders never both keep the lock. Releasing deletes the
//! holder's generation; stale ones are deleted by whoever takes the lock next. A lock held from
//! another host is reported with how to remove it by hand.
//!
//! **In the process** the lock is also an async mutex per lock: two runs of one daemon that need
//! the same lock (the shipped `ingest_actions` and `weekly_health`, every Monday at 08:00) wait
//! for each other instead of failing; the wait is bounded by the waiting run's `timeout_s`, and
//! [`scoped`] tells the run what it waited for, for its ledger.
//!
//! **The guard**: [`LakeLock`] is released by [`LakeLock::release`], or when it is dropped (a
//! run that timed out, was aborted or panicked): the drop writes the release in the background
//! and [`finish_releases`] waits for those writes, so a run's end, or the process's, leaves no
//! lock behind.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Instant;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};
use tokio::sync::OwnedMutexGuard;

use super::Lake;
use crate::error::{Error, Result};

/// Who holds (or held) one generation of a lock.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Holder {
    host: String,
    pid: u32,
    since: String,
    /// What holds it: a pipeline run, or the command.
    #[serde(default)]
    by: String,
    /// `<boot id>/<start time>` of the holding process (Linux), to tell it from a later process
    /// with the same pid; absent where the system does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    process: Option<String>,
}

/// A held lock. Release it with [`LakeLock::release`]; dropped without it (a timeout, an abort,
/// a panic), it is released in the background (see [`finish_releases`]).
#[derive(Debug)]
pub struct LakeLock {
    lake: Lake,
    name: String,
    /// This holder's generation.
    path: Path,
    key: String,
    /// The in-process side: held as long as the lake's side is.
    local: Option<OwnedMutexGuard<()>>,
}

/// A lock's in-process mutex and who in the process holds it.
type LocalHold = (Arc<tokio::sync::Mutex<()>>, String);

/// The in-process mutex of each lock (by lake and name), and who in the process holds it.
static LOCAL: LazyLock<Mutex<HashMap<String, LocalHold>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Releases started by dropped guards, for [`finish_releases`].
static RELEASES: LazyLock<Mutex<Vec<tokio::task::JoinHandle<()>>>> =
    LazyLock::new(|| Mutex::new(Vec::new()));

/// Generations tried before giving up when other processes keep winning the race.
const ROUNDS: usize = 8;

tokio::task_local! {
    static RUN: Arc<RunScope>;
}

/// What a run (see [`scoped`]) is, and what it waited for.
#[derive(Debug, Default)]
pub struct RunScope {
    /// How other runs see this one (`pipeline weekly_health, run 20260330T...`).
    pub label: String,
    waits: Mutex<Vec<String>>,
    /// The lock this run is waiting for now, and for whom.
    waiting: Mutex<Option<String>>,
}

impl RunScope {
    /// What the run waited for: `waited 2.1 s for the ingest lock (held by ...)`.
    pub fn waits(&self) -> Vec<String> {
        self.waits.lock().map(|w| w.clone()).unwrap_or_default()
    }

    /// The lock the run is waiting for at this moment, if any.
    pub fn waiting(&self) -> Option<String> {
        self.waiting.lock().ok().and_then(|w| w.clone())
    }
}

/// Runs `future` as the run `label`: the locks it takes say so to other runs of the process,
/// and the returned scope lists what it waited for (also after a timeout drops `future`).
pub fn scoped<F: Future>(
    label: String,
    future: F,
) -> (Arc<RunScope>, impl Future<Output = F::Output>) {
    let scope = Arc::new(RunScope {
        label,
        ..RunScope::default()
    });
    (scope.clone(), RUN.scope(scope, future))
}

fn current_label() -> String {
    RUN.try_with(|s| s.label.clone())
        .unwrap_or_else(|_| "a command".into())
}

impl LakeLock {
    /// Takes the lock `name` (e.g. `ingest`): waits while another run of this process holds it,
    /// and fails saying who holds it when another process does.
    pub async fn acquire(lake: &Lake, name: &str) -> Result<LakeLock> {
        let key = format!("{}|{name}", lake.display());
        let me = current_label();
        let local = wait_in_process(&key, name, &me).await;
        let me = Holder {
            host: host(),
            pid: std::process::id(),
            since: chrono::Utc::now().to_rfc3339(),
            by: me,
            process: process_identity(std::process::id()),
        };
        let path = take(lake, name, &me).await?;
        Ok(LakeLock {
            lake: lake.clone(),
            name: name.to_string(),
            path,
            key,
            local: Some(local),
        })
    }

    /// Lets go of the lock: its generation is deleted.
    pub async fn release(mut self) -> Result<()> {
        let local = self.local.take();
        let result = self.lake.delete(&self.path).await;
        forget_holder(&self.key);
        drop(local);
        result
    }
}

impl Drop for LakeLock {
    fn drop(&mut self) {
        let Some(local) = self.local.take() else {
            return; // released
        };
        tracing::warn!(lock = %self.name, "A run let go of a lock without releasing it (timeout, abort or panic): releasing it.");
        forget_holder(&self.key);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return; // no runtime: the next taker finds this process's lock stale
        };
        let (lake, path) = (self.lake.clone(), self.path.clone());
        // The in-process side is held until the lake's side is gone, so a run of this process
        // waiting for it finds the lock free.
        let handle = runtime.spawn(async move {
            if let Err(error) = lake.delete(&path).await {
                tracing::error!(%error, lock = %lake.relative(&path), "Could not release a lock; the next run takes it over.");
            }
            drop(local);
        });
        if let Ok(mut releases) = RELEASES.lock() {
            releases.push(handle);
        }
    }
}

/// Waits until every release started by a dropped [`LakeLock`] is written. Runs call it after a
/// timeout or an abort, the commands before the process exits.
pub async fn finish_releases() {
    loop {
        let pending: Vec<_> = match RELEASES.lock() {
            Ok(mut releases) => releases.drain(..).collect(),
            Err(_) => return,
        };
        if pending.is_empty() {
            return;
        }
        for handle in pending {
            let _ = handle.await;
        }
    }
}

/// The in-process side of lock `key`, waiting while another run of this process holds it.
async fn wait_in_process(key: &str, name: &str, me: &str) -> OwnedMutexGuard<()> {
    let mutex = {
        let mut locks = LOCAL.lock().unwrap_or_else(|e| e.into_inner());
        locks
            .entry(key.to_string())
            .or_insert_with(|| (Arc::new(tokio::sync::Mutex::new(())), String::new()))
            .0
            .clone()
    };
    let guard = match mutex.clone().try_lock_owned() {
        Ok(guard) => guard,
        Err(_) => {
            let holder = holder_in_process(key);
            let what = format!("the {name} lock (held by {holder})");
            tracing::info!(lock = name, %holder, "Waiting for a lock another run of this process holds.");
            let started = Instant::now();
            let _ = RUN.try_with(|s| {
                if let Ok(mut waiting) = s.waiting.lock() {
                    *waiting = Some(what.clone());
                }
            });
            let guard = mutex.lock_owned().await;
            let waited = format!("waited {:.1} s for {what}", started.elapsed().as_secs_f64());
            let _ = RUN.try_with(|s| {
                if let Ok(mut w) = s.waiting.lock() {
                    *w = None;
                }
                if let Ok(mut waits) = s.waits.lock() {
                    waits.push(waited.clone());
                }
            });
            guard
        }
    };
    if let Ok(mut locks) = LOCAL.lock()
        && let Some(entry) = locks.get_mut(key)
    {
        entry.1 = me.to_string();
    }
    guard
}

fn holder_in_process(key: &str) -> String {
    LOCAL
        .lock()
        .ok()
        .and_then(|locks| locks.get(key).map(|(_, holder)| holder.clone()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "another run of this process".into())
}

fn forget_holder(key: &str) {
    if let Ok(mut locks) = LOCAL.lock()
        && let Some(entry) = locks.get_mut(key)
    {
        entry.1.clear();
    }
}

/// Takes lock `name` in the lake as `me`; returns the generation taken.
async fn take(lake: &Lake, name: &str, me: &Holder) -> Result<Path> {
    let body = Bytes::from(serde_json::to_vec(me)?);
    for _ in 0..ROUNDS {
        let generations = read_generations(lake, name).await?;
        if let Some((path, holder)) = generations.iter().find(|(_, h)| stale(h, me).is_none()) {
            return Err(busy(lake, name, path, holder));
        }
        for (_, holder) in &generations {
            let why = stale(holder, me).unwrap_or_default();
            tracing::warn!(lock = name, pid = holder.pid, since = %holder.since, why, "Taking over a lock left by a run that is gone.");
        }
        let next = generations
            .iter()
            .filter_map(|(path, _)| generation_of(path))
            .max()
            .map_or(1, |g| g + 1);
        let path = generation_path(lake, name, next);
        let options = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match lake
            .store()
            .put_opts(&path, PutPayload::from(body.clone()), options)
            .await
        {
            Ok(_) => {}
            // Another process created this generation first: look again (it holds the lock).
            Err(
                object_store::Error::AlreadyExists { .. }
                | object_store::Error::Precondition { .. },
            ) => continue,
            Err(object_store::Error::NotImplemented { .. }) => {
                return Err(Error::Lake(format!(
                    "{}: the store cannot create an object only if it does not exist, so two processes could both take the {name} lock; use a store with conditional puts (S3 has them)",
                    lake.display()
                )));
            }
            Err(e) => return Err(e.into()),
        }
        // Another live generation now (a contender that created another number meanwhile):
        // back off and look again; of the two, at most one keeps the lock.
        let after = read_generations(lake, name).await?;
        let rival = after
            .iter()
            .any(|(p, h)| *p != path && stale(h, me).is_none());
        if rival {
            lake.delete(&path).await?;
            continue;
        }
        for (old, _) in after.iter().filter(|(p, _)| *p != path) {
            let _ = lake.delete(old).await;
        }
        return Ok(path);
    }
    Err(Error::Busy(format!(
        "could not take the {name} lock in {}: other processes kept taking it",
        lake.display()
    )))
}

/// Every generation of lock `name` with its holder. One that vanished meanwhile (released) is
/// left out; one that is not a holder at all is an error naming it.
async fn read_generations(lake: &Lake, name: &str) -> Result<Vec<(Path, Holder)>> {
    let mut out = Vec::new();
    for path in list(lake, name).await? {
        let Some(bytes) = lake.get(&path).await? else {
            continue;
        };
        let holder: Holder = serde_json::from_slice(&bytes).map_err(|e| {
            Error::Busy(format!(
                "{name}: the lock {}/{} is not one flowhealth wrote ({e}); delete it if no flowhealth process is running",
                lake.display(),
                lake.relative(&path)
            ))
        })?;
        out.push((path, holder));
    }
    Ok(out)
}

fn busy(lake: &Lake, name: &str, path: &Path, holder: &Holder) -> Error {
    Error::Busy(format!(
        "{name} is already running (host {}, pid {}, since {}{}); if that process is gone, delete {}/{}",
        holder.host,
        holder.pid,
        holder.since,
        if holder.by.is_empty() {
            String::new()
        } else {
            format!(", {}", holder.by)
        },
        lake.display(),
        lake.relative(path)
    ))
}

/// Why `holder`'s generation no longer holds the lock, or `None` while it does.
fn stale(holder: &Holder, me: &Holder) -> Option<&'static str> {
    if holder.host != me.host {
        None // another host: its processes cannot be seen from here
    } else if holder.pid == me.pid {
        // This process, and no run in it holds the lock (this run has the in-process side):
        // a run that stopped before it could write its release.
        Some("a run of this process that stopped without releasing it")
    } else if !process_alive(holder.pid) {
        Some("its process is gone")
    } else if holder
        .process
        .as_ref()
        .is_some_and(|then| process_identity(holder.pid).is_some_and(|now| now != *then))
    {
        Some("its process is gone (another process has its pid now)")
    } else {
        None
    }
}

/// The lock's generations (their objects), oldest first.
async fn list(lake: &Lake, name: &str) -> Result<Vec<Path>> {
    let prefix = lake.path(&["_flowhealth", "locks", name]);
    let objects: Vec<_> = lake.store().list(Some(&prefix)).try_collect().await?;
    let mut generations: Vec<Path> = objects
        .into_iter()
        .map(|o| o.location)
        .filter(|p| generation_of(p).is_some())
        .collect();
    generations.sort_by_key(generation_of);
    Ok(generations)
}

/// The number of a generation's object (`000000000007.json` -> 7).
fn generation_of(path: &Path) -> Option<u64> {
    path.filename()?.strip_suffix(".json")?.parse().ok()
}

fn generation_path(lake: &Lake, name: &str, generation: u64) -> Path {
    lake.path(&[
        "_flowhealth",
        "locks",
        name,
        &format!("{generation:012}.json"),
    ])
}

fn host() -> String {
    hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".into())
}

fn process_alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// `<boot id>/<start time in clock ticks since boot>` of process `pid` (Linux: `proc(5)`,
/// `/proc/sys/kernel/random/boot_id` and field 22 of `/proc/<pid>/stat`); `None` where there is
/// no `/proc` or no such process.
fn process_identity(pid: u32) -> Option<String> {
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count after its end.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let start = after_name.split_whitespace().nth(19)?;
    Some(format!("{}/{start}", boot.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lake(dir: &std::path::Path) -> Lake {
        let text = format!(
            "lake: {{ url: {} }}\nstages: [{{ name: a }}]\n",
            dir.display()
        );
        let config = crate::config::Config::parse(&text, "t.yaml", ".".into(), |_| None).unwrap();
        Lake::open(&config).unwrap()
    }

    #[tokio::test]
    async fn a_dropped_guard_is_released_and_a_run_of_the_process_waits_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let lake = lake(dir.path());
        let first = LakeLock::acquire(&lake, "ingest").await.unwrap();
        // A second run of this process waits (here: until the first is dropped).
        let other = lake.clone();
        let (scope, second) = scoped("second".into(), async move {
            LakeLock::acquire(&other, "ingest").await
        });
        let second = tokio::spawn(second);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!second.is_finished());
        assert!(scope.waiting().unwrap().starts_with("the ingest lock"));
        drop(first); // as a timeout drops a run
        let second = second.await.unwrap().unwrap();
        assert!(
            scope.waits()[0].starts_with("waited "),
            "{:?}",
            scope.waits()
        );
        assert_eq!(list(&lake, "ingest").await.unwrap().len(), 1);
        second.release().await.unwrap();
        finish_releases().await;
        assert!(list(&lake, "ingest").await.unwrap().is_empty(), "released");
    }

    /// Writes generation `generation` of lock `name` as `holder` had taken it.
    async fn plant(lake: &Lake, name: &str, generation: u64, holder: &Holder) -> Path {
        let path = generation_path(lake, name, generation);
        let bytes = Bytes::from(serde_json::to_vec(holder).unwrap());
        lake.put(&path, bytes).await.unwrap();
        path
    }

    fn holder(pid: u32, process: Option<String>) -> Holder {
        Holder {
            host: host(),
            pid,
            since: "2026-01-01T00:00:00+00:00".into(),
            by: "a command".into(),
            process,
        }
    }

    #[tokio::test]
    async fn a_release_deletes_its_own_generation_and_no_other() {
        let dir = tempfile::tempdir().unwrap();
        let lake = lake(dir.path());
        let lock = LakeLock::acquire(&lake, "ingest").await.unwrap();
        // Another holder (pid 1 is alive) took a later generation meanwhile.
        let other = plant(&lake, "ingest", 7, &holder(1, process_identity(1))).await;
        lock.release().await.unwrap();
        assert_eq!(list(&lake, "ingest").await.unwrap(), vec![other]);
        // And that holder is alive: the lock is busy.
        let busy = LakeLock::acquire(&lake, "ingest").await.unwrap_err();
        assert!(
            busy.to_string().contains("ingest is already running"),
            "{busy}"
        );
    }

    #[tokio::test]
    async fn a_holder_whose_pid_another_process_has_now_is_gone() {
        if process_identity(1).is_none() {
            return; // no /proc: the pid alone is all there is
        }
        let dir = tempfile::tempdir().unwrap();
        let lake = lake(dir.path());
        // pid 1 is alive, but not the process that wrote the generation.
        let reused = holder(1, Some("another-boot/123".into()));
        plant(&lake, "alerts", 3, &reused).await;
        let lock = LakeLock::acquire(&lake, "alerts").await.unwrap();
        assert!(lock.path.as_ref().ends_with("000000000004.json"));
        assert_eq!(
            list(&lake, "alerts").await.unwrap(),
            vec![lock.path.clone()]
        );
        lock.release().await.unwrap();
    }

    #[tokio::test]
    async fn a_lock_of_this_process_that_no_run_holds_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let lake = lake(dir.path());
        let lock = LakeLock::acquire(&lake, "alerts").await.unwrap();
        // As if the release had never been written (the runtime went away first).
        let mut lock = lock;
        lock.local = None;
        drop(lock);
        LOCAL
            .lock()
            .unwrap()
            .remove(&format!("{}|alerts", lake.display()));
        let again = LakeLock::acquire(&lake, "alerts").await.unwrap();
        assert!(again.path.as_ref().ends_with("000000000002.json"));
        again.release().await.unwrap();
    }
}
