//! The shared time vocabulary: everything that turns text into instants and instants into local
//! days, periods and text, in the configured timezone. Every other module takes its time from
//! here, so a DST rule or an accepted format is decided in one place.
//!
//! - [`zone`]: local wall-clock time <-> UTC instants, DST included (with a small cache for the
//!   hot paths of ingest and the SQL functions).
//! - [`period`]: ISO weeks and months (`docs/contract.md` section 3), and the one check that an
//!   id is of the kind a metric, report or pipeline works on.
//! - [`parse`]: text -> instants (ISO 8601 and configured `strftime` patterns, as ingest and the
//!   SQL functions read them) and business hours (`HH:MM-HH:MM`).
//! - [`format`]: instants -> text for people (local `YYYY-MM-DD HH:MM`) and for machines
//!   (RFC 3339).
//!
//! Instants are `i64` microseconds since the epoch, UTC, as the lake stores them.

pub mod format;
pub mod parse;
pub mod period;
pub mod zone;

use chrono::{NaiveDate, Utc};
use chrono_tz::Tz;

pub use period::{Period, PeriodKind};
pub use zone::Zone;

/// Today's date in `tz`.
pub fn today(tz: Tz) -> NaiveDate {
    Utc::now().with_timezone(&tz).date_naive()
}
