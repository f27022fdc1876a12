//! `flowhealth query` over a lake: results checked against DuckDB on the same Parquet,
//! partition pruning, the latest-snapshot view, and bad queries.

use std::process::Output;

use serde_json::json;

use crate::common::{ACTION_HEADER, Workspace, on_a_terminal, scan};

fn query(ws: &Workspace, args: &[&str]) -> Output {
    ws.command().arg("query").args(args).output().unwrap()
}

/// Runs a query that must succeed and returns what it printed.
fn query_ok(ws: &Workspace, args: &[&str]) -> String {
    let output = query(ws, args);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `query SQL --format parquet --output path`, which must succeed.
fn query_to_parquet(ws: &Workspace, sql: &str, path: &std::path::Path) {
    let path = path.to_str().unwrap();
    query_ok(ws, &[sql, "--format", "parquet", "--output", path]);
}

fn workspace_with_actions() -> Workspace {
    let ws = Workspace::new("");
    let mut csv = format!("{ACTION_HEADER}\n");
    for i in 0..300 {
        let kind = ["call", "visit", "demo"][i % 3];
        csv += &format!(
            "q{i},2026-03-{:02} {:02}:15:00,,R{},east,,,,{kind},,,\n",
            1 + i % 9,
            i % 24,
            i % 7
        );
    }
    ws.inbox("actions/a.csv", csv);
    let output = ws.command().arg("ingest").output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    ws
}

#[test]
fn query_results_match_duckdb_on_the_same_parquet() {
    let ws = workspace_with_actions();
    let stdout = query_ok(
        &ws,
        &[
            "select action_type, count(*) as n from actions where dt >= date '2026-03-03' group by 1 order by 1",
            "--format",
            "csv",
        ],
    );
    let ours: Vec<String> = stdout.lines().skip(1).map(String::from).collect();
    let duck = ws.duckdb(&format!(
        "select action_type, count(*) from {} where dt >= date '2026-03-03' group by 1 order by 1",
        scan("raw/actions")
    ));
    let theirs: Vec<String> = duck
        .iter()
        .map(|r| format!("{},{}", r[0].as_str().unwrap(), r[1]))
        .collect();
    assert_eq!(ours, theirs);
}

#[test]
fn a_one_day_query_reads_only_that_days_files() {
    let ws = workspace_with_actions();
    let plan = query_ok(
        &ws,
        &[
            "explain select action_id from actions where dt = date '2026-03-04' and action_type like 'c%'",
            "--format",
            "json",
        ],
    );
    let files: Vec<&str> = plan
        .split(".parquet")
        .filter_map(|s| s.rsplit("/raw/actions/").next())
        .filter(|s| s.starts_with("dt="))
        .collect();
    assert!(!files.is_empty(), "{plan}");
    assert!(
        files.iter().all(|f| f.starts_with("dt=2026-03-04/")),
        "{files:?}"
    );
    assert!(
        std::fs::read_dir(ws.lake().join("raw/actions"))
            .unwrap()
            .count()
            > 1,
        "there are other days to prune"
    );
}

#[test]
fn opportunities_is_the_latest_snapshot() {
    let ws = Workspace::new("");
    let header = "opportunity_id,owner_id,team,status,amount";
    ws.inbox(
        "opportunities/monday.csv",
        format!("{header}\nO1,R1,east,open,100\nO2,R2,north,open,50\n"),
    );
    assert_eq!(
        ws.command().arg("ingest").output().unwrap().status.code(),
        Some(0)
    );
    ws.inbox(
        "opportunities/tuesday.csv",
        format!("{header}\nO1,R1,east,won,120\nO2,R2,north,open,50\n"),
    );
    assert_eq!(
        ws.command().arg("ingest").output().unwrap().status.code(),
        Some(0)
    );
    let output = query(
        &ws,
        &[
            "select opportunity_id, status, amount from opportunities order by 1",
            "--format",
            "json",
        ],
    );
    let rows: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        rows,
        json!([{"opportunity_id": "O1", "status": "won", "amount": 120.0}, {"opportunity_id": "O2", "status": "open", "amount": 50.0}])
    );
    let snapshots = query(
        &ws,
        &[
            "select count(*) as n from opportunity_snapshots",
            "--format",
            "csv",
        ],
    );
    // O2's unchanged snapshot is a duplicate and did not land again.
    assert_eq!(String::from_utf8_lossy(&snapshots.stdout), "n\n3\n");
}

