"""A local stand-in for Google's BigQuery REST API and OAuth token endpoint, following their
documented shapes (the real service cannot be reached from the test machines):

- `POST /token`: the OAuth 2.0 JWT-bearer grant of a service account. The assertion's RS256
  signature is checked against the account's public key and its claims (`iss`, `aud`,
  `scope`, `iat`, `exp`) as Google does; the answer is `{access_token, expires_in,
  token_type}`, or `400 {"error": "invalid_grant", ...}`.
- `POST /bigquery/v2/projects/{project}/queries` (`jobs.query`): with `dryRun`, the schema
  and `totalBytesProcessed` of the query; otherwise a job that is complete on the second
  ask, refused when it would bill more than `maximumBytesBilled`.
- `GET /bigquery/v2/projects/{project}/queries/{jobId}` (`jobs.getQueryResults`):
  `jobComplete: false` once, then the rows page by page with `pageToken`; a failed job answers with its
  error. Rows are `{"f": [{"v": …}]}` with every scalar a string, TIMESTAMPs as microseconds
  when `formatOptions.useInt64Timestamp` is set, BYTES as base64, STRUCTs as nested `f`
  lists, ARRAYs as lists of `{"v": …}`.
- `POST /bigquery/v2/projects/{project}/jobs/{jobId}/cancel` (`jobs.cancel`), recorded.
- Errors are Google's `{"error": {"code", "message", "errors": [{"reason"}], "status"}}`;
  the calls to fail next (429, 503, `rateLimitExceeded`, …) can be queued.

The queries it understands are the connector's: `SELECT * FROM `project.dataset.table``,
that wrapped as `SELECT * FROM (…) WHERE `col` > @param` with a typed named parameter, any
query text registered with `add_query`, and a remote table's reads, `SELECT `a`, `b` FROM
<table or (query)> AS quiver_source [WHERE …] [LIMIT n]`, whose conditions are evaluated by
SQLite (the subset of GoogleSQL the connector sends reads the same there).
"""

from __future__ import annotations

import base64
import datetime
import decimal
import itertools
import json
import math
import re
import sqlite3
import threading
import time
import urllib.parse
from http.server import ThreadingHTTPServer

import jwt  # PyJWT, as Google's own samples use to check assertions
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from fake_http import JsonHandler

SCOPE = "https://www.googleapis.com/auth/bigquery"
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def google_error(code: int, reason: str, message: str, status: str) -> tuple[int, dict]:
    return code, {"error": {"code": code, "message": message, "status": status,
                            "errors": [{"message": message, "domain": "global", "reason": reason}]}}


def encode(kind: str, value, micros: bool):
    """A Python value as the REST API writes a BigQuery value of type `kind`."""
    if value is None:
        return None
    if kind == "FLOAT64":
        return "NaN" if math.isnan(value) else ("Infinity" if value == math.inf else
                                                ("-Infinity" if value == -math.inf else repr(value)))
    if kind == "BOOL":
        return "true" if value else "false"
    if kind == "BYTES":
        return base64.b64encode(value).decode()
    if kind in ("DATE", "TIME", "DATETIME"):
        return value.isoformat()
    if kind == "TIMESTAMP":
        us = (value - EPOCH) // datetime.timedelta(microseconds=1)
        return str(us) if micros else f"{us / 1e6:.6E}"
    if kind == "JSON":
        return json.dumps(value, separators=(",", ":"))
    return str(value)  # INT64, NUMERIC, BIGNUMERIC, STRING, GEOGRAPHY (WKT)


def encode_row(fields: list[dict], row: dict, micros: bool) -> dict:
    out = []
    for field in fields:
        value = row.get(field["name"])
        kind = field["type"]

        def one(v):
            if kind == "STRUCT":
                return None if v is None else encode_row(field["fields"], v, micros)
            return encode(kind, v, micros)

        if field.get("mode") == "REPEATED":
            out.append({"v": [{"v": one(v)} for v in (value or [])]})
        else:
            out.append({"v": one(value)})
    return {"f": out}


def rest_schema(fields: list[dict]) -> list[dict]:
    """The schema as the API states it (legacy type names, as BigQuery answers)."""
    legacy = {"INT64": "INTEGER", "FLOAT64": "FLOAT", "BOOL": "BOOLEAN", "STRUCT": "RECORD"}
    out = []
    for f in fields:
        entry = {"name": f["name"], "type": legacy.get(f["type"], f["type"]), "mode": f.get("mode", "NULLABLE")}
        if "fields" in f:
            entry["fields"] = rest_schema(f["fields"])
        out.append(entry)
    return out


