"""A soak of a running Quiver: many well-behaved clients (point lookups, TPC-H Q1, full scans,
slow readers, clients that disconnect mid-stream) and one attacker sending the statements
that used to crash or stall the server, for a bounded time, on loopback only.

`run_soak` is used by `test_soak.py` (short) and `benches/soak.py` (the long run whose
figures go to benches/RESULTS.md)."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import random
import signal
import threading
import time
import uuid

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow.flight as flight

from harness import ADMIN_EMAIL, ADMIN_PASSWORD, Server, api, login
from test_clients import statement_command

PASSWORD = "soak password 123"
QUERIES = json.loads((pathlib.Path(__file__).resolve().parents[2] / "benches" / "queries.json").read_text())
ATTACKS = [
    "SELECT " + " + ".join(["1"] * 2000),
    "SELECT count(*) FROM generate_series(1, 10) WHERE " + " OR ".join(f"value = {i}" for i in range(3000)),
    " UNION ALL ".join(["SELECT 1"] * 3000),
    "SELECT " + "(" * 5000 + "1" + ")" * 5000,
    "WITH " + ", ".join(["t0 AS (SELECT 1 AS x)"] + [
        f"t{i} AS (SELECT x FROM t{i - 1} UNION ALL SELECT x FROM t{i - 1})" for i in range(1, 20)])
    + " SELECT count(*) FROM t19",
    "SELECT length(repeat('x', 536870912))",
    "SELECT cardinality(range(1, 10000000000))",
    "SELECT * FROM tpch.lineitem, tpch.lineitem AS b",  # ungranted for the attacker
    "SELECT * FROM information_schema.df_settings",
]


@dataclasses.dataclass
class Report:
    seconds: float
    clients: int
    statements: int = 0
    errors: list[str] = dataclasses.field(default_factory=list)
    attacks: int = 0
    attack_failures: list[str] = dataclasses.field(default_factory=list)
    lookups: list[float] = dataclasses.field(default_factory=list)
    idle_lookups: list[float] = dataclasses.field(default_factory=list)
    rss_before: int = 0
    rss_peak: int = 0
    rss_after: int = 0
    crashed: bool = False

    def p(self, q: float, idle: bool = False) -> float:
        ordered = sorted(self.idle_lookups if idle else self.lookups)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")

    def summary(self) -> str:
        return (f"{self.clients} clients, {self.seconds:.0f} s: {self.statements} statements, "
                f"{len(self.errors)} errors, {self.attacks} attacks ({len(self.attack_failures)} unclean), "
                f"point lookup p50 {self.p(0.5) * 1000:.1f} ms p99 {self.p(0.99) * 1000:.1f} ms "
                f"(n={len(self.lookups)}; idle, same run: p50 {self.p(0.5, True) * 1000:.1f} ms "
                f"p99 {self.p(0.99, True) * 1000:.1f} ms), RSS before {self.rss_before >> 20} MiB, "
                f"peak {self.rss_peak >> 20} MiB, after {self.rss_after >> 20} MiB, crashed={self.crashed}")


def prepare_users(server: Server, count: int) -> list[str]:
    """`count` users in one group granted tpch.nation, tpch.orders and tpch.lineitem
    (each client signs in as its own user, so per-user caps do not interfere)."""
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    group = f"soak_{uuid.uuid4().hex[:6]}"
    assert api(server, "POST", "/api/admin/groups", token, {"name": group})[0] == 201
    for table in ["tpch.orders", "tpch.lineitem", "tpch.nation"]:
        status, body = api(server, "POST", "/api/admin/grants", token, {"group": group, "table": table})
        assert status == 201, body
    users = []
    for i in range(count):
        email = f"soak-{i}-{uuid.uuid4().hex[:4]}@example.com"
        assert api(server, "POST", "/api/admin/users", token, {"email": email, "password": PASSWORD})[0] == 201
        status, body = api(server, "POST", f"/api/admin/groups/{group}/members", token, {"email": email})
        assert status in (200, 201, 204), body
        users.append(email)
    return users


def run_soak(server: Server, clients: int, seconds: float, seed: int = 7) -> Report:
    # Readers here go away on purpose; pyarrow takes a CANCELLED status for Ctrl-C and
    # simulates one in the main thread, so SIGINT is ignored meanwhile.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        return _run_soak(server, clients, seconds, seed)
    finally:
        signal.signal(signal.SIGINT, previous)


def _run_soak(server: Server, clients: int, seconds: float, seed: int) -> Report:
    report = Report(seconds=seconds, clients=clients)
    users = prepare_users(server, clients)
    # The attacker has an account but no grants at all.
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    attacker = f"attacker-{uuid.uuid4().hex[:6]}@example.com"
    assert api(server, "POST", "/api/admin/users", token, {"email": attacker, "password": PASSWORD})[0] == 201
    lock = threading.Lock()
    stop_at = time.time() + seconds
    report.rss_before = report.rss_peak = server.rss_bytes()
    max_order = 1500 * 10  # orders keys of the smallest scale

    def record(error: str | None = None, lookup: float | None = None):
        with lock:
            report.statements += 1
            if error:
                report.errors.append(error)
            if lookup is not None:
                report.lookups.append(lookup)

    def adbc(email: str):
        return flight_sql.connect(server.uri, db_kwargs={"username": email, "password": PASSWORD},
                                  autocommit=True)

    def point_lookups(email: str, rng: random.Random):
        with adbc(email) as conn:
            while time.time() < stop_at:
                started = time.perf_counter()
                try:
                    with conn.cursor() as cur:
                        cur.execute("SELECT * FROM tpch.orders WHERE o_orderkey = ?",
                                    parameters=(rng.randrange(1, max_order),))
                        cur.fetch_arrow_table()
                    record(lookup=time.perf_counter() - started)
                except Exception as e:  # noqa: BLE001 - every failure is counted
                    record(error=f"lookup: {e}")

    def repeatedly(name: str, sql: str, check):
        def client(email: str, rng: random.Random):
            with adbc(email) as conn:
                while time.time() < stop_at:
                    try:
                        with conn.cursor() as cur:
                            cur.execute(sql)
                            assert check(cur.fetch_arrow_table()), name
                        record()
                    except Exception as e:  # noqa: BLE001
                        record(error=f"{name}: {e}")
        return client

    q1 = repeatedly("q1", QUERIES["q1"], lambda t: t.num_rows == 4)
    scans = repeatedly("scan", "SELECT * FROM tpch.lineitem", lambda t: t.num_rows > 0)

    def flight_reader(email: str, rng: random.Random, slow: bool):
        client = flight.FlightClient(server.uri)
        options = flight.FlightCallOptions(headers=[client.authenticate_basic_token(email, PASSWORD)])
        while time.time() < stop_at:
            try:
                info = client.get_flight_info(
                    flight.FlightDescriptor.for_command(statement_command("SELECT * FROM tpch.lineitem")), options)
                reader = client.do_get(info.endpoints[0].ticket, options)
                for i, _ in enumerate(reader):
                    if slow:
                        time.sleep(0.05)
                    elif i == 2:
                        reader.cancel()  # goes away mid-stream
                        break
                    if time.time() > stop_at:
                        reader.cancel()
                        break
                record()
            except Exception as e:  # noqa: BLE001
                record(error=f"{'slow' if slow else 'disconnect'}: {e}")
        client.close()

    def attack(email: str, rng: random.Random):
        with adbc(email) as conn:
            while time.time() < stop_at:
                sql = rng.choice(ATTACKS)
                try:
                    with conn.cursor() as cur:
                        cur.execute(sql)
                        cur.fetch_arrow_table()
                    failure = f"attack succeeded: {sql[:80]}"
                except Exception as e:  # noqa: BLE001
                    text = str(e)
                    clean = any(code in text for code in ("INVALID_ARGUMENT", "InvalidArgument", "RESOURCE_EXHAUSTED",
                                                          "ResourceExhausted", "NOT_FOUND", "NotFound"))
                    failure = None if clean else f"{sql[:60]}: {text[:300]}"
                with lock:
                    report.attacks += 1
                    if failure:
                        report.attack_failures.append(failure)

    # The reference: the same lookups on the idle server, before the load starts.
    with adbc(users[0]) as conn:
        rng = random.Random(seed)
        for _ in range(50):
            started = time.perf_counter()
            with conn.cursor() as cur:
                cur.execute("SELECT * FROM tpch.orders WHERE o_orderkey = ?", parameters=(rng.randrange(1, max_order),))
                cur.fetch_arrow_table()
            report.idle_lookups.append(time.perf_counter() - started)
    kinds = [point_lookups, point_lookups, q1, scans,
             lambda e, r: flight_reader(e, r, True), lambda e, r: flight_reader(e, r, False)]
    threads = [threading.Thread(target=kinds[i % len(kinds)], args=(email, random.Random(seed + i)))
               for i, email in enumerate(users)]
    threads.append(threading.Thread(target=attack, args=(attacker, random.Random(seed))))
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        if server.proc.poll() is not None:
            report.crashed = True
            break
        report.rss_peak = max(report.rss_peak, server.rss_bytes())
        time.sleep(0.25)
    for t in threads:
        t.join(120)
    if server.proc.poll() is None:
        time.sleep(2)
        report.rss_after = server.rss_bytes()
    else:
        report.crashed = True
    return report
