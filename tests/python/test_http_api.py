"""The HTTP sidecar as clients meet it: every route listed in the generated OpenAPI document
is refused without credentials and, on admin routes, for non-admins; browser sessions with
cookies, CSRF and sign-out; metrics; and service accounts signing in to Flight SQL through
the ADBC driver's OAuth client-credentials flow."""

from __future__ import annotations

import http.cookiejar
import json
import re
import urllib.error
import urllib.parse
import urllib.request
import uuid

import adbc_driver_flightsql.dbapi as flight_sql
import adbc_driver_manager
import pytest
import requests

from harness import ADMIN_EMAIL, ADMIN_PASSWORD, api, connect, login

PUBLIC = {("get", "/health"), ("post", "/auth/login"), ("post", "/oauth/token"), ("get", "/"),
          ("get", "/login"), ("post", "/login"), ("get", "/auth/oidc/{provider}/login"),
          ("get", "/auth/oidc/{provider}/callback")}
PASSWORD = "a long enough password"


def openapi(server) -> dict:
    status, doc = api(server, "GET", "/api/openapi.json")
    assert status == 200
    return doc


def operations(doc):
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                yield method, path, "web" in op.get("tags", [])


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x", path)


@pytest.fixture(scope="module")
def analyst(server):
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    email = f"analyst-{uuid.uuid4().hex[:8]}@example.com"
    assert api(server, "POST", "/api/admin/users", token, {"email": email, "password": PASSWORD})[0] == 201
    return email


def test_the_openapi_document_lists_the_documented_interface(server):
    doc = openapi(server)
    ops = {(m, p) for m, p, _ in operations(doc)}
    for expected in [("post", "/auth/login"), ("post", "/auth/logout"), ("get", "/api/me"),
                     ("get", "/api/me/tokens"), ("post", "/api/me/tokens"), ("delete", "/api/me/tokens/{id}"),
                     ("get", "/api/admin/users"), ("post", "/api/admin/users"),
                     ("patch", "/api/admin/users/{email}"), ("delete", "/api/admin/users/{email}"),
                     ("get", "/api/admin/groups"), ("post", "/api/admin/groups"),
                     ("delete", "/api/admin/groups/{name}"), ("get", "/api/admin/groups/{name}/members"),
                     ("post", "/api/admin/groups/{name}/members"),
                     ("delete", "/api/admin/groups/{name}/members/{email}"),
                     ("get", "/api/admin/grants"), ("post", "/api/admin/grants"), ("delete", "/api/admin/grants/{id}"),
                     ("get", "/api/admin/audit"), ("get", "/health"), ("get", "/metrics"),
                     ("post", "/oauth/token"), ("get", "/auth/oidc/{provider}/login"),
                     ("get", "/auth/oidc/{provider}/callback"), ("get", "/connect"), ("get", "/catalog"),
                     ("get", "/admin/users"), ("get", "/admin/grants"), ("get", "/admin/audit"),
                     ("post", "/webhooks/{source}")]:
        assert expected in ops, expected
    assert "bearer" in doc["components"]["securitySchemes"]