class InvalidQuery(Exception):
    """A query BigQuery would refuse with `invalidQuery`."""


def parse_parameter(kind: str, text: str):
    if kind == "BOOL":
        return {"true": True, "false": False}[text.lower()]
    if kind == "INT64":
        return int(text)
    if kind == "FLOAT64":
        return float(text)
    if kind in ("NUMERIC", "BIGNUMERIC"):
        return decimal.Decimal(text)
    if kind == "DATE":
        return datetime.date.fromisoformat(text)
    if kind == "DATETIME":
        return datetime.datetime.fromisoformat(text.replace("Z", ""))
    if kind == "TIMESTAMP":
        value = datetime.datetime.fromisoformat(text.replace(" ", "T"))
        return value if value.tzinfo else value.replace(tzinfo=datetime.timezone.utc)
    return text


def where(fields: list[dict], rows: list[dict], condition: str, parameters: list[dict]) -> list[dict]:
    """The rows for which `condition` (GoogleSQL with backquoted names and `@name` query
    parameters) holds, by SQLite, with the parameters bound as values."""
    names = [f["name"] for f in fields]
    db = sqlite3.connect(":memory:")
    db.execute(f"CREATE TABLE t (quiver_row, {', '.join(json.dumps(n) for n in names)})")

    def plain(v):
        return float(v) if isinstance(v, decimal.Decimal) else v if isinstance(v, (int, float, str)) or v is None else str(v)

    db.executemany(f"INSERT INTO t VALUES ({', '.join('?' * (len(names) + 1))})",
                   [(i, *[plain(r.get(n)) for n in names]) for i, r in enumerate(rows)])
    sql = re.sub(r"`([^`]+)`", lambda m: json.dumps(m.group(1)), condition)
    values = {p["name"]: plain(parse_parameter(p["parameterType"]["type"], p["parameterValue"]["value"]))
              for p in parameters}
    try:
        kept = {i for (i,) in db.execute(f"SELECT quiver_row FROM t WHERE {sql}", values)}
    except sqlite3.Error as e:  # as BigQuery answers a query it cannot parse
        raise InvalidQuery(f"Syntax error: {e}") from e
    return [r for i, r in enumerate(rows) if i in kept]


