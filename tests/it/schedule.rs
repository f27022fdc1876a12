//! Pipelines: validation naming file and field, `run`, `backfill` (resumable) and `runs` on the
//! hand-worked Berlin week, the run ledger read by DuckDB, and the daemon in real time: one lease
//! per lake, and a run killed with SIGKILL recorded as interrupted and redone once.
//! (Fire times across DST, catch-up and overlap are tested with an injected clock in
//! `src/schedule/mod.rs`.)

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{Workspace, free_port, scan};
use crate::metrics::{fixture_with, ok, run};

pub fn pipeline(ws: &Workspace, name: &str, yaml: &str) {
    let dir = ws.path().join("pipelines");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{name}.yaml")), yaml).unwrap();
}

#[test]
fn validate_names_the_pipeline_file_and_field() {
    let ws = Workspace::new(&format!(
        "queries: {}/queries\n",
        env!("CARGO_MANIFEST_DIR")
    ));
    pipeline(
        &ws,
        "bad_cron",
        "name: bad_cron\nschedule: \"every monday\"\nsteps: [{ alerts: {} }]\n",
    );
    pipeline(
        &ws,
        "bad_tz",
        "name: bad_tz\nschedule: \"0 0 8 * * Mon\"\ntimezone: Mars/Olympus\nsteps: [{ alerts: {} }]\n",
    );
    pipeline(
        &ws,
        "bad_step",
        "name: bad_step\nschedule: \"0 0 8 * * Mon\"\nsteps: [{ compute: [x] }]\n",
    );
    pipeline(
        &ws,
        "bad_metric",
        "name: bad_metric\nschedule: \"0 0 8 * * Mon\"\nsteps: [{ metrics: [evidence_rate, no_such_metric, breakpoints_top5] }, { report: monthly }]\n",
    );
    pipeline(
        &ws,
        "renamed",
        "name: other\nschedule: \"0 0 8 * * Mon\"\nsteps: [{ ingest: [actions, deals] }]\n",
    );
    let output = ws.command().arg("validate").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "bad_cron.yaml: schedule: `every monday` is not a schedule",
        "bad_tz.yaml: timezone: `Mars/Olympus` is not an IANA timezone",
        "bad_step.yaml: steps[0]: unknown field `compute`, expected one of `ingest`, `metrics`, `report`, `alerts`, `outbox`, `sql` at line 3",
        "bad_metric.yaml: steps[0].metrics: no metric `no_such_metric`",
        "bad_metric.yaml: steps[0].metrics: `breakpoints_top5` is a month metric but the pipeline's period is week",
        "bad_metric.yaml: steps[1].report: a monthly report needs `period: month`",
        "renamed.yaml: name: `other` must equal the file name `renamed`",
        "renamed.yaml: steps[0].ingest: unknown dataset `deals`",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
}

const WEEKLY: &str = "name: weekly
schedule: \"0 0 8 * * Mon\"
steps:
  - metrics: [stage_compliance_rate, evidence_rate, silent_overtime_rate, process_health_index, silent_warnings, store_action_heatmap]
  - report: weekly
";

