//! A simulated organisation: reps moving opportunities through the configured stages and a retail
//! chain logging its three daily store actions, over `weeks` weeks ending on `until`. Everything
//! comes from one seeded RNG, visited in a fixed order, so the same seed gives the same data.
//!
//! Planted, in proportions close to the article's: stage skips (some reps skip habitually),
//! silent stays (no follow-up for days), missing evidence, late entry (reps who log days later),
//! late or missing demo feedback, stores with 7+ day streaks of zero chronic follow-ups,
//! month-end bunching of high-margin recommendations, sign-ups far from the WeChat follow time,
//! chronic follow-ups on stale test reports, stores that fill their follow-up notes from one
//! template (the article's 37 of 1,286: every 35th store), a rep who does the same, promises in
//! the reps' notes (kept or not, as the simulation has it), and a handful of malformed rows.

use chrono::{Duration, NaiveDate, NaiveDateTime, NaiveTime};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::config::Config;

pub const TEAMS: [&str; 4] = ["east", "north", "south", "hospital"];
const INDUSTRIES: [&str; 5] = ["hospital", "pharmacy", "clinic", "insurance", "retail"];

#[derive(Debug, Clone)]
pub struct Action {
    pub action_id: String,
    pub occurred_at: NaiveDateTime,
    pub recorded_at: NaiveDateTime,
    pub owner_id: String,
    pub team: String,
    pub opportunity_id: Option<String>,
    pub customer_id: Option<String>,
    pub store_id: Option<String>,
    pub action_type: String,
    pub evidence: Option<String>,
    pub note: Option<String>,
    pub attrs: Option<serde_json::Value>,
}

#[derive(Debug, Clone)]
pub struct StageChange {
    pub opportunity_id: String,
    pub from_stage: Option<String>,
    pub to_stage: String,
    pub changed_at: NaiveDateTime,
    pub owner_id: String,
}

#[derive(Debug, Clone)]
pub struct Opportunity {
    pub opportunity_id: String,
    pub customer_id: String,
    pub owner_id: String,
    pub team: String,
    pub industry: String,
    pub amount: f64,
    pub created_at: NaiveDateTime,
    /// Final stage reached by `until` (the CRM's "deal stage").
    pub stage: String,
    pub status: &'static str,
    pub closed_at: Option<NaiveDateTime>,
}

#[derive(Debug, Default)]
pub struct Organisation {
    pub opportunities: Vec<Opportunity>,
    pub stage_changes: Vec<StageChange>,
    pub crm_actions: Vec<Action>,
    pub store_actions: Vec<Action>,
}

pub struct DemoSize {
    pub seed: u64,
    pub stores: usize,
    pub reps: usize,
    pub weeks: u32,
    pub until: NaiveDate,
}

struct Rep {
    id: String,
    team: &'static str,
    skip_rate: f64,
    evidence_rate: f64,
    silent_rate: f64,
    late_entry: bool,
}

pub fn generate(config: &Config, size: &DemoSize) -> Organisation {
    let mut rng = ChaCha8Rng::seed_from_u64(size.seed);
    let end = (size.until + Duration::days(1)).and_time(NaiveTime::MIN);
    let start = end - Duration::weeks(i64::from(size.weeks));
    let mut org = Organisation::default();
    let reps: Vec<Rep> = (0..size.reps)
        .map(|i| {
            let sloppy = rng.random_bool(0.3);
            Rep {
                id: format!("R{:03}", i + 1),
                team: TEAMS[i % TEAMS.len()],
                skip_rate: if sloppy { 0.18 } else { 0.02 },
                evidence_rate: if sloppy { 0.65 } else { 0.95 },
                silent_rate: if rng.random_bool(0.35) { 0.35 } else { 0.06 },
                late_entry: rng.random_bool(0.25),
            }
        })
        .collect();
    let flow = Flow::from_config(config);
    let mut next_action = 0u64;
    for rep in &reps {
        let mut day = start;
        while day < end {
            // About two new opportunities per rep per week.
            day += Duration::hours(rng.random_range(24..=144));
            if day >= end {
                break;
            }
            let index = org.opportunities.len() + 1;
            let created = work_time(&mut rng, day.date());
            simulate_opportunity(
                &mut rng,
                &flow,
                rep,
                index,
                created,
                end,
                &mut org,
                &mut next_action,
            );
        }
    }
    simulate_stores(&mut rng, config, size, start, end, &mut org);
    plant_notes(&mut org, size.seed);
    org
}

