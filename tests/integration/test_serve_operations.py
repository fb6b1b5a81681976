"""`regwarden serve` for operators, as a real process on loopback: the start-up line,
/metrics moving with pushes a real distribution registry notifies, /readyz failing while
the queue's SQLite file is locked by another writer and again once it is gone, and HTTPS
with a certificate made here."""

from __future__ import annotations

import ipaddress
import os
import re
import sqlite3
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.gate import TOKEN
from support.streams import Serve, cli_env

from regwarden.devtools import LocalRegistry, free_port, make_image, push_image
from regwarden.oci import RegistryClient

pytestmark = pytest.mark.integration

AUTH = {"Authorization": f"Bearer {TOKEN}"}
POLICY = """\
apiVersion: regwarden/v1
kind: Policy
defaults:
  mode: enforce
  quarantine: {strategy: move, repository: "quarantine/{repository}"}
repositories:
  - match: "apps/**"
    team: payments
    tags: {forbidden: [latest]}
"""


@dataclass
class World:
    serve: Serve
    registry: LocalRegistry
    policy: Path


def _wait(cond: Callable[[], Any], what: str, log: Path | None = None, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > deadline:
            detail = log.read_text(errors="replace") if log else ""
            raise AssertionError(f"timed out waiting for {what}\n{detail}")
        time.sleep(0.1)


def _sample(text: str, name: str, **labels: str) -> float | None:
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        metric, _, rest = key.partition("{")
        got = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if metric == name and got == want:
            return float(value)
    return None


def _ts(when: datetime) -> str:
    return when.astimezone(UTC).isoformat(timespec="microseconds")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    root = tmp_path_factory.mktemp("serve-ops")
    policy = root / "regwarden.yaml"
    policy.write_text(POLICY)
    port = free_port()
    with LocalRegistry(
        notifications=f"http://127.0.0.1:{port}/events/distribution",
        notification_headers=AUTH,
        notification_timeout="2s",
        notification_backoff="200ms",
    ) as reg:
        serve = Serve.start(root, policy, port, workers=2, registries=[reg.host])
        try:
            yield World(serve, reg, policy)
        finally:
            serve.stop()
    log = serve.log.read_text(errors="replace")
    assert "Traceback" not in log, log


def _metrics(world: World) -> str:
    response = httpx.get(f"{world.serve.url}/metrics", headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text
    return response.text


def _metrics_when(world: World, ready: Callable[[str], bool], what: str) -> str:
    """The first scrape for which `ready` holds."""
    found: list[str] = []

    def scrape() -> bool:
        text = _metrics(world)
        found[:] = [text]
        return ready(text)

    _wait(scrape, what, world.serve.log)
    return found[0]


def _verdicts(world: World) -> list[tuple[str, str]]:
    with sqlite3.connect(world.serve.ledger_path) as db:
        rows = db.execute("SELECT digest, outcome FROM verdict_log").fetchall()
    return [(str(d), str(o)) for d, o in rows]


def test_the_startup_line_says_where_what_and_who(world: World) -> None:
    line = next(
        ln
        for ln in world.serve.log.read_text().splitlines()
        if ln.startswith("regwarden serve listening on")
    )
    parts = line.split(" · ")
    assert parts[0] == f"regwarden serve listening on {world.serve.url}"
    assert re.fullmatch(
        rf"policy {re.escape(str(world.policy))} \(sha256:[0-9a-f]{{12}}, 1 repository rule\)",
        parts[1],
    )
    assert parts[2] == f"ledger {world.serve.ledger_path}"
    assert parts[3] == "queue the ledger"
    assert parts[4] == "2 workers"
    assert parts[5] == "auth 1 token(s): Bearer, Basic (user regwarden), or verbatim"
    assert parts[6] == "/metrics webhook token"
    assert parts[7] == f"registries {world.registry.host}"
    assert TOKEN not in world.serve.log.read_text()


def test_metrics_need_the_token(world: World) -> None:
    assert httpx.get(f"{world.serve.url}/metrics").status_code == 401


def test_metrics_move_with_notified_pushes(world: World) -> None:
    before = _metrics(world)
    host = world.registry.host
    get = "regwarden_registry_request_seconds_count"
    assert (_sample(before, get, host=host, method="GET") or 0) == 0
    # another user agent than regwarden's: the gate ignores its own writes
    with RegistryClient(host, user_agent="pusher/1.0") as client:
        good = push_image(client, "apps/web", make_image(seed=4101), tag="1.0.0")
        bad = push_image(client, "apps/web", make_image(seed=4102), tag="latest")
    _wait(
        lambda: {(good, "PASSED"), (bad, "FAILED")} <= set(_verdicts(world)),
        "both verdicts",
        world.serve.log,
    )
    text = _metrics_when(
        world,
        lambda t: bool(_sample(t, "regwarden_actions_total", kind="quarantine")),
        "the quarantine counted",
    )
    received = _sample(text, "regwarden_events_received_total", source="distribution")
    assert received is not None and received >= 2
    assert _sample(text, "regwarden_verdicts_total", outcome="PASSED") == 1
    assert _sample(text, "regwarden_verdicts_total", outcome="FAILED") == 1
    assert _sample(text, "regwarden_actions_total", kind="quarantine") == 1
    # the workers read manifests and moved the failed image: measured against the registry
    gets = _sample(text, get, host=host, method="GET")
    assert gets is not None and gets > 0
    puts = _sample(text, get, host=host, method="PUT")
    assert puts is not None and puts > 0
    assert _sample(text, "regwarden_queue_depth") == 0
    assert _sample(text, "regwarden_queue_oldest_pending_seconds") == 0


def test_queue_gauges_and_readyz_while_another_writer_holds_the_queue(world: World) -> None:
    assert httpx.get(f"{world.serve.url}/readyz").json() == {"ready": True}
    with sqlite3.connect(world.serve.ledger_path, isolation_level=None) as db:
        done = db.execute(
            "SELECT source, body, content_type FROM queue WHERE done_at IS NOT NULL "
            "AND error IS NULL ORDER BY id LIMIT 1"
        ).fetchone()
        assert done is not None, "a delivery the pushes left"
        now = datetime.now(UTC)
        # the same delivery again (judged once: the pipeline knows its id), due in a
        # moment — by then the lock below keeps every worker from leasing it
        db.execute(
            "INSERT INTO queue (source, body, content_type, received_at, not_before) "
            "VALUES (?, ?, ?, ?, ?)",
            (*done, _ts(now - timedelta(minutes=1)), _ts(now + timedelta(seconds=1))),
        )
        db.execute("BEGIN EXCLUSIVE")
        try:
            text = _metrics_when(
                world,
                lambda t: (_sample(t, "regwarden_queue_oldest_pending_seconds") or 0) > 0.5,
                "the due event to wait",
            )
            assert _sample(text, "regwarden_queue_depth") == 1
            down = httpx.get(f"{world.serve.url}/readyz", timeout=10)
            assert down.status_code == 503
            assert down.json() == {"ready": False, "reasons": ["work queue: database is locked"]}
        finally:
            db.execute("ROLLBACK")
    assert httpx.get(f"{world.serve.url}/readyz", timeout=10).status_code == 200
    text = _metrics_when(
        world, lambda t: _sample(t, "regwarden_queue_depth") == 0, "the workers to take it"
    )
    assert _sample(text, "regwarden_queue_oldest_pending_seconds") == 0


def test_readyz_fails_while_the_ledger_file_is_gone(world: World) -> None:
    path = world.serve.ledger_path
    away = path.with_name("ledger.away")
    os.rename(path, away)
    try:
        down = httpx.get(f"{world.serve.url}/readyz", timeout=10)
        assert down.status_code == 503
        assert down.json()["reasons"] == ["work queue: unable to open database file"]
        assert httpx.get(f"{world.serve.url}/healthz").status_code == 200  # still alive
    finally:
        os.rename(away, path)
    assert httpx.get(f"{world.serve.url}/readyz", timeout=10).status_code == 200


# -- TLS ------------------------------------------------------------------------------------


def _certificate(root: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "regwarden test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = root / "tls.crt", root / "tls.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _serve_args(root: Path, *extra: str) -> list[str]:
    (root / "regwarden.yaml").write_text(POLICY)
    (root / "tokens").write_text(TOKEN + "\n")
    return [
        sys.executable,
        "-m",
        "regwarden",
        "--ledger",
        str(root / "ledger.db"),
        "serve",
        "--policy",
        str(root / "regwarden.yaml"),
        "--auth-token-file",
        str(root / "tokens"),
        "--registry",
        "127.0.0.1:1",
        *extra,
    ]


def test_https_with_a_test_certificate(tmp_path: Path) -> None:
    cert, key = _certificate(tmp_path)
    port = free_port()
    log = tmp_path / "serve.log"
    args = _serve_args(
        tmp_path, "--port", str(port), "--tls-cert", str(cert), "--tls-key", str(key)
    )
    trust = ssl.create_default_context(cafile=str(cert))
    url = f"https://127.0.0.1:{port}"
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=cli_env())
    try:

        def up() -> bool:
            assert proc.poll() is None, log.read_text()
            try:
                return httpx.get(f"{url}/healthz", verify=trust, timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        _wait(up, "serve over HTTPS", log, timeout=30)
        assert httpx.get(f"{url}/readyz", verify=trust).status_code == 200
        assert httpx.get(f"{url}/metrics", verify=trust, headers=AUTH).status_code == 200
        with pytest.raises(httpx.ConnectError):  # a client that does not trust it
            httpx.get(f"{url}/healthz", timeout=5)
        with pytest.raises(httpx.TransportError):  # plain HTTP is not served
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)
        assert f"regwarden serve listening on {url} · " in log.read_text()
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.mark.parametrize("given", ["--tls-cert", "--tls-key"])
def test_half_a_tls_pair_is_refused(tmp_path: Path, given: str) -> None:
    cert, key = _certificate(tmp_path)
    path = cert if given == "--tls-cert" else key
    missing = "--tls-key" if given == "--tls-cert" else "--tls-cert"
    done = subprocess.run(
        _serve_args(tmp_path, "--port", "0", given, str(path)),
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"{given} needs {missing}" in done.stderr
    assert done.stderr.count(f"{given} needs {missing}") == 1


def test_a_key_that_is_not_the_certificates_is_refused(tmp_path: Path) -> None:
    cert, _ = _certificate(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    _, key = _certificate(other)
    done = subprocess.run(
        _serve_args(tmp_path, "--port", "0", "--tls-cert", str(cert), "--tls-key", str(key)),
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert f"cannot use --tls-cert {cert} with --tls-key {key}" in done.stderr
