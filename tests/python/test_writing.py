"""Governed write-back, the way admins and users meet it: where a group may write is a grant
with the `write` privilege on a whole schema that no sync keeps tables in."""

from __future__ import annotations

import json
import os
import time
import uuid

import pytest

from harness import ADMIN_EMAIL, ADMIN_PASSWORD, api, login


@pytest.fixture(scope="module")
def admin_token(server):
    return login(server, ADMIN_EMAIL, ADMIN_PASSWORD)


@pytest.fixture
def group(server, admin_token):
    name = f"writers-{uuid.uuid4().hex[:8]}"
    assert api(server, "POST", "/api/admin/groups", admin_token, {"name": name})[0] == 201
    return name


def test_write_is_granted_on_a_whole_schema_no_sync_keeps(server, admin_token, group):
    sandbox = f"sandbox_{uuid.uuid4().hex[:8]}"
    status, grant = api(server, "POST", "/api/admin/grants", admin_token,
                        {"group": group, "table": f"{sandbox}.*", "privilege": "write"})
    assert status == 201, grant
    assert grant["privilege"] == "write" and grant["table"] == f"{sandbox}.*"
    listed = {g["id"]: g for g in api(server, "GET", "/api/admin/grants", admin_token)[1]}
    assert listed[grant["id"]]["privilege"] == "write"

    # Without a privilege a grant reads, as before.
    status, read = api(server, "POST", "/api/admin/grants", admin_token, {"group": group, "table": "tpch.nation"})
    assert status == 201 and read["privilege"] == "read", read

    # The synced demo schema never becomes writable: its next sync would overwrite a write.
    status, body = api(server, "POST", "/api/admin/grants", admin_token,
                       {"group": group, "table": "tpch.*", "privilege": "write"})
    assert status == 422, body
    assert "kept by syncs" in body["error"]["message"] and "tpch." in body["error"]["message"]

    # One table is never writable on its own, and the privilege's spelling is checked.
    status, body = api(server, "POST", "/api/admin/grants", admin_token,
                       {"group": group, "table": f"{sandbox}.scores", "privilege": "write"})
    assert status == 422 and f"`{sandbox}.*`" in body["error"]["message"], body
    status, body = api(server, "POST", "/api/admin/grants", admin_token,
                       {"group": group, "table": f"{sandbox}.*", "privilege": "WRITE"})
    assert status == 422 and "`read` or `write`" in body["error"]["message"], body

    # None of the refusals was stored.
    mine = [g for g in api(server, "GET", "/api/admin/grants", admin_token)[1] if g["group"] == group]
    assert sorted((g["table"], g["privilege"]) for g in mine) == [(f"{sandbox}.*", "write"), ("tpch.nation", "read")]


# --- Writing through the clients analysts use --------------------------------------------

import adbc_driver_manager
import pyarrow as pa

from harness import connect, user_granted

PASSWORD = "writer-password-1"


def rows(conn, sql):
    with conn.cursor() as cur:
        cur.execute(sql)
        return cur.fetchall()


def ingest(conn, table, data, **kwargs):
    with conn.cursor() as cur:
        return cur.adbc_ingest(table, data, **kwargs)


def scores(*pairs):
    return pa.table({"id": pa.array([p[0] for p in pairs], pa.int64()),
                     "score": pa.array([p[1] for p in pairs], pa.float64())})


@pytest.fixture
def writer(server, admin_token):
    """A user who may read tpch.nation and nothing else."""
    email, _, _ = user_granted(server, admin_token, "writer", "tpch.nation", PASSWORD)
    return email


