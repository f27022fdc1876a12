-- metric: health_outcome_correlation
-- version: 2
-- owner: sales-ops
-- description: Does the index predict wins? Pearson r of the weekly index and the win rate of the four weeks after, across teams and across owners, pooled over the 12 weeks whose four weeks have ended, with n and a 95% confidence interval.
-- grain: organisation
-- period: week
-- looks_back: { metrics: [process_health_index, owner_health_index], periods: 12, after: 4 }
--
-- Contract 4.13. A run for week W judges the 12 weeks W-15 .. W-4 (`looked_back_periods`): the
-- four weeks after each have ended when W ends, so the weekly pipeline computes it with no
-- --as-of. Each week's index is read as stored at that week's end (`<metric>_history`), never
-- recomputed. A pair is (a team's or owner's index in week P, the win rate won / (won + lost) of
-- its opportunities, latest snapshot, closed from P's end to four weeks later and before
-- $as_of); pairs of every week are pooled. value: Pearson r over n pairs (NULL below 3); ci_low,
-- ci_high: the 95% interval by Fisher's z, tanh(atanh(r) -/+ 1.959964 / sqrt(n - 3)) (NULL below
-- 4, or when r is +/-1); enough_data: n >= 10, below which the report says "not enough data".
WITH closed AS (
  SELECT w.period, o.team, o.owner_id, o.status = 'won' AS won
  FROM opportunities o
  JOIN looked_back_periods w ON o.closed_at >= w.period_end AND o.closed_at < w.followed_until
  WHERE o.status IN ('won', 'lost') AND o.closed_at < $as_of
),
pairs AS (
  SELECT 'team' AS across, i.period, i.value AS x,
         CAST(count(*) FILTER (WHERE c.won) AS DOUBLE) / count(*) AS y
  FROM process_health_index_history i JOIN closed c ON c.period = i.period AND c.team = i.team
  WHERE i.team IS NOT NULL AND i.value IS NOT NULL
  GROUP BY i.period, i.team, i.value
  UNION ALL
  SELECT 'owner', i.period, i.value,
         CAST(count(*) FILTER (WHERE c.won) AS DOUBLE) / count(*)
  FROM owner_health_index_history i JOIN closed c ON c.period = i.period AND c.owner_id = i.owner_id
  WHERE i.owner_id IS NOT NULL AND i.value IS NOT NULL
  GROUP BY i.period, i.owner_id, i.value
),
stats AS (
  SELECT g.across, g.position, count(p.x) AS n, count(DISTINCT p.period) AS weeks,
         corr(p.x, p.y) AS r
  FROM (VALUES ('team', 1), ('owner', 2)) AS g(across, position)
  LEFT JOIN pairs p ON p.across = g.across
  GROUP BY g.across, g.position
),
window AS (SELECT min(period) AS first_week, max(period) AS last_week FROM looked_back_periods)
SELECT CAST(NULL AS VARCHAR) AS team, s.across, w.first_week, w.last_week, s.weeks, s.n,
       CASE WHEN s.n >= 3 AND NOT isnan(s.r) THEN s.r END AS value,
       CASE WHEN s.n >= 4 AND abs(s.r) < 1 THEN tanh(atanh(s.r) - 1.959964 / sqrt(CAST(s.n - 3 AS DOUBLE))) END AS ci_low,
       CASE WHEN s.n >= 4 AND abs(s.r) < 1 THEN tanh(atanh(s.r) + 1.959964 / sqrt(CAST(s.n - 3 AS DOUBLE))) END AS ci_high,
       s.n >= 10 AS enough_data
FROM stats s CROSS JOIN window w
ORDER BY s.position
