"""`quiver admin`, the break-glass path: it refuses politely while the server runs, works on
the stopped server's state file with the same validation, and its changes hold once the
server is back."""

from __future__ import annotations

import os
import subprocess
import tempfile

import adbc_driver_manager
import pytest

from harness import ADMIN_EMAIL, Server, connect, on_postgres, quiver_bin, quiver_env

PASSWORD = "gina-password-1"


def admin(data_dir: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([quiver_bin(), "admin", "--data-dir", data_dir, *args], input=stdin,
                          capture_output=True, text=True, timeout=120, env=quiver_env(data_dir))


def test_admin_cli_manages_access_offline():
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        server = Server(["demo", "--scale", "0.01"], data)
        try:
            busy = admin(data, "user", "list")
            if on_postgres():
                # A shared state database serves the CLI beside running servers.
                assert busy.returncode == 0 and ADMIN_EMAIL in busy.stdout, busy.stderr
            else:
                assert busy.returncode != 0
                assert "in use by another Quiver process" in busy.stderr and "HTTP API" in busy.stderr
        finally:
            server.stop()

        def ok(*args, stdin=None):
            r = admin(data, *args, stdin=stdin)
            assert r.returncode == 0, r.stderr
            return r.stdout

        ok("user", "add", "gina@example.com", "--password-stdin", stdin=PASSWORD + "\n")
        ok("group", "add", "analysts")
        ok("member", "add", "analysts", "gina@example.com")
        bad = admin(data, "grant", "tpch.nation", "--group", "analysts", "--row-filter", "n_nope = 3")
        assert bad.returncode != 0 and "n_nope" in bad.stderr
        ok("user", "set-attribute", "gina@example.com", "region", "3")
        bad = admin(data, "user", "set-attribute", "gina@example.com", "Region", "3")
        assert bad.returncode != 0 and "not an attribute name" in bad.stderr
        assert "grant" in ok("grant", "tpch.nation", "--group", "analysts", "--row-filter",
                             "CAST(n_regionkey AS VARCHAR) = user_attribute('region')",
                             "--mask", "n_comment='redacted'", "--hide", "n_regionkey")
        token = ok("token", "create", "gina@example.com", "--name", "cli").strip()
        assert token.startswith("qvr_")
        last_admin = admin(data, "user", "deactivate", ADMIN_EMAIL)
        assert last_admin.returncode != 0 and "last active administrator" in last_admin.stderr
        audit = ok("audit", "--limit", "100")
        assert "grant.create" in audit and "member.add" in audit and "quiver admin" in audit
        assert token not in audit and token[4:] not in audit and PASSWORD not in audit
        assert "analysts" in ok("grants")

        server = Server(["serve"], data)
        try:
            for conn in [connect(server, token=token), connect(server, "gina@example.com", PASSWORD)]:
                with conn, conn.cursor() as cur:
                    cur.execute("SELECT * FROM tpch.nation ORDER BY n_nationkey")
                    table = cur.fetch_arrow_table()
                assert table.column_names == ["n_nationkey", "n_name", "n_comment"]
                assert table.num_rows == 5  # EUROPE
                assert set(table.column("n_comment").to_pylist()) == {"redacted"}
        finally:
            server.stop()

        # New password, token revoked, grant revoked: all hold after a restart.
        ok("user", "password", "gina@example.com", stdin="a-new-password\n")
        token_id = ok("token", "list", "gina@example.com").split()[0]
        ok("token", "revoke", token_id)
        assert "revoked" in ok("token", "list", "gina@example.com")
        grant_id = ok("grants").split()[0]
        ok("revoke", grant_id)
        ok("member", "remove", "analysts", "gina@example.com")
        ok("group", "remove", "analysts")
        assert "analysts" not in ok("group", "list")
        server = Server(["serve"], data)
        try:
            for email, password in [("gina@example.com", PASSWORD), (None, token)]:
                with pytest.raises(adbc_driver_manager.Error):
                    conn = connect(server, email, password) if email else connect(server, token=password)
                    conn.cursor().execute("SELECT 1")
            with connect(server, "gina@example.com", "a-new-password") as conn, conn.cursor() as cur:
                with pytest.raises(adbc_driver_manager.Error, match="not found"):
                    cur.execute("SELECT * FROM tpch.nation")
        finally:
            server.stop()