def test_adbc_ingest_every_mode_into_the_personal_schema(server, admin_token, writer):
    with connect(server, writer, PASSWORD) as conn:
        assert ingest(conn, "scores", scores((1, 0.5), (2, 0.7), (3, 0.9)), mode="create", db_schema_name="me") == 3
        assert rows(conn, "SELECT id, score FROM me.scores ORDER BY id") == [(1, 0.5), (2, 0.7), (3, 0.9)]

        with pytest.raises(adbc_driver_manager.Error) as err:
            ingest(conn, "scores", scores((4, 0.1)), mode="create", db_schema_name="me")
        assert "already exists" in str(err.value)
        assert ingest(conn, "scores", scores((4, 0.1)), mode="append", db_schema_name="me") == 1
        assert rows(conn, "SELECT count(*) FROM me.scores") == [(4,)]
        assert ingest(conn, "scores", scores((9, 9.0)), mode="replace", db_schema_name="me") == 1
        assert rows(conn, "SELECT id FROM me.scores") == [(9,)]
        assert ingest(conn, "more", scores((1, 1.0)), mode="create_append", db_schema_name="me") == 1
        assert ingest(conn, "more", scores((2, 2.0)), mode="create_append", db_schema_name="me") == 1
        assert rows(conn, "SELECT sum(id) FROM me.more") == [(3,)]

        # Appending other columns or types names the column and both types; nothing lands.
        wrong = pa.table({"id": pa.array(["x"]), "score": pa.array([1.0])})
        with pytest.raises(adbc_driver_manager.Error) as err:
            ingest(conn, "more", wrong, mode="append", db_schema_name="me")
        assert "`id`" in str(err.value) and "Int64" in str(err.value) and "Utf8" in str(err.value), err.value
        with pytest.raises(adbc_driver_manager.Error) as err:
            ingest(conn, "nothing_here", scores((1, 1.0)), mode="append", db_schema_name="me")
        assert "create_append" in str(err.value)
        assert rows(conn, "SELECT count(*) FROM me.more") == [(2,)]

        # Names are identifiers: checked before anything is written.
        with pytest.raises(adbc_driver_manager.Error) as err:
            ingest(conn, "Bad Name", scores((1, 1.0)), mode="create", db_schema_name="me")
        assert "not a valid name" in str(err.value), err.value
        for reserved in ("system", "information_schema"):
            with pytest.raises(adbc_driver_manager.Error) as err:
                ingest(conn, "x", scores((1, 1.0)), mode="create", db_schema_name=reserved)
            assert "read-only" in str(err.value), err.value

        # With no schema, the session's (public) is not writable: the error says where to write.
        with pytest.raises(adbc_driver_manager.Error) as err:
            ingest(conn, "loose", scores((1, 1.0)), mode="create")
        assert "`me." in str(err.value), err.value

        # The metadata calls show `me` and its tables like any other.
        objects = conn.adbc_get_objects(depth="tables").read_all().to_pylist()
        schemas = {s["db_schema_name"]: [t["table_name"] for t in s["db_schema_tables"] or []]
                   for c in objects for s in c["catalog_db_schemas"]}
        assert sorted(schemas["me"]) == ["more", "scores"], schemas
        assert conn.adbc_get_table_schema("scores", db_schema_filter="me").names == ["id", "score"]

    # Only its owner (and admins, under `home_<name>`) can see a personal schema.
    home = "home_" + writer.split("@")[0].replace("-", "_")
    with connect(server, ADMIN_EMAIL, ADMIN_PASSWORD) as admin:
        assert rows(admin, f"SELECT id FROM {home}.scores") == [(9,)]
    other, _, _ = user_granted(server, admin_token, "other", "tpch.nation", PASSWORD)
    with connect(server, other, PASSWORD) as conn:
        assert rows(conn, "SELECT count(*) FROM information_schema.tables WHERE table_schema LIKE 'home_%'") == [(0,)]
        with pytest.raises(adbc_driver_manager.Error) as err:
            rows(conn, f"SELECT * FROM {home}.scores")
        assert "not found" in str(err.value)
        with pytest.raises(adbc_driver_manager.Error) as err:
            ingest(conn, "scores", scores((1, 1.0)), mode="append", db_schema_name=home)
        assert "not found" in str(err.value)
        # Its own `me` is empty.
        assert rows(conn, "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'me'") == [(0,)]


