-- metric: process_health_index
-- version: 2
-- owner: sales-ops
-- description: 0.6 x stage compliance + 0.3 x evidence + 0.1 x (1 - silent overtime), weights from config.
-- grain: team
-- period: week
-- depends: [stage_compliance_rate, evidence_rate, silent_overtime_rate]
-- threshold: { min: 0.90 }
-- advice: >-
--   {{ team or 'Organisation' }}: process health index {{ value | pct }}, healthy from
--   {{ threshold | pct }} (stage compliance {{ stage_compliance_rate | pct }}, evidence
--   {{ evidence_rate | pct }}, silent overtime {{ silent_overtime_rate | pct }}). Start with the
--   weakest component.
--
-- Contract 4.4. Version 2 changes only the advice: every number in it a percentage, as the
-- report shows them (version 1 wrote `0.896, healthy from 0.9` beside the report's `89.6%`).
-- A component with an empty population (NULL value) is left out and the remaining
-- weights renormalised; with none left, the value is NULL.
WITH parts AS (
  SELECT team, value AS stage_compliance_rate, CAST(NULL AS DOUBLE) AS evidence_rate, CAST(NULL AS DOUBLE) AS silent_overtime_rate FROM stage_compliance_rate
  UNION ALL
  SELECT team, NULL, value, NULL FROM evidence_rate
  UNION ALL
  SELECT team, NULL, NULL, value FROM silent_overtime_rate
),
teams AS (
  SELECT team,
         max(stage_compliance_rate) AS stage_compliance_rate,
         max(evidence_rate) AS evidence_rate,
         max(silent_overtime_rate) AS silent_overtime_rate
  FROM parts GROUP BY team
),
weighted AS (
  SELECT *,
         coalesce($weight_stage_compliance * stage_compliance_rate, 0)
           + coalesce($weight_evidence * evidence_rate, 0)
           + coalesce($weight_silent * (1 - silent_overtime_rate), 0) AS points,
         CASE WHEN stage_compliance_rate IS NULL THEN 0 ELSE $weight_stage_compliance END
           + CASE WHEN evidence_rate IS NULL THEN 0 ELSE $weight_evidence END
           + CASE WHEN silent_overtime_rate IS NULL THEN 0 ELSE $weight_silent END AS weight
  FROM teams
)
SELECT team,
       CASE WHEN weight = 0 THEN NULL ELSE points / weight END AS value,
       stage_compliance_rate, evidence_rate, silent_overtime_rate
FROM weighted
ORDER BY team NULLS FIRST
