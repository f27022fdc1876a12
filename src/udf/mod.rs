//! The process-flow SQL function library (`docs/contract.md` section 7), registered in every
//! session.
//!
//! One file per function. The stage functions read the configured stage order and rules, the
//! time functions the configured timezone and business calendar, so the same SQL gives the same
//! answer as the config says.
//!
//! Conventions shared by every function:
//! - NULL in, NULL out; an unknown stage is NULL too (never an error, never a panic).
//! - Timestamp arguments accept any timestamp type or a date. A timestamp with a timezone is an
//!   instant; one without (and a date, at midnight) is wall-clock time in the configured timezone,
//!   so hours across a DST change are real elapsed hours. Text is read as ISO 8601 the way ingest
//!   reads it; text that is not a timestamp is an execution error naming the value.
//! - An argument of the wrong type is a plan error naming the function and its signature.

mod attr;
mod business_hours;
mod health_band;
mod hours_remaining;
mod is_stage_skip;
mod local_date;
mod longest_zero_run;
mod note_commitments;
mod note_normalize;
mod note_simhash;
mod note_similarity;
mod silent_hours;
mod stage_path_compliant;
mod stage_rank;
mod stage_timeout_h;
pub(crate) mod to_timestamp;

use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime};
use chrono_tz::Tz;
use datafusion::arrow::array::{ArrayRef, AsArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
use datafusion::common::{Result, exec_err, plan_err};
use datafusion::logical_expr::{AggregateUDF, DocSection, ScalarUDF};
use datafusion::prelude::SessionContext;

use serde::{Deserialize, Serialize};

use crate::config::{CalendarConfig, Config, StageConfig};
use crate::time::Zone;

/// Where `--functions` and `information_schema.routines` file the library.
pub(crate) const DOC_SECTION: DocSection = DocSection {
    include: true,
    label: "flowhealth process-flow functions",
    description: Some(
        "Stage rules, silent periods, business calendars from config.yaml, and what notes say.",
    ),
};

/// What the functions are built from: the parts of `config.yaml` they read. A plan sent to a
/// cluster carries it with every function (see `engine::cluster::codec`), so a scheduler or an
/// executor computes with the client's stages and calendar, never with a copy of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// IANA name of the configured timezone.
    pub timezone: String,
    pub stages: Vec<StageConfig>,
    pub calendar: Option<CalendarConfig>,
}

impl Settings {
    pub fn of(config: &Config) -> Settings {
        Settings {
            timezone: config.timezone.name().to_string(),
            stages: config.stages.clone(),
            calendar: config.calendar.clone(),
        }
    }
}

/// Every function of the library, built from `config`.
pub fn functions(config: &Config) -> (Vec<ScalarUDF>, Vec<AggregateUDF>) {
    build(&Settings::of(config), config.timezone)
}

/// Every function of the library, built from `settings` (as shipped in a plan); an error when its
/// timezone is not an IANA name.
pub fn from_settings(settings: &Settings) -> Result<(Vec<ScalarUDF>, Vec<AggregateUDF>)> {
    match settings.timezone.parse::<Tz>() {
        Ok(tz) => Ok(build(settings, tz)),
        Err(_) => plan_err!(
            "the shipped function settings name an unknown timezone `{}`",
            settings.timezone
        ),
    }
}

fn build(settings: &Settings, tz: Tz) -> (Vec<ScalarUDF>, Vec<AggregateUDF>) {
    let stages = Arc::new(Stages::new(&settings.stages));
    let calendar = business_hours::Calendar::new(settings.calendar.as_ref(), tz);
    let scalars = vec![
        ScalarUDF::from(stage_rank::StageRank::new(stages.clone())),
        ScalarUDF::from(is_stage_skip::IsStageSkip::new(stages.clone())),
        ScalarUDF::from(stage_timeout_h::StageTimeoutH::new(stages.clone())),
        ScalarUDF::from(silent_hours::SilentHours::new(tz)),
        ScalarUDF::from(hours_remaining::HoursRemaining::new(tz)),
        ScalarUDF::from(health_band::HealthBand::new()),
        ScalarUDF::from(business_hours::BusinessHours::new(calendar.clone())),
        ScalarUDF::from(attr::Attr::text()),
        ScalarUDF::from(attr::Attr::timestamp(tz)),
        ScalarUDF::from(local_date::LocalDate::new(tz)),
        ScalarUDF::from(note_normalize::NoteNormalize::new()),
        ScalarUDF::from(note_simhash::NoteSimhash::new()),
        ScalarUDF::from(note_similarity::NoteSimilarity::new()),
        ScalarUDF::from(note_commitments::NoteCommitments::new(calendar)),
    ];
    let aggregates = vec![
        AggregateUDF::from(stage_path_compliant::StagePathCompliant::new(stages)),
        AggregateUDF::from(longest_zero_run::LongestZeroRun::length()),
        AggregateUDF::from(longest_zero_run::LongestZeroRun::start()),
    ];
    (scalars, aggregates)
}

