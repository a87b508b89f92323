"""Per-user limits on a server configured tightly: result caps fail loudly, a user's
concurrent queries are capped, and a query over its memory share spills or fails cleanly
while the server stays up."""

from __future__ import annotations

import os
import tempfile
import threading
import time

import adbc_driver_manager
import pyarrow as pa
import pytest

from harness import ADMIN_EMAIL, ADMIN_PASSWORD, Server, connect

CONFIG = """
query:
  max_concurrent_per_user: 1
  memory_limit_per_user: 16 MiB
  max_result_rows: 10000
  max_result_bytes: 4 MiB
auth:
  ticket_lifetime: 1s
"""
SLOW_QUERY = "SELECT count(*) FROM generate_series(1, 1000000000000) WHERE value % 7 = 3"


@pytest.fixture(scope="module")
def tight():
    with tempfile.TemporaryDirectory() as tmp:
        s = Server(["demo", "--scale", "0.01"], os.path.join(tmp, "data"), config=CONFIG)
        yield s
        s.stop()


def run(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetch_arrow_table()


def test_result_row_cap_fails_loudly(tight):
    with connect(tight, ADMIN_EMAIL, ADMIN_PASSWORD) as c:
        assert run(c, "SELECT * FROM tpch.nation").num_rows == 25
        with pytest.raises(adbc_driver_manager.Error) as info:
            run(c, "SELECT * FROM tpch.lineitem")
        assert "query.max_result_rows" in str(info.value)
        assert run(c, "SELECT * FROM tpch.lineitem LIMIT 10000").num_rows == 10000


def test_result_byte_cap_fails_loudly(tight):
    with connect(tight, ADMIN_EMAIL, ADMIN_PASSWORD) as c:
        assert run(c, "SELECT repeat('x', 1000) AS s FROM generate_series(1, 1000)").num_rows == 1000
        with pytest.raises(adbc_driver_manager.Error) as info:
            run(c, "SELECT repeat('x', 1000) AS s FROM generate_series(1, 9000)")
        assert "query.max_result_bytes" in str(info.value)


def test_expired_tickets_are_refused(tight):
    import pyarrow.flight as flight
    from test_clients import statement_command

    client = flight.FlightClient(tight.uri)
    options = flight.FlightCallOptions(headers=[client.authenticate_basic_token(ADMIN_EMAIL, ADMIN_PASSWORD)])
    info = client.get_flight_info(flight.FlightDescriptor.for_command(statement_command("SELECT 1")), options)
    time.sleep(2.5)
    with pytest.raises((flight.FlightError, pa.ArrowInvalid), match="ticket has expired"):
        client.do_get(info.endpoints[0].ticket, options).read_all()


def test_concurrent_queries_per_user_are_capped(tight):
    slow = connect(tight, ADMIN_EMAIL, ADMIN_PASSWORD)
    cursor = slow.cursor()
    errors = []

    def run_slow():
        try:
            cursor.execute(SLOW_QUERY)
            cursor.fetch_arrow_table()
        except adbc_driver_manager.Error as e:
            errors.append(e)

    thread = threading.Thread(target=run_slow)
    thread.start()
    try:
        with connect(tight, ADMIN_EMAIL, ADMIN_PASSWORD) as c:
            deadline = time.time() + 30
            message = ""
            while time.time() < deadline:
                try:
                    run(c, "SELECT 1")
                except adbc_driver_manager.Error as e:
                    message = str(e)
                    break
                time.sleep(0.2)
            assert "query.max_concurrent_per_user" in message
    finally:
        cursor.adbc_cancel()
        thread.join(60)
        slow.close()
    with connect(tight, ADMIN_EMAIL, ADMIN_PASSWORD) as c:
        deadline = time.time() + 10
        while True:
            try:
                assert run(c, "SELECT 1").num_rows == 1
                break
            except adbc_driver_manager.Error:
                assert time.time() < deadline, "the slot was not released"
                time.sleep(0.2)


def test_memory_hungry_query_spills_or_fails_cleanly(tight):
    sql = """SELECT v, count(*) AS n FROM (SELECT value % 2000000 AS v FROM generate_series(1, 4000000))
             GROUP BY v ORDER BY v LIMIT 3"""
    with connect(tight, ADMIN_EMAIL, ADMIN_PASSWORD) as c:
        try:
            assert run(c, sql).to_pylist() == [{"v": 0, "n": 2}, {"v": 1, "n": 2}, {"v": 2, "n": 2}]
        except adbc_driver_manager.Error as e:
            assert "RESOURCE_EXHAUSTED" in str(e) or "memory" in str(e), e
        assert run(c, "SELECT count(*) AS n FROM tpch.nation").to_pylist() == [{"n": 25}]
    assert tight.proc.poll() is None