#[test]
fn backfill_runs_each_period_once_and_the_ledger_is_read_by_duckdb() {
    let ws = fixture_with("email: { outbox: ./outbox, to: [boss@example.com] }\n");
    pipeline(&ws, "weekly", WEEKLY);
    let out = ok(
        &ws,
        &[
            "backfill", "weekly", "--from", "2026-W12", "--to", "2026-W13", "--send",
        ],
    );
    assert!(out.contains("2 runs"), "{out}");
    assert!(ws.path().join("outbox/sent/weekly-2026-W12.eml").exists());
    assert!(ws.path().join("outbox/sent/weekly-2026-W13.eml").exists());
    // Resumable: done periods are skipped. Without --send nothing is sent, and it says so.
    let again = ok(
        &ws,
        &[
            "backfill", "weekly", "--from", "2026-W11", "--to", "2026-W13",
        ],
    );
    assert!(again.contains("1 run in"), "only W11 was left: {again}");
    assert!(
        again.starts_with("backfill: reports are rendered into the lake, not sent"),
        "{again}"
    );
    assert!(ws.lake().join("reports/weekly/2026-W11.html").exists());
    assert!(!ws.path().join("outbox/sent/weekly-2026-W11.eml").exists());
    assert!(
        !ws.path()
            .join("outbox/pending/weekly-2026-W11.eml")
            .exists()
    );
    let held = ws.duckdb(&format!(
        "select outputs from {} where period = '2026-W11'",
        scan("runs")
    ));
    assert!(
        held[0][0]
            .as_str()
            .unwrap()
            .contains("weekly report not sent"),
        "{held:?}"
    );

    let runs = ws.duckdb(&format!(
        "select period, status, trigger, rows > 0, outputs like '%metrics/process_health_index%' from {} order by period",
        scan("runs")
    ));
    let shown: Vec<String> = runs.iter().map(|r| format!("{r:?}")).collect();
    assert_eq!(runs.len(), 3, "{shown:?}");
    for (row, period) in runs.iter().zip(["2026-W11", "2026-W12", "2026-W13"]) {
        assert_eq!(row[0], period);
        assert_eq!(row[1], "succeeded");
        assert_eq!(row[2], "backfill");
        assert_eq!(row[4], true);
    }
    let table = ok(&ws, &["runs"]);
    assert_eq!(
        table.lines().filter(|l| l.starts_with("weekly ")).count(),
        3,
        "{table}"
    );

    // A run now, for a given period; a period of the wrong kind is bad input.
    let now = ok(&ws, &["run", "weekly", "--period", "2026-W13"]);
    assert!(now.contains("(2026-W13): succeeded"), "{now}");
    let wrong = run(&ws, &["run", "weekly", "--period", "2026-03"]);
    assert_eq!(wrong.status.code(), Some(2));
    let missing = run(&ws, &["run", "nightly"]);
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("no pipeline `nightly` in ") && stderr.contains("pipelines there: weekly"),
        "{stderr}"
    );
    // A week still under way (in the fixture's Europe/Berlin) is refused (a run stores a week
    // once it has ended), by run and backfill alike, naming the last complete one.
    let now = chrono::Utc::now().with_timezone(&chrono_tz::Europe::Berlin);
    let this_week = now.format("%G-W%V").to_string();
    let last_week = (now - chrono::Duration::days(7))
        .format("%G-W%V")
        .to_string();
    for args in [
        vec!["run", "weekly", "--period", this_week.as_str()],
        vec![
            "backfill",
            "weekly",
            "--from",
            "2026-W13",
            "--to",
            this_week.as_str(),
        ],
    ] {
        let early = run(&ws, &args);
        let stderr = String::from_utf8_lossy(&early.stderr);
        assert_eq!(early.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&format!("{this_week} has not ended yet"))
                && stderr.contains(&format!("the last complete one is {last_week}")),
            "{stderr}"
        );
    }
}

