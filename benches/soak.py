"""Soak: 50 clients for 120 s (point lookups, TPC-H Q1, full scans, slow readers, clients that
disconnect mid-stream) and one attacker, against `quiver demo --scale 0.1`; prints the
point-lookup latency under load and the server's RSS against `query.memory_limit`.

    python benches/soak.py [--clients 50] [--seconds 120] [--scale 0.1]
"""

from __future__ import annotations

import argparse
import tempfile

from harness import Server
from workload import run_soak

MEMORY_LIMIT_MIB = 1024
MEMORY_LIMIT_PER_USER_MIB = 256


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=120)
    parser.add_argument("--scale", default="0.1")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(["demo", "--scale", args.scale], f"{tmp}/data",
                        config=f"query:\n  memory_limit: {MEMORY_LIMIT_MIB} MiB\n"
                               f"  memory_limit_per_user: {MEMORY_LIMIT_PER_USER_MIB} MiB\n")
        try:
            report = run_soak(server, clients=args.clients, seconds=args.seconds)
        finally:
            server.stop()
    print(report.summary())
    print(f"RSS peak {report.rss_peak >> 20} MiB against query.memory_limit {MEMORY_LIMIT_MIB} MiB "
          f"({report.rss_peak / (MEMORY_LIMIT_MIB << 20):.2f}×)")
    for error in report.errors[:10] + report.attack_failures[:10]:
        print("  ", error)


if __name__ == "__main__":
    main()
