"""The OCI transport's proxy routing: the environment's HTTP(S) proxy is read once, when
the transport is made (as httpx reads it for a client), and each host's route is kept —
a host NO_PROXY names goes direct. Against a recording forward proxy on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest

from regwarden.devtools import free_port
from regwarden.oci import DeadlineTransport


class _Proxy(BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        self.seen.append(self.path)  # a forward proxy is asked for the absolute URL
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[tuple[str, list[str]]]:
    seen: list[str] = []
    handler = type("Recording", (_Proxy,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_the_environments_proxy_is_read_once_and_no_proxy_goes_direct(
    proxy: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen = proxy
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", url)
    monkeypatch.setenv("http_proxy", url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.2")
    monkeypatch.setenv("no_proxy", "127.0.0.2")
    transport = DeadlineTransport(limits=httpx.Limits(max_connections=2))
    monkeypatch.delenv("HTTP_PROXY")  # later changes do not reroute a made transport
    monkeypatch.delenv("http_proxy")
    with httpx.Client(transport=transport, timeout=5) as client:
        for _ in range(2):
            assert client.get("http://registry.invalid/v2/").json() == {}
        with pytest.raises(httpx.ConnectError):  # direct: nothing listens there
            client.get(f"http://127.0.0.2:{free_port()}/v2/")
    assert seen == ["http://registry.invalid/v2/"] * 2