/// The standard output of a command that must fail at run time (exit 1).
fn failing(ws: &Workspace, args: &[&str]) -> String {
    let output = run(ws, args);
    assert_eq!(output.status.code(), Some(1));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// (status, attempts, error) of the one run in the ledger.
fn the_run(ws: &Workspace) -> (String, i64, String) {
    let runs = ws.duckdb(&format!(
        "select status, attempts, error from {}",
        scan("runs")
    ));
    assert_eq!(runs.len(), 1, "{runs:?}");
    let text = |i: usize| runs[0][i].as_str().unwrap_or_default().to_string();
    (text(0), runs[0][1].as_i64().unwrap(), text(2))
}

/// Only a failure a retry can help is retried (`retries`): the user's bad SQL fails after one
/// attempt, while an SMTP server that is down is tried as often as the pipeline says.
#[test]
fn a_bad_sql_step_fails_once_while_an_smtp_outage_is_retried() {
    let ws = fixture_with("");
    pipeline(
        &ws,
        "export",
        "name: export\nschedule: \"0 0 8 * * Mon\"\nretries: { attempts: 3, backoff_s: 0.1 }\nsteps:\n  - sql: { query: \"select no_such_column from actions\", output: broken }\n",
    );
    let stdout = failing(&ws, &["run", "export"]);
    assert!(
        stdout.contains("failed: step 1 (sql):") && stdout.contains("no_such_column"),
        "{stdout}"
    );
    let (status, attempts, error) = the_run(&ws);
    assert_eq!((status.as_str(), attempts), ("failed", 1), "{error}");
    assert!(error.contains("no_such_column"), "{error}");

    // Nothing listens on this loopback port: every delivery is refused. The outbox itself tries
    // once (email.retry), so the attempts are the pipeline's.
    let port = free_port();
    let ws = fixture_with(&crate::common::smtp_once(&format!(
        "host: 127.0.0.1, port: {port}, tls: none, timeout_s: 5"
    )));
    ok(&ws, &["metrics", "run", "--period", "2026-W12"]);
    ok(&ws, &["metrics", "run", "--period", "2026-W13"]);
    pipeline(
        &ws,
        "weekly",
        "name: weekly\nschedule: \"0 0 8 * * Mon\"\nretries: { attempts: 3, backoff_s: 0.1 }\nsteps:\n  - report: weekly\n",
    );
    let stdout = failing(&ws, &["run", "weekly", "--period", "2026-W13"]);
    assert!(
        stdout.contains("failed: step 1 (report):")
            && stdout.contains(&format!("smtp 127.0.0.1:{port}")),
        "{stdout}"
    );
    let (status, attempts, error) = the_run(&ws);
    assert_eq!((status.as_str(), attempts), ("failed", 3), "{error}");
    assert!(
        error.to_lowercase().contains("connection refused"),
        "{error}"
    );
    assert!(
        ws.path()
            .join("outbox/pending/weekly-2026-W13.eml")
            .exists(),
        "the report waits in the outbox"
    );
}

/// The daemon as a child process, killed when dropped.
pub struct Daemon(pub Child);

impl Daemon {
    pub fn start(ws: &Workspace) -> Daemon {
        Daemon::start_with(ws, &[])
    }

    /// A daemon with these environment variables set too.
    pub fn start_with(ws: &Workspace, env: &[(&str, &str)]) -> Daemon {
        let child = Command::new(env!("CARGO_BIN_EXE_flowhealth"))
            .arg("daemon")
            .current_dir(ws.path())
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Daemon(child)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// (scheduled_for, status, trigger) of every run, via DuckDB.
fn ledger(ws: &Workspace) -> Vec<(String, String, String)> {
    if !ws.lake().join("runs").exists() {
        return Vec::new();
    }
    ws.duckdb_live(&format!(
        "select strftime(scheduled_for, '%H:%M:%S'), status, trigger from {} order by scheduled_for, started",
        scan("runs")
    ))
    .into_iter()
    .map(|r| (r[0].as_str().unwrap().into(), r[1].as_str().unwrap().into(), r[2].as_str().unwrap().into()))
    .collect()
}

pub fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_daemon_killed_mid_run_records_it_interrupted_and_redoes_it_once() {
    let ws = fixture_with("");
    // Every 5 seconds, a query that takes a few seconds; missed fires are not caught up, so
    // the only extra run is the redo.
    pipeline(
        &ws,
        "slow",
        "name: slow\nschedule: \"*/5 * * * * *\"\ncatch_up: none\nsteps:\n  - sql: { query: \"select count(*) as n from generate_series(1, 20000) a cross join generate_series(1, 20000) b where (a.value + b.value) % 7 = 0\", output: slow }\n",
    );
    let mut first = Daemon::start(&ws);
    wait_for("a run to start", Duration::from_secs(30), || {
        ledger(&ws).iter().any(|(_, status, _)| status == "running")
    });
    // A second daemon on the same lake refuses to start.
    let second = ws.command().arg("daemon").output().unwrap();
    assert_eq!(second.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("daemon is already running"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );

    first.0.kill().unwrap(); // SIGKILL, mid-run
    first.0.wait().unwrap();
    let killed = ledger(&ws);
    let (at, _, _) = killed
        .iter()
        .find(|(_, s, _)| s == "running")
        .cloned()
        .expect("the killed run is still `running`");

    let restarted = Daemon::start(&ws);
    wait_for("the redo to succeed", Duration::from_secs(60), || {
        ledger(&ws)
            .iter()
            .any(|(t, s, trigger)| *t == at && s == "succeeded" && trigger == "redo")
    });
    // SIGTERM: the daemon lets the current run finish and exits 0.
    let pid = restarted.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut restarted = restarted;
    let status = restarted.0.wait().unwrap();
    assert_eq!(status.code(), Some(0));

    let runs = ledger(&ws);
    let of_that_fire: Vec<_> = runs.iter().filter(|(t, _, _)| *t == at).collect();
    assert_eq!(
        of_that_fire
            .iter()
            .map(|(_, s, t)| format!("{s}/{t}"))
            .collect::<Vec<_>>(),
        ["interrupted/schedule", "succeeded/redo"],
        "{runs:?}"
    );
    assert!(runs.iter().all(|(_, s, _)| s != "running"), "{runs:?}");
}

/// On a terminal the daemon says what it does: the pipelines with their next fire time in the
/// pipeline's local time, a line when a run starts and when it ends, and what SIGTERM does.
#[test]
fn on_a_terminal_the_daemon_says_what_it_runs_and_when() {
    let ws = fixture_with("");
    pipeline(
        &ws,
        "often",
        "name: often\nschedule: \"*/3 * * * * *\"\ntimezone: America/New_York\ncatch_up: none\nsteps:\n  - sql: { query: \"select 1 as one\", output: often }\n",
    );
    let home = tempfile::tempdir().unwrap();
    let steps = serde_json::json!([
        {"expect": "next run "},
        {"expect": " started (schedule, run "},
        {"expect": " succeeded in "},
        {"signal": "TERM"},
        {"expect": "stopped"},
    ]);
    let before = chrono::Utc::now();
    let transcript =
        crate::common::on_a_terminal(&ws, home.path(), steps, &["daemon", "--grace", "5"]);
    assert!(transcript.trim_end().ends_with("exit 0"), "{transcript}");
    assert!(
        transcript.contains("daemon started: 1 pipeline on ")
            && transcript.contains(
                "SIGTERM or Ctrl-C stops it (no new runs; running steps get 5 s to finish"
            ),
        "{transcript}"
    );
    // The next fire, in New York's wall-clock time: within a few seconds of the start.
    let next = transcript
        .lines()
        .find_map(|l| l.split("often                    next run ").nth(1))
        .unwrap_or_else(|| panic!("{transcript}"));
    assert!(next.trim_end().ends_with(" America/New_York"), "{next}");
    let shown = chrono::NaiveDateTime::parse_from_str(&next[..16], "%Y-%m-%d %H:%M").unwrap();
    let new_york = before
        .with_timezone(&chrono_tz::America::New_York)
        .naive_local();
    let ahead = (shown - new_york).num_seconds();
    assert!((-60..=60).contains(&ahead), "{next} vs {new_york}");
    // A run's lines name it and its period, and end with its status and duration.
    let week = transcript
        .lines()
        .find(|l| l.contains(" started (schedule, run "))
        .unwrap();
    assert!(week.contains("often                    "), "{week}");
    assert!(
        transcript.contains("stopping: no new runs;"),
        "{transcript}"
    );
}
