-- metric: entry_lag
-- version: 1
-- owner: sales-ops
-- description: Per owner, the average hours from an action to its entry in the CRM, and the share entered a day late.
-- grain: owner
-- period: week
--
-- Contract 4.12. Actions of the period (by occurred_at); lag = recorded_at - occurred_at in hours
-- (recorded_at defaults to occurred_at at ingest). One row per owner plus the overall row
-- (owner_id NULL).
WITH lags AS (
  SELECT owner_id, silent_hours(occurred_at, recorded_at) AS lag_hours
  FROM actions
  WHERE dt >= $period_start_date AND dt < $period_end_date
    AND occurred_at >= $period_start AND occurred_at < $period_end
),
owners AS (
  SELECT owner_id, count(*) AS actions, avg(lag_hours) AS avg_lag_hours,
         count(*) FILTER (WHERE lag_hours > 24) AS late
  FROM lags GROUP BY owner_id
  UNION ALL
  SELECT NULL, count(*), avg(lag_hours), count(*) FILTER (WHERE lag_hours > 24) FROM lags
)
SELECT owner_id, actions, avg_lag_hours,
       CASE WHEN actions = 0 THEN NULL ELSE CAST(late AS DOUBLE) / actions END AS share_over_24h
FROM owners
ORDER BY owner_id NULLS FIRST
