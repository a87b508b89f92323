"""The BigQuery connector against a local fake of Google's REST API and token endpoint
(fake_bigquery.py): the service account's signed JWT exchanged for tokens (renewed before
they expire), the dry run as a cost guard, paged results of every type, incremental syncs
with a typed parameter, Google's errors and retries, and the key never leaking."""

from __future__ import annotations

import datetime
import decimal
import json
import math
import os
import re
import tempfile
import time

import pytest

from harness import ADMIN_EMAIL, ADMIN_PASSWORD, Server, api, connect, login, state_bytes, user_granted
from fake_bigquery import FakeBigQuery, google_error
from test_sync import rows, sync, wait_run

UTC = datetime.timezone.utc
TABLE = "acme-analytics.shop.orders"

ORDERS = [{"name": "id", "type": "INT64"}, {"name": "customer", "type": "STRING"},
          {"name": "amount", "type": "NUMERIC"}, {"name": "updated_at", "type": "TIMESTAMP"}]


def order(i: int, customer: str, amount: str, hour: int) -> dict:
    return {"id": i, "customer": customer, "amount": decimal.Decimal(amount),
            "updated_at": datetime.datetime(2026, 11, 30, hour, 0, 0, 250000, tzinfo=UTC)}


@pytest.fixture
def bigquery():
    fake = FakeBigQuery()
    yield fake
    fake.stop()


@pytest.fixture
def server(bigquery, monkeypatch):
    monkeypatch.setenv("BQ_KEY", bigquery.key_json())
    with tempfile.TemporaryDirectory() as tmp:
        s = Server(["serve"], os.path.join(tmp, "data"))
        yield s
        s.stop()
        # The key and the tokens it bought stay out of the log.
        private_key = json.loads(bigquery.key_json())["private_key"]
        for secret in [private_key.splitlines()[1], *bigquery.tokens]:
            assert secret not in s.log()


def define(bigquery, server, token, name: str, expect: int = 201, **options):
    body = {"name": name, "connector": "bigquery",
            "options": {"credentials": "${BQ_KEY}", "project": "acme-analytics", "endpoint": bigquery.url, **options}}
    for key in ("mode", "watermark", "primary_key"):
        if key in body["options"]:
            body[key] = body["options"].pop(key)
    status, answer = api(server, "POST", "/api/admin/tables", token, body)
    assert status == expect, answer
    return answer


