"""`regwarden quarantine list | show | release` as an operator runs them (a child process),
on a ledger the real pipeline filled: unsigned pushes to the real local registry, judged
and quarantined (`move`) by the Runtime in process, alerts sent to a loopback webhook. The
same test runs on an SQLite file and on DynamoDB (moto's server, boto3 over the wire), each
named by `--ledger` as a deployment would.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from support import moto_server as moto_support
from support.cli import run_cli
from support.moto_server import MotoServer
from support.registries import PushImage

from regwarden.devtools import LocalRegistry
from regwarden.model import EventKind, ImageEvent
from regwarden.oci import RegistryClient
from regwarden.reference import ImageRef
from regwarden.runtime import load_runtime
from regwarden.signatures import publish, sign_legacy
from regwarden.signatures.keys import PrivateKey, generate_private_key
from regwarden.store._dynamo import table_definition

moto_server = moto_support.moto_server
moto = moto_support.moto

pytestmark = pytest.mark.integration

TABLE = "regwarden-quarantine-cli"


class _Sink(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.server.received += 1  # type: ignore[attr-defined]
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    server.received = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def policy_text(repo: str, hook_url: str) -> str:
    signed = "signatures: {required: true, cosign: {keys: ['file://cosign.pub']}, gracePeriod: 1s}"
    return (
        "apiVersion: regwarden/v1\nkind: Policy\n"
        "defaults: {mode: enforce}\n"
        "repositories:\n"
        f"  - match: '{repo}/pay/**'\n    team: payments\n    {signed}\n"
        f"  - match: '{repo}/web/**'\n    team: web\n    {signed}\n"
        "notifications:\n"
        f"  channels: {{hook: {{type: webhook, url: '{hook_url}'}}}}\n"
        "  routes: [{to: [hook]}]\n"
    )


@dataclass
class World:
    host: str
    ledger: str
    policy: Path
    a: str
    """payments' unsigned image, quarantined ten days ago"""
    b: str
    """web's unsigned image, quarantined now"""
    c: str
    """payments' signed image: PASSED, never quarantined"""

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, "--ledger", self.ledger)

    def json(self, *args: str) -> Any:
        proc = self.cli(*args, "--output", "json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)


def _ledger_url(store: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if store == "sqlite":
        return f"sqlite://{tmp_path}/ledger.db"
    server: MotoServer = request.getfixturevalue("moto")
    server.client("dynamodb").create_table(**table_definition(TABLE))
    return f"dynamodb://{TABLE}?region={server.region}&endpoint={server.endpoint_url}"


@pytest.fixture(params=["sqlite", "dynamodb"])
def world(
    request: pytest.FixtureRequest,
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    push: PushImage,
    hook: ThreadingHTTPServer,
    tmp_path: Path,
) -> World:
    key: PrivateKey = generate_private_key("ecdsa-p256")
    pem = key.public_key.pem
    (tmp_path / "cosign.pub").write_bytes(pem if isinstance(pem, bytes) else pem.encode())
    policy = tmp_path / "regwarden.yaml"
    policy.write_text(policy_text(repo, f"http://127.0.0.1:{hook.server_address[1]}/hook"))
    url = _ledger_url(request.param, request, tmp_path)
    pay, web = f"{repo}/pay/api", f"{repo}/web/site"
    a = push(pay, "1.0", seed=1).manifest_digest
    b = push(web, "2.0", seed=2).manifest_digest
    c = push(pay, "1.1", seed=3).manifest_digest
    publish(
        client,
        pay,
        sign_legacy(image_digest=c, docker_reference=f"{registry.host}/{pay}", key=key),
    )
    now = datetime.now(UTC)
    runtime = load_runtime(policy, ledger=url)
    try:
        pipeline = runtime.pipeline()
        for name, digest, tag, at in (
            (pay, a, "1.0", now - timedelta(days=10)),
            (web, b, "2.0", now),
            (pay, c, "1.1", now),
        ):
            image = ImageRef(registry=registry.host, repository=name, tag=tag, digest=digest)
            event = ImageEvent(
                kind=EventKind.PUSHED,
                source="distribution",
                image=image,
                time=at - timedelta(hours=1),
                delivery_id=f"push-{digest[7:19]}",
            )
            handled = pipeline.handle(event, now=at)
            assert handled.verdict is not None
            want = "PASSED" if digest == c else "FAILED"
            assert handled.verdict.outcome.value == want, handled
    finally:
        runtime.close()
        runtime.ledger.close()
    assert hook.received == 2  # type: ignore[attr-defined]  # one alert per quarantine
    return World(
        registry.host,
        url,
        policy,
        f"{registry.host}/{pay}@{a}",
        f"{registry.host}/{web}@{b}",
        f"{registry.host}/{pay}@{c}",
    )


def images(rows: list[dict[str, Any]]) -> list[str]:
    return [r["image"] for r in rows]


def test_list_filters_show_and_release_on_the_pipelines_ledger(world: World, repo: str) -> None:
    standing = world.json("quarantine", "list")
    assert images(standing) == [world.a, world.b]  # oldest first; the signed one is not there
    row = standing[0]
    assert row["strategy"] == "move" and row["location"].startswith("quarantine/")
    assert row["tags"] == ["1.0"] and row["team"] is None  # no --policy: team unknown
    assert "not signed" in row["reason"]
    assert row["ageSeconds"] >= 10 * 86400 and row["releasedAt"] is None

    teams = world.json("quarantine", "list", "--policy", str(world.policy))
    assert [r["team"] for r in teams] == ["payments", "web"]
    only = world.json("quarantine", "list", "--policy", str(world.policy), "--team", "web")
    assert images(only) == [world.b]
    assert images(world.json("quarantine", "list", "-r", f"{repo}/pay/**")) == [world.a]
    assert images(world.json("quarantine", "list", "--older-than", "7d")) == [world.a]
    assert world.json("quarantine", "list", "--older-than", "11d") == []
    assert world.json("quarantine", "list", "--released") == []

    table = world.cli("quarantine", "list", "--policy", str(world.policy))
    assert table.returncode == 0, table.stderr
    assert "payments" in table.stdout and "10d" in table.stdout and "2 standing" in table.stdout

    released = world.cli(
        "quarantine", "release", world.a, "--reason", "signed after the fact", "--by", "alice"
    )
    assert released.returncode == 0, released.stderr
    assert "tags restored: 1.0" in released.stdout

    assert images(world.json("quarantine", "list")) == [world.b]
    (gone,) = world.json("quarantine", "list", "--released")
    assert gone["image"] == world.a and gone["releasedAt"] is not None
    assert (gone["releasedBy"], gone["releaseReason"]) == ("alice", "signed after the fact")
    assert images(world.json("quarantine", "list", "--all")) == [world.a, world.b]

    # releasing what is not quarantined says so, once, and exits 1
    again = world.cli("quarantine", "release", world.a, "--reason", "again")
    assert again.returncode == 1
    assert again.stderr.count("error:") == 1
    assert "is not quarantined: released" in again.stderr and "by alice" in again.stderr
    never = world.cli("quarantine", "release", world.c, "--reason", "why not")
    assert never.returncode == 1
    assert "no quarantine record" in never.stderr

    trail = world.json("quarantine", "show", world.a)
    assert trail["image"] == world.a
    assert trail["quarantine"]["standing"] is False
    assert trail["quarantine"]["tags"] == ["1.0"]
    assert [v["outcome"] for v in trail["verdicts"]] == ["FAILED"]
    kinds = [(x["kind"], x["status"]) for x in trail["actions"]]
    assert kinds == [("quarantine", "done"), ("release", "done")]
    release = trail["actions"][1]
    assert (release["by"], release["reason"]) == ("alice", "signed after the fact")
    (alert,) = trail["alerts"]
    assert alert["channel"] == "hook" and alert["action"] == "quarantine"
    assert alert["outcome"] == "FAILED" and alert["sentAt"] is not None

    text = world.cli("quarantine", "show", world.a)
    assert text.returncode == 0, text.stderr
    assert "release (done) by alice: signed after the fact" in text.stdout
    assert "→ hook (sent" in text.stdout

    passed = world.json("quarantine", "show", world.c)  # judged, never quarantined
    assert passed["quarantine"] is None and passed["alerts"] == []
    assert [v["outcome"] for v in passed["verdicts"]] == ["PASSED"]

    unknown = world.cli("quarantine", "show", world.c[:-6] + "000000")
    assert unknown.returncode == 1 and "has no record" in unknown.stderr
    by_tag = world.cli("quarantine", "show", world.c.split("@")[0] + ":1.1")
    assert by_tag.returncode == 2 and "by digest" in by_tag.stderr


def test_list_refuses_a_team_without_a_policy_and_bad_filters(tmp_path: Path) -> None:
    ledger = ["--ledger", str(tmp_path / "ledger.db")]
    cases = [
        (("--team", "web"), "--team needs --policy"),
        (("--older-than", "7"), "--older-than"),
        (("-r", "Pay/**"), "--repository"),
        (("--released", "--all"), "cannot be combined"),
    ]
    for args, message in cases:
        proc = run_cli("quarantine", "list", *args, *ledger)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr
