"""Governance that follows the data, the way admins and users meet it: tags on schemas,
tables and columns (inherited downwards), and masking policies bound to tags, which reach
every column that carries the tag, in tables present and future, through ADBC.

Policies are server-wide, so this file runs its own server."""

from __future__ import annotations

import tempfile
import uuid

import adbc_driver_manager
import pyarrow as pa
import pytest

from harness import ADMIN_EMAIL, ADMIN_PASSWORD, Server, api, connect, login, user_granted

PASSWORD = "governed-password-1"


@pytest.fixture(scope="module")
def gov():
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(["demo", "--scale", "0.01"], tmp)
        try:
            yield server, login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
        finally:
            server.stop()


def rows(server, email, password, sql):
    with connect(server, email, password) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table().to_pylist()


def test_tags_are_inherited_and_shown_with_the_columns(gov):
    server, admin = gov
    assert api(server, "PUT", "/api/admin/schemas/tpch/tags", admin, {"schema": ["tpch_data"]}) == \
        (200, {"schema": ["tpch_data"]})
    status, body = api(server, "PUT", "/api/admin/tables/tpch.supplier/tags", admin,
                       {"table": ["finance"], "columns": {"s_phone": ["pii.phone"]}})
    assert status == 200, body
    assert body == {"table": ["finance"], "inherited": ["tpch_data"], "columns": {"s_phone": ["pii.phone"]}}
    assert api(server, "GET", "/api/admin/tables/tpch.supplier/tags", admin)[1] == body

    reader, _, _ = user_granted(server, admin, "tagged", "tpch.supplier", PASSWORD,
                                column_masks={"s_address": None})
    token = login(server, reader, PASSWORD)
    table = {t["name"]: t for t in api(server, "GET", "/api/catalog", token)[1]}["tpch.supplier"]
    columns = {c["name"]: c.get("tags", []) for c in table["columns"]}
    assert columns["s_phone"] == ["finance", "pii.phone", "tpch_data"]
    assert columns["s_name"] == ["finance", "tpch_data"]
    assert "s_address" not in columns  # hidden from this reader, tags and all

    # What is wrong is named; nothing changes.
    for path, body, code, expected in [
        ("/api/admin/tables/tpch.supplier/tags", {"columns": {"s_nope": ["pii"]}}, 422, "no column `s_nope`"),
        ("/api/admin/tables/tpch.supplier/tags", {"table": ["PII"]}, 422, "not a tag name"),
        ("/api/admin/tables/tpch.nowhere/tags", {"table": ["pii"]}, 404, "no table"),
        ("/api/admin/tables/tpch.supplier/tags", {"table": ["pii"], "extra": 1}, 422, "extra"),
    ]:
        status, answer = api(server, "PUT", path, admin, body)
        assert status == code and expected in json_text(answer), (path, body, status, answer)
    assert api(server, "GET", "/api/admin/tables/tpch.supplier/tags", admin)[1]["columns"] == {"s_phone": ["pii.phone"]}
    assert api(server, "PUT", "/api/admin/tables/tpch.supplier/tags", token, {"table": []})[0] == 403
    assert api(server, "GET", "/api/admin/policies", token)[0] == 403


def json_text(body) -> str:
    import json

    return json.dumps(body)