def test_every_type_lands_paged_after_a_dry_run(bigquery, server):
    fields = [
        {"name": "i", "type": "INT64"}, {"name": "f", "type": "FLOAT64"}, {"name": "n", "type": "NUMERIC"},
        {"name": "big", "type": "BIGNUMERIC"}, {"name": "ok", "type": "BOOL"}, {"name": "s", "type": "STRING"},
        {"name": "raw", "type": "BYTES"}, {"name": "day", "type": "DATE"}, {"name": "local", "type": "DATETIME"},
        {"name": "t", "type": "TIME"}, {"name": "at", "type": "TIMESTAMP"}, {"name": "doc", "type": "JSON"},
        {"name": "place", "type": "GEOGRAPHY"}, {"name": "tags", "type": "STRING", "mode": "REPEATED"},
        {"name": "addr", "type": "STRUCT", "fields": [
            {"name": "city", "type": "STRING"}, {"name": "zips", "type": "INT64", "mode": "REPEATED"}]},
    ]
    full = {"i": -(2 ** 63), "f": math.inf, "n": decimal.Decimal("-12345678901234567890123456789.123456789"),
            "big": decimal.Decimal("1.00000000000000000000000000000000000001"), "ok": True, "s": "Čeněk, \"quoted\"",
            "raw": b"\x00\x01\xff", "day": datetime.date(2026, 12, 3),
            "local": datetime.datetime(2026, 12, 3, 10, 11, 12, 123456), "t": datetime.time(23, 59, 59, 500000),
            "at": datetime.datetime(2026, 12, 3, 9, 0, 0, 1, tzinfo=UTC), "doc": {"a": [1, None]},
            "place": "POINT(14.42 50.08)", "tags": ["x", "y"], "addr": {"city": "Praha", "zips": [11000, 12000]}}
    many = [{"i": k, "f": k / 4, "s": f"row {k}", "tags": []} for k in range(7)]
    bigquery.put_table("acme-analytics.shop.kinds", fields, [full, {}, *many])
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    define(bigquery, server, token, "bq.kinds", table="shop.kinds", location="EU")
    run = sync(server, token, "bq.kinds")
    assert run["status"] == "succeeded", run.get("error")

    table = rows(server, "SELECT * FROM bq.kinds")
    types = {f.name: str(f.type) for f in table.schema}
    assert types == {
        "i": "int64", "f": "double", "n": "decimal128(38, 9)", "big": "decimal256(76, 38)", "ok": "bool",
        "s": "string", "raw": "binary", "day": "date32[day]", "local": "timestamp[us]", "t": "time64[us]",
        "at": "timestamp[us, tz=UTC]", "doc": "string", "place": "string", "tags": "list<item: string>",
        "addr": "struct<city: string, zips: list<item: int64>>",
    }
    assert table.num_rows == 9
    by_i = {r["i"]: r for r in table.to_pylist()}
    first = by_i[-(2 ** 63)]
    assert {k: v for k, v in first.items() if k != "doc"} == {**{k: v for k, v in full.items() if k != "doc"}}
    assert json.loads(first["doc"]) == {"a": [1, None]}
    empty = by_i[None]
    assert all(v is None for k, v in empty.items() if k != "tags") and empty["tags"] == []
    assert by_i[5]["f"] == 1.25 and by_i[5]["s"] == "row 5"

    # A dry run first, then the job with BigQuery's own byte limit, polled, then paged.
    calls = bigquery.api_calls()
    assert calls[0]["body"]["dryRun"] is True and calls[0]["body"]["location"] == "EU"
    job = calls[1]["body"]
    assert "dryRun" not in job and job["maximumBytesBilled"] == str(100 * 10 ** 9) and job["useLegacySql"] is False
    pages = [c for c in bigquery.api_calls("GET") if "pageToken" in c["query"]]
    assert len(pages) == 2 and all(c["query"]["location"] == "EU" for c in pages)


def test_incremental_sync_filters_in_bigquery_with_a_typed_parameter(bigquery, server):
    bigquery.put_table(TABLE, ORDERS, [order(1, "Ada", "10.50", 8), order(2, "Bob", "20.00", 9)])
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    define(bigquery, server, token, "bq.orders", table="shop.orders", mode="incremental", watermark="updated_at",
           primary_key=["id"])
    assert sync(server, token, "bq.orders")["status"] == "succeeded"

    bigquery.tables[TABLE]["rows"] = [order(1, "Ada", "10.50", 8), order(2, "Bob", "25.00", 11),
                                      order(3, "Cyd", "1.25", 12)]
    bigquery.requests.clear()
    assert sync(server, token, "bq.orders")["status"] == "succeeded"
    job = bigquery.api_calls("POST")[-1]["body"]
    assert job["query"] == "SELECT * FROM (SELECT * FROM `acme-analytics.shop.orders`) WHERE `updated_at` > @quiver_since"
    (parameter,) = job["queryParameters"]
    assert parameter["parameterType"] == {"type": "TIMESTAMP"}
    assert parameter["parameterValue"]["value"].startswith("2026-11-30") and "09:00:00.25" in parameter["parameterValue"]["value"]
    got = rows(server, "SELECT id, customer, amount FROM bq.orders ORDER BY id").to_pylist()
    assert got == [{"id": 1, "customer": "Ada", "amount": decimal.Decimal("10.500000000")},
                   {"id": 2, "customer": "Bob", "amount": decimal.Decimal("25.000000000")},
                   {"id": 3, "customer": "Cyd", "amount": decimal.Decimal("1.250000000")}]


