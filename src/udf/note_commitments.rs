//! `note_commitments(note, occurred_at)`: the promises with a deadline in a rep's note, such as
//! the article's "承诺48小时内出服务方案" (promised a service plan within 48 hours), which no
//! tool tracks once it is said.
//!
//! Rule-based, in Chinese and English; no model. A note is cut into sentences (at `。！？!?;；`,
//! a line break, or `.` before a space) and each sentence into parts (at `，,、`). In each part
//! the first *deadline phrase* of [`RULES`] is found on the folded text (half-width, lower case).
//! It is a promise when, in this order:
//! 1. the part says it happened (`已`, `了`, `yesterday`, `ago`) and the sentence has no promise
//!    verb: not a promise;
//! 2. the phrase is a bound (`48小时内`, `下周一前`, `within 2 days`, `by Friday`), or the sentence
//!    has a promise verb (`承诺 答应 保证 确保 约定 说好 许诺`, `promise commit agree guarantee`),
//!    or the part a future modal (`会 将 要 准备 计划 打算 负责 争取 需要`, `will 'll shall going
//!    to plan to need to must have to`), or the phrase is followed by an action (`给 发 出 交 回复
//!    …`, [`ACTIONS`]): a promise.
//!
//! The deadline is an instant in the configured timezone: a number of hours is that many real
//! hours after the note (across a DST change too); every other phrase names a local day and the
//! deadline is the end of that day (23:59:59): "明天"/"tomorrow" the next day, "3天内"/"within 3
//! days" the third day after the note's, "3个工作日内" the third working day of the business
//! calendar, "下周一"/"next Monday" the Monday of the next ISO week, "周五"/"by Friday" the first
//! Friday on or after the note's day, "月底" the month's last day. The README lists every phrase.

use std::sync::{Arc, LazyLock};

use chrono::{Datelike, Duration, Months, NaiveDate, NaiveTime, Weekday};
use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, ListBuilder, StringBuilder, StructBuilder, TimestampMicrosecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::Result;
use datafusion::functions::utils::make_scalar_function;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature, Volatility,
};
use regex::{Captures, Regex};

use super::business_hours::Calendar;
use super::note_normalize::{half_width, lower};
use super::{DOC_SECTION, coerce, instants, text_type, texts, timestamp_type, utc_timestamp_type};
use crate::time::zone::{Zone, local_to_utc};

const SIGNATURE: &str = "note_commitments(note: text, occurred_at: timestamp)";

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct NoteCommitments {
    calendar: Calendar,
    signature: Signature,
}

impl NoteCommitments {
    /// Deadlines counted in working days of `calendar`.
    pub fn new(calendar: Calendar) -> NoteCommitments {
        NoteCommitments {
            calendar,
            signature: Signature::user_defined(Volatility::Immutable),
        }
    }
}

/// One promise found in a note.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Commitment {
    /// UTC microseconds.
    pub deadline: i64,
    /// The part of the note that says it, as written.
    pub promise: String,
}

/// When a deadline phrase says the promise is due.
#[derive(Debug, Clone, Copy, PartialEq)]
enum When {
    /// That many real hours after the note.
    Hours(u32),
    /// The end of the note's local day plus that many days.
    Days(u32),
    Weeks(u32),
    /// The same day that many months later (the month's last day when it is shorter).
    Months(u32),
    /// The end of the n-th working day after the note's day.
    Workdays(u32),
    /// The weekday on or after the note's day (`weeks_ahead` 0), or in the n-th next ISO week.
    Weekday(Weekday, u32),
    /// The Sunday of this (0) or the next (1) ISO week.
    WeekEnd(u32),
    /// The last day of this (0) or the next (1) month.
    MonthEnd(u32),
    /// The last day of the given month (this year, or next year when it has passed).
    EndOfMonth(u32),
    /// A month and day (this year, or next year when it has passed).
    Date(u32, u32),
    /// A day of the month: this month, or the next when it has passed (clamped to the month end).
    DayOfMonth(u32),
}

