//! `${VAR}`, `${VAR:-default}` and `${VAR:?message}` interpolation, done on the raw text of a
//! config file before it is parsed (as Vector does), so any value can come from the environment.
//! `$$` is a literal `$`. YAML comments are left as they are, so commented-out examples may
//! mention variables that are not set.

/// Interpolates `text` with `lookup`, returning the new text or every problem found, each with
/// its line number.
pub fn interpolate(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let (code, comment) = line.split_at(comment_start(line).unwrap_or(line.len()));
        let mut rest = code;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
            } else if let Some(body) = after.strip_prefix('{') {
                let Some(end) = body.find('}') else {
                    problems.push(format!(
                        "line {}: unclosed `${{` in `{}`",
                        index + 1,
                        line.trim_end()
                    ));
                    out.push_str(&rest[at..]);
                    rest = "";
                    continue;
                };
                match expand(&body[..end], &lookup) {
                    Ok(value) => out.push_str(&value),
                    Err(problem) => problems.push(format!("line {}: {problem}", index + 1)),
                }
                rest = &body[end + 1..];
            } else {
                out.push('$');
                rest = after;
            }
        }
        out.push_str(rest);
        out.push_str(comment);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

/// Where a YAML comment starts in `line`: a `#` at the start or after white space, outside quotes.
fn comment_start(line: &str) -> Option<usize> {
    let mut quote = None;
    let mut previous = ' ';
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '#') if previous.is_whitespace() => return Some(i),
            (None, '\'' | '"') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
        previous = c;
    }
    None
}

fn expand(body: &str, lookup: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let (name, op) = match body.find(':') {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!(
            "`${{{body}}}` is not a variable reference (use $$ for a literal $)"
        ));
    }
    let value = lookup(name).filter(|v| !v.is_empty());
    match op {
        None => value.ok_or_else(|| {
            format!("environment variable {name} is not set (write ${{{name}:-default}} to give a default)")
        }),
        Some(op) => {
            if let Some(default) = op.strip_prefix('-') {
                Ok(value.unwrap_or_else(|| default.to_string()))
            } else if let Some(message) = op.strip_prefix('?') {
                value.ok_or_else(|| format!("environment variable {name} is required: {message}"))
            } else {
                Err(format!("`${{{body}}}`: expected `:-default` or `:?message` after the name"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::interpolate;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("smtp.example.com".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_plain_default_and_required_forms() {
        let text = "a: ${HOST}\nb: ${MISSING:-x}\nc: ${EMPTY:-y}\nd: $$5 and $5\n";
        assert_eq!(
            interpolate(text, env).unwrap(),
            "a: smtp.example.com\nb: x\nc: y\nd: $5 and $5\n"
        );
    }

    #[test]
    fn reports_every_missing_variable_with_its_line() {
        let problems =
            interpolate("a: ${NOPE}\nb: ok\nc: ${PW:?set the SMTP password}\n", env).unwrap_err();
        assert_eq!(problems.len(), 2);
        assert!(problems[0].starts_with("line 1: environment variable NOPE is not set"));
        assert_eq!(
            problems[1],
            "line 3: environment variable PW is required: set the SMTP password"
        );
    }

    #[test]
    fn comments_are_left_alone() {
        let text = "# url: ${NOPE}\na: ${HOST} # or ${NOPE}\nb: \"x # ${HOST}\"\n";
        assert_eq!(
            interpolate(text, env).unwrap(),
            "# url: ${NOPE}\na: smtp.example.com # or ${NOPE}\nb: \"x # smtp.example.com\"\n"
        );
    }

    #[test]
    fn rejects_malformed_references() {
        assert!(interpolate("a: ${bad name}\n", env).is_err());
        assert!(interpolate("a: ${HOST\n", env).is_err());
        assert!(interpolate("a: ${HOST:+x}\n", env).is_err());
    }
}
