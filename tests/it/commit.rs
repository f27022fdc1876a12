//! Readers see only committed, finished files (`src/lake/commit.rs`): a directory reader and
//! `flowhealth query` during a large ingest, and `query` and `metrics run` after a `kill -9` at
//! each point of the commit protocol, on a local lake and on S3 (moto).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{ACTION_HEADER, STAGES, Workspace};

/// `n` actions numbered from `from`, over the three days 2-4 March 2026 (week 2026-W10): every
/// fourth a `demo` (evidence required), half of those with evidence.
fn actions(from: usize, n: usize) -> String {
    let mut text = format!("{ACTION_HEADER}\n");
    for i in from..from + n {
        let kind = if i % 4 == 0 { "demo" } else { "call" };
        let evidence = if i % 8 == 0 { "att://x" } else { "" };
        text += &format!(
            "a{i},2026-03-{:02} {:02}:{:02}:00,,R{},east,OPP-{},,,{kind},{evidence},,\n",
            2 + i % 3,
            i % 24,
            i % 60,
            i % 7,
            i % 500
        );
    }
    text
}

/// (rows, demo actions, demo actions with evidence) of [`actions`]`(from, n)`.
fn expected(from: usize, n: usize) -> (i64, i64, i64) {
    let range = from..from + n;
    (
        n as i64,
        range.clone().filter(|i| i % 4 == 0).count() as i64,
        range.filter(|i| i % 8 == 0).count() as i64,
    )
}

/// The rows the ingest ledger of `actions` says are committed (the sum of `landed`).
fn committed_rows(lake: &std::path::Path) -> i64 {
    let dir = lake.join("_flowhealth/ingest/ledger/actions");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| {
            let text = std::fs::read_to_string(entry.path()).unwrap();
            let entry: serde_json::Value = serde_json::from_str(&text).unwrap();
            entry["landed"].as_i64().unwrap()
        })
        .sum()
}

/// Runs `flowhealth query SQL --format csv` and returns the data lines.
fn query(command: Command, sql: &str) -> Result<Vec<String>, String> {
    let mut command = command;
    let output = command
        .args(["query", sql, "--format", "csv"])
        .output()
        .unwrap();
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).into_owned());
    }
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .skip(1)
        .map(String::from)
        .collect())
}

/// Reads `lake/raw/actions` as a directory, as BI users do, in a loop until `stop` exists:
/// pandas and pyarrow in turn, each read followed by the ledger's committed rows. Prints JSON:
/// reads, errors, reads that saw more rows than committed, and the first messages.
const READER: &str = r#"
import glob, json, os, sys
import pandas as pd, pyarrow.dataset as ds
lake, stop = sys.argv[1], sys.argv[2]
def committed():
    return sum(json.load(open(p))['landed'] for p in glob.glob(lake + '/_flowhealth/ingest/ledger/actions/*.json'))
reads = errors = over = 0
messages = []
while True:
    done = os.path.exists(stop)
    if os.path.isdir(lake + '/raw/actions'):
        try:
            if reads % 2:
                rows = len(pd.read_parquet(lake + '/raw/actions'))
            else:
                rows = ds.dataset(lake + '/raw/actions', format='parquet', partitioning='hive').count_rows()
            ledger = committed()
            reads += 1
            if rows > ledger:
                over += 1
                messages.append(f'{rows} rows read, {ledger} committed')
        except Exception as e:
            errors += 1
            messages.append(repr(e)[:300])
    if done:
        break
print(json.dumps({'reads': reads, 'errors': errors, 'over': over, 'messages': messages[:5]}))
"#;

