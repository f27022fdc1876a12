//! The command line (`docs/contract.md` section 6). Each command is one function below that
//! returns its exit status: 0 done, 1 failed at run time, 2 bad input or configuration (an
//! error's [`crate::error::Domain`] says which).

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::demo::DemoArgs;
use crate::error::{Error, Result, say};
use crate::lake::schema::Dataset;
use crate::schedule::ledger::RunStatus;

#[derive(Debug, Parser)]
#[command(
    name = "flowhealth",
    version,
    about = "Sales process-flow health: action logs to a Parquet lake, SQL metrics, weekly reports and alerts.",
    long_about = "Sales process-flow health: action logs to a Parquet lake, SQL metrics, weekly reports and alerts.\n\n\
        Start with `flowhealth demo`: it generates a realistic organisation, lands it in ./lake, computes\n\
        the metrics, writes the weekly report to ./outbox and says where everything is. Point\n\
        `config.yaml` at your own inbox to land real CRM and store exports, and run the pipelines in\n\
        pipelines/ with `flowhealth daemon`.",
    after_help = "Exit status: 0 done, 1 failed at run time, 2 bad input or configuration."
)]
pub struct Cli {
    /// Configuration file. Without it, ./config.yaml if present, else the embedded defaults.
    #[arg(long, short, global = true, env = "FLOWHEALTH_CONFIG")]
    pub config: Option<PathBuf>,

