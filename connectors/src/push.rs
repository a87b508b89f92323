//! Sources that push: a webhook delivery names the items that changed (Jira's issues), and
//! the source is asked for each item in full. A push source's tables live in the schema of
//! its name, stored in shards (Jira's: the month an issue was created); the orchestrator's
//! push driver stores deliveries, fetches items, rewrites the shards they touch and
//! publishes the versions. Adding a push source is a folder beside [`crate::jira`] and a line
//! in [`crate::PUSH_SOURCES`].

use std::collections::HashMap;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use reqwest::header::HeaderMap;
use serde_json::Value;

use crate::ConnectorError;

/// A table a push source keeps.
#[derive(Debug, Clone, Copy)]
pub struct PushTable {
    /// Its name in the source's schema.
    pub name: &'static str,
    /// What it holds, for catalogs (set when first published; an admin's later one stays).
    pub description: &'static str,
}

/// The columns of the head table (the first of [`PushSource::tables`], one row per item)
/// the driver reads back. Every table has the id and the shard columns.
#[derive(Debug, Clone, Copy)]
pub struct HeadColumns {
    /// The item's stable id (text).
    pub id: &'static str,
    /// The item's readable key (text), which may change.
    pub key: &'static str,
    /// The shard the item's rows are stored in (text).
    pub shard: &'static str,
    /// When the source last changed the item (timestamp, microseconds).
    pub updated: &'static str,
    /// A text column that changes without an event (Jira's SLA), kept current by
    /// [`PushSource::refresh`].
    pub watched: &'static str,
}

/// What Quiver holds about an item, from the head table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// [`HeadColumns::key`].
    pub key: String,
    /// [`HeadColumns::shard`].
    pub shard: String,
    /// [`HeadColumns::updated`].
    pub updated: Option<i64>,
    /// [`HeadColumns::watched`].
    pub watched: Option<String>,
}

/// Every item Quiver holds of a source, by id.
pub type HeldItems = HashMap<String, Held>;

/// An item a delivery or a job names.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Target {
    /// What the source's API accepts to fetch the item (Jira: key or id).
    pub reference: String,
    /// The item's id, when known.
    pub id: Option<String>,
    /// The item's shard, when the delivery told it (needed to remove a deleted item).
    #[serde(alias = "month")]
    pub shard: Option<String>,
}

impl Target {
    /// An item known by its id only.
    pub fn by_id(id: String) -> Self {
        Self {
            reference: id.clone(),
            id: Some(id),
            shard: None,
        }
    }
}

/// What a delivery says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The source's name for the event (`jira:issue_updated`), for the log and history.
    pub name: String,
    /// The items it names.
    pub targets: Vec<Target>,
    /// Whether the items were deleted (removed without asking the source).
    pub deleted: bool,
}

/// An item's rows in every table.
#[derive(Debug, Clone)]
pub struct ItemRows {
    /// The item's stable id.
    pub id: String,
    /// The shard its rows go to.
    pub shard: String,
    /// Rows per table, in [`PushSource::tables`] order, as JSON objects keyed by column.
    pub tables: Vec<Vec<Value>>,
}

/// One page of a backfill.
#[derive(Debug, Clone)]
pub struct Page {
    /// The items on the page.
    pub targets: Vec<Target>,
    /// The next page's token; `None` on the last.
    pub next: Option<String>,
}

/// An item in the source's own list (the consistency check).
#[derive(Debug, Clone)]
pub struct Listed {
    /// The item's id.
    pub id: String,
    /// When the source last changed it (microseconds).
    pub updated: Option<i64>,
}

/// How often the background jobs of a push source run.
#[derive(Debug, Clone, Copy)]
pub struct Intervals {
    /// The consistency check ([`PushSource::list`]).
    pub check: Duration,
    /// The refresh of the watched column ([`PushSource::refresh`]).
    pub refresh: Duration,
}

/// Why a delivery was refused, before anything was stored.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Webhooks of the source are not configured (no secret).
    #[error("{0}")]
    Off(String),
    /// The signature is missing or wrong.
    #[error("{0}")]
    Unauthenticated(String),
    /// The body or a header cannot be used; the message says why.
    #[error("{0}")]
    BadPayload(String),
}

/// A source that pushes changes by webhook (see the module doc).
#[async_trait::async_trait]
pub trait PushSource: Send + Sync + std::fmt::Debug {
    /// Its schema, its webhook path (`/webhooks/{name}`) and its configuration section.
    fn name(&self) -> &'static str;

    /// Its tables; the first is the head table, one row per item.
    fn tables(&self) -> &'static [PushTable];

    /// The head table's columns the driver reads.
    fn head(&self) -> HeadColumns;

    /// How often the consistency check and the refresh run.
    fn intervals(&self) -> Intervals;

    /// The largest delivery body accepted, in bytes; [`Refused::Off`] when the source's
    /// webhooks are not configured (checked before the body is read).
    fn max_payload(&self) -> Result<usize, Refused>;

    /// Checks that a delivery comes from the source (its signature), before the body is
    /// parsed; returns the delivery's id when the source sent one (retries repeat it).
    fn authenticate(&self, headers: &HeaderMap, body: &[u8]) -> Result<Option<String>, Refused>;

    /// The items a delivery's payload names.
    fn parse(&self, payload: &Value) -> Result<Event, Refused>;

    /// An item's rows as the source has it now; `None` when the source no longer has it.
    async fn fetch(&self, target: &Target) -> Result<Option<ItemRows>, ConnectorError>;

    /// Rows of `tables()[table]` as one Arrow batch.
    fn batch(&self, table: usize, rows: &[Value]) -> Result<RecordBatch, ConnectorError>;

    /// The (approximate) number of items a backfill query matches.
    async fn count(&self, query: &str) -> Result<u64, ConnectorError>;

    /// One page of the items a backfill query matches.
    async fn page(&self, query: &str, token: Option<&str>) -> Result<Page, ConnectorError>;

    /// The source's list of the items in Quiver's scope, with their change times; `None`
    /// when nothing is in scope.
    async fn list(&self, held: &HeldItems) -> Result<Option<Vec<Listed>>, ConnectorError>;

    /// Head rows, as the source has them now, of the items whose watched column may have
    /// changed without an event.
    async fn refresh(&self, held: &HeldItems) -> Result<Vec<Value>, ConnectorError>;
}