def test_comments_describe_written_tables_to_every_client(server, admin_token, writer):
    """`COMMENT ON TABLE | COLUMN` is how a writer documents what it wrote: the remarks reach
    ADBC (`ARROW:FLIGHT:SQL:REMARKS`) and the catalog API like a definition's descriptions."""
    REMARKS = b"ARROW:FLIGHT:SQL:REMARKS"
    with connect(server, writer, PASSWORD) as conn:
        assert ingest(conn, "noted", scores((1, 0.5)), mode="create", db_schema_name="me") == 1
        with conn.cursor() as cur:
            cur.execute("COMMENT ON TABLE me.noted IS 'Scores of the spring campaign'")
            cur.execute("COMMENT ON COLUMN me.noted.score IS 'Between 0 and 1'")
            cur.execute("COMMENT ON COLUMN me.noted.id IS 'The customer''s id'")
        fields = {f.name: f.metadata or {} for f in conn.adbc_get_table_schema("noted", db_schema_filter="me")}
        assert fields["score"][REMARKS].decode() == "Between 0 and 1"
        assert fields["id"][REMARKS].decode() == "The customer's id"

        # What cannot be commented on says why, and changes nothing.
        for sql, expected in [
            ("COMMENT ON COLUMN me.noted.nope IS 'x'", "has no column `nope`; its columns are id, score"),
            ("COMMENT ON TABLE tpch.nation IS 'x'", "read-only"),
            ("COMMENT ON TABLE me.absent IS 'x'", "no table `me.absent`"),
            ("COMMENT ON SCHEMA me IS 'x'", "COMMENT ON TABLE and COMMENT ON COLUMN"),
        ]:
            with pytest.raises(adbc_driver_manager.Error) as err:
                with conn.cursor() as cur:
                    cur.execute(sql)
            assert expected in str(err.value), (sql, err.value)

        # `IS NULL` takes a remark away again.
        with conn.cursor() as cur:
            cur.execute("COMMENT ON COLUMN me.noted.id IS NULL")
        fields = {f.name: f.metadata or {} for f in conn.adbc_get_table_schema("noted", db_schema_filter="me")}
        assert REMARKS not in fields["id"] and fields["score"][REMARKS].decode() == "Between 0 and 1"

    token = login(server, writer, PASSWORD)
    listed = {t["name"]: t for t in api(server, "GET", "/api/catalog", token)[1]}
    table = listed["me.noted"]
    assert table["description"] == "Scores of the spring campaign", table
    assert {c["name"]: c.get("description") for c in table["columns"]} == {"id": None, "score": "Between 0 and 1"}

    # Another user cannot comment on it, nor learn it exists.
    other, _, _ = user_granted(server, admin_token, "commenter", "tpch.nation", PASSWORD)
    home = "home_" + writer.split("@")[0].replace("-", "_")
    with connect(server, other, PASSWORD) as conn:
        with pytest.raises(adbc_driver_manager.Error) as err:
            with conn.cursor() as cur:
                cur.execute(f"COMMENT ON TABLE {home}.noted IS 'mine now'")
        assert "not found" in str(err.value), err.value
    listed = {t["name"]: t for t in api(server, "GET", "/api/catalog", token)[1]}
    assert listed["me.noted"]["description"] == "Scores of the spring campaign"


