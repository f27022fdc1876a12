//! `flowhealth daemon`: runs every pipeline on its schedule until SIGTERM or Ctrl-C.
//!
//! - A lease in the lake (`_flowhealth/locks/daemon.json`): a second daemon on the same lake
//!   refuses to start; one left by a killed daemon on this host is taken over.
//! - On start, a run the ledger still shows `running` was cut short: it is recorded
//!   `interrupted` and run again once; missed fires are caught up as each pipeline says.
//! - tokio-cron-scheduler wakes the loop at the [`Planner`]'s next fire time (a one-shot job per
//!   wake-up, as its cron jobs keep the UTC offset of the day they were made).
//! - On SIGTERM or Ctrl-C no new run starts; running ones get `grace` to finish, then are stopped
//!   and recorded `interrupted`.
//! - On a terminal it also says what it does, for the person watching ([`Console`]): the
//!   pipelines with their next fire time in local time, a line when a run starts and ends, and
//!   what happens on SIGTERM. Its log lines (stderr) are for the journal.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_cron_scheduler::{Job, JobScheduler};

use super::ledger::{self, RunRecord, RunStatus};
use super::{Planner, Trigger, period_for, runner};
use crate::config::Config;
use crate::error::{Error, Result, say};
use crate::lake::Lake;
use crate::lake::lock::{self, LakeLock};

pub async fn run(config: &Config, grace: Duration) -> Result<i32> {
    let catalog = crate::metrics::catalog(config)?;
    let specs = super::pipeline::load(config, &catalog).map_err(Error::Config)?;
    if specs.is_empty() {
        return Err(Error::Usage(format!(
            "no pipelines in {}: add pipelines/<name>.yaml files",
            config.resolve_local(&config.pipelines).display()
        )));
    }
    let lake = Lake::open(config)?;
    let lease = LakeLock::acquire(&lake, "daemon").await?;
    let result = serve(config, &lake, specs, grace).await;
    lease.release().await?;
    result
}

