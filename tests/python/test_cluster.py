"""Replicas on one PostgreSQL state database and one object store: what one replica issues or
changes holds on the others, and `quiver admin` works beside them."""

from __future__ import annotations

import os
import pathlib
import subprocess
import tempfile
import time

import adbc_driver_manager
import pyarrow
import pyarrow.compute
import pyarrow.flight as flight
import pytest

from harness import ADMIN_EMAIL, ADMIN_PASSWORD, Server, api, connect, login, metric, on_postgres, quiver_bin
from pgserver import free_port, postgres_server
from test_clients import statement_command

# The PostgreSQL pass of the suite runs every server on PostgreSQL already; this file starts
# its own cluster and needs to run only once.
pytestmark = pytest.mark.skipif(on_postgres(), reason="runs in the embedded-state pass")

SECRET = "cluster-secret-shared-by-every-replica-0123456789"
PASSWORD = "replica-user-password"
# query.max_concurrent_per_user of the cluster fixture.
CAP = 3
CANCELLING = 2  # arrow.flight.protocol.CancelStatus: asked of the replica running it


def replica(args, data_dir, config, env, port):
    """A replica listening on `port`, advertised there."""
    return Server(args, data_dir, config=config + f"server:\n  advertise: grpc://127.0.0.1:{port}\n",
                  env=env, flight_listen=f"127.0.0.1:{port}")


@pytest.fixture(scope="module")
def cluster():
    """Replica A (which generated the demo data), B and C, sharing state and objects, each
    advertising its address."""
    with postgres_server() as pg, tempfile.TemporaryDirectory() as tmp:
        url = f"postgres://{pg['user']}:{pg['password']}@{pg['host']}:{pg['port']}/{pg['dbname']}"
        env = {"QUIVER_STATE": url, "QUIVER_JWT_SECRET": SECRET}
        config = (f"storage:\n  object_store: file://{tmp}/objects\n"
                  f"query:\n  max_concurrent_per_user: {CAP}\n  max_prepared_per_user: {CAP}\n")
        started = []
        try:
            for name, args in (("a", ["demo", "--scale", "0.01"]), ("b", ["serve"]), ("c", ["serve"])):
                started.append(replica(args, os.path.join(tmp, name), config, env, free_port()))
            yield (*started[:2], env, tmp, started[2])
        finally:
            for server in started:
                server.stop()


