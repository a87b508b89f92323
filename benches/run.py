"""End-to-end benchmark: Quiver through real clients, beside its references, in one run.

    make bench                      # scale 1
    python benches/run.py --scale 0.1 --runs 3

Every figure is a median of --runs on this machine, measured in the same run as its
reference, so read the ratios. Measured:
- Quiver (`quiver demo`) through ADBC: a full scan of lineitem, TPC-H Q1, Q3, Q6, Q18, a
  point lookup on orders on a warm connection and with a new connection each time (bearer
  PAT, as a notebook or an agent connects), and 16 clients doing point lookups at once
  (throughput, p99);
- the full scan through pyarrow.flight, beside a pyarrow.flight server streaming the table
  already in memory (the ceiling of Flight on loopback);
- in-process DataFusion (same version, defaults) on Quiver's landed files and on the files
  `tpchgen-cli` writes, and in-process DuckDB on the latter;
- ROAPI (the nearest open peer, its Flight SQL endpoint, no authentication) on the
  `tpchgen-cli` files, through ADBC;
- a user whose grants carry row filters against the admin writing the same filters.
Prints the table and the ratios to copy into benches/RESULTS.md with the command.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import pathlib
import socket
import statistics
import subprocess
import sys
import threading
import time

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.flight as flight

ROOT = pathlib.Path(__file__).resolve().parents[1]
from harness import ADMIN_EMAIL, ADMIN_PASSWORD, Server, api, login
from test_clients import statement_command

TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
CACHE = pathlib.Path.home() / ".cache" / "quiver"
BIN = pathlib.Path(sys.executable).parent
# The queries every engine runs (point lookups are measured on their own).
TPCH = ["scan_lineitem", "q1", "q3", "q6", "q18"]
CONCURRENT_CLIENTS = 16
# The engine is measured without the results cache (repeated runs would be answered from
# it); the second pass gives the hot tables memory; the last keeps results.
ENGINE = "query:\n  results_cache_memory: 0\n"
ACCELERATED = ENGINE + "  acceleration_memory: 6GiB\n"


def queries() -> dict[str, str]:
    """The query texts, shared with the in-process reference."""
    return json.loads((ROOT / "benches" / "queries.json").read_text())


def median_time(fn, runs: int) -> tuple[float, int]:
    times, rows = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        rows = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), rows


def rows_of(conn, sql: str) -> int:
    with conn.cursor() as cur:
        cur.execute(sql)
        return sum(b.num_rows for b in cur.fetch_record_batch())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MemoryFlightServer(flight.FlightServerBase):
    """The ceiling: a pyarrow.flight server streaming an in-memory table."""

    def __init__(self, table: pa.Table):
        super().__init__("grpc://127.0.0.1:0")
        self.table = table

    def do_get(self, context, ticket):
        return flight.RecordBatchStream(self.table)


def tpchgen_files(scale: str) -> pathlib.Path:
    """`tpchgen-cli parquet` output for `scale` (generated once, then kept)."""
    out = CACHE / f"tpchgen-sf{scale}"
    if not (out / "lineitem.parquet").exists():
        out.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(BIN / "tpchgen-cli"), "parquet", "-s", scale, "--output-dir", str(out),
                        "--tables", "lineitem,orders,customer"], check=True)
    return out


def concurrent_lookups(connect, sql: str, clients: int, each: int) -> tuple[float, float]:
    """`clients` connections doing `each` lookups at once: (lookups per second, p99 seconds)."""
    conns = [connect(i) for i in range(clients)]
    for c in conns:
        rows_of(c, sql)
    latencies: list[float] = []
    lock = threading.Lock()

    def client(c) -> None:
        mine = []
        for _ in range(each):
            started = time.perf_counter()
            assert rows_of(c, sql) == 1
            mine.append(time.perf_counter() - started)
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, conns))
    elapsed = time.perf_counter() - started
    for c in conns:
        c.close()
    latencies.sort()
    return len(latencies) / elapsed, latencies[int(len(latencies) * 0.99) - 1]


def pyarrow_scan(server: Server, sql: dict[str, str]):
    """A function scanning lineitem through pyarrow.flight (every endpoint), as the admin."""
    client = flight.FlightClient(server.uri)
    options = flight.FlightCallOptions(headers=[client.authenticate_basic_token(ADMIN_EMAIL, ADMIN_PASSWORD)])
    command = flight.FlightDescriptor.for_command(statement_command(sql["scan_lineitem"]))

    def scan() -> int:
        info = client.get_flight_info(command, options)
        return sum(client.do_get(e.ticket, options).read_all().num_rows for e in info.endpoints)

    return scan


def measure_quiver(args, sql: dict[str, str], results: dict, extra: dict) -> pathlib.Path:
    data_dir = CACHE / f"bench-sf{args.scale}"
    server = Server(["demo", "--scale", args.scale], str(data_dir), config=ENGINE)
    try:
        conn = flight_sql.connect(server.uri, db_kwargs={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
                                  autocommit=True)
        for name in TPCH + ["point_lookup"]:
            rows_of(conn, sql[name])  # warm the per-user session and the file cache
            runs = args.runs * 5 if name == "point_lookup" else args.runs
            results[f"quiver/{name}"] = median_time(lambda: rows_of(conn, sql[name]), runs)

        token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
        pat = api(server, "POST", "/api/me/tokens", token, {"name": "bench"})[1]["token"]

        def cold_lookup() -> int:
            with flight_sql.connect(server.uri, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {pat}"},
                                    autocommit=True) as c:
                return rows_of(c, sql["point_lookup"])

        cold_lookup()
        results["quiver/point_lookup_new_connection"] = median_time(cold_lookup, args.runs * 5)

        # Row-filtered grants vs. the admin writing the same filters by hand; and 16 analysts
        # of an unfiltered group doing point lookups at once.
        policy = "l_shipmode IN ('AIR', 'MAIL', 'SHIP', 'TRUCK')"
        orders_policy = "o_orderstatus IN ('F', 'O', 'P')"
        analyst = "bench-analyst@example.com"
        api(server, "POST", "/api/admin/users", token, {"email": analyst, "password": "bench-password"})
        api(server, "POST", "/api/admin/groups", token, {"name": "bench"})
        api(server, "POST", "/api/admin/groups/bench/members", token, {"email": analyst})
        api(server, "POST", "/api/admin/groups", token, {"name": "bench-all"})
        grants = api(server, "GET", "/api/admin/grants", token)[1]
        wanted = [("bench", "tpch.lineitem", policy), ("bench", "tpch.orders", orders_policy),
                  ("bench-all", "tpch.*", None)]
        for group, table, row_filter in wanted:
            if not any(g["group"] == group and g["table"] == table for g in grants):
                api(server, "POST", "/api/admin/grants", token,
                    {"group": group, "table": table, "row_filter": row_filter})
        filtered = flight_sql.connect(server.uri, db_kwargs={"username": analyst, "password": "bench-password"},
                                      autocommit=True)
        by_hand = {
            "q1": sql["q1"].replace("WHERE ", f"WHERE {policy} AND ", 1),
            "point_lookup": sql["point_lookup"].replace("WHERE ", f"WHERE {orders_policy} AND ", 1),
        }
        with filtered.cursor() as cur:
            cur.execute(sql["q1"])
            policy_result = cur.fetch_arrow_table()
        with conn.cursor() as cur:
            cur.execute(by_hand["q1"])
            assert cur.fetch_arrow_table().to_pylist() == policy_result.to_pylist(), "results differ"
        # Interleaved, so drift on a shared machine hits both alike.
        for name, runs in [("q1", args.runs), ("point_lookup", args.runs * 5)]:
            admin_times, analyst_times = [], []
            for _ in range(runs):
                admin_times.append(median_time(lambda: rows_of(conn, by_hand[name]), 1)[0])
                analyst_times.append(median_time(lambda: rows_of(filtered, sql[name]), 1)[0])
            results[f"quiver/{name}_admin_filter_in_sql"] = (statistics.median(admin_times), 0)
            results[f"quiver/{name}_row_filtered_grant"] = (statistics.median(analyst_times), 0)
        filtered.close()

        tokens = []
        for i in range(CONCURRENT_CLIENTS):
            email = f"bench-client-{i}@example.com"
            api(server, "POST", "/api/admin/users", token, {"email": email, "password": "bench-password"})
            api(server, "POST", "/api/admin/groups/bench-all/members", token, {"email": email})
            tokens.append(login(server, email, "bench-password"))
        extra["quiver/16_clients"] = concurrent_lookups(
            lambda i: flight_sql.connect(server.uri, autocommit=True, db_kwargs={
                "adbc.flight.sql.authorization_header": f"Bearer {tokens[i]}"}),
            sql["point_lookup"], CONCURRENT_CLIENTS, args.runs * 10)

        results["quiver_pyarrow/scan_lineitem"] = median_time(pyarrow_scan(server, sql), args.runs)
        conn.close()
    finally:
        server.stop()
    tables = data_dir / "objects"
    return next(tables.rglob("tpch")) if not (tables / "tables" / "tpch").exists() else tables / "tables" / "tpch"


def measure_accelerated(args, sql: dict[str, str], results: dict) -> None:
    """The same queries once the tables they read are held in memory."""
    server = Server(["demo", "--scale", args.scale], str(CACHE / f"bench-sf{args.scale}"), config=ACCELERATED)
    try:
        conn = flight_sql.connect(server.uri, db_kwargs={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
                                  autocommit=True)
        for name in TPCH + ["point_lookup"]:
            rows_of(conn, sql[name])
            rows_of(conn, sql[name])
        deadline = time.time() + 600
        while server.log().count("table held in memory") < 3 and time.time() < deadline:
            time.sleep(0.5)
        assert server.log().count("table held in memory") >= 3, server.log()[-3000:]
        for name in TPCH + ["point_lookup"]:
            rows_of(conn, sql[name])
            runs = args.runs * 5 if name == "point_lookup" else args.runs
            results[f"quiver_memory/{name}"] = median_time(lambda: rows_of(conn, sql[name]), runs)
        results["quiver_memory_pyarrow/scan_lineitem"] = median_time(pyarrow_scan(server, sql), args.runs)
        conn.close()
    finally:
        server.stop()


def measure_cached(args, sql: dict[str, str], results: dict) -> None:
    """Repeated statements answered from the results cache (the defaults): what a statement
    costs around its execution (sign-in, planning, the two calls, the client)."""
    server = Server(["demo", "--scale", args.scale], str(CACHE / f"bench-sf{args.scale}"))
    try:
        conn = flight_sql.connect(server.uri, db_kwargs={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
                                  autocommit=True)
        for name in ["q1", "point_lookup"]:
            rows_of(conn, sql[name])
            results[f"quiver_cached/{name}"] = median_time(lambda: rows_of(conn, sql[name]), args.runs * 5)
        conn.close()
    finally:
        server.stop()


def measure_in_process(args, sql, quiver_tables: pathlib.Path, files: pathlib.Path, results: dict) -> None:
    for label, tables in [("datafusion_quiver_files", quiver_tables), ("datafusion", files)]:
        reference = subprocess.run(
            [str(TARGET / "release" / "quiver-bench-datafusion"), str(tables), str(args.runs)],
            check=True, capture_output=True, text=True)
        for name, value in json.loads(reference.stdout).items():
            results[f"{label}/{name}"] = (value["median_s"], value["rows"])

    import duckdb
    duck = duckdb.connect()
    duck.execute("CREATE SCHEMA tpch")
    for table in ["lineitem", "orders", "customer"]:
        duck.execute(f"CREATE VIEW tpch.{table} AS SELECT * FROM read_parquet('{files / (table + '.parquet')}')")

    def duck_rows(query: str) -> int:
        result = duck.sql(query).arrow()
        return result.num_rows if hasattr(result, "num_rows") else sum(b.num_rows for b in result)

    for name in TPCH + ["point_lookup"]:
        duck_rows(sql[name])
        runs = args.runs * 5 if name == "point_lookup" else args.runs
        results[f"duckdb/{name}"] = median_time(lambda: duck_rows(sql[name]), runs)

    lineitem = ds.dataset(str(files / "lineitem.parquet"), format="parquet").to_table()
    memory = MemoryFlightServer(lineitem)
    threading.Thread(target=memory.serve, daemon=True).start()
    mem_client = flight.FlightClient(f"grpc://127.0.0.1:{memory.port}")
    results["memory_flight/scan_lineitem"] = median_time(
        lambda: mem_client.do_get(flight.Ticket(b"lineitem")).read_all().num_rows, args.runs)
    memory.shutdown()
    del lineitem


def measure_roapi(args, sql, files: pathlib.Path, results: dict, extra: dict) -> None:
    port, http = free_port(), free_port()
    cmd = [str(BIN / "roapi"), "--addr-flight-sql", f"127.0.0.1:{port}", "--addr-http", f"127.0.0.1:{http}"]
    for table in ["lineitem", "orders", "customer"]:
        cmd += ["-t", f"{table}={files / (table + '.parquet')}"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    uri = f"grpc://127.0.0.1:{port}"
    plain = {name: text.replace("tpch.", "") for name, text in sql.items()}
    try:
        deadline = time.time() + 300
        while True:
            try:
                with flight_sql.connect(uri, autocommit=True) as c:
                    rows_of(c, "SELECT count(*) FROM lineitem")
                break
            except Exception:
                if time.time() > deadline or proc.poll() is not None:
                    raise
                time.sleep(1)
        conn = flight_sql.connect(uri, autocommit=True)
        for name in TPCH + ["point_lookup"]:
            rows_of(conn, plain[name])
            runs = args.runs * 5 if name == "point_lookup" else args.runs
            results[f"roapi/{name}"] = median_time(lambda: rows_of(conn, plain[name]), runs)

        def cold_lookup() -> int:
            with flight_sql.connect(uri, autocommit=True) as c:
                return rows_of(c, plain["point_lookup"])

        results["roapi/point_lookup_new_connection"] = median_time(cold_lookup, args.runs * 5)
        extra["roapi/16_clients"] = concurrent_lookups(
            lambda i: flight_sql.connect(uri, autocommit=True), plain["point_lookup"],
            CONCURRENT_CLIENTS, args.runs * 10)
        conn.close()
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", default="1")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-roapi", action="store_true", help="leave out the peer")
    args = parser.parse_args()
    sql = queries()
    files = tpchgen_files(args.scale)
    results: dict[str, tuple[float, int]] = {}
    extra: dict[str, tuple[float, float]] = {}
    quiver_tables = measure_quiver(args, sql, results, extra)
    measure_accelerated(args, sql, results)
    measure_cached(args, sql, results)
    measure_in_process(args, sql, quiver_tables, files, results)
    if not args.no_roapi:
        measure_roapi(args, sql, files, results, extra)

    r = {k: v[0] for k, v in results.items()}
    print(f"\nscale {args.scale}, medians of {args.runs} runs ({args.runs * 5} for point lookups)\n")
    engines = ["quiver", "quiver_memory", "quiver_cached", "datafusion", "datafusion_quiver_files", "duckdb", "roapi"]
    print("| query (ms) | " + " | ".join(engines) + " |")
    print("| --- |" + " ---: |" * len(engines))
    for name in TPCH + ["point_lookup", "point_lookup_new_connection"]:
        cells = [f"{r[f'{e}/{name}'] * 1000:,.1f}" if f"{e}/{name}" in r else "—" for e in engines]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"| scan_lineitem, pyarrow.flight | {r['quiver_pyarrow/scan_lineitem'] * 1000:,.1f} | "
          f"{r['quiver_memory_pyarrow/scan_lineitem'] * 1000:,.1f} | | in-memory pyarrow.flight server: "
          f"{r['memory_flight/scan_lineitem'] * 1000:,.1f} | | | |")
    for key, (rate, p99) in extra.items():
        print(f"| {key}: lookups/s, p99 ms | {rate:,.0f}, {p99 * 1000:.1f} | | | | | | |")

    print("\n| ratio | value | goal |")
    print("| --- | ---: | --- |")
    print(f"| scan: Quiver (pyarrow.flight) / in-memory pyarrow.flight server | "
          f"{r['memory_flight/scan_lineitem'] / r['quiver_pyarrow/scan_lineitem']:.2f}× of ceiling | ≥ 1.0× |")
    print(f"| scan: Quiver (ADBC) / in-memory pyarrow.flight server | "
          f"{r['memory_flight/scan_lineitem'] / r['quiver/scan_lineitem']:.2f}× of ceiling | ≥ 1.0× |")
    print(f"| scan, lineitem held in memory: Quiver (pyarrow.flight) / in-memory pyarrow.flight server | "
          f"{r['memory_flight/scan_lineitem'] / r['quiver_memory_pyarrow/scan_lineitem']:.2f}× of ceiling | ≥ 1.0× |")
    for label in ["quiver", "quiver_memory"]:
        for q in ["q1", "q3", "q6", "q18"]:
            print(f"| {q}: {label} / in-process DataFusion (tpchgen files) | "
                  f"{r[f'{label}/{q}'] / r[f'datafusion/{q}']:.2f}× | {'≤ 1.2×' if q == 'q1' else '—'} |")
    print(f"| Q1: Quiver / DuckDB | {r['quiver/q1'] / r['duckdb/q1']:.2f}× | moonshot 1.0× |")
    diff_ms = (r["quiver/point_lookup"] - r["datafusion/point_lookup"]) * 1000
    print(f"| point lookup: Quiver − in-process DataFusion | {diff_ms:+.2f} ms | ≤ +2 ms |")
    connect_ms = (r["quiver/point_lookup_new_connection"] - r["quiver/point_lookup"]) * 1000
    print(f"| point lookup: new connection (PAT) − warm | {connect_ms:+.2f} ms | ≤ +3 ms |")
    for name in ["q1", "point_lookup"]:
        print(f"| {name}: row-filtered grant / admin with the filter in SQL | "
              f"{r[f'quiver/{name}_row_filtered_grant'] / r[f'quiver/{name}_admin_filter_in_sql']:.2f}× | ≤ 1.1× |")
    if "roapi/q1" in r:
        for name in TPCH + ["point_lookup"]:
            print(f"| {name}: Quiver / ROAPI | {r[f'quiver/{name}'] / r[f'roapi/{name}']:.2f}× | — |")


if __name__ == "__main__":
    main()
