"""The GCP functions' test harness: the loopback Google stand-ins, the environment the
functions read, and the requests their triggers send.

    from support import gcp_harness
    gcp = gcp_harness.gcp                           # register the fixture

    @pytest.fixture
    def gcp_policy() -> str:                        # each module brings its policy
        return POLICY

Real parts: a local CNCF distribution behind `FakeGar`'s `/v2/` front (skopeo pushes
through it and `regwarden sign` signs through it; the `gcr` messages are what FakeGar
publishes for those writes), the Google client libraries on their REST transport against
the loopback stand-ins (Artifact Registry, Grafeas, Pub/Sub, Cloud Tasks, Secret Manager),
the SQLite ledger (a test names Firestore with `REGWARDEN_LEDGER`), and a loopback webhook
sink. The functions run in-process through functions-framework's own app
(`functions_framework.create_app(target, source)` → Flask test client); their clock
(`_app.CLOCK`) is set, so a deadline can be reached without waiting. `Gcp.env` is the
environment the fixture set, for a function run as a process of its own.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from flask.testing import FlaskClient

from functions.gcp import _app, _retention
from regwarden.devtools import (
    Content,
    LocalRegistry,
    make_image,
    skopeo_copy,
    write_layout,
)
from regwarden.signatures.keys import encrypt_private_key, generate_private_key
from regwarden.store import SqliteLedger
from support.aws_gate import Sink
from support.cli import run_cli
from support.fake_gar import FakeGar
from support.fake_grafeas import FakeGrafeas
from support.fake_pubsub import FakePubSub, cloudevent_delivery, push_delivery
from support.fake_secrets import FakeSecrets
from support.fake_tasks import FakeTasks

__all__ = [
    "ALERTS",
    "HMAC_KEY",
    "HOST",
    "MAIN",
    "PROJECT",
    "QUEUE",
    "RECHECK_URL",
    "SUBSCRIPTION",
    "T0",
    "TASKS_ACCOUNT",
    "TOPICS",
    "WORK",
    "Gcp",
    "cli_env",
    "gcp",
    "image",
    "tick",
]

MAIN = Path(__file__).resolve().parents[2] / "functions" / "gcp" / "main.py"
HOST = "us-docker.pkg.dev"
PROJECT = "demo-proj"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
"""The registry's clock (upload and publish times) and FakeGrafeas's."""
ALERTS = f"projects/{PROJECT}/topics/regwarden-alerts"
QUEUE = f"projects/{PROJECT}/locations/us-central1/queues/regwarden-rechecks"
RECHECK_URL = "https://regwarden-recheck-abc-uc.a.run.app/"
TASKS_ACCOUNT = f"regwarden-tasks@{PROJECT}.iam.gserviceaccount.com"
SUBSCRIPTION = f"projects/{PROJECT}/subscriptions/regwarden-on-push"
HMAC_KEY = "webhook-signing-key"
WORK = f"projects/{PROJECT}/topics/regwarden-retention-work"
TOPICS = {
    "on_push": f"projects/{PROJECT}/topics/gcr",
    "on_scan": f"projects/{PROJECT}/topics/container-analysis-occurrences-v1",
}


@dataclass
class Gcp:
    gar: FakeGar
    grafeas: FakeGrafeas
    pubsub: FakePubSub
    tasks: FakeTasks
    secrets: FakeSecrets
    sink: Sink
    root: Path
    monkeypatch: pytest.MonkeyPatch
    env: dict[str, str] = field(default_factory=dict)
    """What the fixture set in the environment (the functions' settings)."""
    clients: dict[str, FlaskClient] = field(default_factory=dict)

    # -- the functions ---------------------------------------------------------------------

    def client(self, target: str) -> FlaskClient:
        if target not in self.clients:
            app = functions_framework.create_app(target, str(MAIN))  # type: ignore[no-untyped-call]
            self.clients[target] = app.test_client()
        return self.clients[target]

    def call(self, target: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
        answer = self.client(target).post("/", data=body, headers=headers)
        return answer.status_code, answer.get_json(silent=True)

    def deliver(
        self, target: str, message: dict[str, Any], mode: str = "push", attempt: int | None = None
    ) -> tuple[int, Any]:
        """`message` (a recorded Pub/Sub message) as its trigger would deliver it."""
        return self.call(target, *delivery(message, mode, attempt))

    def setenv(self, name: str, value: str) -> None:
        """Set one of the functions' settings (kept in `env` too)."""
        self.monkeypatch.setenv(name, value)
        self.env[name] = value

    def at(self, moment: datetime) -> None:
        """Set the functions' clock."""
        self.monkeypatch.setattr(_app, "CLOCK", lambda: moment)

    # -- the registry ----------------------------------------------------------------------

    def push(self, repository: str, tag: str, seed: int) -> str:
        return self.push_content(repository, tag, make_image(seed=seed))

    def push_content(self, repository: str, tag: str, content: Content) -> str:
        """`content` (an image, or an index with every platform: `skopeo copy --all`)
        pushed through the front as `repository:tag`; its digest."""
        layout = self.root / uuid.uuid4().hex[:8]
        write_layout(layout, content, tag="t")
        skopeo_copy(f"oci:{layout}:t", f"docker://{self.gar.host}/{repository}:{tag}")
        return str(content.manifest_digest)

    def sign(self, repository: str, digest: str, fmt: str) -> None:
        ref = f"{self.gar.host}/{repository}@{digest}"
        key = str(self.root / "cosign.key")
        done = run_cli("sign", ref, "--key", key, "--format", fmt, env=cli_env())
        assert done.returncode == 0, done.stderr

    def gcr(self, since: int = 0) -> list[dict[str, Any]]:
        """FakeGar's `gcr` messages from index `since`, as recorded Pub/Sub messages."""
        return [{**m, "topic": TOPICS["on_push"]} for m in self.gar.gcr[since:]]

    def gcr_for(self, repository: str, tag: str) -> dict[str, Any]:
        """The INSERT message of pushing `repository:tag`."""
        ref = self.gar.reference(repository, tag=tag)
        (found,) = [
            m
            for m in self.gcr()
            if json.loads(m["data"]) | {"digest": None}
            == {"action": "INSERT", "tag": ref, "digest": None}
        ]
        return found

    def occurrences(self, since: int = 0) -> list[dict[str, Any]]:
        """FakeGrafeas's notifications from index `since`, as recorded Pub/Sub messages."""
        return [
            {
                "data": json.dumps(n).encode(),
                "attributes": {},
                "messageId": str(90_000_000 + since + i),
                "publishTime": n["notificationTime"],
                "topic": TOPICS["on_scan"],
            }
            for i, n in enumerate(self.grafeas.notifications[since:])
        ]

    def alerts(self) -> list[dict[str, Any]]:
        return self.pubsub.published(ALERTS)

    def ledger(self) -> SqliteLedger:
        return SqliteLedger(self.root / "ledger.db")


def delivery(
    message: dict[str, Any], mode: str = "push", attempt: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """The request (body, headers) that delivers `message`: a push body (`push`) or an
    Eventarc CloudEvent (`binary`, `structured`)."""
    if mode == "push":
        return push_delivery(message, subscription=SUBSCRIPTION, delivery_attempt=attempt)
    return cloudevent_delivery(message, subscription=SUBSCRIPTION, binary=mode == "binary")


def cli_env() -> dict[str, str]:
    return {"COSIGN_PASSWORD": "pw", "PATH": "/usr/bin:/bin"}


@pytest.fixture
def gcp(
    registry: LocalRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gcp_policy: str
) -> Iterator[Gcp]:
    """Every stand-in started, the functions' settings in the environment (the policy
    `gcp_policy` in `policy.yaml`, a cosign key pair beside it), their clock at T0 + 1 min."""
    key = generate_private_key("ecdsa-p256")
    (tmp_path / "cosign.key").write_bytes(encrypt_private_key(key, "pw", scrypt_n=32768))
    pem = key.public_key.pem
    (tmp_path / "cosign.pub").write_bytes(pem if isinstance(pem, bytes) else pem.encode())
    (tmp_path / "policy.yaml").write_text(gcp_policy)
    sink = Sink()
    with (
        FakeGar(registry.host, repositories=("signed", "scanned")) as gar,
        FakeGrafeas(now=T0) as grafeas,
        FakePubSub() as pubsub,
        FakeTasks(now=T0) as tasks,
        FakeSecrets() as secrets,
    ):
        gar.now = lambda: T0
        secrets.put(PROJECT, "hook-url", sink.url)
        secrets.put(PROJECT, "hmac", HMAC_KEY)
        env = {
            "REGWARDEN_POLICY": str(tmp_path / "policy.yaml"),
            "REGWARDEN_LEDGER": str(tmp_path / "ledger.db"),
            "GOOGLE_CLOUD_PROJECT": PROJECT,
            "REGWARDEN_ALERTS_TOPIC": ALERTS,
            "REGWARDEN_TASKS_QUEUE": QUEUE,
            "REGWARDEN_RECHECK_URL": RECHECK_URL,
            "REGWARDEN_TASKS_SERVICE_ACCOUNT": TASKS_ACCOUNT,
            "REGWARDEN_GAR_DATA_PLANE": gar.host,
            "REGWARDEN_GCP_ENDPOINT_ARTIFACTREGISTRY": gar.url,
            "REGWARDEN_GCP_ENDPOINT_CONTAINERANALYSIS": grafeas.url,
            "REGWARDEN_GCP_ENDPOINT_PUBSUB": pubsub.url,
            "REGWARDEN_GCP_ENDPOINT_CLOUDTASKS": tasks.url,
            "REGWARDEN_GCP_ENDPOINT_SECRETMANAGER": secrets.url,
        }
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path)
        _app.reset()
        _retention.reset()
        harness = Gcp(gar, grafeas, pubsub, tasks, secrets, sink, tmp_path, monkeypatch, env)
        harness.at(T0 + timedelta(minutes=1))
        try:
            yield harness
        finally:
            _app.reset()
            _retention.reset()
            sink.close()


def image(area: str) -> str:
    """A fresh image path in AR repository `area` of the project."""
    return f"{PROJECT}/{area}/app-{uuid.uuid4().hex[:8]}"


def tick(topic: str, at: datetime, data: bytes = b"{}", message_id: str = "5100") -> dict[str, Any]:
    """What Cloud Scheduler publishes on a tick (fixed data; the time is the publish time)."""
    stamp = at.isoformat().replace("+00:00", "Z")
    return {"data": data, "messageId": message_id, "publishTime": stamp, "topic": topic}