def test_the_cost_guard_refuses_before_anything_is_billed(bigquery, server):
    bigquery.put_table(TABLE, ORDERS, [order(1, "Ada", "10.50", 8)], size=800 * 10 ** 6)
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    define(bigquery, server, token, "bq.guarded", table="shop.orders", max_bytes_billed="1GB")
    assert sync(server, token, "bq.guarded")["status"] == "succeeded"

    bigquery.tables[TABLE].update(bytes=3 * 10 ** 9, rows=[order(2, "Bob", "1", 9)])
    bigquery.requests.clear()
    run = sync(server, token, "bq.guarded")
    assert run["status"] == "failed", run
    assert "3.0 GB (3000000000 bytes)" in run["error"] and "`max_bytes_billed` 1.0 GB" in run["error"], run
    # Only the dry run reached BigQuery, and the old version keeps serving.
    assert [c["body"].get("dryRun") for c in bigquery.api_calls()] == [True]
    assert rows(server, "SELECT id FROM bq.guarded").to_pylist() == [{"id": 1}]

    # Without the option, the server's `sync.max_bytes_billed` (100 GB by default) holds.
    bigquery.put_table("acme-analytics.shop.huge", ORDERS, [], size=250 * 10 ** 9)
    define(bigquery, server, token, "bq.huge", table="shop.huge")
    run = sync(server, token, "bq.huge")
    assert run["status"] == "failed" and "over `max_bytes_billed` 100.0 GB" in run["error"], run


def test_the_server_default_byte_limit_comes_from_the_config(bigquery, monkeypatch):
    monkeypatch.setenv("BQ_KEY", bigquery.key_json())
    bigquery.put_table(TABLE, ORDERS, [], size=2 * 10 ** 6)
    with tempfile.TemporaryDirectory() as tmp:
        s = Server(["serve"], os.path.join(tmp, "data"), config="sync:\n  max_bytes_billed: 1MB\n")
        try:
            token = login(s, ADMIN_EMAIL, ADMIN_PASSWORD)
            define(bigquery, s, token, "bq.small_limit", table="shop.orders")
            run = sync(s, token, "bq.small_limit")
            assert run["status"] == "failed" and "over `max_bytes_billed` 1.0 MB" in run["error"], run
        finally:
            s.stop()


@pytest.mark.parametrize("failure, message", [
    # Access denied: what to grant, to whom.
    ("denied", "BigQuery Job User role on project acme-analytics"),
    ("project", "bigquery.jobs.create permission"),
    ("missing", "Not found: Table acme-analytics:shop.gone"),
    # A job that fails as it runs: BigQuery's own message.
    ("job", "BigQuery query results: 400 invalidQuery: Query error: boom at [1:8]"),
    ("quota", "a BigQuery quota is used up"),
    ("key", "did not issue a token for the service account quiver-sync@acme-analytics.iam.gserviceaccount.com"),
    ("bytes", "bytesBilledLimitExceeded"),
])
def test_errors_say_what_to_do(bigquery, server, monkeypatch, failure, message):
    bigquery.put_table(TABLE, ORDERS, [order(1, "Ada", "1", 8)])
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    options = {"table": "shop.orders"}
    if failure == "denied":
        bigquery.denied.add(TABLE)
    elif failure == "project":
        options["project"] = "someone-else"
    elif failure == "missing":
        options["table"] = "shop.gone"
    elif failure == "job":
        options = {"query": "SELECT ERROR('boom')"}
        bigquery.add_query("SELECT ERROR('boom')", TABLE)
    elif failure == "quota":
        bigquery.fail_next = [google_error(403, "quotaExceeded", "Quota exceeded: Your project exceeded quota "
                                           "for free query bytes scanned.", "PERMISSION_DENIED")]
    elif failure == "key":
        with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
            f.write(bigquery.key_json(FakeBigQuery.other_key()))
        options = {"table": "shop.orders", "credentials_file": f.name, "credentials": None}
    elif failure == "bytes":
        # BigQuery's own limit, should the dry run have underestimated.
        bigquery.fail_next = [(200, {"schema": {"fields": []}, "totalBytesProcessed": "1", "jobComplete": True,
                                     "jobReference": {"projectId": "acme-analytics"}}),
                              google_error(400, "bytesBilledLimitExceeded", "Query exceeded limit for bytes billed",
                                           "INVALID_ARGUMENT")]
    body = {"name": "bq.failing", "connector": "bigquery",
            "options": {k: v for k, v in {"credentials": "${BQ_KEY}", "project": "acme-analytics",
                                          "endpoint": bigquery.url, **options}.items() if v is not None}}
    status, answer = api(server, "POST", "/api/admin/tables", token, body)
    assert status == 201, answer
    run = sync(server, token, "bq.failing")
    assert run["status"] == "failed" and message in run["error"], run
    assert "BigQuery" in run["error"] or "Google" in run["error"], run