async fn serve(
    config: &Config,
    lake: &Lake,
    specs: Vec<super::pipeline::PipelineSpec>,
    grace: Duration,
) -> Result<i32> {
    let specs: Vec<Arc<_>> = specs.into_iter().map(Arc::new).collect();
    let now = Utc::now();
    let mut last = HashMap::new();
    let mut redo = Vec::new();
    for spec in &specs {
        let runs = ledger::read(lake, Some(&spec.name)).await?;
        // The last attempt at each fire time: still `running` means the daemon died during it.
        let mut latest: HashMap<DateTime<Utc>, &RunRecord> = HashMap::new();
        for run in &runs {
            let entry = latest.entry(run.scheduled_for).or_insert(run);
            if run.started > entry.started {
                *entry = run;
            }
        }
        let mut cut_short: Vec<RunRecord> = latest
            .into_values()
            .filter(|r| matches!(r.status, RunStatus::Running | RunStatus::Interrupted))
            .cloned()
            .collect();
        cut_short.sort_by_key(|r| r.scheduled_for);
        for mut run in cut_short {
            if run.status == RunStatus::Running {
                run.status = RunStatus::Interrupted;
                run.finished = Some(now);
                run.error = Some("the daemon stopped during this run (killed or crashed)".into());
                run.write(lake).await?;
            }
            tracing::warn!(pipeline = %run.pipeline, run_id = %run.run_id, "An interrupted run; running it again.");
            redo.push((run.pipeline.clone(), run.scheduled_for));
        }
        // Catch-up counts from the last fire the schedule itself ran (a manual run or a
        // backfill at another time does not stand in for a missed fire).
        let scheduled = runs
            .iter()
            .filter(|r| !matches!(r.trigger, Trigger::Manual | Trigger::Backfill));
        if let Some(latest) = scheduled.map(|r| r.scheduled_for).max() {
            last.insert(spec.name.clone(), latest);
        }
        if let Some(next) = super::next_fire(spec.cron(), spec.tz(), now) {
            tracing::info!(pipeline = %spec.name, next = %next.with_timezone(&spec.tz()), "Scheduled.");
        }
    }
    let console = Console::new(config.timezone);
    console.started(lake, &specs, grace, now);
    let mut planner = Planner::new(specs.clone(), &last, &redo, now);

    let scheduler = JobScheduler::new()
        .await
        .map_err(|e| Error::Internal(format!("scheduler: {e}")))?;
    scheduler
        .start()
        .await
        .map_err(|e| Error::Internal(format!("scheduler: {e}")))?;
    let (wake_tx, mut wake_rx) = mpsc::channel::<()>(16);
    let mut armed: Option<DateTime<Utc>> = None;
    let mut running: JoinSet<(String, Result<RunRecord>)> = JoinSet::new();
    let mut started: HashMap<String, RunRecord> = HashMap::new();
    // Which pipeline each task runs, to free it even when the task itself fails.
    let mut tasks: HashMap<tokio::task::Id, String> = HashMap::new();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::io("SIGTERM handler", e))?;
    tracing::info!(pipelines = specs.len(), "Daemon started.");

    loop {
        let now = Utc::now();
        for due in planner.due(now) {
            let period = period_for(&due.spec, config.timezone, due.scheduled_for);
            let record = runner::record(&due.spec, due.scheduled_for, &period, due.trigger);
            console.run_started(&record);
            started.insert(due.spec.name.clone(), record.clone());
            let (config, lake, spec) = (config.clone(), lake.clone(), due.spec.clone());
            let task = running.spawn(async move {
                let result = runner::execute(
                    &config,
                    &lake,
                    &spec,
                    &period,
                    record,
                    runner::Delivery::Send,
                )
                .await;
                (spec.name.clone(), result)
            });
            tasks.insert(task.id(), due.spec.name.clone());
        }
        if let Some(wake) = planner.next_wake(Utc::now())
            && armed.is_none_or(|a| wake < a || a <= Utc::now())
        {
            let delay = (wake - Utc::now())
                .to_std()
                .unwrap_or_default()
                .max(Duration::from_millis(10));
            let tx = wake_tx.clone();
            let job = Job::new_one_shot_async(delay, move |_, _| {
                let tx = tx.clone();
                Box::pin(async move {
                    let _ = tx.send(()).await;
                })
            })
            .map_err(|e| Error::Internal(format!("scheduler: {e}")))?;
            scheduler
                .add(job)
                .await
                .map_err(|e| Error::Internal(format!("scheduler: {e}")))?;
            armed = Some(wake);
        }
        tokio::select! {
            _ = wake_rx.recv() => {
                armed = None;
            }
            Some(joined) = running.join_next_with_id(), if !running.is_empty() => {
                let (id, outcome) = match joined {
                    Ok((id, (_, result))) => (id, result),
                    // A run whose task failed outside its steps (which catch their panics):
                    // recorded failed, and the pipeline runs again at its next fire.
                    Err(error) => {
                        let id = error.id();
                        let why = if error.is_panic() {
                            crate::error::panic_message(error.into_panic().as_ref())
                        } else {
                            error.to_string()
                        };
                        (id, Err(Error::Internal(format!("the run stopped: {why}"))))
                    }
                };
                let Some(name) = tasks.remove(&id) else { continue };
                let record = started.remove(&name);
                planner.finished(&name);
                match outcome {
                    Ok(ended) => console.run_ended(&ended),
                    Err(error) => {
                        console.line(&format!("{name}: {error}"));
                        tracing::error!(pipeline = %name, %error, "Run could not be recorded.");
                        if let Some(mut record) = record.filter(|_| error.domain() == crate::error::Domain::Internal) {
                            lock::finish_releases().await;
                            record.status = RunStatus::Failed;
                            record.finished = Some(Utc::now());
                            record.error = Some(error.to_string());
                            if let Err(error) = record.write(lake).await {
                                tracing::error!(pipeline = %name, %error, "Run could not be recorded.");
                            }
                        }
                    }
                }
                if let Some(spec) = specs.iter().find(|s| s.name == name) {
                    console.next(spec, Utc::now());
                }
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = terminate.recv() => break,
        }
    }

    tracing::info!(
        running = running.len(),
        grace_s = grace.as_secs_f64(),
        "Stopping: letting running steps finish."
    );
    console.stopping(running.len(), grace);
    let deadline = tokio::time::Instant::now() + grace;
    while !running.is_empty() {
        match tokio::time::timeout_at(deadline, running.join_next()).await {
            Ok(Some(Ok((name, _)))) => {
                started.remove(&name);
            }
            Ok(_) => {}
            Err(_) => {
                running.abort_all();
                while running.join_next().await.is_some() {}
                // The aborted runs' locks (their pipeline's, and any a step held) are guards:
                // dropping the runs released them.
                lock::finish_releases().await;
                for (_, mut record) in started.drain() {
                    record.status = RunStatus::Interrupted;
                    record.finished = Some(Utc::now());
                    record.error = Some(format!(
                        "stopped by shutdown after a {} s grace period",
                        grace.as_secs_f64()
                    ));
                    record.write(lake).await?;
                    console.run_ended(&record);
                }
                break;
            }
        }
    }
    let _ = scheduler.clone().shutdown().await;
    tracing::info!("Daemon stopped.");
    console.line("stopped");
    Ok(0)
}

