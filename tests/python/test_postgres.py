"""The PostgreSQL connector against a real PostgreSQL server (Debian's package, a throwaway
cluster on a free port): types, full and incremental syncs, query sources, failures, and
TLS with each `sslmode` against a server whose certificate a test CA signed, and the password
never reaching the state file, the API or the log."""

from __future__ import annotations

import datetime
import decimal
import json
import os
import re
import tempfile
import time
import uuid

import psycopg
import pyarrow as pa
import pytest

from harness import ADMIN_EMAIL, ADMIN_PASSWORD, Server, api, connect, login, state_bytes
from harness import user_granted as harness_user_granted
from pgserver import PASSWORD, postgres_cluster
from test_sync import rows, sync, wait_run

PG_PASSWORD = PASSWORD


@pytest.fixture(scope="module")
def cluster():
    """A PostgreSQL cluster of our own that logs every statement it receives."""
    with postgres_cluster(log_statements=True) as c:
        yield c


@pytest.fixture(scope="module")
def postgres(cluster):
    """Its connection settings."""
    return cluster.settings


def execute(settings, sql: str, params=None):
    with psycopg.connect(**settings, autocommit=True) as conn:
        conn.execute(sql, params)


def definition(settings, name: str, **extra):
    options = {"host": settings["host"], "port": settings["port"], "database": settings["dbname"],
               "user": settings["user"], "password": "${PG_PASSWORD}"}
    options.update(extra.pop("options", {}))
    return {"name": name, "connector": "postgres", "options": options, **extra}


@pytest.fixture
def server(postgres, monkeypatch):
    monkeypatch.setenv("PG_PASSWORD", PG_PASSWORD)
    with tempfile.TemporaryDirectory() as tmp:
        s = Server(["serve"], os.path.join(tmp, "data"))
        yield s
        s.stop()
        state = state_bytes(os.path.join(tmp, "data"))
        assert PG_PASSWORD.encode() not in state
        assert PG_PASSWORD not in s.log()


