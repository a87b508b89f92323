"""Deadline: statements that cannot finish within `query.timeout`, one after another against
`quiver demo --scale 0.01`; for each, when the client got its error, how long the next
statement took, and how long the server kept burning CPU after the error (the query's
threads letting go).

    python benches/deadline.py [--timeout 3]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import tempfile
import time

from harness import ADMIN_EMAIL, ADMIN_PASSWORD, Server, connect

SHAPES = {
    "filter over 10^12 generated rows":
        "SELECT count(*) FROM generate_series(1, 1000000000000) WHERE value % 7 = 3",
    "nested-loop join, 40 % of pairs pass":
        "SELECT count(*) FROM generate_series(1, 300000) a, generate_series(1, 300000) b "
        "WHERE a.value * 7 % 13 < b.value % 11",
    "nested-loop join, no pair passes":
        "SELECT count(*) FROM generate_series(1, 300000) a, generate_series(1, 300000) b "
        "WHERE a.value * 7 % 13 > b.value % 11 + 20",
    "hash join on a two-valued key":
        "SELECT count(*) FROM generate_series(1, 100000) a JOIN generate_series(1, 100000) b "
        "ON a.value % 2 = b.value % 2",
    "endless recursive query":
        "WITH RECURSIVE t AS (SELECT 1 AS n UNION ALL SELECT n + 1 FROM t) SELECT count(*) FROM t",
}


def cpu_seconds(pid: int) -> float:
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--timeout", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(["demo", "--scale", "0.01"], os.path.join(tmp, "data"),
                        config=f"query:\n  timeout: {args.timeout}s\n")
        try:
            print(f"| statement ({args.timeout} s timeout) | error after s | next statement ms "
                  "| server busy after the error s |")
            print("| --- | ---: | ---: | ---: |")
            for label, sql in SHAPES.items():
                with connect(server, ADMIN_EMAIL, ADMIN_PASSWORD) as conn:
                    started = time.time()
                    try:
                        with conn.cursor() as cur:
                            cur.execute(sql)
                            cur.fetch_arrow_table()
                        outcome = "finished"
                    except Exception as e:  # noqa: BLE001 - any status ends the statement
                        outcome = "timeout" if "query.timeout" in str(e) else str(e)[:80]
                    failed_after = time.time() - started
                    started = time.time()
                    with conn.cursor() as cur:
                        cur.execute("SELECT 1")
                        cur.fetch_arrow_table()
                    next_ms = (time.time() - started) * 1000
                    # Busy until a quarter of a second passes with (almost) no CPU used.
                    started, last = time.time(), cpu_seconds(server.proc.pid)
                    while time.time() - started < 60:
                        time.sleep(0.25)
                        now = cpu_seconds(server.proc.pid)
                        if now - last < 0.05:
                            break
                        last = now
                    busy = time.time() - started - 0.25
                print(f"| {label} ({outcome}) | {failed_after:.2f} | {next_ms:.0f} | {busy:.2f} |",
                      flush=True)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
