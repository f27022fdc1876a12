//! Pipelines on a clock.
//!
//! - [`Planner`] (here) decides what runs when, given the time: fire times computed in each
//!   pipeline's timezone (so 08:00 stays 08:00 on both sides of a DST change), catch-up of missed
//!   fires, at most one run of a pipeline at a time, interrupted runs redone. It holds no clock of
//!   its own, so tests drive it through weeks in microseconds.
//! - [`pipeline`]: `pipelines/<name>.yaml` -> [`pipeline::PipelineSpec`], checked against the
//!   config and the metric catalog.
//! - [`ledger`]: every run as a row in the lake (`runs/pipeline=<name>/*.parquet`).
//! - [`runner`]: one run of a pipeline: its steps, retries, timeout, the ledger.
//! - [`daemon`]: the long-lived process: a lease in the lake, tokio-cron-scheduler waking it at
//!   the planner's next fire time, graceful shutdown.

pub mod daemon;
pub mod ledger;
pub mod pipeline;
pub mod runner;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;

use self::pipeline::{CatchUp, PipelineSpec};
use crate::time::Period;

/// Registers what flowhealth writes to the lake as SQL tables, for `flowhealth query` and a
/// pipeline's `sql:` step: the metric outputs (`metrics.<metric>`, `metrics.<metric>_v<N>`), the
/// breaches (`breaches`) and the run ledger (`runs`). Each module that owns a layout registers
/// its own; this floor is the one that sees them all.
pub async fn register_output_tables(
    ctx: &datafusion::prelude::SessionContext,
    lake: &crate::lake::Lake,
    catalog: &crate::metrics::catalog::Catalog,
) -> crate::error::Result<()> {
    crate::metrics::output::register_tables(ctx, lake, catalog).await?;
    ledger::register_table(ctx, lake)
}

/// Why a run happens (the run ledger's `trigger`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// At its scheduled time.
    Schedule,
    /// A fire missed while the daemon was down or the previous run was still going.
    CatchUp,
    /// Again, after the daemon died during it.
    Redo,
    /// `flowhealth run`.
    Manual,
    /// `flowhealth backfill`.
    Backfill,
}