def test_mask_policies_follow_tags_to_every_covered_column(gov):
    server, admin = gov
    support = f"support_{uuid.uuid4().hex[:6]}"
    assert api(server, "POST", "/api/admin/groups", admin, {"name": support})[0] == 201
    status, body = api(server, "PUT", "/api/admin/tables/tpch.customer/tags", admin, {"columns": {
        "c_phone": ["pii.phone"], "c_name": ["pii.name"], "c_acctbal": ["finance.balance"],
        "c_mktsegment": ["segment"]}})
    assert status == 200, body
    for policy in [
        {"name": "pii_partial", "kind": "mask", "tag": "pii", "mask": "partial(0, 4)", "except_groups": [support]},
        {"name": "names_hashed", "kind": "mask", "tag": "pii.name", "mask": "hash"},
        {"name": "balances_rounded", "kind": "mask", "tag": "finance.balance", "mask": "round(-3)"},
        {"name": "segments", "kind": "mask", "tag": "segment", "mask": "lower({col})"},
    ]:
        status, body = api(server, "POST", "/api/admin/policies", admin, policy)
        assert status == 201 and body["name"] == policy["name"], body

    analyst, _, _ = user_granted(server, admin, "masked", "tpch.customer", PASSWORD, row_filter="c_nationkey < 10")
    helper, group, _ = user_granted(server, admin, "helper", "tpch.customer", PASSWORD)
    assert api(server, "POST", f"/api/admin/groups/{support}/members", admin, {"email": helper})[0] == 204

    sql = ("SELECT c_custkey, c_name, c_phone, c_acctbal, c_mktsegment FROM tpch.customer "
           "WHERE c_nationkey < 10 ORDER BY c_custkey")
    clear = rows(server, ADMIN_EMAIL, ADMIN_PASSWORD, sql)  # admins see values as they are
    masked = rows(server, analyst, PASSWORD, sql)
    assert [r["c_custkey"] for r in masked] == [r["c_custkey"] for r in clear] and clear
    for seen, row in zip(masked, clear):
        # partial(0, 4): all but the last four characters starred.
        assert seen["c_phone"] == "*" * (len(row["c_phone"]) - 4) + row["c_phone"][-4:], (seen, row)
        # Two policies cover c_name (pii, pii.name): the most restrictive, hash, wins.
        assert len(seen["c_name"]) == 32 and seen["c_name"] != row["c_name"]
        assert float(seen["c_acctbal"]) % 1000 == 0
        assert seen["c_mktsegment"] == row["c_mktsegment"].lower()
    # The hash is keyed and stable: equal names mask equally (masked columns still join).
    names = rows(server, analyst, PASSWORD, "SELECT count(DISTINCT c_name) AS n FROM tpch.customer")
    assert names == [{"n": len({r["c_name"] for r in clear})}]
    again = rows(server, analyst, PASSWORD,
                 f"SELECT c_name FROM tpch.customer WHERE c_custkey = {clear[0]['c_custkey']}")
    assert again == [{"c_name": masked[0]["c_name"]}]
    # A filter on a masked column sees the mask, not the value.
    phone = clear[0]["c_phone"]
    assert rows(server, analyst, PASSWORD, f"SELECT count(*) AS n FROM tpch.customer WHERE c_phone = '{phone}'") == [{"n": 0}]

    # The support group is excepted from pii_partial only: phones clear, names still hashed.
    helped = rows(server, helper, PASSWORD, sql)
    assert [r["c_phone"] for r in helped] == [r["c_phone"] for r in clear]
    assert all(len(r["c_name"]) == 32 for r in helped)

    # Deleting a policy takes effect at once.
    assert api(server, "DELETE", "/api/admin/policies/pii_partial", admin)[0] == 204
    after = rows(server, analyst, PASSWORD, "SELECT c_phone FROM tpch.customer WHERE c_nationkey < 10 ORDER BY c_custkey")
    assert [r["c_phone"] for r in after] == [r["c_phone"] for r in clear]
    assert api(server, "DELETE", "/api/admin/policies/pii_partial", admin)[0] == 404


def test_a_tag_policy_reaches_a_table_written_after_it(gov):
    server, admin = gov
    sandbox = f"gov_{uuid.uuid4().hex[:6]}"
    writer, group, _ = user_granted(server, admin, "gwriter", f"{sandbox}.*", PASSWORD, privilege="write")
    assert api(server, "PUT", f"/api/admin/schemas/{sandbox}/tags", admin, {"schema": ["contact"]})[0] == 200
    status, body = api(server, "POST", "/api/admin/policies", admin,
                       {"name": f"contact_{sandbox}", "kind": "mask", "tag": "contact", "mask": "redact"})
    assert status == 201, body
    with connect(server, writer, PASSWORD) as conn, conn.cursor() as cur:
        cur.adbc_ingest("people", pa.table({"email": ["ann@example.com"], "visits": [3]}),
                        mode="create", db_schema_name=sandbox)
        conn.commit()
    assert rows(server, writer, PASSWORD, f"SELECT email, visits FROM {sandbox}.people") == \
        [{"email": "****", "visits": None}]
    assert rows(server, ADMIN_EMAIL, ADMIN_PASSWORD, f"SELECT email, visits FROM {sandbox}.people") == \
        [{"email": "ann@example.com", "visits": 3}]


def test_policies_that_cannot_hold_are_refused_naming_why(gov):
    server, admin = gov
    base = {"kind": "mask", "tag": "pii"}
    for body, code, expected in [
        ({**base, "name": "a", "mask": "partial(2)"}, 422, "is not one of"),
        ({**base, "name": "b", "mask": "truncate_date(fortnight)"}, 422, "is not one of"),
        ({**base, "name": "c", "mask": "upper({col}"}, 422, "not a SQL expression"),
        ({**base, "name": "d", "mask": "null", "except_groups": ["nobody_here"]}, 404, "nobody_here"),
        ({**base, "name": "bad name", "mask": "null"}, 422, "not a policy name"),
        ({**base, "name": "e", "mask": "null", "tag": "Bad"}, 422, "not a tag name"),
        ({"name": "f", "kind": "row", "tag": "pii", "mask": "null"}, 422, "kind"),
    ]:
        status, answer = api(server, "POST", "/api/admin/policies", admin, body)
        assert status == code and expected in json_text(answer), (body, status, answer)
    assert api(server, "POST", "/api/admin/policies", admin, {**base, "name": "twice", "mask": "null"})[0] == 201
    status, answer = api(server, "POST", "/api/admin/policies", admin, {**base, "name": "twice", "mask": "null"})
    assert status == 409 and "exists" in json_text(answer), answer
    assert "twice" in [p["name"] for p in api(server, "GET", "/api/admin/policies", admin)[1]]
    assert api(server, "DELETE", "/api/admin/policies/twice", admin)[0] == 204
