"""What one short statement costs, call by call: GetFlightInfo and DoGet timed apart with
pyarrow.flight, and the whole statement through ADBC, for `SELECT 1` and the point lookup;
then what connecting costs: `SELECT 1` on a new pyarrow.flight client with a personal access
token (one used before, and one never used) against the same on a warm client, beside the
same pair on an in-memory pyarrow.flight server (what any gRPC server's connection costs).

    python benches/calls.py --scale 1 --runs 40 [--results-cache]

Uses (and, the first time, generates) the data of `benches/run.py`.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import time

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow as pa
import pyarrow.flight as flight

from harness import ADMIN_EMAIL, ADMIN_PASSWORD, Server, api, login
from test_clients import statement_command

STATEMENTS = ["SELECT 1", "SELECT * FROM tpch.orders WHERE o_orderkey = 1234567"]


class OneRowServer(flight.FlightServerBase):
    """The reference: a pyarrow.flight server answering every DoGet with one row."""

    def __init__(self):
        super().__init__("grpc://127.0.0.1:0")
        self.table = pa.table({"one": [1]})

    def do_get(self, context, ticket):
        return flight.RecordBatchStream(self.table)


def timed_ms(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def connect_costs(server: Server, runs: int) -> None:
    """`SELECT 1` on a new client each time vs a warm one, for Quiver (bearer PAT) and the
    reference server; the difference of the differences is what Quiver's connect adds."""
    admin = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)

    def pat() -> str:
        return api(server, "POST", "/api/me/tokens", admin, {"name": "bench"})[1]["token"]

    command = flight.FlightDescriptor.for_command(statement_command("SELECT 1"))

    def statement(client, token: str) -> None:
        options = flight.FlightCallOptions(headers=[(b"authorization", f"Bearer {token}".encode())])
        info = client.get_flight_info(command, options)
        client.do_get(info.endpoints[0].ticket, options).read_all()

    used = pat()
    warm = flight.FlightClient(server.uri)
    statement(warm, used)
    quiver_warm = timed_ms(lambda: statement(warm, used), runs)

    def fresh(token: str) -> None:
        with flight.FlightClient(server.uri) as client:
            statement(client, token)

    quiver_new = timed_ms(lambda: fresh(used), runs)
    unused = [pat() for _ in range(runs)]
    quiver_first_use = timed_ms(lambda: fresh(unused.pop()), runs)

    reference = OneRowServer()
    uri = f"grpc://127.0.0.1:{reference.port}"
    ticket = flight.Ticket(b"one")
    ref_warm_client = flight.FlightClient(uri)
    ref_warm = timed_ms(lambda: ref_warm_client.do_get(ticket).read_all(), runs)

    def ref_fresh() -> None:
        with flight.FlightClient(uri) as client:
            client.do_get(ticket).read_all()

    ref_new = timed_ms(ref_fresh, runs)
    reference.shutdown()
    print("\n| `SELECT 1`, pyarrow.flight | warm client ms | new client ms | new − warm ms |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| Quiver, PAT used before | {quiver_warm:.2f} | {quiver_new:.2f} | {quiver_new - quiver_warm:.2f} |")
    print(f"| Quiver, PAT never used | {quiver_warm:.2f} | {quiver_first_use:.2f} | {quiver_first_use - quiver_warm:.2f} |")
    print(f"| in-memory pyarrow.flight (DoGet only, no auth) | {ref_warm:.2f} | {ref_new:.2f} | {ref_new - ref_warm:.2f} |")
    added = (quiver_new - quiver_warm) - (ref_new - ref_warm)
    first = (quiver_first_use - quiver_warm) - (ref_new - ref_warm)
    print(f"\nQuiver's connect adds {added:+.2f} ms (PAT used before), {first:+.2f} ms (never used) "
          f"beyond a gRPC connection's own cost; goal ≤ +3 ms")


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
        connect_costs(server, args.runs)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