impl Trigger {
    pub fn name(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::CatchUp => "catch_up",
            Trigger::Redo => "redo",
            Trigger::Manual => "manual",
            Trigger::Backfill => "backfill",
        }
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// The first fire time of `cron` in `tz` strictly after `after`.
pub fn next_fire(cron: &Cron, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    cron.find_next_occurrence(&after.with_timezone(&tz), false)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Every fire time in `(after, until]`.
pub fn fires(
    cron: &Cron,
    tz: Tz,
    after: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let mut out = Vec::new();
    let mut t = after;
    while let Some(next) = next_fire(cron, tz, t) {
        if next > until {
            break;
        }
        out.push(next);
        t = next;
    }
    out
}

/// The period a run scheduled for `at` works on: the last complete week or month, in the
/// lake's timezone.
pub fn period_for(spec: &PipelineSpec, lake_tz: Tz, at: DateTime<Utc>) -> Period {
    Period::last_complete(spec.period, at.with_timezone(&lake_tz).date_naive())
}

/// A run the planner wants started.
#[derive(Debug, Clone)]
pub struct Due {
    pub spec: Arc<PipelineSpec>,
    pub scheduled_for: DateTime<Utc>,
    pub trigger: Trigger,
}

struct Slot {
    spec: Arc<PipelineSpec>,
    /// The next fire time not yet queued.
    next: Option<DateTime<Utc>>,
    waiting: VecDeque<(DateTime<Utc>, Trigger)>,
    running: bool,
}

/// Decides which runs start when. See the module documentation.
pub struct Planner {
    slots: Vec<Slot>,
}

impl Planner {
    /// `last`: per pipeline, the latest `scheduled_for` in the run ledger (a pipeline without one
    /// has nothing to catch up); `redo`: runs the daemon died during, to run again first.
    pub fn new(
        specs: Vec<Arc<PipelineSpec>>,
        last: &HashMap<String, DateTime<Utc>>,
        redo: &[(String, DateTime<Utc>)],
        now: DateTime<Utc>,
    ) -> Planner {
        let slots = specs
            .into_iter()
            .map(|spec| {
                let mut waiting: VecDeque<(DateTime<Utc>, Trigger)> = redo
                    .iter()
                    .filter(|(name, _)| *name == spec.name)
                    .map(|(_, at)| (*at, Trigger::Redo))
                    .collect();
                if let Some(last) = last.get(&spec.name) {
                    for at in fires(spec.cron(), spec.tz(), *last, now) {
                        if !waiting.iter().any(|(t, _)| *t == at) {
                            waiting.push_back((at, Trigger::CatchUp));
                        }
                    }
                }
                Slot {
                    next: next_fire(spec.cron(), spec.tz(), now),
                    spec,
                    waiting,
                    running: false,
                }
            })
            .collect();
        Planner { slots }
    }

    /// The runs to start at `now`: at most one per pipeline, none for a pipeline still running.
    pub fn due(&mut self, now: DateTime<Utc>) -> Vec<Due> {
        let mut starts = Vec::new();
        for slot in &mut self.slots {
            while let Some(at) = slot.next.filter(|t| *t <= now) {
                // A fire that comes while the previous run is going is a missed one.
                let trigger = if slot.running {
                    Trigger::CatchUp
                } else {
                    Trigger::Schedule
                };
                slot.waiting.push_back((at, trigger));
                slot.next = next_fire(slot.spec.cron(), slot.spec.tz(), at);
            }
            if slot.running {
                continue;
            }
            apply_catch_up(&mut slot.waiting, slot.spec.catch_up);
            if let Some((at, trigger)) = slot.waiting.pop_front() {
                slot.running = true;
                starts.push(Due {
                    spec: slot.spec.clone(),
                    scheduled_for: at,
                    trigger,
                });
            }
        }
        starts
    }

    /// The pipeline's run ended: its next waiting run may start.
    pub fn finished(&mut self, pipeline: &str) {
        if let Some(slot) = self.slots.iter_mut().find(|s| s.spec.name == pipeline) {
            slot.running = false;
        }
    }

    /// When [`Planner::due`] next has something to do: now if a run is waiting to start, else the
    /// earliest next fire time.
    pub fn next_wake(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.slots
            .iter()
            .filter_map(|s| {
                if !s.running && !s.waiting.is_empty() {
                    Some(now)
                } else {
                    s.next
                }
            })
            .min()
    }
}

/// Applies the pipeline's rule to missed fires: all of them in order, the latest, or none.
/// On-time fires and redos are always kept.
fn apply_catch_up(waiting: &mut VecDeque<(DateTime<Utc>, Trigger)>, rule: CatchUp) {
    let missed = |t: &Trigger| *t == Trigger::CatchUp;
    match rule {
        CatchUp::All => {}
        CatchUp::None => waiting.retain(|(_, t)| !missed(t)),
        CatchUp::Latest => {
            if let Some(latest) = waiting
                .iter()
                .filter(|(_, t)| missed(t))
                .map(|(at, _)| *at)
                .max()
            {
                waiting.retain(|(at, t)| !missed(t) || *at == latest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::pipeline::parse_schedule;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn spec(name: &str, schedule: &str, tz: &str, catch_up: CatchUp) -> Arc<PipelineSpec> {
        let yaml = format!("name: {name}\nschedule: \"{schedule}\"\nsteps: [{{ alerts: {{}} }}]\n");
        let mut spec: PipelineSpec = serde_yaml::from_str(&yaml).unwrap();
        spec.catch_up = catch_up;
        spec.clock = Some((parse_schedule(schedule).unwrap(), tz.parse().unwrap()));
        Arc::new(spec)
    }

    fn shown(times: &[DateTime<Utc>]) -> Vec<String> {
        times
            .iter()
            .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
            .collect()
    }

    #[test]
    fn eight_oclock_in_berlin_stays_eight_oclock_across_both_dst_changes() {
        let daily = spec("d", "0 0 8 * * *", "Europe/Berlin", CatchUp::All);
        let spring = fires(
            daily.cron(),
            daily.tz(),
            utc("2026-03-27T12:00:00Z"),
            utc("2026-03-31T12:00:00Z"),
        );
        // 08:00 CET is 07:00 UTC; from Sunday 29 March, 08:00 CEST is 06:00 UTC.
        assert_eq!(
            shown(&spring),
            [
                "2026-03-28 07:00",
                "2026-03-29 06:00",
                "2026-03-30 06:00",
                "2026-03-31 06:00"
            ]
        );
        let autumn = fires(
            daily.cron(),
            daily.tz(),
            utc("2026-10-23T12:00:00Z"),
            utc("2026-10-27T12:00:00Z"),
        );
        assert_eq!(
            shown(&autumn),
            [
                "2026-10-24 06:00",
                "2026-10-25 07:00",
                "2026-10-26 07:00",
                "2026-10-27 07:00"
            ]
        );
        // The weekly report: Mondays 08:00 local, before and after the spring change.
        let weekly = spec("w", "0 0 8 * * Mon", "Europe/Berlin", CatchUp::All);
        let mondays = fires(
            weekly.cron(),
            weekly.tz(),
            utc("2026-03-20T00:00:00Z"),
            utc("2026-04-07T00:00:00Z"),
        );
        assert_eq!(
            shown(&mondays),
            ["2026-03-23 07:00", "2026-03-30 06:00", "2026-04-06 06:00"]
        );
    }

    #[test]
    fn a_time_in_the_spring_gap_runs_after_it_and_one_in_the_autumn_overlap_runs_once() {
        let night = spec("n", "0 30 2 * * *", "Europe/Berlin", CatchUp::All);
        // 02:30 does not exist on 29 March (02:00 -> 03:00): it runs at 03:00 CEST = 01:00 UTC.
        let spring = fires(
            night.cron(),
            night.tz(),
            utc("2026-03-28T12:00:00Z"),
            utc("2026-03-30T12:00:00Z"),
        );
        assert_eq!(shown(&spring), ["2026-03-29 01:00", "2026-03-30 00:30"]);
        // 02:30 happens twice on 25 October: it runs once, at the first (CEST, 00:30 UTC).
        let autumn = fires(
            night.cron(),
            night.tz(),
            utc("2026-10-24T12:00:00Z"),
            utc("2026-10-26T12:00:00Z"),
        );
        assert_eq!(shown(&autumn), ["2026-10-25 00:30", "2026-10-26 01:30"]);
    }

    #[test]
    fn after_a_two_week_outage_both_weekly_runs_happen_in_order_each_with_its_period() {
        let weekly = spec(
            "weekly_health",
            "0 0 8 * * Mon",
            "Europe/Berlin",
            CatchUp::All,
        );
        let last = HashMap::from([("weekly_health".to_string(), utc("2026-03-09T07:00:00Z"))]);
        let now = utc("2026-03-25T10:00:00Z");
        let mut planner = Planner::new(vec![weekly.clone()], &last, &[], now);
        let tz: Tz = "Europe/Berlin".parse().unwrap();
        let first = planner.due(now);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].trigger, Trigger::CatchUp);
        assert_eq!(shown(&[first[0].scheduled_for]), ["2026-03-16 07:00"]);
        assert_eq!(
            period_for(&weekly, tz, first[0].scheduled_for).id,
            "2026-W11"
        );
        assert!(
            planner.due(now).is_empty(),
            "one run of a pipeline at a time"
        );
        planner.finished("weekly_health");
        let second = planner.due(now);
        assert_eq!(shown(&[second[0].scheduled_for]), ["2026-03-23 07:00"]);
        assert_eq!(
            period_for(&weekly, tz, second[0].scheduled_for).id,
            "2026-W12"
        );
        planner.finished("weekly_health");
        assert!(planner.due(now).is_empty());
        // Then the schedule goes on: Monday 30 March, after the DST change.
        assert_eq!(
            shown(&[planner.next_wake(now).unwrap()]),
            ["2026-03-30 06:00"]
        );

        // `latest` runs only the most recent missed week; `none` neither.
        for (rule, expected) in [
            (CatchUp::Latest, vec!["2026-03-23 07:00"]),
            (CatchUp::None, vec![]),
        ] {
            let weekly = spec("weekly_health", "0 0 8 * * Mon", "Europe/Berlin", rule);
            let mut planner = Planner::new(vec![weekly], &last, &[], now);
            let started: Vec<_> = planner.due(now).iter().map(|d| d.scheduled_for).collect();
            planner.finished("weekly_health");
            assert!(planner.due(now).is_empty());
            assert_eq!(shown(&started), expected, "{rule:?}");
        }
    }

    #[test]
    fn a_run_that_outlasts_its_interval_is_never_overlapped() {
        let every15 = spec(
            "ingest_actions",
            "0 */15 * * * *",
            "Asia/Shanghai",
            CatchUp::Latest,
        );
        let start = utc("2026-03-02T00:00:00Z");
        let mut planner = Planner::new(vec![every15], &HashMap::new(), &[], start);
        assert!(
            planner.due(start).is_empty(),
            "nothing is due before the first fire"
        );
        let first = planner.due(utc("2026-03-02T00:15:00Z"));
        assert_eq!(first.len(), 1);
        // The run takes 40 minutes: the fires at :30 and :45 find it running.
        assert!(planner.due(utc("2026-03-02T00:30:00Z")).is_empty());
        assert!(planner.due(utc("2026-03-02T00:45:00Z")).is_empty());
        planner.finished("ingest_actions");
        let next = planner.due(utc("2026-03-02T00:55:00Z"));
        assert_eq!(
            shown(&[next[0].scheduled_for]),
            ["2026-03-02 00:45"],
            "only the latest missed fire"
        );
        assert_eq!(next[0].trigger, Trigger::CatchUp);
        assert!(planner.due(utc("2026-03-02T00:59:00Z")).is_empty());
    }

    #[test]
    fn an_interrupted_run_is_redone_first_and_once() {
        let hourly = spec(
            "silent_alerts",
            "0 0 * * * *",
            "Asia/Shanghai",
            CatchUp::Latest,
        );
        let at = utc("2026-03-02T05:00:00Z");
        let last = HashMap::from([("silent_alerts".to_string(), at)]);
        let now = utc("2026-03-02T05:10:00Z");
        let mut planner = Planner::new(vec![hourly], &last, &[("silent_alerts".into(), at)], now);
        let due = planner.due(now);
        assert_eq!((due[0].scheduled_for, due[0].trigger), (at, Trigger::Redo));
        planner.finished("silent_alerts");
        assert!(planner.due(now).is_empty());
    }
}
