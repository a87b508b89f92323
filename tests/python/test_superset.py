"""Apache Superset (its own venv, `make superset`) reaching Quiver through the
`flightsql-dbapi` SQLAlchemy dialect, driven in Chromium as an analyst's admin would: add
the database in the connection dialog, browse its schemas and tables in SQL Lab, run a
query. The connection signs in as an analyst granted only `tpch.nation`."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from harness import ADMIN_EMAIL, ADMIN_PASSWORD, login, on_postgres, user_granted
from pgserver import free_port
from test_web_ui import CHROMIUM

pytestmark = pytest.mark.skipif(on_postgres(), reason="runs in the embedded-state pass")

VENV = pathlib.Path(os.environ.get("SUPERSET_VENV", pathlib.Path.home() / ".cache/quiver/superset-venv"))
PASSWORD = "superset analyst password"
SUPERSET_ADMIN = ("admin", "superset-admin-password")


@pytest.fixture(scope="module")
def superset(tmp_path_factory):
    """A Superset web server with a fresh metadata database: its URL."""
    binary = VENV / "bin" / "superset"
    if not binary.exists():
        pytest.fail(f"Superset is not installed in {VENV}: `make test` installs it (make superset)")
    home = tmp_path_factory.mktemp("superset")
    config = home / "superset_config.py"
    config.write_text(
        "SECRET_KEY = 'quiver-superset-test-secret-key-0123456789'\n"
        f"SQLALCHEMY_DATABASE_URI = 'sqlite:///{home}/superset.db'\n"
        "TALISMAN_ENABLED = False\n")
    env = dict(os.environ, SUPERSET_CONFIG_PATH=str(config), SUPERSET_HOME=str(home), FLASK_APP="superset")
    user, password = SUPERSET_ADMIN
    for command in (["db", "upgrade"],
                    ["fab", "create-admin", "--username", user, "--firstname", "Ada", "--lastname", "Admin",
                     "--email", "ada@example.com", "--password", password],
                    ["init"]):
        done = subprocess.run([str(binary), *command], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, f"superset {' '.join(command)}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    port = free_port()
    log = open(home / "superset.log", "w")
    proc = subprocess.Popen([str(binary), "run", "-h", "127.0.0.1", "-p", str(port), "--with-threads"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.read() == b"OK":
                    break
        except OSError:
            pass
        assert proc.poll() is None and time.time() < deadline, (home / "superset.log").read_text()[-3000:]
        time.sleep(0.5)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def page(superset):
    from playwright.sync_api import expect, sync_playwright

    # Superset's pages are slow under a loaded machine: wait as long for a check as for an action.
    expect.set_options(timeout=30_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
        page.set_default_timeout(30_000)
        yield page
        browser.close()


def test_superset_adds_quiver_browses_and_queries(server, superset, page):
    from playwright.sync_api import expect

    admin = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    email, _, _ = user_granted(server, admin, "superset", "tpch.nation", PASSWORD)
    host, port = server.flight.rsplit(":", 1)
    uri = (f"datafusion+flightsql://{urllib.parse.quote(email)}:{urllib.parse.quote(PASSWORD)}"
           f"@{host}:{port}?insecure=true")

    user, password = SUPERSET_ADMIN
    page.goto(f"{superset}/login/")
    page.get_by_label(re.compile("Username", re.I)).fill(user)
    page.get_by_label(re.compile("Password", re.I)).fill(password)
    page.get_by_role("button", name=re.compile("Sign in", re.I)).click()
    page.wait_for_url(re.compile(r"/superset/welcome"))

    # Settings → Database connections → + Database → Other: a SQLAlchemy URI.
    page.goto(f"{superset}/databaseview/list/")
    page.get_by_role("button", name=re.compile("Database")).first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("combobox").click()
    page.keyboard.type("Other")
    page.keyboard.press("Enter")
    dialog.get_by_placeholder("Name your database").fill("Quiver")
    dialog.get_by_placeholder("dialect+driver://username:password@host:port/database").fill(uri)
    dialog.get_by_role("button", name="Test connection").click()
    expect(page.get_by_text("Connection looks good!")).to_be_visible()
    dialog.get_by_role("button", name="Connect", exact=True).click()
    # The dialog closes once the database is saved; the list does not always refresh by
    # itself under load, so read it again.
    expect(dialog).to_be_hidden()
    page.goto(f"{superset}/databaseview/list/")
    expect(page.get_by_role("cell", name="Quiver", exact=True)).to_be_visible()

    # SQL Lab: the schema and its tables are what the analyst may read; a query runs, and
    # a table they may not read is not found.
    page.goto(f"{superset}/sqllab/")
    # A new tab opens on the only database and its only schema.
    page.get_by_text("Add a new tab", exact=True).click()
    page.get_by_text("tpch", exact=True).last.click()
    expect(page.get_by_text("nation", exact=True)).to_be_visible()
    for hidden in ["customer", "orders", "lineitem"]:
        expect(page.get_by_text(hidden, exact=True)).to_have_count(0)

    def run(sql: str) -> None:
        page.keyboard.press("Escape")  # the editor's autocompletion, if open
        page.locator(".ace_editor .ace_content").first.click()
        page.keyboard.press("Control+A")
        page.keyboard.type(sql)
        page.get_by_role("button", name="Run").click()

    run("SELECT n_name FROM tpch.nation ORDER BY n_nationkey")
    expect(page.get_by_text("25 rows")).to_be_visible()
    expect(page.get_by_role("gridcell", name="ALGERIA", exact=True)).to_be_visible()
    run("SELECT c_name FROM tpch.customer")
    expect(page.get_by_text(re.compile("not found"))).to_be_visible()