def test_a_shared_sandbox_is_written_by_its_group_and_unknown_to_others(server, admin_token):
    sandbox = f"sandbox_{uuid.uuid4().hex[:8]}"
    writer, group, _ = user_granted(server, admin_token, "sand", f"{sandbox}.*", PASSWORD, privilege="write")
    colleague = f"colleague-{uuid.uuid4().hex[:8]}@example.com"
    assert api(server, "POST", "/api/admin/users", admin_token, {"email": colleague, "password": PASSWORD})[0] == 201
    assert api(server, "POST", f"/api/admin/groups/{group}/members", admin_token, {"email": colleague})[0] == 204
    outsider, _, _ = user_granted(server, admin_token, "outsider", "tpch.nation", PASSWORD)

    with connect(server, writer, PASSWORD) as conn:
        assert ingest(conn, "shared", scores((1, 1.0), (2, 2.0)), mode="create", db_schema_name=sandbox) == 2
    with connect(server, colleague, PASSWORD) as conn:
        assert rows(conn, f"SELECT count(*) FROM {sandbox}.shared") == [(2,)]
        assert ingest(conn, "shared", scores((3, 3.0)), mode="append", db_schema_name=sandbox) == 1
    with connect(server, outsider, PASSWORD) as conn:
        for attempt in (lambda: rows(conn, f"SELECT * FROM {sandbox}.shared"),
                        lambda: ingest(conn, "shared", scores((1, 1.0)), mode="append", db_schema_name=sandbox),
                        lambda: ingest(conn, "fresh", scores((1, 1.0)), mode="create", db_schema_name=sandbox)):
            with pytest.raises(adbc_driver_manager.Error) as err:
                attempt()
            assert "not found" in str(err.value), err.value
        # A schema it can read is named read-only, not hidden.
        with pytest.raises(adbc_driver_manager.Error) as err:
            ingest(conn, "nation", scores((1, 1.0)), mode="append", db_schema_name="tpch")
        assert "read-only" in str(err.value), err.value
    with connect(server, writer, PASSWORD) as conn:
        assert rows(conn, f"SELECT sum(id) FROM {sandbox}.shared") == [(6,)]

    # A sync is never defined where users write: it would overwrite them.
    status, body = api(server, "POST", "/api/admin/tables", admin_token,
                       {"name": f"{sandbox}.synced", "connector": "files", "options": {"path": "/tmp/x.csv"}})
    assert status == 422 and "cannot be synced" in body["error"]["message"], body

    # A written table is a table like any other: the catalog shows it with its row count and,
    # soon after the write, its profile; a grant can filter its rows.
    token = login(server, writer, PASSWORD)
    deadline = time.time() + 30
    while True:
        listed = {t["name"]: t for t in api(server, "GET", "/api/catalog", token)[1]}
        table = listed[f"{sandbox}.shared"]
        if table.get("profile") or time.time() > deadline:
            break
        time.sleep(0.5)
    assert table["rows"] == 3 and table["profile"], table
    reader, _, _ = user_granted(server, admin_token, "filtered", f"{sandbox}.shared", PASSWORD, row_filter="id > 1")
    with connect(server, reader, PASSWORD) as conn:
        assert rows(conn, f"SELECT id FROM {sandbox}.shared ORDER BY id") == [(2,), (3,)]


def test_sql_writes_through_statements_and_prepared_statements(server, admin_token):
    # A user who sees only Europe's nations, and masked comments.
    writer, _, _ = user_granted(server, admin_token, "sqlw", "tpch.nation", PASSWORD,
                                row_filter="n_regionkey = 3", column_masks={"n_comment": "'***'"})
    with connect(server, writer, PASSWORD) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE me.t (a BIGINT, b VARCHAR)")
        cur.execute("INSERT INTO me.t VALUES (1, 'x'), (2, 'y')")
        cur.executemany("INSERT INTO me.t VALUES (?, ?)", [(3, "z"), (4, "w")])
        assert rows(conn, "SELECT a, b FROM me.t ORDER BY a") == [(1, "x"), (2, "y"), (3, "z"), (4, "w")]
        cur.execute("INSERT INTO me.t VALUES (?, ?)", parameters=(5, "v"))
        assert rows(conn, "SELECT count(*) FROM me.t") == [(5,)]

        # CTAS through a policy holds only the rows and values the user could see.
        cur.execute("CREATE TABLE me.europe AS SELECT n_name, n_comment FROM tpch.nation")
        europe = rows(conn, "SELECT n_name, n_comment FROM me.europe ORDER BY n_name")
        assert [n for n, _ in europe] == ["FRANCE", "GERMANY", "ROMANIA", "RUSSIA", "UNITED KINGDOM"]
        assert {c for _, c in europe} == {"***"}
        cur.execute("CREATE OR REPLACE TABLE me.europe AS SELECT n_name FROM tpch.nation WHERE n_name LIKE 'F%'")
        assert rows(conn, "SELECT * FROM me.europe") == [("FRANCE",)]
        with pytest.raises(adbc_driver_manager.Error) as err:
            cur.execute("CREATE TABLE me.europe AS SELECT 1 AS one")
        assert "already exists" in str(err.value)
        cur.execute("CREATE TABLE IF NOT EXISTS me.europe AS SELECT 1 AS one")
        assert rows(conn, "SELECT * FROM me.europe") == [("FRANCE",)]

        # What is not supported says what is.
        for sql in ("DELETE FROM me.t WHERE a = 1", "UPDATE me.t SET a = 0"):
            with pytest.raises(adbc_driver_manager.Error) as err:
                cur.execute(sql)
            assert "CREATE OR REPLACE TABLE" in str(err.value), err.value
        with pytest.raises(adbc_driver_manager.Error) as err:
            cur.execute("DROP TABLE tpch.nation")
        assert "read-only" in str(err.value), err.value

        cur.execute("DROP TABLE me.europe")
        cur.execute("DROP TABLE IF EXISTS me.europe")
        with pytest.raises(adbc_driver_manager.Error) as err:
            cur.execute("DROP TABLE me.europe")
        assert "no table" in str(err.value)
        # No transactions: commit is accepted and does nothing; every statement committed.
        conn.commit()
    with connect(server, writer, PASSWORD) as conn:
        assert rows(conn, "SELECT count(*) FROM me.t") == [(5,)]

    # The audit names who wrote what, from which tables, and how many rows.
    status, writes = api(server, "GET", f"/api/admin/audit?action=table.write&actor={writer}", admin_token)
    assert status == 200, writes
    ctas = [json.loads(e["detail"]) for e in writes if e["target"].endswith(".europe")]
    # Newest first: the replace, then the first CTAS (5 rows read through the policy).
    assert ctas[-1]["read"] == ["tpch.nation"] and ctas[-1]["rows"] == 5, ctas
    assert "CREATE TABLE me.europe AS SELECT" in ctas[-1]["statement"]


