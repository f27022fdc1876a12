-- metric: month_end_bunching
-- version: 1
-- owner: retail-ops
-- description: Store x action type pairs with half or more of the month's actions logged on days 25-28.
-- grain: store x action type
-- period: month
--
-- Contract 4.9. Pairs with at least 10 actions in the month whose share on local days 25-28 is
-- at least 0.5: a sign of actions entered in bulk before the month closes.
WITH counts AS (
  SELECT store_id, action_type,
         count(*) AS actions,
         count(*) FILTER (WHERE date_part('day', dt) BETWEEN 25 AND 28) AS month_end_actions
  FROM actions
  WHERE store_id IS NOT NULL AND dt >= $period_start_date AND dt < $period_end_date
  GROUP BY store_id, action_type
)
SELECT store_id, action_type, actions, month_end_actions,
       CAST(month_end_actions AS DOUBLE) / actions AS month_end_share
FROM counts
WHERE actions >= 10 AND CAST(month_end_actions AS DOUBLE) / actions >= 0.5
ORDER BY month_end_share DESC, store_id, action_type