def rows(server, sql, **who):
    who = who or {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
    with connect(server, **who) as conn, conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table().to_pylist()


def eventually(check, within=1.0):
    """Polls `check` until it holds or `within` seconds pass; returns the seconds it took."""
    start = time.time()
    while True:
        if check():
            return time.time() - start
        if time.time() - start > within:
            raise AssertionError(f"did not hold within {within}s")
        time.sleep(0.05)


def test_a_ticket_from_one_replica_is_served_by_another(cluster):
    a, b, *_ = cluster
    sql = "SELECT n_nationkey, n_name FROM tpch.nation ORDER BY n_nationkey"
    on_a = flight.FlightClient(a.uri)
    info = on_a.get_flight_info(flight.FlightDescriptor.for_command(statement_command(sql)),
                                flight.FlightCallOptions(headers=[on_a.authenticate_basic_token(ADMIN_EMAIL, ADMIN_PASSWORD)]))
    on_b = flight.FlightClient(b.uri)
    options = flight.FlightCallOptions(headers=[on_b.authenticate_basic_token(ADMIN_EMAIL, ADMIN_PASSWORD)])
    table = on_b.do_get(info.endpoints[0].ticket, options).read_all()
    assert table.num_rows == 25 and table.column("n_name")[0].as_py() == "ALGERIA"
    on_a.close()
    on_b.close()


def test_grants_and_sign_outs_reach_every_replica_within_a_second(cluster):
    a, b, *_ = cluster
    admin = login(a, ADMIN_EMAIL, ADMIN_PASSWORD)
    email = "rhea@example.com"
    assert api(a, "POST", "/api/admin/users", admin, {"email": email, "password": PASSWORD})[0] == 201
    assert api(a, "POST", "/api/admin/groups", admin, {"name": "europe"})[0] == 201
    assert api(a, "POST", "/api/admin/groups/europe/members", admin, {"email": email})[0] == 204
    status, grant = api(a, "POST", "/api/admin/grants", admin,
                        {"group": "europe", "table": "tpch.nation", "row_filter": "n_regionkey = 3"})
    assert status == 201, grant

    token = login(b, email, PASSWORD)  # a bearer from B, used on A and B
    query = "SELECT count(*) AS n FROM tpch.nation"
    for replica in (a, b):
        assert rows(replica, query, token=token) == [{"n": 5}]

    heard = metric(b, "quiver_state_notifications_total")
    assert api(a, "DELETE", f"/api/admin/grants/{grant['id']}", admin)[0] == 204

    def refused_on_b():
        try:
            rows(b, query, token=token)
            return False
        except adbc_driver_manager.Error as e:
            return "not found" in str(e)

    eventually(refused_on_b, within=1.0)
    # B heard of it as it committed (PostgreSQL LISTEN/NOTIFY), not by polling.
    assert metric(b, "quiver_state_notifications_total") > heard

    # Signing out on A ends the bearer on B.
    assert api(a, "POST", "/auth/logout", token)[0] in (200, 204)

    def signed_out_on_b():
        try:
            rows(b, "SELECT 1 AS one", token=token)
            return False
        except adbc_driver_manager.Error as e:
            return "UNAUTHENTICATED" in str(e) or "Unauthenticated" in str(e)

    eventually(signed_out_on_b, within=1.0)


def test_a_write_on_one_replica_is_read_on_another_and_appends_from_both_land(cluster):
    a, b, *_ = cluster
    data = pyarrow.table({"id": pyarrow.array([1, 2], pyarrow.int64())})

    def ingest(replica, table, mode):
        with connect(replica, ADMIN_EMAIL, ADMIN_PASSWORD) as conn, conn.cursor() as cur:
            written = cur.adbc_ingest(table, data, mode=mode, db_schema_name="me")
            conn.commit()
            return written

    def count(replica, table):
        try:
            return rows(replica, f"SELECT count(*) AS n FROM me.{table}")[0]["n"]
        except adbc_driver_manager.Error:
            return None

    assert ingest(a, "shared_writes", "create") == 2
    eventually(lambda: count(b, "shared_writes") == 2, within=1.0)
    # Appends from both replicas both land; a replace on B is what A reads next.
    assert ingest(a, "shared_writes", "append") == 2
    assert ingest(b, "shared_writes", "append") == 2
    eventually(lambda: count(a, "shared_writes") == 6, within=1.0)
    assert ingest(b, "shared_writes", "replace") == 2
    eventually(lambda: count(a, "shared_writes") == 2, within=1.0)
    with connect(b, ADMIN_EMAIL, ADMIN_PASSWORD) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE me.made_on_b AS SELECT n_nationkey FROM tpch.nation")
    eventually(lambda: count(a, "made_on_b") == 25, within=1.0)


def test_quiver_admin_works_beside_running_replicas(cluster):
    a, b, env, tmp, _ = cluster
    done = subprocess.run([quiver_bin(), "admin", "--data-dir", os.path.join(tmp, "cli"),
                           "user", "add", "cli@example.com", "--password-stdin"],
                          input=PASSWORD + "\n", capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **env))
    assert done.returncode == 0, done.stderr
    # Both replicas know the new user at once, and its sign-in is audited with the CLI's.
    for replica in (a, b):
        assert rows(replica, "SELECT 1 AS one", email="cli@example.com", password=PASSWORD) == [{"one": 1}]
    admin = login(b, ADMIN_EMAIL, ADMIN_PASSWORD)
    status, audit = api(b, "GET", "/api/admin/audit?limit=200", admin)
    assert status == 200
    assert any(r["action"] == "user.create" and r["target"] == "cli@example.com" for r in audit)


def signed_in(server, email, password):
    return api(server, "POST", "/auth/login", body={"email": email, "password": password})[0]


def test_the_sign_in_throttle_holds_across_replicas(cluster):
    a, b, *_, c = cluster
    account = "guesser@example.com"
    # Ten failures (the per-account limit) spread over three replicas lock the account on all.
    assert [signed_in((a, b, c)[i % 3], account, f"guess-{i}") for i in range(10)] == [401] * 10
    assert [signed_in(r, account, "guess-again") for r in (a, b, c)] == [429] * 3


def flight_client(server, email=ADMIN_EMAIL, password=ADMIN_PASSWORD):
    client = flight.FlightClient(server.uri)
    return client, flight.FlightCallOptions(headers=[client.authenticate_basic_token(email, password)])


