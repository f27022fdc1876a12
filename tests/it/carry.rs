//! State kept from one run to the next. `silent_warnings` computed from the previous week's
//! output equals the same week computed from the whole history, on the demo lake; after rows
//! arrive late for an older day, the next run starts from an output before that day. The kept
//! opportunity snapshot, merged with new exports, equals DuckDB's latest row per opportunity.

use crate::common::{Workspace, scan};
use crate::demo::run_demo_weeks;
use crate::metrics::{fixture_with, ok};

const ROWS: &str =
    "select period, opportunity_id, owner_id, team, stage, entered_at, last_activity_at,
       silent_hours, timeout_h, hours_remaining, status, stage_owner_id";

fn warnings(ws: &Workspace) -> Vec<Vec<serde_json::Value>> {
    ws.duckdb(&format!(
        "{ROWS} from {} where version = 6 order by period, opportunity_id",
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
        "with w as (select * from {} where version = 6)
         select count(*) filter (where b.opportunity_id is not null and a.entered_at = b.entered_at
                                   and b.last_activity_at < b.as_of - interval 7 day),
                count(*) filter (where b.opportunity_id is null),
                count(*) filter (where b.opportunity_id is not null and a.entered_at <> b.entered_at)
         from w a
         left join w b on b.opportunity_id = a.opportunity_id and b.as_of = a.as_of + interval 7 day
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
fn rows_landing_late_for_an_older_day_make_the_next_week_start_before_that_day() {
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
    // It arrived a minute ago: the shipped config waits 30 s for a file to settle.
    std::fs::File::options()
        .append(true)
        .open(ws.path().join("inbox/stage_changes/late.csv"))
        .unwrap()
        .set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(60))
        .unwrap();
    ok(&ws, &["ingest"]);

    // The outputs of W11 and W12 no longer match the lake before their as_of; W10's does: W13
    // starts from it and reads the three weeks since. The late opportunity is open in it.
    let out = run_week(&ws, latest);
    assert!(out.contains("(from 2026-W10's state)"), "{out}");
    let of_week = |ws: &Workspace| {
        ws.duckdb(&format!(
            "{ROWS} from {} where version = 6 and period = '{latest}' order by opportunity_id",
            scan("metrics/silent_warnings")
        ))
    };
    let carried = of_week(&ws);
    let late: Vec<_> = carried.iter().filter(|row| row[1] == "LATE-1").collect();
    assert_eq!(late.len(), 1, "{carried:?}");
    let [stage, owner, status] = [4, 2, 10].map(|i| late[0][i].clone());
    assert_eq!([stage, owner, status], ["lead", "R9", "overdue"]);

    // The same week from the whole history.
    std::fs::remove_dir_all(ws.lake().join("metrics/silent_warnings")).unwrap();
    let out = run_week(&ws, latest);
    assert!(!out.contains("'s state)"), "{out}");
    assert_eq!(of_week(&ws), carried);
}

/// `metrics run` for the fixture's week with info logs; returns stderr.
fn run_logged(ws: &Workspace) -> String {
    let output = ws
        .command()
        .args([
            "metrics",
            "run",
            "--period",
            "2026-W13",
            "--log-format",
            "text",
        ])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The kept snapshot against DuckDB's own latest row per opportunity over `raw/opportunities`.
fn assert_kept_snapshot_is_latest(ws: &Workspace) -> Vec<Vec<serde_json::Value>> {
    let columns = "opportunity_id, owner_id, team, status, source_file, source_line";
    let expected = ws.duckdb(&format!(
        "select {columns} from (select *, row_number() over (partition by opportunity_id
                order by ingested_at desc, source_file desc, source_line desc) as r from {})
         where r = 1 order by 1",
        scan("raw/opportunities")
    ));
    let kept = ws.duckdb(&format!(
        "select {columns} from read_parquet('{{lake}}/_flowhealth/snapshots/opportunities.parquet') order by 1"
    ));
    assert_eq!(kept, expected);
    kept
}

#[test]
fn the_kept_opportunity_snapshot_takes_in_new_exports_as_the_whole_computation_would() {
    let ws = fixture_with("");
    assert!(run_logged(&ws).contains("computing the snapshot from every file"));
    assert_eq!(assert_kept_snapshot_is_latest(&ws).len(), 5);

    // A later export moves O1 to north and adds O6: merged, not recomputed.
    ws.inbox(
        "opportunities/later.csv",
        "opportunity_id,owner_id,team,status\nO1,R2,north,open\nO6,R3,south,open\n",
    );
    ok(&ws, &["ingest"]);
    assert!(run_logged(&ws).contains("merging 1 new file(s)"));
    let kept = assert_kept_snapshot_is_latest(&ws);
    assert_eq!(kept.len(), 6);
    assert_eq!(kept[0][..3], ["O1", "R2", "north"]);
    // The north team now has O1's silent warning.
    let teams = ws.duckdb(&format!(
        "select team from {} where version = 6 and period = '2026-W13' and opportunity_id = 'O1'",
        scan("metrics/silent_warnings")
    ));
    assert_eq!(teams, [["north"]]);

    assert!(run_logged(&ws).contains("the kept snapshot is current"));

    // A covered file rewritten (same rows, a new version of the file): computed again.
    let raw = ws.lake().join("raw/opportunities");
    let file = std::fs::read_dir(raw.read_dir().unwrap().next().unwrap().unwrap().path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let bytes = std::fs::read(&file).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    std::fs::write(&file, bytes).unwrap();
    assert!(run_logged(&ws).contains("computing the snapshot from every file"));
    assert_kept_snapshot_is_latest(&ws);
}

#[test]
fn a_run_reads_the_kept_snapshot_as_it_was_when_it_began() {
    let ws = fixture_with("");
    run_logged(&ws);
    let expected: Vec<String> = assert_kept_snapshot_is_latest(&ws)
        .iter()
        .map(|row| format!("{} {}", row[0].as_str().unwrap(), row[2]))
        .collect();
    let config = ws.config();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let read = runtime.block_on(async {
        let lake = flowhealth::lake::Lake::open(&config).unwrap();
        let engine = flowhealth::engine::Engine::open(&config, &lake)
            .await
            .unwrap();
        flowhealth::engine::snapshot::register_opportunities(&engine, &lake)
            .await
            .unwrap();
        let ctx = engine.ctx();
        // Another run replaces the file while this one runs (here with bytes that are not even
        // Parquet): this run's queries still read the snapshot it started with.
        let kept = ws
            .lake()
            .join("_flowhealth/snapshots/opportunities.parquet");
        std::fs::write(kept, b"replaced").unwrap();
        let sql = "select opportunity_id || ' ' || coalesce('\"' || team || '\"', 'null') \
                   from opportunities order by opportunity_id";
        let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        flowhealth::engine::json_rows(&batches).unwrap()
    });
    let read: Vec<String> = read
        .iter()
        .map(|row| row.values().next().unwrap().as_str().unwrap().to_string())
        .collect();
    assert_eq!(read, expected);
}
