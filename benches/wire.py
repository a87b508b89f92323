"""Compression on the wire (`query.compression`): a full `lineitem` scan through
pyarrow.flight with none, lz4 and zstd, on loopback and through a 1 Gbit/s link (the Flight
port's traffic shaped on `lo` by `tc`, so nothing else is slowed), with the bytes sent.

    python benches/wire.py --scale 1 --runs 3      # as root (tc)

Uses (and, the first time, generates) the data of `benches/run.py`.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import subprocess
import time

import pyarrow.flight as flight

from harness import ADMIN_EMAIL, ADMIN_PASSWORD, Server, metric
from test_clients import statement_command

SCAN = "SELECT * FROM tpch.lineitem"
LINK = "1gbit"
LINK_BITS = 1e9


def tc(*args: str, check: bool = True) -> None:
    subprocess.run(["tc", *args], check=check, capture_output=True)


def shaped(port: int):
    """Shapes what the server sends from `port` on loopback to `LINK`."""
    tc("qdisc", "add", "dev", "lo", "root", "handle", "1:", "prio", "bands", "3",
       "priomap", *["1"] * 16)
    tc("qdisc", "add", "dev", "lo", "parent", "1:3", "handle", "30:", "tbf", "rate", LINK,
       "burst", "4mb", "latency", "200ms")
    tc("filter", "add", "dev", "lo", "parent", "1:", "protocol", "ip", "prio", "1", "u32",
       "match", "ip", "sport", str(port), "0xffff", "flowid", "1:3")


def unshaped() -> None:
    tc("qdisc", "del", "dev", "lo", "root", check=False)


def scan(server: Server):
    client = flight.FlightClient(server.uri)
    options = flight.FlightCallOptions(headers=[client.authenticate_basic_token(ADMIN_EMAIL, ADMIN_PASSWORD)])
    command = flight.FlightDescriptor.for_command(statement_command(SCAN))

    def run() -> float:
        started = time.perf_counter()
        info = client.get_flight_info(command, options)
        rows = sum(client.do_get(e.ticket, options).read_all().num_rows for e in info.endpoints)
        assert rows > 0
        return time.perf_counter() - started

    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", default="1")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    data = pathlib.Path.home() / ".cache" / "quiver" / f"bench-sf{args.scale}"
    print(f"| compression | loopback s | {LINK}/s link s | MB sent per scan |")
    print("| --- | ---: | ---: | ---: |")
    for compression in ["none", "lz4", "zstd"]:
        config = f"query:\n  results_cache_memory: 0\n  compression: {compression}\n"
        server = Server(["demo", "--scale", args.scale], str(data), config=config)
        try:
            run = scan(server)
            run()
            before = metric(server, "quiver_bytes_streamed_total")
            loopback = statistics.median(run() for _ in range(args.runs))
            time.sleep(0.5)  # the last query's log (and its byte count) is written as it ends
            sent = (metric(server, "quiver_bytes_streamed_total") - before) / args.runs
            try:
                shaped(int(server.flight.rsplit(":", 1)[1]))
            except subprocess.CalledProcessError:
                # A kernel without queueing disciplines (some VMs): the time the bytes need
                # at the link's rate, a lower bound, marked as such.
                link = f"≥ {max(loopback, sent * 8 / LINK_BITS):.2f}"
            else:
                try:
                    link = f"{statistics.median(run() for _ in range(args.runs)):.2f}"
                finally:
                    unshaped()
            print(f"| {compression} | {loopback:.2f} | {link} | {sent / 1e6:,.0f} |", flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
