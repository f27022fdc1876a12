//! `flowhealth demo` end to end: the lake it builds conforms, its counts reconcile with the input
//! files counted independently, and the same seed gives the same files.

use std::path::Path;
use std::process::Command;

use crate::common::{Workspace, count};

fn run_demo(ws: &Workspace) -> String {
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/config.yaml"),
        ws.path().join("config.yaml"),
    )
    .unwrap();
    let output = ws
        .command()
        .args([
            "demo",
            "--seed",
            "11",
            "--stores",
            "6",
            "--reps",
            "5",
            "--weeks",
            "3",
            "--until",
            "2026-03-31",
        ])
        .env_remove("FLOWHEALTH_LAKE")
        .env_remove("FLOWHEALTH_INBOX")
        .env_remove("FLOWHEALTH_TIMEZONE")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// Rows of each inbox file, counted with Python's own CSV/JSON/zip+XML readers.
const COUNT_ROWS: &str = r#"
import csv, io, json, re, sys, zipfile, pathlib
total = {}
for path in sorted(pathlib.Path(sys.argv[1]).rglob('*.*')):
    dataset = path.parent.name
    data = path.read_bytes()
    if path.suffix == '.csv':
        for encoding in ('utf-8-sig', 'gbk'):
            try:
                text = data.decode(encoding)
                break
            except UnicodeDecodeError:
                pass
        rows = len(list(csv.reader(io.StringIO(text, newline='')))) - 1
    elif path.suffix == '.ndjson':
        rows = sum(1 for line in data.decode().splitlines() if line.strip())
    elif path.suffix == '.xlsx':
        sheet = zipfile.ZipFile(io.BytesIO(data)).read('xl/worksheets/sheet1.xml').decode()
        rows = len(re.findall(r'<row ', sheet)) - 1
    total[dataset] = total.get(dataset, 0) + rows
print(json.dumps(total))
"#;

#[test]
fn demo_builds_a_conforming_lake_whose_counts_reconcile() {
    let ws = Workspace::new("");
    let stdout = run_demo(&ws);
    assert!(stdout.contains("lake: "), "{stdout}");

    // Counted independently of flowhealth: rows in the files it was given...
    let output = Command::new("python3")
        .args([
            "-c",
            COUNT_ROWS,
            &ws.path().join("inbox").display().to_string(),
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let input: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();

    // ... against what DuckDB finds in the lake, plus the duplicates the report counted.
    let report: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            l.starts_with("actions/")
                || l.starts_with("stage_changes/")
                || l.starts_with("opportunities/")
        })
        .collect();
    for dataset in ["actions", "stage_changes", "opportunities"] {
        let duplicates: i64 = report
            .iter()
            .filter(|l| l.starts_with(&format!("{dataset}/")) && l.ends_with("ingested"))
            .map(|l| l.split_whitespace().nth(4).unwrap().parse::<i64>().unwrap())
            .sum();
        let landed = count(&ws, &format!("raw/{dataset}"));
        let quarantined = if ws.lake().join("quarantine").join(dataset).exists() {
            count(&ws, &format!("quarantine/{dataset}"))
        } else {
            0
        };
        assert_eq!(
            landed + quarantined + duplicates,
            input[dataset].as_i64().unwrap(),
            "{dataset}: {stdout}"
        );
        assert!(landed > 0);
    }
    // The planted problems are there: malformed rows quarantined, the GBK re-send deduplicated.
    assert_eq!(count(&ws, "quarantine/actions"), 3);
    assert!(report.iter().any(|l| l.contains("store-resend-gbk.csv") && l.split_whitespace().nth(4) != Some("0")), "{stdout}");

    let conformance =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/lake-conformance.py");
    if conformance.exists() {
        let output = Command::new("python3")
            .arg(&conformance)
            .arg(ws.lake())
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have ../shared/tools/lake-conformance.py"
        );
        eprintln!(
            "skipping the conformance check: {} is not here",
            conformance.display()
        );
    }

    // A second demo run with the same seed writes the same files: ingesting them is a no-op.
    let again = run_demo(&ws);
    assert!(
        again
            .lines()
            .filter(|l| l.contains("demo-s11"))
            .all(|l| l.ends_with("already ingested")),
        "{again}"
    );
}

#[test]
fn the_same_seed_gives_the_same_files() {
    let (a, b) = (Workspace::new(""), Workspace::new(""));
    run_demo(&a);
    run_demo(&b);
    for file in [
        "actions/demo-s11-crm-actions.csv",
        "actions/demo-s11-store-actions.ndjson",
        "stage_changes/demo-s11-stage-changes.csv",
        "opportunities/demo-s11-opportunities.xlsx",
    ] {
        let read = |ws: &Workspace| std::fs::read(ws.path().join("inbox").join(file)).unwrap();
        assert!(
            read(&a) == read(&b),
            "{file} differs between two runs with the same seed"
        );
    }
}
