"""Fuzzing the SQL surface: thousands of statements made by mutating TPC-H-style queries
(tokens deleted, repeated, swapped, replaced, nested), sent through ADBC to a running server
for a bounded time. The server never dies, never answers INTERNAL for a bad statement, and
its memory comes back down afterwards."""

from __future__ import annotations

import os
import random
import re
import tempfile
import time

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager

from harness import ADMIN_EMAIL, ADMIN_PASSWORD, Server

SEEDS = [
    "SELECT l_returnflag, l_linestatus, sum(l_quantity) AS sum_qty, avg(l_extendedprice * (1 - l_discount)) "
    "FROM tpch.lineitem WHERE l_shipdate <= DATE '1998-12-01' - INTERVAL '90' DAY "
    "GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus",
    "SELECT * FROM tpch.orders WHERE o_orderkey = 36",
    "SELECT n_name, count(*) FROM tpch.customer JOIN tpch.nation ON c_nationkey = n_nationkey "
    "WHERE c_acctbal > 100 GROUP BY n_name HAVING count(*) > 1 ORDER BY 2 DESC LIMIT 5",
    "WITH big AS (SELECT o_custkey, sum(o_totalprice) AS t FROM tpch.orders GROUP BY o_custkey) "
    "SELECT c_name, t FROM big JOIN tpch.customer ON c_custkey = o_custkey ORDER BY t DESC LIMIT 3",
    "SELECT r_name, row_number() OVER (PARTITION BY r_regionkey ORDER BY n_name) FROM tpch.region "
    "JOIN tpch.nation ON n_regionkey = r_regionkey",
    "SELECT CASE WHEN o_orderpriority LIKE '1%' THEN 'high' ELSE 'low' END AS p, count(*) "
    "FROM tpch.orders WHERE o_orderdate BETWEEN DATE '1995-01-01' AND DATE '1995-12-31' GROUP BY 1",
    "SELECT s_name FROM tpch.supplier WHERE s_suppkey IN (SELECT ps_suppkey FROM tpch.partsupp "
    "WHERE ps_availqty > 9000) AND NOT EXISTS (SELECT 1 FROM tpch.nation WHERE n_nationkey = s_nationkey "
    "AND n_name = 'PERU')",
    "SELECT substr(p_name, 1, 5), upper(p_brand), cast(p_size AS DOUBLE) / 3, coalesce(NULL, p_type) "
    "FROM tpch.part UNION ALL SELECT 'x', 'y', 1.5, 'z' ORDER BY 1 LIMIT 10",
]
VOCABULARY = (
    "SELECT FROM WHERE GROUP BY ORDER HAVING LIMIT OFFSET JOIN LEFT RIGHT FULL CROSS ON USING UNION ALL "
    "INTERSECT EXCEPT WITH AS CASE WHEN THEN ELSE END AND OR NOT IN EXISTS BETWEEN LIKE IS NULL TRUE FALSE "
    "DISTINCT OVER PARTITION ROWS CAST TRY_CAST INTERVAL DATE TIMESTAMP ARRAY STRUCT VALUES EXPLAIN COPY "
    "INSERT DELETE CREATE DROP SET ( ) , . * + - / % || = <> < > <= >= :: [ ] ; ' \" 0 1 -1 2147483648 "
    "9223372036854775808 1e308 0.0 'a' '' '%' x y tpch.lineitem tpch.orders tpch.nation system.audit "
    "information_schema.tables l_quantity o_orderkey n_name count sum avg min max abs round repeat lpad "
    "range unnest array_agg string_agg regexp_replace date_trunc now current_user generate_series"
).split()
TOKEN = re.compile(r"'[^']*'|\w+(?:\.\w+)*|<=|>=|<>|\|\||::|\S")


def mutate(sql: str, rng: random.Random) -> str:
    tokens = TOKEN.findall(sql)
    for _ in range(rng.randint(1, 4)):
        if not tokens:
            break
        i = rng.randrange(len(tokens))
        op = rng.randrange(7)
        if op == 0:
            del tokens[i]
        elif op == 1:
            tokens.insert(i, tokens[i])
        elif op == 2 and i + 1 < len(tokens):
            tokens[i], tokens[i + 1] = tokens[i + 1], tokens[i]
        elif op == 3:
            tokens[i] = rng.choice(VOCABULARY)
        elif op == 4:
            tokens.insert(i, rng.choice(VOCABULARY))
        elif op == 5:
            tokens = tokens[: max(1, i)]
        else:
            j = rng.randrange(i, min(len(tokens), i + 6) + 1)
            tokens = tokens[:i] + ["("] + tokens[i:j] + [")"] + tokens[j:]
    return " ".join(tokens)


def test_mutated_statements_never_crash_the_server_or_answer_internal():
    rng = random.Random(20261201)
    with tempfile.TemporaryDirectory() as tmp:
        # As a service runs: without RUST_BACKTRACE (symbolising a backtrace of the 1.9 GB
        # binary would itself cost hundreds of MiB, once).
        server = Server(["demo", "--scale", "0.01"], os.path.join(tmp, "data"),
                        config="query:\n  timeout: 2s\n  memory_limit: 512 MiB\n  memory_limit_per_user: 256 MiB\n",
                        env={"RUST_BACKTRACE": "0"})
        try:
            conn = flight_sql.connect(server.uri, autocommit=True,
                                      db_kwargs={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
            baseline = server.rss_bytes()
            internal, sent, failed = [], 0, 0
            stop_at = time.time() + 45
            while time.time() < stop_at and sent < 5000:
                sql = mutate(rng.choice(SEEDS), rng)
                sent += 1
                try:
                    with conn.cursor() as cur:
                        cur.execute(sql)
                        cur.fetch_arrow_table()
                except adbc_driver_manager.Error as e:
                    failed += 1
                    text = str(e)
                    if "INTERNAL" in text or "(Internal;" in text or "UNKNOWN" in text:
                        internal.append((sql, text[:400]))
                assert server.proc.poll() is None, f"the server died on: {sql}\n" + server.log()[-3000:]
            conn.close()
            time.sleep(2)
            after = server.rss_bytes()
        finally:
            server.stop()
    print(f"{sent} statements, {failed} refused, {len(internal)} internal")
    assert sent >= 1000
    assert internal == [], internal[:5]
    assert after - baseline < 300 * 1024 * 1024, (baseline, after)