def test_every_route_needs_credentials_and_admin_routes_need_an_admin(server, analyst):
    """Every route the router has (the OpenAPI document is generated from it): without
    credentials the API says 401 and pages send you to sign in; as a non-admin, admin routes
    say 403; nothing answers 5xx."""
    base = f"http://{server.http}"
    status, signed_in = api(server, "POST", "/auth/login", body={"email": analyst, "password": PASSWORD})
    user_token, csrf = signed_in["token"], signed_in["csrf_token"]
    checked = 0
    for method, path, web in operations(openapi(server)):
        url = base + concrete(path)
        send = {"data": {"csrf": csrf}} if web else ({"json": {}} if method in {"post", "patch"} else {})
        anonymous = requests.request(method, url, allow_redirects=False, timeout=30,
                                     **({"data": {}} if web and method == "post" else {}))
        if path == "/webhooks/{source}":
            # Signed by the source, not a token: an unknown source is not found, and Jira's
            # webhooks are off with no secret configured (this server).
            assert anonymous.status_code == 404, anonymous.text
            jira = requests.post(base + "/webhooks/jira", timeout=30)
            assert jira.status_code == 503 and "webhook_secret" in jira.json()["error"]["message"], jira.text
            continue
        assert anonymous.status_code < 500, (method, path, anonymous.text)
        if (method, path) in PUBLIC:
            continue
        if web:
            assert anonymous.status_code == 303, (method, path, anonymous.status_code)
            assert anonymous.headers["location"].startswith("/login"), (method, path)
        else:
            assert anonymous.status_code == 401, (method, path, anonymous.status_code, anonymous.text)
            assert anonymous.json()["error"]["code"] == "unauthenticated"
        # As a signed-in non-admin (a fresh token for signing out, which ends it).
        token = login(server, analyst, PASSWORD) if path in ("/auth/logout", "/logout") else user_token
        if web:
            csrf_now = csrf if token == user_token else api(server, "POST", "/auth/login", body={
                "email": analyst, "password": PASSWORD})[1]
            if token != user_token:
                token, send = csrf_now["token"], {"data": {"csrf": csrf_now["csrf_token"]}}
            as_user = requests.request(method, url, allow_redirects=False, timeout=30,
                                       cookies={"quiver_session": token}, **send)
        else:
            as_user = requests.request(method, url, allow_redirects=False, timeout=30,
                                       headers={"authorization": f"Bearer {token}"}, **send)
        assert as_user.status_code < 500, (method, path, as_user.text)
        admin_only = path.startswith("/api/admin/") or path.startswith("/admin/") or path == "/metrics"
        if admin_only:
            assert as_user.status_code == 403, (method, path, as_user.status_code)
        else:
            assert as_user.status_code not in (401, 403), (method, path, as_user.status_code, as_user.text)
        checked += 1
    assert checked >= 35


def test_every_error_is_a_json_error_body(server):
    """What a script gets wrong (bad JSON, a missing field, no content type, an unknown route or
    method) comes back as `{"error": {"code", "message"}}` naming the problem, like the API's
    own errors."""
    base = f"http://{server.http}"
    admin = {"authorization": f"Bearer {login(server, ADMIN_EMAIL, ADMIN_PASSWORD)}"}

    def error(response, status, code):
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/json"), response.headers
        body = response.json()["error"]
        assert body["code"] == code, body
        assert body["message"], body
        return body["message"]

    bad_json = requests.post(f"{base}/api/admin/users", data="{not json", timeout=30,
                             headers={**admin, "content-type": "application/json"})
    assert "json" in error(bad_json, 400, "bad_request").lower()
    missing = requests.post(f"{base}/api/admin/users", json={"password": PASSWORD}, headers=admin, timeout=30)
    assert "email" in error(missing, 422, "invalid")
    untyped = requests.post(f"{base}/api/admin/users", data='{"email": "a@b.io"}', headers=admin, timeout=30)
    assert "content-type" in error(untyped, 415, "unsupported_media_type").lower()
    assert "/api/admin/nope" in error(requests.get(f"{base}/api/admin/nope", headers=admin, timeout=30),
                                      404, "not_found")
    wrong_method = requests.put(f"{base}/api/admin/users", headers=admin, timeout=30)
    assert "PUT" in error(wrong_method, 405, "method_not_allowed")
    assert "GET" in wrong_method.headers["allow"]
    huge = requests.post(f"{base}/api/admin/users", headers=admin, timeout=30,
                         json={"email": "a@b.io", "password": "x" * (3 << 20)})
    error(huge, 413, "too_large")


class Browser:
    """Cookies kept like a browser keeps them."""

    def __init__(self, server):
        self.base = f"http://{server.http}"
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))

    def call(self, method, path, body=None, headers=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers or {})
        if body is not None:
            request.add_header("content-type", "application/json")
        try:
            with self.opener.open(request, timeout=30) as r:
                raw = r.read()
                return r.status, (json.loads(raw) if raw else None), r.headers
        except urllib.error.HTTPError as e:
            raw = e.read()
            return e.code, (json.loads(raw) if raw else None), e.headers


