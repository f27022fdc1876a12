//! Ingestion: formats and encodings, mapping, quarantine, idempotency, duplicates, crash safety,
//! and values that look like paths.

use std::time::{Duration, Instant};

use flowhealth::ingest::FileStatus;
use serde_json::json;

use crate::common::{ACTION_HEADER, Workspace, count, scan};

/// Three actions, one with a quoted note holding a newline, a comma and Chinese text.
fn actions_csv(prefix: &str) -> String {
    format!(
        "{ACTION_HEADER}\n\
         {prefix}1,2026-03-02 09:30:00,,R001,east,OPP-1,C1,,call,,,\n\
         {prefix}2,2026-03-02T10:00:00+08:00,2026-03-04 10:00:00,R001,east,OPP-1,C1,,demo,att://1,\"张三说：\n明天回访, ok\",\n\
         {prefix}3,2026-03-01T23:30:00Z,,M001,north,,M9,S001,member_signup,img://1,,\"{{\"\"wechat_followed_at\"\": \"\"2026-03-02T07:00:00\"\"}}\"\n"
    )
}

#[tokio::test]
async fn csv_in_utf8_bom_and_gbk_lands_the_same_values() {
    let ws = Workspace::new("");
    ws.inbox("actions/plain.csv", actions_csv("u"));
    ws.inbox(
        "actions/bom.csv",
        [b"\xEF\xBB\xBF".as_slice(), actions_csv("b").as_bytes()].concat(),
    );
    let text = actions_csv("g");
    let (gbk, _, unmappable) = encoding_rs::GBK.encode(&text);
    assert!(!unmappable);
    ws.inbox("actions/gbk.csv", gbk);

    let report = ws.ingest().await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert!(
        report
            .files
            .iter()
            .all(|f| f.status == FileStatus::Ingested && f.counts.landed == 3),
        "{report}"
    );

    let rows = ws.duckdb(&format!(
        "select action_id, note, strftime(occurred_at, '%Y-%m-%d %H:%M:%S'), strftime(recorded_at, '%Y-%m-%d %H:%M:%S'), dt \
         from {} order by action_id",
        scan("raw/actions")
    ));
    assert_eq!(rows.len(), 9);
    for prefix in ["b", "g", "u"] {
        let of = |n: usize| {
            rows.iter()
                .find(|r| r[0] == json!(format!("{prefix}{n}")))
                .expect("row landed")
        };
        // Naive times are local (Asia/Shanghai, +08:00); recorded_at defaults to occurred_at.
        assert_eq!(of(1)[2], json!("2026-03-02 01:30:00"));
        assert_eq!(of(1)[3], json!("2026-03-02 01:30:00"));
        assert_eq!(of(2)[1], json!("张三说：\n明天回访, ok"));
        assert_eq!(of(2)[2], json!("2026-03-02 02:00:00"));
        assert_eq!(of(2)[3], json!("2026-03-04 02:00:00"));
        // 23:30 UTC is 07:30 the next day in Shanghai: the dt partition is the local date.
        assert_eq!(of(3)[4], json!("2026-03-02"));
    }
}

