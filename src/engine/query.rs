//! `flowhealth query`: one SQL statement over the lake, printed or written as table, CSV, JSON or
//! Parquet.

use std::io::Write;
use std::path::Path;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;

use super::Engine;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// An aligned text table.
    Table,
    /// CSV with a header row.
    Csv,
    /// A JSON array of objects.
    Json,
    /// A Parquet file (needs --output).
    Parquet,
}

/// Runs `sql` and writes the result to `output` (standard output when `None`).
pub async fn run(
    engine: &Engine,
    sql: &str,
    format: OutputFormat,
    output: Option<&Path>,
) -> Result<()> {
    if format == OutputFormat::Parquet && output.is_none() {
        return Err(Error::Usage("--format parquet needs --output PATH".into()));
    }
    let ctx = engine.ctx();
    let frame = ctx.sql(sql).await.map_err(|e| planning_error(ctx, e))?;
    // The plan's schema, not the first batch's: a query with no rows still has columns.
    let schema = std::sync::Arc::new(frame.schema().as_arrow().clone());
    let batches = engine.collect(frame, Error::from).await?;
    let bytes = encode(&batches, schema, format, session_zone(ctx))?;
    match output {
        None => std::io::stdout()
            .write_all(&bytes)
            .map_err(|e| Error::io("<stdout>", e)),
        Some(path) => {
            // Written beside the target and renamed into place: a reader never sees half a file.
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(|e| Error::io(dir, e))?;
            temp.write_all(&bytes).map_err(|e| Error::io(path, e))?;
            temp.persist(path).map_err(|e| Error::io(path, e.error))?;
            Ok(())
        }
    }
}

fn encode(
    batches: &[RecordBatch],
    schema: SchemaRef,
    format: OutputFormat,
    tz: chrono_tz::Tz,
) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    match format {
        OutputFormat::Table => {
            let table = datafusion::arrow::util::pretty::pretty_format_batches(batches)?;
            writeln!(out, "{table}").map_err(|e| Error::io("<buffer>", e))?;
        }
        OutputFormat::Csv => {
            let mut writer = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut out);
            for batch in batches {
                writer.write(batch)?;
            }
        }
        OutputFormat::Json => {
            let mut writer = datafusion::arrow::json::ArrayWriter::new(&mut out);
            for batch in batches {
                writer.write(batch)?;
            }
            writer.finish()?;
            out.push(b'\n');
        }
        // As every Parquet file flowhealth writes: microseconds UTC, no views.
        OutputFormat::Parquet => {
            let rows = datafusion::arrow::compute::concat_batches(&schema, batches)?;
            let rows = crate::lake::for_readers(&rows, tz)?;
            out = crate::lake::encode_parquet(&rows)?.to_vec();
        }
    }
    Ok(out)
}

/// The session's timezone (the configured one), UTC when it has none.
fn session_zone(ctx: &SessionContext) -> chrono_tz::Tz {
    ctx.state()
        .config_options()
        .execution
        .time_zone
        .as_deref()
        .and_then(|name| name.parse().ok())
        .unwrap_or(chrono_tz::UTC)
}

/// A query that fails before it runs is the user's to fix (exit 2): say what is there. Only a
/// failure to reach the data (the lake's store, a file) is a run-time error.
fn planning_error(ctx: &SessionContext, error: DataFusionError) -> Error {
    let message = match Error::from_user_sql(error, None) {
        Error::Query(message) => message,
        reaching_the_data => return reaching_the_data,
    };
    // DataFusion wraps a function's own argument check in three layers of context; the
    // function's message (`expected silent_hours(last_activity: timestamp, ...), got (...)`)
    // is what the user needs.
    if let Some((_, inner)) = message.split_once("coercion failed with: Error during planning: ") {
        let inner = inner.split(". No function matches").next().unwrap_or(inner);
        return Error::Query(format!("wrong arguments: {inner}"));
    }
    let hint = if message.contains("not found") && message.to_lowercase().contains("table") {
        format!("\ntables: {}", super::table_names(ctx).join(", "))
    } else {
        String::new()
    };
    Error::Query(format!("{message}{hint}"))
}

/// The interactive prompt of `flowhealth query` on a terminal: statements end with `;`, history
/// is kept in `~/.flowhealth_history`, and `\d`, `\df`, `\q` list tables, list functions, quit.
pub async fn interactive(engine: &Engine, format: OutputFormat, functions: &str) -> Result<()> {
    use rustyline::error::ReadlineError;

    let mut editor = rustyline::DefaultEditor::new()
        .map_err(|e| Error::Internal(format!("cannot start the interactive prompt: {e}")))?;
    let history = std::env::var_os("HOME").map(|home| Path::new(&home).join(".flowhealth_history"));
    if let Some(history) = &history {
        // A first session has no history yet.
        let _ = editor.load_history(history);
    }
    println!(
        "flowhealth SQL over the lake. End statements with `;`. \\d tables, \\df functions, \\q quit."
    );
    let mut statement = String::new();
    loop {
        let prompt = if statement.is_empty() {
            "flowhealth> "
        } else {
            "        ...> "
        };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                statement.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(Error::Internal(format!("cannot read the prompt: {e}"))),
        };
        let trimmed = line.trim();
        if statement.is_empty() {
            match trimmed {
                "" => continue,
                "\\q" | "quit" | "exit" => break,
                "\\d" => {
                    let _ = editor.add_history_entry(trimmed);
                    println!("{}", super::table_names(engine.ctx()).join("\n"));
                    continue;
                }
                "\\df" => {
                    let _ = editor.add_history_entry(trimmed);
                    print!("{functions}");
                    continue;
                }
                _ => {}
            }
        }
        statement.push_str(&line);
        statement.push('\n');
        if !trimmed.ends_with(';') {
            continue;
        }
        let _ = editor.add_history_entry(statement.trim_end());
        if let Err(error) = run(engine, &statement, format, None).await {
            eprintln!("error: {error}");
        }
        statement.clear();
    }
    if let Some(history) = &history
        && let Err(e) = editor.save_history(history)
    {
        tracing::warn!(
            "could not save the prompt history to {}: {e}",
            history.display()
        );
    }
    Ok(())
}
