//! `flowhealth demo`: generate an organisation ([`generate`]), write it to the inbox as the
//! exports a real team would drop there (CSV with BOM, NDJSON, a GBK CSV re-send, XLSX from a
//! CRM with its own headers), ingest it, and say where everything is.

pub mod generate;

use bytes::Bytes;
use chrono::{Duration, NaiveDate, NaiveDateTime, TimeZone};
use chrono_tz::Tz;

use self::generate::{Action, DemoSize, Organisation};
use crate::config::Config;
use crate::error::{Error, Result, say};
use crate::lake::Lake;
use crate::metrics::display;
use crate::time::{Period, PeriodKind};

/// `flowhealth demo`'s options (the command line parses them straight into this).
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Random seed: the same seed and --until give the same files, byte for byte.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Number of retail stores.
    #[arg(long, default_value_t = 40)]
    pub stores: usize,
    /// Number of sales reps.
    #[arg(long, default_value_t = 24)]
    pub reps: usize,
    /// Weeks of history to generate.
    #[arg(long, default_value_t = 12)]
    pub weeks: u32,
    /// Last day of the generated history (YYYY-MM-DD); default: yesterday in the configured timezone.
    #[arg(long)]
    pub until: Option<chrono::NaiveDate>,
}

/// Generates the organisation, writes its exports to the inbox, ingests them, computes every
/// metric and writes the latest weekly report; returns the exit status.
pub async fn run(config: &Config, args: &DemoArgs) -> Result<i32> {
    if args.reps == 0 || args.weeks == 0 {
        return Err(Error::Usage("--reps and --weeks must be at least 1".into()));
    }
    let until = args
        .until
        .unwrap_or_else(|| crate::time::today(config.timezone) - Duration::days(1));
    let size = DemoSize {
        seed: args.seed,
        stores: args.stores,
        reps: args.reps,
        weeks: args.weeks,
        until,
    };
    let org = generate::generate(config, &size);
    let inbox = Lake::open_store(config, &config.inbox)?;
    let files = exports(config, &org, args.seed)?;
    for (name, bytes) in &files {
        inbox
            .put(
                &inbox.path(&name.split('/').collect::<Vec<_>>()),
                bytes.clone(),
            )
            .await?;
    }
    say!(
        "demo: seed {}, {} weeks to {}, {} reps, {} stores: {} opportunities, {} stage changes, {} CRM actions, {} store actions\n",
        args.seed,
        args.weeks,
        until,
        args.reps,
        args.stores,
        org.opportunities.len(),
        org.stage_changes.len(),
        org.crm_actions.len(),
        org.store_actions.len()
    )?;
    say!(
        "inbox: {} ({} files written)\n\n",
        inbox.display(),
        files.len()
    )?;
    // The demo wrote these files itself, whole: nothing to wait for (inbox.settle_s).
    let mut whole = config.clone();
    whole.inbox.settle_s = None;
    let report = crate::ingest::ingest(&whole, &[]).await?;
    say!("{report}")?;
    let lake = Lake::open(config)?;
    let (metrics_ok, week) = metrics(config, &lake, until, args.weeks).await?;
    let mut report_ok = true;
    if let Some(week) = week {
        let outcome =
            crate::report::run(config, crate::report::Kind::Weekly, Some(&week), true).await?;
        report_ok = outcome.failed.is_empty();
        say!("\nweekly report, {week}:\n")?;
        say!("{outcome}")?;
    }
    say!("\nlake: {}\n", lake.display())?;
    say!("  raw/<dataset>/dt=YYYY-MM-DD/*.parquet         landed rows\n")?;
    say!("  quarantine/<dataset>/dt=YYYY-MM-DD/*.parquet  rejected rows, with the reason\n")?;
    say!(
        "try: flowhealth query \"select action_type, count(*) from actions group by 1 order by 2 desc\"\n"
    )?;
    say!(
        "     flowhealth query \"select period, team, value from metrics.process_health_index order by 1 desc, 2 nulls first\"\n"
    )?;
    say!(
        "  or: duckdb -c \"select action_type, count(*) from read_parquet('{}/raw/actions/**/*.parquet', hive_partitioning=1) group by 1 order by 2 desc\"\n",
        lake.display()
    )?;
    Ok(if metrics_ok && report_ok {
        report.exit_code()
    } else {
        1
    })
}

