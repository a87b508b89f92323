"""Jira: signed webhook deliveries keep six `jira` tables current, against a local fake of Jira
Cloud's REST API (fake_jira.py). Checked the way people meet it: Jira POSTs signed events to
the real server, analysts query the tables over ADBC, admins run backfills from the CLI."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import hashlib
import hmac
import json
import os
import pathlib
import re
import signal
import subprocess
import tempfile
import time
import uuid

import pytest
import requests

from harness import ADMIN_EMAIL, ADMIN_PASSWORD, Server, api, login, on_terminal, quiver_bin, quiver_env
from fake_jira import FakeJira
from test_sync import rows, wait_run

EMAIL = "sync-bot@example.com"
TOKEN = "jira-api-token-1234"
SECRET = "webhook-secret-0123456789"
UTC = dt.timezone.utc
CET = dt.timezone(dt.timedelta(hours=1))


@pytest.fixture
def jira():
    fake = FakeJira(EMAIL, TOKEN)
    yield fake
    fake.stop()


def jira_config(fake: FakeJira, **extra) -> str:
    section = {"url": fake.url, "email": EMAIL, "api_token": "${JIRA_API_TOKEN}",
               "webhook_secret": "${JIRA_WEBHOOK_SECRET}", **extra}
    return "jira: " + json.dumps(section) + "\n"


@pytest.fixture
def workdir(monkeypatch):
    monkeypatch.setenv("JIRA_API_TOKEN", TOKEN)
    monkeypatch.setenv("JIRA_WEBHOOK_SECRET", SECRET)
    with tempfile.TemporaryDirectory() as tmp:
        yield pathlib.Path(tmp)


def start(workdir: pathlib.Path, fake: FakeJira, **extra) -> Server:
    return Server(["serve"], str(workdir / "data"), config=jira_config(fake, **extra))


def deliver(server: Server, body: bytes | dict, *, delivery: str | None = None, secret: str = SECRET,
            prefix: bool = True, signature: str | None = None) -> requests.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    if signature is None:
        digest = hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
        signature = ("sha256=" if prefix else "") + digest
    headers = {"content-type": "application/json", "X-Hub-Signature-256": signature,
               "X-Atlassian-Webhook-Identifier": delivery or str(uuid.uuid4())}
    return requests.post(f"http://{server.http}/webhooks/jira", data=raw, headers=headers, timeout=30)


def event(server: Server, fake: FakeJira, name: str, key: str, **kw) -> requests.Response:
    issue = fake.issues[key] if name != "jira:issue_deleted" else kw.pop("issue")
    answer = deliver(server, fake.webhook_payload(name, issue), **kw)
    assert answer.status_code == 200, answer.text
    return answer


def wait_for(server: Server, sql: str, expected, timeout: float = 60):
    """Polls a query until its rows equal `expected`."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = rows(server, sql).to_pylist()
            if last == expected:
                return last
        except Exception as e:  # the tables appear with the first processed event
            last = e
        time.sleep(0.3)
    raise AssertionError(f"{sql}: {last!r} != {expected!r}\n{server.log()[-4000:]}")