/// The stores that fill their chronic follow-up notes from one template: every 35th, so that a
/// chain of 1,286 has the article's 37 (and a demo of a few stores has one, the second).
pub fn templated_store(index: usize) -> bool {
    index % 35 == 1
}

/// The rep who logs every call with one template phrase.
pub const TEMPLATED_REP: &str = "R003";

/// Notes on the reps' calls and visits (promises among them) and on the stores' chronic
/// follow-ups. They come from an RNG of their own, after the simulation, so that adding them
/// left every other generated value as it was.
fn plant_notes(org: &mut Organisation, seed: u64) {
    const PROMISES: [&str; 8] = [
        "承诺48小时内出服务方案",
        "明天给报价",
        "客户要求下周一前回复",
        "Will send the proposal within 2 days",
        "答应周五前安排演示",
        "3个工作日内提交合同草案",
        "Promised to call back tomorrow",
        "月底前确认采购预算",
    ];
    // Remarks are a contact and a topic, so that a rep's genuine notes differ from each other.
    const CONTACTS: [&str; 8] = [
        "采购王经理",
        "院办李主任",
        "药剂科张老师",
        "财务陈总",
        "设备科刘工",
        "信息科赵主任",
        "the buyer",
        "the clinic manager",
    ];
    const TOPICS: [&str; 8] = [
        "关注价格和付款方式",
        "在比较竞品方案",
        "想先看同类医院的案例",
        "问了保险控费的做法",
        "介绍了新的决策流程",
        "对培训安排有疑问",
        "asked about the rollout plan",
        "wants references from other hospitals",
    ];
    const PEOPLE: [&str; 12] = [
        "王阿姨",
        "李叔叔",
        "张先生",
        "赵女士",
        "陈大爷",
        "刘阿姨",
        "杨先生",
        "黄女士",
        "周大爷",
        "吴阿姨",
        "徐先生",
        "孙女士",
    ];
    const FINDINGS: [&str; 8] = [
        "血压{}/{}",
        "空腹血糖{}.{}",
        "血压{}/{}偏高",
        "餐后血糖{}.{}",
        "头晕，血压{}/{}",
        "睡眠不好，血压{}/{}",
        "血糖{}.{}，体重下降",
        "心率{}，血压正常{}",
    ];
    const ADVICE: [&str; 10] = [
        "建议低盐饮食",
        "提醒按时服药",
        "建议去医院复查",
        "调整用药时间",
        "推荐家用血压计",
        "提醒少吃主食",
        "建议每天散步半小时",
        "推荐钙片和维生素D",
        "叮嘱戒烟限酒",
        "已登记用药记录",
    ];
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6e6f_7465_735f_7631);
    for action in &mut org.crm_actions {
        if action.note.is_some() || !matches!(action.action_type.as_str(), "call" | "visit") {
            continue;
        }
        action.note = if action.owner_id == TEMPLATED_REP && action.action_type == "call" {
            Some("已电话回访，客户暂无新需求".into())
        } else if rng.random_bool(0.2) {
            Some(PROMISES[rng.random_range(0..PROMISES.len())].into())
        } else if rng.random_bool(0.4) {
            Some(format!(
                "{}{}{}",
                CONTACTS[rng.random_range(0..CONTACTS.len())],
                if rng.random_bool(0.5) { "：" } else { " " },
                TOPICS[rng.random_range(0..TOPICS.len())]
            ))
        } else {
            None
        };
    }
    for action in &mut org.store_actions {
        if action.action_type != "chronic_followup" {
            continue;
        }
        let store = action
            .store_id
            .as_deref()
            .and_then(|s| s.trim_start_matches('S').parse::<usize>().ok());
        let (high, low) = (rng.random_range(118..168), rng.random_range(72..102));
        action.note = Some(if store.is_some_and(|n| templated_store(n - 1)) {
            format!("血压{high}/{low}，建议低盐饮食，按时服药")
        } else {
            let finding = FINDINGS[rng.random_range(0..FINDINGS.len())]
                .replacen("{}", &high.to_string(), 1)
                .replacen("{}", &low.to_string(), 1);
            format!(
                "{}{finding}，{}",
                PEOPLE[rng.random_range(0..PEOPLE.len())],
                ADVICE[rng.random_range(0..ADVICE.len())]
            )
        });
    }
}

