"""A local stand-in for Keboola's Storage API, following its documented endpoints and payloads
(the real service cannot be reached from the test machines):

- `GET /v2/storage/tables/{id}`: table detail with `columns`;
- `POST /v2/storage/tables/{id}/export-async` (form: `format`, `changedSince`): a job;
- `GET /v2/storage/jobs/{id}`: `waiting` → `processing` → `success` (with `results.file.id`)
  or `error` (with `error.message`);
- `GET /v2/storage/files/{id}?federationToken=1`: a sliced file whose `url` is a manifest
  `{"entries": [{"url": …}]}`; slices are RFC 4180 CSV without a header.

Every call needs `X-StorageApi-Token`; a wrong one gets 401 like the real API.
"""

from __future__ import annotations

import csv
import io
import itertools
import threading
import time
import urllib.parse
from http.server import ThreadingHTTPServer

from fake_http import JsonHandler


class FakeKeboola:
    def __init__(self, token: str):
        self.token = token
        self.tables: dict[str, dict] = {}
        self.jobs: dict[int, dict] = {}
        self.files: dict[int, list[str]] = {}
        self.exports: list[dict] = []  # form parameters of every export, for assertions
        self.fail_next_export = None
        self._ids = itertools.count(1000)
        self._lock = threading.Lock()
        handler = self._handler()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def put_rows(self, table_id: str, columns: list[str], rows: list[dict]):
        """Creates or updates rows (by position in `rows`), stamping their change time."""
        with self._lock:
            table = self.tables.setdefault(table_id, {"columns": columns, "rows": {}})
            table["columns"] = columns
            for row in rows:
                table["rows"][row[columns[0]]] = (time.time(), row)

    def stop(self):
        self.httpd.shutdown()

    def _export(self, table_id: str, form: dict) -> dict:
        with self._lock:
            self.exports.append(form)
            job_id = next(self._ids)
            if self.fail_next_export:
                job = {"id": job_id, "status": "error", "error": {"message": self.fail_next_export}}
                self.fail_next_export = None
            else:
                table = self.tables[table_id]
                since = float(form.get("changedSince", 0) or 0)
                chosen = [row for changed, row in table["rows"].values() if changed >= since]
                slices = []
                for part in (chosen[: len(chosen) // 2], chosen[len(chosen) // 2:]):
                    out = io.StringIO()
                    writer = csv.writer(out, lineterminator="\n", quoting=csv.QUOTE_ALL)
                    for row in part:
                        writer.writerow([row.get(c, "") for c in table["columns"]])
                    slices.append(out.getvalue())
                file_id = next(self._ids)
                self.files[file_id] = slices
                job = {"id": job_id, "status": "waiting", "polls": 0,
                       "results": {"file": {"id": file_id}}}
            self.jobs[job_id] = job
            return {"id": job_id, "status": "waiting", "url": f"{self.url}/v2/storage/jobs/{job_id}",
                    "operationName": "tableExport"}

    def _handler(self):
        fake = self

        class Handler(JsonHandler):
            def _authorized(self) -> bool:
                if self.path.startswith("/slices/") or self.path.startswith("/manifests/"):
                    return True  # pre-signed in the real service
                if self.headers.get("X-StorageApi-Token") != fake.token:
                    self._send(401, {"error": "Invalid access token", "code": 401, "status": "error"})
                    return False
                return True

            def do_GET(self):
                if not self._authorized():
                    return
                url = urllib.parse.urlparse(self.path)
                parts = url.path.strip("/").split("/")
                if parts[:3] == ["v2", "storage", "tables"] and len(parts) == 4:
                    table = fake.tables.get(parts[3])
                    if table is None:
                        return self._send(404, {"error": f"The table {parts[3]} was not found",
                                                "code": "storage.tables.notFound", "status": "error"})
                    return self._send(200, {"id": parts[3], "columns": table["columns"],
                                            "rowsCount": len(table["rows"])})
                if parts[:3] == ["v2", "storage", "jobs"] and len(parts) == 4:
                    job = fake.jobs[int(parts[3])]
                    if job["status"] != "error":
                        job["polls"] += 1
                        job["status"] = "processing" if job["polls"] < 3 else "success"
                    return self._send(200, {k: v for k, v in job.items() if k != "polls"})
                if parts[:3] == ["v2", "storage", "files"] and len(parts) == 4:
                    file_id = int(parts[3])
                    return self._send(200, {
                        "id": file_id, "isSliced": True, "region": "us-east-1",
                        "url": f"{fake.url}/manifests/{file_id}",
                        "credentials": {"AccessKeyId": "ASIAFAKE", "SecretAccessKey": "fake",
                                        "SessionToken": "fake", "Expiration": "2099-01-01T00:00:00+0000"},
                    })
                if parts[0] == "manifests":
                    file_id = int(parts[1])
                    entries = [{"url": f"{fake.url}/slices/{file_id}/{i}"}
                               for i in range(len(fake.files[file_id]))]
                    return self._send(200, {"entries": entries})
                if parts[0] == "slices":
                    return self._send(200, fake.files[int(parts[1])][int(parts[2])], "text/csv")
                self._send(404, {"error": "Not found", "code": 404})

            def do_POST(self):
                if not self._authorized():
                    return
                length = int(self.headers.get("content-length", 0))
                form = dict(urllib.parse.parse_qsl(self.rfile.read(length).decode()))
                parts = urllib.parse.urlparse(self.path).path.strip("/").split("/")
                if parts[:3] == ["v2", "storage", "tables"] and parts[-1] == "export-async":
                    if parts[3] not in fake.tables:
                        return self._send(404, {"error": f"The table {parts[3]} was not found",
                                                "code": "storage.tables.notFound"})
                    return self._send(202, fake._export(parts[3], form))
                self._send(404, {"error": "Not found", "code": 404})

        return Handler
