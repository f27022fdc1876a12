//! `attr(attrs, key)` and `attr_timestamp(attrs, key)`: typed values out of the `attrs` JSON
//! object of an action (e.g. `wechat_followed_at`, `last_report_date`).

use std::sync::{Arc, LazyLock};

use chrono_tz::Tz;
use datafusion::arrow::array::{ArrayRef, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::Result;
use datafusion::functions::utils::make_scalar_function;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use serde_json::Value;

use super::{DOC_SECTION, coerce, text_type, texts, utc_timestamp_type};
use crate::time::Zone;
use crate::time::parse::parse_timestamp;

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Attr {
    /// `None` for `attr` (text); the timezone of naive values for `attr_timestamp`.
    timestamp: Option<Tz>,
    signature: Signature,
}

impl Attr {
    pub fn text() -> Attr {
        Attr {
            timestamp: None,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }

    pub fn timestamp(tz: Tz) -> Attr {
        Attr {
            timestamp: Some(tz),
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// The value under `key` as text: strings as they are, numbers and booleans as JSON writes them,
/// objects and arrays as JSON. NULL when absent, JSON null, or `attrs` is not a JSON object.
fn lookup(attrs: &str, key: &str) -> Option<String> {
    match serde_json::from_str::<serde_json::Map<String, Value>>(attrs)
        .ok()?
        .remove(key)?
    {
        Value::Null => None,
        Value::String(text) => Some(text),
        other => Some(other.to_string()),
    }
}

impl ScalarUDFImpl for Attr {
    fn name(&self) -> &str {
        match self.timestamp {
            None => "attr",
            Some(_) => "attr_timestamp",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        let signature = format!("{}(attrs: text, key: text)", self.name());
        coerce(&signature, args, &[text_type, text_type])
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(match self.timestamp {
            None => DataType::Utf8,
            Some(_) => utc_timestamp_type(),
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        make_scalar_function(
            |arrays: &[ArrayRef]| {
                let values = texts(&arrays[0])
                    .zip(texts(&arrays[1]))
                    .map(|(attrs, key)| lookup(attrs?, key?));
                Ok(match self.timestamp {
                    None => Arc::new(values.collect::<StringArray>()) as ArrayRef,
                    Some(tz) => {
                        let zone = Zone::new(tz);
                        let instants: TimestampMicrosecondArray = values
                            .map(|value| parse_timestamp(value?.trim(), &zone, &[]))
                            .collect();
                        Arc::new(instants.with_timezone("UTC"))
                    }
                })
            },
            vec![],
        )(&args.args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        static TEXT: LazyLock<Documentation> = LazyLock::new(|| {
            Documentation::builder(
                DOC_SECTION,
                "The value under key in a JSON object such as actions.attrs, as text: strings as \
                 they are, numbers and booleans as JSON writes them, objects and arrays as JSON. \
                 NULL when the key is absent or null, or attrs is not a JSON object.",
                "attr(attrs, key)",
            )
            .with_argument("attrs", "A JSON object as text.")
            .with_argument("key", "The key to read.")
            .with_sql_example(
                "SELECT CAST(attr(attrs, 'last_report_date') AS DATE) FROM actions WHERE action_type = 'chronic_followup'",
            )
            .build()
        });
        static TIMESTAMP: LazyLock<Documentation> = LazyLock::new(|| {
            Documentation::builder(
                DOC_SECTION,
                "The value under key in a JSON object read as an ISO 8601 timestamp the way \
                 ingest reads timestamps: with an offset it is respected, without one it is local \
                 time in the configured timezone. Returns a UTC timestamp; NULL when the key is \
                 absent, null or not a timestamp.",
                "attr_timestamp(attrs, key)",
            )
            .with_argument("attrs", "A JSON object as text.")
            .with_argument("key", "The key to read.")
            .with_sql_example(
                "SELECT silent_hours(occurred_at, attr_timestamp(attrs, 'wechat_followed_at')) * 60 AS gap_minutes\n\
                 FROM actions WHERE action_type = 'member_signup'",
            )
            .build()
        });
        Some(match self.timestamp {
            None => &TEXT,
            Some(_) => &TIMESTAMP,
        })
    }
}