#[test]
fn readers_during_a_large_ingest_see_only_committed_rows() {
    let ws = Workspace::new("");
    // Several input files, each written as several Parquet files over three days: the ingest
    // commits one input file at a time while the readers run.
    let per_file = 150_000;
    for f in 0..4 {
        ws.inbox(
            &format!("actions/part-{f}.csv"),
            actions(f * per_file, per_file),
        );
    }
    let stop = ws.path().join("stop");
    let reader = Command::new("python3")
        .args([
            "-c",
            READER,
            &ws.lake().display().to_string(),
            &stop.display().to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ingest = ws
        .command()
        .arg("ingest")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // flowhealth's own engine, in a loop beside it: a count never above what was committed
    // when it finished, and never an error.
    let (mut queries, mut query_errors, mut seen) = (0, Vec::new(), Vec::new());
    while ingest.try_wait().unwrap().is_none() {
        match query(ws.command(), "select count(*) from actions") {
            Ok(lines) => {
                let rows: i64 = lines[0].parse().unwrap();
                let ledger = committed_rows(&ws.lake());
                assert!(
                    rows <= ledger,
                    "query saw {rows} rows, the ledger had committed {ledger}"
                );
                seen.push(rows);
                queries += 1;
            }
            Err(error) => query_errors.push(error),
        }
    }
    assert!(ingest.wait().unwrap().success());
    std::fs::write(&stop, "").unwrap();
    let output = reader.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(summary["over"], 0, "{summary}");
    assert!(summary["reads"].as_i64().unwrap() >= 5, "{summary}");
    assert!(query_errors.is_empty(), "{query_errors:?}");
    assert!(queries >= 3, "only {queries} queries ran during the ingest");
    // The readers ran while rows were landing, not only before or after.
    assert!(
        seen.iter().any(|&n| n > 0 && n < 4 * per_file as i64),
        "{seen:?}"
    );
    let total = query(ws.command(), "select count(*) from actions").unwrap();
    assert_eq!(total, vec![(4 * per_file).to_string()]);
    assert!(
        !ws.lake_files().iter().any(|f| f.starts_with("_staging/")),
        "{:?}",
        ws.lake_files()
    );
}

/// Starts `command` and waits until a line of its standard error contains `wanted`; returns the
/// running process.
fn start_until(mut command: Command, wanted: &str) -> Child {
    let mut child: Child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (sender, receiver) = std::sync::mpsc::channel();
    let wanted_line = wanted.to_string();
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains(&wanted_line) {
                // Reading on: the process must not block on a full pipe.
                let _ = sender.send(Ok(line));
                continue;
            }
            lines.push(line);
        }
        let _ = sender.send(Err(lines.join("\n")));
    });
    let seen = receiver
        .recv_timeout(Duration::from_secs(300))
        .expect("the process said it");
    assert!(seen.is_ok(), "never said {wanted:?}: {seen:?}");
    child
}

/// Starts `command` with `FLOWHEALTH_FAILPOINT=point` and waits until it says it paused there.
fn pause_at(mut command: Command, point: &str) -> Child {
    command.env("FLOWHEALTH_FAILPOINT", point);
    start_until(command, "paused at")
}

