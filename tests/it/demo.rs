//! `flowhealth demo` end to end: the lake it builds conforms, its counts reconcile with the input
//! files counted independently, and the same seed gives the same files.

use std::path::Path;
use std::process::Command;

use crate::common::{Workspace, count};

fn run_demo(ws: &Workspace) -> String {
    run_demo_weeks(ws, 3)
}

/// `flowhealth demo` (seed 11, a small organisation, `weeks` weeks to 31 March 2026) with the
/// shipped config; returns its output.
pub fn run_demo_weeks(ws: &Workspace, weeks: u32) -> String {
    // The shipped config, with its metric catalog where it is in the repository.
    let config = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config.yaml"))
        .unwrap()
        .replace(
            "queries: ./queries",
            concat!("queries: ", env!("CARGO_MANIFEST_DIR"), "/queries"),
        );
    std::fs::write(ws.path().join("config.yaml"), config).unwrap();
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
            &weeks.to_string(),
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
    let inbox = ws.path().join("inbox").display().to_string();
    let input: serde_json::Value = crate::common::python_json(&["-c", COUNT_ROWS, &inbox]);

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
            .arg("--metrics")
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

    // Every demo week has its index: one row per team and week, plus the organisation's.
    assert!(
        stdout.contains("process health index, 2026-W13"),
        "{stdout}"
    );
    let index = ws.duckdb(&format!(
        "select period, count(*) filter (where team is null), count(distinct team), count(*)
         from {} group by 1 order by 1",
        crate::common::scan("metrics/process_health_index")
    ));
    let weeks: Vec<&str> = index.iter().map(|r| r[0].as_str().unwrap()).collect();
    // 11 to 31 March: the weeks of 16 and 23 March are whole.
    assert_eq!(weeks, ["2026-W12", "2026-W13"]);
    // People read the index as percentages with one decimal, the organisation by name, under a
    // header: the lake's numbers, as DuckDB reads them.
    let shown = stdout
        .split("process health index, 2026-W13:\n")
        .nth(1)
        .unwrap();
    let mut lines = shown.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap()
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        header,
        [
            "team",
            "index",
            "stage compliance",
            "evidence",
            "silent overtime"
        ]
    );
    let rows = ws.duckdb(&format!(
        "select coalesce(team, '(organisation)'), coalesce(printf('%.1f%%', value * 100), 'n/a'), coalesce(printf('%.1f%%', evidence_rate * 100), 'n/a')
         from {} where period = '2026-W13' order by team nulls first",
        crate::common::scan("metrics/process_health_index")
    ));
    for row in &rows {
        let line: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(line[0], row[0].as_str().unwrap(), "{shown}");
        assert_eq!(line[1], row[1].as_str().unwrap(), "{shown}");
        assert_eq!(line[3], row[2].as_str().unwrap(), "{shown}");
    }
    for row in &index {
        assert_eq!(row[1], 1, "{row:?}");
        assert_eq!(
            row[3].as_i64().unwrap(),
            row[2].as_i64().unwrap() + 1,
            "{row:?}"
        );
    }

    // The demo ends with the latest week's report in the outbox (transport: file), its path
    // printed, and the page and the message in the lake.
    assert!(
        stdout.contains("sent weekly-2026-W13: ./outbox/sent/weekly-2026-W13.eml"),
        "{stdout}"
    );
    let message =
        std::fs::read_to_string(ws.path().join("outbox/sent/weekly-2026-W13.eml")).unwrap();
    assert!(message.contains("To: leadership@example.com"), "{message}");
    assert!(ws.lake().join("reports/weekly/2026-W13.html").exists());
    assert!(ws.lake().join("reports/weekly/2026-W13.eml").exists());

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

/// Runs `flowhealth query SQL --format csv` and returns the data rows.
fn query_csv(ws: &Workspace, sql: &str) -> Vec<String> {
    let output = ws
        .command()
        .args(["query", sql, "--format", "csv"])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{sql}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .skip(1)
        .map(String::from)
        .collect()
}

/// DuckDB rows as comma-joined text, the way the CSV output writes them.
fn duck_csv(ws: &Workspace, sql: &str) -> Vec<String> {
    ws.duckdb(sql)
        .iter()
        .map(|row| {
            row.iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), String::from))
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect()
}

/// is_stage_skip for the shipped stages, written as plain SQL for DuckDB (`docs/contract.md`
/// section 4.1).
const DUCK_SKIP: &str = "CASE
    WHEN r_to IS NULL OR (NOT created AND r_from IS NULL) THEN NULL
    WHEN to_stage = 'lost' THEN false
    WHEN created AND to_stage = 'qualified' THEN false
    ELSE r_to > coalesce(r_from, 0) + 1 END";

