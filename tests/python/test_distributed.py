"""Distributed plans: a large statement received by one replica runs its stages on the others
and answers exactly what a single replica answers, policies included; the replicas' workers
take stages only from replicas of the cluster."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import pathlib
import re
import tempfile

import grpc
import pyarrow
import pyarrow.flight as flight
import pytest

from harness import ADMIN_EMAIL, ADMIN_PASSWORD, Server, api, connect, login, metric, on_postgres
from pgserver import free_port, postgres_server
from test_clients import statement_command

pytestmark = pytest.mark.skipif(on_postgres(), reason="runs in the embedded-state pass")

SECRET = "distributed-cluster-secret-0123456789abcdef"
PASSWORD = "distributed-user-password"
QUERIES = json.loads((pathlib.Path(__file__).resolve().parents[2] / "benches" / "queries.json").read_text())
Q3 = """SELECT l_orderkey, sum(l_extendedprice * (1 - l_discount)) AS revenue, o_orderdate, o_shippriority
FROM tpch.customer, tpch.orders, tpch.lineitem
WHERE c_mktsegment = 'BUILDING' AND c_custkey = o_custkey AND l_orderkey = o_orderkey
  AND o_orderdate < DATE '1995-03-15' AND l_shipdate > DATE '1995-03-15'
GROUP BY l_orderkey, o_orderdate, o_shippriority
ORDER BY revenue DESC, o_orderdate, l_orderkey
LIMIT 10"""


def start(tmp, env, tls=None, scale="0.01", threshold="64 KiB", query=""):
    """Replicas A (which generates the demo data), B and C spreading statements that scan
    more than `threshold`, and D (`query.distributed: off`) answering on its own: the
    reference. D still runs stages the others send. With `tls` (certificate, key, CA files),
    every replica serves and advertises grpc+tls and trusts the CA for stages. `query`: more
    lines of the `query` section. Returns once A spreads Q1 over all four."""
    started = []
    try:
        for name, args, mode in (("a", ["demo", "--scale", scale], "auto"), ("b", ["serve"], "auto"),
                                 ("c", ["serve"], "auto"), ("d", ["serve"], "off")):
            port = free_port()
            server = f"server:\n  advertise: {'grpc+tls' if tls else 'grpc'}://127.0.0.1:{port}\n"
            if tls:
                server += "  tls:\n    cert: {}\n    key: {}\n    ca: {}\n".format(*tls)
            config = (f"storage:\n  object_store: file://{tmp}/objects\n{server}"
                      f"query:\n  distributed: {mode}\n  distributed_threshold: {threshold}\n{query}")
            replica = Server(args, os.path.join(tmp, name), config=config, env=env,
                             flight_listen=f"127.0.0.1:{port}")
            replica.root_certs = open(tls[2]).read() if tls else None
            started.append(replica)
        wait_for_workers(started)
        return started
    except BaseException:
        stop(started)
        raise


def stop(replicas):
    for replica in replicas:
        replica.stop()


@pytest.fixture(scope="module")
def cluster():
    with postgres_server() as pg, tempfile.TemporaryDirectory() as tmp:
        replicas = start(tmp, state(pg))
        yield replicas
        stop(replicas)


@pytest.fixture(scope="module")
def tls_cluster():
    """The same cluster on TLS, certificates from one throwaway CA."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    with postgres_server() as pg, tempfile.TemporaryDirectory() as tmp:
        files = [os.path.join(tmp, f) for f in ("cert.pem", "key.pem", "ca.pem")]
        cert.cert_chain_pems[0].write_to_path(files[0])
        for extra in cert.cert_chain_pems[1:]:
            extra.write_to_path(files[0], append=True)
        cert.private_key_pem.write_to_path(files[1])
        ca.cert_pem.write_to_path(files[2])
        replicas = start(tmp, state(pg), tls=files)
        yield replicas
        stop(replicas)


def state(pg):
    url = f"postgres://{pg['user']}:{pg['password']}@{pg['host']}:{pg['port']}/{pg['dbname']}"
    return {"QUIVER_STATE": url, "QUIVER_JWT_SECRET": SECRET}


def tasks(text):
    """The most tasks any stage of an `EXPLAIN ANALYZE` ran in."""
    return max((int(n) for n in re.findall(r"Stage \d+ ── tasks=(\d+)", text)), default=0)


def wait_for_workers(replicas):
    """Until the first replica spreads Q1's scan over every replica (each reads the live
    replicas every 250 ms)."""
    import time

    deadline = time.time() + 15
    while time.time() < deadline:
        if tasks(plan(replicas[0], QUERIES["q1"])) == len(replicas):
            return
        time.sleep(0.2)
    raise AssertionError("the replicas did not become each other's workers:\n" + plan(replicas[0], QUERIES["q1"]))


def client_for(server):
    if getattr(server, "root_certs", None):
        return flight.FlightClient(f"grpc+tls://{server.flight}", tls_root_certs=server.root_certs)
    return flight.FlightClient(server.uri)