def test_signatures_sizes_and_payloads_are_checked_before_anything_is_stored(jira, workdir):
    jira.create("ABC-1", dt.datetime(2026, 1, 5, tzinfo=UTC), "First")
    server = start(workdir, jira, max_payload="64KiB")
    try:
        payload = jira.webhook_payload("jira:issue_created", jira.issues["ABC-1"])
        assert deliver(server, payload, signature="").status_code == 401
        assert deliver(server, payload, secret="not-the-secret-at-all").status_code == 401
        unsigned = requests.post(f"http://{server.http}/webhooks/jira", json=payload, timeout=30)
        assert unsigned.status_code == 401 and unsigned.json()["error"]["code"] == "unauthenticated"
        big = deliver(server, {"issue": {"key": "ABC-1"}, "pad": "x" * 70_000})
        assert big.status_code == 413, big.text
        bad_json = deliver(server, b'{"issue": ')
        assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["error"]["message"]
        for key in ["abc-1", "ABC-1/../../x", "ABC", "A" * 33 + "-1"]:
            bad = deliver(server, {"webhookEvent": "jira:issue_updated", "issue": {"key": key}})
            assert bad.status_code == 400 and "not a Jira issue key" in bad.json()["error"]["message"], key
        nothing = deliver(server, {"webhookEvent": "user_created", "user": {}})
        assert nothing.status_code == 400
        # Refused deliveries left nothing behind.
        inbox = workdir / "data" / "objects" / "webhooks" / "jira"
        assert not inbox.exists() or not list(inbox.iterdir())

        # Signed without the `sha256=` prefix is accepted too.
        ok = deliver(server, payload, prefix=False)
        assert ok.status_code == 200 and ok.json()["duplicate"] is False
        wait_for(server, "SELECT issue_key, summary FROM jira.issues", [{"issue_key": "ABC-1", "summary": "First"}])
        assert SECRET not in server.log() and TOKEN not in server.log()
    finally:
        server.stop()


def test_without_a_secret_every_call_is_refused_with_503(jira, workdir):
    server = Server(["serve"], str(workdir / "data"),
                    config="jira: " + json.dumps({"url": jira.url, "email": EMAIL, "api_token": "${JIRA_API_TOKEN}"}))
    try:
        answer = deliver(server, {"issue": {"key": "ABC-1"}})
        assert answer.status_code == 503 and "webhook_secret" in answer.json()["error"]["message"]
    finally:
        server.stop()


