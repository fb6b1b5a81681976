"""`regwarden serve` as a process, with its access monitor (issue #16): pull notifications
are acknowledged without a row in the work queue, and a SIGTERM drains what was
acknowledged and writes every pull tally before the process ends (uvicorn re-raises the
signal after its graceful shutdown, which used to end the process before serve's own
cleanup ran). The registry host is configured but never contacted: pulls need no registry
I/O."""

from __future__ import annotations

import json
import signal
from collections import Counter
from pathlib import Path

import httpx
from support.gate import TOKEN
from support.streams import Serve

from regwarden.devtools import free_port
from regwarden.store import SqliteLedger

HOST = "registry.test:5000"
POLICY = """\
apiVersion: regwarden/v1
kind: Policy
repositories:
  - match: "team/**"
    team: team
"""


def _digest(n: int) -> str:
    return "sha256:" + f"{n:02x}" * 32


def _pull(n: int, i: int) -> bytes:
    event = {
        "id": f"pull-{n}-{i}",
        "timestamp": "2026-12-01T10:00:00Z",
        "action": "pull",
        "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": _digest(n),
            "size": 500,
            "repository": "team/app",
        },
        "request": {"host": HOST, "method": "GET", "useragent": "containerd/v1.7.13"},
        "actor": {"name": f"node-{i % 3}"},
    }
    return json.dumps({"events": [event]}).encode()


def test_sigterm_drains_the_access_queue_and_writes_every_tally(tmp_path: Path) -> None:
    (tmp_path / "regwarden.yaml").write_text(POLICY)
    serve = Serve.start(tmp_path, tmp_path / "regwarden.yaml", free_port(), registries=[HOST])
    sent: Counter[str] = Counter()
    try:
        with httpx.Client(headers={"Authorization": f"Bearer {TOKEN}"}) as client:
            for i in range(60):
                n = i % 3
                resp = client.post(f"{serve.url}/events/distribution", content=_pull(n, i))
                assert resp.status_code == 202
                assert resp.json() == {"accepted": 0, "access": 1}
                sent[_digest(n)] += 1
            assert client.get(f"{serve.url}/healthz").json()["pending"] == 0  # no queue rows
    finally:
        serve.proc.send_signal(signal.SIGTERM)
        code = serve.proc.wait(30)
    log = serve.log.read_text()
    assert code == 128 + signal.SIGTERM, log
    assert "access monitor stopped: 60 event(s) handled" in log
    ledger = SqliteLedger(serve.ledger_path)
    try:
        tallies = ledger.pull_tallies(HOST, "team/app")
        assert ledger.pull_tracking_since(HOST, "team/app") is not None
    finally:
        ledger.close()
    counted: Counter[str] = Counter()
    for t in tallies:
        counted[t.digest] += t.count
    assert counted == sent
    assert {t.principal for t in tallies} == {"node-0", "node-1", "node-2"}
