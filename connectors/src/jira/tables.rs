//! The six tables of schema `jira` and how a Jira issue becomes rows of them.
//!
//! Every row carries its issue's id and key and `issue_month` (`YYYY-MM`, UTC), the month
//! the issue was created: the tables are stored in monthly shards by it. Times are UTC
//! timestamps; rich text (Atlassian Document Format) is stored as plain text beside the
//! HTML Jira renders; fields Quiver has no column for stay queryable as JSON
//! (`custom_fields`, `sla`).

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use serde_json::{Map, Value, json};

use super::client::FetchedIssue;
use crate::ConnectorError;
use crate::push::ItemRows;

/// The tables, in the order [`ItemRows::tables`] holds their rows.
pub(crate) const TABLES: [&str; 6] = [
    "issues",
    "comments",
    "attachments",
    "changelog",
    "issuelinks",
    "remote_links",
];

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn text_list() -> DataType {
    DataType::List(Arc::new(Field::new_list_field(DataType::Utf8, true)))
}

fn schema_of(columns: &[(&str, DataType)]) -> SchemaRef {
    let issue = [("issue_id", DataType::Utf8), ("issue_key", DataType::Utf8)];
    let fields = issue
        .iter()
        .chain(columns)
        .map(|(name, ty)| {
            Field::new(
                *name,
                ty.clone(),
                !matches!(*name, "issue_id" | "issue_key"),
            )
        })
        .chain([Field::new("issue_month", DataType::Utf8, false)]);
    Arc::new(Schema::new(fields.collect::<Vec<_>>()))
}

static SCHEMAS: LazyLock<[SchemaRef; 6]> = LazyLock::new(|| {
    use DataType::{Date32, Int64, Utf8};
    [
        schema_of(&[
            ("project_key", Utf8),
            ("project_name", Utf8),
            ("issue_type", Utf8),
            ("summary", Utf8),
            ("description", Utf8),
            ("description_html", Utf8),
            ("status", Utf8),
            ("status_category", Utf8),
            ("priority", Utf8),
            ("resolution", Utf8),
            ("assignee", Utf8),
            ("assignee_account_id", Utf8),
            ("reporter", Utf8),
            ("reporter_account_id", Utf8),
            ("creator", Utf8),
            ("labels", text_list()),
            ("components", text_list()),
            ("fix_versions", text_list()),
            ("parent_key", Utf8),
            ("created", ts()),
            ("updated", ts()),
            ("resolved", ts()),
            ("due_date", Date32),
            ("sla", Utf8),
            ("custom_fields", Utf8),
        ]),
        schema_of(&[
            ("comment_id", Utf8),
            ("author", Utf8),
            ("author_account_id", Utf8),
            ("body", Utf8),
            ("body_html", Utf8),
            ("created", ts()),
            ("updated", ts()),
        ]),
        schema_of(&[
            ("attachment_id", Utf8),
            ("filename", Utf8),
            ("author", Utf8),
            ("author_account_id", Utf8),
            ("created", ts()),
            ("size", Int64),
            ("mime_type", Utf8),
            ("content_url", Utf8),
        ]),
        schema_of(&[
            ("history_id", Utf8),
            ("author", Utf8),
            ("author_account_id", Utf8),
            ("created", ts()),
            ("field", Utf8),
            ("field_type", Utf8),
            ("from_value", Utf8),
            ("from_string", Utf8),
            ("to_value", Utf8),
            ("to_string", Utf8),
        ]),
        schema_of(&[
            ("link_id", Utf8),
            ("link_type", Utf8),
            ("direction", Utf8),
            ("relation", Utf8),
            ("linked_issue_id", Utf8),
            ("linked_issue_key", Utf8),
        ]),
        schema_of(&[
            ("remote_link_id", Utf8),
            ("global_id", Utf8),
            ("url", Utf8),
            ("title", Utf8),
            ("relationship", Utf8),
            ("application", Utf8),
        ]),
    ]
});

/// The schema of table `TABLES[index]`.
pub(crate) fn schema(index: usize) -> SchemaRef {
    SCHEMAS[index].clone()
}