/// Starts `command` with `FLOWHEALTH_FAILPOINT=point`, waits until it says it paused there, and
/// kills it with SIGKILL.
fn kill_at(command: Command, point: &str) {
    let mut child = pause_at(command, point);
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

/// The week's evidence_rate organisation row (population, with_evidence), by DuckDB.
fn evidence(ws: &Workspace) -> Vec<serde_json::Value> {
    ws.duckdb(
        "select population, with_evidence from read_parquet('{lake}/metrics/evidence_rate/version=3/period=2026-W10/*.parquet') where team is null",
    )
    .remove(0)
}

#[test]
fn after_a_kill_at_each_point_of_a_commit_readers_see_exactly_the_committed_rows() {
    // The first input file commits; the second is killed at `point` (`@2`: its transaction).
    // Before the ledger entry is written its rows are invisible; after it, every reader sees
    // all of them (the moves are finished by the reader).
    for (point, second_committed) in [
        ("commit:staged@2", false),
        ("commit:intent@2", false),
        ("commit:committed@2", true),
        ("commit:moved@2", true),
    ] {
        let ws = Workspace::new(concat!(
            "queries: ",
            env!("CARGO_MANIFEST_DIR"),
            "/queries\n"
        ));
        ws.inbox("actions/a.csv", actions(0, 3000));
        ws.inbox("actions/b.csv", actions(3000, 6000));
        let mut ingest = ws.command();
        ingest.arg("ingest");
        kill_at(ingest, point);

        let (a, b) = (expected(0, 3000), expected(3000, 6000));
        let want = if second_committed {
            (a.0 + b.0, a.1 + b.1, a.2 + b.2)
        } else {
            a
        };
        assert_eq!(committed_rows(&ws.lake()), want.0, "{point}");
        let seen = query(
            ws.command(),
            "select count(*), count(*) filter (where action_type = 'demo'), count(*) filter (where action_type = 'demo' and evidence is not null) from actions",
        )
        .unwrap();
        assert_eq!(
            seen,
            vec![format!("{},{},{}", want.0, want.1, want.2)],
            "{point}"
        );
        let run = ws
            .command()
            .args(["metrics", "run", "evidence_rate", "--period", "2026-W10"])
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "{point}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
        assert_eq!(
            evidence(&ws),
            vec![serde_json::json!(want.1), serde_json::json!(want.2)],
            "{point}"
        );

        // The next ingest finishes the job exactly: every row once, nothing staged left.
        let output = ws.command().arg("ingest").output().unwrap();
        assert!(output.status.success(), "{point}");
        let all = (a.0 + b.0, a.1 + b.1, a.2 + b.2);
        let seen = query(
            ws.command(),
            "select count(*), count(distinct action_id), count(*) filter (where action_type = 'demo') from actions",
        )
        .unwrap();
        assert_eq!(
            seen,
            vec![format!("{},{},{}", all.0, all.0, all.1)],
            "{point}"
        );
        assert!(
            ws.lake_files()
                .iter()
                .all(|f| !f.starts_with("_staging/") && !f.starts_with("_flowhealth/commits/")),
            "{point}: {:?}",
            ws.lake_files()
        );
    }
}

#[test]
fn a_commit_killed_before_its_moves_finished_is_finished_by_a_reader_on_s3() {
    let moto = crate::s3::start_moto();
    let ws = Workspace::new("");
    let s3 = format!(
        "s3: {{ endpoint: \"{}\", region: us-east-1, access_key_id: test, secret_access_key: test, allow_http: true }}",
        moto.endpoint
    );
    std::fs::write(
        ws.path().join("config.yaml"),
        format!(
            "timezone: Asia/Shanghai\nlake: {{ url: s3://flowhealth/lake, {s3} }}\ninbox: {{ url: ./inbox }}\n{STAGES}"
        ),
    )
    .unwrap();
    ws.inbox("actions/a.csv", actions(0, 3000));
    ws.inbox("actions/b.csv", actions(3000, 6000));
    let list = |prefix: &str| -> Vec<String> {
        crate::common::python_json(&[
            "-c",
            "import boto3, json, sys; c = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test'); \
             print(json.dumps([o['Key'] for o in c.list_objects_v2(Bucket='flowhealth', Prefix=sys.argv[2]).get('Contents', [])]))",
            &moto.endpoint,
            prefix,
        ])
    };

    // Killed while staging the second file: nothing of it under raw/.
    let mut ingest = ws.command();
    ingest.arg("ingest");
    kill_at(ingest, "commit:staged@2");
    assert!(!list("lake/_staging/").is_empty());
    let seen = query(ws.command(), "select count(*) from actions").unwrap();
    assert_eq!(seen, vec!["3000".to_string()]);

    // The next ingest rolls that back and is killed after the second file's commit, before its
    // files were moved: a reader finishes the moves and sees every committed row.
    let mut ingest = ws.command();
    ingest.arg("ingest");
    kill_at(ingest, "commit:committed");
    assert!(!list("lake/_flowhealth/commits/").is_empty());
    let seen = query(ws.command(), "select count(*) from actions").unwrap();
    assert_eq!(seen, vec!["9000".to_string()]);
    assert!(
        list("lake/_staging/").is_empty(),
        "{:?}",
        list("lake/_staging/")
    );
    assert!(list("lake/_flowhealth/commits/").is_empty());
    let raw = list("lake/raw/actions/");
    assert!(
        !raw.is_empty() && raw.iter().all(|k| k.ends_with(".parquet")),
        "{raw:?}"
    );

    let output = ws.command().arg("ingest").output().unwrap();
    assert!(output.status.success());
    let seen = query(
        ws.command(),
        "select count(*), count(distinct action_id) from actions",
    )
    .unwrap();
    assert_eq!(seen, vec!["9000,9000".to_string()]);
}

/// The data lines of the ingest report on standard output, by file: read, landed, quarantined,
/// duplicates, status.
fn report_line(stdout: &str, file: &str) -> Vec<String> {
    let line = stdout
        .lines()
        .find(|line| line.starts_with(file) && !line.contains(": "))
        .unwrap_or_else(|| panic!("no line for {file} in {stdout}"));
    line.split_whitespace().skip(1).map(String::from).collect()
}

#[test]
fn a_move_that_fails_after_the_commit_still_counts_the_file_as_landed() {
    // b.csv repeats a.csv's last 1000 actions (a daily export repeating yesterday's rows). The
    // first move of a.csv's commit fails: a.csv is committed all the same, so b.csv's repeated
    // rows are duplicates of it, not landed a second time, and a.csv is not reported failed.
    let ws = Workspace::new("");
    ws.inbox("actions/a.csv", actions(0, 3000));
    ws.inbox("actions/b.csv", actions(2000, 2000));
    let output = ws
        .command()
        .arg("ingest")
        .env("FLOWHEALTH_FAILPOINT", "commit:moved@1=error")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        report_line(&stdout, "actions/a.csv"),
        ["3000", "3000", "0", "0", "ingested"],
        "{stdout}"
    );
    assert_eq!(
        report_line(&stdout, "actions/b.csv"),
        ["2000", "1000", "0", "1000", "ingested"],
        "{stdout}"
    );
    assert!(
        stdout.contains("actions/a.csv: ingested: committed, but not every file is in place yet"),
        "{stdout}"
    );
    assert_eq!(committed_rows(&ws.lake()), 4000);
    // a.csv's commit is pending (the moves after the failed one were not made)...
    assert!(
        ws.lake_files()
            .iter()
            .any(|f| f.starts_with("_flowhealth/commits/")),
        "{:?}",
        ws.lake_files()
    );
    // ...and the next reader finishes it: every action once.
    let seen = query(
        ws.command(),
        "select count(*), count(distinct action_id) from actions",
    )
    .unwrap();
    assert_eq!(seen, vec!["4000,4000".to_string()]);
    assert!(
        ws.lake_files()
            .iter()
            .all(|f| !f.starts_with("_staging/") && !f.starts_with("_flowhealth/commits/")),
        "{:?}",
        ws.lake_files()
    );
}

