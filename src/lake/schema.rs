//! The canonical datasets of `docs/contract.md` section 1: their columns, types, dedup keys and
//! the Arrow schemas they are stored with, in `raw/` and in `quarantine/`.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};

/// What a column holds once validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    /// UTC microseconds; ISO 8601 input, naive values read in the configured timezone.
    Timestamp,
    /// `Decimal128(DECIMAL_PRECISION, DECIMAL_SCALE)`.
    Decimal,
}

/// Extra checks a value must pass besides its type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    Any,
    /// One of the configured stages.
    Stage,
    /// A JSON object (`attrs`).
    JsonObject,
    /// `open`, `won` or `lost`.
    Status,
}

#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub ty: ColumnType,
    pub required: bool,
    pub domain: Domain,
}

const fn col(name: &'static str, ty: ColumnType, required: bool, domain: Domain) -> Column {
    Column {
        name,
        ty,
        required,
        domain,
    }
}

use ColumnType::{Decimal, Text, Timestamp};
use Domain::{Any, JsonObject, Stage, Status};

const ACTIONS: &[Column] = &[
    col("action_id", Text, true, Any),
    col("occurred_at", Timestamp, true, Any),
    col("recorded_at", Timestamp, false, Any),
    col("owner_id", Text, true, Any),
    col("team", Text, false, Any),
    col("opportunity_id", Text, false, Any),
    col("customer_id", Text, false, Any),
    col("store_id", Text, false, Any),
    col("action_type", Text, true, Any),
    col("evidence", Text, false, Any),
    col("note", Text, false, Any),
    col("attrs", Text, false, JsonObject),
];

const STAGE_CHANGES: &[Column] = &[
    col("opportunity_id", Text, true, Any),
    col("from_stage", Text, false, Stage),
    col("to_stage", Text, true, Stage),
    col("changed_at", Timestamp, true, Any),
    col("owner_id", Text, true, Any),
];

const OPPORTUNITIES: &[Column] = &[
    col("opportunity_id", Text, true, Any),
    col("customer_id", Text, false, Any),
    col("owner_id", Text, false, Any),
    col("team", Text, false, Any),
    col("industry", Text, false, Any),
    col("amount", Decimal, false, Any),
    col("created_at", Timestamp, false, Any),
    col("status", Text, false, Status),
    col("closed_at", Timestamp, false, Any),
];

pub const DECIMAL_PRECISION: u8 = 18;
pub const DECIMAL_SCALE: i8 = 2;

/// Lineage columns appended to every landed row: where it came from and when it landed.
/// `ingested_at` is also the snapshot time of `opportunities` (the latest snapshot wins).
pub const LINEAGE: [&str; 3] = ["source_file", "source_line", "ingested_at"];

/// Columns of a quarantined row besides the dataset's columns (kept as text).
pub const QUARANTINE_EXTRA: [&str; 5] = [
    "reason",
    "source_file",
    "source_line",
    "raw_record",
    "ingested_at",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dataset {
    Actions,
    StageChanges,
    Opportunities,
}

impl Dataset {
    pub const ALL: [Dataset; 3] = [
        Dataset::Actions,
        Dataset::StageChanges,
        Dataset::Opportunities,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Dataset::Actions => "actions",
            Dataset::StageChanges => "stage_changes",
            Dataset::Opportunities => "opportunities",
        }
    }

    pub fn from_name(name: &str) -> Option<Dataset> {
        Dataset::ALL.into_iter().find(|d| d.name() == name)
    }

    pub fn columns(self) -> &'static [Column] {
        match self {
            Dataset::Actions => ACTIONS,
            Dataset::StageChanges => STAGE_CHANGES,
            Dataset::Opportunities => OPPORTUNITIES,
        }
    }

    pub fn column(self, name: &str) -> Option<&'static Column> {
        self.columns().iter().find(|c| c.name == name)
    }

    pub fn column_index(self, name: &str) -> Option<usize> {
        self.columns().iter().position(|c| c.name == name)
    }

    /// The timestamp whose local date is the row's `dt=` partition; `None` means the ingest time
    /// (opportunities are snapshots, partitioned by the day they were taken).
    pub fn partition_column(self) -> Option<usize> {
        match self {
            Dataset::Actions => self.column_index("occurred_at"),
            Dataset::StageChanges => self.column_index("changed_at"),
            Dataset::Opportunities => None,
        }
    }

    /// The columns that identify a row: a row whose key is already in the lake is a duplicate.
    /// An action is its id; a stage change is the move itself; an opportunity snapshot is the
    /// whole row (an identical snapshot adds nothing, a changed one is a new snapshot).
    pub fn key_columns(self) -> &'static [&'static str] {
        match self {
            Dataset::Actions => &["action_id"],
            Dataset::StageChanges => &["opportunity_id", "from_stage", "to_stage", "changed_at"],
            Dataset::Opportunities => &[
                "opportunity_id",
                "customer_id",
                "owner_id",
                "team",
                "industry",
                "amount",
                "created_at",
                "status",
                "closed_at",
            ],
        }
    }

    /// The Arrow schema of `raw/<dataset>/` files (partition column `dt` is in the path only).
    pub fn raw_schema(self) -> SchemaRef {
        let mut fields: Vec<Field> = self
            .columns()
            .iter()
            .map(|c| Field::new(c.name, arrow_type(c.ty), !c.required))
            .collect();
        fields.push(Field::new("source_file", DataType::Utf8, false));
        fields.push(Field::new("source_line", DataType::Int64, false));
        fields.push(Field::new("ingested_at", timestamp_type(), false));
        Arc::new(Schema::new(fields))
    }

    /// The Arrow schema of `quarantine/<dataset>/` files: every column as text, plus why.
    pub fn quarantine_schema(self) -> SchemaRef {
        let mut fields: Vec<Field> = self
            .columns()
            .iter()
            .map(|c| Field::new(c.name, DataType::Utf8, true))
            .collect();
        fields.push(Field::new("reason", DataType::Utf8, false));
        fields.push(Field::new("source_file", DataType::Utf8, false));
        fields.push(Field::new("source_line", DataType::Int64, false));
        fields.push(Field::new("raw_record", DataType::Utf8, false));
        fields.push(Field::new("ingested_at", timestamp_type(), false));
        Arc::new(Schema::new(fields))
    }
}

pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn arrow_type(ty: ColumnType) -> DataType {
    match ty {
        Text => DataType::Utf8,
        Timestamp => timestamp_type(),
        Decimal => DataType::Decimal128(DECIMAL_PRECISION, DECIMAL_SCALE),
    }
}
