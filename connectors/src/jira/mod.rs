//! Jira Cloud: the REST client ([`client`]) and the six `jira` tables an issue becomes
//! ([`tables`]). Jira pushes events (the webhook lives in the HTTP sidecar); the
//! orchestrator fetches each issue in full and rewrites its monthly shard.

pub mod client;
pub mod tables;

pub use client::{FetchedIssue, JiraClient};
pub use tables::{IssueRows, TABLES, issue_rows};

/// Whether `key` is a Jira issue key: a project key, a dash, a number (`ABC-123`).
pub fn is_issue_key(key: &str) -> bool {
    let Some((project, number)) = key.split_once('-') else {
        return false;
    };
    let mut chars = project.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && project.len() <= 32
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        && (1..=12).contains(&number.len())
        && number.chars().all(|c| c.is_ascii_digit())
}

/// Whether `id` is a Jira issue id: digits only (`10001`).
pub fn is_issue_id(id: &str) -> bool {
    (1..=20).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit())
}

/// An issue id as text, whether Jira sent it as a string or a number; `None` if malformed.
pub fn issue_id(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Number(n) => Some(n.to_string()).filter(|id| is_issue_id(id)),
        serde_json::Value::String(s) => Some(s.clone()).filter(|id| is_issue_id(id)),
        _ => None,
    }
}

/// A Jira time (`2026-01-15T10:20:30.000+0100`, or RFC 3339) in UTC.
pub fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    chrono::DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(s))
        .ok()
        .map(|t| t.with_timezone(&chrono::Utc))
}

#[cfg(test)]
mod tests {
    #[test]
    fn issue_keys() {
        for ok in ["A-1", "ABC-123", "X9-000000000001"] {
            assert!(super::is_issue_key(ok), "{ok}");
        }
        for bad in [
            "",
            "abc-1",
            "ABC",
            "ABC-",
            "ABC-1x",
            "1BC-1",
            "A-1234567890123",
            "../A-1",
            "ABC-1-2",
        ] {
            assert!(!super::is_issue_key(bad), "{bad}");
        }
    }
}
