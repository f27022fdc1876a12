//! The shipped `examples/`: each is validated, ingested as shipped (its inbox, its config; the
//! lake in a temporary folder) and its headline metric checked against values worked out by hand
//! in its README, or computed independently from the export files by Python.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::json;

use crate::common::{duckdb, python_json};

/// An example run against a lake of its own.
struct Example {
    config: PathBuf,
    lake: tempfile::TempDir,
}

impl Example {
    fn new(name: &str) -> Example {
        let config = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name)
            .join("config.yaml");
        assert!(config.exists(), "{} exists", config.display());
        Example {
            config,
            lake: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_flowhealth"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .env("FLOWHEALTH_LAKE", self.lake.path())
            .env("RUST_LOG", "warn")
            .output()
            .expect("flowhealth runs")
    }

    /// Runs a command that must succeed; returns its standard output.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(
            output.status.success(),
            "flowhealth {args:?}: {:?}\n{stdout}\n{}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    }

    fn duckdb(&self, sql: &str) -> Vec<Vec<serde_json::Value>> {
        duckdb(&sql.replace("{lake}", &self.lake.path().display().to_string()))
    }

    /// The report line of `file` (its path under the inbox) and the indented line under it.
    fn line(report: &str, file: &str) -> String {
        let mut lines = report.lines();
        let line = lines
            .find(|l| l.starts_with(&format!("{file} ")))
            .unwrap_or_else(|| panic!("no line for {file}:\n{report}"));
        let under = lines.next().filter(|l| l.starts_with("    ")).unwrap_or("");
        format!("{line}\n{under}")
    }

    /// read, landed, quarantined, duplicates and blank of a file's report lines.
    fn counts(lines: &str) -> Vec<u64> {
        let (line, under) = lines.split_once('\n').unwrap_or((lines, ""));
        let mut numbers: Vec<u64> = line
            .split_whitespace()
            .filter_map(|f| f.parse().ok())
            .collect();
        let blank = under
            .split_once(", ")
            .and_then(|(_, rest)| {
                rest.strip_suffix(" blank rows")
                    .or(rest.strip_suffix(" blank row"))
            })
            .map_or(0, |n| n.parse().expect("a count"));
        numbers.push(blank);
        numbers
    }
}

fn scan(area: &str) -> String {
    format!("read_parquet('{{lake}}/{area}/**/*.parquet', hive_partitioning=1)")
}

#[test]
fn every_example_config_validates() {
    for name in ["crm_deals", "salesforce", "pharmacy"] {
        let example = Example::new(name);
        let out = example.ok(&["validate"]);
        assert!(out.contains(": ok ("), "{name}: {out}");
    }
}