def test_rate_limits_and_outages_are_retried_with_backoff(bigquery, server):
    bigquery.put_table(TABLE, ORDERS, [order(1, "Ada", "1", 8), order(2, "Bob", "2", 9)])
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    define(bigquery, server, token, "bq.flaky", table="shop.orders")
    bigquery.fail_next = [
        google_error(429, "rateLimitExceeded", "Exceeded rate limits: too many api requests per user", "RESOURCE_EXHAUSTED"),
        google_error(503, "backendError", "Error encountered during execution. Retrying may solve the problem.",
                     "UNAVAILABLE"),
        google_error(403, "rateLimitExceeded", "Exceeded rate limits: too many concurrent queries", "PERMISSION_DENIED"),
    ]
    run = sync(server, token, "bq.flaky")
    assert run["status"] == "succeeded", run.get("error")
    assert rows(server, "SELECT count(*) AS n FROM bq.flaky").to_pylist() == [{"n": 2}]
    # Three refusals and then the dry run, all with the same body.
    dry_runs = [c for c in bigquery.api_calls("POST") if c["body"].get("dryRun")]
    assert len(dry_runs) == 4
    assert "BigQuery asks to retry" in server.log()


def test_a_job_that_runs_too_long_is_cancelled(bigquery, server):
    bigquery.put_table(TABLE, ORDERS, [order(1, "Ada", "1", 8)])
    bigquery.add_query("SELECT * FROM slow_view", TABLE)
    bigquery.endless.add("SELECT * FROM slow_view")
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    define(bigquery, server, token, "bq.slow", query="SELECT * FROM slow_view", timeout="2s")
    run = sync(server, token, "bq.slow")
    assert run["status"] == "failed", run
    assert "did not finish within `timeout` 2s; it was cancelled" in run["error"], run
    assert bigquery.cancelled == [bigquery.api_calls("GET")[0]["path"].rsplit("/", 1)[1]]


def test_the_token_is_renewed_before_it_expires(bigquery, server):
    # Tokens that live 5 minutes and 2 seconds are renewed after 2 seconds; pages take 0.5 s.
    bigquery.token_lifetime = 302
    bigquery.page_delay = 0.5
    bigquery.page_rows = 1
    bigquery.put_table(TABLE, ORDERS, [order(i, f"c{i}", "1", 8) for i in range(8)])
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    define(bigquery, server, token, "bq.long", table="shop.orders")
    run = sync(server, token, "bq.long")
    assert run["status"] == "succeeded", run.get("error")
    assert len(bigquery.tokens) >= 2, bigquery.tokens
    assert rows(server, "SELECT count(*) AS n FROM bq.long").to_pylist() == [{"n": 8}]


DEALS = [{"name": "id", "type": "INT64"}, {"name": "team", "type": "STRING"},
         {"name": "amount", "type": "INT64"}, {"name": "note", "type": "STRING"}]


