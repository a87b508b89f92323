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
        ({"name": "f", "kind": "row", "tag": "pii", "mask": "null"}, 422, "not a `mask`"),
        ({"name": "g", "kind": "row", "condition": "true"}, 422, "either a `table`"),
        ({"name": "h", "kind": "row", "table": "tpch.nation", "tag": "pii", "condition": "true"}, 422,
         "either a `table`"),
        ({"name": "i", "kind": "row", "table": "tpch.nation"}, 422, "needs a `condition`"),
        ({"name": "j", "kind": "row", "table": "tpch.nation", "condition": "n_nope = 1"}, 422, "n_nope"),
        ({"name": "k", "kind": "row", "table": "tpch.nation", "condition": "n_name"}, 422, "true/false"),
        ({"name": "l", "kind": "row", "table": "tpch.*", "condition": "n_regionkey = 1"}, 422, "tpch.customer"),
        ({"name": "m", "kind": "row", "table": "tpch.nation", "condition": "n_regionkey IN (SELECT 1)"}, 422,
         "subqueries"),
        ({"name": "n", "kind": "mask", "tag": "pii", "mask": "null", "restrictive": True}, 422, "row policies"),
    ]:
        status, answer = api(server, "POST", "/api/admin/policies", admin, body)
        assert status == code and expected in json_text(answer), (body, status, answer)
    assert api(server, "POST", "/api/admin/policies", admin, {**base, "name": "twice", "mask": "null"})[0] == 201
    status, answer = api(server, "POST", "/api/admin/policies", admin, {**base, "name": "twice", "mask": "null"})
    assert status == 409 and "exists" in json_text(answer), answer
    assert "twice" in [p["name"] for p in api(server, "GET", "/api/admin/policies", admin)[1]]
    assert api(server, "DELETE", "/api/admin/policies/twice", admin)[0] == 204


def count(server, email, password, sql) -> int:
    return rows(server, email, password, sql)[0]["n"]


def test_permissive_policies_widen_and_restrictive_ones_narrow_whatever_grants_say(gov):
    server, admin = gov
    table = "tpch.nation"
    # A: region 0 only, comments masked by its grant. B: every row, from an admin-made grant.
    a, _, _ = user_granted(server, admin, "rowa", table, PASSWORD, row_filter="n_regionkey = 0",
                           column_masks={"n_comment": "'hidden'"})
    b, _, _ = user_granted(server, admin, "rowb", table, PASSWORD)
    legal, legal_group, _ = user_granted(server, admin, "legal", table, PASSWORD)
    assert count(server, a, PASSWORD, f"SELECT count(*) AS n FROM {table}") == 5

    suffix = uuid.uuid4().hex[:6]
    status, body = api(server, "POST", "/api/admin/policies", admin, {
        "name": f"more_{suffix}", "kind": "row", "table": table, "condition": "n_regionkey = 1"})
    assert status == 201, body
    # Permissive: OR-ed with A's filter; its rows keep A's mask (never clearer than the grant).
    got = rows(server, a, PASSWORD, f"SELECT n_regionkey, n_comment FROM {table}")
    assert sorted({r["n_regionkey"] for r in got}) == [0, 1] and len(got) == 10
    assert {r["n_comment"] for r in got} == {"hidden"}

    status, body = api(server, "POST", "/api/admin/policies", admin, {
        "name": f"low_keys_{suffix}", "kind": "row", "table": "tpch.nation", "condition": "n_nationkey < 10",
        "restrictive": True, "except_groups": [legal_group]})
    assert status == 201, body
    expected = {r["n_nationkey"] for r in rows(server, ADMIN_EMAIL, ADMIN_PASSWORD,
                f"SELECT n_nationkey FROM {table} WHERE n_regionkey IN (0, 1) AND n_nationkey < 10")}
    assert {r["n_nationkey"] for r in rows(server, a, PASSWORD, f"SELECT n_nationkey FROM {table}")} == expected
    # Restrictive beats B's unfiltered grant; the excepted group and admins see all 25.
    assert count(server, b, PASSWORD, f"SELECT count(*) AS n FROM {table}") == 10
    assert count(server, b, PASSWORD, f"SELECT count(*) AS n FROM {table} WHERE n_nationkey >= 10") == 0
    assert count(server, legal, PASSWORD, f"SELECT count(*) AS n FROM {table}") == 25
    assert count(server, ADMIN_EMAIL, ADMIN_PASSWORD, f"SELECT count(*) AS n FROM {table}") == 25
    # The policy's text never reaches users: no row counts for a filtered table either.
    token = login(server, b, PASSWORD)
    listed = {t["name"]: t for t in api(server, "GET", "/api/catalog", token)[1]}[table]
    assert "n_nationkey < 10" not in json_text(listed) and listed.get("row_count") is None

    for name in (f"more_{suffix}", f"low_keys_{suffix}"):
        assert api(server, "DELETE", f"/api/admin/policies/{name}", admin)[0] == 204
    assert count(server, b, PASSWORD, f"SELECT count(*) AS n FROM {table}") == 25


