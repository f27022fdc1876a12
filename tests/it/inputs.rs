//! Real exports by config alone: encodings decided per file, delimiters, JSON arrays, blank rows,
//! duplicate headers, physical line numbers, null tokens, amounts, epoch times and plausible
//! years, per-source timezones, sources with globs, constants and fallback columns, derived ids,
//! and stage history derived from snapshots. Every landed value is read back with DuckDB.

use flowhealth::ingest::{FileStatus, IngestReport};
use serde_json::json;

use crate::common::{ACTION_HEADER, Workspace, count, scan};

fn file<'a>(report: &'a IngestReport, name: &str) -> &'a flowhealth::ingest::FileOutcome {
    report
        .files
        .iter()
        .find(|f| f.source == name)
        .unwrap_or_else(|| panic!("{name} in the report:\n{report}"))
}

/// `landed + quarantined + duplicates + blank = read` for every file.
fn assert_accounted(report: &IngestReport) {
    for f in &report.files {
        let c = f.counts;
        assert_eq!(
            c.landed + c.quarantined + c.duplicates + c.blank,
            c.rows_read,
            "{}: {report}",
            f.source
        );
    }
}

fn notes(ws: &Workspace) -> Vec<(String, String)> {
    ws.duckdb(&format!(
        "select action_id, coalesce(note, '') from {} order by 1",
        scan("raw/actions")
    ))
    .into_iter()
    .map(|r| {
        (
            r[0].as_str().unwrap().to_string(),
            r[1].as_str().unwrap().to_string(),
        )
    })
    .collect()
}

#[tokio::test]
async fn a_windows_1252_export_lands_as_written_under_auto() {
    let ws = Workspace::new("");
    let text = format!(
        "{ACTION_HEADER}\n\
         w1,2026-03-02 09:00,,R1,ventas,OPP-1,,,call,,Negociación con el cliente: señal de compra,\n\
         w2,2026-03-02 10:00,,R1,ventas,OPP-1,,,visit,,Reunión técnica en Logroño – próxima cita,\n"
    );
    let (bytes, _, unmappable) = encoding_rs::WINDOWS_1252.encode(&text);
    assert!(!unmappable);
    ws.inbox("actions/crm.csv", &bytes);
    let report = ws.ingest().await;
    assert_eq!(report.exit_code(), 0, "{report}");
    let crm = file(&report, "actions/crm.csv");
    assert_eq!(crm.counts.landed, 2, "{report}");
    assert_eq!(
        crm.read_as.as_deref(),
        Some("csv windows-1252 (detected) ','")
    );
    assert!(report.to_string().contains("windows-1252 (detected)"));
    assert_eq!(
        notes(&ws),
        [
            (
                "w1".into(),
                "Negociación con el cliente: señal de compra".into()
            ),
            (
                "w2".into(),
                "Reunión técnica en Logroño – próxima cita".into()
            )
        ]
    );
    // The ledger records how the file was read.
    let ledger = ws.lake().join("_flowhealth/ingest/ledger/actions");
    let entry = std::fs::read_dir(&ledger).unwrap().next().unwrap().unwrap();
    let entry: serde_json::Value =
        serde_json::from_slice(&std::fs::read(entry.path()).unwrap()).unwrap();
    assert_eq!(entry["read_as"], json!("csv windows-1252 (detected) ','"));
}

