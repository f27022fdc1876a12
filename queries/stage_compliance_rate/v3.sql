-- metric: stage_compliance_rate
-- version: 3
-- owner: sales-ops
-- description: Share of the opportunities that changed stage in the period without skipping a stage.
-- grain: team
-- period: week
-- threshold: { min: 0.92 }
-- advice: >-
--   {{ team or 'Organisation' }}: {{ population - compliant }} of {{ population }} opportunities
--   skipped a stage this week ({{ (value * 100) | round(1) }}% compliant, healthy from
--   {{ threshold * 100 }}%), e.g. {{ examples }}. Go through them with their owners: which stage
--   was skipped, and was its key action done?
--
-- Contract 4.1. Population: opportunities with at least one stage change in the period (changes
-- into unknown stages never land). A change skips when is_stage_skip says so. Team: opportunities.
-- v3: a row whose from_stage equals its to_stage (an amount or close-date edit in a CRM's
-- history table) is not a stage change: it no longer puts its opportunity in the population.
-- v2: the same rows as v1, from one pass: the teams and the organisation are grouping sets of
-- one aggregate (v1's UNION ALL read the week's stage changes and opportunities twice), and the
-- examples are sorted after they are collected, as in evidence_rate v2.
WITH moved AS (
  SELECT opportunity_id,
         stage_path_compliant(from_stage, to_stage ORDER BY changed_at) AS compliant
  FROM stage_changes
  WHERE dt >= $period_start_date AND dt < $period_end_date
    AND changed_at >= $period_start AND changed_at < $period_end
    AND from_stage IS DISTINCT FROM to_stage
  GROUP BY opportunity_id
),
judged AS (
  SELECT m.opportunity_id, o.team, m.compliant
  FROM moved m LEFT JOIN opportunities o ON o.opportunity_id = m.opportunity_id
  WHERE m.compliant IS NOT NULL
),
teams AS (
  -- The organisation is the empty grouping set: one row even when nothing moved.
  SELECT team,
         grouping(team) = 1 AS organisation,
         count(*) AS population,
         count(*) FILTER (WHERE compliant) AS compliant,
         array_to_string(array_slice(array_sort(array_agg(opportunity_id) FILTER (WHERE NOT compliant)), 1, 5), ', ') AS examples
  FROM judged
  GROUP BY GROUPING SETS ((team), ())
)
SELECT team, population, compliant,
       CASE WHEN population = 0 THEN NULL ELSE CAST(compliant AS DOUBLE) / population END AS value,
       examples
FROM teams
WHERE organisation OR team IS NOT NULL
ORDER BY team NULLS FIRST