/// A deadline phrase: its pattern (on the folded text) and what a match means. The reader returns
/// `None` for a match that is not a deadline (`上周三`, last Wednesday), and whether the phrase
/// is a bound (`内`, `前`, `within`, `by`), which makes it a promise by itself.
struct Rule {
    pattern: Regex,
    read: fn(&Captures) -> Option<(When, bool)>,
}

const CN_NUMBER: &str = r"\d+|[零一二两三四五六七八九十]+";
const EN_NUMBER: &str = r"\d+|an?|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve";
const EN_BOUND: &str = r"(?:(?P<b>by|before|until|till|no later than|not later than)\s+)?";

/// The deadline phrases, in Chinese and English. The README's table lists them.
static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    let rule = |pattern: &str, read: fn(&Captures) -> Option<(When, bool)>| Rule {
        pattern: Regex::new(pattern).expect("a valid built-in pattern"),
        read,
    };
    vec![
        // 48小时内, 3天内, 两周内, 3个工作日内, 一个月内
        rule(
            &format!(
                r"(?P<n>{CN_NUMBER})\s*个?\s*(?P<u>小时|钟头|hours?|hrs?|h|工作日|天|日|星期|礼拜|周|月)\s*(?:之内|以内|内)"
            ),
            |c| Some((duration(cn_number(&c["n"])?, &c["u"])?, true)),
        ),
        // within 48 hours, in 2 days, within the next 3 business days
        rule(
            &format!(
                r"\b(?:within|in|inside of)\s+(?:the\s+next\s+)?(?P<n>{EN_NUMBER})\s*-?\s*(?P<u>hours?|hrs?|h|business\s+days?|working\s+days?|days?|weeks?|wks?|months?)\b"
            ),
            |c| Some((duration(en_number(&c["n"])?, &c["u"])?, true)),
        ),
        // 今天, 明天, 后天, 大后天 (+ 前/内)
        rule(
            r"(?P<w>大后天|后天|明天|明日|明早|明晚|今天|今日|今晚)\s*(?P<b>之前|以前|前|之内|以内|内|为止)?",
            |c| {
                let days = match &c["w"] {
                    "今天" | "今日" | "今晚" => 0,
                    "明天" | "明日" | "明早" | "明晚" => 1,
                    "后天" => 2,
                    _ => 3,
                };
                Some((When::Days(days), c.name("b").is_some()))
            },
        ),
        // today, tonight, EOD, tomorrow, the day after tomorrow (by/before ...)
        rule(
            &format!(
                r"\b{EN_BOUND}(?P<w>(?:the\s+)?day\s+after\s+tomorrow|tomorrow|today|tonight|end\s+of\s+(?:the\s+)?day|eod|cob)\b"
            ),
            |c| {
                let w = &c["w"];
                let days = if w.contains("after") {
                    2
                } else if w == "tomorrow" {
                    1
                } else {
                    0
                };
                Some((When::Days(days), c.name("b").is_some()))
            },
        ),
        // 周五, 本周五, 下周一, 下下周三, 星期天 (上周三 is past)
        rule(
            r"(?P<pre>下下个?|下个?|本|这个?|上个?)?(?:周|星期|礼拜)(?P<d>[一二三四五六日天])\s*(?P<b>之前|以前|前|为止)?",
            |c| {
                let weeks = match c.name("pre").map(|m| m.as_str()) {
                    Some(pre) if pre.starts_with("上") => return None,
                    Some(pre) if pre.starts_with("下下") => 2,
                    Some(pre) if pre.starts_with('下') => 1,
                    _ => 0,
                };
                let day = match &c["d"] {
                    "一" => Weekday::Mon,
                    "二" => Weekday::Tue,
                    "三" => Weekday::Wed,
                    "四" => Weekday::Thu,
                    "五" => Weekday::Fri,
                    "六" => Weekday::Sat,
                    _ => Weekday::Sun,
                };
                Some((When::Weekday(day, weeks), c.name("b").is_some()))
            },
        ),
        // by Friday, on Monday, next Tuesday (last Friday is past)
        rule(
            &format!(
                r"\b{EN_BOUND}(?:(?:on|this|coming|(?P<next>next)|(?P<last>last))\s+)?(?P<d>monday|tuesday|wednesday|thursday|friday|saturday|sunday|mon|tues?|wed|thu(?:rs?)?|fri|sat|sun)\b"
            ),
            |c| {
                if c.name("last").is_some() {
                    return None;
                }
                let day = match &c["d"][..3] {
                    "mon" => Weekday::Mon,
                    "tue" => Weekday::Tue,
                    "wed" => Weekday::Wed,
                    "thu" => Weekday::Thu,
                    "fri" => Weekday::Fri,
                    "sat" => Weekday::Sat,
                    _ => Weekday::Sun,
                };
                let weeks = u32::from(c.name("next").is_some());
                Some((When::Weekday(day, weeks), c.name("b").is_some()))
            },
        ),
        // 周末, 本周末前, 下周末
        rule(
            r"(?P<pre>本|这个?|下个?)?(?:周|星期|礼拜)末\s*(?P<b>之前|以前|前|为止)?",
            |c| {
                let next = c.name("pre").is_some_and(|m| m.as_str().starts_with('下'));
                Some((When::WeekEnd(u32::from(next)), c.name("b").is_some()))
            },
        ),
        // 本周内, 这周, 下周 (the whole week)
        rule(
            r"(?P<pre>本|这个?|下个?)(?:周|星期|礼拜)\s*(?P<b>之内|以内|内|之前|以前|前|为止)?",
            |c| {
                let next = c["pre"].starts_with('下');
                Some((When::WeekEnd(u32::from(next)), c.name("b").is_some()))
            },
        ),
        // by the end of the week, next week, end of (the) month, month-end, next month
        rule(
            r"\b(?:(?P<b>by|before|until|till|no later than|not later than|within)\s+)?(?:the\s+)?(?P<w>end\s+of\s+(?:the\s+|this\s+)?week|end\s+of\s+next\s+week|this\s+week|next\s+week|weekend|end\s+of\s+(?:the\s+|this\s+)?month|month[\s-]end|end\s+of\s+next\s+month|this\s+month|next\s+month)\b",
            |c| {
                let w = &c["w"];
                let next = u32::from(w.contains("next"));
                let when = if w.contains("month") {
                    When::MonthEnd(next)
                } else {
                    When::WeekEnd(next)
                };
                Some((when, c.name("b").is_some()))
            },
        ),
        // 月底, 本月底前, 下个月底, 3月底
        rule(
            r"(?:(?P<m>\d{1,2})\s*|(?P<pre>本|这个?|下个?))?月[底末]\s*(?P<b>之前|以前|前|为止)?",
            |c| {
                let bound = c.name("b").is_some();
                if let Some(m) = c.name("m") {
                    let month = m.as_str().parse().ok().filter(|m| (1..=12).contains(m))?;
                    return Some((When::EndOfMonth(month), bound));
                }
                let next = c.name("pre").is_some_and(|m| m.as_str().starts_with('下'));
                Some((When::MonthEnd(u32::from(next)), bound))
            },
        ),
        // 本月内, 下个月内
        rule(
            r"(?P<pre>本|这个?|下个?)月\s*(?:之内|以内|内)",
            |c| Some((When::MonthEnd(u32::from(c["pre"].starts_with('下'))), true)),
        ),
        // 3月5日前, 4月1号
        rule(
            r"(?P<m>\d{1,2})\s*月\s*(?P<d>\d{1,2})\s*[日号]\s*(?P<b>之前|以前|前|为止)?",
            |c| {
                let date = When::Date(c["m"].parse().ok()?, c["d"].parse().ok()?);
                Some((date, c.name("b").is_some()))
            },
        ),
        // 15号前, 30日之前 (a day of the month needs the bound: 3日 alone is too common)
        rule(
            r"(?P<d>\d{1,2})\s*[日号]\s*(?:之前|以前|前|为止)",
            |c| {
                let day = c["d"].parse().ok().filter(|d| (1..=31).contains(d))?;
                Some((When::DayOfMonth(day), true))
            },
        ),
        // by March 5, on Apr 1st
        rule(
            &format!(
                r"\b{EN_BOUND}(?:on\s+)?(?P<m>january|february|march|april|may|june|july|august|september|october|november|december|jan|feb|mar|apr|jun|jul|aug|sept?|oct|nov|dec)\.?\s+(?P<d>\d{{1,2}})(?:st|nd|rd|th)?\b"
            ),
            |c| {
                const MONTHS: [&str; 12] = [
                    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                    "dec",
                ];
                let month = MONTHS.iter().position(|m| c["m"].starts_with(m))? as u32 + 1;
                Some((
                    When::Date(month, c["d"].parse().ok()?),
                    c.name("b").is_some(),
                ))
            },
        ),
    ]
});

