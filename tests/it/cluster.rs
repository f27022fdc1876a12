//! The metric SQL on an Apache Ballista cluster: a real scheduler and two real executors (this
//! binary's `scheduler` and `executor` commands) on loopback ports, against the local engine.
//! One cluster serves every check (starting one takes seconds, CI time is short): its processes
//! are configured with a lake on S3 (moto), and see the local lakes at the same paths as the
//! client, as processes on one machine do.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use flowhealth::config::Config;
use flowhealth::lake::Lake;

use crate::common::{Workspace, free_port};
use crate::demo::run_demo_weeks;
use crate::s3::start_moto;
use crate::schedule::wait_for;

/// The `engine:` section of a test config: local unless the environment says otherwise.
///
/// A job gets three minutes: after an executor is killed, Ballista 55 once waited for ever on a
/// stage it had rolled back; past its deadline the job fails as a cluster fault and the
/// pipeline's retry runs it on the executor that is left.
const ENGINE: &str = "engine: { kind: \"${FLOWHEALTH_ENGINE:-local}\", scheduler: \"${FLOWHEALTH_SCHEDULER:-df://localhost:50050}\", job_timeout_s: \"${FLOWHEALTH_JOB_TIMEOUT_S:-180}\" }\n";

/// A process of this binary, its output in a log file; killed when dropped.
struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(dir: &Path, name: &str, args: &[&str]) -> Process {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_flowhealth"))
            .args(args)
            .current_dir(dir)
            .env_remove("FLOWHEALTH_CONFIG")
            .env("RUST_LOG", "info")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts: {e}"));
        Process {
            name: name.into(),
            child,
            log,
        }
    }

    fn log(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        format!("--- {} ---\n{}", self.name, tail.join("\n"))
    }

    fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// SIGTERM, then the exit status (killed after 60 s).
    fn terminate(&mut self) -> Option<i32> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60) {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{} did not stop on SIGTERM\n{}", self.name, self.log());
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scheduler and its executors.
struct Cluster {
    dir: tempfile::TempDir,
    port: u16,
    scheduler: Process,
    executors: Vec<Process>,
}

impl Cluster {
    /// Starts a scheduler and `executors` executors whose config is `lake` (a `lake:` section and
    /// nothing else), and waits until the scheduler's /readyz counts them all.
    fn start(lake: &str, executors: usize) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cluster.yaml"), lake).unwrap();
        let port = free_port();
        let scheduler = Process::spawn(
            dir.path(),
            "scheduler",
            &[
                "--config",
                "cluster.yaml",
                "scheduler",
                "--port",
                &port.to_string(),
            ],
        );
        let url = format!("df://127.0.0.1:{port}");
        let executors = (0..executors)
            .map(|i| {
                Process::spawn(
                    dir.path(),
                    &format!("executor-{i}"),
                    &[
                        "--config",
                        "cluster.yaml",
                        "executor",
                        "--scheduler",
                        &url,
                        "--port",
                        &free_port().to_string(),
                        "--grpc-port",
                        &free_port().to_string(),
                        "--concurrency",
                        "2",
                    ],
                )
            })
            .collect();
        let mut cluster = Cluster {
            dir,
            port,
            scheduler,
            executors,
        };
        cluster.wait_ready();
        cluster
    }

    fn url(&self) -> String {
        format!("df://127.0.0.1:{}", self.port)
    }

    fn logs(&self) -> String {
        std::iter::once(&self.scheduler)
            .chain(&self.executors)
            .map(Process::log)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Until `GET /readyz` says every executor has registered.
    fn wait_ready(&mut self) {
        let expected = format!("ready: {} executors registered", self.executors.len());
        let started = Instant::now();
        loop {
            if let Some((200, body)) = http_get(self.port, "/readyz")
                && body.contains(&expected)
            {
                return;
            }
            let dead = self.scheduler.exited() || self.executors.iter_mut().any(|e| e.exited());
            if dead || started.elapsed() > Duration::from_secs(120) {
                panic!("the cluster did not get ready\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// `GET path` on loopback `port` over HTTP/1.1: the status and the body.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((status, body))
}

/// `flowhealth args` in `ws`, on the cluster at `scheduler` or (`None`) locally.
fn flowhealth(ws: &Workspace, scheduler: Option<&str>, args: &[&str]) -> Output {
    let mut command = ws.command();
    command.args(args);
    match scheduler {
        Some(url) => command
            .env("FLOWHEALTH_ENGINE", "ballista")
            .env("FLOWHEALTH_SCHEDULER", url),
        None => command.env_remove("FLOWHEALTH_ENGINE"),
    };
    command.stdin(Stdio::null()).output().unwrap()
}

fn stdout_of(output: &Output, what: &str, cluster: Option<&Cluster>) -> String {
    assert_eq!(
        output.status.code(),
        Some(0),
        "{what}:\n{}{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        cluster.map(Cluster::logs).unwrap_or_default()
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Every metric output of `period` in the lake: path -> its rows as CSV, without `run_id` and
/// `as_of` (the only columns that differ between two runs).
async fn outputs(lake: &Lake, period: &str) -> BTreeMap<String, String> {
    outputs_and_runs(lake, period).await.0
}

/// [`outputs`], and the `run_id`s the files hold.
async fn outputs_and_runs(
    lake: &Lake,
    period: &str,
) -> (BTreeMap<String, String>, std::collections::BTreeSet<String>) {
    let mut found = BTreeMap::new();
    let mut runs = std::collections::BTreeSet::new();
    for object in lake.list(&["metrics"]).await.unwrap() {
        let path = lake.relative(&object.location);
        if !path.contains(&format!("/period={period}/")) {
            continue;
        }
        let (_, batches) = lake.get_parquet(&object.location).await.unwrap().unwrap();
        let mut csv = Vec::new();
        {
            let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut csv);
            for batch in &batches {
                if let Some(ids) = batch.column_by_name("run_id") {
                    use datafusion::arrow::array::AsArray;
                    runs.extend(ids.as_string::<i32>().iter().flatten().map(String::from));
                }
                let keep: Vec<usize> = (0..batch.num_columns())
                    .filter(|&i| {
                        !["run_id", "as_of"].contains(&batch.schema().field(i).name().as_str())
                    })
                    .collect();
                writer.write(&batch.project(&keep).unwrap()).unwrap();
            }
        }
        found.insert(path, String::from_utf8(csv).unwrap());
    }
    (found, runs)
}

/// Runs `metrics run --period <period>` locally, then on the cluster, and checks that every
/// output is the same; returns the cluster run's output.
fn same_rows(
    runtime: &tokio::runtime::Runtime,
    ws: &Workspace,
    config: &Config,
    cluster: &Cluster,
    period: &str,
) -> (BTreeMap<String, String>, String) {
    let lake = Lake::open(config).unwrap();
    let args = ["metrics", "run", "--period", period];
    stdout_of(&flowhealth(ws, None, &args), "local run", None);
    let local = runtime.block_on(outputs(&lake, period));
    assert!(local.len() >= 2, "{period}: {:?}", local.keys());
    let report = stdout_of(
        &flowhealth(ws, Some(&cluster.url()), &args),
        "cluster run",
        Some(cluster),
    );
    let (remote, runs) = runtime.block_on(outputs_and_runs(&lake, period));
    // Every file was written by the cluster run (its first line: `run <id>`).
    let run_id = report
        .lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("run ");
    assert_eq!(
        runs.into_iter().collect::<Vec<_>>(),
        vec![run_id.to_string()],
        "{report}"
    );
    assert_eq!(
        local.keys().collect::<Vec<_>>(),
        remote.keys().collect::<Vec<_>>()
    );
    let differ: Vec<String> = local
        .iter()
        .filter(|(path, rows)| !same(rows, &remote[path.as_str()]))
        .map(|(path, rows)| format!("{path}: local vs cluster\n{rows}\n{}", remote[path]))
        .collect();
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    (remote, report)
}

/// The same CSV rows, numbers equal to 12 significant digits: a sum or average of doubles
/// depends on the order of the additions, which differs between partitionings (locally too,
/// between machines with other core counts), in the last digit or two.
fn assert_same(local: &str, remote: &str, what: &str) {
    assert!(
        same(local, remote),
        "{what}: local vs cluster\nlocal:\n{local}\ncluster:\n{remote}"
    );
}

fn same(local: &str, remote: &str) -> bool {
    let read = |text: &str| -> Vec<Vec<String>> {
        csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(text.as_bytes())
            .records()
            .map(|r| r.unwrap().iter().map(String::from).collect())
            .collect()
    };
    let (a, b) = (read(local), read(remote));
    a.len() == b.len()
        && a.iter().zip(&b).all(|(x, y)| {
            x.len() == y.len()
                && x.iter().zip(y).all(|(u, v)| {
                    u == v
                        || matches!((u.parse::<f64>(), v.parse::<f64>()), (Ok(p), Ok(q))
                            if (p - q).abs() <= 1e-12 * p.abs().max(q.abs()))
                })
        })
}

#[test]
fn the_metrics_on_a_ballista_cluster_give_the_local_engine_s_rows() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let moto = start_moto();
    moto.create_bucket("other");
    let cluster = Cluster::start(
        &format!(
            "lake: {{ url: s3://flowhealth/lake, {} }}\n",
            moto.s3_yaml()
        ),
        2,
    );
    let url = cluster.url();

    // The demo's lake on the local file system, which every process sees at the same path.
    let ws = Workspace::new("");
    run_demo_weeks(&ws, 3);
    // The demo wrote the shipped config: its engine gets the tests' job deadline (see ENGINE).
    let shipped = std::fs::read_to_string(ws.path().join("config.yaml")).unwrap();
    assert!(
        shipped.contains("\nengine:\n"),
        "the shipped config has an engine section"
    );
    std::fs::write(
        ws.path().join("config.yaml"),
        shipped.replacen(
            "\nengine:\n",
            "\nengine:\n  job_timeout_s: \"${FLOWHEALTH_JOB_TIMEOUT_S:-180}\"\n",
            1,
        ),
    )
    .unwrap();
    let config = ws.config();
    // A week (silent_warnings carries from the week before; the index depends on three rates),
    // a month, and a week without data: its grouping sets still give the organisation's row.
    let (_, report) = same_rows(&runtime, &ws, &config, &cluster, "2026-W13");
    assert!(
        report.contains("(from 2026-W12's state)"),
        "the carried metric started from the previous week:\n{report}"
    );
    same_rows(&runtime, &ws, &config, &cluster, "2026-03");
    let (empty, _) = same_rows(&runtime, &ws, &config, &cluster, "2025-W02");
    let evidence = empty
        .iter()
        .find(|(path, _)| path.starts_with("metrics/evidence_rate/"))
        .map(|(_, rows)| rows.clone())
        .unwrap();
    assert_eq!(
        evidence.lines().skip(1).collect::<Vec<_>>(),
        vec![",0,0,,"],
        "an empty week has the organisation's row"
    );

    // `flowhealth query` with a UDF and a UDAF, on the cluster and locally.
    let sql = "select opportunity_id, stage_path_compliant(from_stage, to_stage order by changed_at) as compliant, \
               max(stage_rank(to_stage)) as furthest, round(sum(business_hours(changed_at, ingested_at)), 3) as waited \
               from stage_changes group by 1 order by 1";
    let query = ["query", sql, "--format", "csv"];
    let local = stdout_of(&flowhealth(&ws, None, &query), "local query", None);
    let remote = stdout_of(
        &flowhealth(&ws, Some(&url), &query),
        "cluster query",
        Some(&cluster),
    );
    assert!(local.lines().count() > 10, "{local}");
    assert_same(&local, &remote, "query");

    // What flowhealth wrote, as tables (issue 19): metric outputs, breaches and `read_parquet`
    // (folders with `key=value` partitions, a pattern) give the same rows on the cluster, and
    // instants in the configured timezone (Asia/Shanghai) in both.
    for sql in [
        "select period, team, value, as_of from metrics.process_health_index order by 1, 2 nulls first",
        "select metric, version, period, team from breaches order by 1, 2, 3, 4 nulls first",
        "select version, period, count(*) as n from read_parquet('metrics/evidence_rate') group by 1, 2 order by 1, 2",
        "select dt, count(*) as n from read_parquet('raw/actions/**/*.parquet') group by 1 order by 1",
    ] {
        let query = ["query", sql, "--format", "csv"];
        let local = stdout_of(&flowhealth(&ws, None, &query), sql, None);
        let remote = stdout_of(&flowhealth(&ws, Some(&url), &query), sql, Some(&cluster));
        assert!(local.lines().count() > 2, "{sql}:\n{local}");
        assert_same(&local, &remote, sql);
        if sql.contains("as_of") {
            assert!(remote.contains("T00:00:00+08:00"), "{remote}");
        }
    }

    // Bad SQL is still the user's to fix (exit 2), named, on the cluster too.
    let bad = flowhealth(
        &ws,
        Some(&url),
        &["query", "select no_such_column from actions"],
    );
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("no_such_column"), "{stderr}");

    // Every golden case, run on the cluster (its carried metrics twice), gives the expected rows.
    let golden = stdout_of(
        &flowhealth(&ws, Some(&url), &["metrics", "test"]),
        "golden cases on the cluster",
        Some(&cluster),
    );
    assert!(golden.contains(", 0 failed"), "{golden}");

    // A lake on S3: the scheduler and executors read it with their own credentials.
    let s3 = Workspace::in_timezone(
        "Europe/Berlin",
        &format!(
            "{ENGINE}lake: {{ url: s3://flowhealth/lake, {} }}\ninbox: {{ url: {}/queries/_tests/berlin_spring_week/inbox }}\nqueries: {}/queries\n",
            moto.s3_yaml(),
            env!("CARGO_MANIFEST_DIR"),
            env!("CARGO_MANIFEST_DIR")
        ),
    );
    // Workspace::in_timezone wrote a local lake first: the S3 one replaces it.
    let text = std::fs::read_to_string(s3.path().join("config.yaml")).unwrap();
    std::fs::write(
        s3.path().join("config.yaml"),
        text.replace("lake: { url: ./lake }\ninbox: { url: ./inbox }\n", ""),
    )
    .unwrap();
    stdout_of(&flowhealth(&s3, None, &["ingest"]), "ingest to S3", None);
    same_rows(&runtime, &s3, &s3.config(), &cluster, "2026-W13");

    // An executor that does not see the lake (its config names another bucket) fails the run,
    // naming the lake, instead of answering from nothing.
    let blind = Cluster::start(
        &format!("lake: {{ url: s3://other/lake, {} }}\n", moto.s3_yaml()),
        1,
    );
    let failed = flowhealth(
        &s3,
        Some(&blind.url()),
        &["metrics", "run", "--period", "2026-W13"],
    );
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert_eq!(failed.status.code(), Some(1), "{stderr}\n{}", blind.logs());
    assert!(
        stderr.contains("cannot read the lake at s3://flowhealth/lake")
            && stderr.contains("s3://flowhealth/"),
        "{stderr}"
    );
    drop(blind);

    // A query past `engine.job_timeout_s` fails as a cluster fault (exit 1) and its job is
    // cancelled on the scheduler (a cluster of its own: its executor may still be busy).
    let busy = Cluster::start(
        &format!(
            "lake: {{ url: s3://flowhealth/lake, {} }}\n",
            moto.s3_yaml()
        ),
        1,
    );
    let mut command = ws.command();
    command
        .args([
            "query",
            // (a filter, so the count cannot come from the files' row counts)
            "select count(*) from actions a, actions b, actions c, actions d \
             where a.action_id < b.action_id and b.action_id < c.action_id \
             and c.action_id < d.action_id",
        ])
        .env("FLOWHEALTH_ENGINE", "ballista")
        .env("FLOWHEALTH_SCHEDULER", busy.url())
        .env("FLOWHEALTH_JOB_TIMEOUT_S", "5");
    let late = command.stdin(Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&late.stderr);
    assert_eq!(late.status.code(), Some(1), "{stderr}\n{}", busy.logs());
    assert!(
        stderr.contains("did not finish on the Ballista cluster")
            && stderr.contains("within 5 s (engine.job_timeout_s); its job ")
            && stderr.contains(" was cancelled"),
        "{stderr}"
    );
    wait_for(
        "the scheduler to cancel the job",
        Duration::from_secs(10),
        || {
            // The whole log: `log()` keeps the last lines, and the scheduler logs whole plans.
            std::fs::read_to_string(&busy.scheduler.log)
                .unwrap_or_default()
                .contains("Received cancellation request for job")
        },
    );
    drop(busy);

    // An executor killed mid-run: the pipeline's run completes on the other one (after a retry
    // if the step failed), and every output is whole and the same as the local engine's.
    killed_executor(&runtime, &ws, &config, cluster);
}

/// `flowhealth run` of a pipeline computing a week on `cluster`, one executor killed after a
/// second; then SIGTERM stops the others cleanly.
fn killed_executor(
    runtime: &tokio::runtime::Runtime,
    ws: &Workspace,
    config: &Config,
    mut cluster: Cluster,
) {
    let lake = Lake::open(config).unwrap();
    let period = "2026-W12";
    stdout_of(
        &flowhealth(ws, None, &["metrics", "run", "--period", period]),
        "local run",
        None,
    );
    let local = runtime.block_on(outputs(&lake, period));
    std::fs::create_dir_all(ws.path().join("pipelines")).unwrap();
    std::fs::write(
        ws.path().join("pipelines/cluster_week.yaml"),
        "name: cluster_week\nschedule: \"0 0 8 * * Mon\"\nperiod: week\nsteps:\n  - metrics: []\nretries: { attempts: 3, backoff_s: 1 }\n",
    )
    .unwrap();
    let mut command = ws.command();
    command
        .args(["run", "cluster_week", "--period", period])
        .env("FLOWHEALTH_ENGINE", "ballista")
        .env("FLOWHEALTH_SCHEDULER", cluster.url());
    let run = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    let mut victim = cluster.executors.remove(1);
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    let output = run.wait_with_output().unwrap();
    let stdout = stdout_of(
        &output,
        "pipeline run with an executor killed",
        Some(&cluster),
    );
    assert!(stdout.contains("succeeded"), "{stdout}");
    let remote = runtime.block_on(outputs(&lake, period));
    for (path, rows) in &local {
        assert_same(rows, &remote[path], path);
    }

    // The run ledger as the table `runs`, on the executor that is left and locally.
    let sql = "select pipeline, period, trigger, status from runs order by scheduled_for";
    let query = ["query", sql, "--format", "csv"];
    let local = stdout_of(&flowhealth(ws, None, &query), sql, None);
    let remote = stdout_of(
        &flowhealth(ws, Some(&cluster.url()), &query),
        sql,
        Some(&cluster),
    );
    assert_eq!(
        local,
        format!("pipeline,period,trigger,status\ncluster_week,{period},manual,succeeded\n")
    );
    assert_eq!(remote, local);

    // SIGTERM: the executor tells the scheduler and stops, then the scheduler stops; both exit 0.
    for mut executor in std::mem::take(&mut cluster.executors) {
        assert_eq!(executor.terminate(), Some(0), "{}", executor.log());
    }
    assert_eq!(
        cluster.scheduler.terminate(),
        Some(0),
        "{}",
        cluster.scheduler.log()
    );
    let _ = &cluster.dir;
}

#[test]
fn a_scheduler_that_is_down_fails_with_exit_1_naming_its_url() {
    let ws = Workspace::new(ENGINE);
    let url = format!("df://127.0.0.1:{}", free_port());
    let output = flowhealth(&ws, Some(&url), &["query", "select 1"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach the Ballista scheduler at {url}")),
        "{stderr}"
    );
}