const DUCK_RANKS: &str = "SELECT *, coalesce(from_stage, '') = '' AS created,
    list_position(['lead','qualified','demo','proposal','negotiation','contract_approval','won','lost'], to_stage) AS r_to,
    list_position(['lead','qualified','demo','proposal','negotiation','contract_approval','won','lost'], from_stage) AS r_from";

#[test]
fn queries_and_the_function_library_agree_with_duckdb_on_the_demo_lake() {
    let ws = Workspace::new("");
    run_demo(&ws);
    let actions = crate::common::scan("raw/actions");
    let changes = crate::common::scan("raw/stage_changes");

    // The issue's example, as CSV.
    assert_eq!(
        query_csv(
            &ws,
            "select action_type, count(*) from actions group by 1 order by 1"
        ),
        duck_csv(
            &ws,
            &format!("select action_type, count(*) from {actions} group by 1 order by 1")
        )
    );

    // Skips, change by change and per opportunity, against the rules written out in plain SQL.
    assert_eq!(
        query_csv(
            &ws,
            "select count(*) filter (where is_stage_skip(from_stage, to_stage)), count(is_stage_skip(from_stage, to_stage)) from stage_changes"
        ),
        duck_csv(
            &ws,
            &format!(
                "select count(*) filter (where {DUCK_SKIP}), count({DUCK_SKIP}) from ({DUCK_RANKS} from {changes})"
            )
        )
    );
    let skips = query_csv(
        &ws,
        "select count(*) filter (where is_stage_skip(from_stage, to_stage)) from stage_changes",
    );
    assert_ne!(skips, vec!["0"], "the demo plants skips");
    assert_eq!(
        query_csv(
            &ws,
            "select count(*) filter (where ok), count(*) filter (where not ok) from (
               select stage_path_compliant(from_stage, to_stage order by changed_at) as ok
               from stage_changes group by opportunity_id)"
        ),
        duck_csv(
            &ws,
            &format!(
                "select count(*) filter (where ok), count(*) filter (where not ok) from (
                   select bool_and(not ({DUCK_SKIP})) as ok from ({DUCK_RANKS} from {changes})
                   group by opportunity_id)"
            )
        )
    );

    // Entry lag in hours, summed (Asia/Shanghai has no DST: plain subtraction is the truth).
    let ours: f64 = query_csv(
        &ws,
        "select sum(silent_hours(occurred_at, recorded_at)) from actions",
    )[0]
    .parse()
    .unwrap();
    let theirs = ws.duckdb(&format!(
        "select sum(epoch_us(recorded_at) - epoch_us(occurred_at)) / 3600e6 from {actions}"
    ))[0][0]
        .as_f64()
        .unwrap();
    assert!(
        (ours - theirs).abs() < 1e-6 * theirs.abs().max(1.0),
        "{ours} vs {theirs}"
    );

    // The longest run of days without a chronic follow-up per store, against gaps between
    // consecutive days computed by DuckDB.
    let window = "DATE '2026-03-11', DATE '2026-03-31'";
    assert_eq!(
        query_csv(
            &ws,
            &format!(
                "select store_id, longest_zero_run(dt, {window}) from actions
                 where action_type = 'chronic_followup' and dt between {window_between}
                 group by 1 order by 1",
                window_between = "DATE '2026-03-11' and DATE '2026-03-31'"
            )
        ),
        duck_csv(
            &ws,
            &format!(
                "with d as (select distinct store_id, dt from {actions}
                            where action_type = 'chronic_followup' and dt between DATE '2026-03-11' and DATE '2026-03-31'),
                 gaps as (select store_id, dt - coalesce(lag(dt) over (partition by store_id order by dt), DATE '2026-03-10') - 1 as gap from d
                          union all select store_id, DATE '2026-03-31' - max(dt) from d group by 1)
                 select store_id, max(gap) from gaps group by 1 order by 1"
            )
        )
    );

    // A one-week query reads that week's files only (the plan lists the first five files of
    // each file group), though the lake holds three weeks.
    let plan = query_csv(
        &ws,
        "explain select action_type, count(*) from actions where dt between date '2026-03-16' and date '2026-03-22' group by 1",
    )
    .join("\n");
    let mut days: Vec<&str> = plan
        .split("/raw/actions/")
        .skip(1)
        .filter_map(|s| s.get(..13))
        .collect();
    days.sort();
    days.dedup();
    let week: Vec<String> = (16..=22).map(|d| format!("dt=2026-03-{d}")).collect();
    assert!(!days.is_empty(), "{plan}");
    assert!(days.iter().all(|d| week.iter().any(|w| w == d)), "{plan}");
    assert!(
        std::fs::read_dir(ws.lake().join("raw/actions"))
            .unwrap()
            .count()
            > 14
    );
}