#[tokio::test]
async fn a_utf8_file_with_a_pasted_gbk_row_lands_its_utf8_rows_and_quarantines_that_one() {
    let ws = Workspace::new("");
    let (stray, _, _) =
        encoding_rs::GBK.encode("m2,2026-03-02 10:00,,R1,,,,,call,,李四：已签约，下周回款,\n");
    let text = [
        format!("{ACTION_HEADER}\nm1,2026-03-02 09:00,,R1,,,,,call,,张三说：明天回访,\n")
            .as_bytes(),
        &stray,
        "m3,2026-03-02 11:00,,R1,,,,,call,,王五：客户要求演示,\n".as_bytes(),
    ]
    .concat();
    ws.inbox("actions/mixed.csv", text);
    let report = ws.ingest().await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_accounted(&report);
    let mixed = file(&report, "actions/mixed.csv");
    assert_eq!(
        (mixed.counts.landed, mixed.counts.quarantined),
        (2, 1),
        "{report}"
    );
    assert_eq!(mixed.read_as.as_deref(), Some("csv utf-8 (detected) ','"));
    assert_eq!(
        notes(&ws),
        [
            ("m1".into(), "张三说：明天回访".into()),
            ("m3".into(), "王五：客户要求演示".into())
        ]
    );
    let quarantined = ws.duckdb(&format!(
        "select source_line, reason from {}",
        scan("quarantine/actions")
    ));
    assert_eq!(quarantined[0][0], json!(3));
    let reason = quarantined[0][1].as_str().unwrap();
    assert!(
        reason.starts_with("not valid UTF-8") && reason.contains("looks like GBK"),
        "{reason}"
    );
}

#[tokio::test]
async fn excel_unicode_text_and_utf32_land_through_their_byte_order_marks() {
    let ws = Workspace::new("");
    // Excel's "Unicode Text": UTF-16LE with a BOM, tab-separated, CRLF.
    let text = "action_id\toccurred_at\towner_id\taction_type\tnote\r\nu1\t2026-03-02 09:00\tR1\tcall\tÜber 中文 ✓\r\n";
    let utf16: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    ws.inbox("actions/unicode.txt", utf16);
    let text =
        "action_id,occurred_at,owner_id,action_type,note\nu2,2026-03-02 09:00,R1,call,Ünïcödé 𝄞\n";
    let utf32: Vec<u8> = [0xFF, 0xFE, 0, 0]
        .into_iter()
        .chain(text.chars().flat_map(|c| (c as u32).to_le_bytes()))
        .collect();
    ws.inbox("actions/utf32.csv", utf32);
    let report = ws.ingest().await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(
        file(&report, "actions/unicode.txt").read_as.as_deref(),
        Some("csv utf-16le (bom) tab")
    );
    assert_eq!(
        file(&report, "actions/utf32.csv").read_as.as_deref(),
        Some("csv utf-32le (bom) ','")
    );
    assert_eq!(
        notes(&ws),
        [
            ("u1".into(), "Über 中文 ✓".into()),
            ("u2".into(), "Ünïcödé 𝄞".into())
        ]
    );
}

#[tokio::test]
async fn declared_encodings_take_any_whatwg_label_per_dataset_and_per_source() {
    let ws = Workspace::new(
        "datasets:\n  actions:\n    encoding: big5\n    sources:\n      japan: { files: 'jp-*.csv', encoding: shift_jis }\n",
    );
    let tw = format!("{ACTION_HEADER}\nb1,2026-03-02 09:00,,R1,,,,,call,,客戶說：下週簽約,\n");
    ws.inbox("actions/tw.csv", encoding_rs::BIG5.encode(&tw).0);
    let jp = format!("{ACTION_HEADER}\nj1,2026-03-02 09:00,,R1,,,,,call,,お客様：来週デモ希望,\n");
    ws.inbox("actions/jp-2026.csv", encoding_rs::SHIFT_JIS.encode(&jp).0);
    let report = ws.ingest().await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(
        file(&report, "actions/tw.csv").read_as.as_deref(),
        Some("csv big5 (declared) ','")
    );
    assert_eq!(
        file(&report, "actions/jp-2026.csv").read_as.as_deref(),
        Some("csv shift_jis (declared) ','")
    );
    assert_eq!(
        notes(&ws),
        [
            ("b1".into(), "客戶說：下週簽約".into()),
            ("j1".into(), "お客様：来週デモ希望".into())
        ]
    );
}

