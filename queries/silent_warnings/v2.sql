-- metric: silent_warnings
-- version: 2
-- owner: sales-ops
-- description: Every open opportunity at as_of with its silent hours, timeout and what is left.
-- grain: opportunity
-- period: week
--
-- Contract 4.5. Open at as_of: the latest stage change before as_of is into a non-terminal stage;
-- entered_at is that change's time. last_activity_at: the later of entered_at and the latest
-- action of the opportunity in [entered_at, as_of). Status: overdue (< 0 h left), due_soon
-- (< rules.due_soon_h left) or ok. Team and owner: opportunities, else the stage change's owner.
-- v2: the same rows as v1; the open opportunities are computed once (DataFusion does not share
-- a CTE used twice), with their last action found in the same join.
WITH latest AS (
  SELECT opportunity_id, to_stage AS stage, changed_at AS entered_at, owner_id
  FROM (
    SELECT *, row_number() OVER (PARTITION BY opportunity_id ORDER BY changed_at DESC, ingested_at DESC, source_line DESC) AS r
    FROM stage_changes
    WHERE dt <= $as_of_date AND changed_at < $as_of)
  WHERE r = 1
),
open AS (
  SELECT l.* FROM latest l JOIN stages s ON s.name = l.stage WHERE NOT s.terminal
),
silent AS (
  SELECT o.opportunity_id, o.stage, o.entered_at, o.owner_id,
         coalesce(max(a.occurred_at), o.entered_at) AS last_activity_at
  FROM open o
  LEFT JOIN actions a
    ON a.opportunity_id = o.opportunity_id
   AND a.dt <= $as_of_date AND a.occurred_at >= o.entered_at AND a.occurred_at < $as_of
  GROUP BY o.opportunity_id, o.stage, o.entered_at, o.owner_id
),
timed AS (
  SELECT s.opportunity_id,
         coalesce(opp.owner_id, s.owner_id) AS owner_id,
         opp.team,
         s.stage,
         s.entered_at,
         s.last_activity_at,
         silent_hours(s.last_activity_at, $as_of) AS silent_hours,
         stage_timeout_h(s.stage) AS timeout_h
  FROM silent s
  LEFT JOIN opportunities opp ON opp.opportunity_id = s.opportunity_id
)
SELECT opportunity_id, owner_id, team, stage, entered_at, last_activity_at, silent_hours, timeout_h,
       timeout_h - silent_hours AS hours_remaining,
       CASE WHEN timeout_h - silent_hours < 0 THEN 'overdue'
            WHEN timeout_h - silent_hours < $due_soon_h THEN 'due_soon'
            ELSE 'ok' END AS status
FROM timed
ORDER BY hours_remaining, opportunity_id
