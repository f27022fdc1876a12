//! The SQL function library, checked by the sqllogictest files in `tests/slt/` (hand-worked
//! expected values), plus what a user sees around them: plan errors and `--functions`.
//!
//! Each `.slt` file runs in a fresh session over an empty lake, configured by `tests/slt/
//! config.yaml`, or by a `.yaml` of the same name beside the file when there is one.

use std::path::{Path, PathBuf};

use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::prelude::SessionContext;
use flowhealth::config::Config;
use sqllogictest::{DBOutput, DefaultColumnType};

use crate::common::Workspace;

/// A flowhealth session as a sqllogictest database.
struct Session {
    runtime: tokio::runtime::Runtime,
    ctx: SessionContext,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SqlError(String);

impl sqllogictest::DB for Session {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let error = |e: datafusion::error::DataFusionError| SqlError(e.strip_backtrace());
        let batches = self.runtime.block_on(async {
            let frame = self.ctx.sql(sql).await.map_err(error)?;
            frame.collect().await.map_err(error)
        })?;
        let Some(first) = batches.first() else {
            return Ok(DBOutput::StatementComplete(0));
        };
        let types = first
            .schema()
            .fields()
            .iter()
            .map(|field| match field.data_type() {
                t if t.is_integer() => DefaultColumnType::Integer,
                t if t.is_floating() => DefaultColumnType::FloatingPoint,
                DataType::Boolean => DefaultColumnType::Any,
                _ => DefaultColumnType::Text,
            })
            .collect();
        let options = FormatOptions::default().with_null("NULL");
        let mut rows = Vec::new();
        for batch in &batches {
            let formatters = batch
                .columns()
                .iter()
                .map(|column| ArrayFormatter::try_new(column.as_ref(), &options))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| SqlError(e.to_string()))?;
            for row in 0..batch.num_rows() {
                rows.push(
                    formatters
                        .iter()
                        .map(|f| f.value(row).to_string())
                        .collect(),
                );
            }
        }
        Ok(DBOutput::Rows { types, rows })
    }
}

fn slt_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt")
}

/// The session for one `.slt` file, over an empty lake in a temporary folder.
fn session(slt: &Path, lake_dir: &Path) -> Session {
    let own = slt.with_extension("yaml");
    let config_path = if own.exists() {
        own
    } else {
        slt_dir().join("config.yaml")
    };
    let text = std::fs::read_to_string(&config_path).expect("read slt config");
    let config = Config::parse(
        &text,
        &config_path.display().to_string(),
        lake_dir.to_path_buf(),
        |_| None,
    )
    .expect("valid slt config");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let ctx = runtime.block_on(async {
        let lake = flowhealth::lake::Lake::open(&config).expect("lake");
        flowhealth::engine::Engine::local(&config, &lake)
            .await
            .expect("session")
            .ctx()
            .clone()
    });
    Session { runtime, ctx }
}

#[test]
fn sqllogictest_files() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(slt_dir())
        .expect("tests/slt")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|e| e == "slt"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 9,
        "expected a file per function, found {files:?}"
    );
    let mut failures = Vec::new();
    for file in &files {
        let temp = tempfile::tempdir().expect("temp dir");
        let path = file.clone();
        let lake_dir = temp.path().to_path_buf();
        let mut runner = sqllogictest::Runner::new(move || {
            let session = session(&path, &lake_dir);
            async move { Ok::<_, SqlError>(session) }
        });
        // Result types are checked too: `query TIR` means text, integer, floating point.
        runner.with_column_validator(sqllogictest::strict_column_validator);
        if let Err(error) = runner.run_file(file) {
            failures.push(format!("{}", error.display(false)));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_wrong_argument_type_is_a_plan_error_naming_the_signature() {
    let workspace = Workspace::new("");
    let output = workspace
        .command()
        .args(["query", "select silent_hours(1, 2)"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("silent_hours(last_activity: timestamp, as_of: timestamp)")
            && stderr.contains("Int64, Int64"),
        "{stderr}"
    );

    let output = workspace
        .command()
        .args(["query", "select stage_rnk('demo')"])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("stage_rank"), "the closest name: {stderr}");
}

#[test]
fn bad_text_for_a_timestamp_is_an_execution_error_naming_the_value() {
    let workspace = Workspace::new("");
    let output = workspace
        .command()
        .args([
            "query",
            "select silent_hours(t, '2026-03-01') from (values ('yesterday')) as v(t)",
        ])
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("silent_hours: `yesterday` is not an ISO 8601 timestamp"),
        "{stderr}"
    );
}

#[test]
fn functions_lists_every_function_with_its_documentation() {
    let workspace = Workspace::new("");
    let output = workspace
        .command()
        .args(["query", "--functions"])
        .output()
        .expect("run");
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    for syntax in [
        "stage_rank(stage)",
        "is_stage_skip(from_stage, to_stage)",
        "stage_timeout_h(stage)",
        "silent_hours(last_activity, as_of)",
        "hours_remaining(last_activity, as_of, timeout_h)",
        "health_band(rate, green, yellow)",
        "business_hours(start, end)",
        "stage_path_compliant(from_stage, to_stage ORDER BY changed_at)",
        "longest_zero_run(day, from_day, to_day)",
        "longest_zero_run_start(day, from_day, to_day)",
        "attr(attrs, key)",
        "attr_timestamp(attrs, key)",
        "local_date(ts)",
        "note_normalize(note)",
        "note_simhash(note)",
        "note_similarity(a, b)",
        "note_commitments(note, occurred_at)",
    ] {
        assert!(
            stdout.contains(&format!("\n{syntax}\n")),
            "{syntax} missing:\n{stdout}"
        );
    }
    // information_schema reads the same documentation.
    let output = workspace
        .command()
        .args([
            "query",
            "select routine_name, syntax_example from information_schema.routines where routine_name = 'is_stage_skip'",
            "--format",
            "csv",
        ])
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("is_stage_skip,\"is_stage_skip(from_stage, to_stage)\""),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
