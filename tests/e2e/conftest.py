"""The push gate as deployed: `regwarden serve` (a real process) receiving notifications
from a real distribution registry over loopback, alerts delivered to a real HTTP sink."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest
from support.gate import HMAC, POLICY, TOKEN, Gate, Sink, generate_keys
from support.loopback import LoopbackServer
from support.proxy import RegistryProxy

from regwarden.devtools import LocalRegistry, free_port


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    root = tmp_path_factory.mktemp("gate")
    priv, pub = generate_keys(root)
    sink_server = LoopbackServer(Sink).start()
    sink = sink_server.server
    sink.received = []  # type: ignore[attr-defined]
    hook = f"{sink_server.url}/hook"
    (root / "regwarden.yaml").write_text(POLICY.format(grace="3s", hook=hook))
    (root / "tokens").write_text(TOKEN + "\n")
    port = free_port()
    log = root / "serve.log"
    env = {**os.environ, "REGWARDEN_SECRET_HMAC": HMAC}
    ledger = root / "ledger.db"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "regwarden",
                "--ledger",
                str(ledger),
                "serve",
                "--policy",
                str(root / "regwarden.yaml"),
                "--port",
                str(port),
                "--auth-token-file",
                str(root / "tokens"),
                "--workers",
                "4",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"regwarden serve did not start:\n{log.read_text()}")
            time.sleep(0.1)
        with (
            LocalRegistry(
                notifications=f"{url}/events/distribution",
                notification_headers={"Authorization": f"Bearer {TOKEN}"},
                notification_timeout="2s",
                notification_backoff="200ms",
            ) as reg,
            RegistryProxy(reg.host, page_tags=False, emulate_tag_delete=False) as proxy,
        ):
            gate = Gate(root, reg, proxy, url, ledger, priv, pub, alerts_raw=sink.received, log=log)  # type: ignore[attr-defined]
            yield gate
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        sink_server.stop()
