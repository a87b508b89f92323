"""Governed write-back, the way admins and users meet it: where a group may write is a grant
with the `write` privilege on a whole schema that no sync keeps tables in."""

from __future__ import annotations

import uuid

import pytest

from harness import ADMIN_EMAIL, ADMIN_PASSWORD, api, login


@pytest.fixture(scope="module")
def admin_token(server):
    return login(server, ADMIN_EMAIL, ADMIN_PASSWORD)


@pytest.fixture
def group(server, admin_token):
    name = f"writers-{uuid.uuid4().hex[:8]}"
    assert api(server, "POST", "/api/admin/groups", admin_token, {"name": name})[0] == 201
    return name


def test_write_is_granted_on_a_whole_schema_no_sync_keeps(server, admin_token, group):
    sandbox = f"sandbox_{uuid.uuid4().hex[:8]}"
    status, grant = api(server, "POST", "/api/admin/grants", admin_token,
                        {"group": group, "table": f"{sandbox}.*", "privilege": "write"})
    assert status == 201, grant
    assert grant["privilege"] == "write" and grant["table"] == f"{sandbox}.*"
    listed = {g["id"]: g for g in api(server, "GET", "/api/admin/grants", admin_token)[1]}
    assert listed[grant["id"]]["privilege"] == "write"

    # Without a privilege a grant reads, as before.
    status, read = api(server, "POST", "/api/admin/grants", admin_token, {"group": group, "table": "tpch.nation"})
    assert status == 201 and read["privilege"] == "read", read

    # The synced demo schema never becomes writable: its next sync would overwrite a write.
    status, body = api(server, "POST", "/api/admin/grants", admin_token,
                       {"group": group, "table": "tpch.*", "privilege": "write"})
    assert status == 422, body
    assert "kept by syncs" in body["error"]["message"] and "tpch." in body["error"]["message"]

    # One table is never writable on its own, and the privilege's spelling is checked.
    status, body = api(server, "POST", "/api/admin/grants", admin_token,
                       {"group": group, "table": f"{sandbox}.scores", "privilege": "write"})
    assert status == 422 and f"`{sandbox}.*`" in body["error"]["message"], body
    status, body = api(server, "POST", "/api/admin/grants", admin_token,
                       {"group": group, "table": f"{sandbox}.*", "privilege": "WRITE"})
    assert status == 422 and "`read` or `write`" in body["error"]["message"], body

    # None of the refusals was stored.
    mine = [g for g in api(server, "GET", "/api/admin/grants", admin_token)[1] if g["group"] == group]
    assert sorted((g["table"], g["privilege"]) for g in mine) == [(f"{sandbox}.*", "write"), ("tpch.nation", "read")]