    /// Log format on stderr: `auto` is readable text on a terminal (with progress bars) and
    /// JSON lines otherwise. The level comes from RUST_LOG (default: warn on a terminal, info otherwise).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate a realistic organisation (reps, opportunities, a retail chain of stores) with the
    /// article's process problems planted in it, write it to the inbox as CSV/NDJSON/XLSX exports,
    /// ingest it into the lake, compute every metric, and write the latest weekly report to the
    /// outbox (email.transport: file).
    Demo(DemoArgs),
    /// Check the configuration, the metric catalog (front matter, versions.lock, and that every
    /// metric's SQL plans), the pipelines, and that no inbox file is claimed by two sources,
    /// without running anything; every problem is reported at once.
    Validate,
    /// The metric catalog (queries/<metric>/v<N>.sql): list, run, test, release.
    #[command(subcommand)]
    Metrics(MetricsCommand),
    /// Land new inbox files (inbox/<dataset>/*) in the lake: validated, deduplicated, with
    /// rejected rows in quarantine/. Re-running is a no-op for files already ingested. Prints per
    /// file the rows read, landed, quarantined, duplicate and blank, and how it was read (format,
    /// encoding and how it was decided, delimiter). A file still being written (its last line
    /// without a line end, or changed within inbox.settle_s) waits for a later run.
    Ingest {
        /// Datasets to ingest (actions, stage_changes, opportunities); all when none is given.
        datasets: Vec<String>,
    },
    /// Check the lake: every Parquet file's footer reads, and every landed inbox file still has
    /// all the files it landed. Says what `repair` would do about each problem; changes nothing.
    /// Exit 1 when something is wrong.
    Doctor,
    /// Repair what `doctor` finds: set each unreadable file aside in quarantine/_corrupt/ (kept,
    /// not deleted) and land its inbox file again when the inbox still has it as it was landed;
    /// for a metric output, a breach list or an export, say what computes it again. Exit 1 when
    /// rows are still missing (their inbox file is gone).
    Repair,
    /// Run SQL over the lake. Tables: actions, stage_changes, opportunities (the latest snapshot
    /// of each), opportunity_snapshots, quarantine_<dataset>; each has the `dt` partition column
    /// (a local date), and a filter on it reads only those days. The outputs: metrics.<metric>
    /// (its latest version, with a `period` column; metrics.<metric>_v<N> for version N),
    /// breaches, runs, and read_parquet('<path in the lake>') for any Parquet folder. Instants
    /// are shown in the configured timezone (Parquet output has UTC microseconds). The process-flow
    /// functions (stage_rank, is_stage_skip, silent_hours, business_hours, ...) follow
    /// config.yaml; list them with --functions.
    #[command(after_help = "Examples:\n  \
        flowhealth query \"select action_type, count(*) from actions group by 1\" --format csv\n  \
        flowhealth query \"select * from stage_changes where is_stage_skip(from_stage, to_stage)\"\n  \
        flowhealth query \"select period, team, value from metrics.process_health_index order by 1, 2\"\n  \
        flowhealth query --format parquet --output skips.parquet < skips.sql\n  \
        flowhealth query            (on a terminal: an interactive prompt with history)")]
    Query {
        /// The SQL; read from standard input when left out, or an interactive prompt on a terminal.
        sql: Option<String>,
        /// How to print the result.
        #[arg(long, value_enum, default_value_t = crate::engine::query::OutputFormat::Table)]
        format: crate::engine::query::OutputFormat,
        /// Write the result to this file instead of standard output (required for parquet).
        #[arg(long)]
        output: Option<PathBuf>,
        /// List the process-flow SQL functions with their arguments and examples, then exit.
        #[arg(long, conflicts_with_all = ["sql", "output"])]
        functions: bool,
    },
    /// Render a report from the metric outputs in the lake (run `metrics run` for the period
    /// first) and write it to reports/<report>/<period>.html; with --send, deliver it through the
    /// outbox (email.transport: file or smtp) and post its card to report.channels. A message or
    /// card already sent is not sent again; a message that cannot be sent stays in the outbox
    /// (exit 1) for `report outbox` to retry, a card for the next --send.
    #[command(after_help = "Examples:\n  \
        flowhealth report weekly                       render last week's report (no email)\n  \
        flowhealth report weekly --period 2026-W13 --send\n  \
        flowhealth report monthly --period 2026-03 --send\n  \
        flowhealth report outbox                       retry what could not be sent\n\n\
        Templates: weekly.html, weekly.txt, monthly.html, monthly.txt and labels.yaml in the\n\
        `report.templates` folder (minijinja); a file left out is the built-in one.")]
    Report {
        /// weekly, monthly, or outbox.
        #[arg(value_enum)]
        target: ReportTarget,
        /// A week (2026-W09) for weekly, a month (2026-03) for monthly.
        #[arg(long)]
        period: Option<String>,
        /// Deliver the report to its recipients (email.to, email.recipients, email.teams) and its
        /// card to its chat channels (report.channels).
        #[arg(long)]
        send: bool,
    },
    /// Run a pipeline (pipelines/<name>.yaml) once, now, for the last complete period (or
    /// --period); recorded in the run ledger (lake/runs/). Refused while the same pipeline runs.
    Run {
        /// The pipeline (pipelines/<name>.yaml).
        pipeline: String,
        /// A week (2026-W09) or month (2026-03), as the pipeline's `period` says.
        #[arg(long)]
        period: Option<String>,
    },
    /// Run every pipeline on its schedule until SIGTERM or Ctrl-C: fires at local wall-clock
    /// times across DST changes, catches up missed runs on start (catch_up: all|latest|none),
    /// never overlaps a pipeline with itself, redoes a run that was cut short, and records every
    /// run in lake/runs/. One daemon per lake (a lease in the lake).
    Daemon {
        /// Seconds running steps get to finish after SIGTERM before they are stopped and
        /// recorded as interrupted.
        #[arg(long, default_value_t = 60.0)]
        grace: f64,
    },
    /// Run a pipeline for every period from --from to --to (oldest first, with a progress
    /// bar). Periods that already have a succeeded run are skipped, so it resumes where an
    /// interrupted backfill stopped. Reports are rendered into the lake but not sent, alerts are
    /// not pushed and the outbox is left alone, unless --send.
    Backfill {
        /// The pipeline (pipelines/<name>.yaml).
        pipeline: String,
        /// The first period: a week (2026-W09) or month (2026-03), as the pipeline's `period` says.
        #[arg(long)]
        from: String,
        /// The last period, included.
        #[arg(long)]
        to: String,
        /// Deliver what the runs make, as a scheduled run would: email the reports, push the
        /// alerts, flush the outbox.
        #[arg(long)]
        send: bool,
    },
    /// The last runs of the pipelines (from the run ledger in lake/runs/), newest first.
    Runs {
        /// Only this pipeline.
        pipeline: Option<String>,
        /// How many runs to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Run the Ballista scheduler of a flowhealth cluster (`engine: { kind: ballista }`) until
    /// SIGTERM. It reads only the `lake:` section of the config, and must see the lake at the
    /// same URL as the clients (a shared mount at the same path, or S3). `GET /readyz` on its
    /// port answers 200 once an executor has registered.
    #[command(after_help = "Example:\n  \
        flowhealth --config cluster.yaml scheduler --bind 0.0.0.0 --port 50050")]
    Scheduler(crate::engine::cluster::scheduler::SchedulerArgs),
    /// Run a Ballista executor of a flowhealth cluster until SIGTERM (running tasks finish
    /// first). It reads only the `lake:` section of the config and must see the lake at the same
    /// URL as the clients.
    #[command(after_help = "Example:\n  \
        flowhealth --config cluster.yaml executor --scheduler df://scheduler:50050 --bind 0.0.0.0 --external-host executor-1")]
    Executor(crate::engine::cluster::executor::ExecutorArgs),
    /// Push overdue key actions to the chat channels in alerts.webhooks (DingTalk, WeCom,
    /// Feishu/Lark, Slack, JSON): silent-period timeouts (docs/contract.md, section 4.5), broken
    /// promises in notes (4.15) and the deadlines in alerts.deadlines. Each alert goes to its
    /// team's channels (alerts.routes) or else alerts.notify, once per channel (a ledger in the
    /// lake), mentioning its owner (alerts.owners), and is escalated after
    /// alerts.escalate.after_h if still unresolved; a failed call is retried and, if it still
    /// fails, tried again next run for that channel (exit 1).
    Alerts {
        /// The instant to evaluate at (ISO 8601); default: now.
        #[arg(long)]
        as_of: Option<String>,
        /// List the alerts without sending or recording them.
        #[arg(long)]
        dry_run: bool,
    },
}

