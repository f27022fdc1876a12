-- metric: silent_warnings
-- version: 5
-- owner: sales-ops
-- description: Every open opportunity at as_of with its silent hours, timeout and what is left.
-- grain: opportunity
-- period: week
-- carry:
--   opportunity_id: text
--   stage: text
--   entered_at: timestamp
--   stage_owner_id: text
--   last_activity_at: timestamp
--
-- Contract 4.5. Open at as_of: the latest stage change before as_of is into a non-terminal stage;
-- entered_at is that change's time. last_activity_at: the later of entered_at and the latest
-- action of the opportunity in [entered_at, as_of). Status: overdue (< 0 h left), due_soon
-- (< rules.due_soon_h left) or ok. Team and owner: opportunities, else the stage change's owner.
-- v5: the same rows as v4, plus the opportunity's industry, which the report's per-industry
-- advice reads ("8 hospital customers are waiting for a proposal confirmation").
-- v4: a stage-history row whose from_stage equals its to_stage is not a stage change (CRM
-- history tables also record amount and close-date edits that way): it never moves entered_at,
-- so it never restarts the silence clock. v3 took such a row as the latest change.
-- v3: the same rows as v2, plus stage_owner_id (the owner on the change into the stage). It
-- starts from the previous week's open opportunities (silent_warnings_carried, as of
-- $carried_as_of) and reads only the stage changes and actions since. Without a usable previous
-- week that table is empty and $carried_as_of is 1900-01-01: the whole history is read
-- (src/metrics/carry.rs says when a previous week is usable).
WITH moved AS (
  -- The latest stage change since the carried instant, per opportunity.
  SELECT opportunity_id, to_stage AS stage, changed_at AS entered_at, owner_id AS stage_owner_id
  FROM (
    SELECT *, row_number() OVER (PARTITION BY opportunity_id ORDER BY changed_at DESC, ingested_at DESC, source_line DESC) AS r
    FROM stage_changes
    WHERE dt >= $carried_as_of_date AND dt <= $as_of_date
      AND changed_at >= $carried_as_of AND changed_at < $as_of
      AND from_stage IS DISTINCT FROM to_stage)
  WHERE r = 1
),
latest AS (
  -- A change since then overrides the carried row (carried rows were open at $carried_as_of).
  SELECT coalesce(m.opportunity_id, c.opportunity_id) AS opportunity_id,
         CASE WHEN m.opportunity_id IS NULL THEN c.stage ELSE m.stage END AS stage,
         CASE WHEN m.opportunity_id IS NULL THEN c.entered_at ELSE m.entered_at END AS entered_at,
         CASE WHEN m.opportunity_id IS NULL THEN c.stage_owner_id ELSE m.stage_owner_id END AS stage_owner_id,
         CASE WHEN m.opportunity_id IS NULL THEN c.last_activity_at END AS carried_activity_at
  FROM moved m
  FULL JOIN silent_warnings_carried c ON c.opportunity_id = m.opportunity_id
),
open AS (
  SELECT l.* FROM latest l JOIN stages s ON s.name = l.stage WHERE NOT s.terminal
),
silent AS (
  -- Actions before the carried instant are in carried_activity_at already.
  SELECT o.opportunity_id, o.stage, o.entered_at, o.stage_owner_id,
         coalesce(max(a.occurred_at), o.carried_activity_at, o.entered_at) AS last_activity_at
  FROM open o
  LEFT JOIN actions a
    ON a.opportunity_id = o.opportunity_id
   AND a.dt >= $carried_as_of_date AND a.dt <= $as_of_date
   AND a.occurred_at >= o.entered_at AND a.occurred_at >= $carried_as_of AND a.occurred_at < $as_of
  GROUP BY o.opportunity_id, o.stage, o.entered_at, o.stage_owner_id, o.carried_activity_at
),
timed AS (
  SELECT s.opportunity_id,
         coalesce(opp.owner_id, s.stage_owner_id) AS owner_id,
         opp.team,
         s.stage,
         s.entered_at,
         s.last_activity_at,
         silent_hours(s.last_activity_at, $as_of) AS silent_hours,
         stage_timeout_h(s.stage) AS timeout_h,
         s.stage_owner_id,
         opp.industry
  FROM silent s
  LEFT JOIN opportunities opp ON opp.opportunity_id = s.opportunity_id
)
SELECT opportunity_id, owner_id, team, stage, entered_at, last_activity_at, silent_hours, timeout_h,
       timeout_h - silent_hours AS hours_remaining,
       CASE WHEN timeout_h - silent_hours < 0 THEN 'overdue'
            WHEN timeout_h - silent_hours < $due_soon_h THEN 'due_soon'
            ELSE 'ok' END AS status,
       stage_owner_id, industry
FROM timed
ORDER BY hours_remaining, opportunity_id
