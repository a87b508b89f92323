"""Sign-in with a real OpenID provider (the certified `oidc-provider` package, run by Node):
the authorization-code flow with PKCE end to end, and the ways it must fail — bad state,
replayed code, wrong nonce, disallowed domain, unverified e-mail — plus group-claim sync
and using the resulting session from ADBC."""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import tempfile
import urllib.parse
import uuid

import pytest
import requests

from harness import ADMIN_EMAIL, ADMIN_PASSWORD, Server, api, connect, login

PROVIDER = pathlib.Path(__file__).parents[1] / "oidc" / "provider.mjs"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def idp_and_server():
    port = free_port()
    redirect = f"http://127.0.0.1:{port}/auth/oidc/test/callback"
    node = subprocess.Popen(["node", str(PROVIDER), redirect], stdout=subprocess.PIPE, text=True,
                            cwd=PROVIDER.parent)
    line = node.stdout.readline().strip()
    assert line.startswith("ISSUER "), line
    issuer = line.split(" ", 1)[1]
    config = f"""
auth:
  oidc:
    - name: test
      display_name: Test IdP
      issuer: {issuer}
      client_id: quiver
      client_secret: quiver-test-secret
      scopes: [openid, email, profile, groups]
      allowed_domains: [example.com]
      groups_claim: groups
      attributes: {{region: region}}
"""
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(["demo", "--scale", "0.01"], os.path.join(tmp, "data"), config=config,
                        http_listen=f"127.0.0.1:{port}")
        try:
            yield issuer, server
        finally:
            server.stop()
            node.terminate()


class Flow:
    """One browser going through the sign-in, with hooks to tamper with it."""

    def __init__(self, issuer, server, account, tamper=None, next_path="/connect"):
        requests.post(f"{issuer}/test/account", json=account, timeout=10).raise_for_status()
        self.server = server
        self.browser = requests.Session()
        self.callback_url = None
        self.flow_cookie = None
        base = f"http://{server.http}"
        url = f"{base}/auth/oidc/test/login?next={urllib.parse.quote(next_path)}"
        for _ in range(20):
            r = self.browser.get(url, allow_redirects=False, timeout=10)
            location = r.headers.get("location")
            if location is None or r.status_code not in (302, 303, 307):
                break
            location = urllib.parse.urljoin(url, location)
            if location.startswith(issuer) and "/auth?" in location and tamper:
                location = tamper("authorize", location)
            if location.startswith(f"{base}/auth/oidc/test/callback"):
                self.flow_cookie = self.browser.cookies.get("quiver_oidc")
                if tamper:
                    location = tamper("callback", location)
                self.callback_url = location
            if not location.startswith(f"{base}/auth/") and location.startswith(base):
                break  # back in Quiver, past the callback
            url = location
        self.response = r
        self.location = r.headers.get("location")

    @property
    def session_token(self):
        return self.browser.cookies.get("quiver_session")


def account(email, groups=(), verified=True, name="Test User", region=None):
    """An account at the provider; `verified=None` sends no `email_verified` claim at all."""
    person = {"sub": str(uuid.uuid4()), "email": email, "email_verified": verified, "name": name,
              "groups": list(groups)}
    if region is not None:
        person["region"] = region
    if verified is None:
        del person["email_verified"]
    return person


def replace_param(url, name, value):
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query))
    query[name] = value
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


def test_sign_in_creates_the_user_syncs_groups_and_works_for_flight_sql(idp_and_server):
    issuer, server = idp_and_server
    admin = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    for group in ["sales", "manual"]:
        assert api(server, "POST", "/api/admin/groups", admin, {"name": group})[0] == 201
    assert api(server, "POST", "/api/admin/grants", admin, {"group": "sales", "table": "tpch.nation"})[0] == 201
    person = account("olivia@example.com", groups=["sales", "Admin", "not-a-quiver-group"], name="Olivia")

    flow = Flow(issuer, server, person)
    assert flow.response.status_code == 303 and flow.location == "/connect"
    me = api(server, "GET", "/api/me", flow.session_token)[1]
    assert me["email"] == "olivia@example.com"
    assert me["groups"] == ["Everyone", "sales"] and not me["is_admin"]
    with connect(server, token=flow.session_token) as c, c.cursor() as cur:
        cur.execute("SELECT count(*) FROM tpch.nation")
        assert cur.fetchone()[0] == 25

    members = api(server, "GET", "/api/admin/groups/sales/members", admin)[1]
    assert {"email": "olivia@example.com", "source": "idp"} in members
    assert api(server, "POST", "/api/admin/groups/manual/members", admin, {"email": "olivia@example.com"})[0] == 204
    # Next sign-in: the provider no longer lists `sales`; the admin-made membership stays.
    person["groups"] = []
    flow = Flow(issuer, server, person)
    assert api(server, "GET", "/api/me", flow.session_token)[1]["groups"] == ["Everyone", "manual"]


