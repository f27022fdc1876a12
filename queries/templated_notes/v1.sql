-- metric: templated_notes
-- version: 1
-- owner: retail-ops
-- description: Stores and owners whose notes of the week are mostly copies of one template with the numbers changed.
-- grain: store or owner, x action type
-- period: week
--
-- The article's 37 stores filled their chronic follow-up log in bulk from one template, which
-- only reading the notes showed. Each note of the period is judged once: a store's notes per
-- store (grain 'store'), the others per owner (grain 'owner'), and within each action type
-- (rules.templated_notes.per_action_type; all types together when false, action_type NULL).
-- A note is templated when another note of the same store (owner) and type is a near-duplicate:
-- note_similarity >= rules.templated_notes.similarity (numbers, width, case and punctuation
-- never count, see note_normalize). share = templated / notes; flagged when share >= min_share
-- with at least min_notes notes. The template is the note with the most copies (ties: the
-- lowest action id), as written; example_action_ids are up to five of the template's notes.
WITH notes AS (
  SELECT CASE WHEN store_id IS NULL THEN 'owner' ELSE 'store' END AS grain,
         coalesce(store_id, owner_id) AS subject,
         CASE WHEN $template_per_action_type THEN action_type END AS action_type,
         action_id, team, note
  FROM actions
  WHERE dt >= $period_start_date AND dt < $period_end_date
    AND occurred_at >= $period_start AND occurred_at < $period_end
    AND note IS NOT NULL AND note_normalize(note) <> ''
),
pairs AS (
  SELECT a.grain, a.subject, a.action_type, a.action_id, b.action_id AS copy_id
  FROM notes a
  JOIN notes b
    ON a.grain = b.grain AND a.subject = b.subject
   AND coalesce(a.action_type, '') = coalesce(b.action_type, '')
   AND a.action_id <> b.action_id
  WHERE note_similarity(a.note, b.note) >= $template_similarity
),
copies AS (
  SELECT grain, subject, action_type, action_id, count(*) AS copies
  FROM pairs
  GROUP BY grain, subject, action_type, action_id
),
template AS (
  SELECT grain, subject, action_type, action_id, copies
  FROM (SELECT *, row_number() OVER (PARTITION BY grain, subject, action_type ORDER BY copies DESC, action_id) AS r
        FROM copies)
  WHERE r = 1
),
examples AS (
  SELECT grain, subject, action_type,
         array_to_string(array_slice(array_agg(id ORDER BY id), 1, 5), ',') AS example_action_ids
  FROM (SELECT t.grain, t.subject, t.action_type, p.copy_id AS id
        FROM template t
        JOIN pairs p ON p.grain = t.grain AND p.subject = t.subject
                    AND coalesce(p.action_type, '') = coalesce(t.action_type, '') AND p.action_id = t.action_id
        UNION ALL
        SELECT grain, subject, action_type, action_id FROM template)
  GROUP BY grain, subject, action_type
),
summary AS (
  SELECT n.grain, n.subject, n.action_type, max(n.team) AS team, count(*) AS notes,
         count(c.action_id) AS templated
  FROM notes n
  LEFT JOIN copies c ON c.grain = n.grain AND c.subject = n.subject
                    AND coalesce(c.action_type, '') = coalesce(n.action_type, '') AND c.action_id = n.action_id
  GROUP BY n.grain, n.subject, n.action_type
)
SELECT s.grain,
       CASE WHEN s.grain = 'store' THEN s.subject END AS store_id,
       CASE WHEN s.grain = 'owner' THEN s.subject END AS owner_id,
       s.team, s.action_type, s.notes, s.templated,
       CAST(s.templated AS DOUBLE) / s.notes AS share,
       s.notes >= $template_min_notes AND CAST(s.templated AS DOUBLE) / s.notes >= $template_min_share AS flagged,
       t.copies + 1 AS template_notes,
       n.note AS template_text,
       e.example_action_ids
FROM summary s
LEFT JOIN template t ON t.grain = s.grain AND t.subject = s.subject AND coalesce(t.action_type, '') = coalesce(s.action_type, '')
LEFT JOIN notes n ON n.grain = t.grain AND n.subject = t.subject AND n.action_id = t.action_id
LEFT JOIN examples e ON e.grain = s.grain AND e.subject = s.subject AND coalesce(e.action_type, '') = coalesce(s.action_type, '')
ORDER BY flagged DESC, share DESC, s.grain DESC, s.subject, s.action_type
