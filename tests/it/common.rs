//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::process::Command;

use flowhealth::config::Config;
use flowhealth::ingest::IngestReport;

/// Stages used by most tests (the shipped ones).
pub const STAGES: &str = "stages:
  - { name: lead }
  - { name: qualified, entry: true }
  - { name: demo }
  - { name: proposal, silent_timeout_h: 72 }
  - { name: negotiation }
  - { name: contract_approval }
  - { name: won, terminal: true }
  - { name: lost, terminal: true, from_any: true }
";

pub const ACTION_HEADER: &str = "action_id,occurred_at,recorded_at,owner_id,team,opportunity_id,customer_id,store_id,action_type,evidence,note,attrs";

/// A temporary folder with a config.yaml, an inbox and a lake.
pub struct Workspace {
    pub dir: tempfile::TempDir,
}

impl Workspace {
    /// A workspace whose config is the test stages plus `extra` YAML (e.g. a `datasets:` section).
    pub fn new(extra: &str) -> Workspace {
        Workspace::in_timezone("Asia/Shanghai", extra)
    }

    /// Like [`Workspace::new`], in another timezone.
    pub fn in_timezone(timezone: &str, extra: &str) -> Workspace {
        let dir = tempfile::tempdir().expect("temp dir");
        let text = format!(
            "timezone: {timezone}\nlake: {{ url: ./lake }}\ninbox: {{ url: ./inbox }}\n{STAGES}{extra}"
        );
        std::fs::write(dir.path().join("config.yaml"), text).expect("write config");
        Workspace { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn lake(&self) -> PathBuf {
        self.path().join("lake")
    }

    /// Writes `bytes` to `inbox/<relative>`.
    pub fn inbox(&self, relative: &str, bytes: impl AsRef<[u8]>) {
        let path = self.path().join("inbox").join(relative);
        std::fs::create_dir_all(path.parent().expect("has a parent")).expect("mkdir");
        std::fs::write(path, bytes).expect("write inbox file");
    }

    pub fn config(&self) -> Config {
        Config::load(Some(&self.path().join("config.yaml"))).expect("valid test config")
    }

    pub async fn ingest(&self) -> IngestReport {
        flowhealth::ingest::ingest(&self.config(), &[])
            .await
            .expect("ingest runs")
    }

    /// The flowhealth binary, run in this workspace.
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_flowhealth"));
        command
            .current_dir(self.path())
            .env_remove("FLOWHEALTH_CONFIG")
            .env("RUST_LOG", "warn");
        command
    }

    /// Runs a DuckDB query with `{lake}` replaced by the lake folder.
    pub fn duckdb(&self, sql: &str) -> Vec<Vec<serde_json::Value>> {
        duckdb(&sql.replace("{lake}", &self.lake().display().to_string()))
    }

    /// [`Workspace::duckdb`] for a folder that a running daemon rewrites (the run ledger): a run's
    /// file is replaced by an atomic rename when the run ends, and DuckDB opens a file once to
    /// bind the query and again to scan it, so a scan that straddles the rename reads the new
    /// file with the old footer ("Invalid data"). Such a query is tried again, up to five times;
    /// any other failure fails the test at once.
    pub fn duckdb_live(&self, sql: &str) -> Vec<Vec<serde_json::Value>> {
        let sql = sql.replace("{lake}", &self.lake().display().to_string());
        let mut failures = Vec::new();
        for _ in 0..5 {
            match try_python_json(&["-c", DUCKDB, &sql]) {
                Ok(rows) => return rows,
                // A file replaced (or a run's file renamed into place) mid-query; anything else
                // is a real failure.
                Err(e) if e.contains("Invalid data") || e.contains("No such file") => {
                    failures.push(e)
                }
                Err(e) => panic!("{e}"),
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "DuckDB failed five times on {sql}:\n{}",
            failures.join("\n")
        )
    }

    /// Every file below the lake, relative to it, sorted.
    pub fn lake_files(&self) -> Vec<String> {
        let mut files = Vec::new();
        walk(&self.lake(), &self.lake(), &mut files);
        files.sort();
        files
    }
}

fn walk(root: &Path, dir: &Path, files: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(root, &path, files);
        } else {
            files.push(
                path.strip_prefix(root)
                    .expect("below root")
                    .display()
                    .to_string(),
            );
        }
    }
}

