//! `flowhealth validate` and configuration loading, through the binary as users run it.

use crate::common::Workspace;

#[test]
fn the_shipped_config_validates() {
    let root = env!("CARGO_MANIFEST_DIR");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_flowhealth"))
        .args(["--config", &format!("{root}/config.yaml"), "validate"])
        .env_remove("FLOWHEALTH_LAKE")
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("config.yaml: ok (8 stages"), "{stdout}");
    // The four shipped pipelines load too.
    assert!(stdout.contains(", 4 pipelines,"), "{stdout}");
}

#[test]
fn validate_reports_every_problem_with_file_and_key_and_exits_2() {
    let ws = Workspace::new(
        "datasets:
  actions:
    columns: { action_idd: ID }
    encoding: klingon
    timestamp_formats: ['%Q']
thresholds:
  evidence_rate: { min: 0.9, max: 0.5 }
email:
  transport: smtp
  to: [not-an-address]
  smtp: { host: mail, tls: sometimes, password: hunter2-secret }
surprise: true
",
    );
    let output = ws.command().arg("validate").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    // serde stops a section at its first problem, so encoding is reported before the others of
    // `datasets`; every other section is still checked.
    for expected in [
        "config.yaml: datasets.actions.encoding: unknown encoding label `klingon`",
        "config.yaml: surprise: unknown setting",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
    assert!(
        !stderr.contains("hunter2"),
        "a secret was printed:\n{stderr}"
    );

    std::fs::write(
        ws.path().join("config.yaml"),
        format!(
            "{}datasets:\n  actions:\n    columns: {{ action_idd: ID }}\n    timestamp_formats: ['%Q']\nthresholds:\n  evidence_rate: {{ min: 0.9, max: 0.5 }}\n\
             email:\n  transport: smtp\n  to: [not-an-address]\n  smtp: {{ host: mail, tls: sometimes, password: hunter2-secret }}\n",
            crate::common::STAGES
        ),
    )
    .unwrap();
    let output = ws.command().arg("validate").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2));
    for expected in [
        "6 problem(s)",
        "config.yaml: datasets.actions.columns.action_idd: not a column of actions",
        "config.yaml: datasets.actions.timestamp_formats[0]: `%Q` is not a valid strftime pattern",
        "config.yaml: thresholds.evidence_rate: min 0.9 is above max 0.5",
        "config.yaml: email.smtp.tls: `sometimes` is not one of starttls, implicit, none",
        "config.yaml: email.smtp.username: a password is set but no username",
        "config.yaml: email.to[0]: `not-an-address` is not an email address",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
    assert!(
        !stderr.contains("hunter2"),
        "a secret was printed:\n{stderr}"
    );
}

#[test]
fn environment_variables_are_interpolated_and_required_ones_named() {
    let ws = Workspace::new(
        "email:\n  outbox: ${OUTBOX_DIR:-./outbox}\n  to: [\"${REPORT_TO:?set REPORT_TO to the leadership list}\"]\n",
    );
    let output = ws.command().arg("validate").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains(
        "line 15: environment variable REPORT_TO is required: set REPORT_TO to the leadership list"
    ));
    let output = ws
        .command()
        .arg("validate")
        .env("REPORT_TO", "ceo@example.com")
        .output()
        .unwrap();
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn a_missing_config_file_is_named() {
    let ws = Workspace::new("");
    let output = ws
        .command()
        .args(["--config", "nope.yaml", "validate"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("nope.yaml: cannot read"));
}

#[test]
fn each_webhook_kind_has_its_own_fields_and_every_name_is_checked() {
    let ws = Workspace::new(
        "rules:
  templated_notes: { similarity: 1.5, min_notes: 1 }
report:
  channels: { weekly: [nobody], daily: [ops] }
  industry_advice: { hospital: \"{{ count \" }
alerts:
  webhooks:
    - { name: ops, kind: slack, url: \"https://hooks.slack.com/services/T0/B0/s3cr3t-token\", secret: x }
    - { name: ding, kind: dingtalk, url: \"https://oapi.dingtalk.com/robot/send?access_token=t0k3n\", format: text }
  routes: { east: [ops, ghost] }
  max_items: 0
",
    );
    let output = ws.command().arg("validate").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    for expected in [
        "config.yaml: rules.templated_notes.similarity: must be above 0 and at most 1",
        "config.yaml: rules.templated_notes.min_notes: must be at least 2",
        "config.yaml: report.channels.daily: is not a report: expected weekly or monthly",
        "config.yaml: report.industry_advice.hospital: not a valid template",
        "config.yaml: alerts.webhooks[0].secret: a slack webhook is not signed",
        "config.yaml: alerts.webhooks[1].format: only a wecom webhook has a format",
        "config.yaml: alerts.routes.east: `ghost` is not a webhook in alerts.webhooks",
        "config.yaml: report.channels.weekly: `nobody` is not a webhook in alerts.webhooks",
        "config.yaml: alerts.max_items: must be at least 1",
    ] {
        assert!(
            stderr.contains(expected),
            "missing `{expected}` in:\n{stderr}"
        );
    }
    // The channels' tokens are in their URLs: never printed.
    assert!(
        !stderr.contains("s3cr3t-token") && !stderr.contains("t0k3n"),
        "{stderr}"
    );

    // A kind that does not exist is named with the ones that do.
    std::fs::write(
        ws.path().join("config.yaml"),
        format!(
            "{}alerts:\n  webhooks:\n    - {{ name: t, kind: teams, url: \"https://example.com/x\" }}\n",
            crate::common::STAGES
        ),
    )
    .unwrap();
    let output = ws.command().arg("validate").output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("alerts.webhooks[0].kind: unknown variant `teams`, expected one of `dingtalk`, `wecom`, `feishu`, `slack`, `json`"),
        "{stderr}"
    );
}