def test_browser_sessions_use_cookies_with_csrf_and_end_at_sign_out(server, analyst):
    browser = Browser(server)
    status, body, headers = browser.call("POST", "/auth/login", {"email": analyst, "password": PASSWORD})
    assert status == 200
    cookies = headers.get_all("set-cookie")
    session = next(c for c in cookies if c.startswith("quiver_session="))
    assert "HttpOnly" in session and "SameSite=Lax" in session and "Secure" not in session
    csrf = body["csrf_token"]

    assert browser.call("GET", "/api/me")[1]["email"] == analyst
    status, body, _ = browser.call("POST", "/api/me/tokens", {"name": "from the browser"})
    assert status == 403 and body["error"]["code"] == "csrf"
    status, body, _ = browser.call("POST", "/api/me/tokens", {"name": "from the browser"},
                                   {"x-csrf-token": "0" * 64})
    assert status == 403
    status, body, _ = browser.call("POST", "/api/me/tokens", {"name": "from the browser"}, {"x-csrf-token": csrf})
    assert status == 201 and body["token"].startswith("qvr_")

    stolen = next(c.value for c in browser.jar if c.name == "quiver_session")
    assert browser.call("POST", "/auth/logout", headers={"x-csrf-token": csrf})[0] == 204
    assert all(c.name != "quiver_session" for c in browser.jar)
    assert browser.call("GET", "/api/me")[0] == 401
    # The ended session's token is refused even when replayed by hand.
    assert api(server, "GET", "/api/me", stolen)[0] == 401


def test_login_over_https_sets_secure_cookies(server, analyst):
    request = urllib.request.Request(f"http://{server.http}/auth/login", method="POST",
                                     data=json.dumps({"email": analyst, "password": PASSWORD}).encode(),
                                     headers={"content-type": "application/json", "x-forwarded-proto": "https"})
    with urllib.request.urlopen(request, timeout=30) as r:
        assert all("Secure" in c for c in r.headers.get_all("set-cookie"))


