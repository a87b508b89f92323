"""The clients analysts actually use — ADBC (DB-API), polars, pandas, pyarrow.flight —
against the real `quiver demo` server."""

from __future__ import annotations

import os
import tempfile
import threading
import time
import uuid

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight
import pytest

from harness import ADMIN_EMAIL, ADMIN_PASSWORD, Server, api, login, metric

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


@pytest.mark.parametrize("cookies", ["false", "true"])
def test_session_options_choose_the_schema_of_unqualified_names(server, cookies):
    """ADBC's current catalog and schema are Flight SQL session options: the session is
    found by its cookie when the client keeps cookies, else by the bearer credential; an
    unknown option or a schema that does not exist is refused and changes nothing; each
    connection has its own session."""
    kwargs = {"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD,
              "adbc.flight.sql.rpc.with_cookie_middleware": cookies}
    with flight_sql.connect(server.uri, db_kwargs=kwargs, autocommit=True) as conn, \
            flight_sql.connect(server.uri, db_kwargs=kwargs, autocommit=True) as other:
        assert conn.adbc_current_catalog == "quiver"
        # Before any is set, the schema in force is reported: unqualified names resolve there.
        assert conn.adbc_current_db_schema == "public"
        conn.adbc_current_db_schema = "tpch"
        assert conn.adbc_current_db_schema == "tpch"
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) AS n FROM nation")
            assert cur.fetch_arrow_table().column("n").to_pylist() == [25]
            cur.execute("SELECT n_name FROM nation JOIN tpch.region ON n_regionkey = r_regionkey "
                        "WHERE n_nationkey = ?", parameters=(1,))
            assert cur.fetch_arrow_table().column("n_name").to_pylist() == ["ARGENTINA"]
        for bad in [lambda: setattr(conn, "adbc_current_db_schema", "nope"),
                    lambda: setattr(conn, "adbc_current_catalog", "elsewhere"),
                    lambda: conn.adbc_connection.set_options(**{"adbc.flight.sql.session.option.colour": "red"})]:
            with pytest.raises(adbc_driver_manager.Error):
                bad()
        assert conn.adbc_current_db_schema == "tpch"
        with other.cursor() as cur, pytest.raises(adbc_driver_manager.Error, match="not found"):
            cur.execute("SELECT count(*) FROM nation")
        # Back to no schema: unqualified names are not found again.
        conn.adbc_connection.set_options(**{"adbc.flight.sql.session.optionerase.schema": ""})
        with conn.cursor() as cur, pytest.raises(adbc_driver_manager.Error, match="not found"):
            cur.execute("SELECT count(*) FROM nation")
        assert conn.adbc_current_db_schema == "public"


def test_untyped_parameters_take_the_type_of_their_values(conn):
    """`SELECT ?` has no type until a value is bound: the result has the value's type. A
    value of the wrong type for a typed parameter is refused at bind time, naming it."""
    with conn.cursor() as cur:
        for sql, value, arrow_type in [("SELECT ? AS a", 42, pa.int64()), ("SELECT $1 AS a", "x", pa.string()),
                                       ("SELECT ? AS a", 1.5, pa.float64()), ("SELECT ? AS a", True, pa.bool_())]:
            cur.execute(sql, parameters=(value,))
            table = cur.fetch_arrow_table()
            assert table.schema.field("a").type == arrow_type and table.column("a").to_pylist() == [value]
        cur.execute("SELECT n_name, ? AS tag FROM tpch.nation WHERE n_nationkey = ?", parameters=("t", 1))
        assert cur.fetch_arrow_table().to_pylist() == [{"n_name": "ARGENTINA", "tag": "t"}]
        with pytest.raises(adbc_driver_manager.Error, match=r"parameter \$1") as refused:
            cur.execute("SELECT n_name FROM tpch.nation WHERE n_nationkey = ?", parameters=("one",))
        assert "INVALID_ARGUMENT" in str(refused.value) or "Invalid" in str(refused.value)


def test_execute_schema_plans_without_running(conn):
    """ADBC's `execute_schema` (Flight `GetSchema`) answers a statement's result schema
    without running it: a statement that would fail on its first row still has one."""
    failing = "SELECT o_orderkey, CAST(o_comment AS INT) AS n FROM tpch.orders"
    with conn.cursor() as cur:
        schema = cur.adbc_execute_schema(failing)
        assert schema.names == ["o_orderkey", "n"] and schema.field("n").type == pa.int32()
        with pytest.raises(adbc_driver_manager.Error):
            cur.execute(failing)
            cur.fetch_arrow_table()
        assert cur.adbc_execute_schema("SELECT n_name FROM tpch.nation").field("n_name").type == pa.string()
        with pytest.raises(adbc_driver_manager.Error, match="not found"):
            cur.adbc_execute_schema("SELECT * FROM tpch.nope")