#[tokio::test]
async fn delimiters_are_sniffed_per_file_and_tsv_is_tab() {
    let ws = Workspace::new("");
    ws.inbox(
        "actions/semicolons.csv",
        "action_id;occurred_at;owner_id;action_type;note\ns1;2026-03-02 09:00;R1;call;\"one, two\"\n",
    );
    ws.inbox(
        "actions/pipes.txt",
        "action_id|occurred_at|owner_id|action_type|note\np1|2026-03-02 09:00|R1|call|a;b\n",
    );
    ws.inbox(
        "actions/tabs.tsv",
        "action_id\toccurred_at\towner_id\taction_type\tnote\nt1\t2026-03-02 09:00\tR1\tcall\tx|y\n",
    );
    let report = ws.ingest().await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(report.totals().landed, 3, "{report}");
    assert_eq!(
        file(&report, "actions/semicolons.csv").read_as.as_deref(),
        Some("csv utf-8 (detected) ';'")
    );
    assert_eq!(
        file(&report, "actions/pipes.txt").read_as.as_deref(),
        Some("csv utf-8 (detected) '|'")
    );
    assert_eq!(
        file(&report, "actions/tabs.tsv").read_as.as_deref(),
        Some("csv utf-8 (detected) tab")
    );
    assert_eq!(
        notes(&ws),
        [
            ("p1".into(), "a;b".into()),
            ("s1".into(), "one, two".into()),
            ("t1".into(), "x|y".into())
        ]
    );
}

#[test]
fn a_header_that_does_not_match_says_wrong_delimiter_or_wrong_encoding() {
    let ws = Workspace::new(
        "datasets:\n  actions: { delimiter: ',' }\n  stage_changes: { encoding: utf-8 }\n",
    );
    ws.inbox(
        "actions/semicolons.csv",
        "action_id;occurred_at;owner_id;action_type\ns1;2026-03-02 09:00;R1;call\n",
    );
    // UTF-16 without a byte order mark, declared UTF-8.
    let text = "opportunity_id,to_stage,changed_at,owner_id\nO1,lead,2026-03-02 09:00,R1\n";
    ws.inbox(
        "stage_changes/utf16.csv",
        text.encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect::<Vec<u8>>(),
    );
    let output = ws.command().arg("ingest").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{stdout}");
    let reason = |name: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{name}: rejected: ")))
            .unwrap_or_else(|| panic!("{name}:\n{stdout}"))
            .to_string()
    };
    let semicolons = reason("actions/semicolons.csv");
    assert!(
        semicolons.contains("wrong delimiter")
            && semicolons.contains("set datasets.actions.delimiter: ';'")
            && !semicolons.contains("map source columns"),
        "{semicolons}"
    );
    let utf16 = reason("stage_changes/utf16.csv");
    assert!(
        utf16.contains("wrong encoding") && !utf16.contains("map source columns"),
        "{utf16}"
    );
}

#[tokio::test]
async fn a_json_file_holding_one_array_lands_its_objects_with_their_lines() {
    let ws = Workspace::new("");
    ws.inbox(
        "actions/export.json",
        "[\n  {\"action_id\": \"j1\", \"occurred_at\": \"2026-03-02T09:00:00+08:00\", \"owner_id\": \"R1\", \"action_type\": \"call\"},\n  {\n    \"action_id\": \"j2\",\n    \"occurred_at\": \"2026-03-02T10:00:00+08:00\", \"owner_id\": \"R1\", \"action_type\": \"demo\",\n    \"attrs\": {\"sku\": \"A1\", \"tags\": [\"x\", \"]\"]}, \"note\": \"brace } and bracket ] in text\"\n  },\n  {},\n  42\n]\n",
    );
    let report = ws.ingest().await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_accounted(&report);
    let export = file(&report, "actions/export.json");
    assert_eq!(
        (
            export.counts.rows_read,
            export.counts.landed,
            export.counts.blank,
            export.counts.quarantined
        ),
        (4, 2, 1, 1),
        "{report}"
    );
    assert_eq!(
        export.read_as.as_deref(),
        Some("json array utf-8 (detected)")
    );
    let rows = ws.duckdb(&format!(
        "select action_id, source_line, note from {} order by 1",
        scan("raw/actions")
    ));
    assert_eq!(rows[0][1], json!(2));
    assert_eq!(rows[1][1], json!(3));
    assert_eq!(rows[1][2], json!("brace } and bracket ] in text"));
    let bad = ws.duckdb(&format!(
        "select source_line, reason from {}",
        scan("quarantine/actions")
    ));
    assert_eq!(bad[0][0], json!(9));
    assert!(
        bad[0][1]
            .as_str()
            .unwrap()
            .starts_with("not a JSON object but a number")
    );

    // An array that never closes rejects the file: nothing of it lands.
    ws.inbox(
        "actions/truncated.json",
        "[{\"action_id\": \"k1\", \"occurred_at\": \"2026-03-02T09:00:00Z\", \"owner_id\": \"R1\", \"action_type\": \"call\"},\n{\"action_id\": \"k2\"",
    );
    let report = ws.ingest().await;
    let truncated = file(&report, "actions/truncated.json");
    assert_eq!(truncated.status, FileStatus::Rejected, "{report}");
    assert!(
        truncated
            .message
            .as_deref()
            .unwrap()
            .starts_with("the JSON array is not closed"),
        "{report}"
    );
    assert_eq!(count(&ws, "raw/actions"), 2);
}