def test_events_fill_six_tables_that_match_jira(jira, workdir):
    a = jira.create("ABC-1", dt.datetime(2026, 1, 31, 23, 30, tzinfo=CET), "Zahlung fehlgeschlagen – 支付失败",
                    comments=5, attachments=2, links=["ABC-2"], remote_links=2, histories=4)
    b = jira.create("ABC-2", dt.datetime(2026, 2, 10, 9, 0, tzinfo=UTC), "Second 🚀", comments=1)
    server = start(workdir, jira)
    try:
        event(server, jira, "jira:issue_created", "ABC-1")
        event(server, jira, "jira:issue_created", "ABC-2")
        wait_for(server, "SELECT count(*) AS n FROM jira.issues", [{"n": 2}])

        issues = rows(server, "SELECT * FROM jira.issues ORDER BY issue_key").to_pylist()
        first = issues[0]
        assert first["issue_id"] == a["id"] and first["summary"] == a["summary"]
        # Created 23:30 at UTC+1 on Jan 31 is Jan 31 22:30 UTC: the January shard.
        assert first["issue_month"] == "2026-01"
        assert first["created"] == dt.datetime(2026, 1, 31, 22, 30, tzinfo=UTC)
        assert first["description"] == "Beschreibung von ABC-1\nzweite Zeile ✓"
        assert first["labels"] == ["backend", "ünïcödé"] and first["components"] == ["API"]
        assert first["status"] == "To Do" and first["assignee"] == "Ana"
        assert json.loads(first["custom_fields"]) == {"customfield_10020": "Sprint 7"}
        assert issues[1]["issue_month"] == "2026-02"

        # Every comment and history, though Jira embedded only two of each.
        comments = rows(server, "SELECT issue_key, comment_id, body, body_html FROM jira.comments "
                                "ORDER BY issue_key, created").to_pylist()
        expected = [(k, c["id"], c["body"]) for k, i in (("ABC-1", a), ("ABC-2", b)) for c in i["comments"]]
        assert [(c["issue_key"], c["comment_id"], c["body"]) for c in comments] == expected
        assert comments[0]["body_html"] == f"<p>{a['comments'][0]['body']}</p>"
        changelog = rows(server, "SELECT history_id, field, from_string, to_string FROM jira.changelog "
                                 "ORDER BY created").to_pylist()
        assert [c["history_id"] for c in changelog] == [h["id"] for h in a["histories"]]
        assert changelog[0] == {"history_id": a["histories"][0]["id"], "field": "priority",
                                "from_string": "P0", "to_string": "P1"}
        attachments = rows(server, "SELECT filename, size, mime_type FROM jira.attachments ORDER BY filename")
        assert attachments.to_pylist() == [{"filename": "log-0.txt", "size": 100, "mime_type": "text/plain"},
                                           {"filename": "log-1.txt", "size": 101, "mime_type": "text/plain"}]
        links = rows(server, "SELECT issue_key, relation, linked_issue_key, linked_issue_id FROM jira.issuelinks")
        assert links.to_pylist() == [{"issue_key": "ABC-1", "relation": "blocks", "linked_issue_key": "ABC-2",
                                      "linked_issue_id": b["id"]}]
        remote = rows(server, "SELECT url, title, application FROM jira.remote_links ORDER BY url").to_pylist()
        assert remote == [{"url": r["url"], "title": r["title"], "application": "CI"} for r in a["remote_links"]]

        # An update replaces the issue's rows in every table (no duplicates, nothing stale).
        jira.update("ABC-1", summary="Payment failed", status="Done")
        jira.comment("ABC-1", "Fixed in 2.3")
        event(server, jira, "jira:issue_updated", "ABC-1")
        wait_for(server, "SELECT summary, status, status_category FROM jira.issues WHERE issue_key = 'ABC-1'",
                 [{"summary": "Payment failed", "status": "Done", "status_category": "Done"}])
        assert rows(server, "SELECT count(*) AS n FROM jira.comments WHERE issue_key = 'ABC-1'").to_pylist() == [{"n": 6}]
        assert rows(server, "SELECT count(*) AS n FROM jira.changelog WHERE issue_key = 'ABC-1'").to_pylist() == [{"n": 6}]

        # A replayed delivery answers 200 and has no effect: Jira is not asked again.
        fetched = jira.fetches["ABC-2"]
        replay = str(uuid.uuid4())
        assert event(server, jira, "jira:issue_updated", "ABC-2", delivery=replay).json()["duplicate"] is False
        deadline = time.time() + 30
        while jira.fetches["ABC-2"] == fetched and time.time() < deadline:
            time.sleep(0.2)
        assert jira.fetches["ABC-2"] == fetched + 1
        for _ in range(3):
            assert event(server, jira, "jira:issue_updated", "ABC-2", delivery=replay).json()["duplicate"] is True
        time.sleep(3)
        assert jira.fetches["ABC-2"] == fetched + 1

        # A delete removes the issue from every table.
        gone = jira.delete("ABC-1")
        event(server, jira, "jira:issue_deleted", "ABC-1", issue=gone)
        wait_for(server, "SELECT issue_key FROM jira.issues", [{"issue_key": "ABC-2"}])
        for table in ["comments", "attachments", "changelog", "issuelinks", "remote_links"]:
            assert rows(server, f"SELECT count(*) AS n FROM jira.{table} WHERE issue_key = 'ABC-1'").to_pylist() == [{"n": 0}], table

        # The tables are like every other: listed in the catalog, granted per group.
        token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
        status, catalog = api(server, "GET", "/api/catalog", token)
        assert {t["name"] for t in catalog} >= {f"jira.{t}" for t in ["issues", "comments", "attachments",
                                                                      "changelog", "issuelinks", "remote_links"]}
        for path, body in [("/api/admin/users", {"email": "pm@example.com", "password": "a long enough password"}),
                           ("/api/admin/groups", {"name": "Product"}),
                           ("/api/admin/groups/Product/members", {"email": "pm@example.com"}),
                           ("/api/admin/grants", {"group": "Product", "table": "jira.issues",
                                                  "row_filter": "project_key = 'ABC'"})]:
            assert api(server, "POST", path, token, body)[0] in (201, 204), path
        pm = login(server, "pm@example.com", "a long enough password")
        assert [t["name"] for t in api(server, "GET", "/api/catalog", pm)[1]] == ["jira.issues"]
    finally:
        server.stop()


