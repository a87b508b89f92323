"""Ingest benchmark: CSV → parquet and PostgreSQL → parquet through Quiver's connectors, each
beside DuckDB doing the same conversion in the same run (`COPY … TO … (FORMAT parquet)`);
and Flight SQL bulk ingest (`adbc_ingest` of TPC-H lineitem into a running server) beside
DuckDB writing the same Arrow table to local parquet in this process.

    make bench-ingest                       # 2 million rows, and lineitem at scale 1
    python benches/ingest.py --rows 500000 --runs 3 --flight-scale 0.1

Quiver runs `quiver sync` (server stopped); its time is the sync's own `land_seconds` log
field (source read + parquet written + fsync), so process start-up is not counted; the
profile Quiver computes after landing is reported separately as `sync_seconds`. DuckDB runs
in this process (pip `duckdb`, with the `postgres` extension from pip
`duckdb-extension-postgres`, since extensions cannot be downloaded here). Both write
LZ4 parquet (`LZ4_RAW`) to the same disk. Prints medians and the ratio Quiver / DuckDB.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import tempfile
import time

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import psycopg

from harness import quiver_bin
from pgserver import postgres_server


def make_table(rows: int) -> pa.Table:
    """Orders-like rows: keys, text, money, dates, timestamps, flags."""
    rng = np.random.default_rng(42)
    names = np.array([f"customer-{i:04d}" for i in range(1000)])
    start = np.datetime64("2020-01-01")
    return pa.table({
        "id": pa.array(np.arange(rows, dtype=np.int64)),
        "customer": pa.array(names[rng.integers(0, 1000, rows)]),
        "quantity": pa.array(rng.integers(1, 50, rows, dtype=np.int32)),
        "amount": pa.array(np.round(rng.random(rows) * 10_000, 2)),
        "ordered_on": pa.array((start + rng.integers(0, 2000, rows).astype("timedelta64[D]")).astype("datetime64[D]")),
        "updated_at": pa.array((np.datetime64("2024-01-01T00:00:00") + rng.integers(0, 10**8, rows).astype("timedelta64[s]")).astype("datetime64[us]")),
        "shipped": pa.array(rng.random(rows) < 0.7),
        "note": pa.array(np.char.add("note ", rng.integers(0, 10**6, rows).astype(str))),
    })


def quiver_sync(table: str, config: pathlib.Path, data: pathlib.Path) -> tuple[float, float]:
    """Runs `quiver sync`; returns (land_seconds, whole sync seconds) from its log."""
    done = subprocess.run([quiver_bin(), "sync", table, "--config", str(config), "--data-dir", str(data)],
                          capture_output=True, text=True, env=dict(os.environ, RUST_LOG="info", NO_COLOR="1"))
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    land = float(re.search(r"land_seconds=([0-9.]+)", done.stderr).group(1))
    whole = float(re.search(r"sync succeeded.*?seconds=([0-9.]+)", done.stderr).group(1))
    return land, whole


def median(values):
    return statistics.median(values)


def duckdb_postgres(conn: duckdb.DuckDBPyConnection):
    """Loads DuckDB's postgres extension from the pip package (no downloads here)."""
    import duckdb_extension_postgres

    packaged = glob.glob(os.path.join(os.path.dirname(duckdb_extension_postgres.__file__),
                                      "extensions", "*", "*.duckdb_extension"))[0]
    # The file must carry the extension's own name for its entry point to be found.
    named = os.path.join(tempfile.gettempdir(), "postgres_scanner.duckdb_extension")
    shutil.copy(packaged, named)
    conn.execute(f"LOAD '{named}'")


