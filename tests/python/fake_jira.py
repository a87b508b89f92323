"""A local stand-in for Jira Cloud's REST API v3, serving Atlassian's documented payload shapes
(the real service cannot be reached from the test machines):

- `GET /rest/api/3/issue/{issueIdOrKey}?expand=renderedFields,changelog`: the issue with
  `fields` (ADF description, `comment` and `changelog` embedded but truncated to a few
  entries with their `total`, like Jira does), `renderedFields` (HTML), 404 once deleted;
- `GET …/issue/{k}/comment?startAt&maxResults&expand=renderedBody` and
  `GET …/issue/{k}/changelog?startAt&maxResults` (paged, `values` + `isLast`);
- `GET …/issue/{k}/remotelink`: the issue's remote links (a bare list);
- `POST /rest/api/3/search/jql` `{jql, fields, maxResults, nextPageToken}` → `{issues,
  nextPageToken?, isLast}`; `POST /rest/api/3/search/approximate-count` `{jql}` → `{count}`.
  JQL: `project = X`, `project in (X, "Y")`, `statusCategory != Done`, joined by AND.
- `webhook_payload(event, key)`: what Jira POSTs to a webhook for that event.

Every call needs Basic auth with the configured e-mail and API token; others get 401.
"""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import json
import re
import threading
import urllib.parse
from http.server import ThreadingHTTPServer

from fake_http import JsonHandler

EMBEDDED = 2  # comments and histories Jira embeds in the issue before one must page


def jira_time(t: dt.datetime) -> str:
    """Jira's time format: `2026-01-15T10:20:30.000+0100`."""
    return t.strftime("%Y-%m-%dT%H:%M:%S.000%z")


def adf(text: str) -> dict:
    return {"type": "doc", "version": 1, "content": [
        {"type": "paragraph", "content": [{"type": "text", "text": line}]} for line in text.split("\n")]}


