//! Checks of values that parse but cannot work: the whole file's ([`Config::validate`], every
//! problem with its key path) and one table definition's ([`TableDef::problems`], which the
//! admin API shares).

use crate::{ByteSize, Config, ConfigIssue, SyncMode, TableDef, is_plausible_email};

impl Config {
    /// Checks values that parse but cannot work; returns every problem.
    pub fn validate(&self) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        let mut check = |ok: bool, key: &str, message: String| {
            if !ok {
                issues.push(ConfigIssue::at_key(key, message));
            }
        };
        check(
            self.server.flight_listen != self.server.http_listen
                || self.server.http_listen.port() == 0,
            "server.http_listen",
            format!(
                "must differ from `server.flight_listen` (both are {})",
                self.server.http_listen
            ),
        );
        if let Some(url) = &self.storage.object_store {
            let supported = ["file:///", "s3://", "memory://"];
            check(
                supported.iter().any(|p| url.starts_with(p)),
                "storage.object_store",
                format!(
                    "`{url}` is not a supported object store URL (use file:///absolute/path or s3://bucket/prefix)"
                ),
            );
        }
        if let Some(url) = &self.storage.state {
            check(
                url.starts_with("postgres://") || url.starts_with("postgresql://"),
                "storage.state",
                "must be a PostgreSQL URL, postgres://user:password@host:port/database (leave it out for the embedded state file)".to_string(),
            );
            check(
                self.auth.jwt_secret.is_some(),
                "auth.jwt_secret",
                "is required with a shared `storage.state`, so that every replica signs and checks tokens alike".to_string(),
            );
        }
        if let Some(url) = &self.server.public_url {
            check(
                url.starts_with("http://") || url.starts_with("https://"),
                "server.public_url",
                format!("`{url}` must start with http:// or https://"),
            );
        }
        if let Some(url) = &self.server.advertise {
            check(
                url.starts_with("grpc://") || url.starts_with("grpc+tls://"),
                "server.advertise",
                format!("`{url}` must be a Flight URL, grpc://host:port or grpc+tls://host:port"),
            );
        }
        let mut names = std::collections::HashSet::new();
        for (i, p) in self.auth.oidc.iter().enumerate() {
            let key = |field: &str| format!("auth.oidc[{i}].{field}");
            check(
                !p.name.is_empty()
                    && p.name.len() <= 32
                    && p.name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'),
                &key("name"),
                format!("`{}` must be 1-32 lowercase letters, digits or `-`", p.name),
            );
            check(
                names.insert(p.name.clone()),
                &key("name"),
                format!("`{}` is used by two providers", p.name),
            );
            check(
                p.issuer.starts_with("https://") || p.issuer.starts_with("http://"),
                &key("issuer"),
                format!("`{}` must be an http(s) URL", p.issuer),
            );
            check(
                p.scopes.iter().any(|s| s == "openid"),
                &key("scopes"),
                "must include `openid`".into(),
            );
        }
        if let Some(secret) = &self.auth.jwt_secret {
            check(
                secret.len() >= 32,
                "auth.jwt_secret",
                format!(
                    "is {} characters long; use at least 32 random characters (or leave it out to have one generated)",
                    secret.len()
                ),
            );
        }
        if let Some(admin) = &self.auth.bootstrap_admin {
            check(
                is_plausible_email(&admin.email),
                "auth.bootstrap_admin.email",
                format!("`{}` is not an e-mail address", admin.email),
            );
            check(
                admin.password.chars().count() >= 8,
                "auth.bootstrap_admin.password",
                "must be at least 8 characters long".into(),
            );
        }
        check(
            !self.auth.token_lifetime.is_zero(),
            "auth.token_lifetime",
            "must be longer than zero".into(),
        );
        check(
            !self.auth.ticket_lifetime.is_zero(),
            "auth.ticket_lifetime",
            "must be longer than zero".into(),
        );
        check(
            !self.query.timeout.is_zero(),
            "query.timeout",
            "must be longer than zero".into(),
        );
        check(
            (1..=1_048_576).contains(&self.query.batch_size),
            "query.batch_size",
            format!("{} is out of range 1..=1048576", self.query.batch_size),
        );
        check(
            self.query.memory_limit >= ByteSize::mib(64),
            "query.memory_limit",
            format!(
                "{} is too small; use at least 64 MiB",
                self.query.memory_limit
            ),
        );
        check(
            (ByteSize::kib(64)..=ByteSize::mib(15)).contains(&self.query.max_message_size),
            "query.max_message_size",
            format!(
                "{} is out of range 64 KiB..=15 MiB (clients refuse messages over 16 MiB)",
                self.query.max_message_size
            ),
        );
        check(
            self.query.max_concurrent_per_user >= 1,
            "query.max_concurrent_per_user",
            "must be at least 1".into(),
        );
        check(
            self.query.memory_limit_per_user >= ByteSize::mib(16),
            "query.memory_limit_per_user",
            format!(
                "{} is too small; use at least 16 MiB",
                self.query.memory_limit_per_user
            ),
        );
        check(
            (ByteSize::kib(1)..=ByteSize::mib(64)).contains(&self.query.max_sql_length),
            "query.max_sql_length",
            format!(
                "{} is out of range 1 KiB..=64 MiB",
                self.query.max_sql_length
            ),
        );
        check(
            (16..=5_000).contains(&self.query.max_expression_depth),
            "query.max_expression_depth",
            format!(
                "{} is out of range 16..=5000 (deeper statements need more stack than the query threads have)",
                self.query.max_expression_depth
            ),
        );
        check(
            (16..=1_000_000).contains(&self.query.max_plan_nodes),
            "query.max_plan_nodes",
            format!("{} is out of range 16..=1000000", self.query.max_plan_nodes),
        );
        check(
            self.query.max_parameter_bytes.as_u64() <= self.query.max_message_size.as_u64() / 2,
            "query.max_parameter_bytes",
            format!(
                "{} must be at most half of query.max_message_size ({}): the bound parameters travel back to the client, encoded, inside the statement's handle",
                self.query.max_parameter_bytes, self.query.max_message_size
            ),
        );
        check(
            self.query.distributed_threshold >= ByteSize::kib(64),
            "query.distributed_threshold",
            format!(
                "{} is too small; use at least 64 KiB",
                self.query.distributed_threshold
            ),
        );
        check(
            self.query.max_prepared_per_user >= 1,
            "query.max_prepared_per_user",
            "must be at least 1".into(),
        );
        check(
            self.sync.concurrency >= 1,
            "sync.concurrency",
            "must be at least 1".into(),
        );
        let mut names = std::collections::HashSet::new();
        for (i, table) in self.tables.iter().enumerate() {
            for problem in table.problems() {
                issues.push(ConfigIssue::at_key(
                    format!("tables[{i}].{}", problem.field),
                    problem.message,
                ));
            }
            if !names.insert(table.name.as_str()) {
                issues.push(ConfigIssue::at_key(
                    format!("tables[{i}].name"),
                    format!("`{}` is defined twice", table.name),
                ));
            }
        }
        let mut check = |ok: bool, key: &str, message: String| {
            if !ok {
                issues.push(ConfigIssue::at_key(key, message));
            }
        };
        if let Some(jira) = &self.jira {
            check(
                jira.url.starts_with("https://") || jira.url.starts_with("http://"),
                "jira.url",
                format!(
                    "`{}` must be the site's URL, e.g. https://acme.atlassian.net",
                    jira.url
                ),
            );
            check(
                !jira.email.trim().is_empty() && !jira.api_token.trim().is_empty(),
                "jira.api_token",
                "`jira.email` and `jira.api_token` are needed to read issues from Jira".into(),
            );
            check(
                jira.webhook_secret.as_ref().is_none_or(|s| s.len() >= 16),
                "jira.webhook_secret",
                "is too short; use at least 16 characters".into(),
            );
        }
        check(
            self.demo.scale > 0.0 && self.demo.scale <= 1000.0,
            "demo.scale",
            format!("{} is out of range (0, 1000]", self.demo.scale),
        );
        issues
    }
}