/// Registers the library in `ctx`.
pub fn register(ctx: &SessionContext, config: &Config) {
    let (scalars, aggregates) = functions(config);
    for udf in scalars {
        ctx.register_udf(udf);
    }
    for udaf in aggregates {
        ctx.register_udaf(udaf);
    }
    // DataFusion 55's `to_timestamp(column)` with a session timezone (apache/datafusion#24632).
    to_timestamp::register(ctx);
}

/// `flowhealth query --functions`: every function with its syntax, description, arguments and
/// example, from the same documentation `information_schema.routines` shows.
pub fn help(config: &Config) -> String {
    let (scalars, aggregates) = functions(config);
    let docs = scalars
        .iter()
        .filter_map(ScalarUDF::documentation)
        .chain(aggregates.iter().filter_map(AggregateUDF::documentation));
    let mut out = format!(
        "{}: {}\n",
        DOC_SECTION.label,
        DOC_SECTION.description.unwrap_or("")
    );
    for doc in docs {
        out.push_str(&format!("\n{}\n", doc.syntax_example));
        wrap(&mut out, &doc.description, "    ");
        for (name, text) in doc.arguments.iter().flatten() {
            wrap(&mut out, &format!("{name}: {text}"), "    ");
        }
        if let Some(example) = &doc.sql_example {
            out.push_str("    Example:\n");
            for line in example.lines() {
                out.push_str(&format!("      {line}\n"));
            }
        }
    }
    out
}

/// Appends `text` to `out` in lines of at most 100 columns, each starting with `indent`.
fn wrap(out: &mut String, text: &str, indent: &str) {
    let mut line = String::from(indent);
    for word in text.split_whitespace() {
        if line.len() > indent.len() && line.len() + 1 + word.len() > 100 {
            out.push_str(&line);
            out.push('\n');
            line = String::from(indent);
        }
        if line.len() > indent.len() {
            line.push(' ');
        }
        line.push_str(word);
    }
    out.push_str(&line);
    out.push('\n');
}

/// The configured stage order and rules. Hashable (timeouts as bits) because DataFusion compares
/// functions by value.
#[derive(Debug, PartialEq, Eq, Hash)]
pub(crate) struct Stages {
    list: Vec<Stage>,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Stage {
    name: String,
    timeout_bits: u64,
    from_any: bool,
    entry: bool,
}

impl Stages {
    fn new(stages: &[StageConfig]) -> Stages {
        let list = stages
            .iter()
            .map(|s| Stage {
                name: s.name.clone(),
                timeout_bits: s.silent_timeout_h.to_bits(),
                from_any: s.from_any,
                entry: s.entry,
            })
            .collect();
        Stages { list }
    }

    /// 1-based rank and the stage. A linear scan: stage lists are short, and comparing a few
    /// strings beats hashing one.
    fn get(&self, name: &str) -> Option<(usize, &Stage)> {
        self.list
            .iter()
            .enumerate()
            .find(|(_, s)| s.name == name)
            .map(|(i, s)| (i + 1, s))
    }

    fn rank(&self, name: &str) -> Option<usize> {
        self.get(name).map(|(rank, _)| rank)
    }

    fn timeout_h(&self, name: &str) -> Option<f64> {
        self.get(name).map(|(_, s)| f64::from_bits(s.timeout_bits))
    }