#[tokio::test]
async fn blank_rows_are_skipped_and_counted_the_same_in_csv_json_and_xlsx() {
    let ws = Workspace::new("");
    ws.inbox(
        "actions/excel.csv",
        format!("{ACTION_HEADER}\n\nc1,2026-03-02 09:00,,R1,,,,,call,,,\n,,,,,,,,,,,\n   \n;\nc2,2026-03-02 10:00,,R1,,,,,call,,,\n\n"),
    );
    ws.inbox(
        "actions/app.ndjson",
        "{\"action_id\": \"n1\", \"occurred_at\": \"2026-03-02T09:00:00Z\", \"owner_id\": \"R1\", \"action_type\": \"call\"}\n\n{\"action_id\": null, \"note\": \"\"}\n   \n",
    );
    let mut workbook = rust_xlsxwriter::Workbook::new();
    let sheet = workbook.add_worksheet();
    for (c, h) in ["action_id", "occurred_at", "owner_id", "action_type"]
        .iter()
        .enumerate()
    {
        sheet.write_string(0, c as u16, *h).unwrap();
    }
    // Row 2 is missing from the sheet, row 3 holds empty strings, row 5 is data.
    sheet.write_string(2, 0, "").unwrap();
    sheet.write_string(2, 3, " ").unwrap();
    for (c, v) in ["x1", "2026-03-02 09:00", "R1", "call"].iter().enumerate() {
        sheet.write_string(4, c as u16, *v).unwrap();
    }
    ws.inbox("actions/sheet.xlsx", workbook.save_to_buffer().unwrap());
    let report = ws.ingest().await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_accounted(&report);
    let counts = |name: &str| {
        let c = file(&report, name).counts;
        (c.rows_read, c.landed, c.quarantined, c.blank)
    };
    // The `;` line is one field that is not empty: a row with too few fields, quarantined.
    assert_eq!(counts("actions/excel.csv"), (7, 2, 1, 4), "{report}");
    assert_eq!(counts("actions/app.ndjson"), (4, 1, 0, 3), "{report}");
    assert_eq!(counts("actions/sheet.xlsx"), (4, 1, 0, 3), "{report}");
    let text = report.to_string();
    assert!(
        text.contains("    read as csv utf-8 (detected) ',', 4 blank rows\n"),
        "{text}"
    );
    assert!(text.contains("and 10 blank row(s) skipped"), "{text}");
    let lines = ws.duckdb(&format!(
        "select action_id, source_line from {} order by 1",
        scan("raw/actions")
    ));
    assert_eq!(
        lines,
        vec![
            vec![json!("c1"), json!(3)],
            vec![json!("c2"), json!(7)],
            vec![json!("n1"), json!(1)],
            vec![json!("x1"), json!(5)]
        ]
    );
}

#[test]
fn a_used_column_named_twice_rejects_the_file_naming_both_positions() {
    let ws = Workspace::new("datasets:\n  actions: { columns: { note: Comment } }\n");
    ws.inbox(
        "actions/twice.csv",
        "action_id,occurred_at,owner_id,action_type,Comment,Comment\na,2026-03-02 09:00,R1,call,x,y\n",
    );
    // A repeated column nobody reads is fine.
    ws.inbox(
        "actions/unused.csv",
        "action_id,occurred_at,owner_id,action_type,extra,extra\nb,2026-03-02 09:00,R1,call,x,y\n",
    );
    let output = ws.command().arg("ingest").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains(
            "actions/twice.csv: rejected: the header names column `Comment` twice (columns 5 and 6)"
        ),
        "{stdout}"
    );
    assert_eq!(count(&ws, "raw/actions"), 1);
}