/// Computes every metric for each complete week (and month) of the demo, then prints the latest
/// week's health index per team and its breaches. Returns whether every metric ran, and the
/// latest complete week.
async fn metrics(
    config: &Config,
    lake: &Lake,
    until: NaiveDate,
    weeks: u32,
) -> Result<(bool, Option<String>)> {
    let catalog = crate::metrics::catalog(config)?;
    if catalog.metrics.is_empty() {
        say!(
            "\nno metrics: {} has no metric definitions\n",
            catalog.dir.display()
        )?;
        return Ok((true, None));
    }
    let first = until - Duration::days(7 * i64::from(weeks) - 1);
    let mut periods = Vec::new();
    for kind in [PeriodKind::Week, PeriodKind::Month] {
        let mut period = Period::containing(kind, first);
        while period.end <= until + Duration::days(1) {
            // Weeks the demo covers whole; months that end within it (breakpoints and
            // month-end bunching look at what there is).
            if period.start >= first || kind == PeriodKind::Month {
                periods.push(period.clone());
            }
            period = Period::containing(kind, period.end);
        }
    }
    say!(
        "\nmetrics: {} periods ({} .. {})\n",
        periods.len(),
        first,
        until
    )?;
    let mut ok = true;
    let mut latest = None;
    for period in &periods {
        let request = crate::metrics::run::Request {
            period: Some(period.id.clone()),
            ..Default::default()
        };
        let report = crate::metrics::run::run(config, lake, &catalog, &request).await?;
        for outcome in &report.outcomes {
            if let Err(error) = &outcome.result {
                ok = false;
                say!("  {} {}: FAILED: {error}\n", outcome.metric, outcome.period)?;
            }
        }
        if period.kind == PeriodKind::Week {
            latest = Some((period.id.clone(), report));
        }
    }
    let Some((week, report)) = latest else {
        say!("  (no complete week yet)\n")?;
        return Ok((ok, None));
    };
    if let Some(index) = catalog.latest("process_health_index")
        && let Some(batches) = crate::metrics::output::read_output(lake, index, &week).await?
    {
        say!(
            "\nprocess health index, {week}:\n{}",
            index_table(&batches)?
        )?;
    }
    let breaches: Vec<String> = report
        .outcomes
        .iter()
        .flat_map(|o| {
            o.breaches
                .iter()
                .map(move |b| format!("  {}: {}", o.metric, b.advice))
        })
        .collect();
    say!(
        "{}, {week}:\n",
        display::count(breaches.len(), "breach", "breaches")
    )?;
    for breach in breaches {
        say!("{breach}\n")?;
    }
    say!(
        "metrics: {}/metrics/<metric>/version=<N>/period=<id>/, breaches: {}/breaches/\n",
        lake.display(),
        lake.display()
    )?;
    Ok((ok, Some(week)))
}

/// The index per team as people read it: a header, the organisation's row first as
/// `(organisation)`, every rate a percentage.
fn index_table(batches: &[datafusion::arrow::array::RecordBatch]) -> Result<String> {
    use crate::engine::{json_rows, row_number, row_text};
    let columns = [
        ("value", "index"),
        ("stage_compliance_rate", "stage compliance"),
        ("evidence_rate", "evidence"),
        ("silent_overtime_rate", "silent overtime"),
    ];
    let mut out = format!("  {:16}", "team");
    for (_, title) in columns {
        out.push_str(&format!("  {title:>16}"));
    }
    out.push('\n');
    let mut rows = json_rows(batches)?;
    // The organisation (team NULL) first, then the teams by name.
    rows.sort_by_key(|row| row_text(row, "team"));
    for row in rows {
        let team = row_text(&row, "team");
        out.push_str(&format!("  {:16}", display::team(team.as_deref())));
        for (column, _) in columns {
            out.push_str(&format!(
                "  {:>16}",
                display::rate(row_number(&row, column))
            ));
        }
        out.push('\n');
    }
    Ok(out)
}

