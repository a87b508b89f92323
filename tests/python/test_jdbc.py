"""The Arrow Flight SQL JDBC driver (Maven Central `org.apache.arrow:flight-sql-jdbc-driver`),
as DBeaver, Tableau and IntelliJ use it: the JUnit tests in tests/jdbc run against this
module's server, with an analyst who may read only `tpch.nation`."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

from harness import ADMIN_EMAIL, ADMIN_PASSWORD, api, login, user_granted

JDBC = pathlib.Path(__file__).resolve().parents[1] / "jdbc"
PASSWORD = "jdbc analyst password"


@pytest.fixture(scope="module")
def analyst(server):
    """A user in a group granted `tpch.nation` only, and a PAT of theirs."""
    admin = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    email, _, _ = user_granted(server, admin, "jdbc", "tpch.nation", PASSWORD)
    status, pat = api(server, "POST", "/api/me/tokens", login(server, email, PASSWORD), {"name": "jdbc"})
    assert status == 201, pat
    return email, pat["token"]


@pytest.fixture(scope="module")
def described(server):
    """`docs.regions`, with column descriptions (which drivers read as remarks)."""
    from test_sync import sync

    admin = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    status, body = api(server, "POST", "/api/admin/tables", admin, {
        "name": "docs.regions", "connector": "sql", "options": {"query": "SELECT * FROM tpch.region"},
        "description": "TPC-H regions", "columns": {"r_name": "The region's name"}})
    assert status in (201, 409), body
    assert sync(server, admin, "docs.regions")["status"] == "succeeded"


def test_the_jdbc_driver(server, analyst, described, tls_server, tmp_path):
    if shutil.which("mvn") is None:
        pytest.fail("Maven is not installed: `make test` installs it (make java)")
    email, pat = analyst
    host, port = server.flight.rsplit(":", 1)
    tls, _, ca_path = tls_server
    trust_store, trust_password = tmp_path / "trust.p12", "quiver-test"
    subprocess.run(["keytool", "-importcert", "-noprompt", "-alias", "quiver-test-ca", "-file", ca_path,
                    "-keystore", str(trust_store), "-storetype", "PKCS12", "-storepass", trust_password],
                   check=True, capture_output=True)
    properties = {
        "quiver.host": host, "quiver.port": port,
        "quiver.admin.email": ADMIN_EMAIL, "quiver.admin.password": ADMIN_PASSWORD,
        "quiver.analyst.email": email, "quiver.analyst.password": PASSWORD, "quiver.analyst.pat": pat,
        "quiver.tls.port": tls.flight.rsplit(":", 1)[1], "quiver.tls.ca": ca_path,
        "quiver.tls.truststore": str(trust_store), "quiver.tls.truststore.password": trust_password,
    }
    command = ["mvn", "-B", "-q", "-f", str(JDBC / "pom.xml"), "test",
               *[f"-D{k}={v}" for k, v in properties.items()]]
    run = subprocess.run(command, capture_output=True, text=True, timeout=900, env=dict(os.environ))
    reports = JDBC / "target" / "surefire-reports"
    details = "\n".join(p.read_text() for p in sorted(reports.glob("*.txt"))) if reports.exists() else ""
    assert run.returncode == 0, f"{run.stdout[-6000:]}\n{run.stderr[-3000:]}\n{details[-6000:]}"