class FakeBigQuery:
    def __init__(self, project: str = "acme-analytics"):
        self.project = project
        self.email = f"quiver-sync@{project}.iam.gserviceaccount.com"
        self._private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.tables: dict[str, dict] = {}   # `project.dataset.table` → {fields, rows, bytes}
        self.queries: dict[str, str] = {}   # registered query text → table it returns
        self.denied: set[str] = set()       # tables the account may not read
        self.fail_next: list[tuple[int, dict]] = []  # answers for the next API calls
        self.requests: list[dict] = []      # every API call: method, path, query, body
        self.tokens: dict[str, float] = {}  # issued token → when it expires
        self.token_lifetime = 3600
        self.page_rows = 3
        self.page_delay = 0.0
        self.jobs: dict[str, dict] = {}
        self.endless: set[str] = set()      # query texts whose jobs never finish
        self.cancelled: list[str] = []      # jobs cancelled (`jobs.cancel`)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def key_json(self, private=None) -> str:
        """A service-account key file for this fake's account (or with another key)."""
        pem = (private or self._private).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode()
        return json.dumps({
            "type": "service_account", "project_id": self.project, "private_key_id": "k1",
            "private_key": pem, "client_email": self.email, "client_id": "1234567890",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth", "token_uri": f"{self.url}/token",
        })

    @staticmethod
    def other_key():
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def put_table(self, path: str, fields: list[dict], rows: list[dict], size: int = 10 << 20):
        self.tables[path] = {"fields": fields, "rows": list(rows), "bytes": size}

    def add_query(self, sql: str, path: str):
        self.queries[sql] = path

    def api_calls(self, method: str | None = None, path_suffix: str = "") -> list[dict]:
        return [r for r in self.requests if (method is None or r["method"] == method)
                and r["path"].endswith(path_suffix)]

    def stop(self):
        self.httpd.shutdown()

    # ----- what a query means ------------------------------------------------------------------

    def _resolve(self, sql: str, parameters: list[dict]) -> tuple[dict, list[dict]] | tuple[int, dict]:
        """The table a query reads and its rows, or an error answer."""
        sql = sql.strip()
        m = re.fullmatch(r"SELECT \* FROM \((.*)\) WHERE `([^`]+)` > @(\w+)", sql, re.S)
        if m:
            inner = self._resolve(m.group(1), [])
            if isinstance(inner[0], int):
                return inner
            table, rows = inner
            param = next(p for p in parameters if p["name"] == m.group(3))
            kind = param["parameterType"]["type"]
            since = parse_parameter(kind, param["parameterValue"]["value"])
            column = m.group(2)
            return table, [r for r in rows if r.get(column) is not None and r[column] > since]
        m = re.fullmatch(r"SELECT ((?:`[^`]+`(?:, )?)+) FROM (`[^`]+`|\((.*)\)) AS quiver_source"
                         r"(?: WHERE (.*?))?(?: LIMIT (\d+))?", sql, re.S)
        if m:
            inner = self._resolve(m.group(3) or f"SELECT * FROM {m.group(2)}", [])
            if isinstance(inner[0], int):
                return inner
            table, rows = inner
            columns = re.findall(r"`([^`]+)`", m.group(1))
            by_name = {f["name"]: f for f in table["fields"]}
            if any(c not in by_name for c in columns):
                missing = next(c for c in columns if c not in by_name)
                return google_error(400, "invalidQuery", f"Unrecognized name: {missing} at [1:8]", "INVALID_ARGUMENT")
            if m.group(4):
                try:
                    rows = where(table["fields"], rows, m.group(4), parameters)
                except InvalidQuery as e:
                    return google_error(400, "invalidQuery", str(e), "INVALID_ARGUMENT")
            if m.group(5):
                rows = rows[:int(m.group(5))]
            return {**table, "fields": [by_name[c] for c in columns]}, rows
        path = self.queries.get(sql)
        if path is None:
            m = re.fullmatch(r"SELECT \* FROM `([^`]+)`", sql)
            if not m:
                return google_error(400, "invalidQuery", f"Syntax error: Unexpected query {sql!r}", "INVALID_ARGUMENT")
            path = m.group(1)
        project, dataset, table = path.split(".")
        if path in self.denied:
            return google_error(403, "accessDenied",
                                f"Access Denied: Table {project}:{dataset}.{table}: User does not have permission "
                                "to query table, or perhaps it does not exist.", "PERMISSION_DENIED")
        if path not in self.tables:
            return google_error(404, "notFound", f"Not found: Table {project}:{dataset}.{table} was not found in location US",
                                "NOT_FOUND")
        return self.tables[path], self.tables[path]["rows"]

    def _query(self, body: dict) -> tuple[int, dict]:
        resolved = self._resolve(body["query"], body.get("queryParameters", []))
        if isinstance(resolved[0], int):
            return resolved
        table, rows = resolved
        reference = {"projectId": self.project, "location": body.get("location", "US")}
        if body.get("dryRun"):
            return 200, {"kind": "bigquery#queryResponse", "schema": {"fields": rest_schema(table["fields"])},
                         "jobReference": reference, "totalBytesProcessed": str(table["bytes"]),
                         "jobComplete": True, "cacheHit": False}
        limit = int(body.get("maximumBytesBilled", 0) or 0)
        if limit and table["bytes"] > limit:
            return google_error(400, "bytesBilledLimitExceeded",
                                f"Query exceeded limit for bytes billed: {limit}. {table['bytes']} or higher required.",
                                "INVALID_ARGUMENT")
        with self._lock:
            job_id = f"job_{next(self._ids)}"
            # `ERROR()` passes the dry run and fails the job as it runs, as in BigQuery.
            failure = google_error(400, "invalidQuery", "Query error: boom at [1:8]", "INVALID_ARGUMENT") \
                if "ERROR(" in body["query"] else None
            self.jobs[job_id] = {"table": table, "rows": rows, "asks": 0, "body": body, "failure": failure}
        return 200, {"kind": "bigquery#queryResponse", "jobReference": {**reference, "jobId": job_id},
                     "jobComplete": False}

    def _results(self, job_id: str, query: dict) -> tuple[int, dict]:
        job = self.jobs.get(job_id)
        if job is None:
            return google_error(404, "notFound", f"Not found: Job {self.project}:US.{job_id}", "NOT_FOUND")
        job["asks"] += 1
        reference = {"projectId": self.project, "jobId": job_id, "location": "US"}
        if job["asks"] >= 2 and job["failure"]:
            return job["failure"]
        if job["asks"] < 2 or job["body"]["query"] in self.endless:
            # Still running: the real API waits up to `timeoutMs` before saying so.
            time.sleep(min(int(query.get("timeoutMs", 10000)), 200) / 1000)
            return 200, {"kind": "bigquery#getQueryResultsResponse", "jobReference": reference,
                         "jobComplete": False}
        time.sleep(self.page_delay)
        start = int(query.get("pageToken", "0") or 0)
        size = min(self.page_rows, int(query.get("maxResults", self.page_rows)))
        micros = query.get("formatOptions.useInt64Timestamp") == "true"
        fields = job["table"]["fields"]
        page = job["rows"][start:start + size]
        answer = {"kind": "bigquery#getQueryResultsResponse", "jobReference": reference, "jobComplete": True,
                  "schema": {"fields": rest_schema(fields)}, "totalRows": str(len(job["rows"])),
                  "rows": [encode_row(fields, r, micros) for r in page], "cacheHit": False}
        if start + size < len(job["rows"]):
            answer["pageToken"] = str(start + size)
        return 200, answer

    # ----- OAuth -------------------------------------------------------------------------------

    def _token(self, form: dict) -> tuple[int, dict]:
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            return 400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type."}
        try:
            claims = jwt.decode(form.get("assertion", ""), self._private.public_key(), algorithms=["RS256"],
                                audience=f"{self.url}/token", issuer=self.email,
                                options={"require": ["iss", "aud", "exp", "iat"]})
        except jwt.InvalidSignatureError:
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        except jwt.PyJWTError as e:
            return 400, {"error": "invalid_grant", "error_description": f"Invalid JWT: {e}"}
        if SCOPE not in claims.get("scope", "").split() or claims["exp"] - claims["iat"] > 3600:
            return 400, {"error": "invalid_scope", "error_description": "Invalid OAuth scope or lifetime."}
        token = f"ya29.fake-{next(self._ids)}-{time.time_ns()}"
        with self._lock:
            self.tokens[token] = time.time() + self.token_lifetime
        return 200, {"access_token": token, "expires_in": self.token_lifetime, "token_type": "Bearer"}

    def _handler(self):
        fake = self

        class Handler(JsonHandler):
            def _api(self, method: str):
                url = urllib.parse.urlparse(self.path)
                length = int(self.headers.get("content-length", 0))
                raw = self.rfile.read(length).decode() if length else ""
                if url.path == "/token" and method == "POST":
                    return self._send(*fake._token(dict(urllib.parse.parse_qsl(raw))))
                query = dict(urllib.parse.parse_qsl(url.query))
                body = json.loads(raw) if raw else {}
                fake.requests.append({"method": method, "path": url.path, "query": query, "body": body})
                bearer = self.headers.get("Authorization", "").removeprefix("Bearer ")
                if fake.tokens.get(bearer, 0) < time.time():
                    return self._send(*google_error(
                        401, "authError", "Request had invalid authentication credentials. Expected OAuth 2 access "
                        "token, login cookie or other valid authentication credential.", "UNAUTHENTICATED"))
                if fake.fail_next:
                    status, answer = fake.fail_next.pop(0)
                    return self._send(status, answer)
                parts = url.path.strip("/").split("/")
                if parts[:3] != ["bigquery", "v2", "projects"] or len(parts) < 5 or parts[4] not in ("queries", "jobs"):
                    return self._send(*google_error(404, "notFound", "Not Found", "NOT_FOUND"))
                if parts[3] != fake.project:
                    return self._send(*google_error(403, "accessDenied",
                                                    f"Access Denied: Project {parts[3]}: User does not have "
                                                    "bigquery.jobs.create permission in project.",
                                                    "PERMISSION_DENIED"))
                if method == "POST" and len(parts) == 7 and parts[4:7:2] == ["jobs", "cancel"]:
                    fake.cancelled.append(parts[5])
                    return self._send(200, {"kind": "bigquery#jobCancelResponse",
                                            "job": {"jobReference": {"projectId": fake.project, "jobId": parts[5]}}})
                if method == "POST" and len(parts) == 5:
                    return self._send(*fake._query(body))
                if method == "GET" and len(parts) == 6:
                    return self._send(*fake._results(parts[5], query))
                return self._send(*google_error(404, "notFound", "Not Found", "NOT_FOUND"))

            def do_GET(self):
                self._api("GET")

            def do_POST(self):
                self._api("POST")

        return Handler
