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
}