class FakeJira:
    def __init__(self, email: str, token: str):
        self.auth = "Basic " + base64.b64encode(f"{email}:{token}".encode()).decode()
        self.issues: dict[str, dict] = {}   # by key
        self.fetches: dict[str, int] = {}   # GET issue calls by key
        self.failing: set[str] = set()      # keys whose GET answers 500
        self.hold = threading.Event()       # cleared: issue GETs wait (a slow Jira)
        self.hold.set()
        self._ids = itertools.count(10001)
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def stop(self):
        self.hold.set()
        self.httpd.shutdown()

    # ----- the data -------------------------------------------------------------------

    def create(self, key: str, created: dt.datetime, summary: str, *, comments: int = 0,
               attachments: int = 0, links: list[str] = (), remote_links: int = 0,
               histories: int = 0, status: str = "To Do", sla: dict | None = None) -> dict:
        with self._lock:
            issue = {
                "id": str(next(self._ids)), "key": key, "project": key.split("-")[0],
                "summary": summary, "description": f"Beschreibung von {key}\nzweite Zeile ✓",
                "created": created, "updated": created, "status": status,
                "labels": ["backend", "ünïcödé"], "sla": sla,
                "comments": [], "attachments": [], "links": list(links),
                "remote_links": [], "histories": [],
            }
            self.issues[key] = issue
        for i in range(comments):
            self.comment(key, f"Kommentar {i} zu {key} — 评论 {i}", touch=False)
        for i in range(attachments):
            issue["attachments"].append({"id": str(next(self._ids)), "filename": f"log-{i}.txt",
                                         "size": 100 + i, "mimeType": "text/plain"})
        for i in range(remote_links):
            issue["remote_links"].append({"id": next(self._ids), "globalId": f"system=x&id={i}",
                                          "url": f"https://ci.example.com/build/{i}", "title": f"Build {i}"})
        for i in range(histories):
            self._history(issue, "priority", f"P{i}", f"P{i + 1}")
        return issue

    def comment(self, key: str, body: str, touch: bool = True):
        with self._lock:
            issue = self.issues[key]
            when = issue["created"] + dt.timedelta(minutes=len(issue["comments"]) + 1)
            issue["comments"].append({"id": str(next(self._ids)), "body": body, "created": when})
            if touch:
                issue["updated"] = max(issue["updated"], when) + dt.timedelta(seconds=1)

    def update(self, key: str, **changes):
        with self._lock:
            issue = self.issues[key]
            for field, value in changes.items():
                self._history(issue, field, str(issue.get(field)), str(value))
                issue[field] = value
            issue["updated"] = issue["updated"] + dt.timedelta(hours=1)

    def delete(self, key: str) -> dict:
        with self._lock:
            return self.issues.pop(key)

    def _history(self, issue: dict, field: str, old: str, new: str):
        when = issue["updated"] + dt.timedelta(minutes=len(issue["histories"]) + 1)
        issue["histories"].append({
            "id": str(next(self._ids)), "author": {"accountId": "557058:f00", "displayName": "Zoë"},
            "created": jira_time(when),
            "items": [{"field": field, "fieldtype": "jira", "from": None, "fromString": old,
                       "to": None, "toString": new}]})

    # ----- Jira's shapes ----------------------------------------------------------------

    def _user(self, name: str) -> dict:
        return {"accountId": f"557058:{name.lower()}", "displayName": name}

    def _comment_json(self, c: dict, rendered: bool = False) -> dict:
        out = {"id": c["id"], "author": self._user("Ana"), "body": adf(c["body"]),
               "created": jira_time(c["created"]), "updated": jira_time(c["created"])}
        if rendered:
            out["renderedBody"] = f"<p>{c['body']}</p>"
        return out

    def issue_json(self, issue: dict, expand: bool = True) -> dict:
        done = issue["status"] == "Done"
        fields = {
            "summary": issue["summary"], "description": adf(issue["description"]),
            "created": jira_time(issue["created"]), "updated": jira_time(issue["updated"]),
            "project": {"key": issue["project"], "name": f"Project {issue['project']}"},
            "issuetype": {"name": "Bug"},
            "status": {"name": issue["status"],
                       "statusCategory": {"name": "Done" if done else "To Do", "key": "done" if done else "new"}},
            "priority": {"name": "High"}, "resolution": {"name": "Fixed"} if done else None,
            "resolutiondate": jira_time(issue["updated"]) if done else None,
            "assignee": self._user("Ana"), "reporter": self._user("Zoë"), "creator": self._user("Zoë"),
            "labels": issue["labels"], "components": [{"id": "1", "name": "API"}],
            "fixVersions": [], "duedate": "2026-12-24", "customfield_10020": "Sprint 7",
            "comment": {"comments": [self._comment_json(c) for c in issue["comments"][:EMBEDDED]],
                        "maxResults": EMBEDDED, "total": len(issue["comments"]), "startAt": 0},
            "attachment": [{"id": a["id"], "filename": a["filename"], "author": self._user("Ana"),
                            "created": jira_time(issue["created"]), "size": a["size"], "mimeType": a["mimeType"],
                            "content": f"{self.url}/rest/api/3/attachment/content/{a['id']}"}
                           for a in issue["attachments"]],
            "issuelinks": [{"id": f"{issue['id']}{n}", "type": {"name": "Blocks", "inward": "is blocked by",
                                                               "outward": "blocks"},
                            "outwardIssue": {"id": self.issues[other]["id"] if other in self.issues else "0",
                                             "key": other}}
                           for n, other in enumerate(issue["links"])],
        }
        if issue["sla"] is not None:
            fields["customfield_10030"] = {"id": "1", "name": "Time to resolution", "completedCycles": [],
                                           "ongoingCycle": issue["sla"]}
        out = {"id": issue["id"], "key": issue["key"], "self": f"{self.url}/rest/api/3/issue/{issue['id']}",
               "fields": fields}
        if expand:
            out["renderedFields"] = {"description": f"<p>{issue['description']}</p>",
                                     "comment": {"comments": [{"body": f"<p>{c['body']}</p>"}
                                                              for c in issue["comments"][:EMBEDDED]]}}
            out["changelog"] = {"startAt": 0, "maxResults": EMBEDDED, "total": len(issue["histories"]),
                                "histories": issue["histories"][:EMBEDDED]}
        return out

    def webhook_payload(self, event: str, issue: dict) -> dict:
        """The body Jira POSTs for `event` (`jira:issue_created`, `jira:issue_deleted`, …)."""
        return {"timestamp": int(dt.datetime.now().timestamp() * 1000), "webhookEvent": event,
                "issue_event_type_name": event.split(":")[-1], "user": self._user("Ana"),
                "issue": self.issue_json(issue, expand=False)}

    def _find(self, ref: str) -> dict | None:
        with self._lock:
            if ref in self.issues:
                return self.issues[ref]
            return next((i for i in self.issues.values() if i["id"] == ref), None)

    def _matching(self, jql: str) -> list[dict]:
        with self._lock:
            issues = list(self.issues.values())
        for clause in re.split(r"\s+AND\s+", jql.strip(), flags=re.I):
            clause = clause.strip().strip("()").strip()
            if m := re.fullmatch(r"project\s*=\s*\"?(\w+)\"?", clause, re.I):
                issues = [i for i in issues if i["project"] == m.group(1)]
            elif m := re.fullmatch(r"project\s+in\s*\((.*)\)?", clause, re.I):
                wanted = {p.strip().strip('"') for p in m.group(1).rstrip(")").split(",")}
                issues = [i for i in issues if i["project"] in wanted]
            elif re.fullmatch(r"statusCategory\s*!=\s*Done", clause, re.I):
                issues = [i for i in issues if i["status"] != "Done"]
            else:
                raise ValueError(f"the fake does not understand JQL `{clause}`")
        return sorted(issues, key=lambda i: int(i["id"]))

    def _handler(self):
        fake = self

        class Handler(JsonHandler):
            def _authorized(self) -> bool:
                if self.headers.get("authorization") != fake.auth:
                    self._send(401, {"errorMessages": ["Client must be authenticated to access this resource."]})
                    return False
                return True

            def do_GET(self):
                if not self._authorized():
                    return
                url = urllib.parse.urlparse(self.path)
                query = dict(urllib.parse.parse_qsl(url.query))
                m = re.fullmatch(r"/rest/api/3/issue/([^/]+)(?:/(comment|changelog|remotelink))?", url.path)
                if not m:
                    return self._send(404, {"errorMessages": ["Not found"]})
                ref, sub = m.group(1), m.group(2)
                issue = fake._find(ref)
                if issue is None:
                    return self._send(404, {"errorMessages": ["Issue does not exist or you do not have permission to see it."]})
                start, size = int(query.get("startAt", 0)), int(query.get("maxResults", 50))
                if sub is None and issue["key"] in fake.failing:
                    return self._send(500, {"errorMessages": ["Internal server error"]})
                if sub is None:
                    fake.hold.wait()
                    with fake._lock:
                        fake.fetches[issue["key"]] = fake.fetches.get(issue["key"], 0) + 1
                    return self._send(200, fake.issue_json(issue))
                if sub == "comment":
                    page = issue["comments"][start:start + size]
                    return self._send(200, {"startAt": start, "maxResults": size, "total": len(issue["comments"]),
                                            "comments": [fake._comment_json(c, "renderedBody" in query.get("expand", ""))
                                                         for c in page]})
                if sub == "changelog":
                    page = issue["histories"][start:start + size]
                    return self._send(200, {"startAt": start, "maxResults": size, "total": len(issue["histories"]),
                                            "isLast": start + size >= len(issue["histories"]), "values": page})
                return self._send(200, [{"id": r["id"], "globalId": r["globalId"],
                                         "application": {"name": "CI", "type": "ci"}, "relationship": "built by",
                                         "object": {"url": r["url"], "title": r["title"]}}
                                        for r in issue["remote_links"]])

            def do_POST(self):
                if not self._authorized():
                    return
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                try:
                    matching = fake._matching(body.get("jql", ""))
                except ValueError as e:
                    return self._send(400, {"errorMessages": [str(e)]})
                if self.path == "/rest/api/3/search/approximate-count":
                    return self._send(200, {"count": len(matching)})
                if self.path != "/rest/api/3/search/jql":
                    return self._send(404, {"errorMessages": ["Not found"]})
                start = int(body.get("nextPageToken") or 0)
                size = min(int(body.get("maxResults", 50)), 100)
                page = matching[start:start + size]
                wanted = body.get("fields") or ["id"]
                issues = []
                for issue in page:
                    full = fake.issue_json(issue, expand=False)
                    if "*all" not in wanted:
                        full["fields"] = {k: v for k, v in full["fields"].items() if k in wanted}
                    issues.append(full)
                answer = {"issues": issues, "isLast": start + size >= len(matching)}
                if not answer["isLast"]:
                    answer["nextPageToken"] = str(start + size)
                return self._send(200, answer)

        return Handler
