-- metric: zero_action_streaks
-- version: 1
-- owner: retail-ops
-- description: Stores that went 7 or more days in a row without a store action, within the 28 days before as_of.
-- grain: store x action type
-- period: week
--
-- Contract 4.8. For each store (seen since 28 days before the period) and store action type, the
-- longest run of consecutive local days with zero such actions among the 28 days that end with
-- as_of's day; rows with a run of 7 days or more.
WITH stores AS (
  SELECT DISTINCT store_id FROM actions
  WHERE store_id IS NOT NULL AND dt >= $lookback_start_date AND dt <= $as_of_date AND occurred_at < $as_of
),
days AS (
  SELECT store_id, action_type, dt FROM actions
  WHERE store_id IS NOT NULL AND dt >= $window_start_date AND dt <= $as_of_date AND occurred_at < $as_of
),
runs AS (
  SELECT s.store_id, r.action_type,
         longest_zero_run(d.dt, $window_start_date, $as_of_date) AS streak_days,
         longest_zero_run_start(d.dt, $window_start_date, $as_of_date) AS streak_start
  FROM stores s CROSS JOIN rules_store_actions r
  LEFT JOIN days d ON d.store_id = s.store_id AND d.action_type = r.action_type
  GROUP BY s.store_id, r.action_type
)
SELECT store_id, action_type, streak_days, streak_start,
       streak_start + CAST(streak_days - 1 AS INT) AS streak_end
FROM runs
WHERE streak_days >= 7
ORDER BY streak_days DESC, store_id, action_type
