"""The test harness: the real `quiver` binary on free ports (`Server`), its state backend,
and clients signed in to it (`api`, `login`, `connect`). Tests and benches import it as a
module (benches with `PYTHONPATH=tests/python`, as `make bench` sets); the pytest fixtures
built on it are in conftest.py."""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import os
import pathlib
import subprocess
import tempfile
import threading
import time

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "test-admin-password"
SCALE = "0.1"

# `QUIVER_TEST_STATE=postgres` runs every server of the suite on a PostgreSQL state database
# (one database per data directory, in one cluster started on first use) instead of the
# embedded state file.
STATE_BACKEND = os.environ.get("QUIVER_TEST_STATE", "duckdb")
_state_cluster: dict | None = None


def on_postgres() -> bool:
    return STATE_BACKEND == "postgres"


def state_env(data_dir: str) -> dict[str, str]:
    """Environment that points a quiver process for `data_dir` at its state (empty when the
    embedded file is used)."""
    global _state_cluster
    if not on_postgres():
        return {}
    import psycopg
    from pgserver import postgres_server

    if _state_cluster is None:
        stack = contextlib.ExitStack()
        _state_cluster = stack.enter_context(postgres_server())
        atexit.register(stack.close)
    name = "state_" + hashlib.sha1(os.path.abspath(data_dir).encode()).hexdigest()[:16]
    with psycopg.connect(**_state_cluster, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')
    s = _state_cluster
    return {"QUIVER_STATE": f"postgres://{s['user']}:{s['password']}@{s['host']}:{s['port']}/{name}",
            "QUIVER_JWT_SECRET": "a-test-cluster-secret-of-more-than-32-characters"}


def signing_key(data_dir: str) -> bytes:
    """The key a server for `data_dir` signs tokens with."""
    secret = state_env(data_dir).get("QUIVER_JWT_SECRET")
    if secret is not None:
        return secret.encode()
    import base64
    with open(os.path.join(data_dir, "secret.key")) as f:
        return base64.b64decode(f.read().strip())


def state_bytes(data_dir: str) -> bytes:
    """Everything the state of `data_dir` holds, as bytes to search (for leaked secrets)."""
    url = state_env(data_dir).get("QUIVER_STATE")
    if url is None:
        return pathlib.Path(data_dir, "state.duckdb").read_bytes()
    import psycopg
    out = []
    with psycopg.connect(url) as conn:
        tables = [r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()]
        for table in tables:
            out += [repr(row) for row in conn.execute(f'SELECT * FROM "{table}"').fetchall()]
    return "\n".join(out).encode()


def quiver_env(data_dir: str, **extra: str) -> dict[str, str]:
    """The environment for a `quiver` subprocess working on `data_dir`."""
    return dict(os.environ, **state_env(data_dir), **extra)


def quiver_bin() -> str:
    path = os.environ.get("QUIVER_BIN")
    if not path:
        target = os.environ.get("CARGO_TARGET_DIR", str(pathlib.Path(__file__).parents[2] / "target"))
        path = str(pathlib.Path(target) / "release" / "quiver")
    if not os.path.exists(path):
        import pytest  # stops a whole test session, and a bench, with this one message

        pytest.exit(f"{path} not found: run `make build` or set QUIVER_BIN", 2)
    return path


class Server:
    """A running quiver process; its log is collected line by line."""

    def __init__(self, args: list[str], data_dir: str, config: str | None = None,
                 http_listen: str = "127.0.0.1:0", env: dict[str, str] | None = None,
                 flight_listen: str = "127.0.0.1:0", admin: bool = True):
        self.data_dir = data_dir
        cmd = [quiver_bin(), *args, "--flight-listen", flight_listen,
               "--http-listen", http_listen, "--data-dir", data_dir]
        if config is not None:
            path = os.path.join(data_dir, "test-config.yaml")
            os.makedirs(data_dir, exist_ok=True)
            with open(path, "w") as f:
                f.write(config)
            cmd += ["--config", path]
        bootstrap = {"QUIVER_ADMIN_EMAIL": ADMIN_EMAIL, "QUIVER_ADMIN_PASSWORD": ADMIN_PASSWORD} if admin else {}
        env = dict(quiver_env(data_dir), **bootstrap, RUST_LOG="info", **(env or {}))
        if not admin:
            env.pop("QUIVER_ADMIN_EMAIL", None)
            env.pop("QUIVER_ADMIN_PASSWORD", None)
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, text=True, env=env)
        self.log_lines: list[str] = []
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        self.flight = self.http = None
        self.banner: list[str] = []
        deadline = time.time() + 300
        while time.time() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            line = line.strip()
            self.banner.append(line)
            if line.startswith("Flight SQL:"):
                self.flight = line.split("://", 1)[1]
            elif line.startswith("HTTP:"):
                self.http = line.split("http://", 1)[1]
            elif line.startswith("Press Ctrl-C"):
                break
        if self.flight is None:
            self.proc.kill()
            raise RuntimeError("quiver did not start:\n" + self.log())
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()

    def _drain_stderr(self):
        for line in self.proc.stderr:
            self.log_lines.append(line.rstrip("\n"))

    @property
    def uri(self) -> str:
        return f"grpc://{self.flight}"

    def log(self) -> str:
        return "\n".join(self.log_lines)

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def on_terminal(args: list[str], timeout: float = 600) -> tuple[int, bytes, bytes]:
    """Runs `quiver ARGS` with stderr on a pseudo-terminal (where progress bars are drawn);
    returns the exit code, what the terminal showed and stdout."""
    import pty

    leader, follower = pty.openpty()
    data_dir = args[args.index("--data-dir") + 1] if "--data-dir" in args else "quiver-data"
    proc = subprocess.Popen([quiver_bin(), *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=follower, env=quiver_env(data_dir, RUST_LOG="warn"))
    os.close(follower)
    screen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:
            break
        if not chunk:
            break
        screen += chunk
    code = proc.wait(timeout=timeout)
    os.close(leader)
    return code, screen, proc.stdout.read()


def api(server: Server, method: str, path: str, token: str | None = None, body=None):
    """Calls Quiver's HTTP API; returns (status, decoded JSON or None)."""
    import json
    import urllib.error
    import urllib.request

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://{server.http}{path}", data=data, method=method)
    if body is not None:
        request.add_header("content-type", "application/json")
    if token is not None:
        request.add_header("authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            raw = response.read()
            return response.status, (json.loads(raw) if raw else None)
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, (json.loads(raw) if raw else None)


def login(server: Server, email: str, password: str) -> str:
    """A bearer token from `POST /auth/login`."""
    status, body = api(server, "POST", "/auth/login", body={"email": email, "password": password})
    assert status == 200, body
    return body["token"]


def metric(server: Server, name: str) -> float:
    """The value of Prometheus counter or gauge `name` (without labels) on `/metrics`; 0 when
    it has not been recorded yet."""
    import re
    import urllib.request

    request = urllib.request.Request(f"http://{server.http}/metrics")
    request.add_header("authorization", f"Bearer {login(server, ADMIN_EMAIL, ADMIN_PASSWORD)}")
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


def user_granted(server: Server, admin_token: str, name: str, table: str, password: str,
                 **grant) -> tuple[str, str, dict]:
    """A new user (`name-…@example.com`) alone in a new group granted `table` (with `grant`'s
    `row_filter` or `column_masks`): (e-mail, group, grant)."""
    import uuid

    suffix = uuid.uuid4().hex[:8]
    group, email = f"{name}_{suffix}", f"{name}-{suffix}@example.com"
    assert api(server, "POST", "/api/admin/groups", admin_token, {"name": group})[0] == 201
    assert api(server, "POST", "/api/admin/users", admin_token, {"email": email, "password": password})[0] == 201
    assert api(server, "POST", f"/api/admin/groups/{group}/members", admin_token, {"email": email})[0] == 204
    status, grant = api(server, "POST", "/api/admin/grants", admin_token, {"group": group, "table": table, **grant})
    assert status == 201, grant
    return email, group, grant


def connect(server: Server, email: str | None = None, password: str | None = None, token: str | None = None):
    """An ADBC connection with a password (Basic handshake) or a bearer token (JWT or PAT)."""
    import adbc_driver_flightsql.dbapi as flight_sql

    if token is not None:
        return flight_sql.connect(server.uri, db_kwargs={"adbc.flight.sql.authorization_header": f"Bearer {token}"})
    return flight_sql.connect(server.uri, db_kwargs={"username": email, "password": password})
