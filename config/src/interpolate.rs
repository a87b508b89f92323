//! `${VAR}` interpolation of the raw YAML text, before it is parsed.
//!
//! Interpolating the text (as Vector does) lets a variable appear anywhere a value can, and
//! lets every missing variable be reported at once with its line number.
//!
//! - `${VAR}`: the value of `VAR`; an error when it is unset.
//! - `${VAR:-default}`: the value of `VAR`, or `default` when it is unset or empty.
//! - `${VAR:?message}`: the value of `VAR`; an error carrying `message` when it is unset or empty.
//! - `$$` is a literal `$`.
//!
//! The top-level `tables:` block is left as written: table options reference secrets as
//! `${VAR}`, and those are resolved (with [`resolve`]) only when a sync runs, so the secret
//! itself is never stored or shown.

use crate::ConfigIssue;

/// Replaces every `${…}` in `text` using `lookup`; returns the new text or every problem found.
pub fn interpolate(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<String, Vec<ConfigIssue>> {
    let mut out = String::with_capacity(text.len());
    let mut issues = Vec::new();
    let mut in_tables = false;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let line_no = index + 1;
        // A top-level key starts at column 0; the `tables:` block runs until the next one.
        if line.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_') {
            in_tables = line.starts_with("tables:");
        }
        if in_tables {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(pos) = rest.find('$') {
            out.push_str(&rest[..pos]);
            let after = &rest[pos + 1..];
            if let Some(stripped) = after.strip_prefix('$') {
                out.push('$');
                rest = stripped;
                continue;
            }
            let Some(body_and_tail) = after.strip_prefix('{') else {
                out.push('$');
                rest = after;
                continue;
            };
            let Some(end) = body_and_tail.find('}') else {
                issues.push(ConfigIssue::at_line(
                    line_no,
                    "unterminated `${` (missing `}`)",
                ));
                rest = "";
                break;
            };
            let body = &body_and_tail[..end];
            rest = &body_and_tail[end + 1..];
            match expand(body, &lookup) {
                Ok(value) => out.push_str(&value),
                Err(message) => issues.push(ConfigIssue::at_line(line_no, message)),
            }
        }
        out.push_str(rest);
    }
    if issues.is_empty() {
        Ok(out)
    } else {
        Err(issues)
    }
}

/// Resolves every `${…}` in one value (a table option, at sync time); the error names the
/// first variable that is missing.
pub fn resolve(value: &str, lookup: impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let text = format!("v: {value}");
    match interpolate(&text, lookup) {
        Ok(out) => Ok(out[3..].to_string()),
        Err(issues) => Err(issues
            .into_iter()
            .next()
            .map(|i| i.message)
            .unwrap_or_default()),
    }
}

/// Whether `value` is exactly one `${VAR}` reference (how secrets must be written).
pub fn is_reference(value: &str) -> bool {
    value
        .strip_prefix("${")
        .and_then(|v| v.strip_suffix('}'))
        .is_some_and(|name| {
            !name.is_empty()
                && !name.starts_with(|c: char| c.is_ascii_digit())
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

fn expand(body: &str, lookup: &impl Fn(&str) -> Option<String>) -> Result<String, String> {
    let (name, op) = match body.find(':') {
        Some(i) => (&body[..i], Some(&body[i + 1..])),
        None => (body, None),
    };
    if name.is_empty()
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        || name.starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(format!(
            "`${{{body}}}` is not a valid variable reference (use ${{NAME}}, ${{NAME:-default}} or ${{NAME:?message}})"
        ));
    }
    let value = lookup(name);
    match op {
        None => value.ok_or_else(|| format!("environment variable `{name}` is not set")),
        Some(op) if op.starts_with('-') => Ok(value
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| op[1..].to_string())),
        Some(op) if op.starts_with('?') => value.filter(|v| !v.is_empty()).ok_or_else(|| {
            let message = op[1..].trim();
            if message.is_empty() {
                format!("environment variable `{name}` is required")
            } else {
                format!("environment variable `{name}` is required: {message}")
            }
        }),
        Some(op) => Err(format!(
            "`${{{name}:{op}}}` uses an unknown operator (use `:-` for a default or `:?` for a required variable)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOME_DIR" => Some("/home/q".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn replaces_variables_defaults_and_dollars() {
        let text = "a: ${HOME_DIR}/x\nb: ${NOPE:-fallback}\nc: ${EMPTY:-d}\nd: $$5 and $x\n";
        let out = interpolate(text, env).unwrap();
        assert_eq!(out, "a: /home/q/x\nb: fallback\nc: d\nd: $5 and $x\n");
    }

    #[test]
    fn table_options_keep_their_references_until_resolved() {
        let text = "auth:\n  x: ${HOME_DIR}\ntables:\n  - name: a.b\n    options: {password: ${PG_PASSWORD}}\n- name: c.d\n\n  # ${NOT_EITHER}\nquery:\n  y: ${HOME_DIR}\n";
        let out = interpolate(text, env).unwrap();
        assert!(out.contains("x: /home/q\n"));
        assert!(out.contains("{password: ${PG_PASSWORD}}"));
        assert!(out.contains("# ${NOT_EITHER}"));
        assert!(out.contains("y: /home/q\n"));
        assert_eq!(resolve("${HOME_DIR}/data", env).unwrap(), "/home/q/data");
        assert_eq!(
            resolve("${PG_PASSWORD}", env).unwrap_err(),
            "environment variable `PG_PASSWORD` is not set"
        );
        assert!(is_reference("${PG_PASSWORD}"));
        assert!(!is_reference("hunter2"));
        assert!(!is_reference("${A}${B}"));
    }

    #[test]
    fn reports_every_missing_variable_with_its_line() {
        let text =
            "a: ${MISSING_ONE}\nb: ok\nc: ${MISSING_TWO:?set it to the S3 key}\nd: ${bad name}\n";
        let issues = interpolate(text, env).unwrap_err();
        let rendered: Vec<String> = issues.iter().map(|i| i.to_string()).collect();
        assert_eq!(
            rendered,
            vec![
                "line 1: environment variable `MISSING_ONE` is not set",
                "line 3: environment variable `MISSING_TWO` is required: set it to the S3 key",
                "line 4: `${bad name}` is not a valid variable reference (use ${NAME}, ${NAME:-default} or ${NAME:?message})",
            ]
        );
    }
}
