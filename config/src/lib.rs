//! Quiver's configuration: one YAML file → a typed, validated [`Config`].
//!
//! [`Config::parse`] interpolates `${ENV}` references in the raw text ([`interpolate`]),
//! parses the YAML, rejects unknown keys and checks values — and reports *every* problem at
//! once, each with its key path or line, so a broken file is fixed in one round. With no file
//! at all, [`Config::default`] runs a local server. The binary reads the file and the
//! environment; this crate never does, so it is easy to test and to reuse in `check-config`.

pub mod interpolate;
mod model;
#[cfg(test)]
mod reference;
mod validate;

use std::fmt;

pub use bytesize::ByteSize;
pub use model::*;
use serde::de::DeserializeOwned;
use serde_norway::Value;
pub use validate::FieldProblem;

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigIssue {
    /// Where: a dotted key path (`server.flight_listen`) or a line number.
    pub location: Location,
    /// What is wrong and, where possible, how to fix it.
    pub message: String,
}

/// Where a [`ConfigIssue`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// The whole file.
    File,
    /// A line of the raw text (interpolation problems).
    Line(usize),
    /// A dotted key path.
    Key(String),
}

impl ConfigIssue {
    fn at_line(line: usize, message: impl Into<String>) -> Self {
        Self {
            location: Location::Line(line),
            message: message.into(),
        }
    }

    fn at_key(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            location: Location::Key(key.into()),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Location::File => write!(f, "{}", self.message),
            Location::Line(n) => write!(f, "line {n}: {}", self.message),
            Location::Key(k) => write!(f, "`{k}`: {}", self.message),
        }
    }
}

/// A configuration that cannot be used, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} problem(s) in the configuration:\n{}", .0.len(), render(.0))]
pub struct ConfigError(pub Vec<ConfigIssue>);

fn render(issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(|i| format!("  - {i}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level sections, in the order they are documented.
const SECTIONS: &[&str] = &[
    "server",
    "storage",
    "auth",
    "query",
    "write",
    "demo",
    "logging",
    "sync",
    "tables",
    "governance",
    "jira",
];

impl Config {
    /// Parses and validates a YAML configuration; `env` resolves `${VAR}` references.
    pub fn parse(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::parse_with(text, env, |_| Vec::new())
    }

    /// [`Config::parse`] with `more` checks this crate cannot make (the connectors' options),
    /// run on whatever parsed, so one pass reports every problem of the file.
    pub fn parse_with(
        text: &str,
        env: impl Fn(&str) -> Option<String>,
        more: impl FnOnce(&Config) -> Vec<ConfigIssue>,
    ) -> Result<Self, ConfigError> {
        let text = interpolate::interpolate(text, &env).map_err(ConfigError)?;
        let value: Value = serde_norway::from_str(&text).map_err(|e| {
            ConfigError(vec![ConfigIssue {
                location: e
                    .location()
                    .map_or(Location::File, |l| Location::Line(l.line())),
                message: format!("not valid YAML: {e}"),
            }])
        })?;
        let mut issues = Vec::new();
        let mut config = Config::default();
        match value {
            Value::Null => {}
            Value::Mapping(map) => {
                for (key, value) in map {
                    let Some(key) = key.as_str() else {
                        issues.push(ConfigIssue {
                            location: Location::File,
                            message: format!("top-level key {key:?} is not a string"),
                        });
                        continue;
                    };
                    match key {
                        "server" => section(key, value, &mut config.server, &mut issues),
                        "storage" => section(key, value, &mut config.storage, &mut issues),
                        "auth" => section(key, value, &mut config.auth, &mut issues),
                        "query" => section(key, value, &mut config.query, &mut issues),
                        "write" => section(key, value, &mut config.write, &mut issues),
                        "demo" => section(key, value, &mut config.demo, &mut issues),
                        "logging" => section(key, value, &mut config.logging, &mut issues),
                        "sync" => section(key, value, &mut config.sync, &mut issues),
                        "tables" => section(key, value, &mut config.tables, &mut issues),
                        "governance" => section(key, value, &mut config.governance, &mut issues),
                        "jira" => section(key, value, &mut config.jira, &mut issues),
                        other => issues.push(ConfigIssue::at_key(
                            other,
                            format!("unknown key (expected one of: {})", SECTIONS.join(", ")),
                        )),
                    }
                }
            }
            _ => issues.push(ConfigIssue {
                location: Location::File,
                message: "the configuration must be a YAML mapping (`key: value` lines)".into(),
            }),
        }
        config.apply_env(&env);
        issues.extend(config.validate());
        issues.extend(more(&config));
        if issues.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError(issues))
        }
    }

    /// Fills what the file leaves out from the environment: `QUIVER_STATE` for
    /// `storage.state` and `QUIVER_JWT_SECRET` for `auth.jwt_secret`, so replicas (and
    /// their tests) can share one file and get their database and secret from outside.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) {
        let set = |name: &str| env(name).filter(|v| !v.is_empty());
        if self.storage.state.is_none() {
            self.storage.state = set("QUIVER_STATE");
        }
        if self.auth.jwt_secret.is_none() {
            self.auth.jwt_secret = set("QUIVER_JWT_SECRET");
        }
    }
}

