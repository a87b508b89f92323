"""An operator's first day: the first start says how to get in, a port in use is reported
before any work, the systemd unit is valid, and a backup taken while the server runs brings
back users, grants, tokens, tables and their versions exactly, into a new installation."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import time

import pytest

from harness import (ADMIN_EMAIL, ADMIN_PASSWORD, Server, api, connect, login, on_postgres, quiver_bin,
                      quiver_env, user_granted)

PASSWORD = "a long enough password"
REPO = pathlib.Path(__file__).parents[2]


def quiver(*args: str, data_dir: str, env: dict[str, str] | None = None, timeout: float = 300):
    return subprocess.run([quiver_bin(), *args], capture_output=True, text=True, timeout=timeout,
                          env=quiver_env(data_dir, **(env or {})), stdin=subprocess.DEVNULL)


def test_a_first_start_without_an_admin_says_how_to_get_in():
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        server = Server(["serve"], data, admin=False)
        try:
            deadline = time.time() + 10  # the log is read on another thread
            while "no active administrator" not in server.log() and time.time() < deadline:
                time.sleep(0.1)
            assert "no active administrator" in server.log()
            assert "QUIVER_ADMIN_EMAIL" in server.log() and "quiver admin member add Admin" in server.log()
        finally:
            server.stop()
        # Once there is one, the warning is gone.
        server = Server(["serve"], data)
        try:
            assert "no active administrator" not in server.log()
        finally:
            server.stop()


def test_a_port_in_use_is_reported_before_the_demo_data_is_generated():
    with socket.socket() as busy, tempfile.TemporaryDirectory() as tmp:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        data = os.path.join(tmp, "data")
        started = time.time()
        run = quiver("demo", "--scale", "1", "--flight-listen", f"127.0.0.1:{port}", "--http-listen",
                     "127.0.0.1:0", "--data-dir", data, data_dir=data)
        assert run.returncode != 0
        assert f"cannot listen on 127.0.0.1:{port} (server.flight_listen)" in run.stderr, run.stderr
        assert "Preparing TPC-H" not in run.stderr
        assert time.time() - started < 30  # scale 1 would take minutes to generate
        assert not os.path.exists(os.path.join(data, "objects"))


def test_the_systemd_unit_is_valid():
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = (REPO / "deploy" / "quiver.service").read_text()
    assert "ExecStart=/usr/local/bin/quiver serve --config /etc/quiver/quiver.yaml" in unit
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "quiver.service")
        pathlib.Path(path).write_text(unit.replace("/usr/local/bin/quiver", quiver_bin()))
        checked = subprocess.run([analyze, "verify", path], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0 and checked.stderr.strip() == "", checked.stderr


def snapshot(server: Server, token: str) -> dict:
    """What a restore must bring back, as the API shows it."""
    def get(path):
        status, body = api(server, "GET", path, token)
        assert status == 200, body
        return body

    return {
        "users": get("/api/admin/users"),
        "groups": get("/api/admin/groups"),
        "grants": get("/api/admin/grants"),
        "tables": get("/api/admin/tables"),  # versions, rows, bytes, folders, profiles
        "service_accounts": get("/api/admin/service-accounts"),
        "syncs": [(r["id"], r["table"], r["status"], r["version"]) for r in get("/api/admin/syncs?limit=1000")],
    }


def test_a_backup_taken_while_serving_restores_exactly_into_a_new_installation():
    with tempfile.TemporaryDirectory() as tmp:
        objects = f"file://{tmp}/objects/"
        config = f"storage:\n  object_store: {objects}\n"
        original = os.path.join(tmp, "original")
        server = Server(["demo", "--scale", "0.01"], original, config=config)
        try:
            admin = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
            email, group, grant = user_granted(server, admin, "ana", "tpch.customer", PASSWORD)
            assert api(server, "DELETE", f"/api/admin/grants/{grant['id']}", admin)[0] == 204
            status, grant = api(server, "POST", "/api/admin/grants", admin, {
                "group": group, "table": "tpch.customer", "row_filter": "c_nationkey = 7",
                "column_masks": {"c_phone": "'***'", "c_address": None}})
            assert status == 201, grant
            status, pat = api(server, "POST", "/api/me/tokens", login(server, email, PASSWORD), {"name": "laptop"})
            assert status == 201
            status, admin_pat = api(server, "POST", "/api/me/tokens", admin, {"name": "backups"})
            before = snapshot(server, admin)

            backup = os.path.join(tmp, "backup")
            if not on_postgres():
                # The server holds the state file: without a token the CLI says what to do.
                refused = quiver("state", "backup", backup, "--data-dir", original, data_dir=original)
                assert refused.returncode != 0 and "QUIVER_TOKEN" in refused.stderr, refused.stderr
                assert not os.path.exists(backup)  # nothing half-written left behind
            done = quiver("state", "backup", backup, "--config", write_config(tmp, config, server.http),
                          "--data-dir", original, data_dir=original, env={"QUIVER_TOKEN": admin_pat["token"]})
            assert done.returncode == 0, done.stderr
            assert "back up the object store" in done.stdout
            manifest = json.loads(pathlib.Path(backup, "manifest.json").read_text())
            assert manifest["rows"]["users"] == len(before["users"]) and manifest["object_store"] == objects
            again = quiver("state", "backup", backup, "--data-dir", original, data_dir=original)
            assert again.returncode != 0 and "not empty" in again.stderr

            # Changed after the backup: not in the restore.
            assert api(server, "POST", "/api/admin/users", admin, {"email": "late@example.com",
                                                                   "password": PASSWORD})[0] == 201
        finally:
            server.stop()

        # (A second installation never shares the object store while the first runs: each
        # would remove the folders the other's state does not name.)
        restored = os.path.join(tmp, "restored")
        busy = Server(["serve"], restored)
        try:
            if not on_postgres():
                while_running = quiver("state", "restore", backup, "--data-dir", restored, data_dir=restored)
                assert while_running.returncode != 0 and "stop it" in while_running.stderr
        finally:
            busy.stop()
        into_used = quiver("state", "restore", backup, "--data-dir", restored, data_dir=restored)
        assert into_used.returncode != 0 and "not empty" in into_used.stderr, into_used.stderr

        fresh = os.path.join(tmp, "fresh")
        done = quiver("state", "restore", backup, "--data-dir", fresh, data_dir=fresh)
        assert done.returncode == 0, done.stderr
        server = Server(["serve"], fresh, config=config)
        try:
            admin = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
            after = snapshot(server, admin)
            assert after == before
            with connect(server, token=pat["token"]) as conn, conn.cursor() as cur:
                cur.execute("SELECT * FROM tpch.customer")
                table = cur.fetch_arrow_table()
            assert table.num_rows > 0 and set(table.column("c_nationkey").to_pylist()) == {7}
            assert "c_address" not in table.column_names and set(table.column("c_phone").to_pylist()) == {"***"}
        finally:
            server.stop()


def write_config(tmp: str, config: str, http: str) -> str:
    """A configuration that points the CLI at the running server's HTTP port."""
    path = os.path.join(tmp, "cli.yaml")
    pathlib.Path(path).write_text(f"server:\n  http_listen: {http}\n" + config)
    return path