#[tokio::test]
async fn ndjson_and_xlsx_land_with_their_types() {
    let ws = Workspace::new("");
    ws.inbox(
        "actions/app.ndjson",
        "{\"action_id\": 1001, \"occurred_at\": \"2026-03-02T09:00:00+08:00\", \"owner_id\": \"M1\", \"store_id\": \"S1\", \"action_type\": \"chronic_followup\", \"attrs\": {\"bp\": \"130/85\", \"last_report_date\": \"2026-02-20\"}}\n\
         \n\
         {\"action_id\": \"1002\", \"occurred_at\": \"2026-03-02 10:00\", \"owner_id\": \"M1\", \"action_type\": \"member_signup\", \"evidence\": null}\n",
    );
    let mut workbook = rust_xlsxwriter::Workbook::new();
    let sheet = workbook.add_worksheet();
    let date = rust_xlsxwriter::Format::new().set_num_format("yyyy-mm-dd hh:mm");
    for (c, h) in [
        "opportunity_id",
        "from_stage",
        "to_stage",
        "changed_at",
        "owner_id",
    ]
    .iter()
    .enumerate()
    {
        sheet.write_string(0, c as u16, *h).unwrap();
    }
    let when = chrono::NaiveDate::from_ymd_opt(2026, 3, 2)
        .unwrap()
        .and_hms_opt(14, 30, 0)
        .unwrap();
    sheet.write_number(1, 0, 5001.0).unwrap(); // an id typed as a number
    sheet.write_string(1, 2, "lead").unwrap();
    sheet.write_datetime_with_format(1, 3, when, &date).unwrap();
    sheet.write_string(1, 4, "R001").unwrap();
    sheet.write_string(2, 0, "5001").unwrap();
    sheet.write_string(2, 1, "lead").unwrap();
    sheet.write_string(2, 2, "qualified").unwrap();
    sheet
        .write_string(2, 3, "2026-03-03T09:00:00+08:00")
        .unwrap();
    sheet.write_string(2, 4, "R001").unwrap();
    ws.inbox("stage_changes/crm.xlsx", workbook.save_to_buffer().unwrap());

    let report = ws.ingest().await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(report.totals().landed, 4, "{report}");

    let actions = ws.duckdb(&format!(
        "select action_id, attrs, strftime(occurred_at, '%H:%M') from {} order by 1",
        scan("raw/actions")
    ));
    assert_eq!(actions[0][0], json!("1001"));
    let attrs: serde_json::Value = serde_json::from_str(actions[0][1].as_str().unwrap()).unwrap();
    assert_eq!(
        attrs,
        json!({"bp": "130/85", "last_report_date": "2026-02-20"})
    );
    assert_eq!(actions[1], vec![json!("1002"), json!(null), json!("02:00")]);

    let changes = ws.duckdb(&format!(
        "select opportunity_id, from_stage, to_stage, strftime(changed_at, '%Y-%m-%d %H:%M'), source_line from {} order by changed_at",
        scan("raw/stage_changes")
    ));
    assert_eq!(
        changes[0],
        vec![
            json!("5001"),
            json!(null),
            json!("lead"),
            json!("2026-03-02 06:30"),
            json!(2)
        ]
    );
    assert_eq!(
        changes[1],
        vec![
            json!("5001"),
            json!("lead"),
            json!("qualified"),
            json!("2026-03-03 01:00"),
            json!(3)
        ]
    );
}

#[tokio::test]
async fn a_crm_style_export_lands_with_config_only() {
    let ws = Workspace::new(
        "datasets:
  opportunities:
    columns:
      opportunity_id: Opportunity ID
      owner_id: Sales Agent
      customer_id: Account
      status: Deal Stage
      created_at: Engage Date
      closed_at: Close Date
      amount: Close Value
    values:
      status: { Prospecting: open, Engaging: open, Won: won, Lost: lost }
    timestamp_formats: ['%m/%d/%Y']
",
    );
    ws.inbox(
        "opportunities/sales_pipeline.csv",
        include_str!("../data/crm_sales_pipeline.csv"),
    );
    let report = ws.ingest().await;
    assert_eq!(report.exit_code(), 0, "{report}");
    let c = report.totals();
    assert_eq!(
        (c.rows_read, c.landed, c.quarantined),
        (6, 5, 1),
        "{report}"
    );
    let rows = ws.duckdb(&format!(
        "select opportunity_id, owner_id, customer_id, status, strftime(created_at, '%Y-%m-%d %H:%M'), amount::varchar from {} order by 1",
        scan("raw/opportunities")
    ));
    let by_id = |id: &str| {
        rows.iter()
            .find(|r| r[0] == json!(id))
            .unwrap_or_else(|| panic!("{id} landed"))
    };
    assert_eq!(
        by_id("1C1I7A6R"),
        &vec![
            json!("1C1I7A6R"),
            json!("Moses Frase"),
            json!("Cancity"),
            json!("won"),
            json!("2016-10-19 16:00"),
            json!("1054.00")
        ]
    );
    assert_eq!(by_id("Z063OYW0")[3], json!("open"));
    assert_eq!(by_id("Z063OYW0")[5], json!(null));
    assert_eq!(by_id("PE84CX4O")[3], json!("open"));
    assert_eq!(by_id("MV1LWRNH")[3], json!("lost"));
    assert_eq!(by_id("EC4QE1BX")[5], json!("50.50"));
    let quarantined = ws.duckdb(&format!(
        "select opportunity_id, reason from {}",
        scan("quarantine/opportunities")
    ));
    assert_eq!(quarantined[0][0], json!("ZZ9BROKEN"));
    assert!(
        quarantined[0][1]
            .as_str()
            .unwrap()
            .starts_with("status: `Negotiating` is not one of open, won, lost"),
        "{quarantined:?}"
    );
}

