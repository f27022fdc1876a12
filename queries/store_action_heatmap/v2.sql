-- metric: store_action_heatmap
-- version: 2
-- owner: retail-ops
-- description: Per store and store action type, the share of the week's days that met the daily minimum, with the store's team.
-- grain: store x action type
-- period: week
--
-- Contract 4.7. Stores: seen in the period or the 28 days before. Action types and their daily
-- minimum: rules.store_actions. days_met: local days of the week with at least the minimum;
-- rate = days_met / 7; band green >= 0.90, yellow >= 0.70, else red.
-- v2: the same rows as v1, plus team: the store's team or region (the greatest team on its
-- actions of those days, NULL when they carry none), which the report's heat map groups by.
-- Ordered by rate, then action type, then store: DataFusion 55 drops a sort key that follows
-- store_id here (it takes the cross join's store_id for a key of the rows), so v1's order
-- "rate, store_id, action_type" is not what v1 writes; this order is kept whole.
WITH stores AS (
  SELECT store_id, max(team) AS team FROM actions
  WHERE store_id IS NOT NULL AND dt >= $lookback_start_date AND dt < $period_end_date
  GROUP BY store_id
),
daily AS (
  SELECT store_id, action_type, dt, count(*) AS actions
  FROM actions
  WHERE store_id IS NOT NULL AND dt >= $period_start_date AND dt < $period_end_date
  GROUP BY store_id, action_type, dt
),
cells AS (
  SELECT s.store_id, s.team, r.action_type, r.daily_minimum,
         count(d.dt) FILTER (WHERE d.actions >= r.daily_minimum) AS days_met,
         coalesce(sum(d.actions), 0) AS actions
  FROM stores s CROSS JOIN rules_store_actions r
  LEFT JOIN daily d ON d.store_id = s.store_id AND d.action_type = r.action_type
  GROUP BY s.store_id, s.team, r.action_type, r.daily_minimum
)
SELECT store_id, action_type, daily_minimum, actions, days_met,
       days_met / 7.0 AS rate,
       health_band(days_met / 7.0, 0.90, 0.70) AS band,
       team
FROM cells
ORDER BY rate, action_type, store_id
