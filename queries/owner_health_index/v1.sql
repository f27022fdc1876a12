-- metric: owner_health_index
-- version: 1
-- owner: sales-ops
-- description: The process health index of each owner (rep or store manager), from the three rates over the owner's own opportunities and actions.
-- grain: owner
-- period: week
-- depends: [silent_warnings]
--
-- Contract 4.16: the index of 4.4 per owner, so that 4.13 can ask whether it predicts an owner's
-- wins as well as a team's. Stage compliance: the opportunities the owner owns (latest snapshot)
-- that changed stage in the period; evidence: the owner's evidence-required actions in the
-- period; silent overtime: the owner's open opportunities at as_of (silent_warnings). A rate
-- with an empty population is left out and the weights renormalised, as in 4.4.
WITH moved AS (
  SELECT opportunity_id,
         stage_path_compliant(from_stage, to_stage ORDER BY changed_at) AS compliant
  FROM stage_changes
  WHERE dt >= $period_start_date AND dt < $period_end_date
    AND changed_at >= $period_start AND changed_at < $period_end
  GROUP BY opportunity_id
),
compliance AS (
  SELECT o.owner_id, count(*) AS population, count(*) FILTER (WHERE m.compliant) AS compliant
  FROM moved m JOIN opportunities o ON o.opportunity_id = m.opportunity_id
  WHERE m.compliant IS NOT NULL AND o.owner_id IS NOT NULL
  GROUP BY o.owner_id
),
evidence AS (
  SELECT owner_id, count(*) AS population,
         count(*) FILTER (WHERE coalesce(trim(evidence), '') <> '') AS with_evidence
  FROM actions
  WHERE dt >= $period_start_date AND dt < $period_end_date
    AND occurred_at >= $period_start AND occurred_at < $period_end
    AND action_type IN (SELECT action_type FROM rules_evidence_required)
  GROUP BY owner_id
),
silent AS (
  SELECT owner_id, count(*) AS population,
         count(*) FILTER (WHERE silent_hours > timeout_h) AS overdue
  FROM silent_warnings WHERE owner_id IS NOT NULL GROUP BY owner_id
),
owners AS (
  SELECT owner_id FROM compliance UNION SELECT owner_id FROM evidence UNION SELECT owner_id FROM silent
),
rates AS (
  SELECT w.owner_id,
         CAST(c.compliant AS DOUBLE) / c.population AS stage_compliance_rate,
         CAST(e.with_evidence AS DOUBLE) / e.population AS evidence_rate,
         CAST(s.overdue AS DOUBLE) / s.population AS silent_overtime_rate
  FROM owners w
  LEFT JOIN compliance c ON c.owner_id = w.owner_id
  LEFT JOIN evidence e ON e.owner_id = w.owner_id
  LEFT JOIN silent s ON s.owner_id = w.owner_id
),
weighted AS (
  SELECT *,
         coalesce($weight_stage_compliance * stage_compliance_rate, 0)
           + coalesce($weight_evidence * evidence_rate, 0)
           + coalesce($weight_silent * (1 - silent_overtime_rate), 0) AS points,
         CASE WHEN stage_compliance_rate IS NULL THEN 0 ELSE $weight_stage_compliance END
           + CASE WHEN evidence_rate IS NULL THEN 0 ELSE $weight_evidence END
           + CASE WHEN silent_overtime_rate IS NULL THEN 0 ELSE $weight_silent END AS weight
  FROM rates
)
SELECT owner_id,
       CASE WHEN weight = 0 THEN NULL ELSE points / weight END AS value,
       stage_compliance_rate, evidence_rate, silent_overtime_rate
FROM weighted
ORDER BY owner_id
