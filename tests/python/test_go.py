"""The Arrow Go Flight SQL `database/sql` driver (github.com/apache/arrow-go), as Go-based
dashboards use it: the Go tests in tests/go run against this module's server, as the admin
and as an analyst who may read only `tpch.nation`."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import urllib.parse

import pytest

from harness import ADMIN_EMAIL, ADMIN_PASSWORD, login, user_granted

GO = pathlib.Path(__file__).resolve().parents[1] / "go"
PASSWORD = "go analyst password"


def dsn(server, email: str, password: str) -> str:
    user = urllib.parse.quote(email, safe="") + ":" + urllib.parse.quote(password, safe="")
    return f"flightsql://{user}@{server.flight}?timeout=60s"


def test_the_go_database_sql_driver(server):
    if shutil.which("go") is None:
        pytest.fail("Go is not installed")
    admin = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    email, _, _ = user_granted(server, admin, "go", "tpch.nation", PASSWORD)
    env = dict(os.environ, QUIVER_ADMIN_DSN=dsn(server, ADMIN_EMAIL, ADMIN_PASSWORD),
               QUIVER_ANALYST_DSN=dsn(server, email, PASSWORD), QUIVER_ADMIN_ADDR=server.flight,
               QUIVER_ADMIN_EMAIL=ADMIN_EMAIL, QUIVER_ADMIN_PASSWORD=ADMIN_PASSWORD)
    run = subprocess.run(["go", "test", "-count=1", "-v", "./..."], cwd=GO, capture_output=True, text=True,
                         timeout=900, env=env)
    assert run.returncode == 0, f"{run.stdout[-8000:]}\n{run.stderr[-3000:]}"