def test_fifty_concurrent_deliveries_across_months_lose_no_update(jira, workdir):
    months = [dt.datetime(2025, m, 3, 12, 0, tzinfo=UTC) for m in (9, 10, 11, 12)] + [dt.datetime(2026, 1, 3, tzinfo=UTC)]
    keys = [f"OPS-{n}" for n in range(1, 51)]
    for n, key in enumerate(keys):
        jira.create(key, months[n % 5] + dt.timedelta(hours=n), f"issue {n}", comments=1 + n % 3)
    server = start(workdir, jira)
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
            answers = list(pool.map(lambda k: deliver(server, jira.webhook_payload("jira:issue_created", jira.issues[k])),
                                    keys))
        assert [a.status_code for a in answers] == [200] * 50
        expected = [{"issue_key": k, "summary": f"issue {n}"} for n, k in enumerate(keys)]
        order = "ORDER BY CAST(substr(issue_key, 5) AS INT)"
        wait_for(server, f"SELECT issue_key, summary FROM jira.issues {order}", expected, timeout=120)
        total = sum(1 + n % 3 for n in range(50))
        assert rows(server, "SELECT count(*) AS n FROM jira.comments").to_pylist() == [{"n": total}]
        per_month = rows(server, "SELECT issue_month, count(*) AS n FROM jira.issues GROUP BY 1 ORDER BY 1")
        assert per_month.column("n").to_pylist() == [10] * 5

        # Then 50 concurrent updates, again across every month.
        for key in keys:
            jira.update(key, summary=f"{key} v2")
        with concurrent.futures.ThreadPoolExecutor(max_workers=50) as pool:
            answers = list(pool.map(lambda k: deliver(server, jira.webhook_payload("jira:issue_updated", jira.issues[k])),
                                    keys))
        assert [a.status_code for a in answers] == [200] * 50
        wait_for(server, f"SELECT issue_key, summary FROM jira.issues {order}",
                 [{"issue_key": k, "summary": f"{k} v2"} for k in keys], timeout=120)
    finally:
        server.stop()


def test_an_issue_jira_cannot_serve_holds_back_only_its_own_deliveries(jira, workdir):
    jira.create("ABC-3", dt.datetime(2026, 3, 1, tzinfo=UTC), "Jira fails on this one")
    jira.create("ABC-4", dt.datetime(2026, 3, 2, tzinfo=UTC), "fine")
    jira.failing.add("ABC-3")
    server = start(workdir, jira)
    try:
        event(server, jira, "jira:issue_created", "ABC-3")
        event(server, jira, "jira:issue_created", "ABC-4")
        wait_for(server, "SELECT issue_key FROM jira.issues", [{"issue_key": "ABC-4"}])
        assert re.search(r'delivery postponed source="?jira', server.log()) and "500" in server.log()
        jira.failing.clear()  # Jira recovers: the postponed delivery is retried
        wait_for(server, "SELECT issue_key FROM jira.issues ORDER BY 1", [{"issue_key": "ABC-3"}, {"issue_key": "ABC-4"}],
                 timeout=60)
    finally:
        server.stop()


def test_a_crash_after_the_answer_loses_nothing(jira, workdir):
    jira.create("ABC-1", dt.datetime(2026, 3, 1, tzinfo=UTC), "Before the crash")
    jira.create("ABC-2", dt.datetime(2026, 4, 1, tzinfo=UTC), "Also pending")
    server = start(workdir, jira)
    try:
        jira.hold.clear()  # Jira hangs: the server answers, then waits on its fetch
        event(server, jira, "jira:issue_created", "ABC-1")
        event(server, jira, "jira:issue_created", "ABC-2")
        time.sleep(1)
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(timeout=30)
    finally:
        server.stop()
    assert not jira.fetches
    jira.hold.set()
    server = start(workdir, jira)
    try:
        wait_for(server, "SELECT issue_key, summary FROM jira.issues ORDER BY 1",
                 [{"issue_key": "ABC-1", "summary": "Before the crash"},
                  {"issue_key": "ABC-2", "summary": "Also pending"}])
    finally:
        server.stop()


