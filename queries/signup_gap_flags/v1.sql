-- metric: signup_gap_flags
-- version: 1
-- owner: retail-ops
-- description: Member sign-ups whose WeChat follow time is more than 15 minutes from the sign-up.
-- grain: action
-- period: week
--
-- Contract 4.10. member_signup actions of the period with attrs.wechat_followed_at more than
-- rules.signup_gap_minutes away from occurred_at (either side): flag yellow. A sign-up without
-- the follow time is not flagged here.
WITH gaps AS (
  SELECT action_id, store_id, owner_id, occurred_at,
         attr_timestamp(attrs, 'wechat_followed_at') AS wechat_followed_at,
         abs(silent_hours(occurred_at, attr_timestamp(attrs, 'wechat_followed_at'))) * 60 AS gap_minutes
  FROM actions
  WHERE action_type = 'member_signup'
    AND dt >= $period_start_date AND dt < $period_end_date
    AND occurred_at >= $period_start AND occurred_at < $period_end
)
SELECT action_id, store_id, owner_id, occurred_at, wechat_followed_at, gap_minutes, 'yellow' AS flag
FROM gaps
WHERE gap_minutes > $signup_gap_minutes
ORDER BY gap_minutes DESC, action_id