#[tokio::test]
async fn source_line_is_the_physical_line_with_crlf_blank_lines_and_multiline_fields() {
    for (name, newline) in [("crlf", "\r\n"), ("lf", "\n"), ("cr", "\r")] {
        let ws = Workspace::new("");
        let lines = [
            ACTION_HEADER,
            "ok1,2026-03-02 09:00,,R1,,,,,call,,,",
            "",
            "ok2,2026-03-02 09:00,,R1,,,,,call,,\"two",
            "lines\",",
            "bad,02/30/2026,,R1,,,,,call,,,",
            ",,,,,,,,,,,",
            "ok3,2026-03-02 09:00,,R1,,,,,call,,,",
        ];
        ws.inbox("actions/export.csv", lines.join(newline) + newline);
        let report = ws.ingest().await;
        assert_accounted(&report);
        let c = file(&report, "actions/export.csv").counts;
        assert_eq!(
            (c.rows_read, c.landed, c.quarantined, c.blank),
            (6, 3, 1, 2),
            "{name}: {report}"
        );
        let landed = ws.duckdb(&format!(
            "select action_id, source_line, note from {} order by 1",
            scan("raw/actions")
        ));
        let at: Vec<(String, i64)> = landed
            .iter()
            .map(|r| (r[0].as_str().unwrap().into(), r[1].as_i64().unwrap()))
            .collect();
        assert_eq!(
            at,
            [("ok1".into(), 2), ("ok2".into(), 4), ("ok3".into(), 8)],
            "{name}"
        );
        assert_eq!(landed[1][2], json!(format!("two{newline}lines")), "{name}");
        let bad = ws.duckdb(&format!(
            "select source_line from {}",
            scan("quarantine/actions")
        ));
        assert_eq!(bad, vec![vec![json!(6)]], "{name}");
    }
}

#[tokio::test]
async fn null_tokens_and_amounts_with_currency_grouping_and_decimal_marks() {
    let ws = Workspace::new(
        "datasets:\n  opportunities:\n    null_values: [\"null\", \"NULL\", N/A, '-']\n    sources:\n      europe: { files: 'eu-*.csv', decimal_mark: ',', null_values: [k.A.] }\n",
    );
    ws.inbox(
        "opportunities/us.csv",
        "opportunity_id,amount,closed_at,team\nA1,\"$1,054.00\",null,N/A\nA2,N/A,-,east\nA3,(250.5),NULL,east\nA4,\"1,05,4.00\",,east\nA5,1.054,,east\n",
    );
    ws.inbox(
        "opportunities/eu-export.csv",
        "opportunity_id;amount;team\nE1;1.054,00 €;k.A.\nE2;-12,5;west\nE3;N/A;west\n",
    );
    let report = ws.ingest().await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_accounted(&report);
    let rows = ws.duckdb(&format!(
        "select opportunity_id, amount::varchar, closed_at, team from {} order by 1",
        scan("raw/opportunities")
    ));
    assert_eq!(
        rows,
        vec![
            vec![json!("A1"), json!("1054.00"), json!(null), json!(null)],
            vec![json!("A2"), json!(null), json!(null), json!("east")],
            vec![json!("A3"), json!("-250.50"), json!(null), json!("east")],
            vec![json!("E1"), json!("1054.00"), json!(null), json!(null)],
            vec![json!("E2"), json!("-12.50"), json!(null), json!("west")],
        ]
    );
    // `N/A` is only null in the US file's settings; in the European source it is a bad amount.
    let bad = ws.duckdb(&format!(
        "select opportunity_id, reason from {} order by 1",
        scan("quarantine/opportunities")
    ));
    let reason = |id: &str| {
        bad.iter()
            .find(|r| r[0] == json!(id))
            .and_then(|r| r[1].as_str())
            .unwrap_or_else(|| panic!("{id} in {bad:?}"))
            .to_string()
    };
    assert!(
        reason("A4").starts_with(
            "amount: `1,05,4.00` is not an amount: expected digits with `.` before the decimals"
        ),
        "{}",
        reason("A4")
    );
    assert!(
        reason("A5").contains("could be read two ways"),
        "{}",
        reason("A5")
    );
    assert!(
        reason("E3").contains("datasets.opportunities.sources.europe.decimal_mark"),
        "{}",
        reason("E3")
    );
}

