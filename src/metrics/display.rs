//! Metric values as people read them: the one convention of every human output (the demo,
//! `metrics run` and `metrics list`, `runs`, advice, the reports and their subjects). Rates are
//! percentages with one decimal (`89.6%`), the organisation's row (team NULL) is
//! `(organisation)`, and a count agrees with its noun (`1 breach`, `2 breaches`). Machine
//! formats (CSV, JSON, Parquet, the lake) keep the full precision and the NULL.

/// How the organisation's row (the one with team NULL) is shown.
pub const ORGANISATION: &str = "(organisation)";

/// A rate as a percentage with `decimals` decimals: 0.8964 -> `89.6%` (1 decimal); `n/a` for
/// NaN or infinity.
pub fn percent(rate: f64, decimals: usize) -> String {
    if rate.is_finite() {
        format!("{:.*}%", decimals, rate * 100.0)
    } else {
        "n/a".into()
    }
}

/// [`percent`] with one decimal, `n/a` for no value.
pub fn rate(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".into(), |v| percent(v, 1))
}

/// A team as shown: its name, or [`ORGANISATION`] for the organisation's row.
pub fn team(team: Option<&str>) -> &str {
    team.unwrap_or(ORGANISATION)
}

/// `n` and its noun, agreeing: `count(1, "breach", "breaches")` is `1 breach`.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A healthy range as shown: `>= 92.0%`, `<= 15.0%`, `85.0%..95.0%`, or `-` without one.
pub fn healthy(min: Option<f64>, max: Option<f64>) -> String {
    match (min, max) {
        (Some(min), Some(max)) => format!("{}..{}", percent(min, 1), percent(max, 1)),
        (Some(min), None) => format!(">= {}", percent(min, 1)),
        (None, Some(max)) => format!("<= {}", percent(max, 1)),
        (None, None) => "-".into(),
    }
}

/// Rows as an aligned text table for people (what `metrics run` computed without storing it):
/// instants in `tz` with their offset, as `query` shows them, and the organisation's row's
/// `team` as [`ORGANISATION`].
pub fn table(
    batch: &datafusion::arrow::array::RecordBatch,
    tz: chrono_tz::Tz,
) -> crate::error::Result<String> {
    use datafusion::arrow::array::{Array, AsArray, RecordBatch, StringArray};
    use datafusion::arrow::datatypes::DataType;
    let (schema, batches) =
        crate::engine::query::local_times(batch.schema(), std::slice::from_ref(batch), tz.name())?;
    let mut batches = batches;
    if let Some(at) = schema.fields().iter().position(|f| f.name() == "team") {
        for batch in &mut batches {
            let text = datafusion::arrow::compute::cast(batch.column(at), &DataType::Utf8)?;
            let text = text.as_string::<i32>();
            let shown: StringArray = (0..text.len())
                .map(|i| Some(team(text.is_valid(i).then(|| text.value(i)))))
                .collect();
            let mut columns = batch.columns().to_vec();
            columns[at] = std::sync::Arc::new(shown);
            let mut fields: Vec<_> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
            fields[at] = fields[at].clone().with_data_type(DataType::Utf8);
            let schema = datafusion::arrow::datatypes::Schema::new(fields);
            *batch = RecordBatch::try_new(std::sync::Arc::new(schema), columns)?;
        }
    }
    Ok(datafusion::arrow::util::pretty::pretty_format_batches(&batches)?.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_teams_and_counts_read_the_same_everywhere() {
        assert_eq!(percent(0.8963938801806777, 1), "89.6%");
        assert_eq!(percent(0.85, 0), "85%");
        assert_eq!(rate(Some(0.25)), "25.0%");
        assert_eq!(rate(None), "n/a");
        assert_eq!(percent(f64::NAN, 1), "n/a");
        assert_eq!(team(None), "(organisation)");
        assert_eq!(team(Some("east")), "east");
        assert_eq!(count(1, "breach", "breaches"), "1 breach");
        assert_eq!(count(0, "breach", "breaches"), "0 breaches");
        assert_eq!(count(2, "run", "runs"), "2 runs");
        assert_eq!(healthy(Some(0.92), None), ">= 92.0%");
        assert_eq!(healthy(None, Some(0.15)), "<= 15.0%");
        assert_eq!(healthy(None, None), "-");
    }

    #[test]
    fn rows_shown_to_people_have_local_times_and_the_organisation_named() {
        use datafusion::arrow::array::{
            ArrayRef, RecordBatch, StringArray, TimestampMicrosecondArray,
        };
        use std::sync::Arc;
        // 2026-03-01T10:00:00Z, shown in Shanghai (UTC+8).
        let at = 1_772_359_200_000_000;
        let batch = RecordBatch::try_from_iter([
            (
                "team",
                Arc::new(StringArray::from(vec![None, Some("east")])) as ArrayRef,
            ),
            (
                "last_activity",
                Arc::new(TimestampMicrosecondArray::from(vec![at, at]).with_timezone("UTC")),
            ),
        ])
        .unwrap();
        let text = table(&batch, chrono_tz::Asia::Shanghai).unwrap();
        assert!(
            text.contains("| (organisation) | 2026-03-01T18:00:00+08:00 |")
                && text.contains("| east           | 2026-03-01T18:00:00+08:00 |"),
            "{text}"
        );
    }
}