/// Splits a fetched issue into rows of the six tables; its shard is the month it was
/// created.
pub(crate) fn issue_rows(fetched: &FetchedIssue) -> Result<ItemRows, ConnectorError> {
    let issue = &fetched.issue;
    let head = issue_row(issue)?;
    let (id, key, month) = (
        head["issue_id"].as_str().unwrap_or_default().to_string(),
        head["issue_key"].as_str().unwrap_or_default().to_string(),
        head["issue_month"].as_str().unwrap_or_default().to_string(),
    );
    let row = |mut columns: Map<String, Value>| {
        columns.insert("issue_id".into(), json!(id));
        columns.insert("issue_key".into(), json!(key));
        columns.insert("issue_month".into(), json!(month));
        Value::Object(columns)
    };
    let fields = &issue["fields"];
    let rendered = &issue["renderedFields"];

    let rendered_comments = rendered["comment"]["comments"].as_array();
    let comments = list(&fields["comment"]["comments"])
        .enumerate()
        .map(|(i, c)| {
            let html = c
                .get("renderedBody")
                .or_else(|| rendered_comments.and_then(|r| r.get(i)).map(|r| &r["body"]));
            row(obj(json!({
                "comment_id": text(&c["id"]),
                "author": c["author"]["displayName"],
                "author_account_id": c["author"]["accountId"],
                "body": adf_text(&c["body"]),
                "body_html": html.cloned().unwrap_or(Value::Null),
                "created": time(&c["created"]),
                "updated": time(&c["updated"]),
            })))
        })
        .collect();
    let attachments = list(&fields["attachment"])
        .map(|a| {
            row(obj(json!({
                "attachment_id": text(&a["id"]),
                "filename": a["filename"],
                "author": a["author"]["displayName"],
                "author_account_id": a["author"]["accountId"],
                "created": time(&a["created"]),
                "size": a["size"],
                "mime_type": a["mimeType"],
                "content_url": a["content"],
            })))
        })
        .collect();
    let changelog = list(&issue["changelog"]["histories"])
        .flat_map(|h| {
            list(&h["items"]).map(move |item| {
                obj(json!({
                    "history_id": text(&h["id"]),
                    "author": h["author"]["displayName"],
                    "author_account_id": h["author"]["accountId"],
                    "created": time(&h["created"]),
                    "field": item["field"],
                    "field_type": item["fieldtype"],
                    "from_value": text(&item["from"]),
                    "from_string": item["fromString"],
                    "to_value": text(&item["to"]),
                    "to_string": item["toString"],
                }))
            })
        })
        .map(row)
        .collect();
    let links = list(&fields["issuelinks"])
        .map(|l| {
            let (direction, other, relation) = if l.get("outwardIssue").is_some() {
                ("outward", &l["outwardIssue"], &l["type"]["outward"])
            } else {
                ("inward", &l["inwardIssue"], &l["type"]["inward"])
            };
            row(obj(json!({
                "link_id": text(&l["id"]),
                "link_type": l["type"]["name"],
                "direction": direction,
                "relation": relation,
                "linked_issue_id": text(&other["id"]),
                "linked_issue_key": other["key"],
            })))
        })
        .collect();
    let remote = fetched
        .remote_links
        .iter()
        .map(|r| {
            row(obj(json!({
                "remote_link_id": text(&r["id"]),
                "global_id": r["globalId"],
                "url": r["object"]["url"],
                "title": r["object"]["title"],
                "relationship": r["relationship"],
                "application": r["application"]["name"],
            })))
        })
        .collect();
    Ok(ItemRows {
        id,
        shard: month,
        tables: vec![vec![head], comments, attachments, changelog, links, remote],
    })
}

