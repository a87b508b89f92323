"""Hardening, tried the way an attacker with a signed-in account (and no grants) would: no
statement crashes or stalls the server or slips past a limit, every credential ends when it
should on every edge, only a query's owner may cancel it, and every refused statement is in
the audit log. Each test drives the real binary with ADBC or pyarrow.flight."""

from __future__ import annotations

import os
import socket
import ssl
import tempfile
import threading
import time
import urllib.request
import uuid

import adbc_driver_manager
import pyarrow.flight as flight
import pytest

from harness import ADMIN_EMAIL, ADMIN_PASSWORD, Server, api, connect, login
from test_clients import SLOW_QUERY, statement_command

PASSWORD = "correct horse battery"
CONFIG = """
query:
  timeout: 3s
  max_concurrent_per_user: 2
  memory_limit_per_user: 64 MiB
  max_sql_length: 256 KiB
  max_parameter_bytes: 64 KiB
  max_prepared_per_user: 3
"""


@pytest.fixture(scope="module")
def hard():
    with tempfile.TemporaryDirectory() as tmp:
        s = Server(["demo", "--scale", "0.01"], os.path.join(tmp, "data"), config=CONFIG)
        yield s
        s.stop()


@pytest.fixture(scope="module")
def admin_token(hard):
    return login(hard, ADMIN_EMAIL, ADMIN_PASSWORD)


def new_user(server, admin_token, name: str) -> str:
    email = f"{name}-{uuid.uuid4().hex[:6]}@example.com"
    status, body = api(server, "POST", "/api/admin/users", admin_token, {"email": email, "password": PASSWORD})
    assert status == 201, body
    return email


@pytest.fixture(scope="module")
def mallory(hard, admin_token):
    """A signed-in user with no grants at all."""
    return new_user(hard, admin_token, "mallory")


def run(conn, sql, parameters=None):
    with conn.cursor() as cur:
        cur.execute(sql, parameters=parameters)
        return cur.fetch_arrow_table()


def error_of(conn, sql, parameters=None) -> str:
    with pytest.raises(adbc_driver_manager.Error) as info:
        run(conn, sql, parameters)
    return str(info.value)


def healthy(server) -> bool:
    with urllib.request.urlopen(f"http://{server.http}/health", timeout=10) as r:
        return r.status == 200


def alive(server):
    assert server.proc.poll() is None, "the server died:\n" + server.log()[-3000:]
    assert healthy(server)
    with connect(server, ADMIN_EMAIL, ADMIN_PASSWORD) as c:
        assert run(c, "SELECT 1 AS one").to_pylist() == [{"one": 1}]


# ----- nothing a client sends may crash or stall the server --------------------------------------

def nested(prefix: str, core: str, suffix: str, n: int) -> str:
    return prefix * n + core + suffix * n


def chain(n: int) -> str:
    ctes = ["t0 AS (SELECT 1 AS x)"] + [f"t{i} AS (SELECT x FROM t{i - 1})" for i in range(1, n)]
    return f"WITH {', '.join(ctes)} SELECT x FROM t{n - 1}"


DEEP = {
    "sum": "SELECT " + " + ".join(["1"] * 2000),
    "or chain": "SELECT count(*) FROM generate_series(1, 10) WHERE "
                + " OR ".join(f"value = {i}" for i in range(3000)),
    "and chain": "SELECT count(*) FROM generate_series(1, 10) WHERE "
                 + " AND ".join(f"value <> {i}" for i in range(3000)),
    "concat": "SELECT " + " || ".join(["'a'"] * 3000),
    "nested case": "SELECT " + nested("CASE WHEN true THEN ", "1", " END", 1000),
    "nested calls": "SELECT " + nested("abs(", "1", ")", 1000),
    "subqueries": "SELECT " + nested("(SELECT ", "1", ")", 600),
    "from subqueries": nested("SELECT * FROM (", "SELECT 1", ")", 600),
    "union chain": " UNION ALL ".join(["SELECT 1"] * 3000),
    "parentheses": "SELECT " + nested("(", "1", ")", 5000),
    "casts": "SELECT 1" + "::BIGINT" * 3000,
    "not": "SELECT " + "NOT " * 3000 + "true",
    "unary minus": "SELECT " + "- " * 3000 + "1",
    "joins": "SELECT 1 FROM " + ", ".join(f"(SELECT 1 AS c{i}) t{i}" for i in range(1000)),
    "with chain": chain(1000),
}