/// A cheap shape check; the real proof of an address is a login.
pub fn is_plausible_email(email: &str) -> bool {
    let mut parts = email.split('@');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(local), Some(domain), None)
            if !local.is_empty() && domain.contains('.') && !domain.starts_with('.')
                && !domain.ends_with('.') && !email.chars().any(char::is_whitespace)
    )
}

/// Deserializes one section into `target`, collecting unknown keys and type errors with
/// their paths. A key with a bad value is reported, dropped (keeping its default) and the
/// section retried, so one mistake does not hide the next.
fn section<T: DeserializeOwned>(
    name: &str,
    mut value: Value,
    target: &mut T,
    issues: &mut Vec<ConfigIssue>,
) {
    if value.is_null() {
        return;
    }
    let mut unknown = std::collections::BTreeSet::new();
    for _ in 0..64 {
        let mut track = serde_path_to_error::Track::new();
        let result: Result<T, _> = serde_ignored::deserialize(
            serde_path_to_error::Deserializer::new(value.clone(), &mut track),
            |path| {
                unknown.insert(path.to_string());
            },
        );
        match result {
            Ok(parsed) => {
                *target = parsed;
                break;
            }
            Err(e) => {
                let path = track.path();
                let mut key = name.to_string();
                let mut keys = Vec::new();
                let mut nested_in_list = false;
                for segment in path.iter() {
                    match segment {
                        serde_path_to_error::Segment::Map { key: k } => {
                            key.push('.');
                            key.push_str(k);
                            keys.push(k.clone());
                        }
                        serde_path_to_error::Segment::Seq { index } => {
                            key.push_str(&format!("[{index}]"));
                            nested_in_list = true;
                        }
                        _ => {}
                    }
                }
                // Strip serde's "at line …" suffix: the key path says where.
                let message = e.to_string();
                let message = message
                    .split_once(" at line ")
                    .map_or(message.as_str(), |(m, _)| m)
                    .to_string();
                issues.push(ConfigIssue::at_key(key, message));
                if nested_in_list || keys.is_empty() || !remove_key(&mut value, &keys) {
                    break;
                }
            }
        }
    }
    for path in unknown {
        issues.push(ConfigIssue::at_key(format!("{name}.{path}"), "unknown key"));
    }
}