/// Example 1: a one-row-per-deal CRM export in two offices' shapes; the stage history is
/// derived from the snapshots. Hand-worked in examples/crm_deals/README.md.
#[test]
fn crm_deals_derives_the_stage_history_and_its_compliance() {
    let example = Example::new("crm_deals");
    let report = example.ok(&["ingest"]);
    // read, landed, quarantined, duplicates, blank
    assert_eq!(
        Example::counts(&Example::line(
            &report,
            "opportunities/pipeline-2026-03-06.csv"
        )),
        [5, 5, 0, 0, 0],
        "{report}"
    );
    let second = Example::line(&report, "opportunities/pipeline-2026-03-13.csv");
    assert_eq!(Example::counts(&second), [7, 4, 0, 3, 0], "{report}");
    let emea = Example::line(&report, "opportunities/emea/pipeline-2026-03-13.csv");
    assert_eq!(Example::counts(&emea), [2, 2, 0, 0, 0], "{report}");
    assert!(emea.contains("csv utf-8 (bom) ';'"), "{emea}");
    assert!(
        report.contains("pipeline-2026-03-13.csv: ingested: 4 stage change(s) derived"),
        "{report}"
    );

    // The derived changes, with the snapshot as their source (the prospect has no date: it is
    // dated by the ingest).
    let changes = example.duckdb(&format!(
        "select opportunity_id, coalesce(from_stage, ''), to_stage, strftime(changed_at, '%Y-%m-%d %H:%M'), owner_id, source_file, source_line \
         from {} where opportunity_id <> 'PZ5L1V8J' order by opportunity_id, changed_at",
        scan("raw/stage_changes")
    ));
    let expected = [
        (
            "BT4N8W1C",
            "",
            "qualified",
            "2026-02-20 05:00",
            "Liam Ortega",
            "pipeline-2026-03-06.csv",
            3,
        ),
        (
            "BT4N8W1C",
            "qualified",
            "lost",
            "2026-03-13 04:00",
            "Liam Ortega",
            "pipeline-2026-03-13.csv",
            3,
        ),
        (
            "CW6R4T2K",
            "",
            "qualified",
            "2026-03-10 04:00",
            "Priya Nair",
            "pipeline-2026-03-13.csv",
            7,
        ),
        (
            "EU3T9W6Q",
            "",
            "won",
            "2026-03-11 23:00",
            "Claire Dubois",
            "emea/pipeline-2026-03-13.csv",
            3,
        ),
        (
            "EU8M2K4P",
            "",
            "qualified",
            "2026-03-08 23:00",
            "Jonas Weber",
            "emea/pipeline-2026-03-13.csv",
            2,
        ),
        (
            "HR2P6D5E",
            "",
            "won",
            "2026-03-04 05:00",
            "Liam Ortega",
            "pipeline-2026-03-06.csv",
            4,
        ),
        (
            "JD3H7Y5L",
            "",
            "won",
            "2026-03-09 04:00",
            "Ana Brooks",
            "pipeline-2026-03-13.csv",
            8,
        ),
        (
            "MN9F3S7G",
            "",
            "lost",
            "2026-03-03 05:00",
            "Ana Brooks",
            "pipeline-2026-03-06.csv",
            5,
        ),
        (
            "QX7K2M9A",
            "",
            "qualified",
            "2026-03-02 05:00",
            "Ana Brooks",
            "pipeline-2026-03-06.csv",
            2,
        ),
        (
            "QX7K2M9A",
            "qualified",
            "won",
            "2026-03-11 04:00",
            "Ana Brooks",
            "pipeline-2026-03-13.csv",
            2,
        ),
    ];
    let got: Vec<Vec<serde_json::Value>> = changes;
    let want: Vec<Vec<serde_json::Value>> = expected
        .iter()
        .map(|(id, from, to, at, owner, file, line)| {
            vec![
                json!(id),
                json!(from),
                json!(to),
                json!(at),
                json!(owner),
                json!(format!("opportunities/{file}")),
                json!(line),
            ]
        })
        .collect();
    assert_eq!(got, want);
    let prospect = example.duckdb(&format!(
        "select from_stage, to_stage, changed_at = ingested_at from {} where opportunity_id = 'PZ5L1V8J'",
        scan("raw/stage_changes")
    ));
    assert_eq!(
        prospect,
        vec![vec![json!(null), json!("lead"), json!(true)]]
    );

    // Amounts in both shapes, and `null` read as empty.
    let amounts = example.duckdb(&format!(
        "select opportunity_id, amount::varchar, team from {} qualify row_number() over (partition by opportunity_id order by ingested_at desc, source_file desc, source_line desc) = 1 order by 1",
        scan("raw/opportunities")
    ));
    let amount = |id: &str| {
        amounts
            .iter()
            .find(|r| r[0] == json!(id))
            .map(|r| (r[1].clone(), r[2].clone()))
            .unwrap_or_else(|| panic!("{id} in {amounts:?}"))
    };
    assert_eq!(amount("QX7K2M9A"), (json!("12480.00"), json!("americas")));
    assert_eq!(amount("JD3H7Y5L"), (json!("4821.50"), json!("americas")));
    assert_eq!(amount("EU3T9W6Q"), (json!("4300.00"), json!("emea")));
    assert_eq!(amount("CW6R4T2K"), (json!(null), json!("americas")));

    // The headline: 2026-W11 in New York (9 to 16 March). Changes in the week: QX won and BT lost
    // (fine), CW created in qualified (an entry stage: fine), JD and EU3 first seen won (created
    // in a later stage: skips). EU8's creation is Monday 00:00 in Berlin, Sunday evening in New
    // York: the week before.
    example.ok(&[
        "metrics",
        "run",
        "stage_compliance_rate",
        "--period",
        "2026-W11",
    ]);
    let rows = example.duckdb(&format!(
        "select coalesce(team, ''), population, compliant, value, coalesce(examples, '') from {} where period = '2026-W11' order by 1",
        scan("metrics/stage_compliance_rate")
    ));
    assert_eq!(
        rows,
        vec![
            vec![
                json!(""),
                json!(5),
                json!(3),
                json!(0.6),
                json!("EU3T9W6Q, JD3H7Y5L")
            ],
            vec![
                json!("americas"),
                json!(4),
                json!(3),
                json!(0.75),
                json!("JD3H7Y5L")
            ],
            vec![
                json!("emea"),
                json!(1),
                json!(0),
                json!(0.0),
                json!("EU3T9W6Q")
            ],
        ]
    );

    // Again: nothing new lands, no change is derived twice.
    let again = example.ok(&["ingest"]);
    for file in [
        "opportunities/emea/pipeline-2026-03-13.csv",
        "opportunities/pipeline-2026-03-06.csv",
        "opportunities/pipeline-2026-03-13.csv",
    ] {
        assert!(
            Example::line(&again, file).contains("already ingested"),
            "{again}"
        );
    }
}