def shown(job: dict) -> str:
    """A job's query with its named parameters written in (strings quoted), for reading."""
    values = {p["name"]: (f"'{p['parameterValue']['value']}'" if p["parameterType"]["type"] == "STRING"
                          else p["parameterValue"]["value"]) for p in job.get("queryParameters", [])}
    return re.sub(r"@(\w+)", lambda m: str(values.get(m.group(1), m.group(0))), job["query"])


def jobs_run(bigquery) -> list[str]:
    """The queries BigQuery ran (not dry runs), each checked to have had its dry run first
    (with the same parameters), with their parameters written in."""
    posts = bigquery.api_calls("POST", "/queries")
    ran = []
    for i, call in enumerate(posts):
        if not call["body"].get("dryRun"):
            before = posts[i - 1]["body"] if i else {}
            assert before.get("dryRun") and before["query"] == call["body"]["query"], posts[max(i - 1, 0):i + 1]
            assert before.get("queryParameters") == call["body"].get("queryParameters")
            ran.append(shown(call["body"]))
    return ran


def test_a_remote_table_queries_bigquery_with_the_policy_and_the_cost_guard(bigquery, server):
    bigquery.put_table("acme-analytics.shop.deals", DEALS, [
        {"id": 1, "team": "red", "amount": 10, "note": "a"}, {"id": 2, "team": "blue", "amount": 42, "note": "b"},
        {"id": 3, "team": "red", "amount": 30, "note": "c"}, {"id": 4, "team": "red", "amount": 50, "note": "d"}])
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    define(bigquery, server, token, "bq.deals", table="shop.deals", mode="remote", max_bytes_billed="1GB")
    # The sync reads the schema from a dry run: nothing is billed.
    assert wait_run(server, token, "bq.deals")["status"] == "succeeded"
    assert jobs_run(bigquery) == [] and bigquery.api_calls("POST")

    table = rows(server, "SELECT * FROM bq.deals ORDER BY id")
    assert [f.name for f in table.schema] == ["id", "team", "amount", "note"]
    assert [r["id"] for r in table.to_pylist()] == [1, 2, 3, 4]
    # A change in BigQuery is seen by the next query, with no sync in between.
    bigquery.tables["acme-analytics.shop.deals"]["rows"].append({"id": 5, "team": "blue", "amount": 7, "note": "e"})
    bigquery.requests.clear()
    assert rows(server, "SELECT id FROM bq.deals WHERE id >= 4 ORDER BY id").to_pylist() == [{"id": 4}, {"id": 5}]
    assert jobs_run(bigquery) == [
        "SELECT `id` FROM `acme-analytics.shop.deals` AS quiver_source WHERE (`id` >= 4)"]
    bigquery.requests.clear()
    assert len(rows(server, "SELECT note FROM bq.deals LIMIT 2")) == 2
    assert jobs_run(bigquery) == ["SELECT `note` FROM `acme-analytics.shop.deals` AS quiver_source LIMIT 2"]

    # A user whose grant keeps only red rows: BigQuery gets the row filter and the safe part of
    # the user's predicate; `100 / (amount - 42)`, which fails on the hidden blue row of 42,
    # is evaluated above the row filter only.
    email, group = "bq-remote@example.com", "bq_remote"
    assert api(server, "POST", "/api/admin/groups", token, {"name": group})[0] == 201
    assert api(server, "POST", "/api/admin/users", token, {"email": email, "password": "pw-remote-123"})[0] == 201
    assert api(server, "POST", f"/api/admin/groups/{group}/members", token, {"email": email})[0] == 204
    status, body = api(server, "POST", "/api/admin/grants", token,
                       {"group": group, "table": "bq.deals", "row_filter": "team = 'red'"})
    assert status == 201, body
    bigquery.requests.clear()
    conn = connect(server, email, "pw-remote-123")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id FROM bq.deals WHERE 100 / (amount - 42) > 0 AND id > 1 ORDER BY id")
            assert cur.fetch_arrow_table().to_pylist() == [{"id": 4}]
    finally:
        conn.close()
    sent = jobs_run(bigquery)
    assert sent and all("(`team` = 'red')" in q and "(`id` > 1)" in q and "/" not in q for q in sent), sent

    # The cost guard holds for every query: over the limit, the query fails before anything is
    # billed, naming the bytes and the limit.
    bigquery.tables["acme-analytics.shop.deals"]["bytes"] = 3 * 10 ** 9
    bigquery.requests.clear()
    with pytest.raises(Exception, match=re.escape("3.0 GB (3000000000 bytes)")) as refused:
        rows(server, "SELECT id FROM bq.deals")
    assert "`max_bytes_billed` 1.0 GB" in str(refused.value) and "bq.deals" in str(refused.value)
    assert jobs_run(bigquery) == [] and bigquery.api_calls("POST")
    # The sync and all the queries above signed in once: the token (and its connection) is
    # kept across queries, not bought again for each.
    assert len(bigquery.tokens) == 1, bigquery.tokens