def test_pandas_and_polars_write_through_adbc(server, admin_token, writer):
    import pandas as pd
    import polars as pl

    with connect(server, writer, PASSWORD) as conn:
        frame = pd.DataFrame({"k": [1, 2, 3], "v": ["a", "b", "c"]})
        frame.to_sql("from_pandas", conn, schema="me", index=False)
        assert rows(conn, "SELECT count(*) FROM me.from_pandas") == [(3,)]
        frame.to_sql("from_pandas", conn, schema="me", index=False, if_exists="append")
        assert rows(conn, "SELECT count(*) FROM me.from_pandas") == [(6,)]
    polars_frame = pl.DataFrame({"k": [10, 20], "v": ["x", "y"]})
    with connect(server, writer, PASSWORD) as conn:
        polars_frame.write_database("me.from_polars", conn, engine="adbc")
        polars_frame.write_database("me.from_polars", conn, engine="adbc", if_table_exists="append")
        assert rows(conn, "SELECT sum(k) FROM me.from_polars") == [(60,)]


def test_an_ingest_that_fails_midway_publishes_nothing(server, writer):
    def batches():
        yield scores((1, 1.0)).to_batches()[0]
        raise RuntimeError("the notebook died")

    schema = scores((1, 1.0)).schema
    reader = pa.RecordBatchReader.from_batches(schema, batches())
    with connect(server, writer, PASSWORD) as conn:
        with pytest.raises(Exception):
            ingest(conn, "half", reader, mode="create", db_schema_name="me")
        with pytest.raises(adbc_driver_manager.Error) as err:
            rows(conn, "SELECT * FROM me.half")
        assert "not found" in str(err.value)


def test_kill_9_mid_ingest_publishes_nothing_and_its_files_are_swept(tmp_path):
    import glob
    import signal
    import threading

    from harness import Server, on_postgres

    data = str(tmp_path / "data")
    server = Server(["serve"], data)
    try:
        big = pa.table({"id": pa.array(range(300_000), pa.int64()), "score": pa.array([0.5] * 300_000)})

        def slow():
            for batch in big.to_batches(max_chunksize=100_000) * 6:
                yield batch
            time.sleep(60)  # the server dies while it waits for more
            yield big.to_batches()[0]

        def run():
            try:
                with connect(server, ADMIN_EMAIL, ADMIN_PASSWORD) as conn:
                    reader = pa.RecordBatchReader.from_batches(big.schema, slow())
                    ingest(conn, "half", reader, mode="create", db_schema_name="me")
            except Exception:
                pass

        threading.Thread(target=run, daemon=True).start()
        staged = lambda: glob.glob(f"{data}/objects/tables/home_admin/half/*/*")  # noqa: E731
        deadline = time.time() + 60
        while not staged() and time.time() < deadline:
            time.sleep(0.2)
        assert staged(), "the first part was not written while the stream was open"
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
    finally:
        server.stop()
    server = Server(["serve"], data)
    try:
        with connect(server, ADMIN_EMAIL, ADMIN_PASSWORD) as conn:
            with pytest.raises(adbc_driver_manager.Error) as err:
                rows(conn, "SELECT count(*) FROM me.half")
            assert "not found" in str(err.value)
        if not on_postgres():
            assert not [f for f in glob.glob(f"{data}/objects/tables/home_admin/half/**", recursive=True)
                        if os.path.isfile(f)], "the cut-off write's files were not swept"
    finally:
        server.stop()