#[tokio::test]
async fn bad_rows_go_to_quarantine_with_reason_file_and_line() {
    let ws = Workspace::new("");
    let csv = format!(
        "{ACTION_HEADER}\n\
         ok1,2026-03-02 09:00,,R1,,,,,call,,\"two\nlines\",\n\
         ,2026-03-02 09:00,,R1,,,,,call,,,\n\
         bad-ts,02/30/2026,,R1,,,,,call,,,\n\
         too-many,2026-03-02 09:00,,R1,,,,,call,,,,surplus\n\
         bad-json,2026-03-02 09:00,,R1,,,,,call,,,{{sku: 1}}\n\
         not-object,2026-03-02 09:00,,R1,,,,,call,,,[1]\n\
         no-type,2026-03-02 09:00,,R1,,,,,,,,\n\
         ok2,2026-03-02 09:00,,R1,,,,,call,,,\n"
    );
    ws.inbox("actions/export.csv", csv);
    ws.inbox(
        "stage_changes/changes.csv",
        "opportunity_id,from_stage,to_stage,changed_at,owner_id\nO1,,lead,2026-03-02 09:00,R1\nO1,lead,closing,2026-03-03 09:00,R1\n",
    );
    let report = ws.ingest().await;
    assert_eq!(report.exit_code(), 0, "{report}");
    for file in &report.files {
        let c = file.counts;
        assert_eq!(
            c.landed + c.quarantined + c.duplicates,
            c.rows_read,
            "{report}"
        );
    }
    let actions = &report
        .files
        .iter()
        .find(|f| f.source == "actions/export.csv")
        .unwrap()
        .counts;
    assert_eq!(
        (actions.rows_read, actions.landed, actions.quarantined),
        (8, 2, 6)
    );

    let rows = ws.duckdb(&format!(
        "select source_line, reason, source_file, raw_record from {} order by source_line",
        scan("quarantine/actions")
    ));
    let lines_and_reasons: Vec<(i64, String)> = rows
        .iter()
        .map(|r| (r[0].as_i64().unwrap(), r[1].as_str().unwrap().to_string()))
        .collect();
    let expected = [
        (4, "action_id: required value is missing"),
        (5, "occurred_at: `02/30/2026` is not a timestamp"),
        (6, "the row has 13 fields, the header has 12"),
        (7, "attrs: malformed JSON"),
        (8, "attrs: must be a JSON object"),
        (9, "action_type: required value is missing"),
    ];
    assert_eq!(
        lines_and_reasons.len(),
        expected.len(),
        "{lines_and_reasons:?}"
    );
    for ((line, reason), (want_line, want_reason)) in lines_and_reasons.iter().zip(expected) {
        assert_eq!(*line, want_line);
        assert!(reason.starts_with(want_reason), "line {line}: {reason}");
    }
    assert!(rows.iter().all(|r| r[2] == json!("actions/export.csv")));
    let raw: serde_json::Value = serde_json::from_str(rows[2][3].as_str().unwrap()).unwrap();
    assert_eq!(raw["_extra_13"], json!("surplus"));
    assert_eq!(raw["action_id"], json!("too-many"));

    let stages = ws.duckdb(&format!(
        "select to_stage, reason from {}",
        scan("quarantine/stage_changes")
    ));
    assert_eq!(stages[0][0], json!("closing"));
    assert!(
        stages[0][1]
            .as_str()
            .unwrap()
            .starts_with("to_stage: unknown stage `closing`")
    );
}