def test_a_restrictive_policy_that_cannot_be_evaluated_closes_the_table(gov):
    server, admin = gov
    reader, _, _ = user_granted(server, admin, "closed", "tpch.region", PASSWORD)
    suffix = uuid.uuid4().hex[:6]
    tag = f"closing_{suffix}"
    # Valid when made (no column carries the tag yet) ...
    status, body = api(server, "POST", "/api/admin/policies", admin, {
        "name": f"closing_{suffix}", "kind": "row", "tag": tag, "condition": "{col} + 1 > 0", "restrictive": True})
    assert status == 201, body
    # ... then a text column is tagged, where `+ 1` means nothing: the table closes, not opens.
    assert api(server, "PUT", "/api/admin/tables/tpch.region/tags", admin, {"columns": {"r_name": [tag]}})[0] == 200
    with pytest.raises(adbc_driver_manager.Error) as e:
        rows(server, reader, PASSWORD, "SELECT r_regionkey FROM tpch.region")
    assert "closed to you" in str(e.value), e.value
    assert count(server, ADMIN_EMAIL, ADMIN_PASSWORD, "SELECT count(*) AS n FROM tpch.region") == 5

    # A condition that fails while running fails the query too (a bad attribute value).
    assert api(server, "PUT", "/api/admin/tables/tpch.region/tags", admin, {"columns": {}})[0] == 200
    assert api(server, "PUT", f"/api/admin/users/{reader}/attributes", admin, {"level": "high"})[0] == 200
    status, body = api(server, "POST", "/api/admin/policies", admin, {
        "name": f"levels_{suffix}", "kind": "row", "table": "tpch.region",
        "condition": "r_regionkey < CAST(user_attribute('level') AS INT)", "restrictive": True})
    assert status == 201, body
    with pytest.raises(adbc_driver_manager.Error) as e:
        rows(server, reader, PASSWORD, "SELECT r_regionkey FROM tpch.region")
    assert "high" in str(e.value) or "cast" in str(e.value).lower(), e.value
    assert api(server, "PUT", f"/api/admin/users/{reader}/attributes", admin, {"level": 2})[0] == 200
    assert [r["r_regionkey"] for r in rows(server, reader, PASSWORD, "SELECT r_regionkey FROM tpch.region ORDER BY 1")] \
        == [0, 1]
    for name in (f"closing_{suffix}", f"levels_{suffix}"):
        assert api(server, "DELETE", f"/api/admin/policies/{name}", admin)[0] == 204


