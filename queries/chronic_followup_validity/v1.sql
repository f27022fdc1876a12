-- metric: chronic_followup_validity
-- version: 1
-- owner: retail-ops
-- description: Share of chronic-disease follow-ups backed by a test report from the 30 days before.
-- grain: store
-- period: week
--
-- Contract 4.11. chronic_followup actions of the period; valid when attrs.last_report_date is a
-- date at most rules.chronic_report_max_days - 1 days before the action's local date (dt), and
-- not after it. One row per store plus the overall row (store_id NULL).
WITH followups AS (
  SELECT action_id, store_id,
         CAST(arrow_cast(dt, 'Int32') AS BIGINT)
           - CAST(arrow_cast(TRY_CAST(attr(attrs, 'last_report_date') AS DATE), 'Int32') AS BIGINT) AS report_age_days
  FROM actions
  WHERE action_type = 'chronic_followup'
    AND dt >= $period_start_date AND dt < $period_end_date
    AND occurred_at >= $period_start AND occurred_at < $period_end
),
judged AS (
  SELECT action_id, store_id,
         coalesce(report_age_days >= 0 AND report_age_days < $chronic_report_max_days, false) AS valid
  FROM followups
),
stores AS (
  SELECT store_id, count(*) AS population, count(*) FILTER (WHERE valid) AS valid
  FROM judged WHERE store_id IS NOT NULL GROUP BY store_id
  UNION ALL
  SELECT NULL, count(*), count(*) FILTER (WHERE valid) FROM judged
)
SELECT store_id, population, valid,
       CASE WHEN population = 0 THEN NULL ELSE CAST(valid AS DOUBLE) / population END AS value
FROM stores
ORDER BY store_id NULLS FIRST
