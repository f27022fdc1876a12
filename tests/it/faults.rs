//! Faults and hostile configuration (issue 16): each test is a probe of the reliability run,
//! kept as a regression test. No secret leaks (webhook tokens and signatures, values from the
//! environment), nothing wedges (locks released on timeout, stale locks taken over by exactly one
//! process, runs of one daemon waiting for each other, every network call under a deadline,
//! numbers out of range refused), no stored value is wrong (files still being written wait, the
//! ledger says what it knows, an unreadable lake file is named and repaired), and `validate`
//! finds everything at once.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{ACTION_HEADER, Server, Workspace, count, free_port, scan, smtp_once};
use crate::metrics::{fixture_with, ok, run};
use crate::schedule::{Daemon, pipeline, wait_for};

const QUERIES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/queries");

/// The end of week 2026-W13 in Berlin (the fixture's week).
const AS_OF: &str = "2026-03-30T00:00:00+02:00";

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Runs `command`, killing it after `deadline`; the output and how long it took.
fn run_within(mut command: Command, deadline: Duration) -> (Output, Duration) {
    let started = Instant::now();
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    while child.try_wait().unwrap().is_none() && started.elapsed() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let took = started.elapsed();
    let _ = child.kill();
    (child.wait_with_output().unwrap(), took)
}

/// `rows` actions, enough to keep an ingest busy for a while.
fn big_actions(rows: usize) -> String {
    let mut text = String::with_capacity(rows * 70);
    text += ACTION_HEADER;
    text.push('\n');
    for i in 0..rows {
        text += &format!(
            "b{i},2026-03-{:02} {:02}:{:02}:00,,R{},east,OPP-{},,,call,,,\n",
            1 + i % 28,
            i % 24,
            i % 60,
            i % 50,
            i % 3000
        );
    }
    text
}

/// (status, error, outputs) of every run of `pipeline` in the ledger, via DuckDB.
fn runs_of(ws: &Workspace, pipeline: &str) -> Vec<(String, String, String, String)> {
    if !ws.lake().join("runs").exists() {
        return Vec::new();
    }
    ws.duckdb_live(&format!(
        "select status, coalesce(error, ''), outputs, strftime(scheduled_for, '%H:%M:%S') from {} \
         where pipeline = '{pipeline}' order by started",
        scan("runs")
    ))
    .into_iter()
    .map(|r| {
        let s = |i: usize| r[i].as_str().unwrap_or_default().to_string();
        (s(0), s(1), s(2), s(3))
    })
    .collect()
}

// ------------------------------------------------------------------------------------ secrets