#[test]
fn bad_files_are_rejected_whole_with_exit_2_and_the_rest_still_lands() {
    let ws = Workspace::new("datasets:\n  stage_changes: { encoding: utf-8 }\n");
    ws.inbox("actions/good.csv", actions_csv("ok"));
    ws.inbox("actions/empty.csv", "");
    ws.inbox(
        "actions/no-owner.csv",
        "action_id,occurred_at,action_type\na,2026-03-02 09:00,call\n",
    );
    ws.inbox("actions/export.parquet", "PAR1");
    let mut workbook = rust_xlsxwriter::Workbook::new();
    workbook
        .add_worksheet()
        .write_string(0, 0, "action_id")
        .unwrap();
    let xlsx = workbook.save_to_buffer().unwrap();
    ws.inbox("actions/truncated.xlsx", &xlsx[..xlsx.len() / 2]);
    let (gbk, _, _) = encoding_rs::GBK.encode(
        "opportunity_id,from_stage,to_stage,changed_at,owner_id\n商机1,,lead,2026-03-02 09:00,R1\n",
    );
    ws.inbox("stage_changes/gbk.csv", gbk);

    let output = ws.command().arg("ingest").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(2),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let says = |file: &str, text: &str| {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("{file}: rejected: ")))
            .unwrap_or_else(|| panic!("no message for {file}:\n{stdout}"));
        let reason = &line[format!("{file}: rejected: ").len()..];
        assert!(reason.starts_with(text), "{line}");
    };
    says("actions/empty.csv", "the file is empty");
    says(
        "actions/no-owner.csv",
        "the header lacks required column(s) owner_id",
    );
    says("actions/export.parquet", "unsupported file type");
    says("actions/truncated.xlsx", "not a readable XLSX workbook");
    says(
        "stage_changes/gbk.csv",
        "not valid UTF-8 (first bad byte at offset 55); if this is a GBK export, set datasets.stage_changes.encoding: gbk",
    );
    assert_eq!(count(&ws, "raw/actions"), 3);
    assert!(!ws.lake().join("raw/stage_changes").exists());
    // Rejected files are not in the ledger: fixing them and re-running lands them.
    std::fs::write(
        ws.path().join("config.yaml"),
        std::fs::read_to_string(ws.path().join("config.yaml"))
            .unwrap()
            .replace("utf-8", "gbk"),
    )
    .unwrap();
    std::fs::remove_file(ws.path().join("inbox/actions/export.parquet")).unwrap();
    let output = ws
        .command()
        .args(["ingest", "stage_changes"])
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stdout)
    );
    assert_eq!(
        ws.duckdb(&format!(
            "select opportunity_id from {}",
            scan("raw/stage_changes")
        ))[0][0],
        json!("商机1")
    );
}

#[test]
fn an_empty_inbox_says_where_it_looked() {
    let ws = Workspace::new("");
    let output = ws.command().arg("ingest").output().unwrap();
    assert_eq!(output.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.starts_with("no files to ingest in ") && stdout.contains("/inbox/<dataset>/"),
        "{stdout}"
    );
}

