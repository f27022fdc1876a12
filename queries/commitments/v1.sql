-- metric: commitments
-- version: 1
-- owner: sales-ops
-- description: Promises with a deadline found in the notes of the last five weeks, and whether a later action kept them.
-- grain: commitment
-- period: week
--
-- The article's rep who "committed to a service plan within 48 hours", which nobody tracked.
-- Every promise that note_commitments finds in a note of the 28 days before the period or of the
-- period up to as_of, on a note with an opportunity (or, without one, a customer) to follow.
-- kept_at: the first later action on the same opportunity (customer) at or before the deadline
-- and before as_of. Status at as_of: kept (there is one), broken (the deadline passed without
-- one), due_soon (fewer than rules.due_soon_h hours left), open. hours_left = hours from as_of to
-- the deadline (negative when it passed). Owner and team: the note's writer; team and industry
-- from the opportunity when there is one.
WITH made AS (
  SELECT action_id, owner_id, team, opportunity_id, customer_id, occurred_at AS made_at,
         coalesce('opportunity:' || opportunity_id, 'customer:' || customer_id) AS subject,
         unnest(note_commitments(note, occurred_at)) AS c
  FROM actions
  WHERE note IS NOT NULL AND (opportunity_id IS NOT NULL OR customer_id IS NOT NULL)
    AND dt >= $lookback_start_date AND dt <= $as_of_date AND occurred_at < $as_of
),
promises AS (
  SELECT action_id, owner_id, team, opportunity_id, customer_id, made_at, subject,
         c['deadline'] AS deadline, c['promise'] AS promise
  FROM made
),
kept AS (
  SELECT p.action_id, p.deadline, min(a.occurred_at) AS kept_at
  FROM promises p
  JOIN actions a
    ON coalesce('opportunity:' || a.opportunity_id, 'customer:' || a.customer_id) = p.subject
  WHERE a.dt >= $lookback_start_date AND a.dt <= $as_of_date
    AND a.occurred_at > p.made_at AND a.occurred_at <= p.deadline AND a.occurred_at < $as_of
  GROUP BY p.action_id, p.deadline
)
SELECT p.action_id, p.opportunity_id, p.customer_id, p.owner_id,
       coalesce(o.team, p.team) AS team, o.industry,
       p.made_at, p.deadline, p.promise, k.kept_at,
       silent_hours($as_of, p.deadline) AS hours_left,
       CASE WHEN k.kept_at IS NOT NULL THEN 'kept'
            WHEN p.deadline < $as_of THEN 'broken'
            WHEN silent_hours($as_of, p.deadline) < $due_soon_h THEN 'due_soon'
            ELSE 'open' END AS status
FROM promises p
LEFT JOIN kept k ON k.action_id = p.action_id AND k.deadline = p.deadline
LEFT JOIN opportunities o ON o.opportunity_id = p.opportunity_id
ORDER BY p.deadline, p.action_id, p.promise