def info(server, sql, email=ADMIN_EMAIL, password=ADMIN_PASSWORD):
    """`GetFlightInfo` for `sql` on `server`, and the call options it was made with."""
    client = client_for(server)
    try:
        options = flight.FlightCallOptions(headers=[client.authenticate_basic_token(email, password)])
        return client.get_flight_info(flight.FlightDescriptor.for_command(statement_command(sql)), options), options
    finally:
        client.close()


def rows(server, sql, email=ADMIN_EMAIL, password=ADMIN_PASSWORD):
    """`sql`'s rows, planned and fetched on `server` itself, every endpoint in order (ADBC
    may redeem a ticket at any location an endpoint lists, which on a cluster names the
    other replicas too)."""
    found, options = info(server, sql, email, password)
    client = client_for(server)
    try:
        return [row for endpoint in found.endpoints
                for row in client.do_get(endpoint.ticket, options).read_all().to_pylist()]
    finally:
        client.close()


def plan(server, sql):
    """`EXPLAIN ANALYZE` of `sql` (it runs the statement: plain EXPLAIN shows the plan
    before it is cut into stages)."""
    return "\n".join(str(r["plan"]) for r in rows(server, "EXPLAIN ANALYZE " + sql))


def stages_run(server) -> float:
    """`quiver_distributed_stages_total` of a replica: stages it ran for others."""
    return metric(server, "quiver_distributed_stages_total")


def same(left, right):
    """Equal rows; floats (averages) to 12 significant digits, the order as given."""
    assert len(left) == len(right), (len(left), len(right))
    for a, b in zip(left, right):
        assert a.keys() == b.keys()
        for key in a:
            x, y = a[key], b[key]
            if isinstance(x, float):
                assert x == pytest.approx(y, rel=1e-12), (key, x, y)
            else:
                assert x == y, (key, x, y)


@pytest.mark.parametrize("name", ["q1", "q3"])
def test_a_large_statement_runs_on_every_replica_and_answers_as_one_replica_does(cluster, name):
    a, b, c, d = cluster
    sql = QUERIES["q1"] if name == "q1" else Q3
    spread = plan(a, sql)
    assert "DistributedExec" in spread, spread
    assert "DistributedExec" not in plan(d, sql)

    before = [stages_run(r) for r in (b, c)]
    distributed, single = rows(a, sql), rows(d, sql)
    assert single, "the reference answered nothing"
    same(distributed, single)
    after = [stages_run(r) for r in (b, c)]
    assert all(x > y for x, y in zip(after, before)), (before, after)


def test_a_row_filtered_and_masked_user_gets_the_same_rows_distributed(cluster):
    a, b, c, d = cluster
    admin = login(a, ADMIN_EMAIL, ADMIN_PASSWORD)
    email = "dana@example.com"
    assert api(a, "POST", "/api/admin/users", admin, {"email": email, "password": PASSWORD})[0] == 201
    assert api(a, "POST", "/api/admin/groups", admin, {"name": "shipping"})[0] == 201
    assert api(a, "POST", "/api/admin/groups/shipping/members", admin, {"email": email})[0] == 204
    for grant in (
        # current_user runs wherever the stage runs: it must be the caller there too.
        {"table": "tpch.lineitem", "row_filter": f"l_shipmode <> 'AIR' AND current_user = '{email}'",
         "column_masks": {"l_tax": "l_tax * 0", "l_comment": None}},
        {"table": "tpch.orders", "row_filter": "o_orderpriority <> '1-URGENT'"},
        {"table": "tpch.customer", "row_filter": "c_nationkey < 15"},
    ):
        status, body = api(a, "POST", "/api/admin/grants", admin, {"group": "shipping", **grant})
        assert status == 201, body

    who = {"email": email, "password": PASSWORD}
    for sql in (QUERIES["q1"], Q3):
        distributed, single = rows(a, sql, **who), rows(d, sql, **who)
        same(distributed, single)
        assert distributed != rows(a, sql), "the policy changed nothing"
    # The mask holds on every replica's part: every charge equals its base price net of discount.
    for row in rows(a, QUERIES["q1"], **who):
        assert row["sum_charge"] == row["sum_disc_price"], row
    # What the user cannot see is not read around the policy on any replica.
    assert rows(a, "SELECT count(*) AS n FROM tpch.lineitem WHERE l_shipmode = 'AIR'", **who) == [{"n": 0}]