/// The inbox files of the demo: path under the inbox -> content.
fn exports(config: &Config, org: &Organisation, seed: u64) -> Result<Vec<(String, Bytes)>> {
    let tz = config.timezone;
    let naive = |t: NaiveDateTime| t.format("%Y-%m-%d %H:%M:%S").to_string();
    let prefix = format!("demo-s{seed}");
    let mut files = Vec::new();

    // The CRM's follow-up log: UTF-8 with a BOM (as Excel saves "CSV UTF-8"), local times.
    let mut crm: Vec<Vec<String>> = org
        .crm_actions
        .iter()
        .map(|a| action_row(a, naive(a.occurred_at), naive(a.recorded_at)))
        .collect();
    // Malformed rows, as real exports have: they must land in quarantine, not vanish.
    if let Some(first) = org.crm_actions.first() {
        let mut bad = action_row(first, "31/02/2026 10:00".into(), String::new());
        bad[0] = "BAD-0001".into();
        crm.push(bad);
        let mut bad = action_row(first, naive(first.occurred_at), String::new());
        bad[0] = "BAD-0002".into();
        bad[3] = String::new(); // owner_id
        crm.push(bad);
        let mut bad = action_row(first, naive(first.occurred_at), String::new());
        bad[0] = "BAD-0003".into();
        bad[11] = "{sku: A123".into();
        crm.push(bad);
    }
    files.push((
        format!("actions/{prefix}-crm-actions.csv"),
        Bytes::from([b"\xEF\xBB\xBF".as_slice(), &csv(&ACTION_HEADER, &crm)?].concat()),
    ));

    // Store actions from the store app: NDJSON with explicit offsets.
    let mut ndjson = Vec::new();
    for a in &org.store_actions {
        let mut object = serde_json::Map::new();
        for (key, value) in ACTION_HEADER.iter().zip(action_row(
            a,
            offset_time(tz, a.occurred_at),
            offset_time(tz, a.recorded_at),
        )) {
            if !value.is_empty() {
                object.insert(key.to_string(), serde_json::Value::String(value));
            }
        }
        ndjson.extend_from_slice(serde_json::Value::Object(object).to_string().as_bytes());
        ndjson.push(b'\n');
    }
    files.push((
        format!("actions/{prefix}-store-actions.ndjson"),
        Bytes::from(ndjson),
    ));

    // A regional office re-sends the last three days from a Chinese Excel: GBK, overlapping ids.
    if let Some(last) = org.store_actions.iter().map(|a| a.occurred_at).max() {
        let resend: Vec<Vec<String>> = org
            .store_actions
            .iter()
            .filter(|a| a.occurred_at >= last - Duration::days(3))
            .map(|a| {
                let mut row = action_row(a, naive(a.occurred_at), naive(a.recorded_at));
                row[10] = "门店补录".into();
                row
            })
            .collect();
        let text = String::from_utf8(csv(&ACTION_HEADER, &resend)?)
            .map_err(|e| Error::Internal(format!("writing demo CSV: {e}")))?;
        let (gbk, _, _) = encoding_rs::GBK.encode(&text);
        files.push((
            format!("actions/{prefix}-store-resend-gbk.csv"),
            Bytes::from(gbk.into_owned()),
        ));
    }

    let header = [
        "opportunity_id",
        "from_stage",
        "to_stage",
        "changed_at",
        "owner_id",
    ];
    let mut rows: Vec<Vec<String>> = org
        .stage_changes
        .iter()
        .map(|c| {
            vec![
                c.opportunity_id.clone(),
                c.from_stage.clone().unwrap_or_default(),
                c.to_stage.clone(),
                naive(c.changed_at),
                c.owner_id.clone(),
            ]
        })
        .collect();
    if let Some(c) = org.stage_changes.first() {
        rows.push(vec![
            c.opportunity_id.clone(),
            "lead".into(),
            "closing".into(),
            naive(c.changed_at + Duration::hours(1)),
            c.owner_id.clone(),
        ]);
    }
    files.push((
        format!("stage_changes/{prefix}-stage-changes.csv"),
        Bytes::from(csv(&header, &rows)?),
    ));

    files.push((
        format!("opportunities/{prefix}-opportunities.xlsx"),
        Bytes::from(opportunities_xlsx(org)?),
    ));
    Ok(files)
}

