"""The Keboola connector against a local fake of the Storage API (fake_keboola.py): export job,
polling, sliced download, typed landing, incremental with `changedSince`, failures."""

from __future__ import annotations

import os
import tempfile
import time

import pytest

from harness import ADMIN_EMAIL, ADMIN_PASSWORD, Server, api, login
from fake_keboola import FakeKeboola
from test_sync import rows, sync

TOKEN = "1234-kbc-secret-token"


@pytest.fixture
def keboola():
    fake = FakeKeboola(TOKEN)
    yield fake
    fake.stop()


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("KBC_TOKEN", TOKEN)
    with tempfile.TemporaryDirectory() as tmp:
        s = Server(["serve"], os.path.join(tmp, "data"))
        yield s
        s.stop()
        assert TOKEN not in s.log()


def define(server, token, keboola, name, table_id, **extra):
    body = {"name": name, "connector": "keboola",
            "options": {"url": keboola.url, "token": "${KBC_TOKEN}", "table_id": table_id}, **extra}
    status, answer = api(server, "POST", "/api/admin/tables", token, body)
    assert status == 201, answer


def test_full_and_incremental_exports(keboola, server):
    columns = ["id", "customer", "amount", "updated_at"]
    keboola.put_rows("in.c-sales.orders", columns, [
        {"id": "1", "customer": "Ada, Ltd.", "amount": "10.50", "updated_at": "2026-01-01 10:00:00"},
        {"id": "2", "customer": 'Bob "B"', "amount": "20.00", "updated_at": "2026-01-01 11:00:00"},
        {"id": "3", "customer": "Čeněk", "amount": "1.25", "updated_at": "2026-01-01 12:00:00"},
    ])
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    define(server, token, keboola, "kbc.orders", "in.c-sales.orders",
           mode="incremental", watermark="updated_at", primary_key=["id"])
    run = sync(server, token, "kbc.orders")
    assert run["status"] == "succeeded", run
    table = rows(server, "SELECT * FROM kbc.orders ORDER BY id")
    assert table.column("customer").to_pylist() == ["Ada, Ltd.", 'Bob "B"', "Čeněk"]
    assert str(table.schema.field("id").type) == "int64"
    assert "changedSince" not in keboola.exports[0]

    keboola.put_rows("in.c-sales.orders", columns, [
        {"id": "2", "customer": "Bob B.", "amount": "22.00", "updated_at": "2026-01-02 09:00:00"},
        {"id": "4", "customer": "Dee", "amount": "4.00", "updated_at": "2026-01-02 10:00:00"},
    ])
    run = sync(server, token, "kbc.orders")
    assert run["status"] == "succeeded", run
    # Only what changed since the last sync began (with a minute of overlap) was exported.
    since = int(keboola.exports[1]["changedSince"])
    assert time.time() - 600 < since < time.time()
    table = rows(server, "SELECT id, customer FROM kbc.orders ORDER BY id")
    assert table.to_pylist() == [
        {"id": 1, "customer": "Ada, Ltd."}, {"id": 2, "customer": "Bob B."},
        {"id": 3, "customer": "Čeněk"}, {"id": 4, "customer": "Dee"},
    ]


def test_failures_keep_the_previous_version(keboola, server, monkeypatch):
    keboola.put_rows("in.c-x.t", ["k", "v"], [{"k": "1", "v": "a"}])
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    define(server, token, keboola, "kbc.t", "in.c-x.t")
    assert sync(server, token, "kbc.t")["status"] == "succeeded"

    keboola.fail_next_export = "Table export failed: backend timeout"
    run = sync(server, token, "kbc.t")
    assert run["status"] == "failed" and "backend timeout" in run["error"], run

    define(server, token, keboola, "kbc.missing", "in.c-x.nope")
    run = sync(server, token, "kbc.missing")
    assert run["status"] == "failed" and "was not found" in run["error"], run

    keboola.token = "rotated"
    run = sync(server, token, "kbc.t")
    assert run["status"] == "failed" and "Invalid access token" in run["error"], run
    assert rows(server, "SELECT v FROM kbc.t").to_pylist() == [{"v": "a"}]