/// Verbs that make a sentence a promise wherever they are in it.
const CN_PROMISES: [&str; 7] = ["承诺", "答应", "保证", "确保", "约定", "说好", "许诺"];
static EN_PROMISE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(?:promise[ds]?|promising|commit(?:s|ted|ting)?|agree[ds]?|guarantee[ds]?)\b")
        .expect("a valid built-in pattern")
});
/// Words that put a part in the future.
const CN_MODALS: [&str; 9] = [
    "会", "将", "要", "准备", "计划", "打算", "负责", "争取", "需要",
];
static EN_MODAL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"\b(?:will|shall|going to|plans? to|planned to|needs? to|must|ha(?:ve|s) to)\b|['’]ll\b",
    )
    .expect("a valid built-in pattern")
});
/// Actions that, right after a deadline phrase, make it a plan: 明天给报价, 周三上门.
pub(crate) const ACTIONS: [&str; 27] = [
    "给",
    "发",
    "提供",
    "出",
    "交",
    "回复",
    "回电",
    "回访",
    "反馈",
    "提交",
    "送",
    "寄",
    "约",
    "联系",
    "上门",
    "拜访",
    "确认",
    "报价",
    "安排",
    "跟进",
    "演示",
    "签",
    "再",
    "补",
    "打电话",
    "电话",
    "复查",
];
static EN_PAST: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(?:yesterday|ago)\b").expect("a valid built-in pattern"));

