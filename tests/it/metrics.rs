//! `flowhealth metrics`: the shipped metric SQL against a hand-worked fixture (a week across the
//! Berlin spring DST change), read back with DuckDB; empty periods; breaches with the change
//! since the previous week; and the catalog's checks (front matter, plan errors, versions.lock).

use std::path::Path;
use std::process::Output;

use crate::common::{Workspace, scan};

const QUERIES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/queries");

pub fn run(ws: &Workspace, args: &[&str]) -> Output {
    ws.command().args(args).output().unwrap()
}

pub fn ok(ws: &Workspace, args: &[&str]) -> String {
    let output = run(ws, args);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{args:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A small organisation in Europe/Berlin. Week 2026-W13 (Mon 23 March to Mon 30 March) contains
/// the spring change (29 March), so it is 167 hours long.
fn fixture() -> Workspace {
    fixture_with("")
}

/// [`fixture`] with `extra` YAML in its config (the report and alert tests add delivery).
pub fn fixture_with(extra: &str) -> Workspace {
    let ws = Workspace::in_timezone("Europe/Berlin", &format!("queries: {QUERIES}\n{extra}"));
    ws.inbox(
        "opportunities/opps.csv",
        "opportunity_id,owner_id,team,status\nO1,R1,east,open\nO2,R1,east,open\nO3,R2,north,open\nO4,R2,north,open\nO5,R3,,open\n",
    );
    ws.inbox(
        "stage_changes/changes.csv",
        "opportunity_id,from_stage,to_stage,changed_at,owner_id
O1,,lead,2026-03-16 09:00:00,R1
O1,lead,qualified,2026-03-24 10:00:00,R1
O2,,demo,2026-03-25 10:00:00,R1
O3,,qualified,2026-03-26 10:00:00,R2
O3,qualified,lost,2026-03-27 10:00:00,R2
O4,,lead,2026-03-10 09:00:00,R2
O5,,lead,2026-03-28 09:00:00,R3
O5,lead,demo,2026-03-29 09:00:00,R3
",
    );
    ws.inbox(
        "actions/actions.csv",
        "action_id,occurred_at,owner_id,team,opportunity_id,action_type,evidence
A1,2026-03-26 10:00:00,R1,east,O1,call,
A2,2026-03-27 11:00:00,R1,east,O2,demo,att://1
A3,2026-03-24 12:00:00,R2,north,O4,demo,
A4,2026-03-25 12:00:00,R2,north,,proposal_sent,sig://2
A5,2026-03-29 12:00:00,R3,,O5,demo,rec://3
A6,2026-03-20 12:00:00,R1,east,O1,demo,
A7,2026-03-30 00:30:00,R1,east,O1,call,
A8,2026-03-25 09:00:00,R4,south,,proposal_sent,sig://4
",
    );
    ok(&ws, &["ingest"]);
    ws
}

/// `select team, <columns> from metrics/<metric>/.../period=<period>` via DuckDB, as text.
fn rows(ws: &Workspace, metric: &str, period: &str, columns: &str) -> Vec<String> {
    ws.duckdb(&format!(
        "select coalesce(team, '(org)'), {columns} from {} where period = '{period}' order by 1",
        scan(&format!("metrics/{metric}"))
    ))
    .iter()
    .map(|row| {
        row.iter()
            .map(|v| v.as_str().map_or_else(|| v.to_string(), String::from))
            .collect::<Vec<_>>()
            .join(" ")
    })
    .collect()
}

#[test]
fn the_index_metrics_match_the_hand_worked_week_across_dst() {
    let ws = fixture();
    ok(&ws, &["metrics", "run", "--period", "2026-W12"]);
    let report = ok(&ws, &["metrics", "run", "--period", "2026-W13"]);

    // Changes in the week: O1 lead->qualified (ok), O2 created in demo (skip), O3 created in the
    // entry stage qualified then lost (ok), O5 lead->demo (skip, no team: organisation only).
    assert_eq!(
        rows(
            &ws,
            "stage_compliance_rate",
            "2026-W13",
            "population, compliant, value"
        ),
        ["(org) 4 2 0.5", "east 2 1 0.5", "north 1 1 1.0"]
    );
    // Evidence-required actions of the week: A2 (yes), A3 (no), A4 (yes), A5 (yes), A8 (yes);
    // A6 is the week before, A7 (00:30 on the 30th) the week after.
    assert_eq!(
        rows(
            &ws,
            "evidence_rate",
            "2026-W13",
            "population, with_evidence, value"
        ),
        [
            "(org) 5 4 0.8",
            "east 1 1 1.0",
            "north 2 1 0.5",
            "south 1 1 1.0"
        ]
    );
    // As of Monday 00:00 CEST (22:00 UTC on the 29th). O1: last action 26 March 10:00 CET, 85 real
    // hours (86 on the wall clock). O2: 60 h in demo. O4: lead since 10 March, last action
    // 24 March 12:00 CET, 131 h. O5: demo since 29 March 09:00 CEST, action 12:00 CEST, 12 h.
    assert_eq!(
        ws.duckdb(&format!(
            "select opportunity_id, stage, silent_hours, timeout_h, hours_remaining, status from {}
             where period = '2026-W13' order by opportunity_id",
            scan("metrics/silent_warnings")
        )),
        serde_json::json!([
            ["O1", "qualified", 85.0, 48.0, -37.0, "overdue"],
            ["O2", "demo", 60.0, 48.0, -12.0, "overdue"],
            ["O4", "lead", 131.0, 48.0, -83.0, "overdue"],
            ["O5", "demo", 12.0, 48.0, 36.0, "ok"]
        ])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_array().unwrap().clone())
        .collect::<Vec<_>>()
    );
    assert_eq!(
        rows(
            &ws,
            "silent_overtime_rate",
            "2026-W13",
            "population, overdue, value"
        ),
        ["(org) 4 3 0.75", "east 2 2 1.0", "north 1 1 1.0"]
    );
    // 6:3:1. east: .6 x .5 + .3 x 1 + .1 x 0 = .6; north: .6 + .15 + 0 = .75;
    // organisation: .3 + .24 + .025 = .565; south has only evidence: renormalised to 1.0.
    let index: Vec<Vec<serde_json::Value>> = ws.duckdb(&format!(
        "select coalesce(team, '(org)'), round(value, 9) from {} where period = '2026-W13' order by 1",
        scan("metrics/process_health_index")
    ));
    assert_eq!(
        index,
        [
            ("(org)", 0.565),
            ("east", 0.6),
            ("north", 0.75),
            ("south", 1.0)
        ]
        .map(|(t, v)| vec![serde_json::json!(t), serde_json::json!(v)])
    );

    // Breaches: compliance below 0.92 for east and the organisation, with last week's value
    // (W12: O1 created in lead, compliant: 1.0) and the change.
    let breaches = ws.duckdb(&format!(
        "select coalesce(team, '(org)'), value, threshold, direction, previous_value, change, advice from {}
         where metric = 'stage_compliance_rate' and period = '2026-W13' order by 1",
        scan("breaches")
    ));
    assert_eq!(breaches.len(), 2, "{breaches:?}");
    assert_eq!(breaches[1][0], "east");
    assert_eq!(breaches[1][1], 0.5);
    assert_eq!(breaches[1][2], 0.92);
    assert_eq!(breaches[1][3], "below");
    assert_eq!(breaches[1][4], 1.0);
    assert_eq!(breaches[1][5], -0.5);
    let advice = breaches[1][6].as_str().unwrap();
    assert!(
        advice.starts_with("east: 1 of 2 opportunities skipped a stage")
            && advice.contains("e.g. O2"),
        "{advice}"
    );
    assert!(
        report.contains("east: 1 of 2 opportunities skipped a stage"),
        "{report}"
    );
    // The summary counts in words that agree, and the index's advice speaks in percentages as
    // the report does: 0.565 is 56.5%, the threshold 0.9 is 90.0%.
    let line = |metric: &str| {
        report
            .lines()
            .find(|l| l.trim_start().starts_with(metric))
            .unwrap_or_else(|| panic!("{metric} in {report}"))
            .split_whitespace()
            .skip(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        line("stage_compliance_rate@"),
        "3 rows 2 breaches",
        "{report}"
    );
    // One row: the singular (health_outcome_correlation v2 has two rows here, teams and owners).
    assert_eq!(
        line("chronic_followup_validity@"),
        "1 row 0 breaches",
        "{report}"
    );
    assert!(
        report.contains(
            "Organisation: process health index 56.5%, healthy from 90.0% (stage compliance 50.0%"
        ),
        "{report}"
    );

    // Every row carries run_id and as_of; the lake conforms for the metrics present.
    let stamped = ws.duckdb(&format!(
        "select count(*), count(distinct run_id), min(as_of) from {} where period = '2026-W13'",
        scan("metrics/evidence_rate")
    ));
    assert_eq!(stamped[0][1], 1);
    assert_eq!(stamped[0][2], "2026-03-29 22:00:00+00:00");
}

#[test]
fn a_period_with_no_data_gives_explicit_empty_results() {
    let ws = fixture();
    // Weeks before anything happened: every population is empty.
    ok(&ws, &["metrics", "run", "--period", "2026-W05"]);
    assert_eq!(
        rows(
            &ws,
            "stage_compliance_rate",
            "2026-W05",
            "population, value"
        ),
        ["(org) 0 null"]
    );
    assert_eq!(
        rows(&ws, "process_health_index", "2026-W05", "value"),
        ["(org) null"]
    );
    assert_eq!(
        ws.duckdb(&format!(
            "select count(*) from {} where period = '2026-W05'",
            scan("metrics/signup_gap_flags")
        ))[0][0],
        0
    );
}

/// A workspace whose catalog is `files` (path under queries/ -> content).
fn catalog(files: &[(&str, &str)]) -> Workspace {
    let ws = Workspace::new("");
    for (path, text) in files {
        let path = ws.path().join("queries").join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    ws
}

const GOOD: &str = "-- metric: rows\n-- version: 1\n-- owner: me\n-- description: d\n-- grain: team\n-- period: week\nSELECT CAST(NULL AS VARCHAR) AS team, count(*) AS value FROM actions WHERE dt >= $period_start_date\n";

#[test]
fn validate_names_the_file_and_line_of_catalog_problems() {
    let ws = catalog(&[
        ("rows/v1.sql", GOOD),
        (
            "typo/v1.sql",
            "-- metric: typo\n-- version: 1\n-- owner: me\n-- descripton: d\n-- grain: team\n-- period: week\nSELECT 1\n",
        ),
        (
            "bad_sql/v1.sql",
            "-- metric: bad_sql\n-- version: 1\n-- owner: me\n-- description: d\n-- grain: team\n-- period: week\nSELECT team\nFROM actions WHERE WHERE x\n",
        ),
        (
            "unknown/v1.sql",
            "-- metric: unknown\n-- version: 1\n-- owner: me\n-- description: d\n-- grain: team\n-- period: week\nSELECT * FROM nowhere WHERE x < $as_of\n",
        ),
        (
            "wrong_name/v2.sql",
            "-- metric: wrong_name\n-- version: 3\n-- owner: me\n-- description: d\n-- grain: team\n-- period: week\nSELECT 1\n",
        ),
        (
            "needs/v1.sql",
            "-- metric: needs\n-- version: 1\n-- owner: me\n-- description: d\n-- grain: team\n-- period: week\n-- depends: [missing]\nSELECT 1\n",
        ),
        (
            "bad_type/v1.sql",
            "-- metric: bad_type\n-- version: 1\n-- owner: me\n-- description: d\n-- grain: team\n-- period: week\n-- carry: { team: blob }\nSELECT 1 AS team\n",
        ),
    ]);
    let output = run(&ws, &["validate"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "queries/typo/v1.sql:4: front matter: unknown field `descripton`, expected one of",
        "queries/wrong_name/v2.sql:2: version 3 is in file v2.sql",
        "queries/needs/v1.sql:1: depends on `missing`",
        "queries/bad_type/v1.sql:7: front matter: carry.team: unknown variant `blob`",
    ] {
        assert!(stderr.contains(expected), "{expected}\nnot in:\n{stderr}");
    }
    // Plan errors are reported once the front matter is right.
    let ws = catalog(&[
        ("rows/v1.sql", GOOD),
        (
            "bad_sql/v1.sql",
            "-- metric: bad_sql\n-- version: 1\n-- owner: me\n-- description: d\n-- grain: team\n-- period: week\nSELECT team\nFROM actions WHERE WHERE x\n",
        ),
        (
            "unknown/v1.sql",
            "-- metric: unknown\n-- version: 1\n-- owner: me\n-- description: d\n-- grain: team\n-- period: week\nSELECT * FROM nowhere WHERE x < $as_of\n",
        ),
        // Carried columns must be output columns of their type; the carried table plans.
        (
            "carrier/v1.sql",
            "-- metric: carrier\n-- version: 1\n-- owner: me\n-- description: d\n-- grain: opportunity\n-- period: week\n-- carry: { opportunity_id: text, stage: timestamp, lost: text }\nSELECT opportunity_id, CAST(stage AS VARCHAR) AS stage FROM carrier_carried WHERE $carried_as_of < $as_of\n",
        ),
    ]);
    let output = run(&ws, &["validate"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "queries/carrier/v1.sql:1: carry: `lost` is not a column of the output",
        "queries/carrier/v1.sql:1: carry: `stage` is Utf8",
        "in the output, which is not a Timestamp",
    ] {
        assert!(stderr.contains(expected), "{expected}\nnot in:\n{stderr}");
    }
    assert!(stderr.contains("queries/bad_sql/v1.sql:8:"), "{stderr}");
    assert!(
        stderr.contains("unknown/v1.sql:1:") && stderr.contains("nowhere"),
        "{stderr}"
    );
    assert!(!stderr.contains("rows/v1.sql"), "{stderr}");
}

#[test]
fn a_released_version_cannot_change_without_a_new_version() {
    let ws = catalog(&[("rows/v1.sql", GOOD)]);
    assert!(ok(&ws, &["metrics", "list"]).contains("v1 (draft)"));
    assert!(ok(&ws, &["metrics", "release"]).contains("released: rows@1"));
    assert!(ok(&ws, &["metrics", "list"]).contains("rows "));
    ok(&ws, &["validate"]);
    let file = ws.path().join("queries/rows/v1.sql");
    std::fs::write(&file, GOOD.replace("count(*)", "count(*) + 1")).unwrap();
    let output = run(&ws, &["validate"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("rows@1 was released with different SQL") && stderr.contains("v2.sql"),
        "{stderr}"
    );
    // The fix: the old version back, the change as v2.
    std::fs::write(
        ws.path().join("queries/rows/v2.sql"),
        GOOD.replace("version: 1", "version: 2")
            .replace("count(*)", "count(*) + 1"),
    )
    .unwrap();
    std::fs::write(&file, GOOD).unwrap();
    ok(&ws, &["validate"]);
    assert!(ok(&ws, &["metrics", "list"]).contains("v1,v2 (draft)"));
    // A version that is not there names the ones that are.
    let output = run(&ws, &["metrics", "run", "rows@9", "--period", "2026-W10"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("`rows` has no version 9") && stderr.contains("(versions: 1, 2;"),
        "{stderr}"
    );
}

#[test]
fn one_failing_metric_does_not_stop_the_others_and_exits_1() {
    let ws = catalog(&[
        ("rows/v1.sql", GOOD),
        (
            "broken/v1.sql",
            "-- metric: broken\n-- version: 1\n-- owner: me\n-- description: d\n-- grain: team\n-- period: week\nSELECT silent_hours(t, $as_of) AS value FROM (VALUES ('not a time')) AS v(t)\n",
        ),
        (
            "after/v1.sql",
            "-- metric: after\n-- version: 1\n-- owner: me\n-- description: d\n-- grain: team\n-- period: week\n-- depends: [broken]\nSELECT * FROM broken\n",
        ),
    ]);
    let output = run(&ws, &["metrics", "run", "--period", "2026-W10"]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("broken@1") && stdout.contains("FAILED: ") && stdout.contains("not a time"),
        "{stdout}"
    );
    assert!(
        stdout.contains("after@1") && stdout.contains("skipped: depends on broken"),
        "{stdout}"
    );
    assert!(
        Path::new(
            &ws.lake()
                .join("metrics/rows/version=1/period=2026-W10/part-0.parquet")
        )
        .exists(),
        "{stdout}"
    );
    // A monthly id for a weekly metric is a usage error.
    let output = run(&ws, &["metrics", "run", "rows", "--period", "2026-03"]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_golden_tests_pass_and_a_wrong_expectation_shows_a_diff() {
    let ws = Workspace::new("queries: ./queries\n");
    let copied = std::process::Command::new("cp")
        .args(["-r", QUERIES])
        .arg(ws.path().join("queries"))
        .status()
        .unwrap();
    assert!(copied.success());
    let report = ok(&ws, &["metrics", "test"]);
    assert!(report.contains(", 0 failed"), "{report}");
    assert!(!report.contains("FAILED"), "{report}");

    let expected = ws
        .path()
        .join("queries/_tests/berlin_spring_week/expected/stage_compliance_rate.csv");
    let text = std::fs::read_to_string(&expected).unwrap();
    std::fs::write(&expected, text.replace("east,2,1,0.5,O2", "east,2,2,1.0,")).unwrap();
    let output = run(&ws, &["metrics", "test"]);
    assert_eq!(output.status.code(), Some(1));
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        report.contains("FAILED berlin_spring_week stage_compliance_rate")
            && report.contains("- east,2,2,1.0,")
            && report.contains("+ east,2,1,0.5,O2"),
        "{report}"
    );
}