/// The configured stages as the simulation uses them.
struct Flow {
    open: Vec<String>,
    entry: Vec<String>,
    won: Option<String>,
    lost: Option<String>,
}

impl Flow {
    fn from_config(config: &Config) -> Flow {
        Flow {
            open: config
                .stages
                .iter()
                .filter(|s| !s.terminal)
                .map(|s| s.name.clone())
                .collect(),
            entry: config
                .stages
                .iter()
                .filter(|s| s.entry && !s.terminal)
                .map(|s| s.name.clone())
                .collect(),
            won: config
                .stages
                .iter()
                .find(|s| s.terminal && !s.from_any)
                .map(|s| s.name.clone()),
            lost: config
                .stages
                .iter()
                .find(|s| s.terminal && s.from_any)
                .map(|s| s.name.clone()),
        }
    }
}

/// A random moment of the working day (08:30-19:30).
fn work_time(rng: &mut ChaCha8Rng, day: NaiveDate) -> NaiveDateTime {
    day.and_time(NaiveTime::MIN) + Duration::minutes(rng.random_range(510..1170))
}

#[allow(clippy::too_many_arguments)]
fn simulate_opportunity(
    rng: &mut ChaCha8Rng,
    flow: &Flow,
    rep: &Rep,
    index: usize,
    created: NaiveDateTime,
    end: NaiveDateTime,
    org: &mut Organisation,
    next_action: &mut u64,
) {
    let id = format!("OPP-{index:05}");
    let customer = format!("C{:05}", rng.random_range(1..=4000));
    let industry = if rep.team == "hospital" {
        "hospital"
    } else {
        INDUSTRIES[rng.random_range(0..INDUSTRIES.len())]
    };
    // Where the opportunity is created: the first stage, an entry stage, or (a planted skip)
    // straight into a later stage.
    let mut at = if !flow.entry.is_empty() && rng.random_bool(0.2) {
        flow.open
            .iter()
            .position(|s| *s == flow.entry[0])
            .unwrap_or(0)
    } else if rng.random_bool(rep.skip_rate / 2.0) {
        2.min(flow.open.len() - 1)
    } else {
        0
    };
    let mut from: Option<String> = None;
    let mut when = created;
    let mut status = "open";
    let mut closed_at = None;
    let mut stage = flow.open[at].clone();
    loop {
        org.stage_changes.push(StageChange {
            opportunity_id: id.clone(),
            from_stage: from.clone(),
            to_stage: stage.clone(),
            changed_at: when,
            owner_id: rep.id.clone(),
        });
        if status != "open" {
            break;
        }
        // The stay in this stage: usually a day or three with regular follow-up; a silent one
        // lasts for days with a single action at the start.
        let silent = rng.random_bool(rep.silent_rate);
        let dwell = Duration::minutes(if silent {
            rng.random_range(80 * 60..200 * 60)
        } else {
            rng.random_range(10 * 60..60 * 60)
        });
        let leave = when + dwell;
        stay_actions(
            rng,
            rep,
            &id,
            &customer,
            &stage,
            when,
            leave.min(end),
            silent,
            org,
            next_action,
        );
        if leave >= end {
            break;
        }
        from = Some(stage.clone());
        when = leave;
        if let Some(lost) = flow.lost.as_ref().filter(|_| rng.random_bool(0.07)) {
            stage = lost.clone();
            status = "lost";
            closed_at = Some(when);
        } else if at + 1 >= flow.open.len() {
            match &flow.won {
                Some(won) => {
                    stage = won.clone();
                    status = "won";
                    closed_at = Some(when);
                }
                None => break,
            }
        } else {
            at += if at + 2 < flow.open.len() && rng.random_bool(rep.skip_rate) {
                2
            } else {
                1
            };
            stage = flow.open[at].clone();
        }
    }
    org.opportunities.push(Opportunity {
        opportunity_id: id,
        customer_id: customer,
        owner_id: rep.id.clone(),
        team: rep.team.to_string(),
        industry: industry.to_string(),
        amount: f64::from(rng.random_range(20..800u32)) * 250.0,
        created_at: created,
        stage,
        status,
        closed_at,
    });
}

