//! Connections kept between the queries of remote tables, so a query does not pay for a new
//! connection, its TLS handshake and its sign-in each time (several round trips, and SCRAM's
//! key stretching on both sides). A connection is kept only after its statement ended
//! cleanly; one idle for [`IDLE_FOR`] is closed.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio_postgres::Client;

use super::PostgresOptions;

/// How long a kept connection may wait for its next query.
const IDLE_FOR: Duration = Duration::from_secs(60);
/// Connections kept at most, across all sources.
const MOST_KEPT: usize = 8;

/// Where a connection goes and as whom: a digest of the options it was opened with, so the
/// password is not kept beyond the query that resolved it.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct Key([u8; 32]);

impl Key {
    pub(super) fn of(options: &PostgresOptions) -> Self {
        let port = options.port.to_string();
        let mut digest = Sha256::new();
        for part in [
            options.host.as_str(),
            port.as_str(),
            options.database.as_str(),
            options.user.as_str(),
            options.password.as_deref().unwrap_or_default(),
            options.sslmode.as_str(),
            options.ca_cert.as_deref().unwrap_or_default(),
        ] {
            digest.update((part.len() as u64).to_le_bytes());
            digest.update(part.as_bytes());
        }
        Self(digest.finalize().into())
    }
}

static KEPT: Mutex<Vec<(Key, Client, Instant)>> = Mutex::new(Vec::new());

fn kept() -> std::sync::MutexGuard<'static, Vec<(Key, Client, Instant)>> {
    KEPT.lock().unwrap_or_else(|e| e.into_inner())
}

/// Closes the connections idle too long or closed by the server.
fn expire(kept: &mut Vec<(Key, Client, Instant)>) {
    kept.retain(|(_, client, since)| since.elapsed() < IDLE_FOR && !client.is_closed());
}

/// A kept connection to where `key` says, if there is one.
pub(super) fn take(key: &Key) -> Option<Client> {
    let mut kept = kept();
    expire(&mut kept);
    let i = kept.iter().rposition(|(k, ..)| k == key)?;
    Some(kept.swap_remove(i).1)
}

/// Keeps `client`, whose last statement ended cleanly, for the next query.
pub(super) fn keep(key: Key, client: Client) {
    if client.is_closed() {
        return;
    }
    let mut kept = kept();
    kept.push((key, client, Instant::now()));
    if kept.len() > MOST_KEPT {
        kept.remove(0);
    }
    // Closed on time even if no other query comes.
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async {
            tokio::time::sleep(IDLE_FOR).await;
            expire(&mut self::kept());
        });
    }
}
