//! Report templates: minijinja files a data team can edit. `report.templates` names a folder of
//! overrides; a template not there is the built-in one (the repository's `templates/`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use chrono_tz::Tz;
use minijinja::value::Value;
use minijinja::{AutoEscape, Environment, ErrorKind};

use crate::config::Config;
use crate::error::{Error, Result};

const BUILT_IN: [(&str, &str); 5] = [
    ("weekly.html", include_str!("../../templates/weekly.html")),
    ("weekly.txt", include_str!("../../templates/weekly.txt")),
    ("monthly.html", include_str!("../../templates/monthly.html")),
    ("monthly.txt", include_str!("../../templates/monthly.txt")),
    ("labels.yaml", include_str!("../../templates/labels.yaml")),
];

pub struct Templates {
    env: Environment<'static>,
    /// The labels of the configured language (`t` in every template).
    labels: Value,
    /// Display names of stage and action codes.
    codes: CodeLabels,
}

/// Display names of stage and action-type codes (`contract_approval` -> "Contract approval"):
/// `report.labels` from the config over the built-in ones of the language (labels.yaml `codes`).
/// People read the names; CSVs and the lake keep the codes.
#[derive(Debug, Clone, Default)]
pub struct CodeLabels(Arc<BTreeMap<String, String>>);

impl CodeLabels {
    /// `code`'s display name; a code without one is shown as it is.
    pub fn label(&self, code: &str) -> String {
        self.0
            .get(code)
            .cloned()
            .unwrap_or_else(|| code.to_string())
    }
}

impl Templates {
    /// The display names of codes, for text the model writes (examples, advice contexts).
    pub fn codes(&self) -> &CodeLabels {
        &self.codes
    }

    pub fn load(config: &Config) -> Result<Templates> {
        let folder = config.resolve_local(&config.report.templates);
        let source = |name: &str| -> Result<(String, String)> {
            let path: PathBuf = folder.join(name);
            match std::fs::read_to_string(&path) {
                Ok(text) => Ok((text, path.display().to_string())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    let (_, text) = BUILT_IN
                        .iter()
                        .find(|(n, _)| *n == name)
                        .expect("every template has a built-in version");
                    Ok((text.to_string(), format!("<built-in {name}>")))
                }
                Err(e) => Err(Error::io(path, e)),
            }
        };
        let (labels_text, labels_source) = source("labels.yaml")?;
        let all: serde_yaml::Value = serde_yaml::from_str(&labels_text)
            .map_err(|e| Error::Usage(format!("{labels_source}: not valid YAML: {e}")))?;
        let labels = all.get(&config.report.language).ok_or_else(|| {
            Error::Usage(format!(
                "{labels_source}: no labels for report.language `{}`",
                config.report.language
            ))
        })?;
        // Display names of stage and action codes (`label` filter): the built-in ones of the
        // language, then `report.labels` from the config over them.
        let mut codes: BTreeMap<String, String> = labels
            .get("codes")
            .and_then(|c| serde_yaml::from_value(c.clone()).ok())
            .unwrap_or_default();
        codes.extend(config.report.labels.clone());
        let codes = CodeLabels(Arc::new(codes));
        let labels = Value::from_serialize(labels);

        let mut env = Environment::new();
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".html") {
                AutoEscape::Html
            } else {
                AutoEscape::None
            }
        });
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        let tz = config.timezone;
        env.add_filter("pct", pct);
        env.add_filter("pts", pts);
        env.add_filter("num", num);
        env.add_filter("healthy", healthy);
        env.add_filter("local_time", move |v: Value| local_time(tz, v));
        env.add_filter("count", count);
        let filter_codes = codes.clone();
        env.add_filter("label", move |code: Value| match code.as_str() {
            Some(text) => filter_codes.label(text),
            None if code.is_none() || code.is_undefined() => String::new(),
            None => code.to_string(),
        });
        for (name, _) in BUILT_IN.iter().filter(|(n, _)| *n != "labels.yaml") {
            let (text, origin) = source(name)?;
            env.add_template_owned(name.to_string(), text)
                .map_err(|e| template_error(&origin, &e))?;
        }
        Ok(Templates { env, labels, codes })
    }

    /// Renders template `name` with `context` (an object) plus `t`, the labels.
    pub fn render(&self, name: &str, context: &serde_json::Value) -> Result<String> {
        let context = self.context(context);
        self.env
            .get_template(name)
            .and_then(|t| t.render(context))
            .map_err(|e| template_error(name, &e))
    }

    /// Renders the label `key` (itself a template, e.g. the subject) with `context`.
    pub fn render_label(&self, key: &str, context: &serde_json::Value) -> Result<String> {
        let text = self
            .labels
            .get_attr(key)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .ok_or_else(|| Error::Usage(format!("labels.yaml: no label `{key}`")))?;
        self.env
            .render_str(&text, self.context(context))
            .map_err(|e| template_error(&format!("labels.yaml `{key}`"), &e))
    }

    /// The label `key` as written (not rendered); the key itself when there is none.
    pub fn label(&self, key: &str) -> String {
        self.labels
            .get_attr(key)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_else(|| key.to_string())
    }

    /// Renders `text`, a template from elsewhere (`report.industry_advice` in the config), with
    /// `context`; `origin` names it in an error.
    pub fn render_text(
        &self,
        origin: &str,
        text: &str,
        context: &serde_json::Value,
    ) -> Result<String> {
        self.env
            .render_str(text, self.context(context))
            .map_err(|e| template_error(origin, &e))
    }

    /// Each signal of a report's "Process integrity" section (`context["integrity"]`) with its
    /// advice (`integrity_<key>_advice`) rendered from the signal's own fields.
    pub fn integrity_advice(&self, context: &mut serde_json::Value) -> Result<()> {
        if let Some(signals) = context.get_mut("integrity").and_then(|v| v.as_array_mut()) {
            for signal in signals {
                let key = format!(
                    "integrity_{}_advice",
                    signal["key"].as_str().unwrap_or_default()
                );
                signal["advice"] = self.render_label(&key, signal)?.into();
            }
        }
        Ok(())
    }

    fn context(&self, context: &serde_json::Value) -> Value {
        minijinja::context! { t => self.labels.clone(), ..Value::from_serialize(context) }
    }
}