    /// Contract section 4.1: a move skips when it climbs more than one rank. A creation (no or
    /// empty `from`) comes from before the first stage, so creating into a later stage skips
    /// unless that stage is `entry`. Moves to a `from_any` stage and backward moves never skip.
    /// `None` when either stage is unknown or `to` is missing.
    fn is_skip(&self, from: Option<&str>, to: Option<&str>) -> Option<bool> {
        let (to_rank, to) = self.get(to?)?;
        let from_rank = match from {
            None | Some("") => {
                if to.entry {
                    return Some(false);
                }
                0
            }
            Some(from) => self.rank(from)?,
        };
        Some(!to.from_any && to_rank > from_rank + 1)
    }
}

/// How an argument is coerced: the type to cast it to, or `None` when it does not fit.
type Coercion = fn(&DataType) -> Option<DataType>;

/// Coerces `args` one by one; a wrong count or type is a plan error that names the function's
/// signature and what it got.
fn coerce(signature: &str, args: &[DataType], rules: &[Coercion]) -> Result<Vec<DataType>> {
    let coerced: Option<Vec<DataType>> = (args.len() == rules.len())
        .then(|| args.iter().zip(rules).map(|(t, rule)| rule(t)).collect())
        .flatten();
    match coerced {
        Some(types) => Ok(types),
        None => {
            let got = args
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            plan_err!("expected {signature}, got ({got})")
        }
    }
}

/// The values of a coerced text argument (Utf8 or Utf8View).
fn texts(array: &ArrayRef) -> Box<dyn Iterator<Item = Option<&str>> + '_> {
    match array.data_type() {
        DataType::Utf8View => Box::new(array.as_string_view().iter()),
        _ => Box::new(array.as_string::<i32>().iter()),
    }
}

/// Coercion of a text argument: the string types pass, NULL and other string encodings become
/// Utf8; anything else does not fit.
fn text_type(t: &DataType) -> Option<DataType> {
    match t {
        DataType::Utf8 | DataType::Utf8View => Some(t.clone()),
        DataType::LargeUtf8 | DataType::Null => Some(DataType::Utf8),
        DataType::Dictionary(_, value) if value.is_string() => Some(DataType::Utf8),
        _ => None,
    }
}

/// Coercion of a timestamp argument: any timestamp becomes microseconds (keeping its timezone,
/// or lack of one), a date becomes local midnight, text is parsed by the function itself.
fn timestamp_type(t: &DataType) -> Option<DataType> {
    match t {
        DataType::Timestamp(_, tz) => Some(DataType::Timestamp(TimeUnit::Microsecond, tz.clone())),
        DataType::Date32 | DataType::Date64 | DataType::Null => {
            Some(DataType::Timestamp(TimeUnit::Microsecond, None))
        }
        _ => text_type(t),
    }
}

/// Coercion of a numeric argument to Float64.
fn number_type(t: &DataType) -> Option<DataType> {
    (t.is_numeric() || t.is_null()).then_some(DataType::Float64)
}

/// The type the timestamp-returning functions produce, the same as the lake's columns.
fn utc_timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// A coerced timestamp argument (see [`timestamp_type`]) as UTC microseconds.
fn instants(array: &ArrayRef, tz: Tz, function: &str) -> Result<TimestampMicrosecondArray> {
    match array.data_type() {
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => {
            Ok(array.as_primitive::<TimestampMicrosecondType>().clone())
        }
        DataType::Timestamp(TimeUnit::Microsecond, None) => {
            let zone = Zone::new(tz);
            Ok(array
                .as_primitive::<TimestampMicrosecondType>()
                .unary_opt(|micros| Some(zone.local_to_utc(naive(micros)?))))
        }
        DataType::Utf8 | DataType::Utf8View => parse_instants(texts(array), tz, function),
        other => exec_err!("{function}: cannot read {other} as a timestamp"),
    }
}

fn parse_instants<'a>(
    texts: impl Iterator<Item = Option<&'a str>>,
    tz: Tz,
    function: &str,
) -> Result<TimestampMicrosecondArray> {
    let zone = Zone::new(tz);
    texts
        .map(|text| {
            text.map(|text| {
                crate::time::parse::parse_timestamp(text.trim(), &zone, &[]).ok_or_else(|| {
                    datafusion::error::DataFusionError::Execution(format!(
                        "{function}: `{text}` is not an ISO 8601 timestamp"
                    ))
                })
            })
            .transpose()
        })
        .collect()
}

/// Microseconds since the epoch as a naive date-time (None outside chrono's range).
fn naive(micros: i64) -> Option<NaiveDateTime> {
    DateTime::from_timestamp_micros(micros).map(|t| t.naive_utc())
}

/// Microseconds -> hours.
fn hours(micros: i64) -> f64 {
    micros as f64 / 3_600_000_000.0
}