// DuckDB draws a progress bar on standard output for a query that takes over two seconds (a busy
// machine): off, so that standard output is the JSON alone.
const DUCKDB: &str = "import duckdb, json, sys
con = duckdb.connect()
con.execute('SET enable_progress_bar = false')
con.execute(\"SET TimeZone='UTC'\")
print(json.dumps(con.execute(sys.argv[1]).fetchall(), default=str))";

/// Runs `python3 <args>`, which must succeed and print JSON; returns that JSON.
pub fn python_json<T: serde::de::DeserializeOwned>(args: &[&str]) -> T {
    try_python_json(args).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs `python3 <args>`; the JSON it printed, or what it wrote to standard error.
fn try_python_json<T: serde::de::DeserializeOwned>(args: &[&str]) -> Result<T, String> {
    let output = Command::new("python3")
        .args(args)
        .output()
        .expect("python3 runs");
    if !output.status.success() {
        return Err(format!(
            "python3 {args:?} failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(serde_json::from_slice(&output.stdout).expect("python printed JSON"))
}

/// Runs `sql` in DuckDB (Python package) and returns the rows as JSON values.
pub fn duckdb(sql: &str) -> Vec<Vec<serde_json::Value>> {
    python_json(&["-c", DUCKDB, sql])
}

/// `read_parquet` over a lake folder, as BI tools read it.
pub fn scan(area: &str) -> String {
    format!("read_parquet('{{lake}}/{area}/**/*.parquet', hive_partitioning=1)")
}

pub fn count(workspace: &Workspace, area: &str) -> i64 {
    workspace.duckdb(&format!("select count(*) from {}", scan(area)))[0][0]
        .as_i64()
        .expect("a count")
}

/// A free port on loopback (bound and released; the server started next takes it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A test server from `tests/support/` (a Python script), killed when dropped.
pub struct Server {
    child: std::process::Child,
}

impl Server {
    /// Runs `python3 tests/support/<script> <args>` and waits until it prints READY.
    pub fn start(script: &str, args: &[&str]) -> Server {
        use std::io::BufRead;
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/support")
            .join(script);
        let mut child = Command::new("python3")
            .arg(&path)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{script} starts: {e}"));
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        std::io::BufReader::new(stdout)
            .read_line(&mut line)
            .expect("server prints READY");
        assert_eq!(
            line.trim(),
            "READY",
            "{script} did not start (see its error above)"
        );
        Server { child }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `flowhealth ARGS` in `workspace` on a pseudo-terminal, driven by `steps` (see
/// `tests/support/pty_session.py`: expect, send, signal), with `HOME` at `home`; returns what it
/// printed, ending with `exit N`.
pub fn on_a_terminal(
    workspace: &Workspace,
    home: &Path,
    steps: serde_json::Value,
    args: &[&str],
) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/pty_session.py");
    let output = Command::new("python3")
        .arg(script)
        .arg(steps.to_string())
        .arg(env!("CARGO_BIN_EXE_flowhealth"))
        .args(args)
        .current_dir(workspace.path())
        .env("HOME", home)
        .env("RUST_LOG", "warn")
        .env_remove("FLOWHEALTH_CONFIG")
        .output()
        .expect("python3 runs");
    let transcript = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{transcript}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    transcript
}

/// An `email:` section that sends to boss@example.com through the SMTP server `smtp` (the inside
/// of the `smtp:` mapping), trying each message once.
pub fn smtp_once(smtp: &str) -> String {
    format!(
        "email:\n  transport: smtp\n  outbox: ./outbox\n  to: [boss@example.com]\n  retry: {{ attempts: 1, backoff_s: 0 }}\n  smtp: {{ {smtp} }}\n"
    )
}