#[tokio::test]
async fn epoch_times_timezones_per_source_and_implausible_years() {
    let ws = Workspace::new(
        "datasets:\n  actions:\n    timestamp_formats: [epoch_seconds]\n    sources:\n      app: { files: 'app/*.ndjson', timestamp_formats: [epoch_millis] }\n      london: { files: 'uk-*.csv', timezone: Europe/London }\n",
    );
    // The same wall-clock time from Shanghai (the configured timezone) and from London.
    ws.inbox(
        "actions/cn-crm.csv",
        "action_id,occurred_at,owner_id,action_type\ncn1,2026-03-02 09:00,R1,call\ncn2,1772442000,R1,call\nmillis-as-seconds,1772442000000,R1,call\nold,1900-01-01 00:00,R1,call\n",
    );
    ws.inbox(
        "actions/uk-crm.csv",
        "action_id,occurred_at,owner_id,action_type\nuk1,2026-03-02 09:00,R1,call\n",
    );
    ws.inbox(
        "actions/app/events.ndjson",
        "{\"action_id\": \"e1\", \"occurred_at\": 1772442000123, \"owner_id\": \"R1\", \"action_type\": \"call\"}\n",
    );
    let report = ws.ingest().await;
    assert_eq!(report.exit_code(), 0, "{report}");
    let rows = ws.duckdb(&format!(
        "select action_id, strftime(occurred_at, '%Y-%m-%d %H:%M:%S.%g'), dt::varchar from {} order by 1",
        scan("raw/actions")
    ));
    assert_eq!(
        rows,
        vec![
            vec![
                json!("cn1"),
                json!("2026-03-02 01:00:00.000"),
                json!("2026-03-02")
            ],
            vec![
                json!("cn2"),
                json!("2026-03-02 09:00:00.000"),
                json!("2026-03-02")
            ],
            vec![
                json!("e1"),
                json!("2026-03-02 09:00:00.123"),
                json!("2026-03-02")
            ],
            vec![
                json!("uk1"),
                json!("2026-03-02 09:00:00.000"),
                json!("2026-03-02")
            ],
        ]
    );
    let bad = ws.duckdb(&format!(
        "select action_id, reason from {} order by 1",
        scan("quarantine/actions")
    ));
    assert_eq!(bad.len(), 2, "{bad:?}");
    for row in &bad {
        assert!(
            row[1]
                .as_str()
                .unwrap()
                .contains("is outside the years 1970 to 2200 (datasets.actions.timestamp_years)"),
            "{row:?}"
        );
    }
    // No absurd partition was written.
    assert!(
        ws.lake_files()
            .iter()
            .all(|f| !f.contains("dt=+") && !f.contains("dt=1900")),
        "{:?}",
        ws.lake_files()
    );
}

const SALESFORCE_SOURCES: &str = "datasets:
  actions:
    sources:
      tasks:
        files: 'Task*.csv'
        columns:
          action_id: Id
          occurred_at: [Completed Date, Created Date]
          owner_id: Owner
          opportunity_id: Related To
        constants: { action_type: task }
      events:
        files: 'Event*.csv'
        columns: { action_id: Id, occurred_at: Start, owner_id: Owner, opportunity_id: Related To }
        constants: { action_type: visit, team: field }
";

