//! `flowhealth query`: one SQL statement over the lake, printed or written as table, CSV, JSON or
//! Parquet.

use std::io::Write;
use std::path::Path;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;

use super::Engine;
use crate::error::{Error, Result, say};

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
    let batches = engine.collect(frame, optimizing_error).await?;
    // One convention for instants: text is read by people, so table, CSV and JSON show them in
    // the configured timezone, alike; Parquet is read by tools, so it keeps UTC microseconds
    // (`lake::for_readers`, in `encode`), as every Parquet file flowhealth writes.
    let tz = session_zone(ctx);
    let (schema, batches) = match format {
        OutputFormat::Table | OutputFormat::Csv | OutputFormat::Json => {
            local_times(schema, &batches, tz.name())?
        }
        OutputFormat::Parquet => (schema, batches),
    };
    let bytes = encode(&batches, schema, format, tz)?;
    match output {
        None => std::io::stdout()
            .write_all(&bytes)
            .and_then(|()| std::io::stdout().flush())
            .map_err(crate::error::stdout_error),
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

/// The timestamp columns that are instants (they have a timezone: the lake's UTC, or `now()`'s)
/// shown in `tz`: the same instants, displayed as local times with their offset
/// (`2026-03-01T18:00:00+08:00`). Wall-clock timestamps (no timezone) are left as they are.
/// Every text a person reads of rows goes through here (`query`, [`crate::metrics::display`]).
pub(crate) fn local_times(
    schema: SchemaRef,
    batches: &[RecordBatch],
    tz: &str,
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let local = |data_type: &DataType| match data_type {
        DataType::Timestamp(unit, Some(_)) => Some(DataType::Timestamp(*unit, Some(tz.into()))),
        _ => None,
    };
    if !schema
        .fields()
        .iter()
        .any(|f| local(f.data_type()).is_some())
    {
        return Ok((schema, batches.to_vec()));
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| match local(f.data_type()) {
            Some(data_type) => f.as_ref().clone().with_data_type(data_type),
            None => f.as_ref().clone(),
        })
        .collect();
    let local_schema =
        std::sync::Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    let batches = batches
        .iter()
        .map(|batch| {
            let columns = batch
                .columns()
                .iter()
                .zip(local_schema.fields())
                .map(|(column, field)| datafusion::arrow::compute::cast(column, field.data_type()))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(RecordBatch::try_new(local_schema.clone(), columns)?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((local_schema, batches))
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
            // No rows still shows the header: the columns are part of the answer.
            let empty = [RecordBatch::new_empty(schema.clone())];
            let batches = match batches.iter().all(|b| b.num_rows() == 0) {
                true => &empty[..],
                false => batches,
            };
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
        let mut hint = format!("\ntables: {}", super::table_names(ctx).join(", "));
        if message.contains(".metrics.") {
            hint.push_str(
                "\na metric has a table once it has outputs in the lake: \
                 `flowhealth metrics run NAME` computes them",
            );
        }
        hint
    } else {
        String::new()
    };
    Error::Query(format!("{message}{hint}"))
}

/// A query that fails once it runs: when the optimizer could not fold a constant of the SQL
/// (`TIMESTAMP '2026-13-45'`, `CAST('abc' AS INT)`), the query is the user's to fix (exit 2);
/// any other failure happened on the data, which the query cannot be blamed for (exit 1).
fn optimizing_error(error: DataFusionError) -> Error {
    match &error {
        DataFusionError::Context(context, inner)
            if context.contains("'simplify_expressions'")
                && !matches!(inner.as_ref(), DataFusionError::Internal(_)) =>
        {
            Error::Query(format!(
                "a constant in the query cannot be evaluated: {}",
                inner.strip_backtrace()
            ))
        }
        _ => Error::from(error),
    }
}

/// What `\d` prints: every table (`metrics.<metric>` and the other outputs included), then the
/// table function over the lake's files.
fn tables_help(ctx: &SessionContext) -> String {
    let mut text = super::table_names(ctx).join("\n");
    text.push_str(&format!(
        "\n{}('<path in the lake>'): any Parquet folder or file, e.g. {}('exports/my_export')\n",
        super::tables::READ_PARQUET,
        super::tables::READ_PARQUET
    ));
    text
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
    say!(
        "flowhealth SQL over the lake. End statements with `;`. \\d tables, \\df functions, \\q quit.\n"
    )?;
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
                    say!("{}", tables_help(engine.ctx()))?;
                    continue;
                }
                "\\df" => {
                    let _ = editor.add_history_entry(trimmed);
                    say!("{functions}")?;
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
