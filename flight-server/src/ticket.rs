//! Signed, self-contained handles: tickets for `DoGet` and prepared-statement handles.
//!
//! A handle is `base64url(json) "." base64url(HMAC-SHA256(kind, json))`. It carries
//! everything needed to serve it (statement, parameters, principal, expiry), so any replica
//! can serve any `DoGet`, and the MAC makes it useless to anyone it was not issued to.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use quiver_catalog::engine::Layout;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use sha2::Sha256;
use tonic::Status;

/// A ticket for the results of one query.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct QueryTicket {
    /// Identifies the query for cancellation and logs.
    pub query_id: String,
    /// E-mail of the principal the ticket was issued to.
    pub user: String,
    /// The SQL text.
    pub sql: String,
    /// The session's schema, for unqualified table names (`None`: the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Bound parameters as an Arrow IPC stream (one execution per row), if any.
    #[serde(default, with = "b64_opt")]
    pub params: Option<Vec<u8>>,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    /// For a result fetched in parts: which part this is, and how the result is split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part: Option<(usize, Layout)>,
}

/// A prepared statement's handle.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PreparedHandle {
    /// Identifies the statement (bound parameters are also kept under it).
    pub id: String,
    /// E-mail of the principal that prepared it.
    pub user: String,
    /// The SQL text.
    pub sql: String,
    /// The session's schema when it was prepared, for unqualified table names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// Bound parameters as an Arrow IPC stream, once bound.
    #[serde(default, with = "b64_opt")]
    pub params: Option<Vec<u8>>,
}

/// Signs and checks handles with the server's secret.
#[derive(Clone)]
pub(crate) struct Sealer {
    key: Vec<u8>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    /// A sealer using `key` (the server secret).
    pub(crate) fn new(key: &[u8]) -> Self {
        Self { key: key.to_vec() }
    }

    fn mac(&self, kind: &str, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key size");
        mac.update(kind.as_bytes());
        mac.update(b"\0");
        mac.update(payload);
        mac
    }

    /// Serializes and signs `value` as a handle of `kind`.
    pub(crate) fn seal<T: Serialize>(&self, kind: &str, value: &T) -> Bytes {
        let payload = serde_json::to_vec(value).expect("handles serialize");
        let tag = self.mac(kind, &payload).finalize().into_bytes();
        format!("{}.{}", B64.encode(&payload), B64.encode(tag)).into()
    }

    /// Checks the signature (in constant time) and decodes a handle of `kind`.
    pub(crate) fn open<T: DeserializeOwned>(&self, kind: &str, handle: &[u8]) -> Result<T, Status> {
        let invalid = || Status::invalid_argument(format!("invalid or tampered {kind} handle"));
        let text = std::str::from_utf8(handle).map_err(|_| invalid())?;
        let (payload, tag) = text.split_once('.').ok_or_else(invalid)?;
        let payload = B64.decode(payload).map_err(|_| invalid())?;
        let tag = B64.decode(tag).map_err(|_| invalid())?;
        self.mac(kind, &payload)
            .verify_slice(&tag)
            .map_err(|_| invalid())?;
        serde_json::from_slice(&payload).map_err(|_| invalid())
    }
}

mod b64_opt {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(bytes) => s.serialize_some(&STANDARD.encode(bytes)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| STANDARD.decode(s).map_err(D::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket() -> QueryTicket {
        QueryTicket {
            query_id: "q1".into(),
            user: "ada@example.com".into(),
            sql: "SELECT 1".into(),
            schema: Some("tpch".into()),
            params: Some(vec![1, 2, 3]),
            exp: 42,
            part: None,
        }
    }

    #[test]
    fn round_trip_and_tamper_detection() {
        let sealer = Sealer::new(b"0123456789abcdef0123456789abcdef");
        let sealed = sealer.seal("ticket", &ticket());
        let opened: QueryTicket = sealer.open("ticket", &sealed).unwrap();
        assert_eq!(opened.sql, "SELECT 1");
        assert_eq!(opened.params, Some(vec![1, 2, 3]));

        // Another kind, another key, or a changed payload are all refused.
        assert!(sealer.open::<QueryTicket>("prepared", &sealed).is_err());
        assert!(
            Sealer::new(b"another key")
                .open::<QueryTicket>("ticket", &sealed)
                .is_err()
        );
        let text = std::str::from_utf8(&sealed).unwrap();
        let (payload, tag) = text.split_once('.').unwrap();
        let mut forged = ticket();
        forged.user = "mallory@example.com".into();
        let forged_payload = B64.encode(serde_json::to_vec(&forged).unwrap());
        assert_ne!(forged_payload, payload);
        let forged = format!("{forged_payload}.{tag}");
        assert!(
            sealer
                .open::<QueryTicket>("ticket", forged.as_bytes())
                .is_err()
        );
    }
}