def test_types_map_faithfully(postgres, server):
    execute(postgres, """
        DROP TABLE IF EXISTS kinds;
        CREATE TYPE mood AS ENUM ('sad', 'happy');
        CREATE TABLE kinds (
            id bigint PRIMARY KEY, flag boolean, small smallint, n integer, r real, d double precision,
            price numeric(12,2), anything numeric, label text, code varchar(8), fixed char(3),
            born date, at_local timestamp, at timestamptz, t time, doc jsonb, raw json, blob bytea,
            uid uuid, tags text[], scores integer[], feeling mood, net inet)
    """)
    execute(postgres, """
        INSERT INTO kinds VALUES
        (1, true, 7, 42, 1.5, 2.25, 1234567890.12, 3.14159265358979, 'žluťoučký kůň', 'abc', 'xy',
         '2026-01-31', '2026-01-31 12:34:56.789', '2026-01-31 12:34:56+02', '23:59:59.5',
         '{"a": [1, 2]}', '{"b": null}', '\\xdeadbeef', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
         ARRAY['x', NULL, 'z'], ARRAY[1, 2, 3], 'happy', '10.0.0.1'),
        (2, NULL, NULL, NULL, NULL, NULL, NULL, 'NaN', NULL, NULL, NULL, NULL, NULL, NULL, NULL,
         NULL, NULL, NULL, NULL, NULL, '{}', NULL, NULL)
    """)
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    status, body = api(server, "POST", "/api/admin/tables", token,
                       definition(postgres, "pg.kinds", options={"table": "public.kinds"}))
    assert status == 201, body
    # The definition keeps the reference, never the password.
    assert body["definition"]["options"]["password"] == "${PG_PASSWORD}"
    run = sync(server, token, "pg.kinds")
    assert run["status"] == "succeeded", run

    table = rows(server, "SELECT * FROM pg.kinds ORDER BY id")
    types = {f.name: f.type for f in table.schema}
    assert types["id"] == pa.int64() and types["small"] == pa.int16() and types["n"] == pa.int32()
    assert types["r"] == pa.float32() and types["d"] == pa.float64() and types["flag"] == pa.bool_()
    assert types["price"] == pa.decimal128(12, 2)
    assert types["anything"] == pa.decimal128(38, 10)
    assert types["born"] == pa.date32()
    assert types["at_local"] == pa.timestamp("us")
    assert types["at"] == pa.timestamp("us", tz="UTC")
    assert types["t"] == pa.time64("us")
    assert types["blob"] == pa.binary()
    assert types["tags"] == pa.list_(pa.string()) and types["scores"] == pa.list_(pa.int32())
    assert types["feeling"] == pa.string() and types["net"] == pa.string()
    first, second = table.to_pylist()
    assert first["price"] == decimal.Decimal("1234567890.12")
    assert first["anything"] == decimal.Decimal("3.1415926536")
    assert first["label"] == "žluťoučký kůň" and first["fixed"] == "xy "
    assert first["born"] == datetime.date(2026, 1, 31)
    assert first["at_local"] == datetime.datetime(2026, 1, 31, 12, 34, 56, 789000)
    assert first["at"] == datetime.datetime(2026, 1, 31, 10, 34, 56, tzinfo=datetime.timezone.utc)
    assert first["t"] == datetime.time(23, 59, 59, 500000)
    assert json.loads(first["doc"]) == {"a": [1, 2]} and json.loads(first["raw"]) == {"b": None}
    assert first["blob"] == b"\xde\xad\xbe\xef"
    assert first["uid"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert first["tags"] == ["x", None, "z"] and first["scores"] == [1, 2, 3]
    assert first["feeling"] == "happy" and first["net"] == "10.0.0.1/32"
    assert second["anything"] is None  # NaN has no decimal value
    assert second["scores"] == [] and second["flag"] is None


def test_incremental_from_a_query_with_updates_and_a_failure(postgres, server):
    execute(postgres, """
        DROP TABLE IF EXISTS accounts;
        CREATE TABLE accounts (id int PRIMARY KEY, name text, balance numeric(10,2), updated_at timestamptz);
        INSERT INTO accounts VALUES (1, 'ada', 10.00, '2026-01-01 10:00:00+00'),
                                    (2, 'bob', 20.00, '2026-01-01 11:00:00+00');
    """)
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    status, body = api(server, "POST", "/api/admin/tables", token, definition(
        postgres, "pg.accounts", options={"query": "SELECT id, name, balance, updated_at FROM accounts"},
        mode="incremental", watermark="updated_at", primary_key=["id"]))
    assert status == 201, body
    assert sync(server, token, "pg.accounts")["status"] == "succeeded"

    execute(postgres, """
        UPDATE accounts SET balance = 25.50, updated_at = '2026-01-02 09:00:00+00' WHERE id = 2;
        UPDATE accounts SET name = 'ada-unseen' WHERE id = 1;  -- watermark not advanced
        INSERT INTO accounts VALUES (3, 'cyd', 5.00, '2026-01-02 10:00:00+00');
    """)
    run = sync(server, token, "pg.accounts")
    assert run["status"] == "succeeded", run
    # Only rows past the watermark were read: the silent change to row 1 is not picked up.
    status, info = api(server, "GET", "/api/admin/tables/pg.accounts", token)
    assert info["rows"] == 3
    table = rows(server, "SELECT id, name, balance FROM pg.accounts ORDER BY id")
    assert table.to_pylist() == [
        {"id": 1, "name": "ada", "balance": decimal.Decimal("10.00")},
        {"id": 2, "name": "bob", "balance": decimal.Decimal("25.50")},
        {"id": 3, "name": "cyd", "balance": decimal.Decimal("5.00")},
    ]

    # The source table disappears: the sync fails with PostgreSQL's message; data stays.
    execute(postgres, "DROP TABLE accounts")
    run = sync(server, token, "pg.accounts")
    assert run["status"] == "failed" and 'relation "accounts" does not exist' in run["error"], run
    assert rows(server, "SELECT count(*) AS n FROM pg.accounts").to_pylist() == [{"n": 3}]


def test_wrong_password_and_literal_secret(postgres, server, monkeypatch):
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    literal = definition(postgres, "pg.bad", options={"table": "x", "password": "hunter2hunter2"})
    status, body = api(server, "POST", "/api/admin/tables", token, literal)
    assert status == 422 and "`options.password`: is a secret" in body["error"]["message"], body

    unset = definition(postgres, "pg.unset", options={"table": "x", "password": "${NOT_SET_ANYWHERE}"})
    status, body = api(server, "POST", "/api/admin/tables", token, unset)
    assert status == 201, body
    run = sync(server, token, "pg.unset")
    assert run["status"] == "failed" and "NOT_SET_ANYWHERE" in run["error"], run


# ----- Remote tables (`mode: remote`) -------------------------------------------------------------

def statements_since(cluster, mark: int) -> list[str]:
    """The statements Quiver sent PostgreSQL since the log was `mark` characters long."""
    found = (re.search(r"LOG:  (?:statement|execute [^:]*): (.*)", line) for line in cluster.log()[mark:].splitlines())
    return [m.group(1) for m in found if m and "quiver_source" in m.group(1)]


def test_a_remote_table_is_read_from_the_source_by_each_query(cluster, postgres, server):
    execute(postgres, """
        DROP TABLE IF EXISTS orders;
        CREATE TABLE orders (id int PRIMARY KEY, team text, amount numeric(10,2), note text);
        INSERT INTO orders VALUES (1, 'red', 10.00, 'a'), (2, 'blue', 42.00, 'b'),
                                  (3, 'red', 30.00, 'c'), (4, 'red', 50.00, 'd');
    """)
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    status, body = api(server, "POST", "/api/admin/tables", token,
                       definition(postgres, "pg.orders", mode="remote", options={"table": "public.orders"}))
    assert status == 201, body
    # Without a schedule, the first sync still runs by itself: it reads the schema only.
    mark = len(cluster.log())
    first = wait_run(server, token, "pg.orders")
    assert first["status"] == "succeeded" and first["trigger"] == "schedule", first
    assert statements_since(cluster, mark) == []

    table = rows(server, "SELECT * FROM pg.orders ORDER BY id")
    assert [f.name for f in table.schema] == ["id", "team", "amount", "note"]
    assert table.schema.field("amount").type == pa.decimal128(10, 2)
    assert [r["id"] for r in table.to_pylist()] == [1, 2, 3, 4]

    # A change at the source is seen by the next query, with no sync in between.
    execute(postgres, "INSERT INTO orders VALUES (5, 'blue', 60.00, 'e')")
    assert [r["id"] for r in rows(server, "SELECT * FROM pg.orders ORDER BY id").to_pylist()] == [1, 2, 3, 4, 5]
    mark = len(cluster.log())
    assert rows(server, "SELECT id FROM pg.orders WHERE id >= 4 ORDER BY id").to_pylist() == [{"id": 4}, {"id": 5}]
    # Only the columns the query reads, and its filter, went to PostgreSQL.
    [sent] = statements_since(cluster, mark)
    assert "note" not in sent and "amount" not in sent and ">= (4)" in sent, sent
    mark = len(cluster.log())
    assert len(rows(server, "SELECT id, note FROM pg.orders LIMIT 2")) == 2
    [sent] = statements_since(cluster, mark)
    assert sent.rstrip().endswith("LIMIT 2") or "LIMIT 2)" in sent, sent

    # The queries share one connection, kept between them: no new connection and sign-in
    # for each.
    backends = ("SELECT pid FROM pg_stat_activity "
                "WHERE application_name = 'quiver' AND datname = current_database()")
    seen = []
    for sql in ["SELECT id FROM pg.orders WHERE id = 1", "SELECT count(*) FROM pg.orders", "SELECT * FROM pg.orders"]:
        rows(server, sql)
        with psycopg.connect(**postgres, autocommit=True) as conn:
            seen.append(conn.execute(backends).fetchall())
    assert len(seen[0]) == 1 and seen[0] == seen[1] == seen[2], seen

    # A user whose grant keeps only red rows and masks the note.
    email, group = "remote@example.com", "remote_team"
    assert api(server, "POST", "/api/admin/groups", token, {"name": group})[0] == 201
    assert api(server, "POST", "/api/admin/users", token, {"email": email, "password": "pw-remote-123"})[0] == 201
    assert api(server, "POST", f"/api/admin/groups/{group}/members", token, {"email": email})[0] == 204
    grant = {"group": group, "table": "pg.orders", "row_filter": "team = 'red'", "column_masks": {"note": "'***'"}}
    status, body = api(server, "POST", "/api/admin/grants", token, grant)
    assert status == 201, body
    conn = connect(server, email, "pw-remote-123")
    try:
        with conn.cursor() as cur:
            mark = len(cluster.log())
            # `1 / (amount - 42)` fails on the hidden blue row of 42.00: it must not run there,
            # here or at the source, so it is evaluated above the row filter, never pushed.
            cur.execute("SELECT id, note FROM pg.orders WHERE 1 / (amount - 42) > 0 AND id > 1 ORDER BY id")
            assert cur.fetch_arrow_table().to_pylist() == [{"id": 4, "note": "***"}]
            sent = statements_since(cluster, mark)
            assert sent and all("'red'" in q and "> (1)" in q and "/" not in q for q in sent), sent
            cur.execute("SELECT count(*) AS n FROM pg.orders")
            assert cur.fetch_arrow_table().to_pylist() == [{"n": 3}]
    finally:
        conn.close()

    # The catalog says the table is remote, with no row count of its own.
    status, catalog = api(server, "GET", "/api/catalog", login(server, email, "pw-remote-123"))
    assert status == 200, catalog
    [entry] = [t for t in catalog if t["name"] == "pg.orders"]
    assert entry["remote"] is True and entry.get("rows") is None, entry
    status, info = api(server, "GET", "/api/admin/tables/pg.orders", token)
    assert info["definition"]["mode"] == "remote" and info.get("rows") is None, info

    # The source's schema changes: a dropped column fails queries with what to do, until the
    # next sync reads the new schema.
    execute(postgres, "ALTER TABLE orders DROP COLUMN note; ALTER TABLE orders ADD COLUMN region text")
    with pytest.raises(Exception, match="sync the table to refresh its schema"):
        rows(server, "SELECT * FROM pg.orders")
    assert rows(server, "SELECT id FROM pg.orders WHERE id = 1").to_pylist() == [{"id": 1}]
    assert sync(server, token, "pg.orders")["status"] == "succeeded"
    table = rows(server, "SELECT * FROM pg.orders ORDER BY id")
    assert [f.name for f in table.schema] == ["id", "team", "amount", "region"]


# Values a filter may compare with: quotes, backslashes, dollar quotes, comments, unicode,
# and the attack that once ran its own SQL at the source through a pushed-down filter.
NASTY_VALUES = [
    "O'Brien", "a''b", "x\\'y", "x\\''y", "back\\slash\\", "$$|$$", "$q$ x $q$", "-- not a comment",
    "/* nor this */", "naïve ☃ 𝄞", "tab\there", "line\nbreak", "'; DROP TABLE people; --",
    "\\' OR 1 = CAST((SELECT string_agg(s, $$|$$) FROM public.secrets) AS int)))) TO STDOUT (FORMAT binary) --",
]


def sql_literal(value: str) -> str:
    """`value` as a string literal in Quiver's SQL (standard: quotes doubled)."""
    return "'" + value.replace("'", "''") + "'"


def test_remote_filters_carry_any_value_and_never_run_it_as_sql(cluster, postgres, server):
    execute(postgres, """
        DROP TABLE IF EXISTS people; DROP TABLE IF EXISTS secrets;
        CREATE TABLE people (id int PRIMARY KEY, name text, region text);
        CREATE TABLE secrets (s text);
        INSERT INTO secrets VALUES ('TOPSECRET-42');
    """)
    with psycopg.connect(**postgres, autocommit=True) as c:
        for i, value in enumerate(NASTY_VALUES):
            c.execute("INSERT INTO people VALUES (%s, %s, %s)", (i, value, "EU" if i % 2 == 0 else "US"))
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    status, body = api(server, "POST", "/api/admin/tables", token,
                       definition(postgres, "pg.people", mode="remote", options={"table": "public.people"}))
    assert status == 201, body
    assert wait_run(server, token, "pg.people")["status"] == "succeeded"
    # A user who may read only the EU rows.
    email, _, _ = harness_user_granted(server, token, "eu", "pg.people", "pw-eu-reader-1", row_filter="region = 'EU'")

    conn = connect(server, email, "pw-eu-reader-1")
    try:
        with conn.cursor() as cur:
            for i, value in enumerate(NASTY_VALUES):
                expected = [{"id": i, "name": value}] if i % 2 == 0 else []
                mark = len(cluster.log())
                cur.execute(f"SELECT id, name FROM pg.people WHERE name = {sql_literal(value)}")
                assert cur.fetch_arrow_table().to_pylist() == expected, value
                # The filter was sent to PostgreSQL, as a value.
                sent = statements_since(cluster, mark)
                assert sent and all("WHERE" in q and "'EU'" in q for q in sent), (value, sent)
                cur.execute("SELECT id, name FROM pg.people WHERE name = ?", parameters=(value,))
                assert cur.fetch_arrow_table().to_pylist() == expected, value
                cur.execute(f"SELECT id FROM pg.people WHERE name IN ({sql_literal(value)}, 'zz') AND id >= 0")
                assert [r["id"] for r in cur.fetch_arrow_table().to_pylist()] == [r["id"] for r in expected]
            # A value PostgreSQL text cannot hold is not sent: evaluated here, no error.
            cur.execute("SELECT id FROM pg.people WHERE name = ?", parameters=("a\x00b",))
            assert cur.fetch_arrow_table().num_rows == 0
    finally:
        conn.close()
    assert "TOPSECRET" not in server.log()
    with psycopg.connect(**postgres, autocommit=True) as c:
        assert c.execute("SELECT count(*) FROM people").fetchone()[0] == len(NASTY_VALUES)


def test_source_errors_name_the_source_only_to_admins(postgres, server):
    """A non-admin reading a remote table whose source fails learns that it failed, not the
    source's host, database or account; admins and the log keep the detail."""
    execute(postgres, """
        DROP TABLE IF EXISTS guarded; CREATE TABLE guarded (id int);
        INSERT INTO guarded VALUES (1);
        DROP ROLE IF EXISTS quiver_guard; CREATE ROLE quiver_guard LOGIN;
        GRANT SELECT ON guarded TO quiver_guard;
    """)
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    body = definition(postgres, "pg.guarded", mode="remote", options={
        "table": "public.guarded", "user": "quiver_guard", "password": "${PG_PASSWORD}"})
    execute(postgres, f"ALTER ROLE quiver_guard PASSWORD '{PG_PASSWORD}'")
    assert api(server, "POST", "/api/admin/tables", token, body)[0] == 201
    assert wait_run(server, token, "pg.guarded")["status"] == "succeeded"
    email, _, _ = harness_user_granted(server, token, "guard", "pg.guarded", "pw-guard-reader-1")
    with connect(server, email, "pw-guard-reader-1") as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) AS n FROM pg.guarded")
        assert cur.fetch_arrow_table().to_pylist() == [{"n": 1}]
    # The source now refuses the account (and drops the connection Quiver kept).
    execute(postgres, "ALTER ROLE quiver_guard PASSWORD 'changed-elsewhere';"
                      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'quiver_guard'")
    revealing = [postgres["host"], str(postgres["port"]), postgres["dbname"], "quiver_guard"]
    with connect(server, email, "pw-guard-reader-1") as conn, conn.cursor() as cur:
        with pytest.raises(Exception) as refused:
            cur.execute("SELECT count(*) FROM pg.guarded")
            cur.fetch_arrow_table()
    message = str(refused.value)
    assert "pg.guarded" in message and "source" in message, message
    assert not any(r in message for r in revealing), message
    with pytest.raises(Exception) as detailed:
        rows(server, "SELECT count(*) FROM pg.guarded")  # as the admin
    assert "quiver_guard" in str(detailed.value) and postgres["dbname"] in str(detailed.value)
    assert "quiver_guard" in server.log()


def test_a_remote_query_past_its_timeout_is_stopped_at_the_source_too(postgres, monkeypatch):
    monkeypatch.setenv("PG_PASSWORD", PG_PASSWORD)
    slow = "SELECT 1 AS one FROM pg_sleep(120)"
    with tempfile.TemporaryDirectory() as tmp:
        s = Server(["serve"], os.path.join(tmp, "data"), config="query:\n  timeout: 2s\n")
        try:
            token = login(s, ADMIN_EMAIL, ADMIN_PASSWORD)
            status, body = api(s, "POST", "/api/admin/tables", token,
                               definition(postgres, "pg.slow", mode="remote", options={"query": slow}))
            assert status == 201, body
            assert wait_run(s, token, "pg.slow")["status"] == "succeeded"
            with pytest.raises(Exception, match="query.timeout"):
                rows(s, "SELECT * FROM pg.slow")
            # PostgreSQL was asked to stop: the statement is not left sleeping there.
            running = "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%pg_sleep(120)%' AND pid <> pg_backend_pid()"
            deadline = time.time() + 10
            while True:
                with psycopg.connect(**postgres, autocommit=True) as conn:
                    (left,) = conn.execute(running).fetchone()
                if left == 0 or time.time() > deadline:
                    break
                time.sleep(0.2)
            assert left == 0
        finally:
            s.stop()


def test_remote_mode_is_refused_where_it_cannot_work(postgres, server, tmp_path):
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    (tmp_path / "t.csv").write_text("id\n1\n")
    status, body = api(server, "POST", "/api/admin/tables", token, {
        "name": "files.remote", "connector": "files", "mode": "remote", "options": {"path": str(tmp_path / "t.csv")}})
    assert status == 422 and "`mode`" in body["error"]["message"], body
    assert "works with bigquery and postgres" in body["error"]["message"], body
    status, body = api(server, "POST", "/api/admin/tables", token, definition(
        postgres, "pg.remote_watermark", mode="remote", watermark="id", options={"table": "public.orders"}))
    assert status == 422 and "watermark" in body["error"]["message"], body


# ----- TLS ---------------------------------------------------------------------------------------

# What the connection itself reports: whether it is encrypted.
SSL_QUERY = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


@pytest.fixture(scope="module")
def tls_postgres():
    """A cluster speaking TLS with a certificate for `localhost` signed by a test CA; yields its
    settings, the CA's PEM file, and the PEM file of another CA."""
    import trustme

    ca, other = trustme.CA(), trustme.CA()
    with tempfile.TemporaryDirectory() as tmp, postgres_cluster(ca.issue_cert("localhost")) as cluster:
        paths = os.path.join(tmp, "ca.pem"), os.path.join(tmp, "other-ca.pem")
        ca.cert_pem.write_to_path(paths[0])
        other.cert_pem.write_to_path(paths[1])
        yield cluster.settings, *paths


@pytest.mark.parametrize("host, options, outcome", [
    # The default, `prefer`: encrypted when the server offers it, the certificate unchecked.
    ("127.0.0.1", {}, True),
    ("127.0.0.1", {"sslmode": "disable"}, False),
    ("127.0.0.1", {"sslmode": "require"}, True),
    ("localhost", {"sslmode": "verify-full", "ca_cert": "{ca}"}, True),
    # `verify-ca` checks the signature, not the name; `verify-full` both.
    ("127.0.0.1", {"sslmode": "verify-ca", "ca_cert": "{ca}"}, True),
    ("127.0.0.1", {"sslmode": "verify-full", "ca_cert": "{ca}"}, "does not name this host"),
    ("localhost", {"sslmode": "verify-full", "ca_cert": "{other}"}, "set `ca_cert`"),
    # Without `ca_cert`, the system's CAs, which never signed the test CA's certificate.
    ("localhost", {"sslmode": "verify-ca"}, "set `ca_cert`"),
    # Given a CA, `require` checks against it too (as libpq does).
    ("localhost", {"sslmode": "require", "ca_cert": "{other}"}, "set `ca_cert`"),
])
def test_tls_modes(tls_postgres, server, host, options, outcome):
    settings, ca, other = tls_postgres
    options = {k: v.format(ca=ca, other=other) for k, v in options.items()}
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    table = f"pg.tls_{uuid.uuid4().hex[:8]}"
    body = definition({**settings, "host": host}, table, options={"query": SSL_QUERY, **options})
    status, created = api(server, "POST", "/api/admin/tables", token, body)
    assert status == 201, created
    run = sync(server, token, table)
    if isinstance(outcome, bool):
        assert run["status"] == "succeeded", run
        assert rows(server, f"SELECT ssl FROM {table}").to_pylist() == [{"ssl": outcome}]
    else:
        # The error names the server, the mode, what failed and what to do.
        assert run["status"] == "failed", run
        where = f"PostgreSQL at {host}:{settings['port']}/postgres (sslmode {options['sslmode']})"
        assert where in run["error"] and "certificate" in run["error"] and outcome in run["error"], run


def test_tls_required_of_a_server_without_it_and_a_bad_ca_file(postgres, server):
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    status, body = api(server, "POST", "/api/admin/tables", token,
                       definition(postgres, "pg.tls_refused", options={"query": SSL_QUERY, "sslmode": "require"}))
    assert status == 201, body
    run = sync(server, token, "pg.tls_refused")
    assert run["status"] == "failed" and "server does not support TLS" in run["error"], run
    # A CA file that is not there, or not a certificate, is refused with the definition.
    with tempfile.NamedTemporaryFile("w", suffix=".pem") as junk:
        junk.write("not a certificate\n")
        junk.flush()
        for path in ["/nonexistent/ca.pem", junk.name]:
            status, body = api(server, "POST", "/api/admin/tables", token,
                               definition(postgres, "pg.tls_bad_ca", options={"table": "x", "ca_cert": path}))
            assert status == 422 and "`options.ca_cert`" in body["error"]["message"], body
            assert path in body["error"]["message"], body
    status, body = api(server, "POST", "/api/admin/tables", token, definition(
        postgres, "pg.tls_unused_ca", options={"table": "x", "sslmode": "disable", "ca_cert": "/x.pem"}))
    assert status == 422 and "sslmode: disable" in body["error"]["message"], body
    status, body = api(server, "POST", "/api/admin/tables", token, definition(
        postgres, "pg.tls_bad_mode", options={"table": "x", "sslmode": "always"}))
    assert status == 422 and "sslmode" in body["error"]["message"], body