def test_backfill_then_consistency_repair_and_sla_refresh(jira, workdir):
    start_day = dt.datetime(2025, 6, 1, tzinfo=UTC)
    for n in range(1, 231):
        jira.create(f"ABC-{n}", start_day + dt.timedelta(days=n), f"old issue {n}", comments=n % 2)
    jira.create("OTHER-1", start_day, "not in the backfill")
    jira.create("ABC-231", start_day, "SLA", sla={"breached": False, "remainingTime": {"millis": 3600000}})
    data = workdir / "data"
    config = workdir / "quiver.yaml"
    config.write_text(jira_config(jira, sla_refresh="2s"))

    # The backfill, on a terminal: a progress bar over Jira's count, page by page.
    code, screen, out = on_terminal(["sync", "jira.issues", "--backfill", "--jql", "project = ABC",
                                     "--config", str(config), "--data-dir", str(data)])
    assert code == 0, screen[-2000:]
    assert b"jira backfill" in screen and b"/231 issues" in screen, screen[-1000:]
    assert b"231 issues loaded" in out

    # A backfill of a non-Jira table is refused with the reason.
    wrong = subprocess.run([quiver_bin(), "sync", "sales.orders", "--backfill", "--jql", "x",
                            "--config", str(config), "--data-dir", str(data)], capture_output=True, text=True,
                           env=quiver_env(str(data)))
    assert wrong.returncode != 0 and "Jira tables" in wrong.stderr

    server = Server(["serve"], str(data), config=config.read_text())
    try:
        assert rows(server, "SELECT count(*) AS n FROM jira.issues").to_pylist() == [{"n": 231}]
        assert rows(server, "SELECT count(*) AS n FROM jira.comments").to_pylist() == [{"n": 115}]

        # SLA fields change without events: the refresh re-reads open issues' SLAs.
        jira.issues["ABC-231"]["sla"] = {"breached": True, "remainingTime": {"millis": -60000}}
        deadline = time.time() + 30
        while time.time() < deadline:
            sla = rows(server, "SELECT sla FROM jira.issues WHERE issue_key = 'ABC-231'").column("sla")[0].as_py()
            if json.loads(sla)["customfield_10030"]["ongoingCycle"]["breached"]:
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"SLA not refreshed: {sla}\n{server.log()[-3000:]}")

        # Changes Jira never announced: one new, one edited, one deleted.
        jira.create("ABC-500", dt.datetime(2026, 5, 5, tzinfo=UTC), "created while the webhook was down")
        jira.update("ABC-7", summary="edited quietly")
        jira.delete("ABC-9")
        token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
        status, started = api(server, "POST", "/api/admin/tables/jira.issues/sync", token)
        assert status == 202, started
        run = wait_run(server, token, "jira.issues", started["run"])
        assert run["status"] == "succeeded" and run["rows"] == 3, run
        assert rows(server, "SELECT summary FROM jira.issues WHERE issue_key IN ('ABC-7', 'ABC-9', 'ABC-500') "
                            "ORDER BY 1").column("summary").to_pylist() == [
            "created while the webhook was down", "edited quietly"]

        # Through the running server, the CLI backfills via the API (QUIVER_TOKEN).
        status, pat = api(server, "POST", "/api/me/tokens", token, {"name": "cli", "expires_in_days": 1})
        cli_config = workdir / "cli.yaml"
        cli_config.write_text(config.read_text() + f"server:\n  http_listen: {server.http}\n")
        through = subprocess.run([quiver_bin(), "sync", "jira.issues", "--backfill", "--jql", "project = OTHER",
                                  "--config", str(cli_config), "--data-dir", str(data)],
                                 capture_output=True, text=True, timeout=300,
                                 env=quiver_env(str(data), QUIVER_TOKEN=pat["token"],
                                          RUST_LOG="warn"), cwd=str(workdir))
        assert through.returncode == 0, through.stderr
        assert rows(server, "SELECT summary FROM jira.issues WHERE issue_key = 'OTHER-1'").to_pylist() == [
            {"summary": "not in the backfill"}]
    finally:
        server.stop()


