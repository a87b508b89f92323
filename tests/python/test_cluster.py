"""Replicas on one PostgreSQL state database and one object store: what one replica issues or
changes holds on the others, and `quiver admin` works beside them."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time

import adbc_driver_manager
import pyarrow.flight as flight
import pytest

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Server, api, connect, login, on_postgres, quiver_bin
from pgserver import postgres_server
from test_clients import statement_command

# The PostgreSQL pass of the suite runs every server on PostgreSQL already; this file starts
# its own cluster and needs to run only once.
pytestmark = pytest.mark.skipif(on_postgres(), reason="runs in the embedded-state pass")

SECRET = "cluster-secret-shared-by-every-replica-0123456789"
PASSWORD = "replica-user-password"


@pytest.fixture(scope="module")
def cluster():
    """Replica A (which generated the demo data) and replica B, sharing state and objects."""
    with postgres_server() as pg, tempfile.TemporaryDirectory() as tmp:
        url = f"postgres://{pg['user']}:{pg['password']}@{pg['host']}:{pg['port']}/{pg['dbname']}"
        env = {"QUIVER_STATE": url, "QUIVER_JWT_SECRET": SECRET}
        config = f"storage:\n  object_store: file://{tmp}/objects\n"
        a = Server(["demo", "--scale", "0.01"], os.path.join(tmp, "a"), config=config, env=env)
        b = Server(["serve"], os.path.join(tmp, "b"), config=config, env=env)
        try:
            yield a, b, env, tmp
        finally:
            a.stop()
            b.stop()


def rows(server, sql, **who):
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
    a, b, _, _ = cluster
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
    a, b, _, _ = cluster
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

    assert api(a, "DELETE", f"/api/admin/grants/{grant['id']}", admin)[0] == 204

    def refused_on_b():
        try:
            rows(b, query, token=token)
            return False
        except adbc_driver_manager.Error as e:
            return "not found" in str(e)

    eventually(refused_on_b, within=1.0)

    # Signing out on A ends the bearer on B.
    assert api(a, "POST", "/auth/logout", token)[0] in (200, 204)

    def signed_out_on_b():
        try:
            rows(b, "SELECT 1 AS one", token=token)
            return False
        except adbc_driver_manager.Error as e:
            return "UNAUTHENTICATED" in str(e) or "Unauthenticated" in str(e)

    eventually(signed_out_on_b, within=1.0)


def test_quiver_admin_works_beside_running_replicas(cluster):
    a, b, env, tmp = cluster
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


def test_an_unreachable_state_database_is_named_without_its_password(cluster):
    _, _, _, tmp = cluster
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

    _, _, env, tmp = cluster
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
        server = Server(["demo", "--scale", "0.01"], os.path.join(tmp, "data"), env=env)
        try:
            assert api(server, "POST", "/auth/login", body={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})[0] == 200
            pg.stop()
            time.sleep(1)
            status, body = api(server, "POST", "/auth/login", body={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
            assert status == 503 and "state database is unavailable" in body["error"]["message"], (status, body)
            with pytest.raises(adbc_driver_manager.Error) as down:
                rows(server, "SELECT 1 AS one", email=ADMIN_EMAIL, password=ADMIN_PASSWORD)
            assert "UNAVAILABLE" in str(down.value) or "state database" in str(down.value), down.value
            assert "cannot reach the state database postgres://quiver@" in server.log()
            assert s["password"] not in server.log()
            time.sleep(9)
            pg.start()
            # Back without a restart.
            deadline = time.time() + 10
            while api(server, "POST", "/auth/login", body={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})[0] != 200:
                assert time.time() < deadline, "did not recover:\n" + server.log()[-3000:]
                time.sleep(0.2)
            assert rows(server, "SELECT count(*) AS n FROM tpch.nation", email=ADMIN_EMAIL,
                        password=ADMIN_PASSWORD) == [{"n": 25}]
            assert server.proc.poll() is None
        finally:
            server.stop()


def test_one_replica_runs_the_schedules_and_another_takes_over_when_it_dies():
    import signal

    with postgres_server() as pg, tempfile.TemporaryDirectory() as tmp:
        url = f"postgres://{pg['user']}:{pg['password']}@{pg['host']}:{pg['port']}/{pg['dbname']}"
        env = {"QUIVER_STATE": url, "QUIVER_JWT_SECRET": SECRET}
        src = os.path.join(tmp, "kv.csv")
        with open(src, "w") as f:
            f.write("k,v\n1,a\n2,b\n")
        config = f"storage:\n  object_store: file://{tmp}/objects\n"
        replicas = [Server(["serve"], os.path.join(tmp, name), config=config, env=env) for name in "ab"]
        try:
            token = login(replicas[0], ADMIN_EMAIL, ADMIN_PASSWORD)

            def scheduled_runs(replica, table):
                status, runs = api(replica, "GET", f"/api/admin/syncs?table={table}&limit=50", token)
                assert status == 200, runs
                return [r for r in runs if r["trigger"] == "schedule"]

            def define(replica, table):
                status, body = api(replica, "POST", "/api/admin/tables", token, {
                    "name": table, "connector": "files", "options": {"path": src}, "schedule": "every 1h"})
                assert status == 201, body

            # Never synced, so due at once: exactly one replica runs it, once.
            define(replicas[1], "ops.first")
            eventually(lambda: any(r["status"] == "succeeded" for r in scheduled_runs(replicas[1], "ops.first")),
                       within=30)
            time.sleep(5)
            assert len(scheduled_runs(replicas[0], "ops.first")) == 1
            leaders = [r for r in replicas if "now runs schedules and background jobs" in r.log()]
            assert len(leaders) == 1, [r.log()[-2000:] for r in replicas]
            leader = leaders[0]
            other = replicas[1 - replicas.index(leader)]

            # The leader dies; the other takes over within 15 s and runs the next one.
            leader.proc.send_signal(signal.SIGKILL)
            leader.proc.wait()
            killed = time.time()
            define(other, "ops.second")
            took = eventually(lambda: any(r["status"] == "succeeded" for r in scheduled_runs(other, "ops.second")),
                              within=30)
            assert time.time() - killed < 15 + 5, took
            assert "now runs schedules and background jobs" in other.log()
            assert rows(other, "SELECT count(*) AS n FROM ops.first", email=ADMIN_EMAIL,
                        password=ADMIN_PASSWORD) == [{"n": 2}]
        finally:
            for r in replicas:
                r.stop()
