"""What governance costs a governed user: TPC-H Q1 and the point lookup for a user under three
tag masking policies and a restrictive row policy on each table, against the admin running the
same statements with the row policies' conditions written into `WHERE`; and the planning time
(`GetFlightInfo`) of a statement over a 100-column table with 20 tagged columns, for that user
and for the admin. Runs are interleaved, so drift on a shared machine hits both alike.

    python benches/governance.py --scale 1 --runs 5

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
from run import queries, rows_of
from test_clients import statement_command

CACHE = pathlib.Path.home() / ".cache" / "quiver"
ENGINE = "query:\n  results_cache_memory: 0\n"
ANALYST, PASSWORD = "gov-bench@example.com", "bench-password"
LINEITEM_ROWS = "l_shipmode IN ('AIR', 'MAIL', 'SHIP', 'TRUCK')"
ORDERS_ROWS = "o_orderstatus IN ('F', 'O', 'P')"


def ok(answer, *codes):
    """The body of an API answer whose status is one of `codes` (409: made by an earlier run)."""
    status, body = answer
    assert status in codes, body
    return body


def set_up(server: Server, token: str) -> None:
    """The analyst, their grants, three tag masks and a restrictive policy per table."""
    ok(api(server, "POST", "/api/admin/users", token, {"email": ANALYST, "password": PASSWORD}), 201, 409)
    ok(api(server, "POST", "/api/admin/groups", token, {"name": "govbench"}), 201, 409)
    ok(api(server, "POST", "/api/admin/groups/govbench/members", token, {"email": ANALYST}), 204, 409)
    grants = api(server, "GET", "/api/admin/grants", token)[1]
    for table, privilege in [("tpch.lineitem", "read"), ("tpch.orders", "read"), ("govbench.*", "write")]:
        if not any(g["group"] == "govbench" and g["table"] == table for g in grants):
            ok(api(server, "POST", "/api/admin/grants", token,
                   {"group": "govbench", "table": table, "privilege": privilege}), 201)
    ok(api(server, "PUT", "/api/admin/tables/tpch.lineitem/tags", token,
           {"columns": {"l_comment": ["pii.note"], "l_shipinstruct": ["ops"]}}), 200)
    ok(api(server, "PUT", "/api/admin/tables/tpch.orders/tags", token,
           {"columns": {"o_clerk": ["pii.person"], "o_comment": ["pii.note"]}}), 200)
    for policy in [
        {"name": "bench_notes", "kind": "mask", "tag": "pii.note", "mask": "redact"},
        {"name": "bench_people", "kind": "mask", "tag": "pii.person", "mask": "hash"},
        {"name": "bench_ops", "kind": "mask", "tag": "ops", "mask": "partial(1, 1)"},
        {"name": "bench_lineitem", "kind": "row", "table": "tpch.lineitem", "condition": LINEITEM_ROWS,
         "restrictive": True},
        {"name": "bench_orders", "kind": "row", "table": "tpch.orders", "condition": ORDERS_ROWS,
         "restrictive": True},
    ]:
        ok(api(server, "POST", "/api/admin/policies", token, policy), 201, 409)


def wide_table(server: Server, analyst) -> None:
    """`govbench.wide`, written by the analyst: 100 columns, 20 of them tagged (and masked
    for the analyst)."""
    columns = {f"c{i}": pa.array(range(1000), pa.int64()) for i in range(100)}
    with analyst.cursor() as cur:
        cur.adbc_ingest("wide", pa.table(columns), mode="replace", db_schema_name="govbench")
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    ok(api(server, "PUT", "/api/admin/tables/govbench.wide/tags", token,
           {"columns": {f"c{i}": ["pii.note"] for i in range(0, 100, 5)}}), 200)


def interleaved(runs: int, pairs: dict) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in pairs}
    for _ in range(runs):
        for name, fn in pairs.items():
            started = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", default="1")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    sql = queries()
    server = Server(["demo", "--scale", args.scale], str(CACHE / f"bench-sf{args.scale}"), config=ENGINE)
    try:
        token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
        set_up(server, token)
        admin = flight_sql.connect(server.uri, db_kwargs={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        analyst = flight_sql.connect(server.uri, db_kwargs={"username": ANALYST, "password": PASSWORD},
                                     autocommit=True)
        wide_table(server, analyst)
        by_hand = {
            "q1": sql["q1"].replace("WHERE ", f"WHERE {LINEITEM_ROWS} AND ", 1),
            "point_lookup": sql["point_lookup"].replace("WHERE ", f"WHERE {ORDERS_ROWS} AND ", 1),
        }
        with analyst.cursor() as cur, admin.cursor() as ref:
            cur.execute(sql["q1"])
            ref.execute(by_hand["q1"])
            assert cur.fetch_arrow_table().to_pylist() == ref.fetch_arrow_table().to_pylist(), "Q1 differs"
        results = {}
        for name, runs in [("q1", args.runs), ("point_lookup", args.runs * 5)]:
            rows_of(admin, by_hand[name])
            rows_of(analyst, sql[name])
            results.update({f"{name}_{who}": t for who, t in interleaved(runs, {
                "admin_filter_in_sql": lambda: rows_of(admin, by_hand[name]),
                "governed": lambda: rows_of(analyst, sql[name]),
            }).items()})

        wide = "SELECT * FROM govbench.wide WHERE c1 = 7"
        clients = {}
        for who, (email, password) in {"admin": (ADMIN_EMAIL, ADMIN_PASSWORD), "governed": (ANALYST, PASSWORD)}.items():
            client = flight.FlightClient(server.uri)
            options = flight.FlightCallOptions(headers=[client.authenticate_basic_token(email, password)])
            clients[who] = (client, options)
        descriptor = flight.FlightDescriptor.for_command(statement_command(wide))

        def plan(who):
            client, options = clients[who]
            return lambda: client.get_flight_info(descriptor, options)

        for who in clients:
            plan(who)()
        results.update({f"plan_wide_{who}": t for who, t in
                        interleaved(args.runs * 10, {who: plan(who) for who in clients}).items()})
        admin.close()
        analyst.close()
    finally:
        server.stop()

    print(f"Command: python benches/governance.py --scale {args.scale} --runs {args.runs}\n")
    print("| measurement | median ms |\n| --- | ---: |")
    for name, t in results.items():
        print(f"| {name} | {t * 1000:.1f} |")
    print("\n| ratio | value | target |\n| --- | ---: | --- |")
    for name in ["q1", "point_lookup"]:
        ratio = results[f"{name}_governed"] / results[f"{name}_admin_filter_in_sql"]
        print(f"| {name}: governed (3 tag masks + restrictive policy) / admin with the filter in SQL | "
              f"{ratio:.2f}× | ≤ 1.1× |")
    print(f"| planning, 100 columns with 20 tagged: governed / admin | "
          f"{results['plan_wide_governed'] / results['plan_wide_admin']:.2f}× | recorded |")


if __name__ == "__main__":
    main()