PEOPLE = [{"name": "id", "type": "INT64"}, {"name": "name", "type": "STRING"},
          {"name": "region", "type": "STRING"}, {"name": "PWNED_MARKER", "type": "INT64"}]
# Quotes both ways, backslashes, comments, unicode, and an attack that once left GoogleSQL
# code outside its string.
NASTY_VALUES = ["O'Brien", "a''b", "x\\'y", "\\\\'' OR PWNED_MARKER = 1)) #", "back\\slash\\",
                "-- not a comment", "/* nor this */", "`tick`", "naïve ☃ 𝄞", "tab\there", "line\nbreak",
                "\"double\"", "@name"]


def test_remote_filters_reach_bigquery_as_query_parameters_only(bigquery, server):
    bigquery.put_table("acme-analytics.shop.people", PEOPLE, [
        {"id": i, "name": v, "region": "EU" if i % 2 == 0 else "US", "PWNED_MARKER": 1}
        for i, v in enumerate(NASTY_VALUES)])
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    define(bigquery, server, token, "bq.people", table="shop.people", mode="remote")
    assert wait_run(server, token, "bq.people")["status"] == "succeeded"
    email, _, _ = user_granted(server, token, "bq-eu", "bq.people", "pw-bq-eu-12", row_filter="region = 'EU'")
    conn = connect(server, email, "pw-bq-eu-12")
    try:
        with conn.cursor() as cur:
            for i, value in enumerate(NASTY_VALUES):
                expected = [{"id": i}] if i % 2 == 0 else []
                literal = "'" + value.replace("'", "''") + "'"
                for sql, parameters in [(f"SELECT id FROM bq.people WHERE name = {literal}", None),
                                        ("SELECT id FROM bq.people WHERE name = ?", (value,))]:
                    bigquery.requests.clear()
                    cur.execute(sql, parameters=parameters)
                    assert cur.fetch_arrow_table().to_pylist() == expected, (value, sql)
                    jobs = [c["body"] for c in bigquery.api_calls("POST", "/queries")]
                    assert jobs, value
                    for job in jobs:
                        # The value travels as a typed parameter; the SQL text holds only names.
                        assert "'" not in job["query"] and value not in job["query"], job
                        sent = {p["parameterValue"]["value"] for p in job["queryParameters"]}
                        assert {value, "EU"} <= sent, job
                        assert all(p["parameterType"]["type"] == "STRING" for p in job["queryParameters"])
    finally:
        conn.close()


