//! Jira's deliveries: the `X-Hub-Signature-256` HMAC of the raw body (checked in constant
//! time) and the issues a payload names.

use hmac::{Hmac, Mac};
use reqwest::header::HeaderMap;
use serde_json::Value;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::{is_issue_key, issue_id, parse_time};
use crate::push::{Event, Refused, Target};

/// Checks the signature of a delivery with `secret`; returns Jira's delivery id
/// (`X-Atlassian-Webhook-Identifier`), if it sent one.
pub(super) fn authenticate(
    secret: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<String>, Refused> {
    let Some(secret) = secret else {
        return Err(Refused::Off(
            "Jira webhooks are off: set jira.webhook_secret in the configuration".into(),
        ));
    };
    let signature = headers
        .get("x-hub-signature-256")
        .and_then(|v| v.to_str().ok())
        .map(str::trim);
    if !signature.is_some_and(|s| signed(secret.as_bytes(), body, s)) {
        return Err(Refused::Unauthenticated(
            "missing or wrong X-Hub-Signature-256 (HMAC-SHA256 of the body with the webhook secret)"
                .into(),
        ));
    }
    let id = headers
        .get("x-atlassian-webhook-identifier")
        .map(|v| v.to_str().unwrap_or("\u{0}").trim())
        .filter(|i| !i.is_empty());
    match id {
        Some(i) if i.len() <= 128 && i.chars().all(|c| c.is_ascii_graphic()) => {
            Ok(Some(i.to_string()))
        }
        Some(_) => Err(Refused::BadPayload(
            "X-Atlassian-Webhook-Identifier must be at most 128 printable characters".into(),
        )),
        None => Ok(None),
    }
}

/// The issues a webhook payload names: `issue` (issue, comment, attachment, worklog events)
/// or both ends of an `issueLink`.
pub(super) fn parse(payload: &Value) -> Result<Event, Refused> {
    let name = payload["webhookEvent"]
        .as_str()
        .unwrap_or("unknown")
        .to_string();
    let deleted = name == "jira:issue_deleted";
    Ok(Event {
        targets: targets(payload)?,
        name,
        deleted,
    })
}

fn targets(payload: &Value) -> Result<Vec<Target>, Refused> {
    let bad = Refused::BadPayload;
    if let Some(issue) = payload.get("issue") {
        let key = issue["key"]
            .as_str()
            .ok_or_else(|| bad("`issue.key` is missing".into()))?;
        if !is_issue_key(key) {
            return Err(bad(format!(
                "`{}` is not a Jira issue key (like ABC-123)",
                key.chars().take(60).collect::<String>()
            )));
        }
        let shard = issue["fields"]["created"]
            .as_str()
            .and_then(parse_time)
            .map(|t| t.format("%Y-%m").to_string());
        return Ok(vec![Target {
            reference: key.to_string(),
            id: issue_id(&issue["id"]),
            shard,
        }]);
    }
    if let Some(link) = payload.get("issueLink") {
        return ["sourceIssueId", "destinationIssueId"]
            .into_iter()
            .map(|end| {
                issue_id(&link[end])
                    .map(Target::by_id)
                    .ok_or_else(|| bad(format!("`issueLink.{end}` is not an issue id")))
            })
            .collect();
    }
    Err(bad(
        "the payload names no issue (expected `issue` or `issueLink`)".into(),
    ))
}

/// Whether `signature` (`sha256=<hex>`, the prefix optional) is the body's HMAC.
fn signed(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let hex = signature.strip_prefix("sha256=").unwrap_or(signature);
    let Some(given) = decode_hex(hex) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key");
    mac.update(body);
    mac.finalize().into_bytes().ct_eq(given.as_slice()).into()
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() != 64 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn signatures_with_or_without_prefix() {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(b"{}");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert!(signed(b"s3cret", b"{}", &format!("sha256={hex}")));
        assert!(signed(b"s3cret", b"{}", &hex.to_uppercase()));
        assert!(!signed(b"other", b"{}", &hex));
        assert!(!signed(b"s3cret", b"{ }", &hex));
        assert!(!signed(b"s3cret", b"{}", "sha256=zz"));
        assert!(!signed(b"s3cret", b"{}", ""));
    }

    #[test]
    fn payloads_name_their_issues_or_are_refused() {
        let event = parse(&json!({"webhookEvent": "jira:issue_updated",
            "issue": {"id": "10001", "key": "ABC-1", "fields": {"created": "2026-03-01T00:30:00.000+0100"}}}))
        .unwrap();
        assert_eq!(
            event.targets,
            vec![Target {
                reference: "ABC-1".into(),
                id: Some("10001".into()),
                shard: Some("2026-02".into())
            }]
        );
        assert!(!event.deleted);
        let event = parse(&json!({"webhookEvent": "jira:issue_deleted",
            "issueLink": {"sourceIssueId": 1, "destinationIssueId": "2"}}))
        .unwrap();
        assert_eq!(event.targets.len(), 2);
        assert!(event.deleted);
        for bad in [
            json!({"issue": {"key": "abc-1"}}),
            json!({"issue": {"key": "ABC-1; DROP"}}),
            json!({"issue": {}}),
            json!({"issueLink": {"sourceIssueId": "../x", "destinationIssueId": 2}}),
            json!({"user": {}}),
        ] {
            assert!(matches!(parse(&bad), Err(Refused::BadPayload(_))), "{bad}");
        }
    }

    #[test]
    fn deliveries_need_a_secret_and_its_signature() {
        let headers = HeaderMap::new();
        assert!(matches!(
            authenticate(None, &headers, b"{}"),
            Err(Refused::Off(m)) if m.contains("webhook_secret")
        ));
        assert!(matches!(
            authenticate(Some("s3cret-s3cret-s3cret"), &headers, b"{}"),
            Err(Refused::Unauthenticated(_))
        ));
    }
}