/// What the daemon tells a person watching it on a terminal (standard output is one): nothing
/// otherwise, where its log lines say it all. Times are local: run lines in the configured
/// timezone, fire times in each pipeline's own.
struct Console {
    on: bool,
    tz: chrono_tz::Tz,
}

impl Console {
    fn new(tz: chrono_tz::Tz) -> Console {
        use std::io::IsTerminal;
        Console {
            on: std::io::stdout().is_terminal(),
            tz,
        }
    }

    /// One line, stamped with the local time. A terminal that went away does not stop the
    /// daemon: the line is lost, the log keeps it.
    fn line(&self, text: &str) {
        if self.on {
            let now = crate::time::format::local(self.tz, Utc::now());
            let _ = say!("{now}  {text}\n");
        }
    }

    fn started(
        &self,
        lake: &Lake,
        specs: &[Arc<super::pipeline::PipelineSpec>],
        grace: Duration,
        now: DateTime<Utc>,
    ) {
        let count = crate::metrics::display::count(specs.len(), "pipeline", "pipelines");
        self.line(&format!(
            "daemon started: {count} on {}; SIGTERM or Ctrl-C stops it (no new runs; running \
             steps get {} s to finish, then are recorded interrupted)",
            lake.display(),
            grace.as_secs_f64()
        ));
        for spec in specs {
            self.next(spec, now);
        }
    }

    /// `spec`'s next fire time after `now`, in the pipeline's timezone.
    fn next(&self, spec: &super::pipeline::PipelineSpec, now: DateTime<Utc>) {
        let next = match super::next_fire(spec.cron(), spec.tz(), now) {
            Some(at) => format!(
                "{} {}",
                crate::time::format::local(spec.tz(), at),
                spec.tz().name()
            ),
            None => "never (the schedule has no later time)".into(),
        };
        self.line(&format!("{:24} next run {next}", spec.name));
    }

    fn run_started(&self, record: &RunRecord) {
        self.line(&format!(
            "{:24} {} started ({}, run {})",
            record.pipeline,
            record.period.as_deref().unwrap_or("-"),
            record.trigger,
            record.run_id
        ));
    }

    fn run_ended(&self, record: &RunRecord) {
        let took = record
            .finished
            .map(|f| (f - record.started).num_milliseconds() as f64 / 1000.0)
            .unwrap_or_default();
        let error = record
            .error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default();
        self.line(&format!(
            "{:24} {} {} in {took:.1} s{error}",
            record.pipeline,
            record.period.as_deref().unwrap_or("-"),
            record.status
        ));
    }

    fn stopping(&self, running: usize, grace: Duration) {
        self.line(&format!(
            "stopping: no new runs; {} {} {} s to finish",
            crate::metrics::display::count(running, "run", "runs"),
            if running == 1 { "gets" } else { "get" },
            grace.as_secs_f64()
        ));
    }
}