def test_one_grant_with_user_attributes_serves_every_region(gov):
    server, admin = gov
    group = f"regions_{uuid.uuid4().hex[:6]}"
    assert api(server, "POST", "/api/admin/groups", admin, {"name": group})[0] == 201
    people = {}
    for name, attributes in [("one", {"region": "1"}), ("two", {"regions": ["2", "3"]}), ("none", {})]:
        email = f"{name}-{uuid.uuid4().hex[:6]}@example.com"
        assert api(server, "POST", "/api/admin/users", admin, {"email": email, "password": PASSWORD})[0] == 201
        assert api(server, "POST", f"/api/admin/groups/{group}/members", admin, {"email": email})[0] == 204
        status, stored = api(server, "PUT", f"/api/admin/users/{email}/attributes", admin, attributes)
        assert status == 200 and stored == attributes, stored
        people[name] = email
    # `regions` is a list (someone holds a list): `user_attribute` gives a list to all.
    status, grant = api(server, "POST", "/api/admin/grants", admin, {
        "group": group, "table": "tpch.nation",
        "row_filter": "CAST(n_regionkey AS VARCHAR) = user_attribute('region') "
                      "OR array_has(user_attribute('regions'), CAST(n_regionkey AS VARCHAR))"})
    assert status == 201, grant
    regions = {name: sorted({r["n_regionkey"] for r in rows(server, email, PASSWORD, "SELECT n_regionkey FROM tpch.nation")})
               for name, email in people.items()}
    assert regions == {"one": [1], "two": [2, 3], "none": []}
    # The caller's functions answer for the caller.
    got = rows(server, people["two"], PASSWORD,
               f"SELECT current_user AS u, array_has(current_user_groups(), '{group}') AS member, "
               "user_attribute('regions') AS r, user_attribute('unset') AS unset")
    assert got == [{"u": people["two"], "member": True, "r": ["2", "3"], "unset": None}]
    # A change reaches the next query.
    assert api(server, "PUT", f"/api/admin/users/{people['one']}/attributes", admin, {"region": "4"})[0] == 200
    assert {r["n_regionkey"] for r in rows(server, people["one"], PASSWORD, "SELECT n_regionkey FROM tpch.nation")} == {4}

    token = login(server, people["one"], PASSWORD)
    for who, email, body, code, expected in [
        (admin, people["one"], {"Region": "x"}, 422, "not an attribute name"),
        (admin, people["one"], {"region": {"nested": 1}}, 422, "string, a number"),
        (admin, people["one"], {"region": ["x"] * 300}, 422, "more than"),
        (admin, "nobody@example.com", {"region": "x"}, 404, "nobody@example.com"),
        (token, people["one"], {"region": "0"}, 403, ""),
    ]:
        status, answer = api(server, "PUT", f"/api/admin/users/{email}/attributes", who, body)
        assert status == code and expected in json_text(answer), (body, status, answer)
    assert api(server, "GET", f"/api/admin/users/{people['one']}/attributes", admin)[1] == {"region": "4"}
    assert api(server, "GET", f"/api/admin/users/{people['one']}/attributes", token)[0] == 403