/// A webhook URL carries its token (DingTalk: in the query; others: in the path) and flowhealth
/// adds a signature: none of them, nor the signing secret, may appear in anything a failed alert
/// run leaves behind: standard output, the JSON log, the alert ledger, the run ledger.
#[test]
fn a_failed_alert_run_shows_the_webhook_token_and_signature_nowhere() {
    let refused = free_port(); // nothing listens: connection refused
    let echo = free_port();
    let _echo = Server::start("stall_server.py", &[&echo.to_string(), "echo-500"]);
    let (token, path_token, secret) = ("T0KEN4f9c2e", "P4THt0ken77a", "SECd81b3f");
    let ws = fixture_with(&format!(
        "alerts:
  webhooks:
    - {{ name: supervisors, kind: dingtalk, url: \"http://127.0.0.1:{refused}/robot/send?access_token={token}\", secret: \"{secret}\" }}
    - {{ name: echoing, kind: dingtalk, url: \"http://127.0.0.1:{echo}/robot/send?access_token={token}\", secret: \"{secret}\" }}
    - {{ name: ops, kind: json, url: \"http://127.0.0.1:{echo}/hooks/{path_token}\" }}
  notify: [supervisors, echoing, ops]
  retry: {{ attempts: 2, backoff_s: 0.1 }}
"
    ));
    pipeline(
        &ws,
        "alerting",
        "name: alerting\nschedule: \"0 0 8 * * Mon\"\nretries: { attempts: 1, backoff_s: 0 }\nsteps:\n  - alerts: {}\n",
    );
    let json_log = |args: &[&str]| {
        ws.command()
            .args(["--log-format", "json"])
            .args(args)
            .env("RUST_LOG", "info")
            .output()
            .unwrap()
    };
    let alerts = json_log(&["alerts", "--as-of", AS_OF]);
    assert_eq!(alerts.status.code(), Some(1), "{}", text(&alerts));
    let stdout = String::from_utf8_lossy(&alerts.stdout);
    // The failures are told, with each webhook's URL masked.
    for shown in [
        format!("webhook supervisors: POST http://127.0.0.1:{refused}/robot/***"),
        format!("webhook echoing: POST http://127.0.0.1:{echo}/robot/***: HTTP 500"),
        format!("webhook ops: POST http://127.0.0.1:{echo}/hooks/***: HTTP 500"),
    ] {
        assert!(stdout.contains(&shown), "missing `{shown}` in:\n{stdout}");
    }
    let run = json_log(&["run", "alerting"]);
    assert_eq!(run.status.code(), Some(1), "{}", text(&run));

    let mut outputs = vec![
        ("alerts: stdout and log", text(&alerts)),
        ("run: stdout and log", text(&run)),
        (
            "alert ledger",
            std::fs::read_to_string(ws.lake().join("_flowhealth/alerts/ledger.json")).unwrap(),
        ),
        (
            "run ledger",
            format!(
                "{:?}",
                ws.duckdb_live(&format!("select * from {}", scan("runs")))
            ),
        ),
    ];
    for file in ws.lake_files() {
        let bytes = std::fs::read(ws.lake().join(&file)).unwrap();
        outputs.push(("lake file", String::from_utf8_lossy(&bytes).into_owned()));
    }
    assert!(
        outputs[3].1.contains("failed") && outputs[3].1.contains("webhook supervisors"),
        "the run ledger records the failure: {}",
        outputs[3].1
    );
    for (what, output) in &outputs {
        for secret in [token, path_token, secret] {
            assert!(
                !output.contains(secret),
                "{what} shows `{secret}`:\n{output}"
            );
        }
        // (A compressed lake file may hold these words with anything after them.)
        let pairs: &[&str] = if *what == "lake file" {
            &[]
        } else {
            &["sign=", "timestamp="]
        };
        for pair in pairs {
            for (at, _) in output.match_indices(pair) {
                let value = &output[at + pair.len()..];
                assert!(
                    value.starts_with("***"),
                    "{what} shows a {pair} value: {}",
                    output[at..].chars().take(60).collect::<String>()
                );
            }
        }
    }
}

/// A value from the environment arrives byte for byte, whatever it holds (the shipped config's
/// `password: "${SMTP_PASSWORD}"` with backslashes, quotes, `#`, `${`), and never appears in a
/// message; nor does the text around a malformed reference.
#[test]
fn values_from_the_environment_arrive_byte_for_byte_and_are_never_shown() {
    let password = "C:\\new\\x41pp \"q\" 'r' # ${X} $$ \\t: end";
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _smtp = Server::start(
        "smtp_server.py",
        &[
            dir.path().to_str().unwrap(),
            &port.to_string(),
            "--tls",
            "starttls",
            "--user",
            "bot",
            "--password",
            password,
        ],
    );
    let ws = fixture_with(&smtp_once(&format!(
        "host: 127.0.0.1, port: {port}, tls: starttls, username: bot, password: \"${{SMTP_PASSWORD:-unset}}\", timeout_s: 10, ca_file: {}",
        dir.path().join("ca.pem").display()
    )));
    let with_password = |args: &[&str]| {
        ws.command()
            .args(args)
            .env("SMTP_PASSWORD", password)
            .output()
            .unwrap()
    };
    let metrics = with_password(&["metrics", "run", "--period", "2026-W13"]);
    assert_eq!(metrics.status.code(), Some(0), "{}", text(&metrics));
    let sent = with_password(&["report", "weekly", "--period", "2026-W13", "--send"]);
    assert_eq!(sent.status.code(), Some(0), "{}", text(&sent));
    let envelope: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("received/1.json")).unwrap())
            .unwrap();
    assert_eq!(
        envelope["authenticated"], true,
        "the server accepted the password"
    );

    // A value that does not fit is named by its reference, never shown.
    let zone = "Mars/\"Ol'ymp#us";
    let ws = Workspace::in_timezone("${TZ_SECRET}", "");
    let output = ws
        .command()
        .arg("validate")
        .env("TZ_SECRET", zone)
        .output()
        .unwrap();
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(2), "{shown}");
    assert!(
        shown.contains("timezone: `${TZ_SECRET}` is not an IANA timezone"),
        "{shown}"
    );
    assert!(
        !shown.contains("Ol'ymp") && !shown.contains("Mars/"),
        "{shown}"
    );

    // A literal `${` in a value: the problem names the line, not the text around it.
    let ws = Workspace::new(
        "email:\n  smtp: { host: mail, username: u, password: \"hunter2${oops\" }\n",
    );
    let output = ws.command().arg("validate").output().unwrap();
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(2), "{shown}");
    assert!(shown.contains("config.yaml: line 14: `${`"), "{shown}");
    assert!(!shown.contains("hunter2"), "{shown}");
}

// ------------------------------------------------------------------------------ nothing wedges

/// A step that hits `timeout_s` must not leave its ingest lock behind in the daemon: the next
/// ingest, from the CLI while the daemon still runs, lands.
#[test]
fn a_step_that_times_out_in_the_daemon_releases_the_ingest_lock() {
    let ws = Workspace::new("");
    ws.inbox("actions/big.csv", big_actions(300_000));
    land_every(&ws, 20, "timeout_s: 1\n");
    let _daemon = Daemon::start(&ws);
    wait_for("the run to time out", Duration::from_secs(60), || {
        runs_of(&ws, "land").iter().any(|(status, error, _, _)| {
            status == "failed" && error.contains("timed out after 1 s")
        })
    });
    let output = ws.command().arg("ingest").output().unwrap();
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(0), "{shown}");
    assert!(
        shown.contains("actions/big.csv") && shown.contains("ingested"),
        "{shown}"
    );
    assert_eq!(count(&ws, "raw/actions"), 300_000);
}

/// The pipeline `land`: an ingest every `seconds`, tried once, with `more` (YAML lines).
fn land_every(ws: &Workspace, seconds: u32, more: &str) {
    pipeline(
        ws,
        "land",
        &format!(
            "name: land\nschedule: \"*/{seconds} * * * * *\"\ncatch_up: none\n{more}retries: {{ attempts: 1, backoff_s: 0 }}\nsteps:\n  - ingest: []\n"
        ),
    );
}

/// A step that panics (a bug; here a failpoint in the ingest's commit) is a `failed` run, its
/// lock is released, and the daemon goes on: the pipeline's next run lands the file.
#[test]
fn a_step_that_panics_in_the_daemon_fails_its_run_and_the_daemon_goes_on() {
    let ws = Workspace::new("");
    ws.inbox("actions/a.csv", big_actions(3));
    land_every(&ws, 5, "");
    let _daemon = Daemon::start_with(&ws, &[("FLOWHEALTH_FAILPOINT", "commit:staged=panic")]);
    wait_for(
        "a failed run, then one that lands",
        Duration::from_secs(60),
        || {
            let runs = runs_of(&ws, "land");
            let panicked = runs.iter().position(|(status, error, _, _)| {
                status == "failed"
                    && error.contains("a step panicked")
                    && error.contains("failpoint")
            });
            panicked.is_some_and(|at| runs[at..].iter().any(|(status, ..)| status == "succeeded"))
        },
    );
    assert_eq!(count(&ws, "raw/actions"), 3);
}

/// `retries: { backoff_s: -5 }` (and other numbers out of range) are refused by `validate`
/// and by `run`: before, the run panicked (exit 101) and, in the daemon, the pipeline's ledger
/// row stayed `running` and it never ran again.
#[test]
fn numbers_out_of_range_are_refused_before_anything_runs() {
    let ws = Workspace::new(&format!(
        "queries: {QUERIES}\nalerts: {{ retry: {{ attempts: 2, backoff_s: .inf }} }}\ninbox: {{ url: ./inbox, settle_s: -1 }}\n"
    ));
    // The workspace's own `inbox:` line comes first; this test's replaces it.
    let config = std::fs::read_to_string(ws.path().join("config.yaml"))
        .unwrap()
        .replacen("inbox: { url: ./inbox }\n", "", 1);
    std::fs::write(ws.path().join("config.yaml"), config).unwrap();
    pipeline(
        &ws,
        "export",
        "name: export\nschedule: \"0 0 8 * * Mon\"\nretries: { attempts: 3, backoff_s: -5 }\ntimeout_s: .inf\nsteps:\n  - sql: { query: \"select 1 as one\", output: one }\n",
    );
    refused(
        &ws,
        &["validate"],
        &[
            "config.yaml: alerts.retry.backoff_s: must be from 0 to 3600 seconds",
            "config.yaml: inbox.settle_s: must be from 0 to 86400 seconds",
        ],
    );
    // Fix the config; the pipeline's own numbers are still wrong.
    std::fs::write(
        ws.path().join("config.yaml"),
        format!(
            "timezone: Asia/Shanghai\nqueries: {QUERIES}\n{}",
            crate::common::STAGES
        ),
    )
    .unwrap();
    for args in [&["validate"][..], &["run", "export"], &["daemon"]] {
        let shown = refused(
            &ws,
            args,
            &[
                "export.yaml: retries.backoff_s: must be from 0 to 3600 seconds",
                "export.yaml: timeout_s: must be more than 0 and at most 604800 seconds",
            ],
        );
        assert!(!shown.contains("panicked"), "{shown}");
    }
}

/// Runs the command `args`, which must refuse its input (exit 2) saying each of `expected`;
/// returns what it said.
fn refused(ws: &Workspace, args: &[&str], expected: &[&str]) -> String {
    let output = ws.command().args(args).output().unwrap();
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(2), "{args:?}: {shown}");
    for expected in expected {
        assert!(
            shown.contains(expected),
            "{args:?}: missing `{expected}` in:\n{shown}"
        );
    }
    shown
}