def test_a_claim_mapped_to_a_user_attribute_drives_a_grant_filter(idp_and_server):
    issuer, server = idp_and_server
    admin = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    group = f"regional_{uuid.uuid4().hex[:6]}"
    assert api(server, "POST", "/api/admin/groups", admin, {"name": group})[0] == 201
    # One grant for every region: each person sees the nations of the region their provider says.
    status, grant = api(server, "POST", "/api/admin/grants", admin, {
        "group": group, "table": "tpch.region",
        "row_filter": "r_name = user_attribute('region')"})
    assert status == 201, grant
    seen = {}
    for email, region in [("paul@example.com", "EUROPE"), ("rita@example.com", "ASIA")]:
        flow = Flow(issuer, server, account(email, groups=[group], region=region))
        assert api(server, "GET", f"/api/admin/users/{email}/attributes", admin)[1] == {"region": region}
        with connect(server, token=flow.session_token) as c, c.cursor() as cur:
            cur.execute("SELECT r_name FROM tpch.region")
            seen[email] = [r[0] for r in cur.fetchall()]
    assert seen == {"paul@example.com": ["EUROPE"], "rita@example.com": ["ASIA"]}
    # The provider moves Paul; his next sign-in carries it, and his next query follows.
    flow = Flow(issuer, server, account("paul@example.com", groups=[group], region="AFRICA"))
    with connect(server, token=flow.session_token) as c, c.cursor() as cur:
        cur.execute("SELECT r_name FROM tpch.region")
        assert [r[0] for r in cur.fetchall()] == ["AFRICA"]


def test_redirects_after_sign_in_stay_on_this_server(idp_and_server):
    issuer, server = idp_and_server
    flow = Flow(issuer, server, account("paul@example.com"), next_path="https://evil.example/")
    assert flow.location == "/"
    flow = Flow(issuer, server, account("paul@example.com"), next_path="//evil.example/")
    assert flow.location == "/"


def test_a_tampered_state_is_refused(idp_and_server):
    issuer, server = idp_and_server
    flow = Flow(issuer, server, account("quinn@example.com"),
                tamper=lambda stage, url: replace_param(url, "state", "forged") if stage == "callback" else url)
    assert flow.response.status_code == 400 and "state" in flow.response.json()["error"]["message"]
    assert flow.session_token is None


def test_a_replayed_code_is_refused(idp_and_server):
    issuer, server = idp_and_server
    flow = Flow(issuer, server, account("rita@example.com"))
    assert flow.response.status_code == 303 and flow.session_token
    replay = requests.Session()
    replay.cookies.set("quiver_oidc", flow.flow_cookie, path="/auth/oidc/")
    r = replay.get(flow.callback_url, allow_redirects=False, timeout=10)
    assert r.status_code == 400 and "code" in r.json()["error"]["message"]
    assert "quiver_session" not in replay.cookies


def test_a_wrong_nonce_is_refused(idp_and_server):
    issuer, server = idp_and_server
    flow = Flow(issuer, server, account("sam@example.com"),
                tamper=lambda stage, url: replace_param(url, "nonce", "forged-nonce") if stage == "authorize" else url)
    assert flow.response.status_code == 400 and "nonce" in flow.response.json()["error"]["message"]
    assert flow.session_token is None


@pytest.mark.parametrize("person, message", [
    (account("mallory@evil.example"), "evil.example"),
    (account("tess@example.com", verified=False), "not verified"),
    (account("ned@example.com", verified=None), "no `email_verified` claim"),
])
def test_disallowed_domains_and_unverified_emails_are_refused(idp_and_server, person, message):
    issuer, server = idp_and_server
    flow = Flow(issuer, server, person)
    assert flow.response.status_code == 403 and message in flow.response.json()["error"]["message"]
    assert flow.session_token is None
    admin = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
    assert person["email"] not in [u["email"] for u in api(server, "GET", "/api/admin/users", admin)[1]]


def test_an_unknown_provider_is_not_found(idp_and_server):
    _, server = idp_and_server
    r = requests.get(f"http://{server.http}/auth/oidc/nope/login", allow_redirects=False, timeout=10)
    assert r.status_code == 404