/// The week 2026-W13 in Asia/Shanghai (the shipped config), as UTC bounds for DuckDB.
const W13: &str = "occurred_at >= TIMESTAMPTZ '2026-03-22 16:00:00+00' AND occurred_at < TIMESTAMPTZ '2026-03-29 16:00:00+00'";

#[test]
fn the_demo_plants_a_templated_store_a_templated_rep_and_promises_kept_and_broken() {
    let ws = Workspace::new("");
    run_demo(&ws);
    let actions = crate::common::scan("raw/actions");
    let templated = crate::common::scan("metrics/templated_notes");
    let commitments = crate::common::scan("metrics/commitments");

    // Flagged by the metric: the second store (every 35th from it copies one template) and the
    // rep R003, who logs every call with one phrase.
    let flagged = duck_csv(
        &ws,
        &format!(
            "select grain, coalesce(store_id, owner_id) from {templated}
             where period = '2026-W13' and flagged order by 1 desc, 2"
        ),
    );
    assert_eq!(flagged, ["store,S0002", "owner,R003"]);
    // Independently: notes as DuckDB normalises them (numbers to '#', only letters kept), and
    // the share of each store's most repeated note among its five or more of the week.
    let repeated = duck_csv(
        &ws,
        &format!(
            "with notes as (
               select coalesce(store_id, owner_id) as subject, action_type,
                      regexp_replace(regexp_replace(lower(note), '[0-9]+([.,:][0-9]+)*', '#', 'g'), '[^\\p{{L}}#]', '', 'g') as norm
               from {actions} where note is not null and {W13}),
             counted as (select subject, action_type, count(*) over (partition by subject, action_type) as n,
                                count(*) over (partition by subject, action_type, norm) as same from notes)
             select distinct subject from counted where n >= 5 and same / n >= 0.6 order by 1"
        ),
    );
    assert_eq!(repeated, ["R003", "S0002"]);
    let s0002 = duck_csv(
        &ws,
        &format!(
            "select notes, templated, template_notes from {templated}
             where period = '2026-W13' and store_id = 'S0002'"
        ),
    );
    let copies = duck_csv(
        &ws,
        &format!(
            "select count(*), count(*), count(*) from {actions}
             where store_id = 'S0002' and action_type = 'chronic_followup' and {W13}
               and regexp_full_match(note, '血压[0-9]+/[0-9]+，建议低盐饮食，按时服药')"
        ),
    );
    assert_eq!(s0002, copies);

    // Promises: some kept, some broken; every status agrees with the actions DuckDB finds on
    // the same opportunity (or customer) between the promise and its deadline.
    let statuses = duck_csv(
        &ws,
        &format!(
            "with c as (select * from {commitments} where period = '2026-W13'),
                  a as (select * from {actions})
             select c.status,
                    exists (select 1 from a
                            where coalesce('opportunity:' || a.opportunity_id, 'customer:' || a.customer_id)
                                = coalesce('opportunity:' || c.opportunity_id, 'customer:' || c.customer_id)
                              and a.occurred_at > c.made_at and a.occurred_at <= c.deadline
                              and a.occurred_at < c.as_of) as kept,
                    c.deadline < c.as_of as passed, count(*)
             from c group by all order by all"
        ),
    );
    let status_of = |row: &str| row.split(',').next().unwrap().to_string();
    for row in &statuses {
        let expected = match &row.split(',').collect::<Vec<_>>()[1..3] {
            ["true", _] => "kept",
            ["false", "true"] => "broken",
            _ => "open or due_soon",
        };
        assert!(expected.contains(&status_of(row)), "{row}: {statuses:?}");
    }
    let seen: Vec<String> = statuses.iter().map(|r| status_of(r)).collect();
    assert!(
        seen.iter().any(|s| s == "kept") && seen.iter().any(|s| s == "broken"),
        "{statuses:?}"
    );

    // The deadlines: 48 hours is 48 real hours; "tomorrow" ends at 23:59:59 of the next local day.
    let deadlines = duck_csv(
        &ws,
        &format!(
            "select count(*) filter (where promise = '承诺48小时内出服务方案' and deadline - made_at <> interval 48 hours),
                    count(*) filter (where promise = '承诺48小时内出服务方案'),
                    count(*) filter (where promise = '明天给报价' and deadline <>
                        (((made_at at time zone 'Asia/Shanghai')::date + interval 1 day + interval '23:59:59') at time zone 'Asia/Shanghai')),
                    count(*) filter (where promise = '明天给报价')
             from {commitments} where period = '2026-W13'"
        ),
    );
    let counts: Vec<i64> = deadlines[0]
        .split(',')
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!((counts[0], counts[2]), (0, 0), "{deadlines:?}");
    assert!(counts[1] > 0 && counts[3] > 0, "{deadlines:?}");
}