@pytest.mark.parametrize("shape", DEEP)
def test_deep_statements_are_refused_with_the_limit_named(hard, mallory, shape):
    with connect(hard, mallory, PASSWORD) as c:
        message = error_of(c, DEEP[shape])
    assert "INVALID_ARGUMENT" in message or "InvalidArgument" in message, message
    assert "query.max_expression_depth" in message or "query.max_plan_nodes" in message, message
    alive(hard)


def test_statements_within_the_limits_run(hard, mallory):
    with connect(hard, mallory, PASSWORD) as c:
        assert run(c, "SELECT " + " + ".join(["1"] * 400) + " AS n").to_pylist() == [{"n": 400}]
        or_chain = " OR ".join(f"value = {i}" for i in range(400))
        assert run(c, f"SELECT count(*) AS n FROM generate_series(1, 1000) WHERE {or_chain}").to_pylist() \
            == [{"n": 399}]
        values = ",".join(str(i) for i in range(0, 40000, 2))  # a long IN list is flat, not deep
        assert run(c, f"SELECT count(*) AS n FROM generate_series(1, 100000) WHERE value IN ({values})") \
            .to_pylist() == [{"n": 19999}]
        assert run(c, chain(50)).to_pylist() == [{"x": 1}]


def test_long_statements_are_refused_with_the_limit_named(hard, mallory):
    with connect(hard, mallory, PASSWORD) as c:
        message = error_of(c, "SELECT 1 -- " + "x" * 300_000)
    assert "query.max_sql_length" in message, message
    alive(hard)


def doubling(levels: int) -> str:
    ctes = ["t0 AS (SELECT 1 AS x)"] + [
        f"t{i} AS (SELECT x FROM t{i - 1} UNION ALL SELECT x FROM t{i - 1})" for i in range(1, levels + 1)]
    return f"WITH {', '.join(ctes)} SELECT count(*) AS n FROM t{levels}"


def test_a_plan_that_doubles_at_every_level_is_refused_quickly(hard, mallory):
    with connect(hard, mallory, PASSWORD) as c:
        assert run(c, doubling(6)).to_pylist() == [{"n": 64}]
        started = time.time()
        message = error_of(c, doubling(19))
        assert "query.max_plan_nodes" in message, message
        assert time.time() - started < 10
    alive(hard)


