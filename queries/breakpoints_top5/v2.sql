-- metric: breakpoints_top5
-- version: 2
-- owner: sales-ops
-- description: The month's five longest stays past their stage's timeout, and the average dwell per stage.
-- grain: stay (kind = 'stay'), stage (kind = 'stage_average')
-- period: month
--
-- Contract 4.6. A stay: an opportunity's time in one non-terminal stage, from the change into it
-- to the next change (or as_of). Stays that overlap the month count; dwell_hours runs from entry to
-- the earlier of leaving and the month's end (and as_of). Rows of kind 'stay': the five longest
-- stays whose dwell exceeds the stage's timeout. Rows of kind 'stage_average': the average dwell
-- of the month's stays per stage.
-- v2: a row whose from_stage equals its to_stage (an amount or close-date edit in a CRM's history
-- table) is not a stage change: it no longer ends one stay and starts another.
WITH ordered AS (
  SELECT opportunity_id, to_stage AS stage, owner_id, changed_at AS entered_at,
         lead(changed_at) OVER (PARTITION BY opportunity_id ORDER BY changed_at, ingested_at, source_line) AS left_at
  FROM stage_changes
  WHERE dt <= $as_of_date AND changed_at < $as_of
    AND from_stage IS DISTINCT FROM to_stage
),
stays AS (
  SELECT o.opportunity_id, o.stage, o.owner_id, o.entered_at, o.left_at,
         silent_hours(o.entered_at, least(coalesce(o.left_at, $as_of), $period_end, $as_of)) AS dwell_hours,
         s.silent_timeout_h AS timeout_h
  FROM ordered o JOIN stages s ON s.name = o.stage
  WHERE NOT s.terminal
    AND o.entered_at < $period_end
    AND coalesce(o.left_at, $as_of) > $period_start
),
top5 AS (
  SELECT * FROM stays WHERE dwell_hours > timeout_h ORDER BY dwell_hours DESC, opportunity_id LIMIT 5
)
SELECT 'stay' AS kind, opportunity_id, stage, owner_id, entered_at, dwell_hours, timeout_h
FROM top5
UNION ALL
SELECT 'stage_average', NULL, stage, NULL, NULL, avg(dwell_hours), max(timeout_h)
FROM stays GROUP BY stage
ORDER BY kind DESC, dwell_hours DESC