def flight_ingest(scale: float, runs: int, work: pathlib.Path):
    """`adbc_ingest` of lineitem (read from the demo at `scale`) into the same server, beside
    DuckDB writing that Arrow table to parquet; the server's RSS is sampled throughout."""
    import threading

    import adbc_driver_flightsql.dbapi as flight_sql

    from harness import ADMIN_EMAIL, ADMIN_PASSWORD, Server

    server = Server(["demo", "--scale", str(scale)], str(work / "flight-data"))
    try:
        conn = flight_sql.connect(server.uri, db_kwargs={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        with conn.cursor() as cur:
            cur.execute("SELECT * FROM tpch.lineitem")
            lineitem = cur.fetch_arrow_table()
        arrow_bytes = lineitem.nbytes
        print(f"lineitem at scale {scale}: {lineitem.num_rows} rows, {arrow_bytes / 2**20:.0f} MiB of Arrow",
              flush=True)
        duck = duckdb.connect()
        baseline = server.rss_bytes()
        duck_times, quiver_times, peaks = [], [], []
        for run in range(runs):
            started = time.perf_counter()
            duck.execute(f"COPY (SELECT * FROM lineitem) TO '{work}/duck-lineitem.parquet' "
                         "(FORMAT parquet, COMPRESSION lz4_raw)")
            duck_times.append(time.perf_counter() - started)
            peak, done = [0], threading.Event()

            def sample():
                while not done.is_set():
                    peak[0] = max(peak[0], server.rss_bytes())
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample)
            sampler.start()
            started = time.perf_counter()
            with conn.cursor() as cur:
                cur.adbc_ingest("lineitem_copy", lineitem, mode="replace", db_schema_name="me")
            quiver_times.append(time.perf_counter() - started)
            done.set()
            sampler.join()
            peaks.append(peak[0])
        conn.close()
        duck_s, quiver_s = median(duck_times), median(quiver_times)
        print()
        print("| write of lineitem | DuckDB local s | Quiver adbc_ingest s | Quiver MB/s | Quiver / DuckDB throughput "
              "| server RSS before | peak RSS during ingest |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        print(f"| scale {scale}, {lineitem.num_rows:,} rows | {duck_s:.2f} | {quiver_s:.2f} | "
              f"{arrow_bytes / 2**20 / quiver_s:.0f} | {duck_s / quiver_s:.2f}× | {baseline / 2**20:.0f} MiB | "
              f"{max(peaks) / 2**20:.0f} MiB |", flush=True)
    finally:
        server.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--flight-scale", type=float, default=1.0,
                        help="TPC-H scale of the lineitem ingested over Flight SQL (0: skip)")
    parser.add_argument("--flight-only", action="store_true", help="only the Flight SQL ingest")
    args = parser.parse_args()
    if args.flight_only:
        work = pathlib.Path(tempfile.mkdtemp(prefix="quiver-ingest-"))
        try:
            flight_ingest(args.flight_scale, args.runs, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return

    work = pathlib.Path(tempfile.mkdtemp(prefix="quiver-ingest-"))
    try:
        table = make_table(args.rows)
        csv_path = work / "orders.csv"
        pacsv.write_csv(table, csv_path)
        print(f"{args.rows} rows, CSV {csv_path.stat().st_size / 2**20:.1f} MiB", flush=True)
        results = {}

        with postgres_server() as pg:
            with psycopg.connect(**pg, autocommit=True) as conn:
                conn.execute("""CREATE TABLE orders (id bigint PRIMARY KEY, customer text, quantity integer,
                    amount numeric(12,2), ordered_on date, updated_at timestamp, shipped boolean, note text)""")
                with conn.cursor().copy("COPY orders FROM STDIN (FORMAT csv, HEADER true)") as copy:
                    with open(csv_path, "rb") as f:
                        while chunk := f.read(1 << 20):
                            copy.write(chunk)
                conn.execute("VACUUM ANALYZE orders")

            config = work / "quiver.yaml"
            os.environ["PG_PASSWORD"] = pg["password"]
            config.write_text("tables:\n" + "".join(f"  - {json.dumps(t)}\n" for t in [
                {"name": "bench.csv_orders", "connector": "files", "options": {"path": str(csv_path)}},
                {"name": "bench.pg_orders", "connector": "postgres", "options": {
                    "host": pg["host"], "port": pg["port"], "database": pg["dbname"], "user": pg["user"],
                    "password": "${PG_PASSWORD}", "table": "public.orders"}},
            ]))

            duck = duckdb.connect()
            duckdb_postgres(duck)
            duck.execute(f"ATTACH 'host={pg['host']} port={pg['port']} dbname={pg['dbname']} "
                         f"user={pg['user']} password={pg['password']}' AS pg (TYPE postgres, READ_ONLY)")
            data = work / "data"
            for name, reference_sql, quiver_table in [
                ("csv", f"COPY (SELECT * FROM read_csv('{csv_path}')) TO '{work}/duck.parquet' "
                        "(FORMAT parquet, COMPRESSION lz4_raw)", "bench.csv_orders"),
                ("postgres", f"COPY (SELECT * FROM pg.public.orders) TO '{work}/duck.parquet' "
                             "(FORMAT parquet, COMPRESSION lz4_raw)", "bench.pg_orders"),
            ]:
                duck_times, land_times, sync_times = [], [], []
                for _ in range(args.runs):
                    started = time.perf_counter()
                    duck.execute(reference_sql)
                    duck_times.append(time.perf_counter() - started)
                    land, whole = quiver_sync(quiver_table, config, data)
                    land_times.append(land)
                    sync_times.append(whole)
                results[name] = (median(duck_times), median(land_times), median(sync_times))
                print(f"{name}: duckdb {results[name][0]:.2f}s, quiver land {results[name][1]:.2f}s, "
                      f"quiver sync (with profile) {results[name][2]:.2f}s", flush=True)

        print()
        print("| conversion | DuckDB s | Quiver land s | rows/s (Quiver) | ratio | Quiver sync incl. profile s |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for name, (duck_s, land_s, sync_s) in results.items():
            print(f"| {name} → parquet | {duck_s:.2f} | {land_s:.2f} | {args.rows / land_s:,.0f} | "
                  f"{land_s / duck_s:.2f}× | {sync_s:.2f} |")
        if args.flight_scale > 0:
            print()
            flight_ingest(args.flight_scale, args.runs, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
