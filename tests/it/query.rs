//! `flowhealth query` over a lake: results checked against DuckDB on the same Parquet,
//! partition pruning, the latest-snapshot view, and bad queries.

use std::process::Output;

use serde_json::json;

use crate::common::{ACTION_HEADER, Workspace, scan};

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
    query_ok(
        &ws,
        &[
            "select action_id, occurred_at from actions where false",
            "--format",
            "parquet",
            "--output",
            empty.to_str().unwrap(),
        ],
    );
    let rows = ws.duckdb(&format!("select count(*), (select count(*) from (describe select * from read_parquet('{0}'))) from read_parquet('{0}')", empty.display()));
    assert_eq!(rows[0], vec![json!(0), json!(2)]);

    let output = query(&ws, &["select * from action"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr.contains("table 'datafusion.public.action' not found")
            && stderr.contains("tables: actions, opportunities"),
        "{stderr}"
    );
    let output = query(&ws, &["select 1", "--format", "parquet"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--format parquet needs --output PATH")
    );
}

/// Drives `flowhealth query` on a pseudo-terminal (Python's pty module) like a user would.
const PROMPT_SESSION: &str = r#"
import os, pty, select, sys
pid, fd = pty.fork()
if pid == 0:
    os.execv(sys.argv[1], [sys.argv[1], "query"])
seen = b""
def expect(token):
    global seen
    while token not in seen:
        ready, _, _ = select.select([fd], [], [], 30)
        if not ready:
            sys.exit("timed out waiting for %r; got %r" % (token, seen))
        seen += os.read(fd, 4096)
    head, _, rest = seen.partition(token)
    seen = rest
    sys.stdout.write(head.decode(errors="replace") + token.decode())
expect(b"flowhealth> ")
os.write(fd, b"select stage_rank('proposal')\r")
expect(b"...> ")
os.write(fd, b"  as rank;\r")
expect(b"flowhealth> ")
os.write(fd, b"\\d\r")
expect(b"flowhealth> ")
os.write(fd, b"select * from nowhere;\r")
expect(b"flowhealth> ")
os.write(fd, b"\\q\r")
_, status = os.waitpid(pid, 0)
print("\nexit", os.waitstatus_to_exitcode(status))
"#;

#[test]
fn on_a_terminal_query_opens_a_prompt_with_history() {
    let ws = workspace_with_actions();
    let home = tempfile::tempdir().unwrap();
    let output = std::process::Command::new("python3")
        .args(["-c", PROMPT_SESSION, env!("CARGO_BIN_EXE_flowhealth")])
        .current_dir(ws.path())
        .env("HOME", home.path())
        .env("RUST_LOG", "warn")
        .env_remove("FLOWHEALTH_CONFIG")
        .output()
        .unwrap();
    let transcript = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{transcript}{}",
        String::from_utf8_lossy(&output.stderr)
    );
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
