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

fn requests(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("requests.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn alerts_fire_once_signed_retried_and_escalated() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let dir_arg = dir.path().to_str().unwrap().to_string();
    let _hooks = Server::start(
        "webhook_server.py",
        &[&dir_arg, &port.to_string(), "SECabc", "--fail-first", "1"],
    );

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
