"""End-to-end benchmark: Quiver through real clients, beside references, in one run.

    make bench                      # scale 1
    python benches/run.py --scale 0.1 --runs 3

Measured (median of --runs):
- full scan of tpch.lineitem and TPC-H Q1 through Quiver with ADBC, and with in-process
  DataFusion on the same parquet files (`quiver-bench-datafusion`, same DataFusion version);
- the full scan through Quiver with pyarrow.flight, and from a small pyarrow.flight server
  that streams the same table already loaded in memory (the Flight-on-loopback reference);
- a point lookup on tpch.orders through Quiver (ADBC) and in-process DataFusion;
- TPC-H Q1 for a user whose grant on tpch.lineitem carries a row filter, against the admin
  running the same query with the filter written in its WHERE clause (same rows, same result).
Prints rows/s and ratios; copy the table into benches/RESULTS.md with the command.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
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
sys.path.insert(0, str(ROOT / "tests" / "python"))
from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Server, api, login  # noqa: E402
from test_clients import statement_command  # noqa: E402

TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", pathlib.Path.home() / ".cache/quiver/target"))


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


class MemoryFlightServer(flight.FlightServerBase):
    """The reference: a pyarrow.flight server streaming an in-memory table."""

    def __init__(self, table: pa.Table):
        super().__init__("grpc://127.0.0.1:0")
        self.table = table

    def do_get(self, context, ticket):
        return flight.RecordBatchStream(self.table)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", default="1")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sql = queries()

    data_dir = pathlib.Path.home() / ".cache" / "quiver" / f"bench-sf{args.scale}"
    server = Server(["demo", "--scale", args.scale], str(data_dir))
    try:
        conn = flight_sql.connect(server.uri, db_kwargs={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD})

        def adbc(query: str) -> int:
            with conn.cursor() as cur:
                cur.execute(query)
                return sum(b.num_rows for b in cur.fetch_record_batch())

        results = {}
        for name in ("scan_lineitem", "q1", "point_lookup"):
            adbc(sql[name])  # warm the per-user session and the file cache
            results[f"quiver_adbc/{name}"] = median_time(lambda: adbc(sql[name]), args.runs)

        # Row-filtered grant vs. the admin writing the same filter by hand.
        policy = "l_shipmode IN ('AIR', 'MAIL', 'SHIP', 'TRUCK')"
        token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
        analyst = "bench-analyst@example.com"
        api(server, "POST", "/api/admin/users", token, {"email": analyst, "password": "bench-password"})
        api(server, "POST", "/api/admin/groups", token, {"name": "bench"})
        api(server, "POST", "/api/admin/groups/bench/members", token, {"email": analyst})
        grants = api(server, "GET", "/api/admin/grants", token)[1]
        orders_policy = "o_orderstatus IN ('F', 'O', 'P')"
        for table, row_filter in [("tpch.lineitem", policy), ("tpch.orders", orders_policy)]:
            if not any(g["group"] == "bench" and g["table"] == table for g in grants):
                api(server, "POST", "/api/admin/grants", token,
                    {"group": "bench", "table": table, "row_filter": row_filter})
        filtered = flight_sql.connect(server.uri, db_kwargs={"username": analyst, "password": "bench-password"})
        by_hand = sql["q1"].replace("WHERE ", f"WHERE {policy} AND ", 1)

        def as_analyst() -> int:
            with filtered.cursor() as cur:
                cur.execute(sql["q1"])
                return sum(b.num_rows for b in cur.fetch_record_batch())

        with filtered.cursor() as cur:
            cur.execute(sql["q1"])
            policy_result = cur.fetch_arrow_table()
        with conn.cursor() as cur:
            cur.execute(by_hand)
            assert cur.fetch_arrow_table().to_pylist() == policy_result.to_pylist(), "results differ"
        def as_analyst_lookup() -> int:
            with filtered.cursor() as cur:
                cur.execute(sql["point_lookup"])
                return sum(b.num_rows for b in cur.fetch_record_batch())

        lookup_by_hand = sql["point_lookup"].replace("WHERE ", f"WHERE {orders_policy} AND ", 1)
        # Interleave the two so drift on a shared machine hits both alike.
        for name, admin_fn, analyst_fn, runs in [
            ("q1", lambda: adbc(by_hand), as_analyst, args.runs),
            ("point_lookup", lambda: adbc(lookup_by_hand), as_analyst_lookup, args.runs * 5),
        ]:
            admin_times, analyst_times = [], []
            for _ in range(runs):
                admin_times.append(median_time(admin_fn, 1)[0])
                analyst_times.append(median_time(analyst_fn, 1)[0])
            results[f"quiver_adbc/{name}_admin_filter_in_sql"] = (statistics.median(admin_times), admin_fn())
            results[f"quiver_adbc/{name}_row_filtered_grant"] = (statistics.median(analyst_times), analyst_fn())
        filtered.close()

        client = flight.FlightClient(server.uri)
        options = flight.FlightCallOptions(headers=[client.authenticate_basic_token(ADMIN_EMAIL, ADMIN_PASSWORD)])

        def quiver_pyarrow() -> int:
            info = client.get_flight_info(
                flight.FlightDescriptor.for_command(statement_command(sql["scan_lineitem"])), options)
            return sum(client.do_get(e.ticket, options).read_all().num_rows for e in info.endpoints)

        results["quiver_pyarrow/scan_lineitem"] = median_time(quiver_pyarrow, args.runs)

        tables = data_dir / "objects"
        tables = next(tables.rglob("tpch")) if not (tables / "tables" / "tpch").exists() else tables / "tables" / "tpch"
        reference = subprocess.run(
            [str(TARGET / "release" / "quiver-bench-datafusion"), str(tables), str(args.runs)],
            check=True, capture_output=True, text=True)
        for name, value in json.loads(reference.stdout).items():
            results[f"datafusion/{name}"] = (value["median_s"], value["rows"])

        lineitem_dir = next(p for p in (tables / "lineitem").iterdir() if p.is_dir())
        table = ds.dataset(str(lineitem_dir), format="parquet").to_table()
        memory = MemoryFlightServer(table)
        threading.Thread(target=memory.serve, daemon=True).start()
        mem_client = flight.FlightClient(f"grpc://127.0.0.1:{memory.port}")
        results["memory_flight/scan_lineitem"] = median_time(
            lambda: mem_client.do_get(flight.Ticket(b"lineitem")).read_all().num_rows, args.runs)
        memory.shutdown()
    finally:
        server.stop()

    print(f"\nscale {args.scale}, median of {args.runs} runs\n")
    print("| measurement | median s | rows | rows/s |")
    print("| --- | ---: | ---: | ---: |")
    for key, (secs, rows) in results.items():
        print(f"| {key} | {secs:.4f} | {rows} | {rows / secs:,.0f} |")
    r = {k: v[0] for k, v in results.items()}
    print("\n| ratio | value | target |")
    print("| --- | ---: | --- |")
    print(f"| Q1: Quiver (ADBC) / in-process DataFusion | {r['quiver_adbc/q1'] / r['datafusion/q1']:.2f}× | ≤ 1.2× |")
    print(f"| scan: Quiver (pyarrow.flight) / in-memory pyarrow.flight server | "
          f"{r['quiver_pyarrow/scan_lineitem'] / r['memory_flight/scan_lineitem']:.2f}× | ≤ 1.0× |")
    print(f"| scan: Quiver (ADBC) / in-process DataFusion | "
          f"{r['quiver_adbc/scan_lineitem'] / r['datafusion/scan_lineitem']:.2f}× | — |")
    diff_ms = (r['quiver_adbc/point_lookup'] - r['datafusion/point_lookup']) * 1000
    print(f"| point lookup: Quiver (ADBC) − in-process DataFusion | {diff_ms:+.2f} ms | ≤ 2 ms |")
    print(f"| Q1: row-filtered grant / admin with the filter in SQL | "
          f"{r['quiver_adbc/q1_row_filtered_grant'] / r['quiver_adbc/q1_admin_filter_in_sql']:.2f}× | ≤ 1.1× |")
    print(f"| point lookup: row-filtered grant / admin with the filter in SQL | "
          f"{r['quiver_adbc/point_lookup_row_filtered_grant'] / r['quiver_adbc/point_lookup_admin_filter_in_sql']:.2f}× | ≤ 1.1× |")


if __name__ == "__main__":
    main()
