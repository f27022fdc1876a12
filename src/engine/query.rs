//! `flowhealth query`: one SQL statement over the lake, printed or written as table, CSV, JSON or
//! Parquet.

use std::io::Write;
use std::path::Path;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::prelude::SessionContext;

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
    ctx: &SessionContext,
    sql: &str,
    format: OutputFormat,
    output: Option<&Path>,
) -> Result<()> {
    if format == OutputFormat::Parquet && output.is_none() {
        return Err(Error::Usage("--format parquet needs --output PATH".into()));
    }
    let frame = ctx.sql(sql).await.map_err(|e| planning_error(ctx, e))?;
    // The plan's schema, not the first batch's: a query with no rows still has columns.
    let schema = std::sync::Arc::new(frame.schema().as_arrow().clone());
    let batches = frame.collect().await?;
    let bytes = encode(&batches, schema, format)?;
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

fn encode(batches: &[RecordBatch], schema: SchemaRef, format: OutputFormat) -> Result<Vec<u8>> {
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
        OutputFormat::Parquet => {
            let mut writer =
                datafusion::parquet::arrow::ArrowWriter::try_new(&mut out, schema, None)?;
            for batch in batches {
                writer.write(batch)?;
            }
            writer.close()?;
        }
    }
    Ok(out)
}

/// A query that fails before it runs is the user's to fix (exit 2): say what is there.
fn planning_error(ctx: &SessionContext, error: DataFusionError) -> Error {
    let message = error.to_string();
    match error.find_root() {
        DataFusionError::Plan(_) | DataFusionError::SQL(..) | DataFusionError::SchemaError(..) => {
            let hint = if message.contains("not found") && message.to_lowercase().contains("table")
            {
                format!("\ntables: {}", super::table_names(ctx).join(", "))
            } else {
                String::new()
            };
            Error::Query(format!("{message}{hint}"))
        }
        _ => Error::DataFusion(error),
    }
}