/// A Chinese number up to 99 (`四十八`, `两`, `十二`) or digits.
fn cn_number(text: &str) -> Option<u32> {
    if let Ok(n) = text.parse() {
        return Some(n);
    }
    let digit = |c: char| {
        "零一二三四五六七八九"
            .chars()
            .position(|d| d == c)
            .map(|d| d as u32)
    };
    let chars: Vec<char> = text
        .chars()
        .map(|c| if c == '两' { '二' } else { c })
        .collect();
    match chars.as_slice() {
        [c] if *c == '十' => Some(10),
        [c] => digit(*c),
        ['十', one] => Some(10 + digit(*one)?),
        [ten, '十'] => Some(digit(*ten)? * 10),
        [ten, '十', one] => Some(digit(*ten)? * 10 + digit(*one)?),
        _ => None,
    }
}

fn en_number(text: &str) -> Option<u32> {
    const WORDS: [&str; 12] = [
        "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven",
        "twelve",
    ];
    match text {
        "a" | "an" => Some(1),
        _ => text
            .parse()
            .ok()
            .or_else(|| WORDS.iter().position(|w| *w == text).map(|i| i as u32 + 1)),
    }
}

/// `n` of a unit (Chinese or English) as a [`When`]; `None` for 0 or more than ten years.
fn duration(n: u32, unit: &str) -> Option<When> {
    let (when, max) = match unit {
        u if u.starts_with('h') || u == "小时" || u == "钟头" => (When::Hours(n), 87_600),
        u if u.contains("工作日") || u.starts_with("business") || u.starts_with("working") => {
            (When::Workdays(n), 2_600)
        }
        "天" | "日" => (When::Days(n), 3_650),
        u if u.starts_with("day") => (When::Days(n), 3_650),
        "周" | "星期" | "礼拜" => (When::Weeks(n), 520),
        u if u.starts_with("week") || u.starts_with("wk") => (When::Weeks(n), 520),
        _ => (When::Months(n), 120),
    };
    (1..=max).contains(&n).then_some(when)
}