#[test]
fn a_reader_that_cannot_finish_a_commit_reads_the_committed_files_in_place() {
    let ws = Workspace::new("");
    ws.inbox("actions/a.csv", actions(0, 3000));
    ws.inbox("actions/b.csv", actions(3000, 6000));
    let mut ingest = ws.command();
    ingest.arg("ingest");
    kill_at(ingest, "commit:committed@2");
    // `validate` plans, and leaves the lake as it is: the commit is still pending.
    let validate = ws.command().arg("validate").output().unwrap();
    assert!(
        validate.status.success(),
        "{}",
        String::from_utf8_lossy(&validate.stderr)
    );
    let intents: Vec<String> = ws
        .lake_files()
        .into_iter()
        .filter(|f| f.starts_with("_flowhealth/commits/"))
        .collect();
    assert_eq!(intents.len(), 1, "{:?}", ws.lake_files());
    // A commit whose first file cannot be moved (here: it is gone; on S3, credentials that may
    // only read): `query` does not fail, and reads the committed files that are in place.
    let intent: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ws.lake().join(&intents[0])).unwrap()).unwrap();
    let first = intent["moves"][0]["from"].as_str().unwrap();
    std::fs::remove_file(ws.lake().join(first)).unwrap();
    let output = ws
        .command()
        .args(["query", "select count(*) from actions", "--format", "csv"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "count(*)\n3000\n");
    // Logged at info, not as a warning or an error.
    assert!(stderr.trim().is_empty(), "{stderr}");
}