def test_replaced_shards_are_removed_after_the_retention_and_shared_ones_stay(jira, workdir):
    jira.create("ABC-1", dt.datetime(2026, 1, 10, tzinfo=UTC), "changes often", comments=1)
    jira.create("ABC-2", dt.datetime(2026, 2, 10, tzinfo=UTC), "never changes", comments=1)
    server = Server(["serve"], str(workdir / "data"), config=jira_config(jira) + "sync:\n  retention: 1s\n")
    try:
        event(server, jira, "jira:issue_created", "ABC-1")
        event(server, jira, "jira:issue_created", "ABC-2")
        wait_for(server, "SELECT count(*) AS n FROM jira.issues", [{"n": 2}])
        for n in range(3):
            jira.update("ABC-1", summary=f"edit {n}")
            event(server, jira, "jira:issue_updated", "ABC-1")
            wait_for(server, "SELECT summary FROM jira.issues WHERE issue_key = 'ABC-1'", [{"summary": f"edit {n}"}])
            time.sleep(1.2)
        jira.comment("ABC-1", "last one")
        event(server, jira, "jira:issue_updated", "ABC-1")
        wait_for(server, "SELECT count(*) AS n FROM jira.comments", [{"n": 3}])
        shards = workdir / "data" / "objects" / "tables" / "jira"
        # February was written once and every version since shares that file.
        for table in ["issues", "comments"]:
            assert len(list((shards / table / "2026-02").iterdir())) == 1, table
        # January's replaced files went once their retention passed; the last two may remain.
        assert len(list((shards / "issues" / "2026-01").iterdir())) <= 2
        assert rows(server, "SELECT issue_key, summary FROM jira.issues ORDER BY 1").to_pylist() == [
            {"issue_key": "ABC-1", "summary": "edit 2"}, {"issue_key": "ABC-2", "summary": "never changes"}]
        token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
        metrics = requests.get(f"http://{server.http}/metrics", headers={"authorization": f"Bearer {token}"},
                               timeout=30).text
        assert 'quiver_webhook_deliveries_total{source="jira",outcome="accepted"} 6' in metrics, metrics
    finally:
        server.stop()


def test_the_scheduled_consistency_check_finds_what_no_event_announced(jira, workdir):
    jira.create("OPS-1", dt.datetime(2026, 1, 1, tzinfo=UTC), "announced")
    server = start(workdir, jira, consistency_check="2s")
    try:
        event(server, jira, "jira:issue_created", "OPS-1")
        wait_for(server, "SELECT issue_key FROM jira.issues", [{"issue_key": "OPS-1"}])
        jira.create("OPS-2", dt.datetime(2026, 2, 1, tzinfo=UTC), "never announced", comments=2)
        wait_for(server, "SELECT issue_key, summary FROM jira.issues ORDER BY 1",
                 [{"issue_key": "OPS-1", "summary": "announced"}, {"issue_key": "OPS-2", "summary": "never announced"}])
        assert rows(server, "SELECT count(*) AS n FROM jira.comments").to_pylist() == [{"n": 2}]
        token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
        status, table = api(server, "GET", "/api/admin/tables/jira.issues", token)
        assert status == 200 and table["rows"] == 2 and table["version"] >= 2, table
    finally:
        server.stop()
