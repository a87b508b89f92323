"""How time and server memory grow with the data: a full `lineitem` scan through ADBC (read
batch by batch, never held by the client) and TPC-H Q1 at several scales, with the server's
peak resident memory during each, beside `query.memory_limit`.

    python benches/scale.py --scales 0.1,1,10 --runs 3

Each scale's demo data is generated once under ~/.cache/quiver/bench-sf<scale> (scale 10
is ~3 GB of parquet and takes a while the first time). Time should grow with the rows;
the scan's memory should not, even where its result is many times `memory_limit`.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import threading
import time

import adbc_driver_flightsql.dbapi as flight_sql

from harness import ADMIN_EMAIL, ADMIN_PASSWORD, Server

from run import queries

MEMORY_LIMIT = "1GiB"


def rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


class PeakRss:
    """Samples a process's resident memory every 20 ms while in the `with` block."""

    def __init__(self, pid: int):
        self.pid, self.peak, self.stop = pid, 0.0, threading.Event()

    def __enter__(self):
        def sample():
            while not self.stop.is_set():
                self.peak = max(self.peak, rss_mib(self.pid))
                time.sleep(0.02)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.stop.set()
        self.thread.join()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scales", default="0.1,1,10")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sql = queries()
    print(f"query.memory_limit {MEMORY_LIMIT}; medians of {args.runs}; peak RSS over all runs\n")
    print("| scale | lineitem rows | scan s | scan µs/1k rows | scan peak RSS MiB | Q1 s | Q1 peak RSS MiB | idle RSS MiB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for scale in args.scales.split(","):
        config = f"query:\n  results_cache_memory: 0\n  memory_limit: {MEMORY_LIMIT}\n"
        server = Server(["demo", "--scale", scale], str(pathlib.Path.home() / ".cache" / "quiver" / f"bench-sf{scale}"),
                        config=config)
        try:
            conn = flight_sql.connect(server.uri, db_kwargs={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
                                      autocommit=True)

            def run(statement: str) -> int:
                with conn.cursor() as cur:
                    cur.execute(statement)
                    return sum(b.num_rows for b in cur.fetch_record_batch())

            run("SELECT count(*) FROM tpch.lineitem")
            idle = rss_mib(server.proc.pid)
            figures = {}
            for name in ["scan_lineitem", "q1"]:
                times, rows = [], 0
                with PeakRss(server.proc.pid) as peak:
                    for _ in range(args.runs):
                        started = time.perf_counter()
                        rows = run(sql[name])
                        times.append(time.perf_counter() - started)
                figures[name] = (statistics.median(times), rows, peak.peak)
            conn.close()
        finally:
            server.stop()
        scan_s, rows, scan_rss = figures["scan_lineitem"]
        q1_s, _, q1_rss = figures["q1"]
        print(f"| {scale} | {rows:,} | {scan_s:.2f} | {scan_s / rows * 1e9:.0f} | {scan_rss:,.0f} | "
              f"{q1_s:.3f} | {q1_rss:,.0f} | {idle:,.0f} |", flush=True)


if __name__ == "__main__":
    main()
