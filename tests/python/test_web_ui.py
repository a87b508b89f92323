"""The web UI in a real browser (Debian's Chromium, driven by Playwright): sign in, create a
personal access token on the Connect page, use it from ADBC, revoke it; an admin grants a
table in the admin pages and the user then sees it in the catalog."""

from __future__ import annotations

import re
import shutil
import uuid

import adbc_driver_manager
import pytest

from harness import ADMIN_EMAIL, ADMIN_PASSWORD, api, connect, login

PASSWORD = "browser-password-1"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # --no-sandbox: the tests may run as root, where Chromium's sandbox cannot start.
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def user(server):
    email = f"web-{uuid.uuid4().hex[:8]}@example.com"
    admin = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert api(server, "POST", "/api/admin/users", admin, {"email": email, "password": PASSWORD})[0] == 201
    return email


def sign_in(browser, server, email, password, start="/connect"):
    from playwright.sync_api import expect

    page = browser.new_context().new_page()
    page.goto(f"http://{server.http}{start}")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    return page


def test_a_wrong_password_shows_an_error_and_keeps_you_out(browser, server, user):
    from playwright.sync_api import expect

    page = sign_in(browser, server, user, "not-the-password")
    expect(page.get_by_role("alert")).to_contain_text("Invalid e-mail or password")
    page.goto(f"http://{server.http}/connect")
    expect(page).to_have_url(re.compile(r"/login"))


def test_create_a_token_use_it_from_adbc_and_revoke_it(browser, server, user):
    from playwright.sync_api import expect

    page = sign_in(browser, server, user, PASSWORD)
    expect(page).to_have_url(re.compile(r"/connect$"))
    expect(page.locator("#flight-uri")).to_have_text(server.uri)
    page.get_by_label("Name").fill("notebook")
    page.get_by_role("button", name="Create token").click()
    token = page.locator("#new-token").inner_text().strip()
    assert token.startswith("qvr_")
    expect(page.locator("#tokens")).to_contain_text("notebook")

    with connect(server, token=token) as c, c.cursor() as cur:
        cur.execute("SELECT 41 + 1")
        assert cur.fetchone()[0] == 42

    page.get_by_role("button", name="Revoke notebook").click()
    expect(page.locator("#tokens")).to_contain_text("revoked")
    with pytest.raises(adbc_driver_manager.Error):
        with connect(server, token=token) as c, c.cursor() as cur:
            cur.execute("SELECT 1")

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/login"))
    page.goto(f"http://{server.http}/connect")
    expect(page).to_have_url(re.compile(r"/login"))


def test_an_admin_grants_a_table_and_the_user_sees_it_in_the_catalog(browser, server, user):
    from playwright.sync_api import expect

    analyst = sign_in(browser, server, user, PASSWORD, start="/catalog")
    expect(analyst.locator("#no-tables")).to_be_visible()
    # Admin pages are for admins.
    response = analyst.goto(f"http://{server.http}/admin/grants")
    assert response.status == 403

    group = f"web_{uuid.uuid4().hex[:6]}"
    admin = sign_in(browser, server, ADMIN_EMAIL, ADMIN_PASSWORD, start="/admin/groups")
    expect(admin).to_have_url(re.compile(r"/admin/groups$"))
    admin.get_by_label("Name").fill(group)
    admin.get_by_role("button", name="Add group").click()
    admin.get_by_label(f"Add to {group}").fill(user)
    admin.locator(f"[id='group-{group}']").get_by_role("button", name="Add member").click()
    expect(admin.locator(f"[id='group-{group}']")).to_contain_text(user)

    admin.goto(f"http://{server.http}/admin/grants")
    admin.get_by_label("Group").select_option(group)
    admin.get_by_label("Table (schema.table or schema.*)").fill("tpch.region")
    admin.get_by_label("Row filter").fill("r_regionkey < 3")
    admin.get_by_label("Hidden columns").fill("r_comment")
    admin.get_by_role("button", name="Grant").click()
    expect(admin.locator("#grants")).to_contain_text(group)

    # A grant the table cannot take is refused with the reason, and nothing is saved.
    admin.get_by_label("Group").select_option(group)
    admin.get_by_label("Table (schema.table or schema.*)").fill("tpch.region")
    admin.get_by_label("Row filter").fill("no_such_column = 1")
    admin.get_by_role("button", name="Grant").click()
    expect(admin.get_by_role("alert")).to_contain_text("no_such_column")

    analyst.goto(f"http://{server.http}/catalog")
    section = analyst.locator("[id='table-tpch.region']")
    expect(section).to_contain_text("r_regionkey")
    expect(section).not_to_contain_text("r_comment")
    with connect(server, user, PASSWORD) as c, c.cursor() as cur:
        cur.execute("SELECT count(*) FROM tpch.region")
        assert cur.fetchone()[0] == 3

    admin.goto(f"http://{server.http}/admin/audit?action=grant.create")
    expect(admin.locator("#audit")).to_contain_text("tpch.region")