#[allow(clippy::too_many_arguments)]
fn stay_actions(
    rng: &mut ChaCha8Rng,
    rep: &Rep,
    opportunity: &str,
    customer: &str,
    stage: &str,
    from: NaiveDateTime,
    until: NaiveDateTime,
    silent: bool,
    org: &mut Organisation,
    next_action: &mut u64,
) {
    let main_action = match stage {
        "demo" => "demo",
        "proposal" => "proposal_sent",
        "contract_approval" => "contract_submitted",
        "qualified" | "negotiation" => "visit",
        _ => "call",
    };
    let mut at = from + Duration::minutes(rng.random_range(20..240));
    let mut first = true;
    while at < until {
        let action_type = if first {
            main_action
        } else if rng.random_bool(0.6) {
            "call"
        } else {
            "visit"
        };
        push_crm_action(
            rng,
            rep,
            opportunity,
            customer,
            action_type,
            at,
            org,
            next_action,
        );
        if first && action_type == "demo" {
            // The article's rule: customer feedback within 48 h of the demo; some come late or never.
            let roll: f64 = rng.random();
            if !(0.8..0.92).contains(&roll) {
                let hours = if roll < 0.8 {
                    rng.random_range(3..40)
                } else {
                    rng.random_range(60..110)
                };
                let feedback = at + Duration::hours(hours);
                if feedback < until {
                    push_crm_action(
                        rng,
                        rep,
                        opportunity,
                        customer,
                        "demo_feedback",
                        feedback,
                        org,
                        next_action,
                    );
                }
            }
        }
        if silent {
            break;
        }
        first = false;
        at += Duration::minutes(rng.random_range(10 * 60..40 * 60));
    }
}

#[allow(clippy::too_many_arguments)]
fn push_crm_action(
    rng: &mut ChaCha8Rng,
    rep: &Rep,
    opportunity: &str,
    customer: &str,
    action_type: &str,
    at: NaiveDateTime,
    org: &mut Organisation,
    next_action: &mut u64,
) {
    *next_action += 1;
    let lag = if rep.late_entry && rng.random_bool(0.7) {
        Duration::minutes(rng.random_range(24 * 60..5 * 24 * 60))
    } else {
        Duration::minutes(rng.random_range(1..90))
    };
    let evidence = rng
        .random_bool(rep.evidence_rate)
        .then(|| format!("att://{}/{}", opportunity, *next_action));
    let note = match action_type {
        "demo_feedback" => Some("客户反馈：关注保险控费方案".to_string()),
        "proposal_sent" => Some("promised a service plan within 48 h".to_string()),
        _ => None,
    };
    org.crm_actions.push(Action {
        action_id: format!("A{:07}", *next_action),
        occurred_at: at,
        recorded_at: at + lag,
        owner_id: rep.id.clone(),
        team: rep.team.to_string(),
        opportunity_id: Some(opportunity.to_string()),
        customer_id: Some(customer.to_string()),
        store_id: None,
        action_type: action_type.to_string(),
        evidence,
        note,
        attrs: None,
    });
}