/// Removes the entry at a path of mapping keys; returns whether something was removed.
fn remove_key(value: &mut Value, keys: &[String]) -> bool {
    let Some((last, parents)) = keys.split_last() else {
        return false;
    };
    let mut current = value;
    for key in parents {
        match current.get_mut(key.as_str()) {
            Some(next) => current = next,
            None => return false,
        }
    }
    current
        .as_mapping_mut()
        .and_then(|m| m.remove(last.as_str()))
        .is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(Config::parse("", no_env).unwrap(), Config::default());
        assert_eq!(
            Config::parse("# nothing\n", no_env).unwrap(),
            Config::default()
        );
    }

    #[test]
    fn jira_section_parses_with_defaults_and_hides_its_secrets() {
        let text = "jira:\n  url: https://acme.atlassian.net\n  email: bot@acme.com\n  api_token: ${JT}\n  webhook_secret: ${WS}\n";
        let env = |k: &str| match k {
            "JT" => Some("token-value".to_string()),
            "WS" => Some("a-long-webhook-secret".to_string()),
            _ => None,
        };
        let jira = Config::parse(text, env).unwrap().jira.unwrap();
        assert_eq!(jira.api_token, "token-value");
        assert_eq!(jira.consistency_check.as_secs(), 6 * 3600);
        assert_eq!(jira.sla_refresh.as_secs(), 300);
        assert_eq!(jira.max_payload, ByteSize::mib(10));
        let shown = format!("{jira:?}");
        assert!(!shown.contains("token-value") && !shown.contains("a-long-webhook-secret"));

        let bad = "jira:\n  url: acme.atlassian.net\n  email: ''\n  api_token: x\n  webhook_secret: short\n";
        let problems = Config::parse(bad, no_env).unwrap_err().to_string();
        for key in ["jira.url", "jira.api_token", "jira.webhook_secret"] {
            assert!(problems.contains(key), "{key} in {problems}");
        }
    }

    #[test]
    fn full_file_parses() {
        let text = r#"
server:
  flight_listen: 0.0.0.0:6000
  http_listen: 0.0.0.0:6001
storage:
  data_dir: /var/lib/quiver
  object_store: s3://bucket/quiver
auth:
  bootstrap_admin:
    email: ${ADMIN_EMAIL:-admin@example.com}
    password: ${ADMIN_PASSWORD}
  token_lifetime: 2h
query:
  timeout: 30s
  memory_limit: 512 MiB
demo:
  scale: 1
logging:
  format: json
"#;
        let env = |k: &str| (k == "ADMIN_PASSWORD").then(|| "correct horse".to_string());
        let config = Config::parse(text, env).unwrap();
        assert_eq!(config.server.flight_listen.port(), 6000);
        assert_eq!(
            config.storage.object_store.as_deref(),
            Some("s3://bucket/quiver")
        );
        let admin = config.auth.bootstrap_admin.unwrap();
        assert_eq!(admin.email, "admin@example.com");
        assert_eq!(admin.password, "correct horse");
        assert_eq!(config.auth.token_lifetime.as_secs(), 7200);
        assert_eq!(config.query.timeout.as_secs(), 30);
        assert_eq!(config.query.memory_limit, ByteSize::mib(512));
        assert_eq!(config.logging.format, LogFormat::Json);
    }

    #[test]
    fn reports_every_problem_with_its_key_path() {
        let text = r#"
server:
  flight_listen: nowhere
  colour: blue
storage:
  object_store: ftp://x
query:
  timeout: soon
  batch_size: 0
demo:
  scale: -1
extra: 1
"#;
        let err = Config::parse(text, no_env).unwrap_err();
        let rendered: Vec<String> = err.0.iter().map(ToString::to_string).collect();
        let has = |needle: &str| rendered.iter().any(|r| r.contains(needle));
        assert!(has("`server.colour`: unknown key"), "{rendered:#?}");
        assert!(
            has("`server.flight_listen`: invalid socket address"),
            "{rendered:#?}"
        );
        assert!(
            has("`storage.object_store`: `ftp://x` is not a supported"),
            "{rendered:#?}"
        );
        assert!(
            has("`query.timeout`: `soon` is not a duration"),
            "{rendered:#?}"
        );
        assert!(has("`demo.scale`: -1 is out of range"), "{rendered:#?}");
        assert!(
            has("`extra`: unknown key (expected one of"),
            "{rendered:#?}"
        );
        // One bad value does not hide the next one in the same section.
        assert!(
            has("`query.batch_size`: 0 is out of range"),
            "{rendered:#?}"
        );
    }

    #[test]
    fn missing_variables_are_all_reported() {
        let err =
            Config::parse("auth:\n  jwt_secret: ${A}\n  x: ${B:?needed}\n", no_env).unwrap_err();
        assert_eq!(err.0.len(), 2);
        assert_eq!(err.0[0].location, Location::Line(2));
        assert_eq!(err.0[1].location, Location::Line(3));
    }

    #[test]
    fn secrets_are_not_in_debug_output() {
        let admin = BootstrapAdmin {
            email: "a@b.co".into(),
            password: "hunter2hunter2".into(),
        };
        assert!(!format!("{admin:?}").contains("hunter2"));
    }

    #[test]
    fn email_shape() {
        assert!(is_plausible_email("ada@example.com"));
        assert!(!is_plausible_email("ada"));
        assert!(!is_plausible_email("ada@localhost"));
        assert!(!is_plausible_email("a da@example.com"));
    }
}
