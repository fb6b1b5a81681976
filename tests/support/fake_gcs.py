"""A loopback stand-in for Cloud Storage's JSON API media upload: `POST
/upload/storage/v1/b/BUCKET/o?uploadType=media&name=KEY`, the body the object's bytes and
Content-Type its type. Objects are kept (bytes, content type, headers) for the test to read.

Shapes from the Cloud Storage JSON API reference, objects.insert
(https://cloud.google.com/storage/docs/json_api/v1/objects/insert, "Upload media"): the
response is the Object resource (`kind` "storage#object", `id` BUCKET/NAME/GENERATION,
`name`, `bucket`, `generation` and `size` as decimal strings, `contentType`); a bucket
that does not exist is 404 with Google's error envelope ("The specified bucket does not
exist."); an upload without `uploadType` or `name` is 400.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["FakeGcs", "StoredObject"]


class StoredObject:
    def __init__(self, data: bytes, content_type: str, headers: dict[str, str]) -> None:
        self.data = data
        self.content_type = content_type
        self.headers = headers


class FakeGcs:
    """Buckets made with `bucket(name)`; `objects[(bucket, name)]` what was uploaded."""

    def __init__(self) -> None:
        self.buckets: set[str] = set()
        self.objects: dict[tuple[str, str], StoredObject] = {}
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def bucket(self, name: str) -> None:
        self.buckets.add(name)

    def __enter__(self) -> FakeGcs:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _insert(
        self, path: str, query: dict[str, list[str]], body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        prefix = "/upload/storage/v1/b/"
        if not path.startswith(prefix) or not path.endswith("/o"):
            return _error(404, f"no route for POST {path}")
        bucket = unquote(path[len(prefix) : -len("/o")])
        name = (query.get("name") or [""])[0]
        if (query.get("uploadType") or [""])[0] != "media" or not name:
            return _error(
                400, "Upload requests must include an uploadType URL parameter and a name"
            )
        with self.lock:
            if bucket not in self.buckets:
                return _error(404, "The specified bucket does not exist.")
            content_type = headers.get("content-type", "application/octet-stream")
            self.objects[(bucket, name)] = StoredObject(body, content_type, headers)
        generation = str(time.time_ns() // 1000)
        return 200, {
            "kind": "storage#object",
            "id": f"{bucket}/{name}/{generation}",
            "name": name,
            "bucket": bucket,
            "generation": generation,
            "contentType": content_type,
            "size": str(len(body)),
        }

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                parts = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k.lower(): v for k, v in self.headers.items()}
                status, payload = fake._insert(parts.path, parse_qs(parts.query), body, headers)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return _Handler


def _error(status: int, message: str) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"code": status, "message": message, "errors": [{"message": message}]}}