def test_temporary_tables_belong_to_their_session(server, writer):
    with connect(server, writer, PASSWORD) as conn:
        assert ingest(conn, "scratch", scores((1, 1.0), (2, 2.0)), mode="create", temporary=True) == 2
        assert ingest(conn, "scratch", scores((3, 3.0)), mode="append", temporary=True) == 1
        assert rows(conn, "SELECT count(*) FROM temp.scratch") == [(3,)]
        # Unqualified names look in `temp` while the session chose no schema.
        assert rows(conn, "SELECT count(*) FROM scratch s JOIN tpch.nation n ON s.id = n.n_nationkey") == [(3,)]
        with pytest.raises(adbc_driver_manager.Error) as err:
            ingest(conn, "scratch", scores((4, 4.0)), mode="create", temporary=True)
        assert "already exists" in str(err.value)
        assert ingest(conn, "scratch", scores((9, 9.0)), mode="replace", temporary=True) == 1
        assert rows(conn, "SELECT id FROM temp.scratch") == [(9,)]
        # Another connection of the same user is another session: it cannot see them.
        with connect(server, writer, PASSWORD) as other:
            with pytest.raises(adbc_driver_manager.Error) as err:
                rows(other, "SELECT * FROM temp.scratch")
            assert "not found" in str(err.value)
    # They are never versions: nobody, not even an admin, finds them in the catalog.
    with connect(server, ADMIN_EMAIL, ADMIN_PASSWORD) as admin:
        assert rows(admin, "SELECT count(*) FROM information_schema.tables WHERE table_name = 'scratch'") == [(0,)]


def test_no_transactions_as_the_adbc_driver_documents(server, writer):
    """GetSqlInfo says there are no transactions, so DB-API's default `autocommit=False`
    cannot be honoured: the driver warns once and keeps autocommit; `commit()` does nothing
    and every statement is already visible to other connections."""
    import adbc_driver_flightsql.dbapi as flight_sql

    with pytest.warns(Warning, match="Cannot disable autocommit"):
        conn = flight_sql.connect(server.uri, db_kwargs={"username": writer, "password": PASSWORD})
    with conn:
        with conn.cursor() as cur:
            cur.execute("CREATE TABLE me.tx AS SELECT 1 AS one")
        with connect(server, writer, PASSWORD) as other:
            assert rows(other, "SELECT one FROM me.tx") == [(1,)]
        conn.commit()
        conn.rollback()
        assert rows(conn, "SELECT one FROM me.tx") == [(1,)]