/// A problem with one field of a [`TableDef`]: `field` is its path inside the definition
/// (`name`, `options.path`, `schedule`), so the config file and the API can both point at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldProblem {
    /// Path of the field inside the definition.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl FieldProblem {
    /// A problem with `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FieldProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`: {}", self.field, self.message)
    }
}

fn is_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

impl TableDef {
    /// Problems every definition can be checked for without knowing the connector; the
    /// orchestrator adds the connector's own checks.
    pub fn problems(&self) -> Vec<FieldProblem> {
        let mut out = Vec::new();
        match self.name.split_once('.') {
            Some((schema, table)) if is_identifier(schema) && is_identifier(table) => {}
            _ => out.push(FieldProblem::new(
                "name",
                format!(
                    "`{}` must be `schema.table`: lowercase letters, digits and `_`, each part starting with a letter or `_`",
                    self.name
                ),
            )),
        }
        if self.mode == SyncMode::Incremental {
            if self.watermark.as_deref().is_none_or(str::is_empty) {
                out.push(FieldProblem::new(
                    "watermark",
                    "incremental mode needs the column that grows with every change, e.g. `watermark: updated_at`",
                ));
            }
            if self.primary_key.is_empty() {
                out.push(FieldProblem::new(
                    "primary_key",
                    "incremental mode needs the columns that identify a row, e.g. `primary_key: [id]`",
                ));
            }
        } else if self.watermark.is_some() || !self.primary_key.is_empty() {
            out.push(FieldProblem::new(
                "mode",
                "`watermark` and `primary_key` are used only with `mode: incremental`",
            ));
        }
        out
    }
}