/// The `issues` row of an issue (as the issue or search endpoints return it).
pub(crate) fn issue_row(issue: &Value) -> Result<Value, ConnectorError> {
    let fields = &issue["fields"];
    let key = issue["key"].as_str().unwrap_or_default();
    let id = text(&issue["id"]);
    let created = time(&fields["created"]);
    let month = match (&id, created.as_str()) {
        (Value::String(_), Some(c)) if !key.is_empty() => c[..7].to_string(),
        _ => {
            return Err(ConnectorError::Source(format!(
                "Jira sent an issue without id, key or creation time (`{key}`)"
            )));
        }
    };
    let names = |v: &Value| -> Value {
        list(v)
            .map(|x| x.get("name").cloned().unwrap_or_else(|| x.clone()))
            .collect()
    };
    let mut custom = Map::new();
    let mut sla = Map::new();
    if let Some(all) = fields.as_object() {
        for (name, value) in all
            .iter()
            .filter(|(n, v)| n.starts_with("customfield_") && !v.is_null())
        {
            // Jira Service Management SLA fields carry cycles; they change without events.
            if value.get("completedCycles").is_some() || value.get("ongoingCycle").is_some() {
                sla.insert(name.clone(), value.clone());
            } else {
                custom.insert(name.clone(), value.clone());
            }
        }
    }
    let json_or_null = |m: Map<String, Value>| {
        if m.is_empty() {
            Value::Null
        } else {
            json!(Value::Object(m).to_string())
        }
    };
    Ok(json!({
        "issue_id": id,
        "issue_key": key,
        "project_key": fields["project"]["key"],
        "project_name": fields["project"]["name"],
        "issue_type": fields["issuetype"]["name"],
        "summary": fields["summary"],
        "description": adf_text(&fields["description"]),
        "description_html": issue["renderedFields"]["description"],
        "status": fields["status"]["name"],
        "status_category": fields["status"]["statusCategory"]["name"],
        "priority": fields["priority"]["name"],
        "resolution": fields["resolution"]["name"],
        "assignee": fields["assignee"]["displayName"],
        "assignee_account_id": fields["assignee"]["accountId"],
        "reporter": fields["reporter"]["displayName"],
        "reporter_account_id": fields["reporter"]["accountId"],
        "creator": fields["creator"]["displayName"],
        "labels": fields["labels"],
        "components": names(&fields["components"]),
        "fix_versions": names(&fields["fixVersions"]),
        "parent_key": fields["parent"]["key"],
        "created": created,
        "updated": time(&fields["updated"]),
        "resolved": time(&fields["resolutiondate"]),
        "due_date": fields["duedate"],
        "sla": json_or_null(sla),
        "custom_fields": json_or_null(custom),
        "issue_month": month,
    }))
}

/// Rows of `TABLES[index]` as one Arrow batch.
pub(crate) fn to_batch(index: usize, rows: &[Value]) -> Result<RecordBatch, ConnectorError> {
    let schema = schema(index);
    let mut decoder = arrow::json::ReaderBuilder::new(schema.clone())
        .with_batch_size(rows.len().max(1))
        .build_decoder()?;
    decoder.serialize(rows)?;
    Ok(decoder
        .flush()?
        .unwrap_or_else(|| RecordBatch::new_empty(schema)))
}

fn list(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Ids arrive as strings or numbers; store text.
fn text(v: &Value) -> Value {
    match v {
        Value::Number(n) => json!(n.to_string()),
        other => other.clone(),
    }
}

/// A Jira time (`2026-01-15T10:20:30.000+0100`) as RFC 3339 UTC, or null.
fn time(v: &Value) -> Value {
    v.as_str()
        .and_then(super::parse_time)
        .map(|t| json!(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)))
        .unwrap_or(Value::Null)
}