#[tokio::test]
async fn rerunning_ingest_is_a_no_op() {
    let ws = Workspace::new("");
    ws.inbox("actions/a.csv", actions_csv("a"));
    ws.inbox("actions/a-copy.csv", actions_csv("a"));
    let first = ws.ingest().await;
    // Files are taken in name order: a-copy.csv lands, a.csv is the same content.
    let status = |name: &str| {
        first
            .files
            .iter()
            .find(|f| f.source == name)
            .map(|f| f.status)
    };
    assert_eq!(
        status("actions/a-copy.csv"),
        Some(FileStatus::Ingested),
        "{first}"
    );
    assert_eq!(
        status("actions/a.csv"),
        Some(FileStatus::AlreadyIngested),
        "same content under another name: {first}"
    );
    assert_eq!(first.totals().landed, 3);
    let files = ws.lake_files();
    let second = ws.ingest().await;
    assert!(
        second
            .files
            .iter()
            .all(|f| f.status == FileStatus::AlreadyIngested),
        "{second}"
    );
    assert_eq!(second.totals().rows_read, 0);
    assert_eq!(ws.lake_files(), files);
    assert_eq!(count(&ws, "raw/actions"), 3);
}

#[tokio::test]
async fn duplicate_ids_across_files_land_once_and_a_changed_file_is_reported() {
    let ws = Workspace::new("");
    let rows = |ids: std::ops::RangeInclusive<u32>, note: &str| {
        let mut text = format!("{ACTION_HEADER}\n");
        for i in ids {
            text += &format!(
                "a{i},2026-03-0{} 09:00,,R1,east,,,,call,,{note},\n",
                1 + i % 7
            );
        }
        text
    };
    ws.inbox("actions/monday.csv", rows(1..=5, "first"));
    ws.inbox("actions/tuesday.csv", rows(4..=8, "second"));
    let report = ws.ingest().await;
    let t = report.totals();
    assert_eq!(
        (t.rows_read, t.landed, t.duplicates),
        (10, 8, 2),
        "{report}"
    );
    let check = ws.duckdb(&format!(
        "select count(*), count(distinct action_id) from {}",
        scan("raw/actions")
    ));
    assert_eq!(check[0], vec![json!(8), json!(8)]);
    let a4 = ws.duckdb(&format!(
        "select note from {} where action_id = 'a4'",
        scan("raw/actions")
    ));
    assert_eq!(a4, vec![vec![json!("first")]], "the first landing wins");

    ws.inbox("actions/monday.csv", rows(1..=9, "first"));
    let report = ws.ingest().await;
    let changed = report
        .files
        .iter()
        .find(|f| f.source == "actions/monday.csv")
        .unwrap();
    assert_eq!(changed.status, FileStatus::Changed, "{report}");
    assert!(
        changed
            .message
            .as_deref()
            .unwrap()
            .starts_with("changed since it was ingested at")
    );
    assert_eq!((changed.counts.landed, changed.counts.duplicates), (1, 8));
    assert_eq!(count(&ws, "raw/actions"), 9);
}