def open_stream(server, sql, email=ADMIN_EMAIL, password=ADMIN_PASSWORD):
    """A result stream read one batch in, held open (the server waits for the client)."""
    client, options = flight_client(server, email, password)
    info = client.get_flight_info(flight.FlightDescriptor.for_command(statement_command(sql)), options)
    reader = client.do_get(info.endpoints[0].ticket, options)
    reader.read_chunk()
    return client, reader, info


ENDLESS = "SELECT value FROM generate_series(1, 1000000000000)"


def new_user(server, token, name):
    email = f"{name}@example.com"
    assert api(server, "POST", "/api/admin/users", token, {"email": email, "password": PASSWORD})[0] == 201
    return email


def test_the_per_user_query_cap_holds_across_replicas(cluster):
    a, b, *_, c = cluster
    user = new_user(a, login(a, ADMIN_EMAIL, ADMIN_PASSWORD), "busy")
    held = [open_stream(r, ENDLESS, user, PASSWORD) for r in (a, b, c)]  # CAP = 3, one on each
    for replica in (a, b, c):
        with pytest.raises(pyarrow.ArrowException) as refused:  # RESOURCE_EXHAUSTED
            open_stream(replica, "SELECT 1", user, PASSWORD)
        assert "max_concurrent_per_user" in str(refused.value), refused.value
    # Another user is not affected; and once one stream ends, a place is free on every replica.
    assert rows(b, "SELECT 1 AS one") == [{"one": 1}]
    client, _, _ = held.pop()
    client.close()
    eventually(lambda: rows(b, "SELECT 1 AS one", email=user, password=PASSWORD) == [{"one": 1}], within=2)
    for client, _, _ in held:
        client.close()


def test_the_prepared_statement_cap_holds_across_replicas(cluster):
    a, b, *_ = cluster
    user = new_user(a, login(a, ADMIN_EMAIL, ADMIN_PASSWORD), "binder")
    sql = "SELECT count(*) AS n FROM generate_series(1, 3) WHERE value = ?"
    conns = [connect(r, user, PASSWORD) for r in (a, b)]
    cursors = []
    try:
        # Statements with bound parameters: two on A, one on B (CAP = 3 in all).
        for conn in (conns[0], conns[0], conns[1]):
            cur = conn.cursor()
            cur.execute(sql, parameters=(1,))
            assert cur.fetch_arrow_table().to_pylist() == [{"n": 1}]
            cursors.append(cur)
        for conn in conns:
            with conn.cursor() as cur, pytest.raises(adbc_driver_manager.Error, match="max_prepared_per_user"):
                cur.execute(sql, parameters=(2,))
        # Closing one on A frees a place on B.
        cursors.pop(0).close()
        eventually(lambda: _binds(conns[1], sql), within=2)
    finally:
        for cur in cursors:
            cur.close()
        for conn in conns:
            conn.close()


def _binds(conn, sql) -> bool:
    try:
        with conn.cursor() as cur:
            cur.execute(sql, parameters=(3,))
            return cur.fetch_arrow_table().to_pylist() == [{"n": 1}]
    except adbc_driver_manager.Error:
        return False


def test_a_cancel_sent_to_any_replica_stops_the_query_where_it_runs(cluster, no_pyarrow_signal_handling):
    from test_hardening import CANCELLED, NOT_CANCELLABLE, cancel_flight_info

    a, b, *_ = cluster
    owner = new_user(a, login(a, ADMIN_EMAIL, ADMIN_PASSWORD), "canceller")
    client, reader, info = open_stream(a, ENDLESS, owner, PASSWORD)
    # Someone else cannot, through any replica; the owner can, through B.
    other, other_options = flight_client(b, ADMIN_EMAIL, ADMIN_PASSWORD)
    stranger = new_user(a, login(a, ADMIN_EMAIL, ADMIN_PASSWORD), "stranger")
    on_b, stranger_options = flight_client(b, stranger, PASSWORD)
    assert cancel_flight_info(on_b, info, stranger_options) == NOT_CANCELLABLE
    on_b_owner, owner_options = flight_client(b, owner, PASSWORD)
    asked = time.time()
    assert cancel_flight_info(on_b_owner, info, owner_options) == CANCELLING
    with pytest.raises(flight.FlightError) as ended:
        while True:
            reader.read_chunk()
    assert "cancel" in str(ended.value).lower(), ended.value
    assert time.time() - asked < 2
    # The query ran on A: its audit row says it was cancelled. (Audit rows are written in
    # batches, a moment after the stream ends.)
    token = login(b, ADMIN_EMAIL, ADMIN_PASSWORD)

    def audited() -> list:
        status, audit = api(b, "GET", f"/api/admin/audit?actor={owner}&action=query", token)
        assert status == 200, audit
        return audit

    eventually(lambda: audited(), within=5)
    audit = audited()
    assert audit[0]["outcome"].startswith("cancelled"), audit
    for c in (client, other, on_b, on_b_owner):
        c.close()