const ACTION_HEADER: [&str; 12] = [
    "action_id",
    "occurred_at",
    "recorded_at",
    "owner_id",
    "team",
    "opportunity_id",
    "customer_id",
    "store_id",
    "action_type",
    "evidence",
    "note",
    "attrs",
];

fn action_row(a: &Action, occurred_at: String, recorded_at: String) -> Vec<String> {
    let opt = |v: &Option<String>| v.clone().unwrap_or_default();
    vec![
        a.action_id.clone(),
        occurred_at,
        recorded_at,
        a.owner_id.clone(),
        a.team.clone(),
        opt(&a.opportunity_id),
        opt(&a.customer_id),
        opt(&a.store_id),
        a.action_type.clone(),
        opt(&a.evidence),
        opt(&a.note),
        a.attrs.as_ref().map(|v| v.to_string()).unwrap_or_default(),
    ]
}

fn offset_time(tz: Tz, t: NaiveDateTime) -> String {
    tz.from_local_datetime(&t).earliest().map_or_else(
        || t.format("%Y-%m-%dT%H:%M:%S").to_string(),
        |t| t.to_rfc3339(),
    )
}

fn csv(header: &[&str], rows: &[Vec<String>]) -> Result<Vec<u8>> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let io = |e: csv::Error| Error::Internal(format!("writing demo CSV: {e}"));
    writer.write_record(header).map_err(io)?;
    for row in rows {
        writer.write_record(row).map_err(io)?;
    }
    writer
        .into_inner()
        .map_err(|e| Error::Internal(format!("writing demo CSV: {e}")))
}

/// The CRM's opportunity export, with its own column names and deal-stage codes; `config.yaml`
/// maps them onto the canonical columns.
fn opportunities_xlsx(org: &Organisation) -> Result<Vec<u8>> {
    use rust_xlsxwriter::{DocProperties, ExcelDateTime, Format, Workbook};
    let fail = |e: rust_xlsxwriter::XlsxError| Error::Internal(format!("writing demo XLSX: {e}"));
    let mut workbook = Workbook::new();
    // A fixed creation time, so the same seed gives the same bytes.
    let created = ExcelDateTime::from_ymd(2026, 1, 1).map_err(fail)?;
    workbook.set_properties(&DocProperties::new().set_creation_datetime(&created));
    let sheet = workbook
        .add_worksheet()
        .set_name("Opportunities")
        .map_err(fail)?;
    let date = Format::new().set_num_format("yyyy-mm-dd hh:mm");
    let header = [
        "Opportunity ID",
        "Account",
        "Sales Agent",
        "Team",
        "Industry",
        "Close Value",
        "Engage Date",
        "Deal Stage",
        "Close Date",
    ];
    for (c, name) in header.iter().enumerate() {
        sheet.write_string(0, c as u16, *name).map_err(fail)?;
    }
    for (i, o) in org.opportunities.iter().enumerate() {
        let r = i as u32 + 1;
        let deal_stage = match o.status {
            "won" => "Won",
            "lost" => "Lost",
            _ if o.stage == "lead" => "Prospecting",
            _ => "Engaging",
        };
        sheet.write_string(r, 0, &o.opportunity_id).map_err(fail)?;
        sheet.write_string(r, 1, &o.customer_id).map_err(fail)?;
        sheet.write_string(r, 2, &o.owner_id).map_err(fail)?;
        sheet.write_string(r, 3, &o.team).map_err(fail)?;
        sheet.write_string(r, 4, &o.industry).map_err(fail)?;
        sheet.write_number(r, 5, o.amount).map_err(fail)?;
        sheet
            .write_datetime_with_format(r, 6, o.created_at, &date)
            .map_err(fail)?;
        sheet.write_string(r, 7, deal_stage).map_err(fail)?;
        if let Some(closed) = o.closed_at {
            sheet
                .write_datetime_with_format(r, 8, closed, &date)
                .map_err(fail)?;
        }
    }
    workbook.save_to_buffer().map_err(fail)
}
