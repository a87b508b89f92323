"""Table data on S3: `storage.object_store: s3://…`, against a local S3-compatible server
(moto, started in process)."""

from __future__ import annotations

import os
import tempfile

import adbc_driver_flightsql.dbapi as flight_sql
import boto3
import pytest
from moto.server import ThreadedMotoServer

from harness import ADMIN_EMAIL, ADMIN_PASSWORD, Server, api, login
from test_sync import rows, sync


@pytest.fixture
def s3(monkeypatch):
    """A local S3 server; the AWS_* variables point Quiver at it. Yields (endpoint, client)."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        for key, value in {"AWS_ENDPOINT": endpoint, "AWS_ALLOW_HTTP": "true",
                           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                           "AWS_REGION": "us-east-1"}.items():
            monkeypatch.setenv(key, value)
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
        yield endpoint, client
    finally:
        server.stop()


def test_demo_tables_live_in_s3_and_answer_queries(s3):
    _, client = s3
    client.create_bucket(Bucket="quiver-test")
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(["demo", "--scale", "0.01"], os.path.join(tmp, "data"),
                        config="storage:\n  object_store: s3://quiver-test/warehouse\n")
        try:
            conn = flight_sql.connect(server.uri, db_kwargs={"username": ADMIN_EMAIL,
                                                              "password": ADMIN_PASSWORD})
            with conn.cursor() as cur:
                cur.execute("SELECT count(*) FROM tpch.orders")
                assert cur.fetchone()[0] == 15_000
            conn.close()
        finally:
            server.stop()
        # Nothing was written locally; the parquet parts are in the bucket.
        assert not os.path.exists(os.path.join(tmp, "data", "objects"))

    keys = [o["Key"] for o in client.list_objects_v2(Bucket="quiver-test")["Contents"]]
    orders = [k for k in keys if k.startswith("warehouse/tables/tpch/orders/")]
    assert orders and all(k.endswith(".parquet") for k in orders), keys


def test_files_from_s3_sync_into_s3(s3, monkeypatch):
    """A CSV glob in one bucket lands as a table in another; a failed sync leaves no folder."""
    endpoint, client = s3
    monkeypatch.setenv("SOURCE_SECRET", "testing")
    client.create_bucket(Bucket="warehouse")
    client.create_bucket(Bucket="landing")
    client.put_object(Bucket="landing", Key="drop/2026-01.csv", Body=b"day,sales\n2026-01-01,10.5\n")
    client.put_object(Bucket="landing", Key="drop/2026-02.csv", Body=b"day,sales\n2026-02-01,7.25\n")
    client.put_object(Bucket="landing", Key="drop/readme.txt", Body=b"not data")

    with tempfile.TemporaryDirectory() as tmp:
        server = Server(["serve"], os.path.join(tmp, "data"),
                        config="storage:\n  object_store: s3://warehouse/q\n")
        try:
            token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
            source = {"aws_endpoint": endpoint, "aws_allow_http": "true", "aws_region": "us-east-1",
                      "aws_access_key_id": "testing", "aws_secret_access_key": "${SOURCE_SECRET}"}
            status, body = api(server, "POST", "/api/admin/tables", token, {
                "name": "shop.sales", "connector": "files",
                "options": {"path": "s3://landing/drop/*.csv", "storage_options": source}})
            assert status == 201, body
            run = sync(server, token, "shop.sales")
            assert run["status"] == "succeeded", run
            table = rows(server, "SELECT day, sales FROM shop.sales ORDER BY day")
            assert [str(d) for d in table.column("day").to_pylist()] == ["2026-01-01", "2026-02-01"]

            status, body = api(server, "POST", "/api/admin/tables", token, {
                "name": "shop.nothing", "connector": "files",
                "options": {"path": "s3://landing/none/*.csv", "storage_options": source}})
            run = sync(server, token, "shop.nothing")
            assert run["status"] == "failed" and "no file matches" in run["error"], run
        finally:
            server.stop()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="warehouse")["Contents"]]
    assert all(k.startswith("q/tables/shop/sales/") for k in keys), keys
