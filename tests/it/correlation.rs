//! health_outcome_correlation never rewrites history (issue 15's small case): 3 teams, 7 closed
//! opportunities. At the end of 2026-W05 the index (silent overtime alone) ranks the teams a, b, c
//! as their later win rates do: r = +0.866. Recomputed as of 2 March, when the silence has moved
//! to other teams, the same index gives r = -0.866, and used to be written over W05's outputs.

use crate::common::Workspace;

/// UTC, the repository's catalog, a weekly pipeline of every weekly metric and the report.
fn workspace() -> Workspace {
    let ws = Workspace::in_timezone(
        "UTC",
        concat!(
            "queries: ",
            env!("CARGO_MANIFEST_DIR"),
            "/queries\npipelines: ./pipelines\n",
            "email: { to: [lead@example.com] }\n"
        ),
    );
    std::fs::create_dir_all(ws.path().join("pipelines")).unwrap();
    std::fs::write(
        ws.path().join("pipelines/weekly.yaml"),
        "name: weekly\nschedule: \"0 0 8 * * Mon\"\nsteps:\n  - metrics: []\n  - report: weekly\n",
    )
    .unwrap();
    // Four open opportunities, created on 20 January (week 4). At the end of W05 (2 February):
    // A1 and B2 had a call on 1 February (14 h silent: fine), B1 and C1 none (overdue). On
    // 2 March: A1 and B1 are overdue, B2 and C1 had a call on 1 March.
    ws.inbox(
        "stage_changes/changes.csv",
        "opportunity_id,from_stage,to_stage,changed_at,owner_id\n\
         A1,,lead,2026-01-20 10:00:00,RA\nB1,,lead,2026-01-20 10:00:00,RB\n\
         B2,,lead,2026-01-20 10:00:00,RB\nC1,,lead,2026-01-20 10:00:00,RC\n",
    );
    ws.inbox(
        "actions/calls.csv",
        "action_id,occurred_at,owner_id,team,opportunity_id,action_type\n\
         K1,2026-02-01 10:00:00,RA,a,A1,call\nK2,2026-02-01 10:00:00,RB,b,B2,call\n\
         K3,2026-03-01 10:00:00,RB,b,B2,call\nK4,2026-03-01 10:00:00,RC,c,C1,call\n",
    );
    // Closed in the four weeks after W05 (2 February to 2 March): a won 1 of 1, b 1 of 2, c 2 of 4.
    ws.inbox(
        "opportunities/opportunities.csv",
        "opportunity_id,owner_id,team,status,closed_at\n\
         A1,RA,a,open,\nB1,RB,b,open,\nB2,RB,b,open,\nC1,RC,c,open,\n\
         W1,RA,a,won,2026-02-10 10:00:00\nW2,RB,b,won,2026-02-11 10:00:00\n\
         L1,RB,b,lost,2026-02-12 10:00:00\nW3,RC,c,won,2026-02-13 10:00:00\n\
         W4,RC,c,won,2026-02-14 10:00:00\nL2,RC,c,lost,2026-02-15 10:00:00\n\
         L3,RC,c,lost,2026-02-16 10:00:00\n",
    );
    let output = ws.command().arg("ingest").output().unwrap();
    assert!(output.status.success());
    ws
}

fn run(ws: &Workspace, args: &[&str]) -> String {
    let output = ws.command().args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{args:?}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The bytes of every file under `metrics/` and `breaches/` for W05.
fn w05_outputs(ws: &Workspace) -> Vec<(String, Vec<u8>)> {
    ws.lake_files()
        .into_iter()
        .filter(|f| f.contains("period=2026-W05/"))
        .map(|f| {
            let bytes = std::fs::read(ws.lake().join(&f)).unwrap();
            (f, bytes)
        })
        .collect()
}

#[test]
fn a_look_back_never_overwrites_a_week_and_the_pipeline_scores_the_week_four_weeks_old() {
    let ws = workspace();
    run(&ws, &["metrics", "run", "--period", "2026-W05"]);
    let index = ws.duckdb(
        "select team, value from read_parquet('{lake}/metrics/process_health_index/version=2/period=2026-W05/*.parquet') where team is not null order by 1",
    );
    assert_eq!(
        index,
        vec![
            vec![serde_json::json!("a"), serde_json::json!(1.0)],
            vec![serde_json::json!("b"), serde_json::json!(0.5)],
            vec![serde_json::json!("c"), serde_json::json!(0.0)],
        ]
    );
    let before = w05_outputs(&ws);
    assert!(before.len() >= 10, "{before:?}");

    // Version 1, looked at four weeks later: computed at that as_of and shown, never stored.
    let stdout = run(
        &ws,
        &[
            "metrics",
            "run",
            "health_outcome_correlation@1",
            "--period",
            "2026-W05",
            "--as-of",
            "2026-03-02T00:00:00Z",
        ],
    );
    assert!(stdout.contains("not stored"), "{stdout}");
    assert!(stdout.contains("-0.866"), "{stdout}");
    assert_eq!(w05_outputs(&ws), before, "W05's outputs were rewritten");

    // The weekly pipeline for W09 (no --as-of) judges W05, the week that has just become four
    // weeks old, by its index as stored at its own end.
    run(&ws, &["run", "weekly", "--period", "2026-W09"]);
    assert_eq!(w05_outputs(&ws), before);
    let row = ws.duckdb(
        "select last_week, weeks, n, round(value, 4), ci_low, enough_data from read_parquet('{lake}/metrics/health_outcome_correlation/version=2/period=2026-W09/*.parquet') where across = 'team'",
    );
    assert_eq!(
        row,
        vec![vec![
            serde_json::json!("2026-W05"),
            serde_json::json!(1),
            serde_json::json!(3),
            serde_json::json!(0.866),
            serde_json::Value::Null,
            serde_json::json!(false),
        ]]
    );
    // The report shows it, and says n = 3 is not enough.
    let page = std::fs::read_to_string(ws.lake().join("reports/weekly/2026-W09.html")).unwrap();
    assert!(page.contains("Does the index predict wins?"), "{page}");
    assert!(
        page.contains("not enough data (n = 3, 3 teams)"),
        "{}",
        &page[page.find("predict").unwrap_or(0)..]
    );
}

/// A week that has not ended yet (this week, today) is computed as of its end and shown, but not
/// stored as the week: its rows would be part of a week, and `looks_back` trusts stored weeks.
#[test]
fn a_week_not_over_yet_is_shown_not_stored() {
    let ws = workspace();
    let this_week = chrono::Utc::now().format("%G-W%V").to_string();
    let stdout = run(
        &ws,
        &["metrics", "run", "evidence_rate", "--period", &this_week],
    );
    assert!(stdout.contains("not stored"), "{stdout}");
    let written: Vec<String> = ws
        .lake_files()
        .into_iter()
        .filter(|f| f.contains(&format!("period={this_week}/")))
        .collect();
    assert!(written.is_empty(), "{written:?}");
    // The same metric for a week that has ended is stored.
    run(
        &ws,
        &["metrics", "run", "evidence_rate", "--period", "2026-W05"],
    );
    assert!(
        ws.lake_files()
            .iter()
            .any(|f| f.contains("evidence_rate/version=") && f.contains("period=2026-W05/"))
    );
}