#[test]
fn parquet_output_is_read_by_duckdb_and_bad_queries_exit_2() {
    let ws = workspace_with_actions();
    let out = ws.path().join("export.parquet");
    let output = query(
        &ws,
        &[
            "select action_id, occurred_at from actions where action_type = 'demo'",
            "--format",
            "parquet",
            "--output",
            out.to_str().unwrap(),
        ],
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let rows = ws.duckdb(&format!(
        "select count(*) from read_parquet('{}')",
        out.display()
    ));
    assert_eq!(rows[0][0], json!(100));
    // No rows is still a result: an empty file with the query's columns.
    let empty = ws.path().join("empty.parquet");
    query_to_parquet(
        &ws,
        "select action_id, occurred_at from actions where false",
        &empty,
    );
    let rows = ws.duckdb(&format!("select count(*), (select count(*) from (describe select * from read_parquet('{0}'))) from read_parquet('{0}')", empty.display()));
    assert_eq!(rows[0], vec![json!(0), json!(2)]);

    let output = query(&ws, &["select * from action"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr.contains("table 'datafusion.public.action' not found")
            && stderr.contains("tables: actions, breaches, opportunities"),
        "{stderr}"
    );
    let output = query(&ws, &["select 1", "--format", "parquet"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--format parquet needs --output PATH")
    );
    // A constant of the SQL that cannot be evaluated is the query's fault too.
    let output = query(
        &ws,
        &["select count(*) from actions where occurred_at > timestamp '2026-13-45 00:00:00'"],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("a constant in the query cannot be evaluated")
            && stderr.contains("2026-13-45"),
        "{stderr}"
    );
    // `runs` with a name that is neither a pipeline nor in the ledger.
    let output = ws.command().args(["runs", "nosuch"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no pipeline `nosuch`"), "{stderr}");
}

#[test]
fn on_a_terminal_query_opens_a_prompt_with_history() {
    let ws = workspace_with_actions();
    let home = tempfile::tempdir().unwrap();
    let steps = json!([
        {"expect": "flowhealth> "},
        {"send": "select stage_rank('proposal')\r"},
        {"expect": "...> "},
        {"send": "  as rank;\r"},
        {"expect": "flowhealth> "},
        {"send": "\\d\r"},
        {"expect": "flowhealth> "},
        {"send": "select * from nowhere;\r"},
        {"expect": "flowhealth> "},
        {"send": "\\q\r"},
    ]);
    let transcript = on_a_terminal(&ws, home.path(), steps, &["query"]);
    // A statement over two lines runs once it ends with `;`.
    assert!(
        transcript.contains("| rank |") && transcript.contains("| 4    |"),
        "{transcript}"
    );
    // \d lists the tables; an error is shown and the prompt carries on; \q exits 0.
    assert!(transcript.contains("quarantine_actions"), "{transcript}");
    assert!(
        transcript.contains("nowhere") && transcript.contains("tables: actions"),
        "{transcript}"
    );
    assert!(transcript.trim_end().ends_with("exit 0"), "{transcript}");
    let history = std::fs::read_to_string(home.path().join(".flowhealth_history")).unwrap();
    assert!(history.contains("stage_rank('proposal')"), "{history}");
}

/// The hand-worked Berlin weeks with every weekly metric computed for two weeks, and one run of
/// a pipeline whose `sql:` step exports the index from its metric table.
fn lake_with_outputs() -> Workspace {
    let ws = crate::metrics::fixture_with("");
    for week in ["2026-W12", "2026-W13"] {
        crate::metrics::ok(&ws, &["metrics", "run", "--period", week]);
    }
    let dir = ws.path().join("pipelines");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("export.yaml"),
        "name: export\nschedule: \"0 0 8 * * Mon\"\nsteps:\n  - sql: { query: \"select team, value from metrics.process_health_index where period = $period_id\", output: index }\n",
    )
    .unwrap();
    crate::metrics::ok(&ws, &["run", "export", "--period", "2026-W13"]);
    ws
}

/// The only `version=<N>` folder of a metric in the lake (the version `metrics run` wrote).
fn version_folder(ws: &Workspace, metric: &str) -> String {
    let folders: Vec<String> = std::fs::read_dir(ws.lake().join("metrics").join(metric))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(folders.len(), 1, "{folders:?}");
    folders[0].clone()
}

/// CSV lines of `query --format csv` after the header.
fn csv_rows(ws: &Workspace, sql: &str) -> Vec<String> {
    let out = query_ok(ws, &[sql, "--format", "csv"]);
    out.lines().skip(1).map(String::from).collect()
}

/// DuckDB's rows as CSV-like lines (NULL empty, numbers as DuckDB prints them).
fn duck_rows(ws: &Workspace, sql: &str) -> Vec<String> {
    ws.duckdb(sql)
        .iter()
        .map(|row| {
            row.iter()
                .map(|v| match v {
                    serde_json::Value::Null => String::new(),
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

#[test]
fn metric_outputs_breaches_runs_and_any_lake_folder_are_tables() {
    let ws = lake_with_outputs();
    // metrics.<metric> is the latest version's outputs, the period a column: DuckDB reads the
    // same rows from the folder.
    let version = version_folder(&ws, "evidence_rate");
    let ours = csv_rows(
        &ws,
        "select period, team, population, with_evidence from metrics.evidence_rate order by 1, 2 nulls first",
    );
    let theirs = duck_rows(
        &ws,
        &format!(
            "select period, team, population, with_evidence from read_parquet('{{lake}}/metrics/evidence_rate/{version}/**/*.parquet', hive_partitioning=1) order by 1, 2 nulls first"
        ),
    );
    assert_eq!(ours, theirs);
    assert!(
        ours.iter().any(|r| r.starts_with("2026-W12,"))
            && ours.iter().any(|r| r.starts_with("2026-W13,")),
        "{ours:?}"
    );
    // ... and metrics.<metric>_v<N> names the version.
    let numbered = version.replace("version=", "");
    let same = csv_rows(
        &ws,
        &format!(
            "select count(*) from (select * from metrics.evidence_rate except select * from metrics.evidence_rate_v{numbered})"
        ),
    );
    assert_eq!(same, ["0"]);

    // Breaches of every metric, with metric, version and period columns.
    let ours = csv_rows(
        &ws,
        "select metric, version, period, count(*) from breaches group by 1, 2, 3 order by 1, 2, 3",
    );
    let theirs = duck_rows(
        &ws,
        &format!(
            "select metric, version, period, count(*) from {} group by 1, 2, 3 order by 1, 2, 3",
            scan("breaches")
        ),
    );
    assert!(!ours.is_empty());
    assert_eq!(ours, theirs);

    // The run ledger, and the pipeline's sql: step read the index's metric table.
    let runs = csv_rows(&ws, "select pipeline, period, status, rows from runs");
    let exported = csv_rows(
        &ws,
        "select count(*) from metrics.process_health_index where period = '2026-W13'",
    );
    assert_eq!(runs, [format!("export,2026-W13,succeeded,{}", exported[0])]);

    // read_parquet over any folder of the lake, its key=value folders as columns; the lake's
    // own location in front of the path is accepted.
    let ours = csv_rows(
        &ws,
        "select version, period, count(*) from read_parquet('lake/metrics/evidence_rate') group by 1, 2 order by 1, 2",
    );
    let theirs = duck_rows(
        &ws,
        &format!(
            "select version, period, count(*) from {} group by 1, 2 order by 1, 2",
            scan("metrics/evidence_rate")
        ),
    );
    assert_eq!(ours, theirs);
    let exports = csv_rows(
        &ws,
        "select count(*) from read_parquet('exports/index/**/*.parquet')",
    );
    assert_eq!(exports, exported);
    // Versions whose columns differ, read as one folder: columns merged by name, NULL where a
    // version lacks one (README, "Output: the lake").
    for (version, sql) in [
        (1, "select 'a' as team, 0.5 as value"),
        (2, "select 'a' as team, 0.25 as value, 3 as n"),
    ] {
        let dir = ws
            .lake()
            .join(format!("metrics/mix/version={version}/period=2026-W01"));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("part-0.parquet");
        query_to_parquet(&ws, sql, &file);
    }
    assert_eq!(
        csv_rows(
            &ws,
            "select version, team, value, n from read_parquet('metrics/mix') order by 1"
        ),
        ["1,a,0.5,", "2,a,0.25,3"]
    );

    // Outside the lake, or a metric without outputs: the user's to fix, saying what is there.
    let outside = query(&ws, &["select * from read_parquet('../secrets')"]);
    assert_eq!(outside.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&outside.stderr).contains("read_parquet reads the lake"));
    let missing = query(&ws, &["select * from metrics.breakpoints_top5"]);
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(2));
    assert!(
        stderr.contains("metrics.evidence_rate")
            && stderr.contains("`flowhealth metrics run NAME` computes them"),
        "{stderr}"
    );
}

#[test]
fn the_prompt_lists_and_reads_the_metric_tables() {
    let ws = lake_with_outputs();
    let home = tempfile::tempdir().unwrap();
    let steps = json!([
        {"expect": "flowhealth> "},
        {"send": "\\d\r"},
        {"expect": "flowhealth> "},
        {"send": "select period, count(*) as teams from metrics.process_health_index\r"},
        {"expect": "...> "},
        {"send": "group by 1 order by 1;\r"},
        {"expect": "flowhealth> "},
        {"send": "select count(*) as files from read_parquet('metrics/process_health_index');\r"},
        {"expect": "flowhealth> "},
        {"send": "\\q\r"},
    ]);
    let transcript = on_a_terminal(&ws, home.path(), steps, &["query"]);
    for table in [
        "metrics.process_health_index\r\n",
        "metrics.evidence_rate\r\n",
        "breaches\r\n",
        "runs\r\n",
        "read_parquet('<path in the lake>')",
    ] {
        assert!(transcript.contains(table), "{table}: {transcript}");
    }
    // The teams and the organisation of each week.
    for week in ["2026-W12", "2026-W13"] {
        let teams = csv_rows(
            &ws,
            &format!("select count(*) from metrics.process_health_index where period = '{week}'"),
        );
        let row = format!("| {week} | {:<5} |", teams[0]);
        assert!(transcript.contains(&row), "{row}: {transcript}");
    }
    assert!(transcript.trim_end().ends_with("exit 0"), "{transcript}");
}

#[test]
fn text_formats_show_local_times_and_parquet_keeps_utc_instants() {
    // Asia/Shanghai: q0 happened at 2026-03-01 00:15 local, 2026-02-28 16:15 UTC.
    let ws = workspace_with_actions();
    let sql = "select action_id, occurred_at from actions where action_id = 'q0'";
    let local = "2026-03-01T00:15:00+08:00";
    let table = query_ok(&ws, &[sql]);
    assert!(
        table.contains(&format!("| q0        | {local} |")),
        "{table}"
    );
    assert_eq!(
        query_ok(&ws, &[sql, "--format", "csv"]),
        format!("action_id,occurred_at\nq0,{local}\n")
    );
    let rows: serde_json::Value =
        serde_json::from_str(&query_ok(&ws, &[sql, "--format", "json"])).unwrap();
    assert_eq!(rows, json!([{"action_id": "q0", "occurred_at": local}]));
    // A wall-clock timestamp (no timezone) is shown as it is.
    let naive = query_ok(
        &ws,
        &[
            "select timestamp '2026-03-01 10:00:00' as t",
            "--format",
            "csv",
        ],
    );
    assert_eq!(naive, "t\n2026-03-01T10:00:00\n");
    let out = ws.path().join("q0.parquet");
    query_to_parquet(&ws, sql, &out);
    let utc = ws.duckdb(&format!(
        "select strftime(occurred_at, '%Y-%m-%dT%H:%M:%S'), typeof(occurred_at) from read_parquet('{}')",
        out.display()
    ));
    assert_eq!(
        utc,
        [vec![
            json!("2026-02-28T16:15:00"),
            json!("TIMESTAMP WITH TIME ZONE")
        ]]
    );
}

#[test]
fn a_reader_that_stops_early_ends_the_query_quietly() {
    use std::io::BufRead;
    let ws = Workspace::new("");
    // Megabytes of output: far more than a pipe holds, so the query is still writing.
    let mut child = ws
        .command()
        .args([
            "query",
            "select value from generate_series(1, 300000)",
            "--format",
            "csv",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first, "value\n");
    // The reader is gone (as `| head` goes); the query ends without a word, exit 0.
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&output.stderr), "");
}

#[test]
fn validate_plans_a_sql_step_over_the_output_tables_before_they_have_outputs() {
    // A fresh lake: no metric has outputs yet, so no `metrics.*` table is in the lake; validate
    // plans the step against the columns each metric's SQL plans to, as the run will see them.
    let ws = Workspace::new(&format!(
        "queries: {}/queries\npipelines: ./pipelines\n",
        env!("CARGO_MANIFEST_DIR")
    ));
    let dir = ws.path().join("pipelines");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("good.yaml"),
        "name: good\nschedule: \"0 0 8 * * Mon\"\nsteps:\n  - metrics: []\n  - sql: { query: \"select i.team, i.value, e.with_evidence, i.as_of, (select count(*) from breaches) as breaches, (select count(*) from runs) as runs from metrics.process_health_index i left join metrics.evidence_rate_v1 e on i.team = e.team and i.period = e.period where i.period = $period_id\", output: index }\n",
    )
    .unwrap();
    let validate = || {
        let output = ws.command().arg("validate").output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        (output.status.code(), stderr)
    };
    let (code, stderr) = validate();
    assert_eq!(code, Some(0), "{stderr}");

    // A table that no metric has is still the step's error, named.
    std::fs::write(
        dir.join("bad.yaml"),
        "name: bad\nschedule: \"0 0 8 * * Mon\"\nsteps:\n  - sql: { query: \"select value from metrics.no_such_metric\", output: bad }\n",
    )
    .unwrap();
    let (code, stderr) = validate();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("bad.yaml: steps[0].sql.query")
            && stderr.contains("no_such_metric")
            && !stderr.contains("good.yaml"),
        "{stderr}"
    );
}