def test_a_remote_query_past_its_timeout_cancels_its_job(bigquery, monkeypatch):
    monkeypatch.setenv("BQ_KEY", bigquery.key_json())
    bigquery.put_table(TABLE, ORDERS, [order(1, "Ada", "1", 8)])
    bigquery.add_query("SELECT * FROM slow_view", TABLE)
    remote_read = "SELECT `id` FROM (SELECT * FROM slow_view) AS quiver_source"
    bigquery.endless.add(remote_read)
    with tempfile.TemporaryDirectory() as tmp:
        s = Server(["serve"], os.path.join(tmp, "data"), config="query:\n  timeout: 2s\n")
        try:
            token = login(s, ADMIN_EMAIL, ADMIN_PASSWORD)
            define(bigquery, s, token, "bq.slow_remote", query="SELECT * FROM slow_view", mode="remote")
            assert wait_run(s, token, "bq.slow_remote")["status"] == "succeeded"
            with pytest.raises(Exception, match="query.timeout"):
                rows(s, "SELECT id FROM bq.slow_remote")
            [job] = [c for c in bigquery.api_calls("POST", "/queries") if c["body"]["query"] == remote_read
                     and not c["body"].get("dryRun")]
            polled = {c["path"].rsplit("/", 1)[1] for c in bigquery.api_calls("GET")}
            deadline = time.time() + 10
            while not bigquery.cancelled and time.time() < deadline:
                time.sleep(0.1)
            assert job and bigquery.cancelled and set(bigquery.cancelled) <= polled, bigquery.cancelled
        finally:
            s.stop()


def test_definitions_are_checked_and_the_key_never_leaks(bigquery, server):
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    key = json.loads(bigquery.key_json())
    problems = [
        ({"credentials": bigquery.key_json()}, "options.credentials", "environment variable reference"),
        ({"credentials_file": "/nonexistent/key.json", "credentials": None}, "options.credentials_file",
         "/nonexistent/key.json"),
        ({"credentials_file": "/nonexistent/key.json"}, "options.credentials_file", "not both"),
        ({"credentials_file": "/etc/hostname", "credentials": None}, "options.credentials_file", "not a service-account key"),
        ({"table": "a.b.c.d"}, "options.table", "`dataset.table` or `project.dataset.table`"),
        ({"table": None}, "options.table", "either `table`"),
        ({"max_bytes_billed": "lots"}, "options.max_bytes_billed", ""),
        ({"timeout": "soon"}, "options.timeout", "not a duration"),
        ({"warehouse": "x"}, "options", "unknown field `warehouse`"),
    ]
    for extra, field, text in problems:
        options = {k: v for k, v in {"credentials": "${BQ_KEY}", "project": "acme-analytics", "table": "shop.orders",
                                     "endpoint": bigquery.url, **extra}.items() if v is not None}
        status, body = api(server, "POST", "/api/admin/tables", token,
                           {"name": "bq.bad", "connector": "bigquery", "options": options})
        assert status == 422 and f"`{field}" in body["error"]["message"] and text in body["error"]["message"], body

    # A key file works as well as the variable; neither the key nor a token is stored or shown.
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "key.json")
        with open(path, "w") as f:
            f.write(bigquery.key_json())
        bigquery.put_table(TABLE, ORDERS, [order(1, "Ada", "1", 8)])
        status, body = api(server, "POST", "/api/admin/tables", token, {
            "name": "bq.from_file", "connector": "bigquery",
            "options": {"credentials_file": path, "project": "acme-analytics", "table": "shop.orders",
                        "endpoint": bigquery.url}})
        assert status == 201, body
        define(bigquery, server, token, "bq.from_env", table="shop.orders")
        for name in ("bq.from_file", "bq.from_env"):
            assert sync(server, token, name)["status"] == "succeeded"
    _, listing = api(server, "GET", "/api/admin/tables", token)
    _, runs = api(server, "GET", "/api/admin/tables/bq.from_env/runs", token)
    stored = state_bytes(server.data_dir)
    secret = key["private_key"].splitlines()[1]
    for token_value in bigquery.tokens:
        assert token_value.encode() not in stored and token_value not in json.dumps(listing)
    assert secret.encode() not in stored and secret not in json.dumps(listing) + json.dumps(runs)