def test_fifty_clients_over_three_replicas_without_errors_or_lost_audit_rows(cluster):
    """A load test on loopback: 50 clients, each its own user, spread over the replicas, for
    QUIVER_LOAD_SECONDS (60 by default)."""
    import threading

    import adbc_driver_flightsql.dbapi as flight_sql

    a, b, *_, c = cluster
    seconds = float(os.environ.get("QUIVER_LOAD_SECONDS", "60"))
    admin = login(a, ADMIN_EMAIL, ADMIN_PASSWORD)
    users = [new_user(a, admin, f"load{i}") for i in range(50)]
    assert api(a, "POST", "/api/admin/groups", admin, {"name": "load"})[0] == 201
    for u in users:
        assert api(a, "POST", "/api/admin/groups/load/members", admin, {"email": u})[0] == 204
    assert api(a, "POST", "/api/admin/grants", admin, {"group": "load", "table": "tpch.*"})[0] == 201
    tokens = [login((a, b, c)[i % 3], u, PASSWORD) for i, u in enumerate(users)]
    statements = [
        "SELECT count(*) AS n FROM tpch.nation",
        "SELECT o_orderkey, o_totalprice FROM tpch.orders WHERE o_orderkey = 36",
        "SELECT l_returnflag, count(*) AS n FROM tpch.lineitem GROUP BY l_returnflag ORDER BY 1",
    ]
    done = [0] * len(users)
    errors = []
    stop = time.time() + seconds

    def client(i):
        server = (a, b, c)[i % 3]
        try:
            with flight_sql.connect(server.uri, db_kwargs={
                    "adbc.flight.sql.authorization_header": f"Bearer {tokens[i]}"}, autocommit=True) as conn:
                while time.time() < stop:
                    with conn.cursor() as cur:
                        cur.execute(statements[done[i] % len(statements)])
                        cur.fetch_arrow_table()
                    done[i] += 1
        except Exception as e:  # noqa: BLE001 - every failure is reported
            errors.append(f"{users[i]} on {server.uri}: {e}")

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(users))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    warnings = [line for r in (a, b, c) for line in r.log().splitlines() if " WARN " in line or " ERROR " in line]
    assert not errors, (errors[:5], warnings[-20:])
    assert all(n > 0 for n in done), done
    # Every statement has its audit row, whichever replica ran it.
    token = login(b, ADMIN_EMAIL, ADMIN_PASSWORD)
    for i, u in enumerate(users):
        status, audit = api(b, "GET", f"/api/admin/audit?actor={u}&action=query&limit=1000", token)
        assert status == 200
        assert len(audit) == done[i] and all(r["outcome"] == "ok" for r in audit), (u, done[i], len(audit))


def test_a_client_fetches_from_another_replica_when_one_dies_mid_stream(cluster):
    """Runs last on the cluster: it kills replica C."""
    import signal

    a, b, *_, c = cluster
    # The ADBC driver follows advertised endpoints.
    assert rows(c, "SELECT count(*) AS n FROM tpch.nation") == [{"n": 25}]
    n = 20_000_000
    client, options = flight_client(c)
    info = client.get_flight_info(flight.FlightDescriptor.for_command(
        statement_command(f"SELECT value FROM generate_series(1, {n})")), options)
    locations = [loc.uri.decode() for loc in info.endpoints[0].locations]
    assert locations[0] == "arrow-flight-reuse-connection://?"
    assert sorted(locations[1:]) == sorted([a.uri, b.uri]), locations
    reader = client.do_get(info.endpoints[0].ticket, options)
    reader.read_chunk()
    c.proc.send_signal(signal.SIGKILL)
    c.proc.wait()
    with pytest.raises(flight.FlightError):
        reader.read_all()
    # The same ticket, redeemed at the next location.
    retry = flight.FlightClient(locations[1])
    retry_options = flight.FlightCallOptions(headers=[retry.authenticate_basic_token(ADMIN_EMAIL, ADMIN_PASSWORD)])
    table = retry.do_get(info.endpoints[0].ticket, retry_options).read_all()
    assert table.num_rows == n
    assert pyarrow.compute.sum(table.column("value")).as_py() == n * (n + 1) // 2
    client.close()
    retry.close()