#[tokio::test]
async fn sources_pick_files_by_glob_with_their_own_columns_constants_and_fallbacks() {
    let ws = Workspace::new(SALESFORCE_SOURCES);
    ws.inbox(
        "actions/Task.csv",
        "Id,Related To,Owner,Created Date,Completed Date\nT1,O1,R1,2026-03-02 09:00,2026-03-03 10:00\nT2,O1,R1,2026-03-04 11:00,\n",
    );
    ws.inbox(
        "actions/Event.csv",
        "Id,Related To,Owner,Start\nE1,O1,R2,2026-03-05 14:00\n",
    );
    // Files no source claims use the dataset's own mapping.
    ws.inbox(
        "actions/plain.csv",
        format!("{ACTION_HEADER}\np1,2026-03-02 09:00,,R1,,,,,call,,,\n"),
    );
    let report = ws.ingest().await;
    assert_eq!(report.exit_code(), 0, "{report}");
    let rows = ws.duckdb(&format!(
        "select action_id, action_type, strftime(occurred_at, '%m-%d %H:%M'), coalesce(team, ''), coalesce(opportunity_id, '') from {} order by 1",
        scan("raw/actions")
    ));
    assert_eq!(
        rows,
        vec![
            vec![
                json!("E1"),
                json!("visit"),
                json!("03-05 06:00"),
                json!("field"),
                json!("O1")
            ],
            vec![
                json!("T1"),
                json!("task"),
                json!("03-03 02:00"),
                json!(""),
                json!("O1")
            ],
            // No completion time: the creation time, not a quarantine.
            vec![
                json!("T2"),
                json!("task"),
                json!("03-04 03:00"),
                json!(""),
                json!("O1")
            ],
            vec![
                json!("p1"),
                json!("call"),
                json!("03-02 01:00"),
                json!(""),
                json!("")
            ],
        ]
    );
}

#[test]
fn a_file_two_sources_claim_is_rejected_and_validate_names_it() {
    let ws = Workspace::new(&format!(
        "{SALESFORCE_SOURCES}      everything: {{ files: '*.csv' }}\n"
    ));
    ws.inbox(
        "actions/Event.csv",
        "Id,Related To,Owner,Start\nE1,O1,R2,2026-03-05 14:00\n",
    );
    let output = ws.command().arg("validate").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("actions/Event.csv: sources events and everything of datasets.actions all match this file"),
        "{stderr}"
    );
    let output = ws.command().arg("ingest").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(2), "{stdout}");
    assert!(
        stdout.contains("actions/Event.csv: rejected: sources events and everything"),
        "{stdout}"
    );
}

#[test]
fn validate_catches_impossible_dataset_settings() {
    let ws = Workspace::new(
        "datasets:
  actions:
    encoding: klingon
  opportunities:
    constants: { region: north }
    sources:
      tasks: { files: 'actions/Task*.csv' }
",
    );
    let output = ws.command().arg("validate").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("datasets.actions.encoding: unknown encoding label `klingon`"),
        "{stderr}"
    );
    // Once the label is fixed, the next problems show.
    std::fs::write(
        ws.path().join("config.yaml"),
        std::fs::read_to_string(ws.path().join("config.yaml"))
            .unwrap()
            .replace("klingon", "windows-1252"),
    )
    .unwrap();
    let output = ws.command().arg("validate").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for expected in [
        "datasets.opportunities.constants.region: not a column of opportunities",
        "datasets.opportunities.sources.tasks.files: `actions/Task*.csv` matches no file of inbox/opportunities/: it names the folder of dataset `actions`",
    ] {
        assert!(stderr.contains(expected), "{expected}:\n{stderr}");
    }
}

#[tokio::test]
async fn derived_action_ids_are_stable_across_formats() {
    let ws = Workspace::new(
        "datasets:\n  actions:\n    columns: { action_id: { hash_of: [card, day, sku] }, occurred_at: day }\n    constants: { action_type: sale, owner_id: M1 }\n",
    );
    ws.inbox(
        "actions/a.csv",
        "card,day,sku\n1001,2026-03-02,A1\n1001,2026-03-02,B2\n",
    );
    ws.inbox(
        "actions/b.ndjson",
        "{\"card\": 1001, \"day\": \"2026-03-02\", \"sku\": \"B2\"}\n{\"card\": \"1002\", \"day\": \"2026-03-02\", \"sku\": \"B2\"}\n",
    );
    let report = ws.ingest().await;
    assert_eq!(report.exit_code(), 0, "{report}");
    assert_eq!(
        file(&report, "actions/b.ndjson").counts.duplicates,
        1,
        "{report}"
    );
    let ids = ws.duckdb(&format!(
        "select action_id from {} order by 1",
        scan("raw/actions")
    ));
    let mut expected: Vec<String> = [
        "1001\u{1F}2026-03-02\u{1F}A1",
        "1001\u{1F}2026-03-02\u{1F}B2",
        "1002\u{1F}2026-03-02\u{1F}B2",
    ]
    .iter()
    .map(|k| format!("{:032x}", xxhash_rust::xxh3::xxh3_128(k.as_bytes())))
    .collect();
    expected.sort();
    assert_eq!(
        ids.iter()
            .map(|r| r[0].as_str().unwrap())
            .collect::<Vec<_>>(),
        expected
    );
}

