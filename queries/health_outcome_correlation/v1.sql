-- metric: health_outcome_correlation
-- version: 1
-- owner: sales-ops
-- description: Pearson correlation across teams between the week's health index and the win rate of the four weeks after.
-- grain: organisation
-- period: week
-- depends: [process_health_index]
--
-- Contract 4.13: does the index predict results? For each team, the week's index and the win
-- rate (won / (won + lost)) of its opportunities closed in the four weeks after the week (latest
-- snapshot). value: their Pearson correlation across teams; NULL until at least three teams have
-- closed opportunities, which needs an as_of or a run four weeks after the week.
WITH outcomes AS (
  SELECT team,
         count(*) FILTER (WHERE status = 'won') AS won,
         count(*) FILTER (WHERE status IN ('won', 'lost')) AS closed
  FROM opportunities
  WHERE team IS NOT NULL AND closed_at >= $period_end AND closed_at < $outcome_end AND closed_at < $as_of
  GROUP BY team
),
pairs AS (
  SELECT i.team, i.value AS health_index, CAST(o.won AS DOUBLE) / o.closed AS win_rate
  FROM process_health_index i JOIN outcomes o ON o.team = i.team
  WHERE i.team IS NOT NULL AND i.value IS NOT NULL AND o.closed > 0
)
SELECT CAST(NULL AS VARCHAR) AS team,
       count(*) AS teams,
       CASE WHEN count(*) >= 3 THEN corr(health_index, win_rate) END AS value
FROM pairs