def test_quotas_name_their_setting_and_keep_what_was_written(tmp_path):
    import numpy as np

    from harness import Server

    sandbox = "quota_sandbox"
    config = ("write:\n  quota_per_user: 100 KiB\n  max_tables_per_schema: 3\n  max_write_bytes: 4 MiB\n"
              f"  max_write_rows: 100000\n  schema_quotas:\n    {sandbox}: 50 KiB\n")
    server = Server(["serve"], str(tmp_path / "data"), config=config)
    try:
        with connect(server, ADMIN_EMAIL, ADMIN_PASSWORD) as conn:
            for name in ("a", "b", "c"):
                assert ingest(conn, name, scores((1, 1.0)), mode="create", db_schema_name="me") == 1
            with pytest.raises(adbc_driver_manager.Error) as err:
                ingest(conn, "d", scores((1, 1.0)), mode="create", db_schema_name="me")
            assert "write.max_tables_per_schema" in str(err.value), err.value

            huge = pa.table({"id": pa.array(np.arange(1_000_000), pa.int64()),
                             "score": pa.array(np.random.default_rng(1).random(1_000_000))})
            with pytest.raises(adbc_driver_manager.Error) as err:
                ingest(conn, "a", huge, mode="append", db_schema_name="me")
            assert "write.max_write_bytes" in str(err.value), err.value
            assert rows(conn, "SELECT count(*) FROM me.a") == [(1,)]

            assert ingest(conn, "a", huge.slice(0, 20_000), mode="append", db_schema_name="me") == 20_000
            with pytest.raises(adbc_driver_manager.Error) as err:
                ingest(conn, "b", scores((2, 2.0)), mode="append", db_schema_name="me")
            assert "write.quota_per_user" in str(err.value) and "`me`" in str(err.value), err.value
            # What was written before the quota stays; dropping makes room again.
            assert rows(conn, "SELECT count(*) FROM me.a") == [(20_001,)]
            with conn.cursor() as cur:
                cur.execute("DROP TABLE me.a")
            assert ingest(conn, "b", scores((2, 2.0)), mode="append", db_schema_name="me") == 1

            # Rows per write: within the bytes, past the rows.
            with pytest.raises(adbc_driver_manager.Error) as err:
                ingest(conn, "b", huge.slice(0, 150_000), mode="append", db_schema_name="me")
            assert "write.max_write_rows" in str(err.value) and "100000 rows" in str(err.value), err.value
            assert rows(conn, "SELECT count(*) FROM me.b") == [(2,)]

        # A schema named in `schema_quotas` has its own quota.
        token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
        user, _, _ = user_granted(server, token, "quota", f"{sandbox}.*", PASSWORD, privilege="write")
        with connect(server, user, PASSWORD) as conn:
            assert ingest(conn, "t", huge.slice(0, 20_000), mode="create", db_schema_name=sandbox) == 20_000
            with pytest.raises(adbc_driver_manager.Error) as err:
                ingest(conn, "t", scores((1, 1.0)), mode="append", db_schema_name=sandbox)
            assert "write.schema_quotas" in str(err.value) and f"`{sandbox}`" in str(err.value), err.value
            assert rows(conn, f"SELECT count(*) FROM {sandbox}.t") == [(20_000,)]
    finally:
        server.stop()


def test_replaced_versions_of_written_tables_are_collected_after_the_retention(tmp_path):
    """Files no current version lists go once their version's retention has passed; files an
    append shares with the current version stay."""
    from harness import Server

    data = tmp_path / "data"
    config = "sync:\n  retention: 1s\n"
    server = Server(["serve"], str(data), config=config)
    folder = data / "objects" / "tables"

    def files():
        return sorted(p.name for p in folder.rglob("*.parquet") if "home_" in str(p))

    try:
        with connect(server, ADMIN_EMAIL, ADMIN_PASSWORD) as conn:
            assert ingest(conn, "kept", scores((1, 1.0)), mode="create", db_schema_name="me") == 1
            assert ingest(conn, "kept", scores((2, 2.0)), mode="append", db_schema_name="me") == 1
            assert len(files()) == 2
            assert ingest(conn, "kept", scores((3, 3.0)), mode="replace", db_schema_name="me") == 1
            assert ingest(conn, "kept", scores((4, 4.0)), mode="append", db_schema_name="me") == 1
            current = files()
            assert len(current) == 4
    finally:
        server.stop()
    time.sleep(1.5)
    # The leader collects garbage as it starts leading, and every few minutes after.
    server = Server(["serve"], str(data), config=config)
    try:
        deadline = time.time() + 30
        while len(files()) > 2 and time.time() < deadline:
            time.sleep(0.5)
        assert len(files()) == 2, files()
        with connect(server, ADMIN_EMAIL, ADMIN_PASSWORD) as conn:
            assert rows(conn, "SELECT id FROM me.kept ORDER BY id") == [(3,), (4,)]
    finally:
        server.stop()