impl NoteCommitments {
    /// Every promise with a deadline in `note`, written at `made_at` (UTC microseconds).
    pub(crate) fn extract(&self, note: &str, made_at: i64, zone: &Zone) -> Vec<Commitment> {
        let text = Folded::new(note);
        let mut found = Vec::new();
        for sentence in text.sentences() {
            let said = &text.folded[sentence.clone()];
            let promised =
                CN_PROMISES.iter().any(|v| said.contains(v)) || EN_PROMISE.is_match(said);
            let parts = text.parts(sentence);
            for (i, part) in parts.iter().enumerate() {
                let words = &text.folded[part.clone()];
                let Some((start, end, when, bound)) = first_deadline(words) else {
                    continue;
                };
                let past = words.contains('已')
                    || words
                        .match_indices('了')
                        .any(|(at, _)| !words[at..].starts_with("了解"))
                    || EN_PAST.is_match(words);
                if past && !promised {
                    continue;
                }
                let after = words[end..].trim_start();
                let planned = CN_MODALS.iter().any(|m| words.contains(m))
                    || EN_MODAL.is_match(words)
                    || ACTIONS.iter().any(|a| after.starts_with(a));
                if !(bound || promised || planned) {
                    continue;
                }
                let Some(deadline) = self.resolve(when, made_at, zone) else {
                    continue;
                };
                // "Will send the proposal, by Friday": a part that is only the deadline takes the
                // part before it along.
                let alone = !words[..start]
                    .chars()
                    .chain(words[end..].chars())
                    .any(char::is_alphanumeric);
                let from = match (alone, i) {
                    (true, 1..) => parts[i - 1].start,
                    _ => part.start,
                };
                found.push(Commitment {
                    deadline,
                    promise: text.original(from..part.end),
                });
            }
        }
        found
    }

    /// The instant `when` stands for, for a note written at `made_at`.
    fn resolve(&self, when: When, made_at: i64, zone: &Zone) -> Option<i64> {
        let day = zone.local_date(made_at);
        let weekday = day.weekday().num_days_from_monday();
        let monday = day - Duration::days(i64::from(weekday));
        let month_end = |first: NaiveDate, ahead: u32| {
            first.checked_add_months(Months::new(ahead + 1))?.pred_opt()
        };
        let first_of_month = day.with_day(1)?;
        let on_or_after = |date: NaiveDate| {
            if date < day {
                date.with_year(date.year() + 1)
            } else {
                Some(date)
            }
        };
        let date = match when {
            When::Hours(n) => return Some(made_at + i64::from(n) * 3_600_000_000),
            When::Days(n) => day + Duration::days(i64::from(n)),
            When::Weeks(n) => day + Duration::weeks(i64::from(n)),
            When::Months(n) => day.checked_add_months(Months::new(n))?,
            When::Workdays(n) => {
                let mut date = day;
                let mut left = n;
                // A calendar without working days never gets there: give up after ten years.
                for _ in 0..3_660 {
                    date = date.succ_opt()?;
                    if self.calendar.is_workday(date) {
                        left -= 1;
                        if left == 0 {
                            break;
                        }
                    }
                }
                (left == 0).then_some(date)?
            }
            When::Weekday(target, 0) => {
                let ahead = (7 + target.num_days_from_monday() - weekday) % 7;
                day + Duration::days(i64::from(ahead))
            }
            When::Weekday(target, weeks) => {
                monday + Duration::days(i64::from(7 * weeks + target.num_days_from_monday()))
            }
            When::WeekEnd(weeks) => monday + Duration::days(i64::from(7 * weeks + 6)),
            When::MonthEnd(ahead) => month_end(first_of_month, ahead)?,
            When::EndOfMonth(month) => {
                let first = NaiveDate::from_ymd_opt(day.year(), month, 1)?;
                let last = month_end(first, 0)?;
                if last < day {
                    month_end(first.with_year(day.year() + 1)?, 0)?
                } else {
                    last
                }
            }
            When::Date(month, d) => on_or_after(NaiveDate::from_ymd_opt(day.year(), month, d)?)?,
            When::DayOfMonth(d) => {
                let first = if d >= day.day() {
                    first_of_month
                } else {
                    first_of_month.checked_add_months(Months::new(1))?
                };
                let last = month_end(first, 0)?;
                first.with_day(d).unwrap_or(last)
            }
        };
        let end_of_day = date.and_time(NaiveTime::from_hms_opt(23, 59, 59)?);
        Some(local_to_utc(end_of_day, self.calendar.tz()))
    }
}