/// The shipped `ingest_actions` and `weekly_health` both start with an ingest and meet every
/// Monday at 08:00: within one daemon the second waits for the first, and says so in the ledger.
#[test]
fn runs_of_one_daemon_that_need_the_same_lock_wait_for_each_other() {
    let ws = Workspace::new("");
    ws.inbox("actions/big.csv", big_actions(150_000));
    for name in ["first", "second"] {
        pipeline(
            &ws,
            name,
            &format!(
                "name: {name}\nschedule: \"*/20 * * * * *\"\ncatch_up: none\nretries: {{ attempts: 1, backoff_s: 0 }}\nsteps:\n  - ingest: []\n"
            ),
        );
    }
    let _daemon = Daemon::start(&ws);
    let finished = |name: &str| {
        runs_of(&ws, name)
            .into_iter()
            .find(|(status, ..)| status != "running")
    };
    wait_for("both runs to end", Duration::from_secs(90), || {
        finished("first").is_some() && finished("second").is_some()
    });
    let (first, second) = (finished("first").unwrap(), finished("second").unwrap());
    assert_eq!(
        first.3, second.3,
        "the two fired together: {first:?} {second:?}"
    );
    assert_eq!(
        (first.0.as_str(), second.0.as_str()),
        ("succeeded", "succeeded"),
        "{first:?}\n{second:?}"
    );
    let waited: Vec<&String> = [&first.2, &second.2]
        .into_iter()
        .filter(|outputs| outputs.contains("waited "))
        .collect();
    assert_eq!(waited.len(), 1, "one of them waited: {first:?}\n{second:?}");
    assert!(
        waited[0].contains("for the ingest lock (held by pipeline "),
        "{}",
        waited[0]
    );
    assert_eq!(count(&ws, "raw/actions"), 150_000);
}