#[test]
fn a_process_killed_mid_ingest_is_finished_exactly_by_the_next_run() {
    let ws = Workspace::new("");
    // Large enough to be written in several flushes, so the kill lands between them.
    let rows = 4 * flowhealth::ingest::MAX_BUFFERED_ROWS;
    let mut text = String::with_capacity(rows * 80);
    text += ACTION_HEADER;
    text.push('\n');
    for i in 0..rows {
        let ts = if i % 100_000 == 7 {
            "not-a-time".to_string()
        } else {
            format!("2026-03-{:02} {:02}:{:02}:00", 1 + i % 28, i % 24, i % 60)
        };
        text += &format!("k{i},{ts},,R{},east,OPP-{},,,call,,,\n", i % 50, i % 3000);
    }
    // A second copy of the first 1000 ids, so duplicates are in play as well. The second copy
    // of an id whose first copy was quarantined is not a duplicate: it lands.
    for i in 0..1000 {
        text += &format!("k{i},2026-03-01 00:00:00,,R1,east,,,,call,,,\n");
    }
    ws.inbox("actions/big.csv", &text);
    let bad = |i: &usize| i % 100_000 == 7;
    let quarantined = (0..rows).filter(bad).count() as i64;
    let second_copies_landing = (0..1000).filter(bad).count() as i64;
    let duplicates = 1000 - second_copies_landing;

    let mut child = ws
        .command()
        .arg("ingest")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    loop {
        // Files are staged under _staging/ until the input file's ledger entry commits them.
        let staged = ws
            .lake_files()
            .iter()
            .any(|f| f.starts_with("_staging/") && f.ends_with(".parquet"));
        if staged {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "ingest ended before it could be interrupted"
        );
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "nothing written after 120 s"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let ledger = ws.lake().join("_flowhealth/ingest/ledger/actions");
    assert!(
        std::fs::read_dir(&ledger).map_or(true, |mut d| d.next().is_none()),
        "the run was not interrupted before its commit"
    );
    assert!(
        ws.lake_files().iter().any(|f| f.starts_with("_staging/")),
        "the killed run should have left staged output to clean up"
    );
    // Nothing uncommitted is where a reader looks.
    assert!(
        !ws.lake_files()
            .iter()
            .any(|f| f.starts_with("raw/") || f.starts_with("quarantine/")),
        "{:?}",
        ws.lake_files()
    );

    let output = ws.command().arg("ingest").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("left by an interrupted earlier run"),
        "{stdout}"
    );
    let landed = rows as i64 - quarantined + second_copies_landing;
    let check = ws.duckdb(&format!(
        "select count(*), count(distinct action_id) from {}",
        scan("raw/actions")
    ));
    assert_eq!(check[0], vec![json!(landed), json!(landed)]);
    assert_eq!(count(&ws, "quarantine/actions"), quarantined);
    assert!(
        stdout.contains(&format!(
            "{}  {:>10}  {:>10}  {:>11}  {:>10}  ingested",
            "actions/big.csv",
            rows + 1000,
            landed,
            quarantined,
            duplicates
        )),
        "{stdout}"
    );
    assert!(
        ws.lake_files()
            .iter()
            .all(|f| !f.contains('#') && !f.starts_with("_staging/")),
        "staging files left: {:?}",
        ws.lake_files()
    );
}

#[tokio::test]
async fn path_like_values_are_data_not_paths() {
    let ws = Workspace::new("");
    let sneaky = [
        "../../etc",
        "/etc/passwd",
        "dt=2020-01-01/../..",
        "a/../../b",
        "..",
        "%2E%2E",
    ];
    let mut text = format!("{ACTION_HEADER}\n");
    for (i, value) in sneaky.iter().enumerate() {
        text += &format!("{value},2026-03-02 09:00,,{value},{value},,,{value},call,,,\n");
        text += &format!("id{i},2026-03-02 09:00,,R1,,,,{value},call,,,\n");
    }
    ws.inbox("actions/sneaky.csv", text);
    let report = ws.ingest().await;
    assert_eq!(report.totals().landed, 2 * sneaky.len() as u64, "{report}");
    for file in ws.lake_files() {
        let ok = file.starts_with("_flowhealth/") || regex_like_partition(&file);
        assert!(ok, "unexpected file {file}");
    }
    assert!(!ws.path().join("etc").exists() && !ws.path().join("b").exists());
    let stores = ws.duckdb(&format!(
        "select distinct store_id from {} order by 1",
        scan("raw/actions")
    ));
    let mut expected: Vec<&str> = sneaky.to_vec();
    expected.sort();
    assert_eq!(
        stores
            .iter()
            .map(|r| r[0].as_str().unwrap())
            .collect::<Vec<_>>(),
        expected
    );
}

/// `raw/actions/dt=YYYY-MM-DD/<hex>-<n>.parquet`
fn regex_like_partition(file: &str) -> bool {
    let parts: Vec<&str> = file.split('/').collect();
    parts.len() == 4
        && parts[0] == "raw"
        && parts[1] == "actions"
        && parts[2].len() == 13
        && parts[2].starts_with("dt=2026-03-")
        && parts[3].ends_with(".parquet")
        && parts[3]
            .split('-')
            .next()
            .is_some_and(|h| h.len() == 16 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}