/// The first deadline phrase in `words`: (start, end, when, bound). The earliest match wins; of
/// two that start together, the longer (`下周一` over `下周`).
fn first_deadline(words: &str) -> Option<(usize, usize, When, bool)> {
    let mut best: Option<(usize, usize, When, bool)> = None;
    for rule in RULES.iter() {
        for captures in rule.pattern.captures_iter(words) {
            let whole = captures.get(0).expect("group 0 is the match");
            let better = best.is_none_or(|(start, end, ..)| {
                whole.start() < start || (whole.start() == start && whole.end() > end)
            });
            if !better {
                continue;
            }
            if let Some((when, bound)) = (rule.read)(&captures) {
                best = Some((whole.start(), whole.end(), when, bound));
                break;
            }
        }
    }
    best
}

/// A note folded for matching (half-width, lower case), with the way back to the original text:
/// folding keeps one character for one, so character `i` of one is character `i` of the other.
struct Folded<'a> {
    original: &'a str,
    folded: String,
    /// Byte offset in `original` of each byte offset in `folded` that starts a character, and
    /// of the end.
    to_original: Vec<usize>,
}

impl<'a> Folded<'a> {
    fn new(original: &'a str) -> Folded<'a> {
        let mut folded = String::with_capacity(original.len());
        let mut to_original = Vec::with_capacity(original.len() + 1);
        for (at, c) in original.char_indices() {
            let f = lower(half_width(c));
            to_original.resize(folded.len() + 1, at);
            folded.push(f);
        }
        to_original.resize(folded.len() + 1, original.len());
        Folded {
            original,
            folded,
            to_original,
        }
    }

    /// The sentences, as byte ranges of the folded text.
    fn sentences(&self) -> Vec<std::ops::Range<usize>> {
        let text = &self.folded;
        let mut out = Vec::new();
        let mut start = 0;
        let mut chars = text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            let end_here = matches!(c, '。' | '!' | '?' | ';' | '\n' | '\r')
                || (c == '.' && chars.peek().is_none_or(|(_, n)| n.is_whitespace()));
            if end_here {
                out.push(start..at);
                start = at + c.len_utf8();
            }
        }
        out.push(start..text.len());
        out.retain(|r| !r.is_empty());
        out
    }

    /// The parts of a sentence (cut at commas), as byte ranges of the folded text.
    fn parts(&self, sentence: std::ops::Range<usize>) -> Vec<std::ops::Range<usize>> {
        let mut out = Vec::new();
        let mut start = sentence.start;
        for (at, c) in self.folded[sentence.clone()].char_indices() {
            if matches!(c, ',' | '、') {
                out.push(start..sentence.start + at);
                start = sentence.start + at + c.len_utf8();
            }
        }
        out.push(start..sentence.end);
        out
    }

    /// The original text of a folded byte range, without the spaces and punctuation around it.
    fn original(&self, range: std::ops::Range<usize>) -> String {
        self.original[self.to_original[range.start]..self.to_original[range.end]]
            .trim_matches(|c: char| !c.is_alphanumeric())
            .to_string()
    }
}

/// The fields of one commitment, in the order the function returns them.
fn commitment_fields() -> Fields {
    Fields::from(vec![
        Field::new("deadline", utc_timestamp_type(), false),
        Field::new("promise", DataType::Utf8, false),
    ])
}

fn list_field() -> Arc<Field> {
    Arc::new(Field::new(
        "item",
        DataType::Struct(commitment_fields()),
        true,
    ))
}