/// SMTP (a server that stalls after EHLO, or after AUTH), webhooks, S3 and a Ballista scheduler
/// (servers that accept and never answer): every call gives up after its configured deadline.
#[test]
fn every_network_call_gives_up_after_its_deadline() {
    for (mode, login) in [
        ("smtp-after-ehlo", ""),
        ("smtp-after-auth", ", username: bot, password: pw"),
    ] {
        let port = free_port();
        let _stall = Server::start("stall_server.py", &[&port.to_string(), mode]);
        let ws = fixture_with(&smtp_once(&format!(
            "host: 127.0.0.1, port: {port}, tls: none, timeout_s: 2{login}"
        )));
        ok(&ws, &["metrics", "run", "--period", "2026-W13"]);
        let mut command = ws.command();
        command.args(["report", "weekly", "--period", "2026-W13", "--send"]);
        gives_up(
            mode,
            command,
            Duration::from_secs(20),
            &format!("smtp 127.0.0.1:{port}: no answer within 2 s (email.smtp.timeout_s)"),
        );
    }

    let port = free_port();
    let _stall = Server::start("stall_server.py", &[&port.to_string(), "silent"]);
    let ws = fixture_with(&format!(
        "alerts:
  webhooks: [{{ name: ops, kind: json, url: \"http://127.0.0.1:{port}/hook\" }}]
  retry: {{ attempts: 1, backoff_s: 0 }}
  timeout_s: 1
"
    ));
    let mut command = ws.command();
    command.args(["alerts", "--as-of", AS_OF]);
    gives_up(
        "webhook",
        command,
        Duration::from_secs(20),
        "alerts.timeout_s",
    );

    let ws = Workspace::new(&format!("queries: {QUERIES}\n"));
    let config = std::fs::read_to_string(ws.path().join("config.yaml"))
        .unwrap()
        .replacen(
            "lake: { url: ./lake }",
            &format!(
                "lake: {{ url: s3://flowhealth/lake, s3: {{ endpoint: \"http://127.0.0.1:{port}\", region: us-east-1, access_key_id: test, secret_access_key: test, allow_http: true, timeout_s: 1 }} }}"
            ),
            1,
        );
    std::fs::write(ws.path().join("config.yaml"), config).unwrap();
    ws.inbox("actions/a.csv", big_actions(3));
    let mut command = ws.command();
    command.arg("ingest");
    gives_up("S3", command, Duration::from_secs(30), "");

    // A Ballista scheduler that accepts and never answers (the HTTP/2 handshake stalls).
    let ws = fixture_with(&format!(
        "engine: {{ kind: ballista, scheduler: \"df://127.0.0.1:{port}\", timeout_s: 2 }}\n"
    ));
    let mut command = ws.command();
    command.args(["metrics", "run", "--period", "2026-W13"]);
    gives_up(
        "cluster",
        command,
        Duration::from_secs(15),
        &format!(
            "cannot reach the Ballista scheduler at df://127.0.0.1:{port} (engine.scheduler): no answer within 2 s (engine.timeout_s)"
        ),
    );
}

/// Runs `command`, which must fail at run time (exit 1) within `within`, saying `told`; it is
/// killed after twice that.
fn gives_up(what: &str, command: Command, within: Duration, told: &str) {
    let (output, took) = run_within(command, within * 2);
    let shown = text(&output);
    assert_eq!(
        output.status.code(),
        Some(1),
        "{what} after {took:?}: {shown}"
    );
    assert!(took < within, "{what}: took {took:?}");
    assert!(shown.contains(told), "{what}: {shown}");
}

/// Runs `flowhealth ingest` `n` times at once on the workspace. Each process reads its config
/// from its own named pipe and the pipes are written one right after the other, so that every
/// process goes for the lock within moments of the others (process start-up on a busy machine
/// would otherwise spread them over seconds, and a race would seldom be a race).
fn ingests_at_once(ws: &Workspace, n: usize) -> Vec<Output> {
    let config = std::fs::read_to_string(ws.path().join("config.yaml")).unwrap();
    let children: Vec<_> = (0..n)
        .map(|i| {
            let pipe = ws.path().join(format!("config-{i}.yaml"));
            let made = Command::new("mkfifo").arg(&pipe).status().unwrap();
            assert!(made.success(), "mkfifo");
            ws.command()
                .args(["--config", pipe.to_str().unwrap(), "ingest"])
                .env("RUST_LOG", "error")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for i in 0..n {
        // Opening a pipe for writing waits for its reader: the process is at its config.
        std::fs::write(ws.path().join(format!("config-{i}.yaml")), &config).unwrap();
    }
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

/// An ingest killed (SIGKILL) while it holds its lock leaves the lock naming a pid that is gone;
/// then twenty ingests start at once: exactly one takes the lock over (and lands the input), the
/// others find it held. `rows` in the large file; the count is checked on a local lake.
fn one_of_twenty_takes_over_a_stale_lock(ws: &Workspace, rows: usize, local: bool) {
    ws.inbox("actions/a-small.csv", big_actions(3));
    ws.inbox("actions/b-big.csv", big_actions(rows).replace("\nb", "\nB"));
    let mut killed = ws
        .command()
        .args(["--log-format", "json", "ingest"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first file is done, the second (large) one is being read: the lock is held.
    let mut log = std::io::BufReader::new(killed.stderr.take().unwrap());
    let mut line = String::new();
    while std::io::BufRead::read_line(&mut log, &mut line).unwrap() > 0 {
        if line.contains("a-small.csv") && line.contains("File done.") {
            break;
        }
        line.clear();
    }
    assert!(
        line.contains("File done."),
        "the first ingest did not get going"
    );
    killed.kill().unwrap();
    killed.wait().unwrap();

    let outputs = ingests_at_once(ws, 20);
    let winners: Vec<&Output> = outputs.iter().filter(|o| o.status.success()).collect();
    let shown: Vec<String> = outputs.iter().map(text).collect();
    assert_eq!(winners.len(), 1, "exactly one took the lock: {shown:#?}");
    assert!(text(winners[0]).contains("actions/b-big.csv"), "{shown:#?}");
    for output in outputs.iter().filter(|o| !o.status.success()) {
        let told = text(output);
        assert_eq!(output.status.code(), Some(1), "{told}");
        assert!(told.contains("ingest is already running"), "{told}");
    }
    if local {
        assert_eq!(count(ws, "raw/actions"), rows as i64 + 3);
    }
}

#[test]
fn a_stale_lock_is_taken_over_by_exactly_one_of_twenty_processes() {
    one_of_twenty_takes_over_a_stale_lock(&Workspace::new(""), 200_000, true);
}

/// The same on S3 (moto): the takeover is a create-only put there too (`If-None-Match: *`).
#[test]
fn a_stale_lock_on_s3_is_taken_over_by_exactly_one_of_twenty_processes() {
    let moto = crate::s3::start_moto();
    let ws = Workspace::new("");
    let config = std::fs::read_to_string(ws.path().join("config.yaml"))
        .unwrap()
        .replacen(
            "lake: { url: ./lake }",
            &format!(
                "lake: {{ url: s3://flowhealth/lake, s3: {{ endpoint: \"{}\", region: us-east-1, access_key_id: test, secret_access_key: test, allow_http: true }} }}",
                moto.endpoint
            ),
            1,
        );
    std::fs::write(ws.path().join("config.yaml"), config).unwrap();
    one_of_twenty_takes_over_a_stale_lock(&ws, 50_000, false);
}

// ------------------------------------------------------------------ no stored value is wrong

/// A file caught while it is being written (its last line cut inside the last field) waits:
/// landing it would land the cut value, and the whole row, once written, would be a duplicate.
/// So does a file changed within `inbox.settle_s`.
#[test]
fn a_file_still_being_written_waits_and_lands_whole_later() {
    let ws = Workspace::new("");
    let whole = format!(
        "{ACTION_HEADER}\na1,2026-03-02 09:00:00,,R1,east,,,,call,,first note,\na2,2026-03-02 10:00:00,,R1,east,,,,call,,the whole second note,\n"
    );
    ws.inbox("actions/live.csv", &whole[..whole.len() - 12]);
    ws.inbox(
        "actions/live.ndjson",
        "{\"action_id\": \"n1\", \"occurred_at\": \"2026-03-02T09:00:00\", \"owner_id\": \"R1\", \"action_type\": \"call\", \"note\": \"cut he",
    );
    let output = ws.command().arg("ingest").output().unwrap();
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(0), "{shown}");
    for file in ["actions/live.csv", "actions/live.ndjson"] {
        assert!(
            shown.contains(&format!(
                "{file}: waiting: still being written: its last line has no line end yet"
            )),
            "{file}: {shown}"
        );
    }
    assert!(!ws.lake().join("raw/actions").exists(), "nothing landed");

    ws.inbox("actions/live.csv", &whole);
    ws.inbox(
        "actions/live.ndjson",
        "{\"action_id\": \"n1\", \"occurred_at\": \"2026-03-02T09:00:00\", \"owner_id\": \"R1\", \"action_type\": \"call\", \"note\": \"cut here, then whole\"}\n",
    );
    ok(&ws, &["ingest"]);
    let notes = ws.duckdb(&format!(
        "select action_id, note from {} order by 1",
        scan("raw/actions")
    ));
    assert_eq!(
        notes,
        [
            vec![json!("a1"), json!("first note")],
            vec![json!("a2"), json!("the whole second note")],
            vec![json!("n1"), json!("cut here, then whole")],
        ]
    );

    // inbox.settle_s: a file changed within it waits, whatever its content.
    let ws = Workspace::new("");
    let config = std::fs::read_to_string(ws.path().join("config.yaml"))
        .unwrap()
        .replacen(
            "inbox: { url: ./inbox }",
            "inbox: { url: ./inbox, settle_s: 60 }",
            1,
        );
    std::fs::write(ws.path().join("config.yaml"), config).unwrap();
    ws.inbox("actions/fresh.csv", &whole);
    let output = ws.command().arg("ingest").output().unwrap();
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(0), "{shown}");
    assert!(
        shown.contains("actions/fresh.csv: waiting: still being written: modified 0 s ago, and inbox.settle_s is 60 s"),
        "{shown}"
    );
    let file = std::fs::File::options()
        .append(true)
        .open(ws.path().join("inbox/actions/fresh.csv"))
        .unwrap();
    file.set_modified(std::time::SystemTime::now() - Duration::from_secs(120))
        .unwrap();
    ok(&ws, &["ingest"]);
    assert_eq!(count(&ws, "raw/actions"), 2);
}

/// What the ledger knows of each file, in the report: same name with new content, same content
/// under a new name, or a name and content it has not seen, whose repeated rows keep their first
/// values (an edited copy re-sent under another name).
#[test]
fn the_report_says_what_the_ledger_knows_of_each_file() {
    let ws = Workspace::new("");
    let rows = |notes: &[&str]| {
        let mut text = format!("{ACTION_HEADER}\n");
        for (i, note) in notes.iter().enumerate() {
            text += &format!("a{i},2026-03-02 09:0{i}:00,,R1,east,,,,call,,{note},\n");
        }
        text
    };
    ws.inbox("actions/monday.csv", rows(&["x", "y", "z"]));
    ok(&ws, &["ingest"]);
    ws.inbox("actions/monday-copy.csv", rows(&["x", "y", "z"]));
    ws.inbox(
        "actions/monday-fixed.csv",
        rows(&["x", "fixed", "z", "new"]),
    );
    let out = ok(&ws, &["ingest"]);
    assert!(
        out.contains(
            "actions/monday-copy.csv: already ingested: same content as actions/monday.csv"
        ),
        "{out}"
    );
    assert!(
        out.contains(
            "actions/monday-fixed.csv: ingested: a name and content new to the ledger; 3 of its 4 rows repeat keys already landed"
        ) && out.contains("keep the values they first landed with"),
        "{out}"
    );
    ws.inbox("actions/monday.csv", rows(&["x", "y", "z", "new", "newer"]));
    let out = ok(&ws, &["ingest"]);
    assert!(
        out.contains("actions/monday.csv: changed: changed since it was ingested at"),
        "{out}"
    );
    let notes = ws.duckdb(&format!(
        "select note from {} where action_id = 'a1'",
        scan("raw/actions")
    ));
    assert_eq!(notes, [vec![json!("y")]], "the first landing stays");
}

/// One truncated Parquet file in `raw/`: `query`, `metrics run` and `ingest` name it and say
/// what to do; ingest of other files goes on; `doctor` says what `repair` will do, and `repair`
/// sets it aside and lands its inbox file again, or says the inbox file is gone.
#[test]
fn an_unreadable_lake_file_is_named_and_repair_lands_its_source_again() {
    let ws = fixture_with("");
    let truncate = |area: &str| -> String {
        let file = ws
            .lake_files()
            .into_iter()
            .find(|f| f.starts_with(area) && f.ends_with(".parquet"))
            .unwrap_or_else(|| panic!("no file in {area}"));
        let path = ws.lake().join(&file);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        file
    };
    // A3's day, inside the week the metric reads.
    let broken = truncate("raw/actions/dt=2026-03-24/");
    let names = |output: &Output| {
        let shown = text(output);
        assert_eq!(output.status.code(), Some(1), "{shown}");
        assert!(shown.contains(&broken), "does not name {broken}: {shown}");
        assert!(shown.contains("flowhealth doctor"), "{shown}");
    };
    names(&run(&ws, &["query", "select count(*) from actions"]));
    names(&run(
        &ws,
        &["metrics", "run", "evidence_rate", "--period", "2026-W13"],
    ));
    ws.inbox(
        "actions/late.csv",
        "action_id,occurred_at,owner_id,action_type\nL1,2026-03-26 10:00:00,R9,call\n",
    );
    let ingest = run(&ws, &["ingest"]);
    names(&ingest);
    let shown = text(&ingest);
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("actions/late.csv") && l.ends_with("ingested")),
        "the other file landed: {shown}"
    );

    let doctor = run(&ws, &["doctor"]);
    let shown = text(&doctor);
    assert_eq!(doctor.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains(&format!("{broken}: cannot be read"))
            && shown.contains("lands actions/actions.csv again from the inbox"),
        "{shown}"
    );
    let repair = ok(&ws, &["repair"]);
    assert!(repair.contains(&format!("set aside: {broken}")), "{repair}");
    assert!(
        ws.lake_files()
            .contains(&format!("quarantine/_corrupt/{broken}"))
    );
    let doctor = ok(&ws, &["doctor"]);
    assert!(doctor.starts_with("lake ok"), "{doctor}");
    let ids = ws.duckdb(&format!(
        "select count(*), count(distinct action_id) from {}",
        scan("raw/actions")
    ));
    assert_eq!(ids[0], vec![json!(9), json!(9)], "A1..A8 and L1, once each");
    ok(&ws, &["query", "select count(*) from actions"]);

    // The inbox file is gone: its rows stay missing until it is back.
    let broken = truncate("raw/stage_changes/");
    let changes = std::fs::read(ws.path().join("inbox/stage_changes/changes.csv")).unwrap();
    std::fs::remove_file(ws.path().join("inbox/stage_changes/changes.csv")).unwrap();
    let doctor = run(&ws, &["doctor"]);
    let shown = text(&doctor);
    assert_eq!(doctor.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("its rows came from stage_changes/changes.csv, which is not in the inbox"),
        "{shown}"
    );
    let repair = run(&ws, &["repair"]);
    assert_eq!(repair.status.code(), Some(1), "{}", text(&repair));
    assert!(
        ws.lake_files()
            .contains(&format!("quarantine/_corrupt/{broken}"))
    );
    ws.inbox("stage_changes/changes.csv", changes);
    let doctor = run(&ws, &["doctor"]);
    let shown = text(&doctor);
    assert!(
        shown.contains("stage_changes/changes.csv: 1 of the")
            && shown.contains("are missing from the lake"),
        "{shown}"
    );
    ok(&ws, &["repair"]);
    assert!(ok(&ws, &["doctor"]).starts_with("lake ok"));
    assert_eq!(count(&ws, "raw/stage_changes"), 8);
}

// -------------------------------------------------------------- validate finds everything

/// Several problems in one section, and in other sections, and in a pipeline file: all of them
/// in one run of `validate` (a type error used to hide the rest of its section, and the checks
/// of every other section).
#[test]
fn validate_reports_every_problem_at_once() {
    let ws = Workspace::new(&format!(
        "queries: {QUERIES}
email:
  transport: smtp
  smtp: {{ host: mail, port: twenty-five, tls: sometimes, timeout_s: soon, colour: blue }}
  retry: {{ attempts: -1, backoff_s: 2 }}
alerts:
  webhooks:
    - {{ name: a, kind: dingding, url: \"http://127.0.0.1/robot\" }}
    - {{ name: b, kind: json }}
  retry: {{ attempts: 2, backoff_s: -1 }}
report: {{ language: fr, trend_weeks: 0 }}
"
    ));
    pipeline(
        &ws,
        "multi",
        "name: multi\nschedule: \"0 0 8 * * Mon\"\nretries: { attempts: 0, backoff_s: -5 }\ntimeout_s: -1\nsteps:\n  - compute: [x]\n  - ingest: [deals]\n  - report: yearly\ncolour: red\n",
    );
    refused(
        &ws,
        &["validate"],
        &[
            "config.yaml: email.smtp.port: invalid type: string \"twenty-five\", expected u16",
            "config.yaml: email.smtp.timeout_s: invalid type: string \"soon\", expected f64",
            "config.yaml: email.smtp.colour: unknown field `colour`",
            "config.yaml: email.retry.attempts: invalid value: integer `-1`, expected u32",
            "config.yaml: email.smtp.tls: `sometimes` is not one of starttls, implicit, none",
            "config.yaml: alerts.webhooks[0].kind: unknown variant `dingding`",
            "config.yaml: alerts.webhooks[1]: missing field `url`",
            "config.yaml: alerts.retry.backoff_s: must be from 0 to 3600 seconds",
            "config.yaml: report.language: `fr` is not one of en, zh",
            "config.yaml: report.trend_weeks: must be from 1 to 520 weeks",
            "multi.yaml: steps[0]: unknown field `compute`",
            "multi.yaml: steps[2].report: unknown variant `yearly`",
            "multi.yaml: colour: unknown field `colour`",
            "multi.yaml: retries.attempts: must be from 1 to 100",
            "multi.yaml: retries.backoff_s: must be from 0 to 3600 seconds",
            "multi.yaml: timeout_s: must be more than 0",
            "multi.yaml: steps[1].ingest: unknown dataset `deals`",
        ],
    );
}

/// A key that names a metric the catalog does not have is an error, in `validate` and in every
/// command that reads the catalog.
#[test]
fn a_threshold_that_names_no_metric_is_an_error() {
    let ws = Workspace::new(&format!(
        "queries: {QUERIES}\nthresholds:\n  evidnce_rate: {{ min: 0.9 }}\n  evidence_rate: {{ min: 0.8 }}\n"
    ));
    for args in [
        &["validate"][..],
        &["metrics", "run", "--period", "2026-W13"],
    ] {
        let shown = refused(
            &ws,
            args,
            &["config.yaml: thresholds.evidnce_rate: no metric `evidnce_rate` in"],
        );
        assert!(!shown.contains("thresholds.evidence_rate"), "{shown}");
    }
}

/// Binary garbage with a text file's name is rejected as not a text file, with a short escaped
/// excerpt instead of a kilobyte of mojibake.
#[test]
fn binary_garbage_in_the_inbox_is_rejected_as_not_text_with_a_short_excerpt() {
    let ws = Workspace::new("");
    let mut garbage = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR".to_vec();
    let mut state = 0x2545_f491_u32;
    garbage.extend((0..4096).map(|_| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        (state >> 24) as u8
    }));
    ws.inbox("actions/photo.csv", &garbage);
    ws.inbox("actions/good.csv", big_actions(2));
    let output = ws.command().arg("ingest").output().unwrap();
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(2), "{shown}");
    let line = shown
        .lines()
        .find(|l| l.starts_with("actions/photo.csv: rejected: "))
        .unwrap_or_else(|| panic!("{shown}"));
    assert!(
        line.starts_with(
            r#"actions/photo.csv: rejected: not a text file: it starts with "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"..."#
        ),
        "{line}"
    );
    assert!(line.len() < 250, "{} characters: {line}", line.len());
    assert_eq!(count(&ws, "raw/actions"), 2);
}

/// An `ingest` step with a rejected file fails as `flowhealth ingest` does (exit 2 there): the
/// run is `failed`, naming the file, and is not retried; the good files still land.
#[test]
fn an_ingest_step_with_a_rejected_file_fails_as_the_command_does() {
    let ws = Workspace::new("");
    ws.inbox("actions/good.csv", big_actions(3));
    ws.inbox(
        "actions/no-owner.csv",
        "action_id,occurred_at,action_type\na,2026-03-02 09:00,call\n",
    );
    let output = ws.command().arg("ingest").output().unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    ws.inbox(
        "actions/no-owner-2.csv",
        "action_id,occurred_at,action_type\nb,2026-03-02 09:00,call\n",
    );
    pipeline(
        &ws,
        "land",
        "name: land\nschedule: \"0 */15 * * * *\"\nretries: { attempts: 3, backoff_s: 0.1 }\nsteps:\n  - ingest: []\n",
    );
    let output = ws.command().args(["run", "land"]).output().unwrap();
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    let runs = runs_of(&ws, "land");
    assert_eq!(runs.len(), 1, "{runs:?}");
    let (status, error, ..) = &runs[0];
    assert_eq!(status, "failed", "{runs:?}");
    assert!(
        error.contains(
            "actions/no-owner-2.csv: rejected: the header lacks required column(s) owner_id"
        ),
        "{error}"
    );
    let attempts = ws.duckdb(&format!("select attempts from {}", scan("runs")));
    assert_eq!(
        attempts,
        [vec![json!(1)]],
        "the user's error is not retried"
    );
    assert_eq!(count(&ws, "raw/actions"), 3);
}
