//! Webhook deliveries, recorded when they arrive and kept until processed.
//!
//! A delivery is identified by the sender's delivery id (Jira's
//! `X-Atlassian-Webhook-Identifier`): recording one twice has no effect, so a retried
//! delivery is processed once. Its raw body is in the object store (`payload` is the key),
//! written before the delivery is recorded; a pending delivery survives a restart.

use crate::state::{Timestamp, params};
use serde::Serialize;

use crate::CatalogError;
use crate::state::StateStore;

/// A delivery as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDelivery {
    /// The sender, e.g. `jira`.
    pub source: String,
    /// The sender's delivery id.
    pub id: String,
    /// The event, e.g. `jira:issue_updated`.
    pub event: String,
    /// What it is about, e.g. an issue key.
    pub subject: String,
    /// What the processor needs from the payload, as JSON.
    pub detail: serde_json::Value,
    /// Object-store key of the raw body.
    pub payload: String,
}

/// A delivery waiting to be processed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The sender's delivery id.
    pub id: String,
    /// The event.
    pub event: String,
    /// What it is about.
    pub subject: String,
    /// What the processor needs from the payload.
    pub detail: serde_json::Value,
    /// Attempts so far.
    pub attempts: i32,
}

/// How many deliveries of a source are waiting and done.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DeliveryCounts {
    /// Waiting to be processed (or retried).
    pub pending: i64,
    /// Processed.
    pub done: i64,
}

/// Received webhook deliveries (see [`StateStore::webhooks`]).
pub struct Webhooks<'a>(pub(super) &'a StateStore);

impl Webhooks<'_> {
    /// Records a delivery; returns `false` when one with its id was recorded before.
    pub fn record_delivery(&self, new: &NewDelivery) -> Result<bool, CatalogError> {
        let inserted = self.0.conn()?.execute(
            "INSERT INTO webhook_deliveries (source, delivery_id, event, subject, detail, payload, status)
             VALUES ($1, $2, $3, $4, $5, $6, 'pending') ON CONFLICT DO NOTHING",
            params![
                new.source,
                new.id,
                new.event,
                new.subject,
                new.detail.to_string(),
                new.payload
            ],
        )?;
        Ok(inserted == 1)
    }

    /// Deliveries due for processing, oldest first.
    pub fn due_deliveries(
        &self,
        source: &str,
        limit: usize,
    ) -> Result<Vec<Delivery>, CatalogError> {
        let conn = self.0.conn()?;
        let rows = conn.query_map("SELECT delivery_id, event, subject, detail, attempts FROM webhook_deliveries
             WHERE source = $1 AND status = 'pending' AND next_attempt_at <= current_timestamp::TIMESTAMP
             ORDER BY received_at, delivery_id LIMIT $2", params![source, limit as i64], |r| {
                let detail: String = r.get(3)?;
                Ok(Delivery {
                    id: r.get(0)?,
                    event: r.get(1)?,
                    subject: r.get(2)?,
                    detail: serde_json::from_str(&detail).unwrap_or_default(),
                    attempts: r.get(4)?,
                })
            })?;
        Ok(rows)
    }

    /// Marks deliveries processed.
    pub fn finish_deliveries(&self, source: &str, ids: &[String]) -> Result<(), CatalogError> {
        self.0.transaction(|tx| {
            for id in ids {
                tx.execute(
                    "UPDATE webhook_deliveries SET status = 'done', processed_at = current_timestamp,
                            attempts = attempts + 1, error = NULL
                     WHERE source = $1 AND delivery_id = $2",
                    params![source, id],
                )?;
            }
            Ok(())
        })
    }

    /// Leaves a delivery pending, to be tried again after `delay`, with the error seen.
    pub fn postpone_delivery(
        &self,
        source: &str,
        id: &str,
        error: &str,
        delay: std::time::Duration,
    ) -> Result<(), CatalogError> {
        self.0.conn()?.execute(
            "UPDATE webhook_deliveries SET attempts = attempts + 1, error = $1,
                    next_attempt_at = $2
             WHERE source = $3 AND delivery_id = $4",
            params![error, Timestamp::now().plus(delay), source, id],
        )?;
        Ok(())
    }

    /// Forgets deliveries processed more than `age` ago (a retry of one would now count as
    /// new; Jira retries for hours, not days); returns their payloads' keys to delete.
    pub fn forget_deliveries(
        &self,
        source: &str,
        age: std::time::Duration,
    ) -> Result<Vec<String>, CatalogError> {
        let cutoff = Timestamp::now().minus(age);
        self.0.transaction(|tx| {
            let payloads: Vec<String> = tx.query_map(
                "SELECT payload FROM webhook_deliveries
                 WHERE status = 'done' AND source = $1 AND processed_at < $2",
                params![source, cutoff],
                |r| r.get(0),
            )?;
            tx.execute(
                "DELETE FROM webhook_deliveries
                 WHERE status = 'done' AND source = $1 AND processed_at < $2",
                params![source, cutoff],
            )?;
            Ok(payloads)
        })
    }

    /// How many deliveries of `source` are pending and done.
    pub fn delivery_counts(&self, source: &str) -> Result<DeliveryCounts, CatalogError> {
        self.0.conn()?.query_row(
            "SELECT count(*) FILTER (WHERE status = 'pending'), count(*) FILTER (WHERE status = 'done')
             FROM webhook_deliveries WHERE source = $1",
            params![source],
            |r| {
                Ok(DeliveryCounts {
                    pending: r.get(0)?,
                    done: r.get(1)?,
                })
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_is_recorded_once_and_retried_until_done() {
        let store = StateStore::in_memory().unwrap();
        let new = NewDelivery {
            source: "jira".into(),
            id: "d-1".into(),
            event: "jira:issue_updated".into(),
            subject: "ABC-1".into(),
            detail: serde_json::json!({"issue_id": "10001"}),
            payload: "webhooks/jira/d-1.json".into(),
        };
        assert!(store.webhooks().record_delivery(&new).unwrap());
        assert!(!store.webhooks().record_delivery(&new).unwrap());
        let due = store.webhooks().due_deliveries("jira", 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].detail["issue_id"], "10001");

        store
            .webhooks()
            .postpone_delivery(
                "jira",
                "d-1",
                "Jira answered 502",
                std::time::Duration::from_secs(60),
            )
            .unwrap();
        assert!(
            store
                .webhooks()
                .due_deliveries("jira", 10)
                .unwrap()
                .is_empty()
        );
        store
            .webhooks()
            .postpone_delivery("jira", "d-1", "again", std::time::Duration::ZERO)
            .unwrap();
        assert_eq!(
            store.webhooks().due_deliveries("jira", 10).unwrap()[0].attempts,
            2
        );
        store
            .webhooks()
            .finish_deliveries("jira", &["d-1".into()])
            .unwrap();
        assert_eq!(
            store.webhooks().delivery_counts("jira").unwrap(),
            DeliveryCounts {
                pending: 0,
                done: 1
            }
        );
    }
}