fn simulate_stores(
    rng: &mut ChaCha8Rng,
    config: &Config,
    size: &DemoSize,
    start: NaiveDateTime,
    end: NaiveDateTime,
    org: &mut Organisation,
) {
    let types: Vec<String> = config.rules.store_actions.keys().cloned().collect();
    let days = (end - start).num_days();
    let mut next = 0u64;
    for s in 0..size.stores {
        let store = format!("S{:04}", s + 1);
        let manager = format!("M{:04}", s + 1);
        let team = TEAMS[s % 3];
        // Planted: a 7-10 day streak with no chronic follow-ups (bulk template filling), and
        // month-end bunching of high-margin recommendations.
        let zero_streak = (s % 9 == 4).then(|| {
            let first = rng.random_range(0..(days - 10).max(1));
            (first, first + rng.random_range(7..=10))
        });
        let bunching = s % 7 == 3;
        let lax = rng.random_bool(0.2);
        for day in 0..days {
            let date = (start + Duration::days(day)).date();
            for action_type in &types {
                let mut count = if rng.random_bool(if lax { 0.3 } else { 0.05 }) {
                    0
                } else {
                    rng.random_range(1..=3)
                };
                if action_type == "chronic_followup"
                    && zero_streak.is_some_and(|(a, b)| (a..b).contains(&day))
                {
                    count = 0;
                }
                if action_type == "high_margin_recommendation" && bunching {
                    count = if (25..=28).contains(&chrono::Datelike::day(&date)) {
                        rng.random_range(3..=6)
                    } else {
                        u32::from(rng.random_bool(0.1))
                    };
                }
                for _ in 0..count {
                    next += 1;
                    let at = work_time(rng, date);
                    let attrs = store_attrs(rng, action_type, at);
                    org.store_actions.push(Action {
                        action_id: format!("SA{:08}", next),
                        occurred_at: at,
                        recorded_at: at + Duration::minutes(rng.random_range(0..30)),
                        owner_id: manager.clone(),
                        team: team.to_string(),
                        opportunity_id: None,
                        customer_id: Some(format!("M{:06}", rng.random_range(1..=60000))),
                        store_id: Some(store.clone()),
                        action_type: action_type.clone(),
                        evidence: rng
                            .random_bool(0.9)
                            .then(|| format!("img://{store}/{next}.jpg")),
                        note: None,
                        attrs,
                    });
                }
            }
        }
    }
}

fn store_attrs(
    rng: &mut ChaCha8Rng,
    action_type: &str,
    at: NaiveDateTime,
) -> Option<serde_json::Value> {
    let iso = |t: NaiveDateTime| t.format("%Y-%m-%dT%H:%M:%S").to_string();
    match action_type {
        "member_signup" => {
            // Most sign-ups follow the WeChat account within minutes; some are far apart.
            let gap = if rng.random_bool(0.12) {
                rng.random_range(16..240)
            } else {
                rng.random_range(0..10)
            };
            Some(
                json!({ "wechat_followed_at": iso(at - Duration::minutes(gap)), "id_verified": true }),
            )
        }
        "chronic_followup" => {
            let roll: f64 = rng.random();
            let mut attrs = json!({ "bp": format!("{}/{}", rng.random_range(110..165), rng.random_range(70..100)) });
            if roll < 0.9 {
                let age = if roll < 0.78 {
                    rng.random_range(1..29)
                } else {
                    rng.random_range(31..120)
                };
                attrs["last_report_date"] = json!(
                    (at.date() - Duration::days(age))
                        .format("%Y-%m-%d")
                        .to_string()
                );
            }
            Some(attrs)
        }
        "high_margin_recommendation" => {
            Some(json!({ "sku": format!("HM{:03}", rng.random_range(1..80)) }))
        }
        _ => None,
    }
}
