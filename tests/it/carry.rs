//! Carried state: `silent_warnings` computed from the previous week's output equals the same
//! week computed from the whole history, on the demo lake; rows arriving late for an older day
//! make the next run read the whole history again.

use crate::common::{Workspace, scan};
use crate::demo::run_demo_weeks;
use crate::metrics::ok;

const ROWS: &str =
    "select period, opportunity_id, owner_id, team, stage, entered_at, last_activity_at,
       silent_hours, timeout_h, hours_remaining, status, stage_owner_id";

fn warnings(ws: &Workspace) -> Vec<Vec<serde_json::Value>> {
    ws.duckdb(&format!(
        "{ROWS} from {} where version = 3 order by period, opportunity_id",
        scan("metrics/silent_warnings")
    ))
}

fn run_week(ws: &Workspace, week: &str) -> String {
    ok(ws, &["metrics", "run", "silent_warnings", "--period", week])
}

#[test]
fn a_week_from_the_previous_weeks_state_equals_the_week_from_scratch() {
    let ws = Workspace::new("");
    run_demo_weeks(&ws, 8);
    let weeks: Vec<String> = ws
        .duckdb(&format!(
            "select distinct period from {} order by 1",
            scan("metrics/silent_warnings")
        ))
        .into_iter()
        .map(|row| row[0].as_str().unwrap().to_string())
        .collect();
    assert!(weeks.len() >= 7, "{weeks:?}");

    // Oldest first, as the weekly job runs: each week after the first starts from the one before.
    for (i, week) in weeks.iter().enumerate() {
        let out = run_week(&ws, week);
        if i > 0 {
            let from = format!("(from {}'s state)", weeks[i - 1]);
            assert!(out.contains(&from), "{week}: {out}");
        }
    }
    let carried = warnings(&ws);

    // The demo exercises each path: opportunities carried over unchanged (their last activity
    // from the carried rows), and carried ones that closed or moved on during a week.
    let transitions = ws.duckdb(&format!(
        "with w as ({ROWS} from {} where version = 3)
         select count(*) filter (where b.opportunity_id is not null and a.entered_at = b.entered_at
                                   and b.last_activity_at < b.as_of - interval 7 day),
                count(*) filter (where b.opportunity_id is null),
                count(*) filter (where b.opportunity_id is not null and a.entered_at <> b.entered_at)
         from (select *, as_of from {0} where version = 3) a
         left join (select *, as_of from {0} where version = 3) b
           on b.opportunity_id = a.opportunity_id and b.as_of = a.as_of + interval 7 day
         where a.period <> '{}'",
        scan("metrics/silent_warnings"),
        weeks.last().unwrap()
    ));
    let [unchanged, closed, moved] = [0, 1, 2].map(|i| transitions[0][i].as_i64().unwrap());
    assert!(unchanged > 0 && closed > 0 && moved > 0, "{transitions:?}");

    // Newest first, with nothing before: every week from the whole history.
    std::fs::remove_dir_all(ws.lake().join("metrics/silent_warnings")).unwrap();
    for week in weeks.iter().rev() {
        let out = run_week(&ws, week);
        assert!(!out.contains("'s state)"), "{week}: {out}");
    }
    let scratch = warnings(&ws);
    assert_eq!(scratch.len(), carried.len());
    if let Some((a, b)) = carried.iter().zip(&scratch).find(|(a, b)| a != b) {
        panic!("from the previous week:\n{a:?}\nfrom scratch:\n{b:?}");
    }
}

#[test]
fn rows_landing_late_for_an_older_day_make_the_next_week_read_the_whole_history() {
    let ws = Workspace::new("");
    run_demo_weeks(&ws, 6);
    let (previous, latest) = ("2026-W12", "2026-W13");
    run_week(&ws, previous);
    assert!(run_week(&ws, latest).contains("(from 2026-W12's state)"));

    // A new opportunity that entered `lead` on 12 March (week 11) and has not moved since: its
    // export only arrives now.
    ws.inbox(
        "stage_changes/late.csv",
        "opportunity_id,from_stage,to_stage,changed_at,owner_id\nLATE-1,,lead,2026-03-12T10:00:00Z,R9\n",
    );
    ok(&ws, &["ingest"]);

    // W12's output no longer matches the lake before its as_of: W13 is computed from scratch,
    // and the late opportunity is open in it.
    let out = run_week(&ws, latest);
    assert!(!out.contains("'s state)"), "{out}");
    let late = ws.duckdb(&format!(
        "select stage, owner_id, status from {} where version = 3 and period = '{latest}' and opportunity_id = 'LATE-1'",
        scan("metrics/silent_warnings")
    ));
    assert_eq!(late, [["lead", "R9", "overdue"]]);
}