/// Example 2: a Salesforce export in Windows-1252 with a stage history that also records amount
/// and close-date edits. Hand-worked in examples/salesforce/README.md.
#[test]
fn salesforce_lands_as_written_and_edits_do_not_reset_the_silence_clock() {
    let example = Example::new("salesforce");
    let report = example.ok(&["ingest"]);
    for file in [
        "actions/Event.csv",
        "actions/Task.csv",
        "opportunities/Opportunity.csv",
        "stage_changes/OpportunityHistory.csv",
    ] {
        let line = Example::line(&report, file);
        assert!(line.contains("csv windows-1252 (detected) ','"), "{line}");
        let c = Example::counts(&line);
        assert_eq!(c[2], 0, "nothing quarantined: {line}");
    }
    let notes = example.duckdb(&format!(
        "select action_id, action_type, note, strftime(occurred_at, '%Y-%m-%d %H:%M') from {} order by 1",
        scan("raw/actions")
    ));
    assert_eq!(
        notes[0],
        vec![
            json!("00T5g00000Tk001AAA"),
            json!("task"),
            json!("Llamada de presentación – señal de interés"),
            json!("2026-03-12 16:00")
        ]
    );
    // The open task has no completion time: it counts from its creation.
    assert_eq!(notes[1][3], json!("2026-03-14 16:00"));
    assert_eq!(notes[3][1], json!("visit"));

    example.ok(&[
        "metrics",
        "run",
        "silent_warnings",
        "stage_compliance_rate",
        "--period",
        "2026-W11",
    ]);
    let warnings = example.duckdb(&format!(
        "select opportunity_id, stage, strftime(entered_at, '%Y-%m-%d %H:%M'), silent_hours, hours_remaining, status from {} where period = '2026-W11' order by hours_remaining",
        scan("metrics/silent_warnings")
    ));
    assert_eq!(
        warnings,
        vec![
            vec![
                json!("0065g00000SfA01AAA"),
                json!("qualified"),
                json!("2026-03-13 11:00"),
                json!(60.0),
                json!(-12.0),
                json!("overdue")
            ],
            vec![
                json!("0065g00000SfA02AAA"),
                json!("demo"),
                json!("2026-03-10 15:00"),
                json!(31.0),
                json!(17.0),
                json!("ok")
            ],
            vec![
                json!("0065g00000SfA04AAA"),
                json!("proposal"),
                json!("2026-03-09 09:00"),
                json!(53.25),
                json!(18.75),
                json!("ok")
            ],
        ]
    );
    let compliance = example.duckdb(&format!(
        "select population, compliant, value, examples from {} where period = '2026-W11' and team is null",
        scan("metrics/stage_compliance_rate")
    ));
    assert_eq!(
        compliance,
        vec![vec![
            json!(4),
            json!(3),
            json!(0.75),
            json!("0065g00000SfA04AAA")
        ]]
    );
}