impl ScalarUDFImpl for NoteCommitments {
    fn name(&self) -> &str {
        "note_commitments"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        coerce(SIGNATURE, args, &[text_type, timestamp_type])
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::List(list_field()))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        make_scalar_function(
            |arrays: &[ArrayRef]| {
                let tz = self.calendar.tz();
                let zone = Zone::new(tz);
                let made = instants(&arrays[1], tz, self.name())?;
                let fields: Vec<Box<dyn ArrayBuilder>> = vec![
                    Box::new(TimestampMicrosecondBuilder::new().with_timezone("UTC")),
                    Box::new(StringBuilder::new()),
                ];
                let mut list = ListBuilder::new(StructBuilder::new(commitment_fields(), fields))
                    .with_field(list_field());
                for (note, made) in texts(&arrays[0]).zip(made.iter()) {
                    let (Some(note), Some(made)) = (note, made) else {
                        list.append_null();
                        continue;
                    };
                    let entries = list.values();
                    for commitment in self.extract(note, made, &zone) {
                        entries
                            .field_builder::<TimestampMicrosecondBuilder>(0)
                            .expect("field 0 is the deadline")
                            .append_value(commitment.deadline);
                        entries
                            .field_builder::<StringBuilder>(1)
                            .expect("field 1 is the promise")
                            .append_value(commitment.promise);
                        entries.append(true);
                    }
                    list.append(true);
                }
                Ok(Arc::new(list.finish()) as ArrayRef)
            },
            vec![],
        )(&args.args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        static DOC: LazyLock<Documentation> = LazyLock::new(|| {
            Documentation::builder(
                DOC_SECTION,
                "The promises with a deadline in a note, in Chinese or English (rule-based: the \
                 README lists the phrases), as a list of {deadline, promise}: deadline a UTC \
                 timestamp, promise the part of the note that says it. A number of hours counts \
                 real hours from occurred_at; any other phrase names a local day in the \
                 configured timezone and the deadline is the end of that day (23:59:59): \
                 '明天'/'tomorrow' the next day, '3天内'/'within 3 days' the third day after, \
                 '3个工作日内' the third working day of the business calendar, '下周一'/'next \
                 Monday' the Monday of the next ISO week, '周五'/'by Friday' the first Friday on or \
                 after the note's day, '月底' the month's last day. A phrase counts when it is a \
                 bound (内, 前, within, by), the sentence has a promise verb (承诺, promised), the \
                 part a future modal (会, will) or an action follows (明天给报价); not when the \
                 part says it already happened (已, 了, yesterday). An empty list when there is \
                 none; NULL when either argument is NULL.",
                "note_commitments(note, occurred_at)",
            )
            .with_argument("note", "Free text, e.g. actions.note.")
            .with_argument(
                "occurred_at",
                "When the note was written (a timestamp, date or ISO 8601 text).",
            )
            .with_sql_example(
                "SELECT action_id, c['deadline'] AS deadline, c['promise'] AS promise\n\
                 FROM (SELECT action_id, unnest(note_commitments(note, occurred_at)) AS c FROM actions)",
            )
            .build()
        });
        Some(&DOC)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn chinese_numbers() {
        for (text, n) in [
            ("48", 48),
            ("两", 2),
            ("十", 10),
            ("十二", 12),
            ("二十", 20),
            ("四十八", 48),
        ] {
            assert_eq!(cn_number(text), Some(n), "{text}");
        }
        assert_eq!(cn_number("百"), None);
    }

    #[test]
    fn the_first_phrase_wins_and_the_longer_of_two() {
        let (start, end, when, bound) = first_deadline("下周一前回复").unwrap();
        assert_eq!((start, &"下周一前回复"[start..end]), (0, "下周一前"));
        assert_eq!((when, bound), (When::Weekday(Weekday::Mon, 1), true));
        assert_eq!(first_deadline("上周三拜访过"), None);
        assert_eq!(
            first_deadline("will send the proposal within 2 days").map(|d| d.2),
            Some(When::Days(2))
        );
    }

    /// Every phrase of the README's table, written on Wednesday 4 March 2026, 10:00 in Berlin.
    #[test]
    fn every_phrase_of_the_readme() {
        let config = Config::parse(
            "timezone: Europe/Berlin\nstages: [{ name: a }]\n",
            "test.yaml",
            std::path::PathBuf::from("."),
            |_| None,
        )
        .unwrap();
        let udf = NoteCommitments::new(Calendar::new(config.calendar.as_ref(), config.timezone));
        let tz = config.timezone;
        let zone = Zone::new(tz);
        let at = |day: &str, time: &str| {
            local_to_utc(
                chrono::NaiveDateTime::parse_from_str(
                    &format!("{day} {time}"),
                    "%Y-%m-%d %H:%M:%S",
                )
                .unwrap(),
                tz,
            )
        };
        let made = at("2026-03-04", "10:00:00");
        let hours = |n: i64| made + n * 3_600_000_000;
        let day = |d: &str| at(d, "23:59:59");
        for (note, deadline) in [
            ("承诺两个钟头内回复", hours(2)),
            ("48h内回复", hours(48)),
            ("will reply in 2 hrs", hours(2)),
            ("3日内回复", day("2026-03-07")),
            ("will reply in a day", day("2026-03-05")),
            ("两周内回复", day("2026-03-18")),
            ("will reply within 2 weeks", day("2026-03-18")),
            ("一个月内回复", day("2026-04-04")),
            ("3个工作日内提交", day("2026-03-09")),
            ("will submit it within 3 working days", day("2026-03-09")),
            ("今晚回复", day("2026-03-04")),
            ("will send it by EOD", day("2026-03-04")),
            ("will send it by COB", day("2026-03-04")),
            ("明早回复", day("2026-03-05")),
            ("will call the day after tomorrow", day("2026-03-06")),
            ("大后天回复", day("2026-03-07")),
            ("will call on Fri", day("2026-03-06")),
            ("will call this Friday", day("2026-03-06")),
            ("礼拜五前回复", day("2026-03-06")),
            ("周三前回复", day("2026-03-04")),
            ("下个星期一回复", day("2026-03-09")),
            ("下下周一回复", day("2026-03-16")),
            ("本周内回复", day("2026-03-08")),
            ("这周回复", day("2026-03-08")),
            ("周末前回复", day("2026-03-08")),
            ("will reply this week", day("2026-03-08")),
            ("will reply by the end of the week", day("2026-03-08")),
            ("will visit at the weekend", day("2026-03-08")),
            ("下周回复", day("2026-03-15")),
            ("下周末前回复", day("2026-03-15")),
            ("will reply next week", day("2026-03-15")),
            ("will reply by end of next week", day("2026-03-15")),
            ("月末前回复", day("2026-03-31")),
            ("本月内回复", day("2026-03-31")),
            ("will pay by month-end", day("2026-03-31")),
            ("will pay this month", day("2026-03-31")),
            ("下个月底前回复", day("2026-04-30")),
            ("下月内回复", day("2026-04-30")),
            ("will pay next month", day("2026-04-30")),
            ("will pay by the end of next month", day("2026-04-30")),
            ("3月底前回复", day("2026-03-31")),
            ("2月底前回复", day("2027-02-28")),
            ("3月5日前回复", day("2026-03-05")),
            ("will pay by Apr 1st", day("2026-04-01")),
            ("30日之前回复", day("2026-03-30")),
            ("3号前回复", day("2026-04-03")),
        ] {
            let found = udf.extract(note, made, &zone);
            assert_eq!(
                found.iter().map(|c| c.deadline).collect::<Vec<_>>(),
                vec![deadline],
                "{note}: {found:?}"
            );
        }
    }

    #[test]
    fn the_folded_text_maps_back_to_the_original() {
        let text = Folded::new("Ｗill send，ＢＹ Friday！");
        assert_eq!(text.folded, "will send,by friday!");
        assert_eq!(text.sentences(), vec![0..19]);
        let parts = text.parts(0..19);
        assert_eq!(text.original(parts[1].clone()), "ＢＹ Friday");
    }
}