def test_an_unreachable_state_database_is_named_without_its_password(cluster):
    _, _, _, tmp, _ = cluster
    env = dict(os.environ, QUIVER_STATE="postgres://quiver:hunter2-secret@127.0.0.1:1/state",
               QUIVER_JWT_SECRET=SECRET)
    done = subprocess.run([quiver_bin(), "serve", "--data-dir", os.path.join(tmp, "down"),
                           "--flight-listen", "127.0.0.1:0", "--http-listen", "127.0.0.1:0"],
                          capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode != 0
    assert "cannot reach the state database postgres://quiver@127.0.0.1:1/state" in done.stderr, done.stderr
    assert "hunter2-secret" not in done.stderr + done.stdout


def test_state_migrate_moves_an_installation_onto_postgres(cluster):
    import psycopg

    _, _, env, tmp, _ = cluster
    pg = env["QUIVER_STATE"].rsplit("/", 1)[0]
    with psycopg.connect(env["QUIVER_STATE"], autocommit=True) as conn:
        conn.execute("CREATE DATABASE migrated")
    data = os.path.join(tmp, "embedded")
    one = Server(["demo", "--scale", "0.01"], data, env={"QUIVER_STATE": "", "QUIVER_JWT_SECRET": ""})
    try:
        admin = login(one, ADMIN_EMAIL, ADMIN_PASSWORD)
        assert api(one, "POST", "/api/admin/users", admin, {"email": "moved@example.com", "password": PASSWORD})[0] == 201
    finally:
        one.stop()

    migrate = [quiver_bin(), "state", "migrate", "--from", os.path.join(data, "state.duckdb"), "--to", f"{pg}/migrated"]
    done = subprocess.run(migrate, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "users  2 rows" in done.stdout, done.stdout
    again = subprocess.run(migrate, capture_output=True, text=True, timeout=120)
    assert again.returncode != 0 and "not empty" in again.stderr, again.stderr

    # The same data directory (its object store) served from the migrated state.
    two = Server(["serve"], data, env={"QUIVER_STATE": f"{pg}/migrated", "QUIVER_JWT_SECRET": SECRET})
    try:
        assert rows(two, "SELECT 1 AS one", email="moved@example.com", password=PASSWORD) == [{"one": 1}]
        assert rows(two, "SELECT count(*) AS n FROM tpch.nation", email=ADMIN_EMAIL, password=ADMIN_PASSWORD) == [{"n": 25}]
        admin = login(two, ADMIN_EMAIL, ADMIN_PASSWORD)
        status, audit = api(two, "GET", "/api/admin/audit?limit=1000", admin)
        assert any(r["action"] == "user.create" and r["target"] == "moved@example.com" for r in audit)
        # New rows number on past the copied ones.
        assert api(two, "POST", "/api/admin/groups", admin, {"name": "after"})[0] == 201
    finally:
        two.stop()


def test_a_state_database_that_goes_away_gives_clear_errors_then_recovers():
    from pgserver import postgres_cluster

    with postgres_cluster() as pg, tempfile.TemporaryDirectory() as tmp:
        s = pg.settings
        env = {"QUIVER_STATE": f"postgres://{s['user']}:{s['password']}@{s['host']}:{s['port']}/{s['dbname']}",
               "QUIVER_JWT_SECRET": SECRET}
        # One query at a time, so a place whose end was not recorded would show.
        server = Server(["demo", "--scale", "0.01"], os.path.join(tmp, "data"), env=env,
                        config="query:\n  max_concurrent_per_user: 1\n")
        try:
            assert api(server, "POST", "/auth/login", body={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})[0] == 200
            streaming, _, _ = open_stream(server, ENDLESS)
            pg.stop()
            streaming.close()  # ends while the database is away
            time.sleep(1)
            status, body = api(server, "POST", "/auth/login", body={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
            assert status == 503 and "state database is unavailable" in body["error"]["message"], (status, body)
            with pytest.raises(adbc_driver_manager.Error) as down:
                rows(server, "SELECT 1 AS one", email=ADMIN_EMAIL, password=ADMIN_PASSWORD)
            assert "UNAVAILABLE" in str(down.value) or "state database" in str(down.value), down.value
            assert "cannot reach the state database postgres://quiver@" in server.log()
            assert s["password"] not in server.log()
            assert "stopped listening for state changes; polling until reconnected" in server.log()
            time.sleep(9)
            pg.start()
            # Back without a restart.
            deadline = time.time() + 10
            while api(server, "POST", "/auth/login", body={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})[0] != 200:
                assert time.time() < deadline, "did not recover:\n" + server.log()[-3000:]
                time.sleep(0.2)
            # The stream that ended meanwhile gives its place back once the database is here.
            def runs():
                try:
                    return rows(server, "SELECT count(*) AS n FROM tpch.nation") == [{"n": 25}]
                except adbc_driver_manager.Error as e:
                    assert "max_concurrent_per_user" in str(e), e
                    return False

            eventually(runs, within=20)
            # It listens for changes again: one made now is heard as it commits.
            admin = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)

            def heard_a_change():
                before = metric(server, "quiver_state_notifications_total")
                group = {"name": f"after-outage-{time.time_ns()}"}
                assert api(server, "POST", "/api/admin/groups", admin, group)[0] == 201
                time.sleep(0.3)
                return metric(server, "quiver_state_notifications_total") > before

            eventually(heard_a_change, within=10)
            assert server.proc.poll() is None
        finally:
            server.stop()


def test_one_replica_runs_the_schedules_and_another_takes_over_when_it_dies():
    """The leader is killed in the middle of a scheduled sync: another replica takes over,
    the old version keeps serving, and the cut-off sync is retried and completes once."""
    import signal

    from test_sync import big_csv

    with postgres_server() as pg, tempfile.TemporaryDirectory() as tmp:
        url = f"postgres://{pg['user']}:{pg['password']}@{pg['host']}:{pg['port']}/{pg['dbname']}"
        env = {"QUIVER_STATE": url, "QUIVER_JWT_SECRET": SECRET}
        src = os.path.join(tmp, "kv.csv")
        with open(src, "w") as f:
            f.write("k,v\n1,a\n2,b\n")
        config = f"storage:\n  object_store: file://{tmp}/objects\nsync:\n  backoff: 1s\n"
        replicas = [Server(["serve"], os.path.join(tmp, name), config=config, env=env) for name in "ab"]
        try:
            token = login(replicas[0], ADMIN_EMAIL, ADMIN_PASSWORD)

            def runs(replica):
                status, runs = api(replica, "GET", "/api/admin/syncs?table=ops.kv&limit=50", token)
                assert status == 200, runs
                return runs

            def count(replica):
                return rows(replica, "SELECT count(*) AS n FROM ops.kv")[0]["n"]

            # Never synced, so due at once: exactly one replica, the leader, runs it, once.
            status, body = api(replicas[1], "POST", "/api/admin/tables", token, {
                "name": "ops.kv", "connector": "files", "options": {"path": src}, "schedule": "every 1m"})
            assert status == 201, body
            eventually(lambda: [r["status"] for r in runs(replicas[1])] == ["succeeded"], within=30)
            leaders = [r for r in replicas if api(r, "GET", "/health")[1]["leader"]]
            assert len(leaders) == 1, [api(r, "GET", "/health")[1] for r in replicas]
            leader = leaders[0]
            other = replicas[1 - replicas.index(leader)]
            assert api(other, "GET", "/health")[1]["replica"] != api(leader, "GET", "/health")[1]["replica"]

            # The source grows; the leader is killed while its next scheduled run is writing.
            big_csv(pathlib.Path(src + ".new"), rows=3_000_000)
            os.replace(src + ".new", src)
            eventually(lambda: runs(other)[0]["status"] == "running", within=90)
            leader.proc.send_signal(signal.SIGKILL)
            leader.proc.wait()
            killed = time.time()
            assert count(other) == 2, "the previous version keeps serving"

            # Another replica takes the lease, marks the run interrupted and retries it once.
            eventually(lambda: api(other, "GET", "/health")[1]["leader"], within=15)
            assert time.time() - killed < 15
            eventually(lambda: runs(other)[0]["status"] == "succeeded", within=60)
            statuses = [r["status"] for r in runs(other)]
            assert statuses == ["succeeded", "interrupted", "succeeded"], statuses
            assert count(other) == 3_000_000
            time.sleep(3)
            assert len(runs(other)) == 3, "the retry ran once"
        finally:
            for r in replicas:
                r.stop()