/// "template weekly.html, line 12: syntax error: ..." (the name and line a data team needs).
fn template_error(origin: &str, error: &minijinja::Error) -> Error {
    let mut message = format!("template {}", error.name().unwrap_or(origin));
    if let Some(line) = error.line() {
        message.push_str(&format!(", line {line}"));
    }
    message.push_str(&format!(": {}", error.kind()));
    if let Some(detail) = error.detail() {
        message.push_str(&format!(": {detail}"));
    }
    Error::Template(crate::error::with_causes(message, error))
}

fn as_f64(value: &Value) -> Option<f64> {
    if value.is_none() || value.is_undefined() {
        return None;
    }
    f64::try_from(value.clone()).ok().filter(|v| v.is_finite())
}

/// 0.875 -> "87.5%"; nothing -> "n/a" (the convention of [`crate::metrics::display`]).
fn pct(value: Value, decimals: Option<usize>) -> String {
    match as_f64(&value) {
        Some(v) => crate::metrics::display::percent(v, decimals.unwrap_or(1)),
        None => "n/a".into(),
    }
}

/// A count with its noun: `{{ n | count("breach", "breaches") }}` is `1 breach`, `2 breaches`.
fn count(n: usize, one: &str, many: &str) -> String {
    crate::metrics::display::count(n, one, many)
}

/// A change of a rate in percentage points: 0.021 -> "+2.1 pts".
fn pts(value: Value) -> String {
    match as_f64(&value) {
        Some(v) => format!("{:+.1} pts", v * 100.0),
        None => "n/a".into(),
    }
}

fn num(value: Value, decimals: Option<usize>) -> String {
    match as_f64(&value) {
        Some(v) => format!("{:.*}", decimals.unwrap_or(1), v),
        None => "n/a".into(),
    }
}

/// A score's healthy range: ">= 92.0%" or "<= 15.0%".
fn healthy(score: Value) -> std::result::Result<String, minijinja::Error> {
    let threshold = as_f64(&score.get_attr("threshold")?);
    let direction = score.get_attr("direction")?;
    Ok(match direction.as_str() {
        Some("min") => crate::metrics::display::healthy(threshold, None),
        Some("max") => crate::metrics::display::healthy(None, threshold),
        _ => "n/a".into(),
    })
}

/// An RFC 3339 instant from the lake -> "YYYY-MM-DD HH:MM" in the configured timezone.
fn local_time(tz: Tz, value: Value) -> std::result::Result<String, minijinja::Error> {
    let Some(text) = value.as_str() else {
        return Ok(String::new());
    };
    crate::time::format::local_text(tz, text).ok_or_else(|| {
        minijinja::Error::new(
            ErrorKind::InvalidOperation,
            format!("`{text}` is not a timestamp"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates(yaml: &str) -> Templates {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "lake: {{ url: {}/lake }}\nstages: [{{ name: lead }}]\nreport: {{ templates: {}/none, {yaml} }}\n",
            dir.path().display(),
            dir.path().display()
        );
        let config = Config::parse(&text, "test.yaml", ".".into(), |_| None).unwrap();
        Templates::load(&config).unwrap()
    }

    fn render(templates: &Templates, text: &str) -> String {
        templates
            .env
            .render_str(text, minijinja::context! {})
            .unwrap()
    }

    #[test]
    fn codes_show_their_labels_in_the_configured_language_config_first() {
        let codes = "{{ 'contract_approval' | label }} / {{ 'high_margin_recommendation' | label }} / {{ 'demo' | label }} / {{ 'my_code' | label }}";
        let zh = templates("language: zh, labels: { demo: 演示（自定义） }");
        assert_eq!(
            render(&zh, codes),
            "合同审批 / 高毛利产品推荐 / 演示（自定义） / my_code"
        );
        let en = templates("language: en");
        assert_eq!(
            render(&en, codes),
            "Contract approval / High-margin recommendation / Demo / my_code"
        );
        assert_eq!(
            render(
                &en,
                "{{ 1 | count('breach', 'breaches') }}, {{ 3 | count('breach', 'breaches') }}, {{ 0.8964 | pct }}"
            ),
            "1 breach, 3 breaches, 89.6%"
        );
    }
}
