"""Cluster benchmark: the same server on the embedded DuckDB state and on PostgreSQL state,
and one, then three replicas serving concurrent scans; in one run.

    make bench-cluster              # scale 0.1
    python benches/cluster.py --scale 1 --runs 50

Measured:
- point lookup on tpch.orders through ADBC on a warm connection (median of --runs), and
  the same with a new connection (Basic handshake) each time: embedded vs PostgreSQL state;
- sign-ins per second through `POST /auth/login` (argon2id verification included), one
  client after another: embedded vs PostgreSQL state;
- three clients scanning tpch.lineitem at once, all on one replica vs one per replica
  (rows/s over the three);
- one client scanning tpch.lineitem in parts (endpoints; the replicas spread scans past an
  8 MiB threshold here): every part fetched from the replica that planned it vs each from
  the replica it names first, both with pyarrow fetching the parts at once; the same scan
  through ADBC; and through ADBC from a replica that does not split (one endpoint).
All replicas share this machine's cores, so this measures the coordination cost, not the
scaling a cluster of machines gets.
Prints ratios; copy the table into benches/RESULTS.md with the command.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time

import adbc_driver_flightsql.dbapi as flight_sql

from harness import ADMIN_EMAIL, ADMIN_PASSWORD, Server, api
from pgserver import free_port, postgres_server
from test_clients import statement_command

SECRET = "bench-cluster-secret-0123456789abcdef"
POINT = "SELECT o_orderkey, o_totalprice FROM tpch.orders WHERE o_orderkey = 36"


def connect(server):
    return flight_sql.connect(server.uri, db_kwargs={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
                              autocommit=True)


def point_lookups(server, runs: int) -> tuple[float, float]:
    """Median seconds of a point lookup on a warm connection, and with a new connection."""
    warm, cold = [], []
    with connect(server) as conn:
        for _ in range(runs):
            started = time.perf_counter()
            with conn.cursor() as cur:
                cur.execute(POINT)
                cur.fetch_arrow_table()
            warm.append(time.perf_counter() - started)
    for _ in range(max(runs // 5, 3)):
        started = time.perf_counter()
        with connect(server) as conn, conn.cursor() as cur:
            cur.execute(POINT)
            cur.fetch_arrow_table()
        cold.append(time.perf_counter() - started)
    return statistics.median(warm), statistics.median(cold)


def sign_in_rate(server, runs: int) -> float:
    started = time.perf_counter()
    for _ in range(runs):
        status, _ = api(server, "POST", "/auth/login", body={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        assert status == 200
    return runs / (time.perf_counter() - started)


def concurrent_scans(servers: list) -> float:
    """Rows per second of three clients each scanning lineitem at once, client i on
    servers[i % len(servers)]."""
    counts = [0, 0, 0]

    def scan(i):
        with connect(servers[i % len(servers)]) as conn, conn.cursor() as cur:
            cur.execute("SELECT * FROM tpch.lineitem")
            counts[i] = cur.fetch_arrow_table().num_rows

    threads = [threading.Thread(target=scan, args=(i,)) for i in range(3)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - started)


def scan_in_parts(planner, replicas: list, spread: bool) -> float:
    """Rows per second of one client fetching `SELECT * FROM tpch.lineitem` planned on
    `planner`, its parts at once (one thread each): from `planner`, or (`spread`) each from
    the replica its endpoint names first."""
    import pyarrow.flight as flight

    by_uri = {f"grpc://{r.flight}": r for r in replicas}
    client = flight.FlightClient(planner.uri)
    options = flight.FlightCallOptions(headers=[client.authenticate_basic_token(ADMIN_EMAIL, ADMIN_PASSWORD)])
    started = time.perf_counter()
    info = client.get_flight_info(
        flight.FlightDescriptor.for_command(statement_command("SELECT * FROM tpch.lineitem")), options)
    counts = [0] * len(info.endpoints)

    def fetch(i, endpoint):
        first = endpoint.locations[0].uri.decode() if endpoint.locations else ""
        server = by_uri.get(first, planner) if spread else planner
        part = flight.FlightClient(server.uri)
        counts[i] = part.do_get(endpoint.ticket, options).read_all().num_rows
        part.close()

    threads = [threading.Thread(target=fetch, args=(i, e)) for i, e in enumerate(info.endpoints)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    client.close()
    return sum(counts) / (time.perf_counter() - started)


def adbc_scan(server) -> float:
    """Rows per second of one ADBC client scanning lineitem on `server`."""
    started = time.perf_counter()
    with connect(server) as conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM tpch.lineitem")
        rows = cur.fetch_arrow_table().num_rows
    return rows / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", default="0.1")
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    results: dict[str, float] = {}
    with postgres_server() as pg, tempfile.TemporaryDirectory() as tmp:
        url = f"postgres://{pg['user']}:{pg['password']}@{pg['host']}:{pg['port']}/{pg['dbname']}"
        shared = {"QUIVER_STATE": url, "QUIVER_JWT_SECRET": SECRET}
        embedded = {"QUIVER_STATE": "", "QUIVER_JWT_SECRET": ""}
        objects = f"storage:\n  object_store: file://{tmp}/objects\n"
        # Both servers up at once, measured in alternating rounds, so a noisy moment of the
        # machine hits both alike.
        servers = {name: Server(["demo", "--scale", args.scale], os.path.join(tmp, name),
                                config=f"storage:\n  object_store: file://{tmp}/objects-{name}\n", env=env)
                   for name, env in (("embedded", embedded), ("postgres", shared))}
        try:
            samples: dict[str, list[float]] = {}
            for server in servers.values():
                point_lookups(server, 5)  # warm up caches and files
            for _ in range(5):
                for name, server in servers.items():
                    warm, cold = point_lookups(server, max(args.runs // 5, 5))
                    samples.setdefault(f"{name}/point_lookup_warm_ms", []).append(warm * 1000)
                    samples.setdefault(f"{name}/point_lookup_new_connection_ms", []).append(cold * 1000)
                    samples.setdefault(f"{name}/sign_ins_per_s", []).append(sign_in_rate(server, 10))
            for key in sorted(samples, key=lambda k: (k.split("/")[1], k)):
                results[key] = statistics.median(samples[key])
        finally:
            for server in servers.values():
                server.stop()

        # A fresh database for the cluster: the first replica generates the demo data.
        cluster = dict(shared, QUIVER_STATE=url.rsplit("/", 1)[0] + "/cluster")
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE cluster")
        replicas = []
        for i in range(3):
            port = free_port()
            config = (objects + f"server:\n  advertise: grpc://127.0.0.1:{port}\n"
                      "query:\n  distributed_threshold: 8 MiB\n")
            replicas.append(Server(["demo", "--scale", args.scale] if i == 0 else ["serve"],
                                   os.path.join(tmp, f"r{i}"), config=config, env=cluster,
                                   flight_listen=f"127.0.0.1:{port}"))
        # Not advertised: no parts, the result is one endpoint.
        whole = Server(["serve"], os.path.join(tmp, "whole"), config=objects, env=cluster)
        try:
            time.sleep(1)  # the replicas see each other (they read the live ones every 250 ms)
            concurrent_scans(replicas[:1])  # warm up
            results["scan_3_clients/one_replica_rows_per_s"] = statistics.median(
                concurrent_scans(replicas[:1]) for _ in range(3))
            results["scan_3_clients/three_replicas_rows_per_s"] = statistics.median(
                concurrent_scans(replicas) for _ in range(3))
            for _ in range(2):
                scan_in_parts(replicas[0], replicas, spread=True)  # warm up
            samples = {}
            for _ in range(5):
                for key, measure in (
                        ("scan_1_client/one_endpoint_adbc_rows_per_s", lambda: adbc_scan(whole)),
                        ("scan_1_client/parts_adbc_rows_per_s", lambda: adbc_scan(replicas[0])),
                        ("scan_1_client/parts_from_one_replica_rows_per_s",
                         lambda: scan_in_parts(replicas[0], replicas, spread=False)),
                        ("scan_1_client/parts_from_three_replicas_rows_per_s",
                         lambda: scan_in_parts(replicas[0], replicas, spread=True))):
                    samples.setdefault(key, []).append(measure())
            for key, values in samples.items():
                results[key] = statistics.median(values)
        finally:
            for r in replicas + [whole]:
                r.stop()

    print("| measurement | value |\n| --- | ---: |")
    for key, value in results.items():
        print(f"| {key} | {value:,.1f} |")
    print()
    print("| ratio | value |\n| --- | ---: |")
    for what in ("point_lookup_warm_ms", "point_lookup_new_connection_ms"):
        print(f"| {what}: postgres / embedded | {results['postgres/' + what] / results['embedded/' + what]:.2f}× |")
    print(f"| sign-in rate: postgres / embedded | "
          f"{results['postgres/sign_ins_per_s'] / results['embedded/sign_ins_per_s']:.2f}× |")
    print(f"| 3 concurrent scans: three replicas / one | "
          f"{results['scan_3_clients/three_replicas_rows_per_s'] / results['scan_3_clients/one_replica_rows_per_s']:.2f}× |")
    one = "scan_1_client/"
    print(f"| 1 client, parts from three replicas / from one | "
          f"{results[one + 'parts_from_three_replicas_rows_per_s'] / results[one + 'parts_from_one_replica_rows_per_s']:.2f}× |")
    print(f"| 1 ADBC client, parts / one endpoint | "
          f"{results[one + 'parts_adbc_rows_per_s'] / results[one + 'one_endpoint_adbc_rows_per_s']:.2f}× |")


if __name__ == "__main__":
    main()