def test_incremental_execution_is_complete_at_the_first_poll(conn):
    """ADBC's incremental execution (`PollFlightInfo`): a statement is planned, not run,
    when polled, so the first poll carries every partition and progress 1.0; the
    partitions read back the same rows as a plain execute."""
    sql = "SELECT n_nationkey, n_name FROM tpch.nation ORDER BY n_nationkey"
    with conn.cursor() as cur:
        cur.adbc_statement.set_options(**{"adbc.statement.exec.incremental": "true"})
        partitions, schema = cur.adbc_execute_partitions(sql)
        assert schema.names == ["n_nationkey", "n_name"] and partitions
        assert cur.adbc_statement.get_option_float("adbc.statement.exec.progress") == 1.0
        tables = []
        for partition in partitions:
            cur.adbc_read_partition(partition)
            tables.append(cur.fetch_arrow_table())
        polled = pa.concat_tables(tables)
    with conn.cursor() as cur:
        cur.execute(sql)
        assert polled.to_pylist() == cur.fetch_arrow_table().to_pylist()
        assert polled.num_rows == 25


def test_get_objects_columns_carry_their_sql_types(conn):
    """`adbc_get_objects(depth="columns")` fills its xdbc fields from the column metadata of
    `GetTables(include_schema)`: SQL type name and JDBC type code, where the column lives,
    not auto-increment. (This ADBC driver reads no precision, scale or nullability from it;
    the JDBC driver does: tests/jdbc checks `getColumns`.)"""
    objects = conn.adbc_get_objects(depth="columns", db_schema_filter="tpch", table_name_filter="orders")
    columns = {c["column_name"]: c for cat in objects.read_all().to_pylist() for sch in cat["catalog_db_schemas"]
               for t in sch["db_schema_tables"] for c in t["table_columns"]}
    assert [c["ordinal_position"] for c in columns.values()] == list(range(1, len(columns) + 1))
    expected = {"o_orderkey": ("BIGINT", -5), "o_totalprice": ("DECIMAL", 3), "o_orderdate": ("DATE", 91),
                "o_comment": ("VARCHAR", 12)}
    for name, (type_name, code) in expected.items():
        column = columns[name]
        assert (column["xdbc_type_name"], column["xdbc_data_type"], column["xdbc_sql_data_type"]) == \
            (type_name, code, code), column
        assert (column["xdbc_scope_catalog"], column["xdbc_scope_schema"], column["xdbc_scope_table"]) == \
            ("quiver", "tpch", "orders")
        assert column["xdbc_is_autoincrement"] is False


def test_column_descriptions_reach_clients_as_remarks(server, conn):
    """A table definition's `columns:` descriptions are the columns' remarks: the
    `ARROW:FLIGHT:SQL:REMARKS` field metadata of `GetTables(include_schema)`, which ADBC's
    `adbc_get_table_schema` hands on (and the JDBC driver reads into `REMARKS`, tests/jdbc;
    this ADBC driver leaves `adbc_get_objects`' `remarks` empty)."""
    from test_sync import sync

    admin = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    name = f"docs.nations_{uuid.uuid4().hex[:6]}"
    status, body = api(server, "POST", "/api/admin/tables", admin, {
        "name": name, "connector": "sql", "options": {"query": "SELECT n_nationkey, n_name FROM tpch.nation"},
        "columns": {"n_name": "The nation's name, upper case"}})
    assert status == 201, body
    assert sync(server, admin, name)["status"] == "succeeded"
    schema, table = name.split(".")
    fields = {f.name: f.metadata or {} for f in conn.adbc_get_table_schema(table, db_schema_filter=schema)}
    assert fields["n_name"][b"ARROW:FLIGHT:SQL:REMARKS"].decode() == "The nation's name, upper case"
    assert b"ARROW:FLIGHT:SQL:REMARKS" not in fields["n_nationkey"]


ORDER_KEYS = "ORDER BY l_orderkey, l_linenumber"