/// The distinct run_ids of `metric`'s output and of its breaches for 2026-W10, by DuckDB.
fn run_ids(ws: &Workspace, metric: &str) -> (Vec<String>, Vec<String>) {
    let read = |folder: String| -> Vec<String> {
        ws.duckdb(&format!(
            "select distinct run_id from read_parquet('{{lake}}/{folder}/version=3/period=2026-W10/*.parquet') order by 1"
        ))
        .into_iter()
        .map(|row| row[0].as_str().unwrap().to_string())
        .collect()
    };
    (
        read(format!("metrics/{metric}")),
        read(format!("breaches/metric={metric}")),
    )
}

/// A workspace with the shipped metrics and 3000 actions of 2026-W10 ingested: evidence_rate is
/// 0.5 there, under its threshold, so its breaches file has rows.
fn ingested_week() -> Workspace {
    let ws = Workspace::new(concat!(
        "queries: ",
        env!("CARGO_MANIFEST_DIR"),
        "/queries\n"
    ));
    ws.inbox("actions/a.csv", actions(0, 3000));
    assert!(ws.command().arg("ingest").status().unwrap().success());
    ws
}

fn evidence_run(ws: &Workspace) -> Command {
    let mut command = ws.command();
    command.args(["metrics", "run", "evidence_rate", "--period", "2026-W10"]);
    command
}

#[test]
fn a_metrics_commit_killed_between_its_output_and_breaches_is_finished_by_the_next_reader() {
    let ws = ingested_week();
    // Every weekly metric, for the report.
    let all = ws
        .command()
        .args(["metrics", "run", "--period", "2026-W10"])
        .output()
        .unwrap();
    assert!(all.status.success());
    let (first, breaches) = run_ids(&ws, "evidence_rate");
    assert_eq!((first.len(), &breaches), (1, &first));

    // Killed after its first move: the new output is in place, its breaches still staged.
    kill_at(evidence_run(&ws), "commit:moved");
    let (output, breaches) = run_ids(&ws, "evidence_rate");
    assert_eq!(output.len(), 1);
    assert_ne!(output, first);
    assert_eq!(breaches, first, "a directory reader sees the old breaches");

    // The report, a reader, finishes the commit first: the new pair, nothing left over.
    let report = ws
        .command()
        .args(["report", "weekly", "--period", "2026-W10"])
        .output()
        .unwrap();
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    assert_eq!(run_ids(&ws, "evidence_rate"), (output.clone(), output));
    assert!(
        ws.lake_files()
            .iter()
            .all(|f| !f.starts_with("_staging/") && !f.starts_with("_flowhealth/commits/")),
        "{:?}",
        ws.lake_files()
    );
}

#[test]
fn writers_of_metric_outputs_take_turns_and_clean_up_after_a_dead_one() {
    let ws = ingested_week();
    // One writer, killed later, holds the lake lock `metrics` with its files staged...
    let mut first = pause_at(evidence_run(&ws), "commit:staged");
    let staged: Vec<String> = ws
        .lake_files()
        .into_iter()
        .filter(|f| f.starts_with("_staging/"))
        .collect();
    assert_eq!(staged.len(), 2, "{staged:?}");
    // ...so another waits for it, staging nothing meanwhile...
    let mut second = evidence_run(&ws);
    second.env("RUST_LOG", "info");
    let second = start_until(second, "Waiting for another writer of metric outputs");
    let now_staged: Vec<String> = ws
        .lake_files()
        .into_iter()
        .filter(|f| f.starts_with("_staging/"))
        .collect();
    assert_eq!(now_staged, staged);
    // ...until it is gone: the second takes its lock over, removes what it staged, and commits
    // its own pair.
    first.kill().unwrap();
    first.wait().unwrap();
    let output = second.wait_with_output().unwrap();
    assert!(output.status.success());
    let (outputs, breaches) = run_ids(&ws, "evidence_rate");
    assert_eq!(outputs.len(), 1);
    assert_eq!(breaches, outputs);
    assert!(
        ws.lake_files().iter().all(|f| !f.starts_with("_staging/")
            && !f.starts_with("_flowhealth/commits/")
            && !f.starts_with("_flowhealth/locks/")),
        "{:?}",
        ws.lake_files()
    );
}
