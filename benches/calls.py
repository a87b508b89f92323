"""What one short statement costs, call by call: GetFlightInfo and DoGet timed apart with
pyarrow.flight, and the whole statement through ADBC, for `SELECT 1` and the point lookup.

    python benches/calls.py --scale 1 --runs 40 [--results-cache]

Uses (and, the first time, generates) the data of `benches/run.py`.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow.flight as flight

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "python"))
from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Server  # noqa: E402
from test_clients import statement_command  # noqa: E402

STATEMENTS = ["SELECT 1", "SELECT * FROM tpch.orders WHERE o_orderkey = 1234567"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", default="1")
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--results-cache", action="store_true", help="answer repeats from the results cache")
    args = parser.parse_args()
    config = None if args.results_cache else "query:\n  results_cache_memory: 0\n"
    server = Server(["demo", "--scale", args.scale], str(pathlib.Path.home() / ".cache/quiver" / f"bench-sf{args.scale}"),
                    config=config)
    try:
        client = flight.FlightClient(server.uri)
        options = flight.FlightCallOptions(headers=[client.authenticate_basic_token(ADMIN_EMAIL, ADMIN_PASSWORD)])
        conn = flight_sql.connect(server.uri, db_kwargs={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
                                  autocommit=True)
        print("| statement | GetFlightInfo ms | DoGet ms | ADBC statement ms |")
        print("| --- | ---: | ---: | ---: |")
        for sql in STATEMENTS:
            info_ms, get_ms, adbc_ms = [], [], []
            for _ in range(args.runs):
                started = time.perf_counter()
                info = client.get_flight_info(flight.FlightDescriptor.for_command(statement_command(sql)), options)
                planned = time.perf_counter()
                client.do_get(info.endpoints[0].ticket, options).read_all()
                info_ms.append((planned - started) * 1000)
                get_ms.append((time.perf_counter() - planned) * 1000)
                started = time.perf_counter()
                with conn.cursor() as cur:
                    cur.execute(sql)
                    cur.fetch_arrow_table()
                adbc_ms.append((time.perf_counter() - started) * 1000)
            print(f"| `{sql}` | {statistics.median(info_ms):.2f} | {statistics.median(get_ms):.2f} | "
                  f"{statistics.median(adbc_ms):.2f} |")
        conn.close()
    finally:
        server.stop()


if __name__ == "__main__":
    main()
