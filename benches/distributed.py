"""Distributed plans benchmark: TPC-H Q1 and Q3 spread over the replicas vs run on one, in one
run.

    make bench-distributed                 # scale 1
    python benches/distributed.py --scales 1,3 --runs 5

Four replicas share a PostgreSQL state and one object store: A, B and C spread statements
scanning more than `--threshold` (`query.distributed: auto`), D answers alone
(`query.distributed: off`; it still runs the others' stages). Each round runs the query on A
(coordinating, stages on all four) and on D (single node), alternately, fetching on the
replica that planned it. All replicas share this machine's cores, so the ratio is the cost of
cutting a plan into stages and moving them over loopback gRPC, not the speed-up a cluster of
machines gets. Prints medians and ratios; copy the table into benches/RESULTS.md with the
command.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import pyarrow.flight as flight

from harness import ADMIN_EMAIL, ADMIN_PASSWORD
from pgserver import postgres_server
from test_clients import statement_command
from test_distributed import Q3, QUERIES, plan, start, state, stop, tasks


def timed(server, sql: str) -> float:
    """Seconds to plan and fetch `sql` on `server` itself (a warm client)."""
    client = flight.FlightClient(server.uri)
    options = flight.FlightCallOptions(headers=[client.authenticate_basic_token(ADMIN_EMAIL, ADMIN_PASSWORD)])
    started = time.perf_counter()
    info = client.get_flight_info(flight.FlightDescriptor.for_command(statement_command(sql)), options)
    client.do_get(info.endpoints[0].ticket, options).read_all()
    elapsed = time.perf_counter() - started
    client.close()
    return elapsed


def one_scale(scale: str, runs: int, threshold: str) -> dict[str, float]:
    with postgres_server() as pg, tempfile.TemporaryDirectory() as tmp:
        replicas = start(tmp, state(pg), scale=scale, threshold=threshold,
                         query="  memory_limit: 4 GiB\n  memory_limit_per_user: 3 GiB\n")
        try:
            a, d = replicas[0], replicas[3]
            results = {}
            for name, sql in (("q1", QUERIES["q1"]), ("q3", Q3)):
                results[f"{name}/tasks_per_stage"] = tasks(plan(a, sql))
                timed(a, sql), timed(d, sql)  # warm up
                spread, single = [], []
                for _ in range(runs):
                    spread.append(timed(a, sql))
                    single.append(timed(d, sql))
                results[f"{name}/distributed_ms"] = statistics.median(spread) * 1000
                results[f"{name}/single_node_ms"] = statistics.median(single) * 1000
            return results
        finally:
            stop(replicas)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scales", default="1")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threshold", default="64 MiB")
    args = parser.parse_args()
    print("| scale | query | most tasks in a stage | distributed (4 replicas) | single node | distributed / single |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for scale in args.scales.split(","):
        r = one_scale(scale, args.runs, args.threshold)
        for q in ("q1", "q3"):
            spread, single = r[f"{q}/distributed_ms"], r[f"{q}/single_node_ms"]
            print(f"| {scale} | {q.upper()} | {r[q + '/tasks_per_stage']} | {spread:,.0f} ms | {single:,.0f} ms | "
                  f"{spread / single:.2f}× |", flush=True)


if __name__ == "__main__":
    main()