const SNAPSHOTS: &str = "datasets:
  opportunities:
    columns: { opportunity_id: Deal, owner_id: Owner }
    stage_history:
      stage: Stage
      values: { Prospect: lead, Qualified: qualified, Demo: demo }
";

#[tokio::test]
async fn stage_history_is_derived_from_successive_snapshots() {
    let ws = Workspace::new(SNAPSHOTS);
    ws.inbox(
        "opportunities/deals-1.csv",
        "Deal,Owner,Stage\nD1,R1,Prospect\nD2,R2,Qualified\nD3,R3,Closing\n",
    );
    let first = ws.ingest().await;
    assert_eq!(first.exit_code(), 0, "{first}");
    let deals = file(&first, "opportunities/deals-1.csv");
    assert_eq!(
        (
            deals.counts.landed,
            deals.counts.quarantined,
            deals.counts.derived
        ),
        (2, 1, 2),
        "{first}"
    );
    let bad = ws.duckdb(&format!(
        "select opportunity_id, reason from {}",
        scan("quarantine/opportunities")
    ));
    assert_eq!(bad[0][0], json!("D3"));
    assert!(
        bad[0][1]
            .as_str()
            .unwrap()
            .starts_with("stage_history.stage: unknown stage `Closing`"),
        "{bad:?}"
    );

    ws.inbox(
        "opportunities/deals-2.csv",
        "Deal,Owner,Stage\nD1,R1,Qualified\nD2,R2,Qualified\nD4,R1,Demo\n",
    );
    let second = ws.ingest().await;
    assert_eq!(second.exit_code(), 0, "{second}");
    assert_eq!(
        file(&second, "opportunities/deals-2.csv").counts.derived,
        2,
        "{second}"
    );
    let changes = ws.duckdb(&format!(
        "select opportunity_id, coalesce(from_stage, ''), to_stage, owner_id, source_file, source_line, changed_at = ingested_at from {} order by changed_at, opportunity_id",
        scan("raw/stage_changes")
    ));
    assert_eq!(
        changes,
        vec![
            vec![
                json!("D1"),
                json!(""),
                json!("lead"),
                json!("R1"),
                json!("opportunities/deals-1.csv"),
                json!(2),
                json!(true)
            ],
            vec![
                json!("D2"),
                json!(""),
                json!("qualified"),
                json!("R2"),
                json!("opportunities/deals-1.csv"),
                json!(3),
                json!(true)
            ],
            vec![
                json!("D1"),
                json!("lead"),
                json!("qualified"),
                json!("R1"),
                json!("opportunities/deals-2.csv"),
                json!(2),
                json!(true)
            ],
            vec![
                json!("D4"),
                json!(""),
                json!("demo"),
                json!("R1"),
                json!("opportunities/deals-2.csv"),
                json!(4),
                json!(true)
            ],
        ]
    );
    // The derived history is what the metrics read: D4 was created in demo (a skip).
    let skips = ws.duckdb(&format!(
        "select opportunity_id from {} where from_stage is null and to_stage = 'demo'",
        scan("raw/stage_changes")
    ));
    assert_eq!(skips, vec![vec![json!("D4")]]);
    // A third run with nothing new derives nothing.
    let third = ws.ingest().await;
    assert!(
        third
            .files
            .iter()
            .all(|f| f.status == FileStatus::AlreadyIngested)
    );
    assert_eq!(count(&ws, "raw/stage_changes"), 4);
}