/// Example 3: one store per file, an XLSX and the same data as GBK CSV; the action id is derived
/// from the card, the day and the product. The heat map is computed independently from the GBK
/// files by Python.
#[test]
fn pharmacy_lands_both_shapes_once_and_its_heatmap_matches_python() {
    let example = Example::new("pharmacy");
    let report = example.ok(&["ingest"]);
    let csv = Example::line(&report, "actions/chaoyang-2026-03.csv");
    assert_eq!(Example::counts(&csv), [7, 7, 0, 0, 0], "{report}");
    assert!(csv.contains("csv gbk (detected) ','"), "{csv}");
    // The workbook holds the same rows: the same derived ids, so all duplicates.
    let xlsx = Example::line(&report, "actions/chaoyang-2026-03.xlsx");
    assert_eq!(Example::counts(&xlsx), [7, 0, 0, 7, 0], "{report}");
    let wangjing = Example::line(&report, "actions/wangjing-2026-03.csv");
    assert_eq!(Example::counts(&wangjing), [3, 3, 0, 0, 0], "{report}");

    let ids = example.duckdb(&format!(
        "select count(*), count(distinct action_id), min(length(action_id)), count(*) filter (where note = '阿托伐他汀钙片') from {}",
        scan("raw/actions")
    ));
    assert_eq!(ids, vec![vec![json!(10), json!(10), json!(32), json!(4)]]);

    example.ok(&[
        "metrics",
        "run",
        "store_action_heatmap",
        "evidence_rate",
        "--period",
        "2026-W10",
    ]);
    let heatmap = example.duckdb(&format!(
        "select store_id, days_met, actions from {} where period = '2026-W10' and action_type = 'high_margin_recommendation' order by 1",
        scan("metrics/store_action_heatmap")
    ));
    let inbox = example.config.parent().unwrap().join("inbox/actions");
    let script = r#"
import csv, io, json, sys, datetime
week = [datetime.date(2026, 3, 2) + datetime.timedelta(days=d) for d in range(7)]
out = []
for store, name in [("S001", "chaoyang-2026-03.csv"), ("S002", "wangjing-2026-03.csv")]:
    rows = list(csv.DictReader(io.StringIO(open(sys.argv[1] + "/" + name, "rb").read().decode("gbk"))))
    days = [datetime.date.fromisoformat(r["购药时间"].split()[0]) for r in rows]
    in_week = [d for d in days if d in week]
    out.append([store, len(set(in_week)), len(in_week)])
print(json.dumps(out))
"#;
    let independent: Vec<Vec<serde_json::Value>> =
        python_json(&["-c", script, &inbox.display().to_string()]);
    assert_eq!(heatmap, independent);
    assert_eq!(
        independent,
        vec![
            vec![json!("S001"), json!(5), json!(7)],
            vec![json!("S002"), json!(3), json!(3)]
        ]
    );

    let evidence = example.duckdb(&format!(
        "select population, with_evidence from {} where period = '2026-W10' and team is null",
        scan("metrics/evidence_rate")
    ));
    assert_eq!(evidence, vec![vec![json!(10), json!(7)]]);
}