/// What `flowhealth report` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportTarget {
    /// The weekly health report (default period: the last complete ISO week).
    Weekly,
    /// The monthly breakpoints report (default period: the last complete month).
    Monthly,
    /// Deliver the messages still waiting in the outbox (after a failed send).
    Outbox,
}

#[derive(Debug, Subcommand)]
pub enum MetricsCommand {
    /// Every metric in the catalog: versions (drafts are not in queries/versions.lock yet),
    /// period, owner, healthy range, description.
    List,
    /// Compute metrics for a period and write them to metrics/<metric>/version=<N>/period=<id>/
    /// in the lake, with threshold breaches in breaches/ (at the period's end; with another
    /// --as-of they are printed, not written). Dependencies run first; independent
    /// metrics run concurrently; one that fails does not stop the others (exit 1).
    #[command(after_help = "Examples:\n  \
        flowhealth metrics run                              every metric, last complete week / month\n  \
        flowhealth metrics run --period 2026-W09            the weekly metrics of that week\n  \
        flowhealth metrics run evidence_rate@1 --period 2026-W09 --as-of 2026-03-01T12:00:00")]
    Run {
        /// `name` (its latest version) or `name@N`; all metrics when none is given.
        metrics: Vec<String>,
        /// A week (2026-W09) or month (2026-03); default: each metric's last complete period.
        #[arg(long)]
        period: Option<String>,
        /// The instant the metrics look from (ISO 8601); default: the end of the period. At
        /// another instant the rows are printed and nothing is written: a period's stored
        /// outputs are the period as of its end.
        #[arg(long)]
        as_of: Option<String>,
    },
    /// Golden tests: ingest each case in queries/_tests/<case>/inbox into a temporary lake, run
    /// its metrics for the case's period and compare with queries/_tests/<case>/expected/*.csv;
    /// a difference is shown as a diff (exit 1).
    Test,
    /// Record every draft version in queries/versions.lock: from then on its SQL must not change
    /// (validate checks), and a change means a new version file.
    Release,
}

/// Runs the parsed command line and returns the exit status.
pub fn run(cli: Cli) -> Result<i32> {
    init_logging(cli.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        let result = execute(cli).await;
        // A lock whose run was stopped (a timeout, Ctrl-C) is released before the process ends.
        crate::lake::lock::finish_releases().await;
        result
    })
}