/// Plain text of an Atlassian Document Format value (or the value itself if it is text).
pub(crate) fn adf_text(doc: &Value) -> Value {
    fn walk(node: &Value, out: &mut String) {
        match node["type"].as_str() {
            Some("text") => out.push_str(node["text"].as_str().unwrap_or_default()),
            Some("hardBreak") => out.push('\n'),
            Some("mention" | "emoji" | "status" | "date") => {
                let attrs = &node["attrs"];
                let shown = attrs["text"].as_str().or(attrs["shortName"].as_str());
                out.push_str(shown.unwrap_or_default());
            }
            Some("inlineCard" | "blockCard") => {
                out.push_str(node["attrs"]["url"].as_str().unwrap_or_default());
            }
            _ => {}
        }
        for child in list(&node["content"]) {
            walk(child, out);
        }
        if matches!(
            node["type"].as_str(),
            Some("paragraph" | "heading" | "listItem" | "codeBlock" | "blockquote" | "rule")
        ) && !out.ends_with('\n')
        {
            out.push('\n');
        }
    }
    match doc {
        Value::String(_) | Value::Null => doc.clone(),
        _ => {
            let mut out = String::new();
            walk(doc, &mut out);
            json!(out.trim_end())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issue() -> FetchedIssue {
        FetchedIssue {
            issue: json!({
                "id": "10042", "key": "ABC-7",
                "fields": {
                    "summary": "Zahlung fehlgeschlagen – 支付失败",
                    "created": "2026-01-31T23:30:00.000-0200",
                    "updated": "2026-02-03T08:00:00.000+0000",
                    "project": {"key": "ABC", "name": "Alpha"},
                    "status": {"name": "In Progress", "statusCategory": {"name": "In Progress"}},
                    "labels": ["billing"], "duedate": "2026-03-01",
                    "description": {"type": "doc", "version": 1, "content": [
                        {"type": "paragraph", "content": [
                            {"type": "text", "text": "Hello "},
                            {"type": "mention", "attrs": {"text": "@Ana"}}]},
                        {"type": "paragraph", "content": [{"type": "text", "text": "Line 2"}]}]},
                    "customfield_10030": {"name": "Time to resolution", "completedCycles": []},
                    "customfield_10011": "Epic name",
                    "comment": {"comments": [{"id": "1", "author": {"displayName": "Ana"},
                        "body": {"type": "doc", "content": [{"type": "paragraph", "content": [{"type": "text", "text": "ok"}]}]},
                        "created": "2026-02-01T10:00:00.000+0100"}], "total": 1},
                    "issuelinks": [{"id": "5", "type": {"name": "Blocks", "inward": "is blocked by", "outward": "blocks"},
                        "outwardIssue": {"id": "10050", "key": "ABC-9"}}],
                },
                "renderedFields": {"description": "<p>Hello @Ana</p>"},
                "changelog": {"histories": [{"id": "77", "created": "2026-02-02T00:00:00.000+0000",
                    "items": [{"field": "status", "fieldtype": "jira", "from": "1", "fromString": "Open",
                               "to": 3, "toString": "In Progress"},
                              {"field": "labels", "fromString": "", "toString": "billing"}]}]},
            }),
            remote_links: vec![json!({"id": 3, "object": {"url": "https://x.io", "title": "X"}})],
        }
    }

    #[test]
    fn an_issue_becomes_rows_of_every_table_in_its_utc_creation_month() {
        let rows = issue_rows(&issue()).unwrap();
        assert_eq!(
            (rows.tables[0][0]["issue_key"].as_str(), rows.shard.as_str()),
            (Some("ABC-7"), "2026-02")
        );
        let counts: Vec<usize> = rows.tables.iter().map(Vec::len).collect();
        assert_eq!(counts, vec![1, 1, 0, 2, 1, 1]);
        let head = &rows.tables[0][0];
        assert_eq!(head["description"], "Hello @Ana\nLine 2");
        assert_eq!(head["created"], "2026-02-01T01:30:00.000000Z");
        assert!(head["sla"].as_str().unwrap().contains("Time to resolution"));
        assert!(
            head["custom_fields"]
                .as_str()
                .unwrap()
                .contains("Epic name")
        );
        assert_eq!(rows.tables[3][0]["to_value"], "3");
        assert_eq!(rows.tables[4][0]["relation"], "blocks");
        for (i, table) in rows.tables.iter().enumerate() {
            let batch = to_batch(i, table).unwrap();
            assert_eq!(batch.num_rows(), table.len(), "{}", TABLES[i]);
            assert_eq!(batch.schema(), schema(i));
        }
    }

    #[test]
    fn an_issue_without_creation_time_is_an_error() {
        let err = issue_row(&json!({"id": "1", "key": "A-1", "fields": {}})).unwrap_err();
        assert!(err.to_string().contains("creation time"), "{err}");
    }
}