def test_metrics_count_queries_and_sign_ins(server, conn):
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM tpch.nation")
        cur.fetchall()
    request = urllib.request.Request(f"http://{server.http}/metrics", headers={"authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=30) as r:
        text = r.read().decode()
    assert 'quiver_queries_total{outcome="ok"}' in text
    assert "quiver_query_duration_seconds_bucket" in text
    assert "quiver_rows_streamed_total" in text and "quiver_bytes_streamed_total" in text
    assert "quiver_active_queries" in text
    assert re.search(r'quiver_logins_total\{[^}]*outcome="ok"', text)


def oauth_token(server, body: dict, basic: tuple[str, str] | None = None):
    import base64

    request = urllib.request.Request(f"http://{server.http}/oauth/token", method="POST",
                                     data=urllib.parse.urlencode(body).encode(),
                                     headers={"content-type": "application/x-www-form-urlencoded"})
    if basic:
        raw = f"{urllib.parse.quote(basic[0])}:{urllib.parse.quote(basic[1])}".encode()
        request.add_header("authorization", "Basic " + base64.b64encode(raw).decode())
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_service_accounts_sign_in_with_client_credentials_through_adbc(tls_server):
    server, ca_pem, _ = tls_server
    assert server.flight.startswith("127.0.0.1:") or server.flight.startswith("localhost:")
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    group = f"etl_{uuid.uuid4().hex[:6]}"
    email = f"{group}@example.com"
    assert api(server, "POST", "/api/admin/groups", token, {"name": group})[0] == 201
    status, client = api(server, "POST", "/api/admin/service-accounts", token, {"email": email, "name": "nightly"})
    assert status == 201 and client["client_secret"].startswith("qvs_")
    assert api(server, "POST", f"/api/admin/groups/{group}/members", token, {"email": email})[0] == 204
    assert api(server, "POST", "/api/admin/grants", token, {"group": group, "table": "tpch.nation"})[0] == 201

    status, body = oauth_token(server, {"grant_type": "client_credentials"}, (client["client_id"], client["client_secret"]))
    assert status == 200 and body["token_type"] == "Bearer" and body["expires_in"] > 0
    assert api(server, "GET", "/api/me", body["access_token"])[1]["email"] == email
    assert oauth_token(server, {"grant_type": "client_credentials", "client_id": client["client_id"],
                                "client_secret": "qvs_wrong"})[1]["error"] == "invalid_client"
    assert oauth_token(server, {"grant_type": "password"})[1]["error"] == "unsupported_grant_type"

    def adbc():
        return flight_sql.connect(f"grpc+tls://{server.flight}", db_kwargs={
            "adbc.flight.sql.client_option.tls_root_certs": ca_pem,
            "adbc.flight.sql.oauth.flow": "client_credentials",
            "adbc.flight.sql.oauth.token_uri": f"http://{server.http}/oauth/token",
            "adbc.flight.sql.oauth.client_id": client["client_id"],
            "adbc.flight.sql.oauth.client_secret": client["client_secret"],
        })

    with adbc() as c, c.cursor() as cur:
        cur.execute("SELECT count(*) FROM tpch.nation")
        assert cur.fetchone()[0] == 25
        with pytest.raises(adbc_driver_manager.Error, match="not found"):
            cur.execute("SELECT count(*) FROM tpch.customer")
    assert api(server, "DELETE", f"/api/admin/service-accounts/{client['client_id']}", token)[0] == 204
    with pytest.raises(adbc_driver_manager.Error):
        with adbc() as c, c.cursor() as cur:
            cur.execute("SELECT 1")


def test_flight_sql_over_tls_with_a_password(tls_server):
    server, ca_pem, _ = tls_server
    with flight_sql.connect(f"grpc+tls://{server.flight}", db_kwargs={
            "adbc.flight.sql.client_option.tls_root_certs": ca_pem,
            "username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}) as c, c.cursor() as cur:
        cur.execute("SELECT count(*) FROM tpch.region")
        assert cur.fetchone()[0] == 5
    # Without trusting the CA, the handshake fails: the certificate is really checked.
    with pytest.raises(adbc_driver_manager.Error):
        with flight_sql.connect(f"grpc+tls://{server.flight}", db_kwargs={
                "username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}) as c, c.cursor() as cur:
            cur.execute("SELECT 1")


def test_admins_describe_and_unpublish_tables(tls_server):
    server, ca_pem, _ = tls_server
    token = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    status, tables = api(server, "GET", "/api/admin/tables", token)
    assert status == 200 and "tpch.part" in [t["name"] for t in tables]
    status, part = api(server, "GET", "/api/admin/tables/tpch.part", token)
    assert status == 200 and part["rows"] > 0 and part["location"]
    assert api(server, "GET", "/api/admin/tables/tpch.nope", token)[0] == 404
    assert api(server, "GET", "/api/admin/tables/Not%20A%20Name", token)[0] == 422

    status, part = api(server, "PATCH", "/api/admin/tables/tpch.part", token, {"description": "Parts we sell"})
    assert status == 200 and part["description"] == "Parts we sell"
    catalog = {t["name"]: t for t in api(server, "GET", "/api/catalog", token)[1]}
    assert catalog["tpch.part"]["description"] == "Parts we sell"

    assert api(server, "DELETE", "/api/admin/tables/tpch.part", token)[0] == 204
    assert api(server, "GET", "/api/admin/tables/tpch.part", token)[0] == 404
    with flight_sql.connect(f"grpc+tls://{server.flight}", db_kwargs={
            "adbc.flight.sql.client_option.tls_root_certs": ca_pem,
            "username": ADMIN_EMAIL, "password": ADMIN_PASSWORD}) as c, c.cursor() as cur:
        with pytest.raises(adbc_driver_manager.Error, match="not found"):
            cur.execute("SELECT count(*) FROM tpch.part")
    audit = api(server, "GET", "/api/admin/audit?action=table.delete", token)[1]
    assert audit and audit[0]["target"] == "tpch.part" and "locations" in audit[0]["detail"]