/// Loads the configuration and runs the command: one function per command below, each returning
/// the exit status (after mini-redis's `src/cmd/`, one handler per command).
async fn execute(cli: Cli) -> Result<i32> {
    // The cluster's processes read only the lake's location (the functions' configuration comes
    // with each plan), so a config with nothing but `lake:` will do; `validate` reads the config
    // as far as it goes, to report every problem.
    match &cli.command {
        Command::Scheduler(args) => {
            let lake = open_cluster_lake(cli.config.as_deref())?;
            return crate::engine::cluster::scheduler::run(&lake, args)
                .await
                .map(|()| 0);
        }
        Command::Executor(args) => {
            let lake = open_cluster_lake(cli.config.as_deref())?;
            return crate::engine::cluster::executor::run(&lake, args)
                .await
                .map(|()| 0);
        }
        Command::Validate => return validate(cli.config.as_deref()).await,
        _ => {}
    }
    let config = load_config(cli.config.as_deref())?;
    match cli.command {
        // Run above, before the configuration is loaded.
        Command::Scheduler(_) | Command::Executor(_) | Command::Validate => Ok(0),
        Command::Metrics(command) => metrics(&config, command).await,
        Command::Ingest { datasets } => ingest(&config, &datasets).await,
        Command::Doctor => doctor(&config).await,
        Command::Repair => repair(&config).await,
        Command::Demo(args) => crate::demo::run(&config, &args).await,
        Command::Report {
            target,
            period,
            send,
        } => report(&config, target, period.as_deref(), send).await,
        Command::Run { pipeline, period } => {
            run_pipeline(&config, &pipeline, period.as_deref()).await
        }
        Command::Daemon { grace } => daemon(&config, grace).await,
        Command::Backfill {
            pipeline,
            from,
            to,
            send,
        } => backfill(&config, &pipeline, (&from, &to), send).await,
        Command::Runs { pipeline, limit } => runs(&config, pipeline.as_deref(), limit).await,
        Command::Alerts { as_of, dry_run } => alerts(&config, as_of.as_deref(), dry_run).await,
        Command::Query {
            sql,
            format,
            output,
            functions,
        } => query(&config, sql, format, output.as_deref(), functions).await,
    }
}

/// `flowhealth validate`: the configuration, the catalog with every metric's plan, and the
/// pipelines; every problem at once. A configuration with problems is still read as far as it
/// goes, so the pipelines are checked in the same run (the plans only against a sound one).
async fn validate(path: Option<&std::path::Path>) -> Result<i32> {
    let (config, mut problems) = read_config(path)?;
    let config = &config;
    let catalog = crate::metrics::load_catalog(config);
    let catalog = match catalog {
        Ok(catalog) => catalog,
        Err(Error::Config(more)) if !problems.is_empty() => {
            problems.extend(more);
            return Err(Error::Config(problems));
        }
        Err(error) => return Err(error),
    };
    problems.extend(crate::metrics::unknown_metrics(config, &catalog));
    // The plans only against a sound configuration; the pipelines' SQL against what they planned.
    let planned = if problems.is_empty() {
        let (more, planned) = crate::metrics::check_plans(config, &catalog).await?;
        problems.extend(more);
        planned
    } else {
        Vec::new()
    };
    let pipelines = crate::schedule::pipeline::load(config, &catalog).unwrap_or_else(|errors| {
        problems.extend(errors);
        Vec::new()
    });
    problems
        .extend(crate::schedule::runner::check_sql(config, &catalog, &planned, &pipelines).await?);
    problems.extend(crate::ingest::check_sources(config).await);
    if !problems.is_empty() {
        return Err(Error::Config(problems));
    }
    use crate::metrics::display::count;
    say!(
        "{}: ok ({}, {}, {}, lake {}, inbox {})\n",
        config.source,
        count(config.stages.len(), "stage", "stages"),
        count(catalog.metrics.len(), "metric version", "metric versions"),
        count(pipelines.len(), "pipeline", "pipelines"),
        config.lake.url,
        config.inbox.url
    )?;
    Ok(0)
}

/// `flowhealth metrics list | run | test | release`.
async fn metrics(config: &Config, command: MetricsCommand) -> Result<i32> {
    let mut catalog = crate::metrics::catalog(config)?;
    match command {
        MetricsCommand::List => {
            say!("{}", crate::metrics::list(config, &catalog))?;
            Ok(0)
        }
        MetricsCommand::Run {
            metrics,
            period,
            as_of,
        } => {
            let lake = crate::lake::Lake::open(config)?;
            let request = crate::metrics::run::Request {
                metrics,
                period,
                as_of,
            };
            let report = crate::metrics::run::run(config, &lake, &catalog, &request).await?;
            say!("{report}")?;
            Ok(report.exit_code())
        }
        MetricsCommand::Test => {
            let outcome = crate::metrics::golden::run_all(config, &catalog).await?;
            say!("{}", outcome.report)?;
            Ok(if outcome.passed { 0 } else { 1 })
        }
        MetricsCommand::Release => {
            let released = catalog
                .release_all()
                .map_err(|e| Error::io(catalog.dir.join(crate::metrics::catalog::LOCK_FILE), e))?;
            if released.is_empty() {
                say!("nothing to release: every version is in versions.lock\n")?;
            } else {
                say!("released: {}\n", released.join(", "))?;
            }
            Ok(0)
        }
    }
}

