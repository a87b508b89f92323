"""Identity and access through the real server, the way users and admins meet it: grants,
row filters and column masks checked with ADBC against what the policy says; bypass attempts;
changes taking effect without a restart; tokens; the JWT corpus; the audit log."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import adbc_driver_manager
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import harness
from harness import ADMIN_EMAIL, ADMIN_PASSWORD, api, connect, login, metric, signing_key

PASSWORD = "correct horse battery"
# The policies under test, in one place: the grant matrix compares against these.
SALES_NATIONS = (6, 7)  # FRANCE, GERMANY
SUPPORT_NATION = 1  # ARGENTINA
CUSTOMER_COLUMNS = ["c_custkey", "c_name", "c_address", "c_nationkey", "c_phone", "c_acctbal",
                    "c_mktsegment", "c_comment"]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}@example.com"


@pytest.fixture(scope="module")
def admin_token(server):
    return login(server, ADMIN_EMAIL, ADMIN_PASSWORD)


@pytest.fixture(scope="module")
def world(server, admin_token):
    """Users, groups and grants:
    - sales:   tpch.customer where c_nationkey in (6, 7), c_phone masked '***', c_address hidden;
               tpch.nation, all rows
    - support: tpch.customer where c_nationkey = 1, nothing masked
    - finance: tpch.* (every table), c_acctbal masked to 0 where present
    - regional: tpch.region, only the region named like the user (current_user)
    alice: sales; carol: sales + support; bob: finance; dave: nothing; asia@…: regional."""
    def ok(status_body, expected=(200, 201, 204)):
        status, body = status_body
        assert status in expected, body
        return body

    suffix = uuid.uuid4().hex[:6]
    groups = {g: f"{g}_{suffix}" for g in ["sales", "support", "finance", "regional"]}
    users = {name: unique(name) for name in ["alice", "bob", "carol", "dave"]}
    users["asia"] = "asia@example.com"
    for email in users.values():
        ok(api(server, "POST", "/api/admin/users", admin_token, {"email": email, "password": PASSWORD}))
    for g in groups.values():
        ok(api(server, "POST", "/api/admin/groups", admin_token, {"name": g}))
    for user, group in [("alice", "sales"), ("carol", "sales"), ("carol", "support"), ("bob", "finance"),
                        ("asia", "regional")]:
        ok(api(server, "POST", f"/api/admin/groups/{groups[group]}/members", admin_token, {"email": users[user]}))
    grants = {}
    for key, grant in {
        "sales_customer": {"group": groups["sales"], "table": "tpch.customer",
                           "row_filter": f"c_nationkey IN {SALES_NATIONS}",
                           "column_masks": {"c_phone": "'***'", "c_address": None}},
        "sales_nation": {"group": groups["sales"], "table": "tpch.nation"},
        "support_customer": {"group": groups["support"], "table": "tpch.customer",
                             "row_filter": f"c_nationkey = {SUPPORT_NATION}"},
        "finance_all": {"group": groups["finance"], "table": "tpch.*", "column_masks": {"c_acctbal": "0"}},
        "regional": {"group": groups["regional"], "table": "tpch.region",
                     "row_filter": "r_name = upper(split_part(current_user, '@', 1))"},
    }.items():
        grants[key] = ok(api(server, "POST", "/api/admin/grants", admin_token, grant))["id"]
    return {"users": users, "groups": groups, "grants": grants}


def as_user(server, world, name):
    return connect(server, world["users"][name], PASSWORD)


def query(conn, sql, params=None) -> pa.Table:
    with conn.cursor() as cur:
        cur.execute(sql, params)
        return cur.fetch_arrow_table()


def scalar(conn, sql, params=None):
    return query(conn, sql, params).column(0)[0].as_py()


def error_of(conn, sql, params=None) -> str:
    with pytest.raises(adbc_driver_manager.Error) as info:
        query(conn, sql, params)
    return str(info.value)


@pytest.fixture(scope="module")
def admin(server):
    c = connect(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    yield c
    c.close()


@pytest.fixture(scope="module")
def alice(server, world):
    c = as_user(server, world, "alice")
    yield c
    c.close()


def tables_of(conn) -> set[str]:
    objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
    names = set()
    for catalog in objects:
        for schema in catalog["catalog_db_schemas"] or []:
            for table in schema["db_schema_tables"] or []:
                names.add(f'{schema["db_schema_name"]}.{table["table_name"]}')
    return names


# ----- the grant matrix ---------------------------------------------------------------------

def expected_customer(admin, nations_clear, nations_masked, address_visible):
    """What the policy says a user sees of tpch.customer, computed by the admin in plain SQL."""
    where = " OR ".join(
        [f"c_nationkey IN ({', '.join(map(str, n))})" for n in (nations_clear, nations_masked) if n])
    phone = "c_phone" if not nations_masked else (
        f"CASE WHEN c_nationkey IN ({', '.join(map(str, nations_clear or [-1]))}) THEN c_phone ELSE '***' END")
    address = "" if not address_visible else (
        f"CASE WHEN c_nationkey IN ({', '.join(map(str, nations_clear or [-1]))}) THEN c_address END AS c_address, ")
    return query(admin, f"""
        SELECT c_custkey, c_name, {address} c_nationkey, {phone} AS c_phone, c_acctbal, c_mktsegment, c_comment
        FROM tpch.customer WHERE {where} ORDER BY c_custkey""")


def test_grant_matrix_tables(server, world):
    expected = {
        "alice": {"tpch.customer", "tpch.nation"},
        "carol": {"tpch.customer", "tpch.nation"},
        "bob": {f"tpch.{t}" for t in ["customer", "lineitem", "nation", "orders", "part", "partsupp", "region",
                                      "supplier"]},
        "dave": set(),
        "asia": {"tpch.region"},
    }
    for user, tables in expected.items():
        with as_user(server, world, user) as c:
            assert tables_of(c) == tables, user


def test_grant_matrix_rows_and_columns(server, world, admin):
    with as_user(server, world, "alice") as c:
        got = query(c, "SELECT * FROM tpch.customer ORDER BY c_custkey")
    want = expected_customer(admin, [], list(SALES_NATIONS), address_visible=False)
    assert got.column_names == want.column_names
    assert got.num_rows > 0 and got.to_pylist() == want.to_pylist()

    # carol: union of sales (masked, no address) and support (clear): per-row masking.
    with as_user(server, world, "carol") as c:
        got = query(c, "SELECT * FROM tpch.customer ORDER BY c_custkey")
    want = expected_customer(admin, [SUPPORT_NATION], list(SALES_NATIONS), address_visible=True)
    assert got.column_names == CUSTOMER_COLUMNS == want.column_names
    assert got.to_pylist() == want.to_pylist()
    clear = got.filter(pc.equal(got["c_nationkey"], SUPPORT_NATION))
    assert clear.num_rows > 0 and "***" not in clear["c_phone"].to_pylist()

    # bob: everything, account balances masked to 0 in every table that has one.
    with as_user(server, world, "bob") as c:
        assert scalar(c, "SELECT count(*) FROM tpch.customer") == scalar(admin, "SELECT count(*) FROM tpch.customer")
        assert scalar(c, "SELECT max(c_acctbal) FROM tpch.customer") == 0
        assert scalar(c, "SELECT count(*) FROM tpch.lineitem") == scalar(admin, "SELECT count(*) FROM tpch.lineitem")
        # The mask keeps the column's type.
        assert query(c, "SELECT c_acctbal FROM tpch.customer LIMIT 1").schema.field(0).type == \
            query(admin, "SELECT c_acctbal FROM tpch.customer LIMIT 1").schema.field(0).type

    # asia@…: current_user in the row filter.
    with as_user(server, world, "asia") as c:
        assert query(c, "SELECT r_name FROM tpch.region").column(0).to_pylist() == ["ASIA"]

    with as_user(server, world, "dave") as c:
        assert "not found" in error_of(c, "SELECT * FROM tpch.customer")


# ----- bypass attempts -------------------------------------------------------------------------

def visible_count(admin):
    return scalar(admin, f"SELECT count(*) FROM tpch.customer WHERE c_nationkey IN {SALES_NATIONS}")


@pytest.mark.parametrize("sql", [
    "SELECT count(*) FROM tpch.customer",
    "SELECT count(*) FROM quiver.tpch.customer",
    'SELECT count(*) FROM "quiver"."tpch"."customer"',
    "SELECT count(*) FROM tpch.customer c JOIN tpch.nation n ON c.c_nationkey = n.n_nationkey",
    "SELECT count(*) FROM (SELECT * FROM tpch.customer) t",
    "SELECT count(*) FROM tpch.nation n WHERE EXISTS (SELECT 1 FROM tpch.customer c WHERE c.c_nationkey = n.n_nationkey) AND n.n_nationkey IN (1, 6, 7) OR false",
    "WITH x AS (SELECT * FROM tpch.customer) SELECT count(*) FROM x",
    "SELECT count(*) FROM (SELECT c_custkey FROM tpch.customer UNION ALL SELECT c_custkey FROM tpch.customer WHERE false) u",
    "SELECT count(*) OVER () FROM tpch.customer LIMIT 1",
    "SELECT count(*) FROM tpch.customer WHERE 1 / (c_nationkey - 1) >= 0",
    "SELECT count(*) FROM tpch.customer WHERE c_phone = '***'",
    "SELECT count(*) FROM (SELECT c_phone FROM tpch.customer GROUP BY c_phone, c_custkey) g",
])
def test_bypass_attempts_see_only_visible_rows(alice, admin, sql):
    got = scalar(alice, sql)
    if "EXISTS" in sql:
        assert got == len(SALES_NATIONS)  # only nations that have visible customers
    else:
        assert got == visible_count(admin), sql


def test_an_error_raising_predicate_never_runs_on_hidden_rows(alice, admin):
    probe = "SELECT count(*) FROM tpch.customer WHERE 1 / (c_nationkey - 1) >= 0"
    # For the admin the hidden rows (nation 1) exist, so the probe fails: it is a real probe.
    assert "Divide by zero" in error_of(admin, probe)
    assert scalar(alice, probe) == visible_count(admin)
    # A cast that would fail on a hidden row's value.
    assert scalar(alice, "SELECT count(*) FROM tpch.customer WHERE CAST(CAST(c_nationkey AS VARCHAR) || 'x' AS VARCHAR) <> '1x'") \
        == visible_count(admin)


def test_aggregates_on_filtered_tables_are_not_read_from_file_statistics(alice, admin):
    got = query(alice, "SELECT count(*), min(c_custkey), max(c_custkey), min(c_nationkey), max(c_nationkey) FROM tpch.customer")
    want = query(admin, f"SELECT count(*), min(c_custkey), max(c_custkey), min(c_nationkey), max(c_nationkey) FROM tpch.customer WHERE c_nationkey IN {SALES_NATIONS}")
    assert list(got.to_pylist()[0].values()) == list(want.to_pylist()[0].values())


def test_masked_columns_act_as_the_mask_everywhere(alice, admin):
    n = visible_count(admin)
    assert query(alice, "SELECT DISTINCT c_phone FROM tpch.customer").column(0).to_pylist() == ["***"]
    assert scalar(alice, "SELECT count(*) FROM tpch.customer WHERE c_phone LIKE '1%'") == 0
    assert scalar(alice, "SELECT count(*) FROM tpch.customer a JOIN tpch.customer b ON a.c_phone = b.c_phone") == n * n
    assert query(alice, "SELECT c_phone FROM tpch.customer ORDER BY c_phone DESC LIMIT 1").column(0)[0].as_py() == "***"


def test_prepared_statements_go_through_the_policy(alice, admin):
    assert scalar(alice, "SELECT count(*) FROM tpch.customer WHERE c_nationkey = ?", [SUPPORT_NATION]) == 0
    assert scalar(alice, "SELECT count(*) FROM tpch.customer WHERE c_nationkey = ?", [SALES_NATIONS[0]]) == \
        scalar(admin, "SELECT count(*) FROM tpch.customer WHERE c_nationkey = ?", [SALES_NATIONS[0]])


def test_hidden_columns_and_ungranted_tables_do_not_exist(alice):
    assert "c_address" in error_of(alice, "SELECT c_address FROM tpch.customer")
    ungranted = error_of(alice, "SELECT * FROM tpch.orders")
    missing = error_of(alice, "SELECT * FROM tpch.no_such_table")
    assert ungranted.replace("orders", "X") == missing.replace("no_such_table", "X")
    assert "not found" in ungranted
    # Both are NOT_FOUND, which drivers report as "table not found".
    for sql in ["SELECT * FROM tpch.orders", "SELECT * FROM tpch.no_such_table"]:
        with pytest.raises(adbc_driver_manager.Error) as refused:
            query(alice, sql)
        assert refused.value.status_code == adbc_driver_manager.AdbcStatusCode.NOT_FOUND, refused.value
    # A name without its schema: the error points at the table the caller can read, and
    # says nothing of one they cannot.
    unqualified = error_of(alice, "SELECT * FROM customer")
    assert "not found" in unqualified and "did you mean `tpch.customer`" in unqualified, unqualified
    assert error_of(alice, "SELECT * FROM orders").replace("orders", "X") == \
        error_of(alice, "SELECT * FROM no_such_table").replace("no_such_table", "X")
    # With nothing of that name to suggest, it names the schemas the caller can read.
    assert "the schemas you can read are `tpch`" in error_of(alice, "SELECT * FROM no_such_table")
    with pytest.raises(adbc_driver_manager.Error) as refused:
        query(alice, "SELECT * FROM customer")
    assert refused.value.status_code == adbc_driver_manager.AdbcStatusCode.NOT_FOUND
    cols = query(alice, "SELECT column_name FROM information_schema.columns WHERE table_name = 'customer'")
    assert "c_address" not in cols.column(0).to_pylist() and "c_phone" in cols.column(0).to_pylist()
    tables = query(alice, "SELECT table_schema || '.' || table_name FROM information_schema.tables WHERE table_schema <> 'information_schema'")
    assert sorted(tables.column(0).to_pylist()) == ["tpch.customer", "tpch.nation"]
    schema = alice.adbc_get_table_schema("customer", db_schema_filter="tpch")
    assert "c_address" not in schema.names
    objects = alice.adbc_get_objects(depth="all", table_name_filter="customer").read_all().to_pylist()
    columns = [c["column_name"] for cat in objects for sch in cat["catalog_db_schemas"]
               for t in sch["db_schema_tables"] for c in t["table_columns"]]
    assert "c_phone" in columns and "c_address" not in columns
    assert "not found" in error_of(alice, "SELECT * FROM system.audit")


def test_explain_is_for_admins_only(alice, admin):
    assert "administrators only" in error_of(alice, "EXPLAIN SELECT * FROM tpch.customer")
    assert "administrators only" in error_of(alice, "EXPLAIN ANALYZE SELECT * FROM tpch.customer")
    assert "administrators only" in error_of(alice, "EXPLAIN VERBOSE SELECT * FROM tpch.customer WHERE c_custkey = 1")
    assert query(admin, "EXPLAIN SELECT * FROM tpch.customer").num_rows > 0


# ----- changes take effect without a restart ---------------------------------------------------

def test_membership_grant_and_deactivation_take_effect_at_once(server, world, admin_token):
    email = unique("erin")
    group = world["groups"]["sales"]
    assert api(server, "POST", "/api/admin/users", admin_token, {"email": email, "password": PASSWORD})[0] == 201
    with connect(server, email, PASSWORD) as c:
        assert "not found" in error_of(c, "SELECT count(*) FROM tpch.nation")
        assert api(server, "POST", f"/api/admin/groups/{group}/members", admin_token, {"email": email})[0] == 204
        assert scalar(c, "SELECT count(*) FROM tpch.nation") == 25
        assert api(server, "DELETE", f"/api/admin/groups/{group}/members/{email}", admin_token)[0] == 204
        assert "not found" in error_of(c, "SELECT count(*) FROM tpch.nation")
        assert api(server, "POST", f"/api/admin/groups/{group}/members", admin_token, {"email": email})[0] == 204
        assert scalar(c, "SELECT count(*) FROM tpch.nation") == 25
        assert api(server, "PATCH", f"/api/admin/users/{email}", admin_token, {"active": False})[0] == 200
        with pytest.raises(adbc_driver_manager.Error) as info:
            query(c, "SELECT count(*) FROM tpch.nation")
        assert "UNAUTHENTICATED" in str(info.value) or "no longer active" in str(info.value)


def user_granted(server, admin_token, name: str, table: str) -> tuple[str, str, dict]:
    return harness.user_granted(server, admin_token, name, table, PASSWORD)


def test_revoking_a_grant_takes_effect_at_once(server, world, admin_token):
    email, _, grant = user_granted(server, admin_token, "frank", "tpch.region")
    with connect(server, email, PASSWORD) as c:
        assert scalar(c, "SELECT count(*) FROM tpch.region") == 5
        assert api(server, "DELETE", f"/api/admin/grants/{grant['id']}", admin_token)[0] == 204
        assert "not found" in error_of(c, "SELECT count(*) FROM tpch.region")


def test_a_row_filter_relative_to_the_time_is_evaluated_for_each_query(server, world, admin_token, admin):
    # Orders of the last N years as of the moment each query runs, N chosen so that the
    # window starts in 1997, inside TPC-H's order dates (1992–1998).
    import datetime
    years = datetime.date.today().year - 1997
    window = f"o_orderdate > current_date() - INTERVAL '{years} years' AND o_orderdate <= now()"
    email, _, _ = harness.user_granted(server, admin_token, "tess", "tpch.orders", PASSWORD, row_filter=window)
    expected = scalar(admin, f"SELECT count(*) FROM tpch.orders WHERE {window}")
    total = scalar(admin, "SELECT count(*) FROM tpch.orders")
    with connect(server, email, PASSWORD) as c:
        for _ in range(2):  # the second run is not an earlier run's kept result gone stale
            assert scalar(c, "SELECT count(*) FROM tpch.orders") == expected
        assert scalar(c, "SELECT count(*) FROM tpch.orders WHERE o_orderkey > ?", (0,)) == expected
    assert 0 < expected < total


def test_grants_are_validated_before_they_are_saved(server, world, admin_token):
    group = world["groups"]["sales"]
    cases = [
        ({"group": group, "table": "tpch.nope"}, 404, "no table"),
        ({"group": "no-such-group", "table": "tpch.nation"}, 404, "no group"),
        ({"group": group, "table": "tpch.nation", "row_filter": "n_nope = 1"}, 422, "n_nope"),
        ({"group": group, "table": "tpch.nation", "row_filter": "n_nationkey + 1"}, 422, "true/false"),
        ({"group": group, "table": "tpch.nation", "column_masks": {"n_nope": "'x'"}}, 422, "n_nope"),
        ({"group": group, "table": "tpch.nation", "column_masks": {"n_nationkey": "'x'"}}, 422, "type"),
        ({"group": group, "table": "tpch.nation", "row_filter": "n_nationkey IN (SELECT 1)"}, 422, "subquer"),
        ({"group": group, "table": "TPCH.Nation"}, 422, "not a valid name"),
        ({"group": group, "table": "tpch.*", "column_masks": {"no_such_column": None}}, 422, "no_such_column"),
    ]
    for body, status, needle in cases:
        got, answer = api(server, "POST", "/api/admin/grants", admin_token, body)
        assert got == status, (body, answer)
        assert needle in answer["error"]["message"], (body, answer)


def test_non_admins_cannot_use_the_admin_api(server, world):
    token = login(server, world["users"]["alice"], PASSWORD)
    for method, path, body in [("GET", "/api/admin/users", None), ("POST", "/api/admin/grants",
                               {"group": "Everyone", "table": "tpch.*"}), ("GET", "/api/admin/audit", None)]:
        status, answer = api(server, method, path, token, body)
        assert status == 403 and answer["error"]["code"] == "forbidden"
        assert api(server, method, path, None, body)[0] == 401


def test_the_last_admin_cannot_be_deactivated(server, admin_token):
    status, body = api(server, "PATCH", f"/api/admin/users/{ADMIN_EMAIL}", admin_token, {"active": False})
    assert status == 409 and "last active administrator" in body["error"]["message"]


# ----- personal access tokens --------------------------------------------------------------------

def test_personal_access_tokens_work_until_revoked(server, world):
    email = world["users"]["alice"]
    jwt = login(server, email, PASSWORD)
    status, created = api(server, "POST", "/api/me/tokens", jwt, {"name": "notebook", "expires_in_days": 30})
    assert status == 201 and created["token"].startswith("qvr_")
    pat = created["token"]
    listed = api(server, "GET", "/api/me/tokens", jwt)[1]
    assert [t["prefix"] for t in listed if t["id"] == created["id"]] == [pat[:12]]
    assert all("token" not in t for t in listed)
    with connect(server, token=pat) as c:
        assert scalar(c, "SELECT count(*) FROM tpch.nation") == 25
        # DBeaver-style: the token as the password.
        with connect(server, email, pat) as c2:
            assert scalar(c2, "SELECT count(*) FROM tpch.nation") == 25
        assert api(server, "DELETE", f"/api/me/tokens/{created['id']}", jwt)[0] == 204
        with pytest.raises(adbc_driver_manager.Error) as info:
            query(c, "SELECT count(*) FROM tpch.nation")
        assert "revoked" in str(info.value) or "UNAUTHENTICATED" in str(info.value)
    with pytest.raises(adbc_driver_manager.Error):
        connect(server, token=pat).cursor().execute("SELECT 1")
    # Another user cannot revoke (or even see) someone else's token.
    other = login(server, world["users"]["bob"], PASSWORD)
    status, created = api(server, "POST", "/api/me/tokens", jwt, {"name": "second"})
    assert api(server, "DELETE", f"/api/me/tokens/{created['id']}", other)[0] == 404


def test_secrets_never_reach_the_log_or_the_audit_log(server, world, admin_token):
    jwt = login(server, world["users"]["bob"], PASSWORD)
    pat = api(server, "POST", "/api/me/tokens", jwt, {"name": "leak-check"})[1]["token"]
    with connect(server, token=pat) as c:
        scalar(c, "SELECT 1")
    audit = json.dumps(api(server, "GET", "/api/admin/audit?limit=1000", admin_token)[1])
    log = server.log()
    for secret in [pat, pat[4:], PASSWORD, ADMIN_PASSWORD, jwt]:
        assert secret not in audit
        assert secret not in log


# ----- sign-in ---------------------------------------------------------------------------------------

def handshake_error(server, email, password) -> str:
    with pytest.raises(adbc_driver_manager.Error) as info:
        connect(server, email, password).cursor().execute("SELECT 1")
    return str(info.value)


def test_unknown_user_and_wrong_password_look_the_same(server, world):
    known = world["users"]["dave"]
    unknown = unique("ghost")
    assert handshake_error(server, known, "wrong-password").replace(known, "X") == \
        handshake_error(server, unknown, "wrong-password").replace(unknown, "X")

    def timed(email):
        start = time.perf_counter()
        api(server, "POST", "/auth/login", body={"email": email, "password": "wrong-password"})
        return time.perf_counter() - start
    known_t = min(timed(known) for _ in range(3))
    unknown_t = min(timed(unknown) for _ in range(3))
    # Both verify an argon2id hash: the unknown user costs a comparable amount of work.
    assert unknown_t > 0.3 * known_t, (known_t, unknown_t)


def test_failed_sign_ins_are_rate_limited_per_account(server, admin_token):
    email = unique("target")
    assert api(server, "POST", "/api/admin/users", admin_token, {"email": email, "password": PASSWORD})[0] == 201
    for _ in range(10):
        assert api(server, "POST", "/auth/login", body={"email": email, "password": "guess"})[0] == 401
    status, body = api(server, "POST", "/auth/login", body={"email": email, "password": PASSWORD})
    assert status == 429 and "too many" in body["error"]["message"]
    assert "too many failed sign-in attempts" in handshake_error(server, email, PASSWORD)


# ----- tickets ---------------------------------------------------------------------------------------

def flight_client(server, email, password):
    import pyarrow.flight as flight

    client = flight.FlightClient(server.uri)
    return client, flight.FlightCallOptions(headers=[client.authenticate_basic_token(email, password)])


def test_a_grant_changed_between_planning_and_fetching_holds_at_the_fetch(server, world, admin_token):
    """A statement is planned once, at GetFlightInfo; a grant changed before its DoGet must
    still decide what the DoGet returns."""
    import pyarrow.flight as flight
    from test_clients import statement_command

    email, group, grant = user_granted(server, admin_token, "grace", "tpch.region")
    client, options = flight_client(server, email, PASSWORD)
    command = flight.FlightDescriptor.for_command(statement_command("SELECT r_name FROM tpch.region ORDER BY r_name"))

    # The same statement, fetched before and after the grant gains a row filter.
    before = client.get_flight_info(command, options)
    unchanged = client.get_flight_info(command, options)
    assert api(server, "DELETE", f"/api/admin/grants/{grant['id']}", admin_token)[0] == 204
    status, grant = api(server, "POST", "/api/admin/grants", admin_token,
                        {"group": group, "table": "tpch.region", "row_filter": "r_name = 'ASIA'"})
    assert status == 201
    assert client.do_get(before.endpoints[0].ticket, options).read_all().column("r_name").to_pylist() == ["ASIA"]

    # Revoked between the two calls: the table is gone at the fetch.
    planned = client.get_flight_info(command, options)
    assert api(server, "DELETE", f"/api/admin/grants/{grant['id']}", admin_token)[0] == 204
    # NOT_FOUND, which pyarrow raises as a KeyError.
    with pytest.raises(pa.ArrowKeyError, match="not found"):
        client.do_get(planned.endpoints[0].ticket, options).read_all()
    with pytest.raises(pa.ArrowKeyError, match="not found"):
        client.do_get(unchanged.endpoints[0].ticket, options).read_all()


def test_the_results_cache_never_crosses_principals_or_grants(server, world, admin_token, admin):
    """Identical statements share a kept result only between callers whose policies are the
    same: another group's filter, a changed grant or a filter on `current_user()` each get
    their own rows."""
    hits = lambda: metric(server, 'quiver_results_cache_total{outcome="hit"}')  # noqa: E731
    sql = "SELECT c_custkey, c_nationkey, c_phone FROM tpch.customer ORDER BY c_custkey"
    nations = lambda t: set(t.column("c_nationkey").to_pylist())  # noqa: E731
    # (Any change to users, groups or grants forgets every kept result: set up first.)
    erin = unique("erin")
    assert api(server, "POST", "/api/admin/users", admin_token, {"email": erin, "password": PASSWORD})[0] == 201
    assert api(server, "POST", f"/api/admin/groups/{world['groups']['sales']}/members", admin_token,
               {"email": erin})[0] == 204

    before = hits()
    with as_user(server, world, "alice") as alice:
        first, again = query(alice, sql), query(alice, sql)
    assert first == again and nations(first) == set(SALES_NATIONS)
    assert set(first.column("c_phone").to_pylist()) == {"***"}
    assert hits() == before + 1

    # carol is in sales and support: another policy, other rows, no hit.
    with as_user(server, world, "carol") as carol:
        carols = query(carol, sql)
    assert nations(carols) == set(SALES_NATIONS) | {SUPPORT_NATION}
    assert hits() == before + 1
    # The admin sees every row, unmasked, not what alice was served.
    everything = query(admin, sql)
    assert everything.num_rows > first.num_rows and "***" not in everything.column("c_phone").to_pylist()
    assert hits() == before + 1

    # Another member of sales is under the same policy: alice's result serves her.
    with connect(server, erin, PASSWORD) as conn:
        assert query(conn, sql) == first
    assert hits() == before + 2

    # A grant changed between two identical statements: the second sees the new grant.
    email, group, grant = user_granted(server, admin_token, "heidi", "tpch.region")
    regions = "SELECT r_name FROM tpch.region ORDER BY r_name"
    with connect(server, email, PASSWORD) as heidi:
        assert query(heidi, regions).num_rows == 5
        assert api(server, "DELETE", f"/api/admin/grants/{grant['id']}", admin_token)[0] == 204
        assert api(server, "POST", "/api/admin/grants", admin_token,
                   {"group": group, "table": "tpch.region", "row_filter": "r_name = 'ASIA'"})[0] == 201
        assert query(heidi, regions).column("r_name").to_pylist() == ["ASIA"]

    # The regional filter compares with current_user(): same group, same statement, each
    # user their own region.
    europe = "europe@example.com"
    if api(server, "POST", "/api/admin/users", admin_token, {"email": europe, "password": PASSWORD})[0] == 201:
        assert api(server, "POST", f"/api/admin/groups/{world['groups']['regional']}/members", admin_token,
                   {"email": europe})[0] == 204
    with as_user(server, world, "asia") as asia, connect(server, europe, PASSWORD) as eu:
        for _ in range(2):
            assert query(asia, regions).column("r_name").to_pylist() == ["ASIA"]
            assert query(eu, regions).column("r_name").to_pylist() == ["EUROPE"]


def test_a_schema_a_user_cannot_see_cannot_be_chosen_for_the_session(server, world):
    """Choosing a session schema reveals nothing: one the user has no table in is refused
    exactly like one that does not exist."""
    def refusal(conn, schema):
        with pytest.raises(adbc_driver_manager.Error) as refused:
            conn.adbc_current_db_schema = schema
        return str(refused.value).replace(schema, "<schema>")

    with as_user(server, world, "dave") as dave, as_user(server, world, "alice") as alice:
        assert refusal(dave, "tpch") == refusal(dave, "nosuchschema")
        alice.adbc_current_db_schema = "tpch"
        assert scalar(alice, "SELECT count(*) FROM nation") == 25
        assert "not found" in error_of(alice, "SELECT count(*) FROM region")


def test_tickets_are_bound_to_the_user_who_asked(server, world):
    import pyarrow.flight as flight
    from test_clients import statement_command

    alice, alice_opts = flight_client(server, world["users"]["alice"], PASSWORD)
    bob, bob_opts = flight_client(server, world["users"]["bob"], PASSWORD)
    info = alice.get_flight_info(
        flight.FlightDescriptor.for_command(statement_command("SELECT * FROM tpch.customer")), alice_opts)
    ticket = info.endpoints[0].ticket
    # bob may read tpch.customer himself, but not through alice's ticket (nor without a token).
    with pytest.raises(flight.FlightError, match="another user"):
        bob.do_get(ticket, bob_opts).read_all()
    with pytest.raises(flight.FlightUnauthenticatedError):
        bob.do_get(ticket).read_all()
    assert alice.do_get(ticket, alice_opts).read_all().num_rows > 0


# ----- the JWT corpus ----------------------------------------------------------------------------------

def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwt(claims: dict, key: bytes, alg: str = "HS256") -> str:
    header = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims).encode())
    signing = f"{header}.{payload}".encode()
    if alg == "none":
        return f"{header}.{payload}."
    digest = {"HS256": hashlib.sha256, "HS512": hashlib.sha512}[alg]
    return f"{header}.{payload}.{b64(hmac.new(key, signing, digest).digest())}"


def test_forged_and_stale_tokens_are_refused(server, world):
    key = signing_key(server.data_dir)
    now = int(time.time())
    good = {"sub": world["users"]["alice"], "iss": "quiver", "aud": "quiver", "iat": now, "nbf": now,
            "exp": now + 600}
    with connect(server, token=jwt(good, key)) as c:
        assert scalar(c, "SELECT count(*) FROM tpch.nation") == 25  # the forger's control
    real = login(server, world["users"]["alice"], PASSWORD)
    header, payload, signature = real.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    tampered = f"{header}.{b64(json.dumps(dict(claims, sub=ADMIN_EMAIL)).encode())}.{signature}"
    corpus = {
        "alg none": jwt(dict(good, sub=ADMIN_EMAIL), b"", "none"),
        "wrong key": jwt(dict(good, sub=ADMIN_EMAIL), b"k" * 32),
        "other algorithm": jwt(good, key, "HS512"),
        "expired": jwt(dict(good, exp=now - 3600, nbf=now - 7200, iat=now - 7200), key),
        "not yet valid": jwt(dict(good, nbf=now + 3600), key),
        "wrong audience": jwt(dict(good, aud="someone-else"), key),
        "wrong issuer": jwt(dict(good, iss="evil"), key),
        "no expiry": jwt({k: v for k, v in good.items() if k != "exp"}, key),
        "tampered": tampered,
        "garbage": "not.a.token",
    }
    for name, token in corpus.items():
        with pytest.raises(adbc_driver_manager.Error) as info:
            with connect(server, token=token) as c:
                query(c, "SELECT count(*) FROM tpch.nation")
        assert "UNAUTHENTICATED" in str(info.value) or "invalid" in str(info.value), name
        assert api(server, "GET", "/api/me", token)[0] == 401, name


# ----- audit ----------------------------------------------------------------------------------------------

def test_queries_and_changes_are_audited(server, world, admin, admin_token):
    marker = uuid.uuid4().hex
    with as_user(server, world, "alice") as c:
        scalar(c, f"SELECT count(*) FROM tpch.customer WHERE c_name <> '{marker}'")
    deadline = time.time() + 10
    while time.time() < deadline:
        # (This query's own text holds the marker too: its row is the admin's.)
        rows = query(admin, f"SELECT actor, tables_read, row_count, outcome FROM system.audit WHERE action = 'query' "
                            f"AND statement LIKE '%{marker}%' AND actor <> '{ADMIN_EMAIL}'")
        if rows.num_rows:
            break
        time.sleep(0.2)
    assert rows.to_pylist() == [{"actor": world["users"]["alice"], "tables_read": "tpch.customer", "row_count": 1, "outcome": "ok"}]
    changes = api(server, "GET", "/api/admin/audit?action=grant.create&limit=1000", admin_token)[1]
    assert {c["target"] for c in changes} >= {"tpch.customer", "tpch.nation", "tpch.*", "tpch.region"}
    assert all(c["actor"] == ADMIN_EMAIL for c in changes if c["target"] == "tpch.*")


def test_the_catalog_api_lists_only_readable_tables_and_visible_columns(server, world):
    token = login(server, world["users"]["alice"], PASSWORD)
    status, tables = api(server, "GET", "/api/catalog", token)
    assert status == 200
    assert [t["name"] for t in tables] == ["tpch.customer", "tpch.nation"]
    customer = tables[0]
    names = [c["name"] for c in customer["columns"]]
    assert "c_address" not in names and "c_phone" in names
    # Row-filtered for alice: the table-wide row count would reveal how much is hidden.
    assert customer["rows"] is None and customer["bytes"] is None
    assert customer["version"] >= 1 and customer["published_at"].endswith("Z")
    assert tables[1]["rows"] == 25  # tpch.nation, not filtered
    dave = login(server, world["users"]["dave"], PASSWORD)
    assert api(server, "GET", "/api/catalog", dave)[1] == []