@pytest.mark.parametrize("columns, tail", [
    ("l_orderkey, l_linenumber, l_comment", ""),
    ("l_comment, l_orderkey, l_linenumber", " LIMIT 70000"),
    ("upper(l_comment) AS l_comment, l_orderkey, l_linenumber", ""),
])
def test_sorted_results_with_strings_arrive_in_order(conn, columns, tail):
    """Strings are cast to plain types on their way out; an ordered result keeps its order
    across every batch (the cast sits below the sort), also when the sort key is not
    selected."""
    def fetch(sql):
        with conn.cursor() as cur:
            cur.execute(sql)
            return cur.fetch_arrow_table()

    table = fetch(f"SELECT {columns} FROM tpch.lineitem {ORDER_KEYS}{tail}")
    assert table.num_rows > 50_000 and view_types(table.schema) == []
    pairs = list(zip(table.column("l_orderkey").to_pylist(), table.column("l_linenumber").to_pylist()))
    assert pairs == sorted(pairs)
    comment = next(c for c in columns.split(", ") if "l_comment" in c)
    comments = fetch(f"SELECT {comment} FROM tpch.lineitem {ORDER_KEYS}{tail}")
    assert comments.column(0).to_pylist() == table.column("l_comment").to_pylist()


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


def test_a_large_scan_comes_in_parts_that_add_up_to_the_whole():
    """A plain scan reading more than `query.distributed_threshold` is several endpoints on a
    single server too, fetched on the same connection; together they are exactly the rows
    of the statement fetched whole, and ADBC reads them side by side. A sorted result is one
    endpoint marked ordered."""
    scan = "SELECT l_orderkey, l_linenumber, l_comment FROM tpch.lineitem WHERE l_quantity > 10"
    key = lambda r: (r["l_orderkey"], r["l_linenumber"])  # noqa: E731
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(["demo", "--scale", "0.01"], os.path.join(tmp, "data"),
                        config="query:\n  distributed_threshold: 256KiB\n")
        try:
            client = flight.FlightClient(server.uri)
            options = flight.FlightCallOptions(headers=[client.authenticate_basic_token(ADMIN_EMAIL, ADMIN_PASSWORD)])

            def info(sql):
                return client.get_flight_info(flight.FlightDescriptor.for_command(statement_command(sql)), options)

            parts = info(scan)
            assert len(parts.endpoints) > 1 and not parts.ordered
            assert all(list(e.locations) == [] for e in parts.endpoints), "parts are fetched on this connection"
            fetched = [row for e in parts.endpoints for row in client.do_get(e.ticket, options).read_all().to_pylist()]

            whole = info(scan + " ORDER BY l_orderkey, l_linenumber")
            assert len(whole.endpoints) == 1 and whole.ordered
            reference = client.do_get(whole.endpoints[0].ticket, options).read_all().to_pylist()
            assert len(reference) > 0 and sorted(fetched, key=key) == reference
            client.close()

            with flight_sql.connect(server.uri, db_kwargs={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
                                    autocommit=True) as conn, conn.cursor() as cur:
                cur.execute(scan)
                assert sorted(cur.fetch_arrow_table().to_pylist(), key=key) == reference
        finally:
            server.stop()


@pytest.mark.parametrize("compression", ["lz4", "zstd"])
def test_compressed_results_read_the_same_in_every_client(compression):
    """`query.compression`: batches are compressed on the wire, fewer bytes are sent, and
    ADBC and pyarrow.flight read exactly what an uncompressing server sends."""
    sql = "SELECT * FROM tpch.orders ORDER BY o_orderkey"

    def fetch(s):
        client = flight.FlightClient(s.uri)
        options = flight.FlightCallOptions(headers=[client.authenticate_basic_token(ADMIN_EMAIL, ADMIN_PASSWORD)])
        info = client.get_flight_info(flight.FlightDescriptor.for_command(statement_command(sql)), options)
        table = client.do_get(info.endpoints[0].ticket, options).read_all()
        client.close()
        with flight_sql.connect(s.uri, db_kwargs={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD},
                                autocommit=True) as conn, conn.cursor() as cur:
            cur.execute(sql)
            assert cur.fetch_arrow_table() == table
        time.sleep(0.5)  # the byte counts are written as each query ends
        return table, metric(s, "quiver_bytes_streamed_total")

    with tempfile.TemporaryDirectory() as tmp:
        compressed = Server(["demo", "--scale", "0.01"], os.path.join(tmp, "data"),
                            config=f"query:\n  compression: {compression}\n  results_cache_memory: 0\n")
        try:
            table, sent = fetch(compressed)
        finally:
            compressed.stop()
        plain = Server(["demo", "--scale", "0.01"], os.path.join(tmp, "data"),
                       config="query:\n  results_cache_memory: 0\n")
        try:
            reference, plain_sent = fetch(plain)
        finally:
            plain.stop()
    assert table.num_rows == 15_000 and table == reference
    assert sent < plain_sent * 0.8, (sent, plain_sent)


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
