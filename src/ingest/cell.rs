//! One value of a source record, as every reader hands it over: text, a spreadsheet's date or
//! error cell, or nothing.

use std::borrow::Cow;

use chrono::NaiveDateTime;

/// One value of a source record.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    Null,
    Text(Cow<'a, str>),
    /// A date cell from a spreadsheet (a local wall-clock time).
    DateTime(NaiveDateTime),
    /// A spreadsheet error cell such as `#N/A`.
    Error(Cow<'a, str>),
}

impl Cell<'_> {
    pub fn borrowed(&self) -> Cell<'_> {
        match self {
            Cell::Null => Cell::Null,
            Cell::Text(t) => Cell::Text(Cow::Borrowed(t)),
            Cell::DateTime(d) => Cell::DateTime(*d),
            Cell::Error(e) => Cell::Error(Cow::Borrowed(e)),
        }
    }

    /// The cell as text, as it is kept in quarantine.
    pub fn to_text(&self) -> Option<String> {
        match self {
            Cell::Null => None,
            Cell::Text(t) => Some(t.to_string()),
            Cell::DateTime(d) => Some(d.format("%Y-%m-%dT%H:%M:%S%.f").to_string()),
            Cell::Error(e) => Some(e.to_string()),
        }
    }

    /// Null, or text that is only white space.
    pub fn is_empty(&self) -> bool {
        match self {
            Cell::Null => true,
            Cell::Text(t) => t.trim().is_empty(),
            Cell::DateTime(_) | Cell::Error(_) => false,
        }
    }
}
