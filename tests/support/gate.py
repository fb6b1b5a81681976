"""Helpers for the push-gate e2e tests: `regwarden serve` (a real process) receiving notifications
from a real distribution registry over loopback, alerts delivered to a real HTTP sink."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from regwarden.devtools import LocalRegistry
from regwarden.notify import verify_signature
from regwarden.signatures.keys import encrypt_private_key, generate_private_key
from regwarden.store import SqliteLedger
from support.proxy import RegistryProxy

TOKEN = "e2e-webhook-token"
HMAC = "e2e-hmac-secret"
AGE = timedelta(hours=1)
"""How old a received alert may be when a test checks its signature (authenticity only)."""

POLICY = """\
apiVersion: regwarden/v1
kind: Policy
defaults:
  mode: enforce
  quarantine: {{strategy: move, repository: "quarantine/{{repository}}"}}
repositories:
  - match: "apps/**"
    team: payments
    signatures:
      required: true
      cosign: {{keys: ["file://keys/cosign.pub"]}}
      gracePeriod: {grace}
    vulnerabilities:
      maxSeverity: high
      scanTimeout: {grace}
    tags: {{immutable: true, forbidden: [latest]}}
notifications:
  channels:
    hook: {{type: webhook, url: "{hook}", secret: "secret://hmac"}}
  routes:
    - {{match: {{team: payments}}, to: [hook]}}
"""


class Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received.append((dict(self.headers), body))  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Gate:
    root: Path
    registry: LocalRegistry
    proxy: RegistryProxy
    serve_url: str
    ledger_path: Path
    key: Path
    pub: Path
    alerts_raw: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    log: Path | None = None

    @property
    def host(self) -> str:
        """Push through the proxy so tests can inject faults into regwarden's own I/O."""
        return self.proxy.host

    def alerts(self) -> list[dict[str, Any]]:
        """The verdict alerts received (the access monitor's, `kind: access`, left out)."""
        out = []
        for headers, body in list(self.alerts_raw):
            assert verify_signature(HMAC.encode(), headers, body, now=now(), tolerance=AGE)
            data = json.loads(body)["data"]
            if data.get("kind", "verdict") == "verdict":
                out.append(data)
        return out

    def verdict(self, repo: str, digest: str) -> str | None:
        ledger = SqliteLedger(self.ledger_path)
        try:
            return ledger.last_verdict(self.host, repo, digest)
        finally:
            ledger.close()

    def wait(self, cond: Callable[[], object], timeout: float = 30.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = cond()
            if value:
                return value
            time.sleep(0.05)
        log = self.log.read_text()[-4000:] if self.log and self.log.exists() else ""
        raise AssertionError(f"timed out waiting for {what or cond}\n--- serve log ---\n{log}")


def generate_keys(root: Path) -> tuple[Path, Path]:
    key = generate_private_key("ecdsa-p256")
    (root / "keys").mkdir(exist_ok=True)
    priv = root / "keys" / "cosign.key"
    pub = root / "keys" / "cosign.pub"
    priv.write_bytes(encrypt_private_key(key, "pw", scrypt_n=32768))
    pem = key.public_key.pem
    pub.write_bytes(pem if isinstance(pem, bytes) else pem.encode())
    return priv, pub


def now() -> datetime:
    return datetime.now(UTC)