def test_the_server_answers_health_checks_while_queries_run(hard, mallory):
    """Queries run on their own runtime: /health is answered while heavy ones are busy."""
    errors = []

    def heavy():
        try:
            with connect(hard, mallory, PASSWORD) as c:
                run(c, SLOW_QUERY)
        except adbc_driver_manager.Error as e:
            errors.append(str(e))

    threads = [threading.Thread(target=heavy) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    started = time.time()
    assert healthy(hard)
    assert time.time() - started < 2.0
    for t in threads:
        t.join(30)
    assert all("query.timeout" in e for e in errors) and len(errors) == 2, errors


@pytest.mark.parametrize("sql, parameters", [
    (SLOW_QUERY, None),
    # A prepared statement with a bound parameter: prepared, described by GetFlightInfo
    # (planned once, the plan kept for DoGet), then run; the run ends at its deadline.
    (SLOW_QUERY.replace("= 3", "= ?"), (3,)),
    # A join whose first batch takes minutes and that emits batch after batch without
    # reading its inputs again (no grants needed: generated rows).
    ("SELECT count(*) FROM generate_series(1, 300000) a, generate_series(1, 300000) b "
     "WHERE a.value * 7 % 13 < b.value % 11", None),
])
def test_the_timeout_holds_to_a_fraction_of_a_second(hard, mallory, sql, parameters):
    with connect(hard, mallory, PASSWORD) as c:
        started = time.time()
        message = error_of(c, sql, parameters)
        elapsed = time.time() - started
        assert "query.timeout" in message
        assert 2.9 < elapsed < 4.0, elapsed
        # The stopped query let go of the query threads: the next statement runs at once.
        started = time.time()
        assert run(c, "SELECT count(*) AS n FROM generate_series(1, 10)").to_pylist() == [{"n": 10}]
        assert time.time() - started < 1.0


def test_functions_cannot_build_values_past_the_users_memory(hard, mallory):
    before = hard.rss_bytes()
    with connect(hard, mallory, PASSWORD) as c:
        for sql in ["SELECT length(repeat('x', 536870912)) AS n",
                    "SELECT cardinality(range(1, 10000000000)) AS n",
                    "SELECT length(lpad('x', 1000000000)) AS n",
                    "SELECT cardinality(array_repeat('abc', 300000000)) AS n"]:
            message = error_of(c, sql)
            assert "RESOURCE_EXHAUSTED" in message or "ResourceExhausted" in message, (sql, message)
            assert "query.memory_limit_per_user" in message, (sql, message)
        # Doubling a value level by level stops at the limit too, by function or operator.
        for double in ["concat(s, s)", "s || s"]:
            levels = ["s0 AS (SELECT repeat('x', 1000000) AS s)"] + [
                f"s{i} AS (SELECT {double} AS s FROM s{i - 1})" for i in range(1, 12)]
            message = error_of(c, f"WITH {', '.join(levels)} SELECT length(s) FROM s11")
            assert "query.memory_limit_per_user" in message, (double, message)
        assert run(c, "SELECT 'a' || 'b' AS ab, NULL || 'b' AS n").to_pylist() == [{"ab": "ab", "n": None}]
        assert run(c, "SELECT length(repeat('x', 1000000)) AS n").to_pylist() == [{"n": 1000000}]
    assert hard.rss_bytes() - before < 400 * 1024 * 1024
    alive(hard)


def test_one_ticket_redeemed_many_times_counts_every_stream(hard, mallory):
    client = flight.FlightClient(hard.uri)
    options = flight.FlightCallOptions(headers=[client.authenticate_basic_token(mallory, PASSWORD)])
    info = client.get_flight_info(flight.FlightDescriptor.for_command(statement_command(SLOW_QUERY)), options)
    outcomes = []

    def redeem():
        try:
            client.do_get(info.endpoints[0].ticket, options).read_all()
            outcomes.append("finished")
        except Exception as e:  # noqa: BLE001 - pyarrow raises several types for statuses
            outcomes.append(str(e))

    threads = [threading.Thread(target=redeem) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    refused = [o for o in outcomes if "query.max_concurrent_per_user" in o]
    assert len(outcomes) == 5 and len(refused) >= 3, outcomes
    client.close()


def bind_error(conn, sql, parameters) -> str:
    with pytest.raises(adbc_driver_manager.Error) as info:
        with conn.cursor() as cur:
            cur.execute(sql, parameters=parameters)
            cur.fetch_arrow_table()
    return str(info.value)


def test_bound_parameters_are_bounded(hard, admin_token):
    email = new_user(hard, admin_token, "binder")
    sql = "SELECT count(*) AS n FROM generate_series(1, 3) WHERE value = ? AND ? <> ''"
    before = hard.rss_bytes()
    with connect(hard, email, PASSWORD) as c:
        message = bind_error(c, sql, (1, "x" * 200_000))
        assert "query.max_parameter_bytes" in message, message
        cursors = [c.cursor() for _ in range(4)]
        try:
            for cur in cursors[:3]:
                cur.execute(sql, parameters=(1, "x" * 30_000))
                assert cur.fetch_arrow_table().to_pylist() == [{"n": 1}]
            with pytest.raises(adbc_driver_manager.Error, match="query.max_prepared_per_user"):
                cursors[3].execute(sql, parameters=(1, "y"))
        finally:
            for cur in cursors:
                cur.close()
    assert hard.rss_bytes() - before < 200 * 1024 * 1024
    alive(hard)


# ----- tokens end when they should, on every edge --------------------------------------------------

def flight_error(server, token: str) -> str:
    with pytest.raises(adbc_driver_manager.Error) as info:
        with connect(server, token=token) as c:
            run(c, "SELECT 1")
    return str(info.value)


def works_on_flight(server, token: str) -> bool:
    with connect(server, token=token) as c:
        return run(c, "SELECT 1 AS one").num_rows == 1


def test_signing_out_ends_the_session_everywhere_and_across_restarts():
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        s = Server(["demo", "--scale", "0.01"], data)
        try:
            token = login(s, ADMIN_EMAIL, ADMIN_PASSWORD)
            other = login(s, ADMIN_EMAIL, ADMIN_PASSWORD)
            assert works_on_flight(s, token)
            assert api(s, "POST", "/auth/logout", token)[0] == 204
            assert "UNAUTHENTICATED" in flight_error(s, token) or "nauthenticated" in flight_error(s, token)
            assert api(s, "GET", "/api/me", token)[0] == 401
            assert works_on_flight(s, other), "only the ended session ends"
        finally:
            s.stop()
        s = Server(["demo", "--scale", "0.01"], data)
        try:
            assert api(s, "GET", "/api/me", token)[0] == 401
            flight_error(s, token)
            assert api(s, "GET", "/api/me", other)[0] == 200
        finally:
            s.stop()


def test_a_session_opened_with_a_token_ends_with_the_token(hard, admin_token):
    email = new_user(hard, admin_token, "pat-user")
    session = login(hard, email, PASSWORD)
    status, created = api(hard, "POST", "/api/me/tokens", session, {"name": "dbeaver"})
    assert status == 201, created
    client = flight.FlightClient(hard.uri)
    header = client.authenticate_basic_token(email, created["token"])
    jwt = header[1].decode().removeprefix("Bearer ")
    assert works_on_flight(hard, jwt)
    assert api(hard, "DELETE", f"/api/me/tokens/{created['id']}", session)[0] == 204
    flight_error(hard, jwt)
    client.close()


def test_a_token_made_with_a_token_ends_with_it(hard, admin_token):
    email = new_user(hard, admin_token, "chain")
    session = login(hard, email, PASSWORD)
    first = api(hard, "POST", "/api/me/tokens", session, {"name": "first"})[1]
    status, second = api(hard, "POST", "/api/me/tokens", first["token"], {"name": "made with first"})
    assert status == 201, second
    assert api(hard, "GET", "/api/me", second["token"])[0] == 200
    assert works_on_flight(hard, second["token"])
    assert api(hard, "DELETE", f"/api/me/tokens/{first['id']}", session)[0] == 204
    assert api(hard, "GET", "/api/me", second["token"])[0] == 401
    flight_error(hard, second["token"])
    assert api(hard, "GET", "/api/me", session)[0] == 200, "the password session is independent"


def test_service_account_tokens_end_with_the_account(hard, admin_token):
    import requests

    email = f"svc-{uuid.uuid4().hex[:6]}@example.com"
    status, account = api(hard, "POST", "/api/admin/service-accounts", admin_token,
                          {"email": email, "name": "nightly"})
    assert status == 201, account
    response = requests.post(f"http://{hard.http}/oauth/token", data={
        "grant_type": "client_credentials", "client_id": account["client_id"],
        "client_secret": account["client_secret"]}, timeout=30)
    assert response.status_code == 200, response.text
    token = response.json()["access_token"]
    assert api(hard, "GET", "/api/me", token)[0] == 200
    assert works_on_flight(hard, token)
    status, _ = api(hard, "DELETE", f"/api/admin/service-accounts/{account['client_id']}", admin_token)
    assert status == 204
    assert api(hard, "GET", "/api/me", token)[0] == 401
    flight_error(hard, token)


CANCELLED, NOT_CANCELLABLE = 1, 3  # arrow.flight.protocol.CancelStatus


def cancel_flight_info(client, info, options) -> int:
    """The `CancelFlightInfo` action (pyarrow has no wrapper for it): the request is
    `CancelFlightInfoRequest { FlightInfo info = 1 }`, the answer `{ CancelStatus status = 1 }`."""
    from test_clients import _field

    body = _field(1, info.serialize())
    results = list(client.do_action(flight.Action("CancelFlightInfo", body), options))
    answer = results[0].body.to_pybytes()
    return answer[1] if answer[:1] == b"\x08" else 0


def test_only_the_owner_or_an_admin_cancels_a_query(hard, admin_token, mallory, no_pyarrow_signal_handling):
    owner = new_user(hard, admin_token, "owner")
    client = flight.FlightClient(hard.uri)
    owner_opts = flight.FlightCallOptions(headers=[client.authenticate_basic_token(owner, PASSWORD)])
    thief = flight.FlightClient(hard.uri)
    thief_opts = flight.FlightCallOptions(headers=[thief.authenticate_basic_token(mallory, PASSWORD)])
    info = client.get_flight_info(flight.FlightDescriptor.for_command(statement_command(SLOW_QUERY)),
                                  owner_opts)
    outcome = {}

    def read():
        try:
            client.do_get(info.endpoints[0].ticket, owner_opts).read_all()
            outcome["result"] = "finished"
        except flight.FlightError as e:
            outcome["result"] = str(e)

    reader = threading.Thread(target=read)
    reader.start()
    time.sleep(0.8)
    assert cancel_flight_info(thief, info, thief_opts) == NOT_CANCELLABLE
    time.sleep(0.5)
    assert "result" not in outcome, outcome
    assert cancel_flight_info(client, info, owner_opts) == CANCELLED
    reader.join(30)
    assert "cancel" in outcome["result"].lower(), outcome
    client.close()
    thief.close()


# ----- audit and information -------------------------------------------------------------------------

def test_refused_statements_are_audited(hard, admin_token):
    probe = new_user(hard, admin_token, "probe")
    marker = uuid.uuid4().hex[:8]
    statements = [
        f"SELECT * FROM tpch.lineitem WHERE l_comment = '{marker}'",
        f"CREATE TABLE t_{marker} AS SELECT 1",
        f"EXPLAIN SELECT '{marker}'",
        f"SELECT '{marker}' FROM nowhere WHERE (",
        f"SELECT *, '{marker}' FROM information_schema.df_settings",
    ]
    with connect(hard, probe, PASSWORD) as c:
        for sql in statements:
            error_of(c, sql)
    with connect(hard, ADMIN_EMAIL, ADMIN_PASSWORD) as admin:
        deadline = time.time() + 10
        while time.time() < deadline:
            rows = run(admin, f"SELECT statement, outcome FROM system.audit WHERE actor = '{probe}' "
                              f"AND action = 'query' AND statement LIKE '%{marker}%'").to_pylist()
            if len(rows) >= len(statements):
                break
            time.sleep(0.2)
    by_statement = {r["statement"]: r["outcome"] for r in rows}
    assert set(by_statement) == set(statements), rows
    assert all(o.startswith("refused: ") for o in by_statement.values()), rows
    assert "not found" in by_statement[statements[0]]


def test_settings_are_for_admins(hard, mallory):
    with connect(hard, mallory, PASSWORD) as c:
        for sql in ["SELECT * FROM information_schema.df_settings", "SHOW ALL",
                    "SELECT * FROM quiver.information_schema.df_settings"]:
            message = error_of(c, sql)
            assert "not found" in message and "spill" not in message, (sql, message)
        # The rest of information_schema still answers, with what mallory may see.
        assert run(c, "SELECT count(*) AS n FROM information_schema.tables WHERE table_schema = 'tpch'") \
            .to_pylist() == [{"n": 0}]
    with connect(hard, ADMIN_EMAIL, ADMIN_PASSWORD) as admin:
        assert run(admin, "SELECT * FROM information_schema.df_settings").num_rows > 0


def test_serve_does_not_print_the_admin_password():
    with tempfile.TemporaryDirectory() as tmp:
        s = Server(["serve"], os.path.join(tmp, "data"))
        try:
            banner = "\n".join(s.banner)
            assert ADMIN_EMAIL in banner and ADMIN_PASSWORD not in banner, banner
        finally:
            s.stop()
        s = Server(["demo", "--scale", "0.01"], os.path.join(tmp, "demo"))
        try:
            assert ADMIN_PASSWORD in "\n".join(s.banner)
        finally:
            s.stop()


def closed_within(connect, greeting: bytes, limit: float) -> float:
    """Seconds until the server closes the socket `connect()` opens, after `greeting`."""
    started = time.monotonic()
    with connect(limit) as s:
        if greeting:
            s.sendall(greeting)
        try:
            while s.recv(4096):  # the server may answer before it closes
                pass
        except (ConnectionResetError, ssl.SSLEOFError):
            pass
        except socket.timeout:
            pytest.fail(f"{s.getpeername()}: still open after {limit} s")
    return time.monotonic() - started


def tcp(address: str):
    host, port = address.rsplit(":", 1)
    return lambda limit: socket.create_connection((host, int(port)), timeout=limit)


def test_silent_and_trickling_connections_are_closed(hard):
    """Connections that never send an HTTP/2 preface (gRPC) or never finish their request
    headers (HTTP) are closed by the server, not kept forever."""
    flight_addr = hard.uri.removeprefix("grpc://")
    assert closed_within(tcp(flight_addr), b"", 40) >= 5
    assert closed_within(tcp(flight_addr), b"PRI * HT", 40) >= 5
    assert closed_within(tcp(hard.http), b"GET /health HTTP/1.1\r\nHost: x\r\n", 40) >= 5
    # Connections that speak work as before.
    with urllib.request.urlopen(f"http://{hard.http}/health", timeout=10) as r:
        assert r.status == 200


def test_silent_tls_connections_are_closed(tls_server):
    """On a TLS listener, a peer that never finishes its handshake, or finishes it and then
    never sends the HTTP/2 preface, is closed like a silent plain one; clients that speak
    are served."""
    server, _, ca_path = tls_server
    context = ssl.create_default_context(cafile=ca_path)
    context.set_alpn_protocols(["h2"])

    def handshaken(limit):
        s = context.wrap_socket(tcp(server.flight)(limit), server_hostname="127.0.0.1")
        assert s.selected_alpn_protocol() == "h2"
        return s

    assert closed_within(tcp(server.flight), b"", 40) >= 5
    assert closed_within(tcp(server.flight), b"\x16\x03\x01", 40) >= 5  # a hello begun
    assert closed_within(handshaken, b"", 40) >= 5
    assert closed_within(handshaken, b"PRI * HT", 40) >= 5
    client = flight.FlightClient(f"grpc+tls://{server.flight}", tls_root_certs=open(ca_path).read())
    token = client.authenticate_basic_token(ADMIN_EMAIL, ADMIN_PASSWORD)
    info = client.get_flight_info(
        flight.FlightDescriptor.for_command(statement_command("SELECT 42 AS answer")),
        flight.FlightCallOptions(headers=[token]))
    table = client.do_get(info.endpoints[0].ticket, flight.FlightCallOptions(headers=[token])).read_all()
    assert table.column("answer").to_pylist() == [42]
    client.close()


def test_tickets_never_redeemed_do_not_pin_memory(hard, admin_token, mallory):
    """Plans kept for tickets are bounded per user and in all: asking again and again for a
    statement with a long `IN` list, never fetching, does not grow the server without end,
    and a ticket whose plan was pushed out is planned again when it is redeemed."""
    client = flight.FlightClient(hard.uri)
    options = flight.FlightCallOptions(headers=[client.authenticate_basic_token(mallory, PASSWORD)])
    values = ", ".join(str(i) for i in range(28_000))  # ~200 KiB of SQL, ~4 MiB of plan
    sql = f"SELECT count(*) AS n FROM generate_series(1, 100000) WHERE value IN ({values})"
    descriptor = flight.FlightDescriptor.for_command(statement_command(sql))
    before = hard.rss_bytes()
    infos = [client.get_flight_info(descriptor, options) for _ in range(120)]
    grown = hard.rss_bytes() - before
    assert grown < 250 * 1024 * 1024, f"grew {grown >> 20} MiB"
    # The first and the last tickets are both still good.
    for info in (infos[0], infos[-1]):
        table = client.do_get(info.endpoints[0].ticket, options).read_all()
        assert table.column("n").to_pylist() == [27_999]  # 1..27999 of the series
    client.close()


def test_spellings_of_one_basic_credential_share_one_session(hard):
    """Clients that send Basic credentials with every call keep one session however the
    header is spelt (padding, spaces, the scheme's case), so varying it cannot open sessions
    without end and push out other users'."""
    import base64

    from test_clients import _field

    encoded = base64.b64encode(f"{ADMIN_EMAIL}:{ADMIN_PASSWORD}".encode()).decode()
    spellings = [f"Basic {encoded}", f"Basic {encoded.rstrip('=')}", f"basic   {encoded}  ",
                 f"Basic {encoded.rstrip('=')}=="]
    client = flight.FlightClient(hard.uri)

    def call(spelling, action, body=b""):
        options = flight.FlightCallOptions(headers=[(b"authorization", spelling.encode())])
        return b"".join(r.body.to_pybytes() for r in client.do_action(flight.Action(action, body), options))

    schema = _field(1, _field(1, b"schema") + _field(2, _field(1, b"tpch")))
    call(spellings[0], "SetSessionOptions", schema)
    for spelling in spellings:
        assert b"tpch" in call(spelling, "GetSessionOptions"), spelling
    call(spellings[2], "CloseSession")
    assert b"tpch" not in call(spellings[1], "GetSessionOptions")
    client.close()
