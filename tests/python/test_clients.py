"""The clients analysts actually use — ADBC (DB-API), polars, pandas, pyarrow.flight —
against the real `quiver demo` server."""

from __future__ import annotations

import os
import tempfile
import threading
import time

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Server

TPCH_TABLES = ["customer", "lineitem", "nation", "orders", "part", "partsupp", "region", "supplier"]
# A query that runs for a long time on any machine.
SLOW_QUERY = "SELECT count(*) FROM generate_series(1, 1000000000000) WHERE value % 7 = 3"


def test_adbc_query_returns_arrow(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT n_nationkey, n_name FROM tpch.nation ORDER BY n_nationkey")
        table = cur.fetch_arrow_table()
    assert table.num_rows == 25
    assert table.schema.field("n_nationkey").type == pa.int64()
    assert table.column("n_name")[7].as_py() == "GERMANY"


def test_adbc_tpch_q1_shape(conn):
    with conn.cursor() as cur:
        cur.execute("""
            SELECT l_returnflag, l_linestatus, sum(l_quantity) AS sum_qty, count(*) AS n
            FROM tpch.lineitem WHERE l_shipdate <= DATE '1998-09-02'
            GROUP BY l_returnflag, l_linestatus ORDER BY l_returnflag, l_linestatus""")
        rows = cur.fetchall()
    assert [(r[0], r[1]) for r in rows] == [("A", "F"), ("N", "F"), ("N", "O"), ("R", "F")]
    assert all(r[3] > 0 for r in rows)


def test_full_scan_is_streamed_in_batches(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM tpch.lineitem")
        total = cur.fetchone()[0]
        cur.execute("SELECT * FROM tpch.lineitem")
        reader = cur.fetch_record_batch()
        batches = rows = 0
        for batch in reader:
            batches += 1
            rows += batch.num_rows
    assert rows == total > 500_000
    assert batches > 10


def test_server_memory_stays_bounded_while_a_slow_client_reads(server, conn):
    """The full lineitem result (~100 MB as Arrow) is never held by the server at once: with
    the client reading slowly, the server's RSS grows by far less than the result size."""
    with conn.cursor() as cur:
        cur.execute("SELECT * FROM tpch.lineitem")
        reader = cur.fetch_record_batch()
        first = reader.read_next_batch()
        time.sleep(1.0)
        baseline = server.rss_bytes()
        peak, result_bytes = baseline, first.nbytes
        for i, batch in enumerate(reader):
            result_bytes += batch.nbytes
            if i % 10 == 0:
                time.sleep(0.05)
                peak = max(peak, server.rss_bytes())
    assert result_bytes > 80_000_000
    growth = peak - baseline
    assert growth < result_bytes / 2, f"server RSS grew {growth} bytes for a {result_bytes}-byte result"


def test_adbc_prepared_statement_with_parameters(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT n_name FROM tpch.nation WHERE n_nationkey = ?", parameters=(7,))
        assert cur.fetchall() == [("GERMANY",)]
        cur.execute("SELECT n_name FROM tpch.nation WHERE n_nationkey = $1", parameters=(8,))
        assert cur.fetchall() == [("INDIA",)]
        cur.execute("SELECT count(*) FROM tpch.orders WHERE o_orderdate < ? AND o_orderstatus = ?",
                    parameters=(pa.scalar(10000, pa.date32()).as_py(), "F"))
        assert cur.fetchone()[0] > 0
        # The same statement again with another parameter (JDBC-style reuse).
        cur.execute("SELECT n_name FROM tpch.nation WHERE n_nationkey = ?", parameters=(1,))
        assert cur.fetchall() == [("ARGENTINA",)]


def test_adbc_get_objects_and_table_schema(conn):
    objects = conn.adbc_get_objects(depth="all").read_all().to_pylist()
    assert [c["catalog_name"] for c in objects] == ["quiver"]
    schemas = {s["db_schema_name"]: s for s in objects[0]["catalog_db_schemas"]}
    assert "tpch" in schemas
    tables = {t["table_name"]: t for t in schemas["tpch"]["db_schema_tables"]}
    assert sorted(tables) == TPCH_TABLES
    columns = [c["column_name"] for c in tables["nation"]["table_columns"]]
    assert columns == ["n_nationkey", "n_name", "n_regionkey", "n_comment"]

    schema = conn.adbc_get_table_schema("orders", db_schema_filter="tpch")
    assert schema.field("o_orderdate").type == pa.date32()
    assert schema.field("o_totalprice").type == pa.decimal128(15, 2)

    # Filters as DBeaver and Tableau send them.
    only = conn.adbc_get_objects(depth="tables", db_schema_filter="tpch",
                                 table_name_filter="part%").read_all().to_pylist()
    names = sorted(t["table_name"] for s in only[0]["catalog_db_schemas"]
                   for t in s["db_schema_tables"])
    assert names == ["part", "partsupp"]
    assert conn.adbc_get_table_types() == ["TABLE"]


def view_types(schema: pa.Schema) -> list[str]:
    """The fields of `schema` that are (or hold) Arrow view types."""
    return [f"{f.name}: {f.type}" for f in schema if "_view" in str(f.type)]


def test_no_view_types_reach_any_client(server, conn):
    """Strings are views inside the engine; clients (JDBC, ODBC bridges, older pyarrow) get
    plain utf8 and binary, from every path."""
    statement = ("SELECT n_name, CAST(n_nationkey AS VARCHAR) AS k, CAST(n_name AS BYTEA) AS b, "
                 "[n_name] AS names, named_struct('name', n_name) AS s, arrow_cast('v', 'Utf8View') AS v "
                 "FROM tpch.nation ORDER BY n_nationkey")
    with conn.cursor() as cur:
        cur.execute(statement)
        table = cur.fetch_arrow_table()
        assert view_types(table.schema) == [] and table.num_rows == 25
        assert table.column("n_name")[0].as_py() == "ALGERIA" and table.column("v")[0].as_py() == "v"
        assert table.schema.field("names").type == pa.list_(pa.field("item", pa.string()))
        # Prepared, with a string parameter and an untyped one cast to VARCHAR.
        cur.execute("SELECT n_name, CAST(? AS VARCHAR) AS p FROM tpch.nation WHERE n_name = ?",
                    parameters=("x", "FRANCE"))
        table = cur.fetch_arrow_table()
        assert view_types(table.schema) == [] and table.to_pylist() == [{"n_name": "FRANCE", "p": "x"}]
        assert view_types(cur.adbc_prepare("SELECT n_name FROM tpch.nation WHERE n_comment <> ?")) == []
    # Metadata: table schemas and column types.
    assert view_types(conn.adbc_get_table_schema("nation", db_schema_filter="tpch")) == []
    assert conn.adbc_get_table_schema("nation", db_schema_filter="tpch").field("n_name").type == pa.string()

    # pyarrow.flight: the FlightInfo's schema and the stream's.
    client = flight.FlightClient(server.uri)
    options = flight.FlightCallOptions(headers=[client.authenticate_basic_token(ADMIN_EMAIL, ADMIN_PASSWORD)])
    info = client.get_flight_info(flight.FlightDescriptor.for_command(statement_command(statement)), options)
    assert view_types(info.schema) == []
    for _ in range(2):  # a ticket redeemed twice gives the same result
        result = client.do_get(info.endpoints[0].ticket, options).read_all()
        assert view_types(result.schema) == [] and result.num_rows == 25
    client.close()


def test_adbc_get_info_names_the_server(conn):
    info = conn.adbc_get_info()
    assert info["vendor_name"] == "Quiver"
    assert info["vendor_version"]


def test_polars_and_pandas_read_through_adbc(conn):
    import pandas as pd
    import polars as pl

    df = pl.read_database("SELECT r_regionkey, r_name FROM tpch.region ORDER BY r_regionkey",
                          connection=conn)
    assert df.shape == (5, 2)
    assert df["r_name"].to_list()[0] == "AFRICA"

    with conn.cursor() as cur:
        cur.execute("SELECT c_mktsegment, count(*) AS n FROM tpch.customer GROUP BY 1 ORDER BY 1")
        pdf = cur.fetch_df()
    assert isinstance(pdf, pd.DataFrame)
    assert list(pdf.columns) == ["c_mktsegment", "n"]
    assert pdf["n"].sum() == 15_000


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def statement_command(sql: str) -> bytes:
    """A Flight SQL CommandStatementQuery wrapped in a protobuf Any."""
    type_url = b"type.googleapis.com/arrow.flight.protocol.sql.CommandStatementQuery"
    return _field(1, type_url) + _field(2, _field(1, sql.encode()))


def test_pyarrow_flight_with_basic_handshake(server):
    client = flight.FlightClient(server.uri)
    header = client.authenticate_basic_token(ADMIN_EMAIL, ADMIN_PASSWORD)
    assert header[0] == b"authorization" and header[1].startswith(b"Bearer ")
    options = flight.FlightCallOptions(headers=[header])
    info = client.get_flight_info(
        flight.FlightDescriptor.for_command(statement_command("SELECT * FROM tpch.region")), options)
    assert info.schema.names == ["r_regionkey", "r_name", "r_comment"]
    for endpoint in info.endpoints:
        # Empty means "this server"; anything else must be reachable.
        for location in endpoint.locations:
            assert "0.0.0.0" not in location.uri.decode()
        table = client.do_get(endpoint.ticket, options).read_all()
        assert table.num_rows == 5

    with pytest.raises(flight.FlightUnauthenticatedError):
        client.get_flight_info(flight.FlightDescriptor.for_command(statement_command("SELECT 1")))
    with pytest.raises(flight.FlightUnauthenticatedError):
        flight.FlightClient(server.uri).authenticate_basic_token(ADMIN_EMAIL, "wrong")


def test_adbc_wrong_password_is_refused(server):
    with pytest.raises(adbc_driver_manager.Error) as err:
        c = flight_sql.connect(server.uri, db_kwargs={"username": ADMIN_EMAIL, "password": "nope"})
        c.cursor().execute("SELECT 1")
    assert "invalid e-mail or password" in str(err.value)


@pytest.mark.parametrize("sql", [
    "CREATE TABLE t AS SELECT 1",
    "INSERT INTO tpch.nation VALUES (99, 'X', 0, 'x')",
    "DROP TABLE tpch.nation",
    "COPY (SELECT 1) TO '/tmp/quiver-should-not-exist.csv' STORED AS CSV",
    "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
    "SET datafusion.execution.batch_size = 1",
    "SELECT * FROM '/etc/passwd'",
])
def test_writes_and_file_reads_are_refused(conn, sql):
    with conn.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error) as err:
            cur.execute(sql)
        message = str(err.value)
        assert "read-only" in message or "not found" in message, message
        with pytest.raises(adbc_driver_manager.Error):
            cur.execute(sql, parameters=())
    assert not os.path.exists("/tmp/quiver-should-not-exist.csv")


def test_adbc_cancel_stops_a_running_query(server, conn):
    cur = conn.cursor()
    outcome = {}

    def run():
        try:
            cur.execute(SLOW_QUERY)
            cur.fetchall()
            outcome["result"] = "finished"
        except Exception as e:  # noqa: BLE001 - the cancellation error is the point
            outcome["result"] = str(e)

    thread = threading.Thread(target=run)
    started = time.time()
    thread.start()
    time.sleep(1.5)
    cur.adbc_cancel()
    thread.join(timeout=60)
    assert not thread.is_alive()
    assert "cancel" in outcome["result"].lower(), outcome
    assert time.time() - started < 30
    # The query really stopped on the server: its log line says so.
    deadline = time.time() + 10
    while time.time() < deadline and "cancelled" not in _query_lines(server, "value % 7 = 3"):
        time.sleep(0.2)
    assert "cancelled" in _query_lines(server, "value % 7 = 3")
    cur.close()


def _query_lines(server, needle: str) -> str:
    return "\n".join(l for l in server.log_lines if needle in l and "outcome" in l)


def test_client_disconnect_stops_the_query(server):
    client = flight.FlightClient(server.uri)
    options = flight.FlightCallOptions(headers=[client.authenticate_basic_token(ADMIN_EMAIL, ADMIN_PASSWORD)])
    sql = SLOW_QUERY + " AND value > 1"
    info = client.get_flight_info(flight.FlightDescriptor.for_command(statement_command(sql)), options)
    reader = client.do_get(info.endpoints[0].ticket, options)
    time.sleep(1.0)
    reader.cancel()
    client.close()
    deadline = time.time() + 20
    while time.time() < deadline and "value > 1" not in _query_lines(server, "value > 1"):
        time.sleep(0.2)
    line = _query_lines(server, "value > 1")
    assert "cancelled" in line, line


def test_query_timeout_gives_a_clear_error():
    with tempfile.TemporaryDirectory() as tmp:
        s = Server(["demo", "--scale", "0.01"], os.path.join(tmp, "data"),
                   config="query:\n  timeout: 1s\n")
        try:
            c = flight_sql.connect(s.uri, db_kwargs={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
            with c.cursor() as cur, pytest.raises(adbc_driver_manager.Error) as err:
                cur.execute(SLOW_QUERY)
                cur.fetchall()
            assert "query.timeout" in str(err.value)
            c.close()
        finally:
            s.stop()