def test_forms_without_the_csrf_token_are_refused(server, user):
    import requests

    s = requests.Session()
    token = login(server, user, PASSWORD)
    s.cookies.set("quiver_session", token)
    r = s.post(f"http://{server.http}/connect/tokens", data={"name": "forged", "csrf": "nope"},
               allow_redirects=False, timeout=10)
    assert r.status_code == 403
    assert all(t["name"] != "forged" for t in api(server, "GET", "/api/me/tokens", token)[1])


def test_an_admin_syncs_a_table_from_the_tables_page(browser, server):
    from playwright.sync_api import expect

    name = f"web.regions_{uuid.uuid4().hex[:6]}"
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    status, body = api(server, "POST", "/api/admin/tables", token, {
        "name": name, "connector": "sql", "options": {"query": "SELECT r_name FROM tpch.region"}})
    assert status == 201, body

    admin = sign_in(browser, server, ADMIN_EMAIL, ADMIN_PASSWORD, start="/admin/tables")
    row = admin.locator("#tables tr", has_text=name)
    expect(row).to_contain_text("sql (full)")
    expect(row).to_contain_text("never")
    row.get_by_role("button", name="Sync now").click()
    expect(admin).to_have_url(re.compile(r"/admin/tables$"))
    for _ in range(50):
        if "succeeded" in admin.locator("#tables tr", has_text=name).inner_text():
            break
        admin.wait_for_timeout(200)
        admin.reload()
    row = admin.locator("#tables tr", has_text=name)
    expect(row).to_contain_text("succeeded")
    expect(row).to_contain_text("5")  # rows
    with connect(server, ADMIN_EMAIL, ADMIN_PASSWORD) as c, c.cursor() as cur:
        cur.execute(f"SELECT count(*) FROM {name}")
        assert cur.fetchone()[0] == 5
    # The button is the API's action: audited alike.
    audit = api(server, "GET", "/api/admin/audit?action=table.sync&limit=50", token)[1]
    assert any(e["target"] == name and e["actor"] == ADMIN_EMAIL for e in audit), audit


def test_pages_cannot_be_framed_or_sniffed_and_run_no_script(browser, server, user):
    import requests

    # Every page, signed in or not, carries the headers.
    session = requests.Session()
    r = session.post(f"http://{server.http}/auth/login", json={"email": user, "password": PASSWORD}, timeout=10)
    assert r.status_code == 200, r.text
    for path in ["/login", "/connect", "/catalog", "/admin/users", "/api/me", "/no-such-page"]:
        r = session.get(f"http://{server.http}{path}", timeout=10, allow_redirects=False)
        assert r.headers.get("X-Frame-Options") == "DENY", path
        assert r.headers.get("X-Content-Type-Options") == "nosniff", path
        policy = r.headers.get("Content-Security-Policy", "")
        assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy, (path, policy)
        assert "script-src" not in policy and "unsafe-inline" not in policy, policy

    # In the browser: the style sheet still applies under the policy, nothing is blocked.
    violations = []
    page = browser.new_context().new_page()
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(f"http://{server.http}/login")
    assert page.evaluate("getComputedStyle(document.body).maxWidth") == "1024px"
    assert violations == []

    # A page of another origin that frames the sign-in form gets nothing in the frame.
    page.set_content(f'<iframe id="f" src="http://{server.http}/login"></iframe>')
    page.wait_for_timeout(1000)
    frame = page.frame_locator("#f")
    assert frame.get_by_label("Password").count() == 0