def test_workers_take_stages_only_from_the_clusters_replicas(cluster):
    a, *_ = cluster
    channel = grpc.insecure_channel(a.flight)
    info = channel.unary_unary("/worker.WorkerService/GetWorkerInfo",
                               request_serializer=lambda _: b"", response_deserializer=lambda raw: raw)

    def principal(email):
        return base64.urlsafe_b64encode(email.encode()).rstrip(b"=").decode()

    def proof(secret, value):
        key = hmac.new(secret.encode(), b"quiver: distributed stages between replicas, v1", hashlib.sha256).digest()
        return base64.urlsafe_b64encode(hmac.new(key, value.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()

    who = principal(ADMIN_EMAIL)
    for metadata in ([],
                     [("x-quiver-principal", who)],
                     [("x-quiver-principal", who), ("x-quiver-proof", proof("not the cluster's secret", who))],
                     [("x-quiver-principal", principal("someone@example.com")), ("x-quiver-proof", proof(SECRET, who))]):
        with pytest.raises(grpc.RpcError) as refused:
            info(None, metadata=metadata, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED, metadata
        assert "only from this cluster's replicas" in refused.value.details()

    # With the cluster's proof (what a replica sends), the worker answers.
    info(None, metadata=[("x-quiver-principal", who), ("x-quiver-proof", proof(SECRET, who))], timeout=10)

    # A plan sent straight to the stage stream is refused before it is read.
    stages = channel.stream_stream("/worker.WorkerService/CoordinatorChannel",
                                   request_serializer=lambda raw: raw, response_deserializer=lambda raw: raw)
    with pytest.raises(grpc.RpcError) as refused:
        list(stages(iter([b"\x0a\x00"]), timeout=10))
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    channel.close()


def test_small_statements_and_plain_scans_stay_on_one_replica(cluster):
    a, *_ = cluster
    # A scan's rows all come back to the client anyway: no stages elsewhere (its parts
    # are endpoints instead, below).
    assert "DistributedExec" not in plan(a, "SELECT * FROM tpch.lineitem WHERE l_quantity > 10")
    # An aggregate over a table under the threshold.
    small = "SELECT n_regionkey, count(*) AS n FROM tpch.nation GROUP BY n_regionkey ORDER BY n_regionkey"
    assert "DistributedExec" not in plan(a, small)
    assert rows(a, small) == [{"n_regionkey": r, "n": 5} for r in range(5)]
    # A scan of a small table is one endpoint.
    assert len(info(a, "SELECT * FROM tpch.nation")[0].endpoints) == 1


SCAN = "SELECT l_orderkey, l_linenumber, l_quantity, l_shipmode FROM tpch.lineitem WHERE l_quantity > 10"


def test_a_large_scan_comes_in_parts_each_served_first_by_another_replica(cluster):
    a, b, c, d = cluster
    found, options = info(a, SCAN)
    parts = found.endpoints
    assert len(parts) > 1, "a scan larger than the threshold is not split"
    assert len(info(d, SCAN)[0].endpoints) == 1, "a replica with distributed: off splits nothing"
    firsts = [endpoint.locations[0].uri.decode() for endpoint in parts]
    assert len(set(firsts)) > 1, firsts

    # Each part fetched where it points first (this connection, or another replica).
    by_uri = {f"grpc://{r.flight}".encode(): r for r in (a, b, c, d)}
    fetched = []
    for endpoint in parts:
        uri = endpoint.locations[0].uri
        server = a if uri.startswith(b"arrow-flight-reuse-connection") else by_uri[uri]
        client = flight.FlightClient(server.uri)
        fetched += client.do_get(endpoint.ticket, options).read_all().to_pylist()
        client.close()
    key = lambda r: (r["l_orderkey"], r["l_linenumber"])  # noqa: E731
    reference = rows(d, SCAN)
    assert sorted(fetched, key=key) == sorted(reference, key=key)
    assert len(fetched) == rows(a, "SELECT count(*) AS n FROM tpch.lineitem WHERE l_quantity > 10")[0]["n"]

    # ADBC fetches every part at once, from the replicas they name.
    with connect(a, ADMIN_EMAIL, ADMIN_PASSWORD) as conn, conn.cursor() as cur:
        cur.execute(SCAN)
        table = cur.fetch_arrow_table()
    assert sorted(table.to_pylist(), key=key) == sorted(reference, key=key)


def test_a_part_refuses_to_mix_two_versions_of_a_table(cluster):
    from test_sync import sync

    a, *_ = cluster
    admin = login(a, ADMIN_EMAIL, ADMIN_PASSWORD)
    status, body = api(a, "POST", "/api/admin/tables", admin, {
        "name": "copies.lineitem", "connector": "sql", "options": {"query": "SELECT * FROM tpch.lineitem"}})
    assert status == 201, body
    assert sync(a, admin, "copies.lineitem")["status"] == "succeeded"
    found, options = info(a, "SELECT * FROM copies.lineitem")
    assert len(found.endpoints) > 1
    assert sync(a, admin, "copies.lineitem")["status"] == "succeeded"  # version 2
    client = client_for(a)
    with pytest.raises(pyarrow.ArrowInvalid) as refused:  # how pyarrow raises FAILED_PRECONDITION
        client.do_get(found.endpoints[1].ticket, options).read_all()
    client.close()
    assert "FAILED_PRECONDITION" in str(refused.value)
    assert "`copies.lineitem` changed since this result was planned" in str(refused.value), refused.value
    # Planned again, it reads version 2 whole.
    assert len(rows(a, "SELECT * FROM copies.lineitem")) == rows(a, "SELECT count(*) AS n FROM tpch.lineitem")[0]["n"]


def test_replicas_on_tls_send_each_other_stages_over_tls(tls_cluster):
    # The fixture waited until A's stages ran on all four replicas, over TLS.
    a, b, c, d = tls_cluster
    before = stages_run(b)
    same(rows(a, Q3), rows(d, Q3))
    assert stages_run(b) > before
