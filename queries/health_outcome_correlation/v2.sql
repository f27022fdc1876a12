-- metric: health_outcome_correlation
-- version: 2
-- owner: sales-ops
-- description: Does the index predict wins? Pearson r of the weekly index and the win rate of the four weeks after, compared within each week, across teams and across owners, pooled over the 12 weeks whose four weeks have ended, with n, the number of teams or owners, and a 95% confidence interval.
-- grain: organisation
-- period: week
-- looks_back: { metrics: [process_health_index, owner_health_index], periods: 12, after: 4 }
--
-- Contract 4.13. A run for week W judges the 12 weeks W-15 .. W-4 (`looked_back_periods`): the
-- four weeks after each have ended when W ends, so the weekly pipeline computes it with no
-- --as-of. Each week's index is read as stored at that week's end (`<metric>_history`), never
-- recomputed. A pair is (a team's or owner's index in week P, the win rate won / (won + lost) of
-- its opportunities, latest snapshot, closed from P's end to four weeks later and before
-- $as_of).
--
-- Within each week, x and y are taken as deviations from that week's means, then the pairs of
-- every week are pooled: r compares teams (owners) with each other in the same week, so a trend
-- that lifts every team's index and win rate over the quarter does not read as "the index
-- predicts wins" (a week with one team gives no comparison). The same team appears in up to 12
-- weeks, and neighbouring weeks share three of their four outcome weeks, so the pairs are not
-- independent: the interval counts each team (owner) once, units = the distinct ones, which is
-- conservative. value: r (NULL below 3 units, or when a side does not vary within the weeks);
-- ci_low, ci_high: tanh(atanh(r) -/+ 1.959964 / sqrt(units - 3)) (NULL below 4 units, or when r
-- is +/-1); enough_data: units >= 10 and r is defined; below, the report says "not enough data".
WITH closed AS (
  SELECT w.period, o.team, o.owner_id, o.status = 'won' AS won
  FROM opportunities o
  JOIN looked_back_periods w ON o.closed_at >= w.period_end AND o.closed_at < w.followed_until
  WHERE o.status IN ('won', 'lost') AND o.closed_at < $as_of
),
pairs AS (
  SELECT 'team' AS across, i.period, i.team AS unit, i.value AS x,
         CAST(count(*) FILTER (WHERE c.won) AS DOUBLE) / count(*) AS y
  FROM process_health_index_history i JOIN closed c ON c.period = i.period AND c.team = i.team
  WHERE i.team IS NOT NULL AND i.value IS NOT NULL
  GROUP BY i.period, i.team, i.value
  UNION ALL
  SELECT 'owner', i.period, i.owner_id, i.value,
         CAST(count(*) FILTER (WHERE c.won) AS DOUBLE) / count(*)
  FROM owner_health_index_history i JOIN closed c ON c.period = i.period AND c.owner_id = i.owner_id
  WHERE i.owner_id IS NOT NULL AND i.value IS NOT NULL
  GROUP BY i.period, i.owner_id, i.value
),
within_week AS (
  SELECT across, period, unit,
         x - avg(x) OVER (PARTITION BY across, period) AS x,
         y - avg(y) OVER (PARTITION BY across, period) AS y
  FROM pairs
),
stats AS (
  SELECT g.across, g.position, count(p.x) AS n, count(DISTINCT p.unit) AS units,
         count(DISTINCT p.period) AS weeks,
         -- The deviations sum to zero in every week, so this is Pearson's r of the pooled pairs.
         sum(p.x * p.y) / sqrt(sum(p.x * p.x) * sum(p.y * p.y)) AS r
  FROM (VALUES ('team', 1), ('owner', 2)) AS g(across, position)
  LEFT JOIN within_week p ON p.across = g.across
  GROUP BY g.across, g.position
),
window AS (SELECT min(period) AS first_week, max(period) AS last_week FROM looked_back_periods)
SELECT CAST(NULL AS VARCHAR) AS team, s.across, w.first_week, w.last_week, s.weeks, s.n, s.units,
       CASE WHEN s.units >= 3 AND NOT isnan(s.r) THEN s.r END AS value,
       CASE WHEN s.units >= 4 AND abs(s.r) < 1 THEN tanh(atanh(s.r) - 1.959964 / sqrt(CAST(s.units - 3 AS DOUBLE))) END AS ci_low,
       CASE WHEN s.units >= 4 AND abs(s.r) < 1 THEN tanh(atanh(s.r) + 1.959964 / sqrt(CAST(s.units - 3 AS DOUBLE))) END AS ci_high,
       coalesce(s.units >= 10 AND NOT isnan(s.r), false) AS enough_data
FROM stats s CROSS JOIN window w
ORDER BY s.position
