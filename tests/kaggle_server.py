"""A local stand-in for the part of Kaggle's API that a dataset download uses.

With legacy credentials, `KaggleApi().authenticate()` sends nothing; the download is

    POST /api/v1/datasets.DatasetApiService/DownloadDataset   (HTTP Basic user:key, JSON body
         {"ownerSlug": ..., "datasetSlug": ...})  ->  302 to a signed storage URL
    GET  <that URL>                                          ->  the zip

An access token (KAGGLE_API_TOKEN) is first checked with POST .../IntrospectToken.

`KAGGLE_API_ENVIRONMENT=TEST` makes kagglesdk use http://localhost:7777 with the `/api`
prefix, so the server binds 127.0.0.1:7777. Each download attempt (POST) consumes one outcome
from `plan`, "ok" once the plan is empty: "500" (API error), "storage500" (the zip URL fails),
"truncate" (fewer bytes than Content-Length), "cut" (half a zip, honestly sized) or "corrupt"
(one byte flipped). Every request is recorded in `requests`.
"""

from __future__ import annotations

import base64
import errno
import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST, PORT = "127.0.0.1", 7777
DOWNLOAD_PATH = "/api/v1/datasets.DatasetApiService/DownloadDataset"
INTROSPECT_PATH = "/api/v1/security.OAuthService/IntrospectToken"  # only with an access token
STORAGE_PREFIX = "/storage/"


class KaggleTestServer:
    def __init__(self, dataset: str, username: str, key: str, archive: bytes):
        self.owner, self.slug = dataset.split("/")
        self.auth = "Basic " + base64.b64encode(f"{username}:{key}".encode()).decode()
        self.archive = archive
        self.plan: deque[str] = deque()
        self.requests: list[tuple[str, str]] = []  # (method, path without query)
        self._lock = threading.Lock()
        self._current = "ok"
        try:
            self._httpd = ThreadingHTTPServer((HOST, PORT), self._handler())
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise RuntimeError(
                    f"port {PORT} on {HOST} is busy; the Kaggle test server needs it because "
                    "KAGGLE_API_ENVIRONMENT=TEST points the client at http://localhost:7777"
                ) from None
            raise
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> KaggleTestServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def count(self, method: str, prefix: str) -> int:
        return sum(1 for m, p in self.requests if m == method and p.startswith(prefix))

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _record(self) -> str:
                path = self.path.split("?", 1)[0]
                with server._lock:
                    server.requests.append((self.command, path))
                return path

            def _json(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                path = self._record()
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                if path == INTROSPECT_PATH:  # no access token is valid here
                    return self._json(200, {"active": False})
                if path != DOWNLOAD_PATH:
                    return self._json(404, {"code": 404, "message": f"no such method {path}"})
                if self.headers.get("Authorization") != server.auth:
                    return self._json(401, {"code": 401, "message": "Unauthenticated"})
                if (body.get("ownerSlug"), body.get("datasetSlug")) != (server.owner, server.slug):
                    return self._json(404, {"code": 404, "message": "Dataset not found"})
                with server._lock:
                    server._current = server.plan.popleft() if server.plan else "ok"
                if server._current == "500":
                    return self._json(500, {"code": 500, "message": "Internal error"})
                self.send_response(302)
                # Like a signed storage URL: the query string is a temporary secret.
                self.send_header("Location", f"{STORAGE_PREFIX}{server.slug}.zip?X-Goog-Signature=s3cr3t")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                path = self._record()
                if path != f"{STORAGE_PREFIX}{server.slug}.zip":
                    return self._json(404, {"code": 404, "message": "not found"})
                outcome, data = server._current, server.archive
                if outcome == "storage500":  # plain text, as from a storage front end
                    self.send_response(500)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if outcome == "cut":  # a complete response holding a cut zip
                    data = data[: len(data) // 2]
                if outcome == "corrupt":  # one flipped byte inside a stored member: only its CRC tells
                    data = data[: len(data) // 2] + bytes([data[len(data) // 2] ^ 0xFF]) + data[len(data) // 2 + 1:]
                self.send_response(200)
                self.send_header("Content-Type", "application/zip")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if outcome == "truncate":  # promise every byte, send half, hang up
                    data = data[: len(data) // 2]
                self.wfile.write(data)

        return Handler
