"""The README's snippets, run as written against the real server: every Python block (ADBC,
polars, a PAT, OAuth client credentials over TLS), the curl block that manages access and
the `quiver admin` block. Only the addresses, the demo password and the placeholders
(`qvr_…`, `svc_…`, `qvs_…`, `ca.pem`) are replaced by this run's; a block added to the
README without a run here fails the count below."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import pytest

from harness import ADMIN_EMAIL, ADMIN_PASSWORD, Server, api, connect, login, quiver_bin, quiver_env

README = (pathlib.Path(__file__).parents[2] / "README.md").read_text()
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", README, re.M | re.S)
PYTHON = [code for lang, code in BLOCKS if lang == "python"]
SHELL = [code for lang, code in BLOCKS if lang == "sh"]


def block(blocks: list[str], marker: str) -> str:
    found = [b for b in blocks if marker in b]
    assert len(found) == 1, f"expected one README block with {marker!r}, found {len(found)}"
    return found[0]


ADBC, POLARS = block(PYTHON, "parameters=(7,)"), block(PYTHON, "pl.read_database")
PAT, OAUTH = block(PYTHON, "Bearer qvr_"), block(PYTHON, "client_credentials")
CURL, SERVICE = block(SHELL, "api localhost:8080/api/admin/users"), block(SHELL, "service-accounts")
ADMIN_CLI = block(SHELL, "quiver admin user add")
WRITING, WRITE_GRANT = block(PYTHON, "adbc_ingest"), block(SHELL, '"privilege":"write"')


def test_every_snippet_has_a_run():
    assert len(PYTHON) == 5 and {ADBC, POLARS, PAT, OAUTH, WRITING} == set(PYTHON)


def local(code: str, server: Server) -> str:
    """The snippet aimed at this run's server instead of the demo's default ports."""
    return (code.replace("127.0.0.1:50051", server.flight)
            .replace("127.0.0.1:8080", server.http).replace("localhost:8080", server.http)
            .replace("quiver-demo", ADMIN_PASSWORD))


def python(code: str, cwd: str | None = None) -> str:
    """Runs `code` as a script with the test venv's Python; returns what it printed. The
    driver's warnings (stderr) fail it too: a snippet should run clean."""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=cwd)
    assert run.returncode == 0, run.stderr
    assert "Warning" not in run.stderr, run.stderr
    return run.stdout


def shell(code: str, cwd: str, env: dict[str, str] | None = None) -> str:
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", code], capture_output=True, text=True,
                         timeout=300, cwd=cwd, env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout


IMPORT = "import adbc_driver_flightsql.dbapi as flight_sql\n"  # from the first snippet


def query(sql: str) -> str:
    """Lines that run `sql` on the snippet's `conn` and print its rows."""
    return f"""
with conn.cursor() as cur:
    cur.execute({sql!r})
    print("rows:", cur.fetchall())
"""


def test_adbc_and_polars_snippets(server):
    out = python(local(ADBC + POLARS, server))
    assert "GERMANY" in out  # n_nationkey 7
    assert "shape: (10, 2)" in out and "o_totalprice" in out


def test_writing_snippets(server):
    """The write grant block (its API line, and the same offline is the CLI's `--write`),
    then the Python block writing into `me` with ADBC, SQL, pandas and polars."""
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    group = "analysts"
    api(server, "POST", "/api/admin/groups", token, {"name": group})
    with tempfile.TemporaryDirectory() as tmp:
        api_line = next(line for line in WRITE_GRANT.splitlines() if line.startswith("api "))
        setup = (f"T={token}\n"
                 "api() { curl -s -H \"authorization: Bearer $T\" -H 'content-type: application/json' \"$@\"; }\n")
        out = shell(local(setup + api_line, server), tmp)
    assert '"privilege":"write"' in out.replace(" ", ""), out
    connect_line = ADBC.split("with conn.cursor()")[0]
    out = python(local(connect_line + WRITING, server) + query("SELECT count(*) FROM me.scores"))
    assert "rows: [(7,)]" in out, out


def test_personal_access_token_snippet(server):
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    status, created = api(server, "POST", "/api/me/tokens", token, {"name": "readme"})
    assert status == 201
    out = python(IMPORT + local(PAT, server).replace("qvr_…", created["token"]) + query(
        "SELECT count(*) FROM tpch.nation"))
    assert "rows: [(25,)]" in out


def test_access_management_and_oauth_snippets(tls_server):
    """The curl block makes ana a `sales` member who sees two nations' customers with the phone
    masked and the address hidden; the service-account block prints a client, which the
    OAuth snippet signs in with over TLS."""
    server, _, ca_path = tls_server
    with tempfile.TemporaryDirectory() as tmp:
        out = shell(local(CURL + SERVICE, server), tmp)
        assert '"error"' not in out, out
        # (curl -s prints each answer without a newline)
        client = json.JSONDecoder().raw_decode(out, out.rindex('{"client_id"'))[0]
    conn = connect_tls(server, ca_path, "ana@example.com", "a long password")
    with conn, conn.cursor() as cur:
        cur.execute("SELECT * FROM tpch.customer")
        table = cur.fetch_arrow_table()
    assert "c_address" not in table.column_names
    assert set(table.column("c_nationkey").to_pylist()) == {6, 7}
    assert set(table.column("c_phone").to_pylist()) == {"***"}

    admin = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert api(server, "POST", "/api/admin/groups/sales/members", admin, {"email": "etl@example.com"})[0] == 204
    oauth = (local(OAUTH, server).replace("svc_…", client["client_id"])
             .replace("qvs_…", client["client_secret"]).replace('open("ca.pem")', f"open({ca_path!r})"))
    out = python(IMPORT + oauth + query("SELECT DISTINCT c_nationkey FROM tpch.customer ORDER BY 1"))
    assert "rows: [(6,), (7,)]" in out


def connect_tls(server: Server, ca_path: str, email: str, password: str):
    import adbc_driver_flightsql.dbapi as flight_sql

    return flight_sql.connect(f"grpc+tls://{server.flight}", autocommit=True, db_kwargs={
        "adbc.flight.sql.client_option.tls_root_certs": pathlib.Path(ca_path).read_text(),
        "username": email, "password": password})


def test_admin_cli_snippet():
    """`quiver admin` on a stopped server's data directory (`./quiver-data`, as in the README):
    the grant holds once the server is back, and ana, deactivated last, cannot sign in."""
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "quiver-data")
        Server(["demo", "--scale", "0.01"], data).stop()
        env = quiver_env(data)
        script = f'quiver() {{ {quiver_bin()!r} "$@"; }}\n' + ADMIN_CLI
        out = shell(script, tmp, env)
        token = re.search(r"^qvr_\S+$", out, re.M)
        assert token, out
        assert "grant.create" in out and out.count(token.group(0)) == 1  # printed once, never audited

        server = Server(["serve"], data)
        try:
            admin = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
            grants = [g for g in api(server, "GET", "/api/admin/grants", admin)[1] if g["group"] == "sales"]
            assert [(g["table"], g["row_filter"]) for g in grants] == [("tpch.customer", "c_nationkey IN (6, 7)")]
            with pytest.raises(Exception, match="(?i)unauthenticated|deactivated|invalid"):
                connect(server, "ana@example.com", "a long password").cursor().execute("SELECT 1")
        finally:
            server.stop()