/// `flowhealth ingest [DATASET...]`.
async fn ingest(config: &Config, names: &[String]) -> Result<i32> {
    let datasets = names
        .iter()
        .map(|name| {
            Dataset::from_name(name).ok_or_else(|| {
                Error::Usage(format!(
                    "unknown dataset `{name}`: expected one of {}",
                    Dataset::ALL.map(Dataset::name).join(", ")
                ))
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let report = crate::ingest::ingest(config, &datasets).await?;
    say!("{report}")?;
    Ok(report.exit_code())
}

/// `flowhealth doctor`.
async fn doctor(config: &Config) -> Result<i32> {
    let diagnosis = crate::ingest::repair::doctor(config).await?;
    print!("{diagnosis}");
    Ok(diagnosis.exit_code())
}

/// `flowhealth repair`.
async fn repair(config: &Config) -> Result<i32> {
    let repaired = crate::ingest::repair::repair(config).await?;
    print!("{repaired}");
    Ok(repaired.exit_code())
}

/// `flowhealth report weekly|monthly [--period ID] [--send]` and `flowhealth report outbox`.
async fn report(
    config: &Config,
    target: ReportTarget,
    period: Option<&str>,
    send: bool,
) -> Result<i32> {
    let kind = match target {
        ReportTarget::Weekly => crate::report::Kind::Weekly,
        ReportTarget::Monthly => crate::report::Kind::Monthly,
        ReportTarget::Outbox => {
            if period.is_some() || send {
                return Err(Error::Usage(
                    "`report outbox` takes neither --period nor --send".into(),
                ));
            }
            let outcome = crate::report::flush(config).await?;
            if outcome.sent.is_empty() && outcome.failed.is_empty() {
                say!("outbox: nothing pending\n")?;
            }
            say!("{outcome}")?;
            return Ok(outcome.exit_code());
        }
    };
    let outcome = crate::report::run(config, kind, period, send).await?;
    say!("{outcome}")?;
    Ok(outcome.exit_code())
}

/// `flowhealth run PIPELINE [--period ID]`.
async fn run_pipeline(config: &Config, pipeline: &str, period: Option<&str>) -> Result<i32> {
    let record = crate::schedule::runner::run_now(config, pipeline, period).await?;
    say!(
        "{} {} ({}): {}{}\n",
        record.pipeline,
        record.run_id,
        record.period.as_deref().unwrap_or("-"),
        record.status,
        record
            .error
            .as_deref()
            .map(|e| format!(": {e}"))
            .unwrap_or_default()
    )?;
    let succeeded = record.status == RunStatus::Succeeded;
    Ok(if succeeded { 0 } else { 1 })
}

/// `flowhealth daemon [--grace S]`.
async fn daemon(config: &Config, grace: f64) -> Result<i32> {
    if !(grace.is_finite() && (0.0..=86_400.0).contains(&grace)) {
        return Err(Error::Usage(format!(
            "--grace {grace}: must be from 0 to 86400 seconds"
        )));
    }
    let grace = crate::config::seconds(grace);
    crate::schedule::daemon::run(config, grace).await
}

/// `flowhealth backfill PIPELINE --from ID --to ID [--send]`.
async fn backfill(config: &Config, pipeline: &str, range: (&str, &str), send: bool) -> Result<i32> {
    use crate::schedule::runner::Delivery;
    let delivery = if send {
        Delivery::Send
    } else {
        say!(
            "backfill: reports are rendered into the lake, not sent; alerts and the outbox are \
             left alone (--send delivers them)\n"
        )?;
        Delivery::Hold
    };
    let records = crate::schedule::runner::backfill(config, pipeline, range, delivery).await?;
    let lake = crate::lake::Lake::open(config)?;
    say!(
        "{}",
        crate::schedule::ledger::table(&records, records.len(), config.timezone)
    )?;
    say!(
        "{} in {} (periods already done were skipped)\n",
        crate::metrics::display::count(records.len(), "run", "runs"),
        lake.display()
    )?;
    let succeeded = records.iter().all(|r| r.status == RunStatus::Succeeded);
    Ok(if succeeded { 0 } else { 1 })
}

/// `flowhealth runs [PIPELINE] [--limit N]`.
async fn runs(config: &Config, pipeline: Option<&str>, limit: usize) -> Result<i32> {
    let lake = crate::lake::Lake::open(config)?;
    let records = crate::schedule::ledger::read(&lake, pipeline).await?;
    // A name with no run may be a typo: say so unless a pipeline of that name exists.
    if let Some(name) = pipeline
        && records.is_empty()
    {
        let catalog = crate::metrics::catalog(config)?;
        let pipelines = crate::schedule::pipeline::load(config, &catalog).map_err(Error::Config)?;
        if !pipelines.iter().any(|p| p.name == name) {
            let mut names: Vec<&str> = pipelines.iter().map(|p| p.name.as_str()).collect();
            if names.is_empty() {
                names.push("none");
            }
            return Err(Error::Usage(format!(
                "no pipeline `{name}` in {} and no run of one in the ledger (pipelines: {})",
                config.resolve_local(&config.pipelines).display(),
                names.join(", ")
            )));
        }
    }
    say!(
        "{}",
        crate::schedule::ledger::table(&records, limit, config.timezone)
    )?;
    Ok(0)
}

/// `flowhealth alerts [--as-of TS] [--dry-run]`.
async fn alerts(config: &Config, as_of: Option<&str>, dry_run: bool) -> Result<i32> {
    let outcome = crate::alert::run(config, as_of, dry_run).await?;
    say!("{outcome}")?;
    Ok(outcome.exit_code())
}

/// `flowhealth query [SQL] [--format F] [--output PATH] [--functions]`: the SQL from the
/// argument, else standard input, else (on a terminal) the interactive prompt.
async fn query(
    config: &Config,
    sql: Option<String>,
    format: crate::engine::query::OutputFormat,
    output: Option<&std::path::Path>,
    functions: bool,
) -> Result<i32> {
    if functions {
        say!("{}", crate::udf::help(config))?;
        return Ok(0);
    }
    let sql = match sql {
        Some(sql) => Some(sql),
        None if std::io::stdin().is_terminal() => None,
        None => {
            Some(std::io::read_to_string(std::io::stdin()).map_err(|e| Error::io("<stdin>", e))?)
        }
    };
    if sql.is_none() && output.is_some() {
        return Err(Error::Usage(
            "--output needs the SQL as an argument or on standard input".into(),
        ));
    }
    let lake = crate::lake::Lake::open(config)?;
    let engine = crate::engine::Engine::open(config, &lake).await?;
    let catalog = crate::metrics::catalog(config)?;
    // The outputs as tables too; the session is closed whatever happens (a cluster's scratch).
    let registered = crate::schedule::register_output_tables(engine.ctx(), &lake, &catalog).await;
    let ran = match (registered, sql) {
        (Err(error), _) => Err(error),
        (Ok(()), Some(sql)) => match crate::engine::query::run(&engine, &sql, format, output).await
        {
            Err(error) => Err(crate::lake::health::name_unreadable(&lake, error).await),
            ran => ran,
        },
        (Ok(()), None) => {
            let functions = crate::udf::help(config);
            crate::engine::query::interactive(&engine, format, &functions).await
        }
    };
    engine.close().await?;
    ran.map(|()| 0)
}

/// The lake of a cluster process, from the `lake:` section of the config alone.
fn open_cluster_lake(path: Option<&std::path::Path>) -> Result<crate::lake::Lake> {
    let (store, base_dir) = Config::load_lake(config_path(path))?;
    crate::lake::Lake::open_existing(&store, &base_dir)
}

fn load_config(path: Option<&std::path::Path>) -> Result<Config> {
    let (config, problems) = read_config(path)?;
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(Error::Config(problems))
    }
}

/// The configuration `--config` names, else `./config.yaml`, else the embedded one, as far as
/// it can be read, with its problems.
fn read_config(path: Option<&std::path::Path>) -> Result<(Config, Vec<String>)> {
    Config::read(config_path(path))
}

/// The configuration file `--config` names, else `./config.yaml` when there is one, else `None`
/// (the embedded configuration).
fn config_path(path: Option<&std::path::Path>) -> Option<&std::path::Path> {
    let local = std::path::Path::new("config.yaml");
    path.or_else(|| local.exists().then_some(local))
}

fn init_logging(format: LogFormat) {
    let terminal = std::io::stderr().is_terminal();
    let default_level = if terminal { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = match format {
        LogFormat::Auto => !terminal,
        LogFormat::Text => false,
        LogFormat::Json => true,
    };
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// `--help` describes every command and every argument (flags and positionals alike).
    #[test]
    fn every_command_and_argument_has_help() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", command.get_name());
            if command.get_about().is_none() && command.get_long_about().is_none() {
                missing.push(format!("{path}: no description"));
            }
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path}: {} has no help", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "", &mut missing);
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }
}
