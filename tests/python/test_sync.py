"""Connectors and the orchestrator, as an admin meets them: define tables (in quiver.yaml and
through the API), sync them on schedule and on demand, query them with ADBC, read the sync
history and profiles; incremental merges, schema changes, failures and `kill -9` mid-sync."""

from __future__ import annotations

import datetime
import decimal
import json
import os
import pathlib
import signal
import subprocess
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness import (ADMIN_EMAIL, ADMIN_PASSWORD, Server, api, connect, login, metric, on_terminal,
                      quiver_bin, quiver_env)


def wait_run(server: Server, token: str, table: str, run: int | None = None, timeout: float = 120):
    """Waits until the given run (or the table's latest) is no longer running; returns it."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, runs = api(server, "GET", f"/api/admin/syncs?table={table}&limit=20", token)
        assert status == 200, runs
        match = [r for r in runs if run is None or r["id"] == run]
        if match and match[0]["status"] != "running":
            return match[0]
        time.sleep(0.2)
    raise AssertionError(f"sync of {table} did not finish:\n{server.log()}")


def sync(server: Server, token: str, table: str) -> dict:
    status, body = api(server, "POST", f"/api/admin/tables/{table}/sync", token)
    assert status == 202, body
    return wait_run(server, token, table, body["run"])


def rows(server: Server, sql: str):
    conn = connect(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetch_arrow_table()
    finally:
        conn.close()


def yaml_tables(tables: list[dict]) -> str:
    # JSON is YAML: the definitions go into the file exactly as written.
    return "tables:\n" + "".join(f"  - {json.dumps(t)}\n" for t in tables)


@pytest.fixture
def workdir():
    with tempfile.TemporaryDirectory() as tmp:
        yield pathlib.Path(tmp)


def test_csv_from_config_is_sniffed_typed_scheduled_and_profiled(workdir):
    src = workdir / "src"
    src.mkdir()
    (src / "orders.csv").write_text(
        "id;customer;amount;ordered_on;status\n"
        "1;Ada;12,50;03.01.2026;open\n"
        "2;Bob;7,25;04.01.2026;shipped\n"
        "3;Čeněk;1.100,00;05.01.2026;open\n"
    )
    config = yaml_tables([{
        "name": "sales.orders", "connector": "files",
        "options": {"path": str(src / "*.csv"), "date_format": "%d.%m.%Y", "decimal_separator": ",",
                    "thousands_separator": "."},
        "schedule": "every 1h", "description": "Orders from the shop",
    }])
    server = Server(["serve"], str(workdir / "data"), config=config)
    try:
        token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
        # Never synced, so due at once: the scheduler runs it without being asked.
        run = wait_run(server, token, "sales.orders")
        assert run["status"] == "succeeded", run
        assert run["trigger"] == "schedule" and run["rows"] == 3 and run["version"] == 1

        table = rows(server, "SELECT * FROM sales.orders ORDER BY id")
        types = {f.name: f.type for f in table.schema}
        assert types["id"] == pa.int64()
        assert types["amount"] == pa.decimal128(18, 2)  # money stays exact
        assert types["ordered_on"] == pa.date32()
        assert table.column("customer").to_pylist() == ["Ada", "Bob", "Čeněk"]
        assert table.column("ordered_on").to_pylist()[0] == datetime.date(2026, 1, 3)
        assert table.column("amount").to_pylist() == [decimal.Decimal(v) for v in ("12.50", "7.25", "1100.00")]

        status, info = api(server, "GET", "/api/admin/tables/sales.orders", token)
        assert status == 200, info
        assert info["origin"] == "config" and info["version"] == 1
        assert info["description"] == "Orders from the shop"
        assert info["last_sync"]["status"] == "succeeded"
        columns = {c["name"]: c for c in info["profile"]["columns"]}
        assert columns["status"]["distinct"] == 2
        assert columns["status"]["top"][0] == {"value": "open", "count": 2}
        assert columns["id"]["min"] == "1" and columns["id"]["max"] == "3"
        assert columns["customer"]["nulls"] == 0

        # The catalog API shows the profile to readers who see the columns unmasked.
        status, catalog = api(server, "GET", "/api/catalog", token)
        entry = next(t for t in catalog if t["name"] == "sales.orders")
        assert entry["profile"]["rows"] == 3

        # A config-defined table is changed in the file, not through the API.
        status, body = api(server, "DELETE", "/api/admin/tables/sales.orders", token)
        assert status == 409 and "configuration file" in body["error"]["message"]
    finally:
        server.stop()


def test_api_registration_validates_every_field(workdir):
    server = Server(["serve"], str(workdir / "data"))
    try:
        token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
        cases = [
            ({"name": "Bad Name", "connector": "files", "options": {"path": "/x.csv"}}, "`name`"),
            ({"name": "s.t", "connector": "ftp", "options": {}}, "`connector`: `ftp` is not a connector"),
            ({"name": "s.t", "connector": "files", "options": {"path": "/x.csv", "delimeter": ";"}},
             "unknown field `delimeter`"),
            ({"name": "s.t", "connector": "files", "options": {"path": "/x.csv"}, "schedule": "sometimes"},
             "`schedule`"),
            ({"name": "s.t", "connector": "files", "options": {"path": "/x.csv"}, "mode": "incremental"},
             "`watermark`"),
            ({"name": "s.t", "connector": "files",
              "options": {"path": "s3://b/x.csv", "storage_options": {"aws_secret_access_key": "hunter2"}}},
             "`options.storage_options.aws_secret_access_key`: is a secret"),
            ({"name": "s.t", "connector": "sql", "options": {"query": "DROP TABLE x"}}, "`options.query`"),
        ]
        for definition, needle in cases:
            status, body = api(server, "POST", "/api/admin/tables", token, definition)
            assert status == 422, (definition, body)
            assert needle in body["error"]["message"], (needle, body)
        # Nothing half-registered.
        status, tables = api(server, "GET", "/api/admin/tables", token)
        assert tables == []
        status, body = api(server, "POST", "/api/admin/tables/s.nothing/sync", token)
        assert status == 404, body
    finally:
        server.stop()


def test_incremental_merge_added_columns_type_change_and_failures(workdir):
    src = workdir / "src"
    src.mkdir()
    (src / "part1.csv").write_text(
        "id,name,updated_at\n1,alpha,2026-01-01 10:00:00\n2,beta,2026-01-01 11:00:00\n"
    )
    server = Server(["serve"], str(workdir / "data"))
    try:
        token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
        status, body = api(server, "POST", "/api/admin/tables", token, {
            "name": "crm.accounts", "connector": "files", "options": {"path": str(src / "*.csv")},
            "mode": "incremental", "watermark": "updated_at", "primary_key": ["id"],
        })
        assert status == 201, body
        assert body["version"] is None and body["origin"] == "api"
        run = sync(server, token, "crm.accounts")
        assert run["status"] == "succeeded", run
        assert run["trigger"] == "manual" and run["actor"] == ADMIN_EMAIL

        # Row 2 updated, row 3 inserted, and a new column appears.
        (src / "part2.csv").write_text(
            "id,name,updated_at,tier\n2,beta-2,2026-01-02 09:00:00,gold\n3,gamma,2026-01-02 10:00:00,silver\n"
        )
        run = sync(server, token, "crm.accounts")
        assert run["status"] == "succeeded", run
        table = rows(server, "SELECT id, name, tier FROM crm.accounts ORDER BY id")
        assert table.to_pylist() == [
            {"id": 1, "name": "alpha", "tier": None},
            {"id": 2, "name": "beta-2", "tier": "gold"},
            {"id": 3, "name": "gamma", "tier": "silver"},
        ]
        version_before = run["version"]

        # A column changes type: the sync fails, saying which, and version 2 keeps serving.
        (src / "part3.csv").write_text("id,name,updated_at,tier\nx,delta,2026-01-03 10:00:00,1\n")
        run = sync(server, token, "crm.accounts")
        assert run["status"] == "failed", run
        assert "changed type" in run["error"] and "`id`" in run["error"], run
        assert rows(server, "SELECT count(*) AS n FROM crm.accounts").to_pylist() == [{"n": 3}]

        # The source vanishes: the sync fails with a clear error; the table still answers.
        for f in src.iterdir():
            f.unlink()
        run = sync(server, token, "crm.accounts")
        assert run["status"] == "failed" and "no file matches" in run["error"], run
        status, info = api(server, "GET", "/api/admin/tables/crm.accounts", token)
        assert info["version"] == version_before
        assert info["last_sync"]["status"] == "failed"
        assert rows(server, "SELECT count(*) AS n FROM crm.accounts").to_pylist() == [{"n": 3}]

        # The whole history, newest first, is there for admins only.
        status, history = api(server, "GET", "/api/admin/syncs?table=crm.accounts", token)
        assert [r["status"] for r in history] == ["failed", "failed", "succeeded", "succeeded"]
        assert all(r["started_at"] and r["ended_at"] for r in history)
    finally:
        server.stop()


def test_jsonl_parquet_and_sql_tables(workdir):
    src = workdir / "src"
    src.mkdir()
    (src / "events.jsonl").write_text(
        '{"user": "ada", "kind": "login", "n": 1}\n{"user": "bob", "kind": "view", "n": 5}\n'
        '{"user": "ada", "kind": "view", "n": 2}\n'
    )
    pq.write_table(pa.table({"user": ["ada", "bob"], "team": ["red", "blue"]}), src / "users.parquet")
    server = Server(["serve"], str(workdir / "data"))
    try:
        token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
        for definition in [
            {"name": "app.events", "connector": "files", "options": {"path": str(src / "events.jsonl")}},
            {"name": "app.users", "connector": "files", "options": {"path": str(src / "users.parquet")}},
            {"name": "app.views_by_team", "connector": "sql", "options": {"query":
                "SELECT u.team, sum(e.n) AS views FROM app.events e JOIN app.users u ON u.user = e.user "
                "WHERE e.kind = 'view' GROUP BY u.team"}},
        ]:
            status, body = api(server, "POST", "/api/admin/tables", token, definition)
            assert status == 201, body
            run = sync(server, token, definition["name"])
            assert run["status"] == "succeeded", run
        table = rows(server, "SELECT team, views FROM app.views_by_team ORDER BY team")
        assert table.to_pylist() == [{"team": "blue", "views": 5}, {"team": "red", "views": 2}]
        assert rows(server, "SELECT count(*) AS n FROM app.events").to_pylist() == [{"n": 3}]
    finally:
        server.stop()


def test_quiver_sync_command_offline_and_check_config(workdir):
    src = workdir / "src"
    src.mkdir()
    (src / "a.csv").write_text("k,v\n1,x\n2,y\n")
    config_path = workdir / "quiver.yaml"
    config_path.write_text(yaml_tables([
        {"name": "ops.kv", "connector": "files", "options": {"path": str(src / "a.csv")}},
    ]))
    data = str(workdir / "data")
    done = subprocess.run([quiver_bin(), "sync", "ops.kv", "--config", str(config_path), "--data-dir", data],
                          capture_output=True, text=True, timeout=300, env=quiver_env(data))
    assert done.returncode == 0, done.stderr
    assert "ops.kv: version 1 published, 2 rows" in done.stdout

    missing = subprocess.run([quiver_bin(), "sync", "ops.none", "--config", str(config_path), "--data-dir", data],
                             capture_output=True, text=True, timeout=300, env=quiver_env(data))
    assert missing.returncode != 0 and "has no definition" in missing.stderr

    bad = workdir / "bad.yaml"
    bad.write_text(yaml_tables([
        {"name": "ops.kv", "connector": "files", "options": {"path": "/x.csv", "colour": "red"},
         "schedule": "every blue moon"},
    ]))
    checked = subprocess.run([quiver_bin(), "check-config", "--config", str(bad)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode != 0
    assert "`tables[0].schedule`" in checked.stderr and "`tables[0].options.colour`: unknown field" in checked.stderr, checked.stderr

    server = Server(["serve"], data, config=config_path.read_text())
    try:
        assert rows(server, "SELECT count(*) AS n FROM ops.kv").to_pylist() == [{"n": 2}]
        # While the server holds the state file, `quiver sync` goes through its API.
        token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
        cfg = workdir / "via-server.yaml"
        cfg.write_text(f"server:\n  http_listen: {server.http}\n" + config_path.read_text())
        through = subprocess.run([quiver_bin(), "sync", "ops.kv", "--config", str(cfg), "--data-dir", data],
                                 capture_output=True, text=True, timeout=300,
                                 env=quiver_env(data, QUIVER_TOKEN=token))
        assert through.returncode == 0, through.stderr
        assert "ops.kv: version 2 published" in through.stdout
    finally:
        server.stop()


def test_kill_during_sync_keeps_the_previous_version(workdir):
    src = workdir / "src"
    src.mkdir()
    big = big_csv(src / "big.csv")
    config = yaml_tables([{"name": "big.t", "connector": "files", "options": {"path": str(big)}}])
    data = str(workdir / "data")
    objects = pathlib.Path(data) / "objects" / "tables" / "big" / "t"

    done = subprocess.run([quiver_bin(), "sync", "big.t", "--data-dir", data, "--config", str(_write(workdir, config))],
                          capture_output=True, text=True, timeout=600, env=quiver_env(data))
    assert done.returncode == 0, done.stderr
    for delay in (0.3, 1.0, 2.5):
        proc = subprocess.Popen([quiver_bin(), "sync", "big.t", "--data-dir", data, "--config",
                                 str(workdir / "quiver.yaml")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env=quiver_env(data))
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    server = Server(["serve"], data, config=config)
    try:
        assert rows(server, "SELECT count(*) AS n, max(id) AS m FROM big.t").to_pylist() == [
            {"n": 3_000_000, "m": 2_999_999}]
        token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
        # The embedded state's server cleans up as it starts; on a shared state the leader
        # does once the killed processes' heartbeats have lapsed (10 s).
        deadline = time.time() + 30
        while True:
            status, history = api(server, "GET", "/api/admin/syncs?table=big.t", token)
            statuses = [r["status"] for r in history]
            folders = sorted(p.name for p in objects.iterdir())
            if "running" not in statuses and len(folders) == statuses.count("succeeded"):
                break
            assert time.time() < deadline, (statuses, folders, server.log()[-3000:])
            time.sleep(0.5)
        assert statuses[-1] == "succeeded" and statuses.count("succeeded") >= 1
        assert "running" not in statuses
        killed = [r for r in history if r["status"] == "interrupted"]
        assert killed and all("previous version" in r["error"] for r in killed)
        # The folders the killed runs were writing are gone: only committed versions remain.
        status, info = api(server, "GET", "/api/admin/tables/big.t", token)
        folders = sorted(p.name for p in objects.iterdir())
        current = info["location"].rstrip("/").rsplit("/", 1)[1]
        assert current in folders
        assert len(folders) == statuses.count("succeeded"), (folders, statuses)
    finally:
        server.stop()


def _write(workdir: pathlib.Path, config: str) -> pathlib.Path:
    path = workdir / "quiver.yaml"
    path.write_text(config)
    return path


def big_csv(path: pathlib.Path, rows: int = 3_000_000) -> pathlib.Path:
    with open(path, "w") as f:
        f.write("id,name,amount\n")
        f.writelines(f"{i},name-{i % 1000},{i * 0.5}\n" for i in range(rows))
    return path


def test_one_sync_per_table_retention_metrics_and_progress_bar(workdir):
    src = workdir / "src"
    src.mkdir()
    big = big_csv(src / "big.csv")
    config = yaml_tables([{"name": "big.t", "connector": "files", "options": {"path": str(big)}}])
    config += "sync:\n  retention: 1s\n"
    data = str(workdir / "data")
    folders = pathlib.Path(data) / "objects" / "tables" / "big" / "t"

    # `quiver sync` on a terminal draws a progress line with rows and bytes.
    config_file = _write(workdir, config)
    code, screen, out = on_terminal(["sync", "big.t", "--config", str(config_file), "--data-dir", data])
    assert code == 0
    assert b"big.t" in screen and b"rows" in screen and b"written" in screen, screen[-500:]
    assert b"version 1 published, 3000000 rows" in out

    server = Server(["serve"], data, config=config)
    try:
        token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
        status, first = api(server, "POST", "/api/admin/tables/big.t/sync", token)
        assert status == 202, first
        status, second = api(server, "POST", "/api/admin/tables/big.t/sync", token)
        assert status == 409 and "already running" in second["error"]["message"], second
        status, table = api(server, "GET", "/api/admin/tables/big.t", token)
        assert table["last_sync"]["status"] == "running"
        assert wait_run(server, token, "big.t", first["run"])["status"] == "succeeded"
        time.sleep(1.5)
        assert sync(server, token, "big.t")["status"] == "succeeded"
        # Version 1 was replaced more than a second ago: its files are gone. Version 2 was
        # replaced just now and stays readable for running queries; version 3 is current.
        status, history = api(server, "GET", "/api/admin/syncs?table=big.t", token)
        assert len(history) == 3
        # (Removal follows the commit that ends the run: allow it a moment.)
        deadline = time.time() + 10
        while len(list(folders.iterdir())) > 2 and time.time() < deadline:
            time.sleep(0.1)
        assert len(list(folders.iterdir())) == 2
        assert rows(server, "SELECT count(*) AS n FROM big.t").to_pylist() == [{"n": 3_000_000}]

        import urllib.request

        request = urllib.request.Request(f"http://{server.http}/metrics",
                                         headers={"authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request) as response:
            text = response.read().decode()
        assert 'quiver_syncs_total{outcome="succeeded"} 2' in text, text
    finally:
        server.stop()


def test_profiles_in_the_catalog_hide_what_the_grant_hides(workdir):
    src = workdir / "src"
    src.mkdir()
    (src / "people.csv").write_text("id,email,team\n1,ada@x.io,red\n2,bob@x.io,blue\n3,cy@x.io,red\n")
    config = yaml_tables([{"name": "hr.people", "connector": "files",
                           "options": {"path": str(src / "people.csv")}, "schedule": "every 1h"}])
    server = Server(["serve"], str(workdir / "data"), config=config)
    try:
        token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
        assert wait_run(server, token, "hr.people")["status"] == "succeeded"
        users = {"masked@x.io": {"column_masks": {"email": "'***'"}},
                 "filtered@x.io": {"row_filter": "team = 'red'"}}
        for email, grant in users.items():
            group = email.split("@")[0]
            assert api(server, "POST", "/api/admin/users", token, {"email": email, "password": "pw-123456789"})[0] == 201
            assert api(server, "POST", "/api/admin/groups", token, {"name": group})[0] == 201
            assert api(server, "POST", f"/api/admin/groups/{group}/members", token, {"email": email})[0] in (201, 204)
            status, body = api(server, "POST", "/api/admin/grants", token, {"group": group, "table": "hr.people", **grant})
            assert status == 201, body

        def profile_of(email):
            status, catalog = api(server, "GET", "/api/catalog", login(server, email, "pw-123456789"))
            assert status == 200, catalog
            return next(t for t in catalog if t["name"] == "hr.people")["profile"]

        masked = profile_of("masked@x.io")
        assert [c["name"] for c in masked["columns"]] == ["id", "team"]  # no statistics of real e-mails
        assert "ada@x.io" not in json.dumps(masked)
        assert profile_of("filtered@x.io") is None  # would describe rows the filter hides
    finally:
        server.stop()


def test_a_running_query_finishes_on_the_version_it_started_with(workdir):
    src = workdir / "src"
    src.mkdir()
    big = big_csv(src / "t.csv")
    config = yaml_tables([{"name": "live.t", "connector": "files", "options": {"path": str(big)}}])
    server = Server(["serve"], str(workdir / "data"), config=config)
    try:
        token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
        assert sync(server, token, "live.t")["status"] == "succeeded"
        conn = connect(server, ADMIN_EMAIL, ADMIN_PASSWORD)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT id FROM live.t")
                reader = cur.fetch_record_batch()
                seen = reader.read_next_batch().num_rows
                # Version 2 replaces the table with ten rows while the scan is under way.
                big.write_text("id,name,amount\n" + "".join(f"{i},n,1\n" for i in range(10)))
                assert sync(server, token, "live.t")["status"] == "succeeded"
                for batch in reader:
                    seen += batch.num_rows
            assert seen == 3_000_000
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM live.t")
                assert cur.fetchone()[0] == 10
        finally:
            conn.close()
    finally:
        server.stop()


def test_a_table_held_in_memory_switches_versions_atomically_under_readers(workdir):
    """With `query.acceleration_memory`, a hot table is served from memory; a new version is
    never hidden behind the old copy, and no reader sees a mix of the two."""
    import threading

    src = workdir / "src"
    src.mkdir()
    csv = src / "t.csv"
    version = lambda v: "id,v\n" + "".join(f"{i},{v}\n" for i in range(50_000))  # noqa: E731
    csv.write_text(version(1))
    config = yaml_tables([{"name": "hot.t", "connector": "files", "options": {"path": str(csv)}}])
    config += "query:\n  acceleration_memory: 256MiB\n"
    server = Server(["serve"], str(workdir / "data"), config=config)
    statement = "SELECT count(*) AS n, min(v) AS lo, max(v) AS hi FROM hot.t"
    try:
        token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
        assert sync(server, token, "hot.t")["status"] == "succeeded"
        for _ in range(3):
            assert rows(server, statement).to_pylist() == [{"n": 50_000, "lo": 1, "hi": 1}]
        deadline = time.time() + 30
        while "table held in memory" not in server.log() and time.time() < deadline:
            time.sleep(0.1)
        assert "table held in memory" in server.log(), server.log()
        assert rows(server, "SELECT sum(id) AS s FROM hot.t WHERE v = 1").to_pylist() == [{"s": 49_999 * 50_000 // 2}]

        seen, errors, stop = [], [], threading.Event()

        def reader():
            conn = connect(server, ADMIN_EMAIL, ADMIN_PASSWORD)
            try:
                while not stop.is_set():
                    with conn.cursor() as cur:
                        cur.execute(statement)
                        seen.append(cur.fetch_arrow_table().to_pylist()[0])
            except Exception as e:  # noqa: BLE001
                errors.append(e)
            finally:
                conn.close()

        readers = [threading.Thread(target=reader) for _ in range(3)]
        for r in readers:
            r.start()
        csv.write_text(version(2))
        assert sync(server, token, "hot.t")["status"] == "succeeded"
        # Every statement planned after the commit reads version 2, copy or not.
        assert rows(server, statement).to_pylist() == [{"n": 50_000, "lo": 2, "hi": 2}]
        time.sleep(1)
        stop.set()
        for r in readers:
            r.join(30)
        assert not errors, errors
        assert {(s["lo"], s["hi"]) for s in seen} <= {(1, 1), (2, 2)}, seen
        assert all(s["n"] == 50_000 for s in seen)
        assert seen[-1] == {"n": 50_000, "lo": 2, "hi": 2}
        # Version 2 gets its own copy once it is hot, and the answers stay the same.
        deadline = time.time() + 30
        while server.log().count("table held in memory") < 2 and time.time() < deadline:
            rows(server, statement)
            time.sleep(0.1)
        assert server.log().count("table held in memory") >= 2, server.log()
        assert rows(server, statement).to_pylist() == [{"n": 50_000, "lo": 2, "hi": 2}]
    finally:
        server.stop()


def test_a_repeated_statement_is_answered_from_memory_until_its_table_changes(workdir):
    """The results cache: the same statement on the same table version is answered from
    memory; a new version is read at once; a statement with `now()` or `random()` is never
    kept; `query.results_cache_memory: 0` keeps nothing."""
    src = workdir / "src"
    src.mkdir()
    csv = src / "t.csv"
    csv.write_text("id,v\n1,10\n2,20\n")
    config = yaml_tables([{"name": "cached.t", "connector": "files", "options": {"path": str(csv)}}])
    statement = "SELECT sum(v) AS s FROM cached.t"
    hits = 'quiver_results_cache_total{outcome="hit"}'
    server = Server(["serve"], str(workdir / "data"), config=config)
    try:
        token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
        assert sync(server, token, "cached.t")["status"] == "succeeded"
        assert rows(server, statement).to_pylist() == [{"s": 30}]
        before = metric(server, hits)
        assert rows(server, statement).to_pylist() == [{"s": 30}]
        assert metric(server, hits) == before + 1

        csv.write_text("id,v\n1,10\n2,20\n3,30\n")
        assert sync(server, token, "cached.t")["status"] == "succeeded"
        assert rows(server, statement).to_pylist() == [{"s": 60}]
        assert metric(server, hits) == before + 1
        assert rows(server, statement).to_pylist() == [{"s": 60}]
        assert metric(server, hits) == before + 2

        for changing in ["SELECT sum(v) AS s, now() AS at FROM cached.t",
                         "SELECT sum(v) + random() AS s FROM cached.t"]:
            first, second = rows(server, changing), rows(server, changing)
            assert first.column("s") != second.column("s") or "now()" in changing
        assert metric(server, hits) == before + 2
    finally:
        server.stop()

    server = Server(["serve"], str(workdir / "data"), config=config + "query:\n  results_cache_memory: 0\n")
    try:
        for _ in range(2):
            assert rows(server, statement).to_pylist() == [{"s": 60}]
        assert metric(server, hits) == 0
    finally:
        server.stop()


def test_failed_schedules_retry_with_backoff_and_syncs_share_a_global_limit(workdir):
    src = workdir / "src"
    src.mkdir()
    late = src / "late.csv"
    a, b = big_csv(src / "a.csv", 1_000_000), big_csv(src / "b.csv", 1_000_000)
    config = yaml_tables([
        {"name": "flaky.t", "connector": "files", "options": {"path": str(late)}, "schedule": "every 1h"},
        {"name": "lim.a", "connector": "files", "options": {"path": str(a)}},
        {"name": "lim.b", "connector": "files", "options": {"path": str(b)}},
    ]) + "sync:\n  concurrency: 1\n  backoff: 1s\n  max_backoff: 2s\n"
    server = Server(["serve"], str(workdir / "data"), config=config)
    try:
        token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
        # The file is not there yet: the first scheduled run fails, then retries follow.
        deadline = time.time() + 60
        while time.time() < deadline:
            status, history = api(server, "GET", "/api/admin/syncs?table=flaky.t", token)
            if len([r for r in history if r["status"] == "failed"]) >= 3:
                break
            time.sleep(0.5)
        failed = [r for r in reversed(history) if r["status"] == "failed"]
        assert len(failed) >= 3, history
        assert failed[0]["trigger"] == "schedule" and {r["trigger"] for r in failed[1:]} == {"retry"}
        late.write_text("k\n1\n")
        deadline = time.time() + 60
        while time.time() < deadline:
            status, history = api(server, "GET", "/api/admin/syncs?table=flaky.t&limit=1", token)
            if history[0]["status"] == "succeeded":
                break
            time.sleep(0.5)
        assert history[0]["status"] == "succeeded" and history[0]["trigger"] == "retry", history

        # With `concurrency: 1` the second sync starts only when the first has ended.
        runs = [api(server, "POST", f"/api/admin/tables/{t}/sync", token)[1]["run"] for t in ("lim.a", "lim.b")]
        for table, run in zip(("lim.a", "lim.b"), runs):
            assert wait_run(server, token, table, run)["status"] == "succeeded"
        lines = server.log_lines

        def line_of(message, table):
            return next(i for i, line in enumerate(lines) if message in line and f"table={table}" in line)

        assert line_of("sync started", "lim.b") > line_of("sync succeeded", "lim.a"), "\n".join(lines[-40:])
    finally:
        server.stop()


def test_files_from_an_https_url(workdir, monkeypatch):
    import http.server
    import ssl
    import threading

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    ca_file = workdir / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    served = workdir / "www"
    served.mkdir()
    (served / "rates.csv").write_text("currency,rate\nEUR,1.0\nCZK,24.3\n")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    cert.configure_cert(context)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    # The server trusts the test CA the way it would a company CA: through SSL_CERT_FILE.
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    url = f"https://127.0.0.1:{httpd.server_address[1]}"
    server = Server(["serve"], str(workdir / "data"))
    try:
        token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
        for name, path in [("fx.rates", "rates.csv"), ("fx.missing", "nope.csv")]:
            status, body = api(server, "POST", "/api/admin/tables", token, {
                "name": name, "connector": "files", "options": {"path": f"{url}/{path}"}})
            assert status == 201, body
        assert sync(server, token, "fx.rates")["status"] == "succeeded"
        table = rows(server, "SELECT currency, rate FROM fx.rates ORDER BY currency")
        assert table.column("currency").to_pylist() == ["CZK", "EUR"]
        run = sync(server, token, "fx.missing")
        assert run["status"] == "failed" and "404" in run["error"], run
    finally:
        server.stop()
        httpd.shutdown()


def test_sql_tables_incremental_and_failing(workdir):
    src = workdir / "src"
    src.mkdir()
    (src / "1.csv").write_text("id,name,updated_at\n1,a,2026-01-01 00:00:00\n2,b,2026-01-01 00:00:00\n")
    server = Server(["serve"], str(workdir / "data"))
    try:
        token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
        for definition in [
            {"name": "raw.items", "connector": "files", "options": {"path": str(src / "*.csv")}},
            {"name": "mart.items", "connector": "sql", "mode": "incremental", "watermark": "updated_at",
             "primary_key": ["id"], "options": {"query": "SELECT id, upper(name) AS name, updated_at FROM raw.items"}},
        ]:
            assert api(server, "POST", "/api/admin/tables", token, definition)[0] == 201
        for table in ("raw.items", "mart.items"):
            assert sync(server, token, table)["status"] == "succeeded"
        (src / "2.csv").write_text("id,name,updated_at\n2,bee,2026-01-02 00:00:00\n3,c,2026-01-02 00:00:00\n")
        for table in ("raw.items", "mart.items"):
            assert sync(server, token, table)["status"] == "succeeded"
        assert rows(server, "SELECT id, name FROM mart.items ORDER BY id").to_pylist() == [
            {"id": 1, "name": "A"}, {"id": 2, "name": "BEE"}, {"id": 3, "name": "C"}]

        # Its source table is deleted: the sync fails saying so; the last version stays.
        assert api(server, "DELETE", "/api/admin/tables/raw.items", token)[0] == 204
        run = sync(server, token, "mart.items")
        assert run["status"] == "failed" and "raw.items" in run["error"], run
        assert rows(server, "SELECT count(*) AS n FROM mart.items").to_pylist() == [{"n": 3}]
    finally:
        server.stop()