def id_token_from_provider(issuer, person, redirect):
    """An ID token for `person`, issued to Quiver's client id: the authorization-code flow
    run by hand, as a notebook's own sign-in library would."""
    import base64
    import hashlib

    requests.post(f"{issuer}/test/account", json=person, timeout=10).raise_for_status()
    discovery = requests.get(f"{issuer}/.well-known/openid-configuration", timeout=10).json()
    verifier = base64.urlsafe_b64encode(os.urandom(32)).rstrip(b"=").decode()
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    browser = requests.Session()
    url = discovery["authorization_endpoint"] + "?" + urllib.parse.urlencode({
        "response_type": "code", "client_id": "quiver", "redirect_uri": redirect,
        "scope": "openid email profile groups", "state": "s", "nonce": "n",
        "code_challenge": challenge, "code_challenge_method": "S256"})
    for _ in range(20):
        r = browser.get(url, allow_redirects=False, timeout=10)
        url = urllib.parse.urljoin(url, r.headers["location"])
        if url.startswith(redirect):
            break
    code = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))["code"]
    answer = requests.post(discovery["token_endpoint"], auth=("quiver", "quiver-test-secret"), timeout=10, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": redirect, "code_verifier": verifier})
    answer.raise_for_status()
    return answer.json()["id_token"]


def test_token_exchange_turns_a_provider_id_token_into_quiver_access_for_adbc(idp_and_server):
    import adbc_driver_flightsql.dbapi as flight_sql
    import adbc_driver_manager
    import trustme

    issuer, plain = idp_and_server
    redirect = f"http://{plain.http}/auth/oidc/test/callback"
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    with tempfile.TemporaryDirectory() as tmp:
        cert_path, key_path = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
        cert.cert_chain_pems[0].write_to_path(cert_path)
        cert.private_key_pem.write_to_path(key_path)
        config = f"""
server:
  tls: {{cert: {cert_path}, key: {key_path}}}
auth:
  oidc:
    - name: test
      issuer: {issuer}
      client_id: quiver
      client_secret: quiver-test-secret
      allowed_domains: [example.com]
"""
        server = Server(["demo", "--scale", "0.01"], os.path.join(tmp, "data"), config=config)
        try:
            id_token = id_token_from_provider(issuer, account("uma@example.com"), redirect)
            exchange = {"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
                        "subject_token": id_token,
                        "subject_token_type": "urn:ietf:params:oauth:token-type:id_token"}
            r = requests.post(f"http://{server.http}/oauth/token", data=exchange, timeout=10)
            assert r.status_code == 200, r.text
            assert api(server, "GET", "/api/me", r.json()["access_token"])[1]["email"] == "uma@example.com"

            header, payload, signature = id_token.split(".")
            forged = ".".join([header, payload[:-4] + ("AAAA" if payload[-4:] != "AAAA" else "BBBB"), signature])
            r = requests.post(f"http://{server.http}/oauth/token", data=dict(exchange, subject_token=forged), timeout=10)
            assert r.status_code == 400 and r.json()["error"] == "invalid_grant"

            # An ID token without `email_verified` (even for the admin's address) is no proof.
            unverified = id_token_from_provider(issuer, account(ADMIN_EMAIL, verified=None), redirect)
            r = requests.post(f"http://{server.http}/oauth/token", data=dict(exchange, subject_token=unverified),
                              timeout=10)
            assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
            assert "email_verified" in r.json()["error_description"], r.text

            admin = login(server, ADMIN_EMAIL, ADMIN_PASSWORD)
            assert api(server, "POST", "/api/admin/grants", admin, {"group": "Everyone", "table": "tpch.region"})[0] == 201
            options = {
                "adbc.flight.sql.client_option.tls_root_certs": ca.cert_pem.bytes().decode(),
                "adbc.flight.sql.oauth.flow": "token_exchange",
                "adbc.flight.sql.oauth.token_uri": f"http://{server.http}/oauth/token",
                "adbc.flight.sql.oauth.exchange.subject_token": id_token,
                "adbc.flight.sql.oauth.exchange.subject_token_type": "urn:ietf:params:oauth:token-type:id_token",
            }
            with flight_sql.connect(f"grpc+tls://{server.flight}", db_kwargs=options) as c, c.cursor() as cur:
                cur.execute("SELECT count(*) FROM tpch.region")
                assert cur.fetchone()[0] == 5
            with pytest.raises(adbc_driver_manager.Error):
                bad = dict(options, **{"adbc.flight.sql.oauth.exchange.subject_token": forged})
                with flight_sql.connect(f"grpc+tls://{server.flight}", db_kwargs=bad) as c, c.cursor() as cur:
                    cur.execute("SELECT 1")
        finally:
            server.stop()
