-- metric: silent_overtime_rate
-- version: 1
-- owner: sales-ops
-- description: Share of the open opportunities at as_of that have been silent past their stage's timeout.
-- grain: team
-- period: week
-- depends: [silent_warnings]
-- threshold: { max: 0.15 }
-- advice: >-
--   {{ team or 'Organisation' }}: {{ overdue }} of {{ population }} open opportunities have been
--   silent past their stage's timeout ({{ (value * 100) | round(1) }}%, healthy up to
--   {{ threshold * 100 }}%), e.g. {{ examples }}. Each needs a follow-up today.
--
-- Contract 4.3, over the open opportunities of silent_warnings: overdue when silent_hours is over
-- the stage's timeout.
WITH teams AS (
  SELECT team,
         count(*) AS population,
         count(*) FILTER (WHERE silent_hours > timeout_h) AS overdue,
         array_to_string(array_slice(array_agg(opportunity_id || ' (' || stage || ', ' || CAST(round(silent_hours) AS BIGINT) || ' h)' ORDER BY hours_remaining, opportunity_id) FILTER (WHERE silent_hours > timeout_h), 1, 5), ', ') AS examples
  FROM silent_warnings WHERE team IS NOT NULL GROUP BY team
  UNION ALL
  SELECT NULL,
         count(*),
         count(*) FILTER (WHERE silent_hours > timeout_h),
         array_to_string(array_slice(array_agg(opportunity_id || ' (' || stage || ', ' || CAST(round(silent_hours) AS BIGINT) || ' h)' ORDER BY hours_remaining, opportunity_id) FILTER (WHERE silent_hours > timeout_h), 1, 5), ', ')
  FROM silent_warnings
)
SELECT team, population, overdue,
       CASE WHEN population = 0 THEN NULL ELSE CAST(overdue AS DOUBLE) / population END AS value,
       examples
FROM teams
ORDER BY team NULLS FIRST
