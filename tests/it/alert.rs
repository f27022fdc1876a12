//! `flowhealth alerts` against a webhook receiver on loopback that checks DingTalk's signature
//! itself (tests/support/webhook_server.py): the once-only rule, retries, escalation, and a
//! wrong secret.

use std::path::Path;

use crate::common::{Server, free_port};
use crate::metrics::{fixture_with, ok, run};

/// The end of week 2026-W13 in Berlin.
const AS_OF: &str = "2026-03-30T00:00:00+02:00";

fn config(port: u16, secret: &str) -> String {
    format!(
        "alerts:
  webhooks:
    - {{ name: supervisors, kind: dingtalk, url: \"http://127.0.0.1:{port}/dingtalk/send?access_token=t0k\", secret: \"{secret}\" }}
    - {{ name: directors, kind: json, url: \"http://127.0.0.1:{port}/json\" }}
  notify: [supervisors]
  escalate: {{ after_h: 24, webhooks: [directors] }}
  deadlines:
    - {{ name: demo_feedback_48h, after: demo, expect: demo_feedback, within_h: 48 }}
  retry: {{ attempts: 2, backoff_s: 0.1 }}
"
    )
}

/// The webhook receiver (tests/support/webhook_server.py) on a free loopback port, logging to a
/// temporary folder: (that folder, the port, the server). `args` follow the port: the DingTalk
/// secret, then options.
pub fn receiver(args: &[&str]) -> (tempfile::TempDir, u16, Server) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let dir_arg = dir.path().to_str().unwrap().to_string();
    let port_arg = port.to_string();
    let mut all = vec![dir_arg.as_str(), port_arg.as_str()];
    all.extend_from_slice(args);
    let server = Server::start("webhook_server.py", &all);
    (dir, port, server)
}

pub fn requests(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("requests.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn alerts_fire_once_signed_retried_and_escalated() {
    let (dir, port, _hooks) = receiver(&["SECabc", "--fail-first", "1"]);

    // A wrong secret: DingTalk refuses the signature; nothing is marked sent (exit 1).
    let wrong = fixture_with(&config(port, "not-the-secret"));
    let output = run(&wrong, &["alerts", "--as-of", AS_OF]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("sign not match"), "{stdout}");
    let refused = requests(dir.path());
    assert_eq!(refused.len(), 2, "the 500, then the refused signature");
    assert_eq!(refused[1]["sign_ok"], false);

    let ws = fixture_with(&config(port, "SECabc"));
    let first = ok(&ws, &["alerts", "--as-of", AS_OF]);
    assert!(first.contains("5 open, 5 sent, 0 escalated"), "{first}");
    let sent = requests(dir.path());
    assert_eq!(sent.len(), 3);
    let message = &sent[2];
    assert_eq!(message["path"], "/dingtalk/send");
    assert_eq!(message["query"]["access_token"], "t0k");
    assert_eq!(
        message["sign_ok"], true,
        "the signature checks out independently"
    );
    let text = message["body"]["markdown"]["text"].as_str().unwrap();
    // The hand-worked week: O4, O1 and O2 are past their silent timeout at the week's end; the
    // demos of O2 (27 March) and O4 (24 March) had no feedback within 48 h; O5's demo (29 March)
    // is not due yet and O1's (20 March) was due more than the 7-day lookback ago.
    for needle in [
        "O4 (north, R2) silent_timeout",
        "O1 (east, R1) silent_timeout",
        "O2 (east, R1) silent_timeout",
        "O2 (east, R1) demo_feedback_48h",
        "O4 (north, R2) demo_feedback_48h",
    ] {
        assert!(text.contains(needle), "{needle} in\n{text}");
    }
    assert!(!text.contains("O5") && !text.contains("O3"), "{text}");

    // The same hour again: nothing new is sent.
    let again = ok(&ws, &["alerts", "--as-of", AS_OF]);
    assert!(again.contains("5 open, 0 sent"), "{again}");
    assert_eq!(requests(dir.path()).len(), 3);

    // 25 hours later: O1's call at 00:30 on 30 March ended its silence (resolved); the other
    // four are still open and go to the directors, once.
    let later = ok(&ws, &["alerts", "--as-of", "2026-03-31T01:00:00+02:00"]);
    assert!(
        later.contains("4 open, 0 sent, 4 escalated, 1 resolved"),
        "{later}"
    );
    let all = requests(dir.path());
    assert_eq!(all.len(), 4);
    assert_eq!(all[3]["path"], "/json");
    let escalated: Vec<&str> = all[3]["body"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["key"].as_str().unwrap())
        .collect();
    assert_eq!(escalated.len(), 4);
    assert!(
        !escalated
            .iter()
            .any(|k| k.starts_with("silent_timeout:O1:")),
        "{escalated:?}"
    );
    assert!(
        all[3]["body"]["text"]
            .as_str()
            .unwrap()
            .starts_with("flowhealth escalation: 4 alerts")
    );
    let again = ok(&ws, &["alerts", "--as-of", "2026-03-31T02:00:00+02:00"]);
    assert!(again.contains("0 sent, 0 escalated"), "{again}");
    assert_eq!(requests(dir.path()).len(), 4);
}

#[test]
fn without_webhooks_alerts_are_listed_not_sent() {
    let ws = fixture_with("");
    let out = ok(&ws, &["alerts", "--as-of", AS_OF]);
    assert!(out.contains("3 open"), "the three silent timeouts: {out}");
    assert!(
        out.contains("(not sent) O4 silent_timeout: lead: silent 131.0 h, timeout 48 h"),
        "{out}"
    );
}

/// Every channel kind at once: east's alerts go to its route (DingTalk and Slack), the others to
/// the default channels (WeCom markdown and text, Feishu, JSON), each in its vendor's shape,
/// signed where the vendor signs, mentioning the owner; a channel that fails is retried alone.
fn channels_config(port: u16, feishu_secret: &str) -> String {
    let url = |path: &str| format!("http://127.0.0.1:{port}{path}");
    format!(
        "alerts:
  webhooks:
    - {{ name: east-ding, kind: dingtalk, url: \"{}\", secret: SECabc }}
    - {{ name: east-slack, kind: slack, url: \"{}\" }}
    - {{ name: wecom-md, kind: wecom, url: \"{}\" }}
    - {{ name: wecom-text, kind: wecom, format: text, url: \"{}\" }}
    - {{ name: lark, kind: feishu, url: \"{}\", secret: \"{feishu_secret}\" }}
    - {{ name: bi, kind: json, url: \"{}\" }}
  routes: {{ east: [east-ding, east-slack] }}
  notify: [wecom-md, wecom-text, lark, bi]
  owners:
    R1: {{ dingtalk: ding-r1, wecom: wecom-r1, feishu: ou_r1, slack: U0R1 }}
    R2: {{ mobile: \"13800000002\", wecom: wecom-r2, feishu: ou_r2, slack: U0R2 }}
  max_items: 3
  deadlines:
    - {{ name: demo_feedback_48h, after: demo, expect: demo_feedback, within_h: 48 }}
  retry: {{ attempts: 1, backoff_s: 0 }}
",
        url("/dingtalk/robot/send?access_token=t0k"),
        url("/slack/services/T0/B0/s3cr3t"),
        url("/wecom/cgi-bin/webhook/send?key=k3y"),
        url("/wecom/cgi-bin/webhook/send?key=k3y"),
        url("/feishu/open-apis/bot/v2/hook/t0k3n"),
        url("/json"),
    )
}

#[test]
fn every_channel_gets_its_vendors_format_routed_signed_and_mentioning_the_owner() {
    let (dir, port, _hooks) = receiver(&["SECabc", "--feishu-secret", "LARKsec"]);
    // Feishu's secret is wrong at first: that channel fails, the others do not.
    let ws = fixture_with(&channels_config(port, "not-it"));
    // A promise in a note on O2: "明天给报价" on Wednesday 25 March, due by the end of Thursday;
    // O2's next action is the demo on Friday: broken.
    ws.inbox(
        "actions/notes.csv",
        "action_id,occurred_at,owner_id,team,opportunity_id,action_type,note\nN1,2026-03-25 10:00:00,R1,east,O2,call,明天给报价\n",
    );
    ok(&ws, &["ingest"]);
    let output = run(&ws, &["alerts", "--as-of", AS_OF]);
    assert_eq!(output.status.code(), Some(1), "lark fails");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("6 open, 4 sent"), "{stdout}");
    assert!(
        stdout.contains("FAILED webhook lark: Feishu code 19021: sign match fail"),
        "{stdout}"
    );
    // Nothing prints the channels' tokens.
    for token in ["t0k", "k3y", "s3cr3t", "t0k3n", "not-it"] {
        assert!(!stdout.contains(token), "{token} in {stdout}");
    }

    let sent = requests(dir.path());
    let to = |prefix: &str| -> Vec<&serde_json::Value> {
        sent.iter()
            .filter(|r| r["path"].as_str().unwrap().starts_with(prefix))
            .collect()
    };
    assert_eq!(sent.len(), 6, "one message per channel: {sent:#?}");
    for record in &sent {
        if record["path"] != "/json" {
            assert_eq!(record["shape_ok"], true, "{record:#}");
        }
    }

    // East's four alerts (O1, O2 silent; O2's demo without feedback; O2's broken promise) go to
    // its route only: three listed, one more counted.
    let ding = to("/dingtalk")[0];
    assert_eq!(ding["sign_ok"], true);
    assert_eq!(
        ding["body"]["at"]["atUserIds"],
        serde_json::json!(["ding-r1"])
    );
    let text = ding["body"]["markdown"]["text"].as_str().unwrap();
    assert!(
        text.starts_with("### flowhealth: 4 key actions overdue"),
        "{text}"
    );
    assert_eq!(text.matches(" @ding-r1\n").count(), 3, "{text}");
    assert!(text.contains("… and 1 more"), "{text}");
    assert!(
        !text.contains("O4"),
        "north's alerts are not east's: {text}"
    );
    let slack = to("/slack")[0];
    let section = slack["body"]["blocks"][1]["text"]["text"].as_str().unwrap();
    assert_eq!(section.matches("<@U0R1>").count(), 3, "{section}");
    assert_eq!(
        slack["body"]["blocks"][0]["text"]["text"],
        "flowhealth: 4 key actions overdue"
    );
    // The promise: alerts list silent timeouts, broken promises, then deadlines.
    assert!(
        text.contains(
            "O2 (east, R1) broken_commitment: promised \"明天给报价\" by 2026-03-26 23:59"
        ),
        "{text}"
    );
    assert!(
        !text.contains("demo_feedback_48h"),
        "the fourth is counted: {text}"
    );

    // North's two alerts (O4) go to the default channels, mentioning R2.
    let wecom = to("/wecom");
    assert_eq!(wecom.len(), 2);
    let markdown = wecom
        .iter()
        .find(|r| r["body"]["msgtype"] == "markdown")
        .unwrap();
    let content = markdown["body"]["markdown"]["content"].as_str().unwrap();
    assert!(
        content.starts_with("### flowhealth: 2 key actions overdue"),
        "{content}"
    );
    assert_eq!(content.matches(" <@wecom-r2>").count(), 2, "{content}");
    let plain = wecom
        .iter()
        .find(|r| r["body"]["msgtype"] == "text")
        .unwrap();
    assert_eq!(
        plain["body"]["text"]["mentioned_list"],
        serde_json::json!(["wecom-r2"])
    );
    let lark = to("/feishu")[0];
    assert_eq!(lark["sign_ok"], false, "the wrong secret");
    let json = to("/json")[0];
    assert_eq!(json["body"]["alerts"].as_array().unwrap().len(), 2);

    // The right secret: only Feishu is sent to again, the four others are not.
    std::fs::write(
        ws.path().join("config.yaml"),
        std::fs::read_to_string(ws.path().join("config.yaml"))
            .unwrap()
            .replace("secret: \"not-it\"", "secret: \"LARKsec\""),
    )
    .unwrap();
    let again = ok(&ws, &["alerts", "--as-of", AS_OF]);
    assert!(again.contains("6 open, 2 sent"), "{again}");
    let all = requests(dir.path());
    assert_eq!(all.len(), 7, "{all:#?}");
    let lark = &all[6];
    assert!(lark["path"].as_str().unwrap().starts_with("/feishu"));
    assert_eq!(lark["sign_ok"], true);
    let post = &lark["body"]["content"]["post"]["zh_cn"];
    assert_eq!(post["title"], "flowhealth: 2 key actions overdue");
    assert_eq!(
        post["content"][0][2],
        serde_json::json!({ "tag": "at", "user_id": "ou_r2" })
    );
    let once_more = ok(&ws, &["alerts", "--as-of", AS_OF]);
    assert!(once_more.contains("6 open, 0 sent"), "{once_more}");
    assert_eq!(requests(dir.path()).len(), 7);
}