def test_tags_and_policies_in_the_configuration_file(tmp_path):
    import json

    import pyarrow.parquet as pq

    from test_sync import sync

    src = tmp_path / "src"
    src.mkdir()
    pq.write_table(pa.table({"name": ["Ann", "Bob", "Eve"], "email": ["ann@a.eu", "bob@b.us", "eve@e.eu"],
                            "region": ["EU", "US", "EU"]}), src / "people.parquet")
    table = {"name": "crm.people", "connector": "files", "options": {"path": str(src / "*.parquet")},
             "columns": {"name": "Full name", "email": {"description": "Work e-mail", "tags": ["pii.email"]}}}
    policies = [{"name": "emails", "kind": "mask", "tag": "pii.email", "mask": "redact"},
                {"name": "eu_only", "kind": "row", "table": "crm.people", "condition": "region = 'EU'",
                 "restrictive": True, "except_groups": ["global"]}]

    def config(policies):
        # JSON is YAML.
        return f"tables:\n  - {json.dumps(table)}\ngovernance:\n  policies: {json.dumps(policies)}\n"

    server = Server(["serve"], str(tmp_path / "data"), config=config(policies))
    try:
        admin = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
        assert sync(server, admin, "crm.people")["status"] == "succeeded"
        assert api(server, "GET", "/api/admin/tables/crm.people/tags", admin)[1]["columns"] == \
            {"email": ["pii.email"]}
        assert {p["name"] for p in api(server, "GET", "/api/admin/policies", admin)[1]} == {"emails", "eu_only"}
        status, answer = api(server, "DELETE", "/api/admin/policies/eu_only", admin)
        assert status == 409 and "configuration file" in json_text(answer), answer

        reader, _, _ = user_granted(server, admin, "crm", "crm.people", PASSWORD)
        assert rows(server, reader, PASSWORD, "SELECT name, email FROM crm.people ORDER BY name") == \
            [{"name": "Ann", "email": "****"}, {"name": "Eve", "email": "****"}]
        listed = {t["name"]: t for t in api(server, "GET", "/api/catalog", login(server, reader, PASSWORD))[1]}
        described = {c["name"]: c.get("description") for c in listed["crm.people"]["columns"]}
        assert described["name"] == "Full name" and described["email"] == "Work e-mail"
    finally:
        server.stop()
    # The row policy leaves the file: it is gone at the next start; the mask stays.
    server = Server(["serve"], str(tmp_path / "data"), config=config(policies[:1]))
    try:
        admin = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
        assert [p["name"] for p in api(server, "GET", "/api/admin/policies", admin)[1]] == ["emails"]
        assert len(rows(server, reader, PASSWORD, "SELECT email FROM crm.people")) == 3
    finally:
        server.stop()


def test_view_as_gives_exactly_what_the_user_gets_and_is_audited(gov):
    server, admin = gov
    reader, group, grant = user_granted(server, admin, "viewed", "tpch.part", PASSWORD,
                                        row_filter="p_size = 7", column_masks={"p_brand": "'***'",
                                                                               "p_comment": None})
    sql = "SELECT p_partkey, p_name, p_brand FROM tpch.part ORDER BY p_partkey LIMIT 5"
    own = rows(server, reader, PASSWORD, sql)
    status, seen = api(server, "POST", "/api/admin/preview", admin, {"as": reader, "sql": sql})
    assert status == 200, seen
    assert seen["rows"] == own and seen["as"] == reader and not seen["truncated"]
    assert [c["name"] for c in seen["columns"]] == ["p_partkey", "p_name", "p_brand"]
    assert {r["p_brand"] for r in seen["rows"]} == {"***"}
    effects = {"tpch.part": {"rows_filtered": True, "masked_columns": ["p_brand"]}}
    assert seen["policy"] == effects
    # The user's own Flight SQL answer says the same in its FlightInfo (and never the how).
    import json

    import pyarrow.flight as flight

    from test_clients import statement_command

    client = flight.FlightClient(server.uri)
    options = flight.FlightCallOptions(headers=[client.authenticate_basic_token(reader, PASSWORD)])
    info = client.get_flight_info(flight.FlightDescriptor.for_command(statement_command(sql)), options)
    assert json.loads(info.app_metadata) == {"policy": effects}
    assert b"p_size" not in info.app_metadata
    admin_client = flight.FlightClient(server.uri)
    options = flight.FlightCallOptions(headers=[admin_client.authenticate_basic_token(ADMIN_EMAIL, ADMIN_PASSWORD)])
    assert admin_client.get_flight_info(flight.FlightDescriptor.for_command(statement_command(sql)),
                                        options).app_metadata == b""

    # The user's errors, in the user's words: a hidden column, a table they lack.
    for bad, expected in [("SELECT p_comment FROM tpch.part", "p_comment"),
                          ("SELECT * FROM tpch.orders", "orders")]:
        status, seen = api(server, "POST", "/api/admin/preview", admin, {"as": reader, "sql": bad})
        assert status == 200 and expected in seen["error"] and seen["rows"] == [], seen
        with pytest.raises(adbc_driver_manager.Error) as e:
            rows(server, reader, PASSWORD, bad)
        assert seen["error"] in str(e.value), (seen["error"], str(e.value))

    status, seen = api(server, "POST", "/api/admin/preview", admin,
                       {"as": reader, "sql": "SELECT p_partkey FROM tpch.part", "max_rows": 3})
    assert status == 200 and len(seen["rows"]) == 3 and seen["truncated"], seen

    # Attacks: not an admin, an unknown user, a write, a malformed body.
    token = login(server, reader, PASSWORD)
    assert api(server, "POST", "/api/admin/preview", token, {"as": ADMIN_EMAIL, "sql": sql})[0] == 403
    status, answer = api(server, "POST", "/api/admin/preview", admin, {"as": "ghost@example.com", "sql": sql})
    assert status == 404 and "ghost@example.com" in json_text(answer)
    status, seen = api(server, "POST", "/api/admin/preview", admin,
                       {"as": reader, "sql": "CREATE TABLE tpch.x AS SELECT 1"})
    assert status == 200 and seen["error"] and seen["rows"] == [], seen
    assert api(server, "POST", "/api/admin/preview", admin, {"as": reader})[0] == 422
    assert api(server, "POST", "/api/admin/preview", admin, {"as": reader, "sql": sql, "x": 1})[0] == 422

    audit = api(server, "GET", "/api/admin/audit?action=preview&limit=20", admin)[1]
    mine = [a for a in audit if a["target"] == reader]
    assert mine and mine[-1]["actor"] == ADMIN_EMAIL and mine[0]["statement"], mine


