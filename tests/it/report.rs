//! `flowhealth report`: the weekly report of the hand-worked Berlin week, sent to a real SMTP
//! server on loopback (aiosmtpd with STARTTLS and AUTH) and parsed by Python's email package; the
//! outbox through a server that is down, then up; template and address errors; and the report
//! page rendered by headless Chromium.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{Server, Workspace, free_port, scan};
use crate::metrics::{fixture_with, ok, run};

/// The SMTP section for a server on `port` whose CA is in `dir`.
fn smtp(dir: &Path, port: u16, password: &str, attempts: u32) -> String {
    format!(
        "email:
  transport: smtp
  outbox: ./outbox
  from: \"flowhealth <flowhealth@example.com>\"
  to: [boss@example.com, ops@example.com]
  retry: {{ attempts: {attempts}, backoff_s: 0.2 }}
  smtp: {{ host: 127.0.0.1, port: {port}, tls: starttls, username: bot, password: \"{password}\", timeout_s: 5, ca_file: {} }}
",
        dir.join("ca.pem").display()
    )
}

fn start_smtp(dir: &Path, port: u16) -> Server {
    start_smtp_with(dir, port, "starttls")
}

fn start_smtp_with(dir: &Path, port: u16, tls: &str) -> Server {
    let (dir, port) = (dir.to_str().unwrap(), port.to_string());
    let args = [
        dir,
        &port,
        "--tls",
        tls,
        "--user",
        "bot",
        "--password",
        "s3cret",
    ];
    Server::start("smtp_server.py", &args)
}

/// The messages the SMTP server received, in order.
fn received(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("received"))
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
    files.sort();
    files
}

/// Python's email package's view of a message.
fn mime(path: &Path) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/mime_summary.py");
    crate::common::python_json(&[script.to_str().unwrap(), path.to_str().unwrap()])
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `report weekly --send` that must fail: exit 1 and an error naming the server; the message.
fn failed_send(ws: &Workspace, port: u16) -> String {
    let output = run(ws, &["report", "weekly", "--period", "2026-W13", "--send"]);
    let message = text(&output);
    assert_eq!(output.status.code(), Some(1), "{message}");
    assert!(
        message.contains(&format!("smtp 127.0.0.1:{port}")),
        "{message}"
    );
    message
}

fn computed(extra: &str) -> Workspace {
    let ws = fixture_with(extra);
    ok(&ws, &["metrics", "run", "--period", "2026-W12"]);
    ok(&ws, &["metrics", "run", "--period", "2026-W13"]);
    ws
}

fn pct(value: f64) -> String {
    format!("{:.1}%", value * 100.0)
}

#[test]
fn the_weekly_report_reaches_a_real_smtp_server_with_the_lakes_numbers() {
    let server_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = start_smtp(server_dir.path(), port);
    let teams = "  teams:\n    east: [east-lead@example.com]\n    \"north\\r\\nBcc: evil@example.com\": [north-lead@example.com]\n";
    let ws = computed(&format!(
        "{}{teams}",
        smtp(server_dir.path(), port, "s3cret", 3)
    ));
    let out = ok(&ws, &["report", "weekly", "--period", "2026-W13", "--send"]);
    assert!(out.contains("sent weekly-2026-W13:"), "{out}");

    let messages = received(server_dir.path());
    assert_eq!(messages.len(), 3, "organisation + two team copies");
    let envelope: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(messages[0].with_extension("json")).unwrap())
            .unwrap();
    assert_eq!(envelope["tls"], true, "sent after STARTTLS");
    assert_eq!(envelope["authenticated"], true);
    assert_eq!(
        envelope["rcpt_tos"],
        serde_json::json!(["boss@example.com", "ops@example.com"])
    );

    let org = mime(&messages[0]);
    let tree: Vec<String> = org["tree"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().trim().to_string())
        .collect();
    assert_eq!(
        tree,
        [
            "multipart/mixed",
            "multipart/alternative",
            "text/plain",
            "multipart/related",
            "text/html",
            "image/png",
            "text/csv"
        ],
    );
    let html = org["html"].as_str().unwrap();
    let plain = org["text"].as_str().unwrap();
    assert!(
        html.contains("src=\"cid:trend\""),
        "the chart is referenced by Content-ID"
    );
    assert_eq!(org["inline"]["trend"]["type"], "image/png");
    assert!(org["inline"]["trend"]["bytes"].as_u64().unwrap() > 2000);
    assert!(!html.to_lowercase().contains("<script"));

    // The numbers are the metric Parquet's, read by DuckDB.
    let index = ws.duckdb(&format!(
        "select coalesce(team, '(org)'), value, stage_compliance_rate from {} where period = '2026-W13' order by 1",
        scan("metrics/process_health_index")
    ));
    assert_eq!(index.len(), 4);
    for row in &index {
        let team = row[0].as_str().unwrap();
        let value = pct(row[1].as_f64().unwrap());
        if team == "(org)" {
            assert!(
                org["subject"].as_str().unwrap().contains(&value),
                "{}",
                org["subject"]
            );
            assert!(html.contains(&value) && plain.contains(&value));
        } else {
            assert!(
                plain.contains(&format!("{team}: {value}")),
                "{team} {value} in\n{plain}"
            );
            assert!(html.contains(&format!(">{team}</td>")));
        }
    }
    assert_eq!(
        pct(index[0][1].as_f64().unwrap()),
        "56.5%",
        "the hand-worked organisation index"
    );
    // Every breach in the lake is an instruction in the email.
    let breaches = ws.duckdb(&format!(
        "select metric, advice from {} where period = '2026-W13' order by 1",
        scan("breaches")
    ));
    assert!(breaches.len() >= 4, "{breaches:?}");
    assert!(
        org["subject"]
            .as_str()
            .unwrap()
            .contains(&format!("{} breaches", breaches.len()))
    );
    for breach in &breaches {
        assert!(
            plain.contains(breach[1].as_str().unwrap()),
            "{breach:?} not in\n{plain}"
        );
    }
    // The overdue opportunities, most overdue first, and all of them in the CSV.
    let csv = org["attachments"]["overdue-2026-W13.csv"].as_str().unwrap();
    let ids: Vec<&str> = csv
        .lines()
        .skip(1)
        .map(|l| l.split(',').next().unwrap())
        .collect();
    assert_eq!(ids, ["O4", "O1", "O2"]);
    let o4 = plain.find("O4 (north").unwrap();
    assert!(o4 < plain.find("O1 (east").unwrap());

    // A team's copy: its own section only, and a subject that cannot smuggle a header.
    let east = mime(&messages[1]);
    assert!(
        east["subject"].as_str().unwrap().starts_with("[Team east]"),
        "{}",
        east["subject"]
    );
    let east_text = east["text"].as_str().unwrap();
    assert!(east_text.contains("east: 60.0%") && !east_text.contains("north: 75.0%"));
    let north = mime(&messages[2]);
    assert!(
        north["subject"]
            .as_str()
            .unwrap()
            .contains("north  Bcc: evil@example.com")
    );
    let headers: Vec<String> = north["header_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap().to_lowercase())
        .collect();
    assert!(!headers.contains(&"bcc".to_string()), "{headers:?}");
    let north_envelope = std::fs::read_to_string(messages[2].with_extension("json")).unwrap();
    assert!(north_envelope.contains("north-lead@example.com") && !north_envelope.contains("evil"));

    // The lake keeps the page and what was sent; the outbox keeps the sent message.
    let reports = ws.lake().join("reports/weekly");
    assert!(reports.join("2026-W13.html").exists());
    assert_eq!(
        std::fs::read(reports.join("2026-W13.eml")).unwrap(),
        std::fs::read(ws.path().join("outbox/sent/weekly-2026-W13.eml")).unwrap()
    );

    // Sending again sends nothing.
    let again = ok(&ws, &["report", "weekly", "--period", "2026-W13", "--send"]);
    assert!(again.contains("sent weekly-2026-W13:"), "{again}");
    assert_eq!(
        received(server_dir.path()).len(),
        3,
        "a report is never sent twice"
    );
}

#[test]
fn a_report_waits_in_the_outbox_while_the_server_is_down_and_is_delivered_once() {
    let server_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // The CA file exists only once the server has made it: start and stop one to get it.
    drop(start_smtp(server_dir.path(), free_port()));
    let ws = computed(&smtp(server_dir.path(), port, "s3cret", 2));
    let message = failed_send(&ws, port);
    assert!(
        message.to_lowercase().contains("connection refused"),
        "{message}"
    );
    let pending = ws.path().join("outbox/pending/weekly-2026-W13.eml");
    assert!(pending.exists(), "kept in the outbox");
    let meta = std::fs::read_to_string(pending.with_extension("json")).unwrap();
    assert!(meta.contains("\"attempts\": 2"), "{meta}");

    // The server comes up (the CA is new: the config's ca_file now points at it), and a
    // pipeline's `outbox` step delivers what waited.
    let _server = start_smtp(server_dir.path(), port);
    std::fs::create_dir_all(ws.path().join("pipelines")).unwrap();
    std::fs::write(
        ws.path().join("pipelines/mail.yaml"),
        "name: mail\nschedule: \"0 5 * * * *\"\nsteps: [{ outbox: {} }]\n",
    )
    .unwrap();
    let up = ok(&ws, &["run", "mail"]);
    assert!(up.contains("succeeded"), "{up}");
    assert_eq!(received(server_dir.path()).len(), 1);
    assert!(!pending.exists());
    assert!(ok(&ws, &["report", "outbox"]).contains("nothing pending"));
    ok(&ws, &["report", "weekly", "--period", "2026-W13", "--send"]);
    assert_eq!(
        received(server_dir.path()).len(),
        1,
        "delivered exactly once"
    );
}

#[test]
fn implicit_tls_delivers_too() {
    let server_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = start_smtp_with(server_dir.path(), port, "implicit");
    let config =
        smtp(server_dir.path(), port, "s3cret", 1).replace("tls: starttls", "tls: implicit");
    let ws = computed(&config);
    ok(&ws, &["report", "weekly", "--period", "2026-W13", "--send"]);
    let messages = received(server_dir.path());
    assert_eq!(messages.len(), 1);
    let envelope = std::fs::read_to_string(messages[0].with_extension("json")).unwrap();
    assert!(
        envelope.contains("\"tls\": true") && envelope.contains("\"authenticated\": true"),
        "{envelope}"
    );
}

#[test]
fn refused_credentials_name_the_server_and_keep_the_report() {
    let server_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = start_smtp(server_dir.path(), port);
    let ws = computed(&smtp(server_dir.path(), port, "wrong", 3));
    let message = failed_send(&ws, port);
    assert!(message.contains("535"), "the server's refusal: {message}");
    let meta =
        std::fs::read_to_string(ws.path().join("outbox/pending/weekly-2026-W13.json")).unwrap();
    assert!(
        meta.contains("\"attempts\": 1"),
        "a permanent refusal is not retried: {meta}"
    );
    assert!(received(server_dir.path()).is_empty());
}

#[test]
fn a_tls_failure_is_an_error_naming_the_server() {
    let server_dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = start_smtp(server_dir.path(), port);
    // Another CA than the server's: the certificate cannot be trusted.
    let other = tempfile::tempdir().unwrap();
    drop(start_smtp(other.path(), free_port()));
    let ws = computed(&smtp(other.path(), port, "s3cret", 1));
    let message = failed_send(&ws, port);
    assert!(message.to_lowercase().contains("certificate"), "{message}");
    assert!(received(server_dir.path()).is_empty());
}

#[test]
fn the_file_transport_needs_no_server_and_the_monthly_report_too() {
    let ws = fixture_with(
        "email: { outbox: ./outbox, to: [boss@example.com], recipients: { monthly: [ops@example.com] } }\nreport: { language: zh }\n",
    );
    ok(&ws, &["metrics", "run", "--period", "2026-W13"]);
    ok(
        &ws,
        &["metrics", "run", "breakpoints_top5", "--period", "2026-03"],
    );
    let out = ok(&ws, &["report", "weekly", "--period", "2026-W13", "--send"]);
    let sent = ws.path().join("outbox/sent/weekly-2026-W13.eml");
    assert!(
        out.contains("sent weekly-2026-W13: ./outbox/sent/weekly-2026-W13.eml"),
        "{out}"
    );
    let weekly = mime(&sent);
    assert!(
        weekly["subject"]
            .as_str()
            .unwrap()
            .contains("过程健康指数 56.5%"),
        "{}",
        weekly["subject"]
    );
    assert!(
        weekly["text"]
            .as_str()
            .unwrap()
            .contains("销售过程健康周报")
    );

    ok(&ws, &["report", "monthly", "--period", "2026-03", "--send"]);
    let monthly = mime(&ws.path().join("outbox/sent/monthly-2026-03.eml"));
    assert_eq!(weekly["to"], "boss@example.com");
    assert_eq!(monthly["to"], "ops@example.com", "recipients per report");
    let stays = ws.duckdb(&format!(
        "select opportunity_id, dwell_hours from {} where period = '2026-03' and kind = 'stay' order by dwell_hours desc",
        scan("metrics/breakpoints_top5")
    ));
    assert!(!stays.is_empty());
    let plain = monthly["text"].as_str().unwrap();
    for stay in &stays {
        let line = format!("{} in", stay[0].as_str().unwrap());
        assert!(plain.contains(&line), "{line} in\n{plain}");
        assert!(plain.contains(&format!("{:.1} h", stay[1].as_f64().unwrap())));
    }
    // Without --send only the page is written.
    let page = ok(&ws, &["report", "weekly", "--period", "2026-W13"]);
    assert!(
        page.contains("reports/weekly/2026-W13.html") && !page.contains("sent"),
        "{page}"
    );
}

/// What recipients receive: an ASCII Message-ID for every copy (a Chinese team's too), a CSV
/// that a spreadsheet opens as UTF-8 with local times and hours to one decimal, count words that
/// agree, display labels for codes (the CSV keeps the codes), and the metric versions read.
#[test]
fn recipients_get_ascii_ids_a_spreadsheet_ready_csv_and_labels_for_codes() {
    // Only the index has a threshold: east's copy has exactly one breach.
    let ws = fixture_with(
        "email: { outbox: ./outbox, to: [boss@example.com], teams: { east: [east@example.com], \"华东\": [huadong@example.com] } }\n\
         thresholds: { stage_compliance_rate: { min: 0 }, evidence_rate: { min: 0 }, silent_overtime_rate: { max: 1 } }\n\
         report: { labels: { demo: Product demo } }\n",
    );
    ok(&ws, &["metrics", "run", "--period", "2026-W13"]);
    ok(&ws, &["report", "weekly", "--period", "2026-W13", "--send"]);
    let sent = ws.path().join("outbox/sent");
    let org = mime(&sent.join("weekly-2026-W13.eml"));
    let east = mime(&sent.join("weekly-2026-W13.team-east.eml"));
    let huadong_path = sent.join("weekly-2026-W13.team-华东.eml");
    let huadong = mime(&huadong_path);

    let ids: Vec<&str> = [&org, &east, &huadong]
        .iter()
        .map(|m| m["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids[0], "<weekly-2026-W13@flowhealth>");
    assert_eq!(ids[1], "<weekly-2026-W13.team-east@flowhealth>");
    assert!(
        ids[2].is_ascii()
            && ids[2].starts_with("<weekly-2026-W13.team.")
            && ids[2].ends_with("@flowhealth>"),
        "{}",
        ids[2]
    );
    let raw = String::from_utf8_lossy(&std::fs::read(&huadong_path).unwrap()).into_owned();
    let header = raw
        .lines()
        .find(|l| l.to_lowercase().starts_with("message-id:"))
        .unwrap();
    assert!(header.is_ascii() && !header.contains("=?"), "{header}");

    // The breaches of each copy, counted in words that agree.
    let breaches = |team: &str| {
        ws.duckdb(&format!(
            "select count(*) from {} where period = '2026-W13' and coalesce(team, '') = '{team}'",
            scan("breaches")
        ))[0][0]
            .as_i64()
            .unwrap()
    };
    assert_eq!(breaches("east"), 1);
    let subject = east["subject"].as_str().unwrap();
    assert!(subject.ends_with(", 1 breach"), "{subject}");
    let all = ws.duckdb(&format!(
        "select count(*) from {} where period = '2026-W13'",
        scan("breaches")
    ))[0][0]
        .as_i64()
        .unwrap();
    assert!(all > 1);
    assert!(
        org["subject"]
            .as_str()
            .unwrap()
            .ends_with(&format!(", {all} breaches"))
    );

    // The CSV: a byte-order mark, the codes, local times and hours to one decimal, as DuckDB
    // computes them from the metric's Parquet in the configured timezone.
    let csv = org["attachments"]["overdue-2026-W13.csv"].as_str().unwrap();
    let csv = csv
        .strip_prefix('\u{feff}')
        .expect("UTF-8 with a byte-order mark");
    let expected = ws.duckdb(&format!(
        "select opportunity_id, stage, strftime(last_activity_at AT TIME ZONE 'Europe/Berlin', '%Y-%m-%d %H:%M'), \
         printf('%.1f', silent_hours), printf('%.1f', hours_remaining) \
         from {} where period = '2026-W13' and status = 'overdue' order by hours_remaining",
        scan("metrics/silent_warnings")
    ));
    let header: Vec<&str> = csv.lines().next().unwrap().split(',').collect();
    let column = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let rows: Vec<Vec<String>> = csv
        .lines()
        .skip(1)
        .map(|line| {
            let cells: Vec<&str> = line.split(',').collect();
            [
                "opportunity_id",
                "stage",
                "last_activity_at",
                "silent_hours",
                "hours_remaining",
            ]
            .iter()
            .map(|c| cells[column(c)].to_string())
            .collect()
        })
        .collect();
    let expected: Vec<Vec<String>> = expected
        .iter()
        .map(|r| r.iter().map(|v| v.as_str().unwrap().to_string()).collect())
        .collect();
    assert_eq!(rows, expected);
    assert!(!rows.is_empty());

    // People read labels; the codes stay in the CSV. A label from the config wins over the
    // built-in one.
    let html = org["html"].as_str().unwrap();
    let text = org["text"].as_str().unwrap();
    for row in &rows {
        let label = match row[1].as_str() {
            "demo" => "Product demo",
            "qualified" => "Qualified",
            "lead" => "Lead",
            other => panic!("a stage the fixture does not have: {other}"),
        };
        assert!(
            html.contains(&format!(">{label}</td>")),
            "{label} in {html}"
        );
        assert!(text.contains(&format!(", {label}):")), "{label} in {text}");
    }
    assert!(!html.contains(">qualified</td>") && !html.contains(">demo</td>"));
    // The footer names the versions the numbers come from.
    let index = ws.lake().join("metrics/process_health_index");
    let version = std::fs::read_dir(index)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let version = version.to_string_lossy().replace("version=", "");
    assert!(
        text.contains(&format!("process_health_index@{version}")),
        "{text}"
    );
    assert!(html.contains(&format!("process_health_index@{version}")));
}

#[test]
fn bad_input_is_reported_before_anything_is_sent() {
    // A report for a period that was not computed says how to compute it.
    let ws = fixture_with("");
    let output = run(&ws, &["report", "weekly", "--period", "2026-W13"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output).contains("run `flowhealth metrics run --period 2026-W13` first"),
        "{}",
        text(&output)
    );
    let output = run(&ws, &["report", "monthly", "--period", "2026-W13"]);
    assert_eq!(output.status.code(), Some(2));

    // A template error names the template and the line.
    let ws = computed("report: { templates: ./my-templates }\n");
    std::fs::create_dir_all(ws.path().join("my-templates")).unwrap();
    std::fs::write(
        ws.path().join("my-templates/weekly.txt"),
        "Week {{ period.id }}\n\n{% if index.value > 0.9 %}good\n",
    )
    .unwrap();
    let output = run(&ws, &["report", "weekly", "--period", "2026-W13"]);
    assert_eq!(output.status.code(), Some(2));
    let message = text(&output);
    assert!(message.contains("template weekly.txt, line 3"), "{message}");

    // A malformed recipient is a config error at validate.
    let ws = Workspace::new(
        "email: { to: [boss@example.com], teams: { east: [\"not an address\"] } }\n",
    );
    let output = run(&ws, &["validate"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output).contains("email.teams.east[0]: `not an address` is not an email address"),
        "{}",
        text(&output)
    );
}

/// Headless Chromium (Debian's, installed by .ci/run) with the flags that keep it off the network.
fn chromium(page: &Path, screenshot: &Path) -> String {
    chromium_sized(page, screenshot, 1400)
}

/// Headless Chromium's screenshot of `page` in a window 800 pixels wide and `height` tall; its
/// log (console messages and errors).
fn chromium_sized(page: &Path, screenshot: &Path, height: u32) -> String {
    let profile = tempfile::tempdir().unwrap();
    let output = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--window-size=800,{height}"))
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--screenshot={}", screenshot.display()))
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs (apt-get install chromium)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Distinct colours and the share of non-white pixels of a PNG screenshot.
fn ink(png_path: &Path) -> (usize, f64) {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png_path).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    let channels = info.color_type.samples();
    let mut colours = std::collections::HashSet::new();
    let mut inked = 0usize;
    let chunks = pixels[..info.buffer_size()].chunks(channels);
    let total = chunks.len();
    for px in chunks {
        colours.insert(px[..3].to_vec());
        if px[..3] != [255, 255, 255] {
            inked += 1;
        }
    }
    (colours.len(), inked as f64 / total as f64)
}

#[test]
fn the_report_page_renders_in_headless_chromium_without_script_errors() {
    let ws = computed("");
    ok(&ws, &["report", "weekly", "--period", "2026-W13"]);
    let page = ws.lake().join("reports/weekly/2026-W13.html");
    let shot = ws.path().join("shot.png");
    let log = chromium(&page, &shot);
    let (colours, share) = ink(&shot);
    assert!(
        colours > 20 && share > 0.2,
        "a blank page? {colours} colours, {share:.2} inked"
    );
    assert!(
        !log.contains("Uncaught") && !log.contains("CONSOLE"),
        "{log}"
    );

    // The check above can fail: a page with a script error is caught the same way.
    let broken = ws.path().join("broken.html");
    std::fs::write(
        &broken,
        "<html><body><p>x</p><script>undefinedFunction()</script></body></html>",
    )
    .unwrap();
    let log = chromium(&broken, &ws.path().join("broken.png"));
    assert!(log.contains("Uncaught"), "{log}");
}

/// Decoded RGB(A) pixels of a PNG, as [r, g, b] triples.
fn rgb_pixels(png: &[u8]) -> Vec<[u8; 3]> {
    let mut reader = png::Decoder::new(std::io::Cursor::new(png))
        .read_info()
        .unwrap();
    let mut pixels = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut pixels).unwrap();
    pixels[..info.buffer_size()]
        .chunks(info.color_type.samples())
        .map(|px| [px[0], px[1], px[2]])
        .collect()
}

/// The colours of the heat map's bands (src/report/heatmap.rs), which nothing else on the page
/// uses: finding them in a screenshot means the picture was drawn.
const BANDS: [(&str, [u8; 3]); 3] = [
    ("green", [52, 168, 83]),
    ("yellow", [251, 188, 4]),
    ("red", [234, 67, 53]),
];

#[test]
fn the_heat_map_and_process_integrity_reach_the_page_the_message_and_the_text() {
    let ws = Workspace::new("");
    crate::demo::run_demo_weeks(&ws, 3);
    // Counted independently: the store x action cells of the week by band, and what the
    // integrity section reports, read by DuckDB from the metrics' Parquet.
    let bands: std::collections::HashMap<String, i64> = ws
        .duckdb(&format!(
            "select band, count(*) from {} where period = '2026-W13' and version = 2 group by 1",
            scan("metrics/store_action_heatmap")
        ))
        .iter()
        .map(|r| (r[0].as_str().unwrap().to_string(), r[1].as_i64().unwrap()))
        .collect();
    let flagged = ws.duckdb(&format!(
        "select count(*) from {} where period = '2026-W13' and flagged",
        scan("metrics/templated_notes")
    ))[0][0]
        .as_i64()
        .unwrap();
    let promises = ws.duckdb(&format!(
        "select count(*) filter (where status = 'broken'), count(*) from {} where period = '2026-W13'
           and deadline >= TIMESTAMPTZ '2026-03-22 16:00:00+00' and deadline < TIMESTAMPTZ '2026-03-29 16:00:00+00'",
        scan("metrics/commitments")
    ));
    let (broken, due) = (
        promises[0][0].as_i64().unwrap(),
        promises[0][1].as_i64().unwrap(),
    );
    assert!(
        flagged >= 1 && due >= 1,
        "the demo plants both: {flagged} {promises:?}"
    );

    // The message: the trend and the heat map inline by Content-ID.
    let message = mime(&ws.path().join("outbox/sent/weekly-2026-W13.eml"));
    let pngs = message["tree"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t.as_str().unwrap().trim() == "image/png")
        .count();
    assert_eq!(pngs, 2);
    let html = message["html"].as_str().unwrap();
    assert!(html.contains("src=\"cid:heatmap\""), "{html}");
    assert_eq!(message["inline"]["heatmap"]["type"], "image/png");

    // The text alternative says per team what the picture shows; the cells add up to DuckDB's.
    let plain = message["text"].as_str().unwrap();
    let picture = &plain[plain.find("EVERY STORE, EVERY DAILY ACTION").expect(plain)..];
    let mut cells = std::collections::HashMap::<String, i64>::new();
    for line in picture.lines().skip(2).take_while(|l| l.starts_with("  ")) {
        for band in ["green", "yellow", "red"] {
            let count = line
                .split(&format!("{band} "))
                .nth(1)
                .and_then(|rest| rest.split([',', ';']).next())
                .unwrap_or_else(|| panic!("{band} in {line}"));
            *cells.entry(band.to_string()).or_default() += count.parse::<i64>().unwrap();
        }
    }
    for band in ["green", "yellow", "red"] {
        assert_eq!(
            cells.get(band).copied().unwrap_or(0),
            bands.get(band).copied().unwrap_or(0),
            "{band}: {picture}"
        );
    }
    assert!(
        plain.contains(&format!("Notes copied from a template: {flagged}.")),
        "{plain}"
    );
    assert!(
        plain.contains(&format!("Promises past their deadline: {broken} / {due}.")),
        "{plain}"
    );

    // The picture itself: a band's colour is in it exactly when the week has cells of that band.
    let page = ws.lake().join("reports/weekly/2026-W13.html");
    let page_html = std::fs::read_to_string(&page).unwrap();
    let heatmap_png = {
        use base64::Engine as _;
        // The page's second picture, after the trend.
        let (at, prefix) = page_html
            .match_indices("data:image&#x2f;png;base64,")
            .nth(1)
            .expect("the page embeds the heat map");
        let data = &page_html[at + prefix.len()..];
        let data = &data[..data.find('"').unwrap()];
        base64::engine::general_purpose::STANDARD
            .decode(data.replace("&#x2f;", "/").replace("&#x3d;", "="))
            .unwrap()
    };
    let pixels = rgb_pixels(&heatmap_png);
    for (band, rgb) in BANDS {
        let drawn = pixels.iter().filter(|p| **p == rgb).count();
        assert_eq!(
            drawn > 0,
            bands.get(band).copied().unwrap_or(0) > 0,
            "{band}: {drawn} pixels"
        );
    }

    // In a browser: the picture is drawn (its band colours are on the screen) and nothing fails.
    let shot = ws.path().join("heatmap.png");
    let log = chromium_sized(&page, &shot, 7000);
    let screen = rgb_pixels(&std::fs::read(&shot).unwrap());
    for (band, rgb) in BANDS {
        if bands.get(band).copied().unwrap_or(0) > 0 {
            assert!(screen.contains(&rgb), "{band} not on the screen");
        }
    }
    assert!(
        !log.contains("Uncaught") && !log.contains("CONSOLE"),
        "{log}"
    );
}

#[test]
fn a_sent_report_posts_its_card_to_its_channels_once_and_the_month_shows_its_bunching() {
    let ws = Workspace::new("");
    crate::demo::run_demo_weeks(&ws, 3);
    let (dir, port, _hooks) = crate::alert::receiver(&["unused", "--feishu-secret", "LARKsec"]);
    // The demo's config, with two channels for the weekly report's card and none for alerts.
    let config = std::fs::read_to_string(ws.path().join("config.yaml"))
        .unwrap()
        .replace(
            "  webhooks: []\n",
            &format!(
                "  webhooks:\n    - {{ name: lark, kind: feishu, url: \"http://127.0.0.1:{port}/feishu/open-apis/bot/v2/hook/t0k\", secret: LARKsec }}\n    - {{ name: bi, kind: json, url: \"http://127.0.0.1:{port}/json\" }}\n"
            ),
        )
        .replace(
            "  attach_overdue_csv: true\n",
            "  attach_overdue_csv: true\n  channels: { weekly: [lark, bi] }\n  link: \"https://bi.example.com/{report}/{period}.html\"\n",
        );
    std::fs::write(ws.path().join("config.yaml"), config).unwrap();
    let out = ok(&ws, &["report", "weekly", "--period", "2026-W13", "--send"]);
    assert!(
        out.contains("card to lark") && out.contains("card to bi"),
        "{out}"
    );
    let sent = crate::alert::requests(dir.path());
    assert_eq!(sent.len(), 2, "{sent:#?}");
    let lark = sent.iter().find(|r| r["path"] != "/json").unwrap();
    assert_eq!(lark["sign_ok"], true);
    assert_eq!(lark["shape_ok"], true);
    let post = &lark["body"]["content"]["post"]["zh_cn"];
    let subject = mime(&ws.path().join("outbox/sent/weekly-2026-W13.eml"))["subject"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(post["title"], subject.as_str());
    let paragraphs = post["content"].to_string();
    assert!(
        paragraphs.contains("https://bi.example.com/weekly/2026-W13.html"),
        "{paragraphs}"
    );
    // The index on the card is the lake's, read by DuckDB.
    let index = ws.duckdb(&format!(
        "select value from {} where period = '2026-W13' and team is null",
        scan("metrics/process_health_index")
    ))[0][0]
        .as_f64()
        .unwrap();
    assert!(
        paragraphs.contains(&format!("Process health index {}", pct(index))),
        "{paragraphs}"
    );
    let bi = sent.iter().find(|r| r["path"] == "/json").unwrap();
    assert_eq!(bi["body"]["report"]["period"], "2026-W13");
    assert!((bi["body"]["report"]["index"].as_f64().unwrap() - index).abs() < 1e-12);

    // Sent again: the cards are not posted again.
    let again = ok(&ws, &["report", "weekly", "--period", "2026-W13", "--send"]);
    assert!(!again.contains("card to"), "{again}");
    assert_eq!(crate::alert::requests(dir.path()).len(), 2);

    // The channels are the report's: alerts do not go to them by default.
    let alerts = ok(&ws, &["alerts", "--as-of", "2026-03-30T00:00:00+08:00"]);
    assert!(alerts.contains("(not sent)"), "{alerts}");
    assert_eq!(crate::alert::requests(dir.path()).len(), 2);

    // The monthly report's Process integrity: month-end bunching, as many as DuckDB finds.
    ok(&ws, &["report", "monthly", "--period", "2026-03"]);
    let page = std::fs::read_to_string(ws.lake().join("reports/monthly/2026-03.html")).unwrap();
    let bunched = ws.duckdb(&format!(
        "select count(*) from {} where period = '2026-03'",
        scan("metrics/month_end_bunching")
    ))[0][0]
        .as_i64()
        .unwrap();
    assert!(page.contains("Month-end bunching (days 25-28)"), "{page}");
    assert!(
        page.contains(&format!(">{bunched}</td>")),
        "{bunched} bunched in {page}"
    );
}
