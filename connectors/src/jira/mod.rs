//! Jira Cloud as a push source: the REST client ([`client`]), the six `jira` tables an
//! issue becomes ([`tables`]) and its signed deliveries ([`webhook`]). Jira pushes events;
//! the orchestrator's push driver fetches each issue in full and rewrites its monthly shard.

mod client;
mod tables;
mod webhook;

use std::sync::Arc;

use quiver_config::JiraConfig;
use reqwest::header::HeaderMap;
use serde_json::Value;

use client::JiraClient;
use tables::{TABLES, issue_rows};

use crate::ConnectorError;
use crate::push::{
    Event, HeadColumns, HeldItems, Intervals, ItemRows, Listed, Page, PushSource, PushTable,
    Refused, Target,
};

/// The tables, in [`TABLES`] order, with what each holds.
const PUSH_TABLES: [PushTable; 6] = [
    PushTable {
        name: TABLES[0],
        description: "Jira issues, one row each (kept current by webhook)",
    },
    PushTable {
        name: TABLES[1],
        description: "Jira issue comments",
    },
    PushTable {
        name: TABLES[2],
        description: "Jira issue attachments (metadata and download URL)",
    },
    PushTable {
        name: TABLES[3],
        description: "Jira issue history, one row per changed field",
    },
    PushTable {
        name: TABLES[4],
        description: "Links between Jira issues, from each side",
    },
    PushTable {
        name: TABLES[5],
        description: "Jira issues' links to other systems",
    },
];

/// A Jira Cloud site (the `jira:` section).
#[derive(Debug)]
pub(crate) struct Jira {
    config: JiraConfig,
    client: JiraClient,
}

impl Jira {
    /// The push source of the `jira:` section, when there is one.
    pub(crate) fn from_config(
        config: &quiver_config::Config,
    ) -> Result<Option<Arc<dyn PushSource>>, ConnectorError> {
        let Some(config) = &config.jira else {
            return Ok(None);
        };
        let client = JiraClient::new(&config.url, &config.email, &config.api_token)?;
        Ok(Some(Arc::new(Self {
            config: config.clone(),
            client,
        })))
    }

    /// The JQL of the issues Quiver keeps: `jira.jql`, or the projects it holds.
    fn scope(&self, held: &HeldItems) -> Option<String> {
        if let Some(jql) = &self.config.jql {
            return Some(jql.clone());
        }
        let projects: std::collections::BTreeSet<&str> = held
            .values()
            .filter_map(|h| h.key.rsplit_once('-').map(|(p, _)| p))
            .collect();
        (!projects.is_empty()).then(|| {
            format!(
                "project in ({})",
                projects
                    .into_iter()
                    .map(|p| format!("\"{p}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }
}

#[async_trait::async_trait]
impl PushSource for Jira {
    fn name(&self) -> &'static str {
        "jira"
    }

    fn tables(&self) -> &'static [PushTable] {
        &PUSH_TABLES
    }

    fn head(&self) -> HeadColumns {
        HeadColumns {
            id: "issue_id",
            key: "issue_key",
            shard: "issue_month",
            updated: "updated",
            watched: "sla",
        }
    }

    fn intervals(&self) -> Intervals {
        Intervals {
            check: self.config.consistency_check,
            refresh: self.config.sla_refresh,
        }
    }

    fn max_payload(&self) -> Result<usize, Refused> {
        match self.config.webhook_secret {
            Some(_) => Ok(self.config.max_payload.as_u64() as usize),
            None => Err(Refused::Off(
                "Jira webhooks are off: set jira.webhook_secret in the configuration".into(),
            )),
        }
    }

    fn authenticate(&self, headers: &HeaderMap, body: &[u8]) -> Result<Option<String>, Refused> {
        webhook::authenticate(self.config.webhook_secret.as_deref(), headers, body)
    }

    fn parse(&self, payload: &Value) -> Result<Event, Refused> {
        webhook::parse(payload)
    }

    async fn fetch(&self, target: &Target) -> Result<Option<ItemRows>, ConnectorError> {
        let Some(issue) = self.client.issue(&target.reference).await? else {
            return Ok(None);
        };
        Ok(Some(issue_rows(&issue)?))
    }

    fn batch(
        &self,
        table: usize,
        rows: &[Value],
    ) -> Result<arrow::record_batch::RecordBatch, ConnectorError> {
        tables::to_batch(table, rows)
    }

    async fn count(&self, jql: &str) -> Result<u64, ConnectorError> {
        self.client.count(jql).await
    }

    async fn page(&self, jql: &str, token: Option<&str>) -> Result<Page, ConnectorError> {
        let page = self.client.search(jql, &["created"], token).await?;
        let targets = page
            .issues
            .iter()
            .filter_map(|i| {
                // Keys go into request paths: only well-formed ones.
                let reference = i["key"].as_str().filter(|k| is_issue_key(k))?.to_string();
                Some(Target {
                    reference,
                    id: issue_id(&i["id"]),
                    shard: None,
                })
            })
            .collect();
        Ok(Page {
            targets,
            next: page.next,
        })
    }

    async fn list(&self, held: &HeldItems) -> Result<Option<Vec<Listed>>, ConnectorError> {
        let Some(jql) = self.scope(held) else {
            return Ok(None);
        };
        let listed = self.client.search_all(&jql, &["updated"]).await?;
        Ok(Some(
            listed
                .iter()
                .filter_map(|issue| {
                    Some(Listed {
                        id: issue_id(&issue["id"])?,
                        updated: issue["fields"]["updated"]
                            .as_str()
                            .and_then(parse_time)
                            .map(|t| t.timestamp_micros()),
                    })
                })
                .collect(),
        ))
    }

    /// Open issues (status category not Done): their SLA fields change without events.
    async fn refresh(&self, held: &HeldItems) -> Result<Vec<Value>, ConnectorError> {
        let Some(scope) = self.scope(held) else {
            return Ok(Vec::new());
        };
        let jql = format!("({scope}) AND statusCategory != Done");
        let open = self.client.search_all(&jql, &["*all"]).await?;
        open.iter().map(tables::issue_row).collect()
    }
}

/// Whether `key` is a Jira issue key: a project key, a dash, a number (`ABC-123`).
pub(crate) fn is_issue_key(key: &str) -> bool {
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
pub(crate) fn is_issue_id(id: &str) -> bool {
    (1..=20).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit())
}

/// An issue id as text, whether Jira sent it as a string or a number; `None` if malformed.
pub(crate) fn issue_id(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::Number(n) => Some(n.to_string()).filter(|id| is_issue_id(id)),
        serde_json::Value::String(s) => Some(s.clone()).filter(|id| is_issue_id(id)),
        _ => None,
    }
}

/// A Jira time (`2026-01-15T10:20:30.000+0100`, or RFC 3339) in UTC.
pub(crate) fn parse_time(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
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