def test_effective_access_explains_each_mask_and_condition(gov):
    server, admin = gov
    suffix = uuid.uuid4().hex[:6]
    tag = f"contact_{suffix}"
    reader, group, grant = user_granted(server, admin, "explained", "tpch.supplier", PASSWORD,
                                        row_filter="s_nationkey < 5", column_masks={"s_address": "'hidden'",
                                                                                    "s_comment": None})
    assert api(server, "PUT", "/api/admin/tables/tpch.supplier/tags", admin,
               {"columns": {"s_phone": [tag]}})[0] == 200
    assert api(server, "POST", "/api/admin/policies", admin,
               {"name": f"phones_{suffix}", "kind": "mask", "tag": tag, "mask": "partial(0, 2)"})[0] == 201
    assert api(server, "POST", "/api/admin/policies", admin,
               {"name": f"few_{suffix}", "kind": "row", "table": "tpch.supplier", "condition": "s_suppkey < 50",
                "restrictive": True})[0] == 201
    token = login(server, reader, PASSWORD)
    status, access = api(server, "GET", "/api/me/access", token)
    assert status == 200, access
    assert [t["table"] for t in access] == ["tpch.supplier"]
    table = access[0]
    assert table["through"] == "grants" and table["rows_filtered"]
    assert table["grants"] == [{"id": grant["id"], "group": group, "on": "tpch.supplier",
                                "row_filter": "s_nationkey < 5"}]
    assert table["row_policies"] == [{"policy": f"few_{suffix}", "mode": "restrictive",
                                      "condition": "s_suppkey < 50"}]
    columns = {c["name"]: c for c in table["columns"]}
    assert "s_comment" not in columns  # hidden: not even named
    assert columns["s_name"]["shown"] == "clear" and "masked_by" not in columns["s_name"]
    assert columns["s_address"]["masked_by"] == [f"grant {grant['id']}: 'hidden'"]
    assert columns["s_phone"]["shown"] == "masked" and tag in columns["s_phone"]["tags"]
    assert columns["s_phone"]["masked_by"] == [f"policy phones_{suffix} (partial(0, 2))"]
    # Admins see the same for anyone; users cannot ask about others.
    assert api(server, "GET", f"/api/admin/users/{reader}/access", admin)[1] == access
    assert api(server, "GET", f"/api/admin/users/{ADMIN_EMAIL}/access", token)[0] == 403
    assert api(server, "GET", "/api/admin/users/ghost@example.com/access", admin)[0] == 404
    mine = api(server, "GET", "/api/me/access", admin)[1]
    assert {t["through"] for t in mine} == {"admin"} and len(mine) >= 8
    for name in (f"phones_{suffix}", f"few_{suffix}"):
        assert api(server, "DELETE", f"/api/admin/policies/{name}", admin)[0] == 204
    assert api(server, "PUT", "/api/admin/tables/tpch.supplier/tags", admin, {})[0] == 200


