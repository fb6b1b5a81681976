"""Channels: where rendered alerts go. Each is a small class with `send(alert)`."""

from __future__ import annotations

import sys
import threading
from pathlib import Path
from typing import Protocol, TextIO

import httpx

from .. import USER_AGENT
from ..errors import RegistryError
from ._alert import Alert
from ._render import (
    SIGNATURE_HEADER,
    encode,
    render_cloudevent,
    render_slack,
    render_teams,
    render_text,
    sign_body,
)


class Notifier(Protocol):
    name: str

    def send(self, alert: Alert) -> None: ...


class _HttpChannel:
    """POST JSON with a short bounded retry; a channel failure never blocks the verdict."""

    def __init__(
        self, name: str, url: str, *, client: httpx.Client | None = None, attempts: int = 3
    ) -> None:
        self.name = name
        self._url = url
        self._client = client or httpx.Client(timeout=10.0, headers={"User-Agent": USER_AGENT})
        self._attempts = attempts

    def _post(self, body: bytes, headers: dict[str, str]) -> None:
        last: str = ""
        for _ in range(self._attempts):
            try:
                resp = self._client.post(
                    self._url, content=body, headers={"Content-Type": "application/json", **headers}
                )
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if resp.status_code < 300:
                return
            last = f"HTTP {resp.status_code}"
            if resp.status_code < 500 and resp.status_code != 429:
                break
        # The URL may embed a secret (Slack, Teams): name the channel, never the URL.
        raise RegistryError(f"channel {self.name!r}: delivery failed ({last})")


class SlackChannel(_HttpChannel):
    def send(self, alert: Alert) -> None:
        self._post(encode(render_slack(alert)), {})


class TeamsChannel(_HttpChannel):
    def send(self, alert: Alert) -> None:
        self._post(encode(render_teams(alert)), {})


class WebhookChannel(_HttpChannel):
    """CloudEvents JSON, signed with HMAC-SHA256 of the body when a secret is set."""

    def __init__(
        self,
        name: str,
        url: str,
        *,
        secret: bytes | None = None,
        client: httpx.Client | None = None,
    ) -> None:
        super().__init__(name, url, client=client)
        self._secret = secret

    def send(self, alert: Alert) -> None:
        body = encode(render_cloudevent(alert))
        headers = {"Content-Type": "application/cloudevents+json"}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign_body(self._secret, body)
        self._post(body, headers)


class StreamChannel:
    """Plain text to stdout (local runs) or appended JSON lines to a file."""

    def __init__(
        self,
        name: str,
        *,
        stream: TextIO | None = None,
        path: Path | None = None,
        format: str = "text",
    ) -> None:
        self.name = name
        self._stream = stream
        self._path = path
        self._format = format
        self._lock = threading.Lock()

    def send(self, alert: Alert) -> None:
        with self._lock:
            if self._path is not None:
                with self._path.open("a", encoding="utf-8") as fh:
                    fh.write(alert.model_dump_json() + "\n")
            else:
                text = alert.model_dump_json() if self._format == "json" else render_text(alert)
                print(text, file=self._stream or sys.stdout, flush=True)