def history(server, admin, **query):
    """The access history, waiting for the statements' audit rows (written in batches)."""
    import time
    import urllib.parse

    path = "/api/admin/access-history?" + urllib.parse.urlencode(query)
    deadline = time.time() + 10
    while True:
        status, found = api(server, "GET", path, admin)
        assert status == 200, found
        if found or time.time() > deadline:
            return found
        time.sleep(0.2)


def test_access_history_tells_projected_from_filter_only_columns(gov):
    server, admin = gov
    reader, group, grant = user_granted(server, admin, "audited", "tpch.part", PASSWORD,
                                        column_masks={"p_brand": "'***'"})
    status, more = api(server, "POST", "/api/admin/grants", admin, {"group": group, "table": "tpch.partsupp"})
    assert status == 201, more
    rows(server, reader, PASSWORD, "SELECT p_name, p_brand FROM tpch.part WHERE p_size > 40")
    got = history(server, admin, table="tpch.part", user=reader)
    assert len(got) == 1, got
    assert {k: got[0][k] for k in ("user", "table", "columns_projected", "columns_filtered", "masked_columns",
                                   "policies")} == {
        "user": reader, "table": "tpch.part", "columns_projected": ["p_brand", "p_name"],
        "columns_filtered": ["p_size"], "masked_columns": ["p_brand"], "policies": [f"grant {grant['id']}"]}

    rows(server, reader, PASSWORD,
         "SELECT ps.ps_supplycost, count(*) AS n FROM tpch.part p JOIN tpch.partsupp ps "
         "ON p.p_partkey = ps.ps_partkey WHERE p.p_type = 'STANDARD' GROUP BY ps.ps_supplycost")
    import time

    deadline = time.time() + 10
    while len(got := history(server, admin, user=reader)) < 3 and time.time() < deadline:
        time.sleep(0.2)
    joined = {r["table"]: r for r in got if r["statement_id"] == got[0]["statement_id"]}
    assert joined["tpch.part"]["columns_projected"] == []
    assert joined["tpch.part"]["columns_filtered"] == ["p_partkey", "p_type"]
    assert joined["tpch.partsupp"]["columns_projected"] == ["ps_supplycost"]
    assert joined["tpch.partsupp"]["columns_filtered"] == ["ps_partkey"]
    assert [r["statement_id"] for r in history(server, admin, table="tpch.part", column="p_type",
                                                user=reader)] == [got[0]["statement_id"]]

    # "Who read p_brand unmasked" is one query for an admin, and the admin is among them.
    rows(server, ADMIN_EMAIL, ADMIN_PASSWORD, "SELECT p_brand FROM tpch.part LIMIT 1")
    history(server, admin, user=ADMIN_EMAIL, table="tpch.part")
    who = rows(server, ADMIN_EMAIL, ADMIN_PASSWORD,
               "SELECT DISTINCT \"user\" FROM system.access_history WHERE table_name = 'tpch.part' "
               "AND array_has(columns_projected, 'p_brand') AND NOT array_has(masked_columns, 'p_brand')")
    assert {r["user"] for r in who} >= {ADMIN_EMAIL} and reader not in {r["user"] for r in who}
    # Not for anyone else.
    token = login(server, reader, PASSWORD)
    assert api(server, "GET", "/api/admin/access-history", token)[0] == 403
    with pytest.raises(adbc_driver_manager.Error):
        rows(server, reader, PASSWORD, "SELECT * FROM system.access_history")
    assert api(server, "GET", "/api/admin/access-history?bogus=1", admin)[0] == 400
