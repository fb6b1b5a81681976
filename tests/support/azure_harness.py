"""The Azure function app's test harness: the loopback stand-ins, the app settings the
functions read, and the inputs their triggers hand them (the real azure-functions types).

    from support import azure_harness
    azure = azure_harness.azure                     # register the fixture

    @pytest.fixture
    def azure_policy() -> str:                      # each module brings its policy
        return POLICY

Real parts: a local CNCF distribution behind `FakeAcr`'s `/v2/` front (skopeo pushes
through it with an ACR refresh token; signatures are published through it), the real
azure-containerregistry and azure-mgmt-resourcegraph clients against `FakeAcr` (HTTPS,
test CA) and `FakeResourceGraph` (Defender's sub-assessments), azure-eventgrid's publisher
against `FakeEventGrid` (the alerts custom topic), azure-keyvault-secrets against
`FakeKeyVault` (`secret://`; every stand-in's test CA in one `REGWARDEN_AZURE_CA_BUNDLE`),
Azurite for the ledger (Table Storage, `azuretable://`) and the Storage queues, a loopback
webhook sink. The process's `DefaultAzureCredential` is replaced by FakeAcr's credential
(`azure_clients.default_credential`; FakeEventGrid and FakeKeyVault take the same token, as
all trust the app's one identity), so no test looks for Azure credentials on the machine.
The functions run in-process from `function_app.py`'s `app` (`Azure.function(name)` is the
decorated function the host calls); their clock (`_app.CLOCK`) is set, so a deadline is
reached without waiting.

Events are the recorded samples of `events/azure/` (Event Grid schema and CloudEvents 1.0)
with this test's registry, repository, digest and tag put in, as `func.EventGridEvent` /
`func.CloudEvent` built the way the Python worker builds them.
"""

from __future__ import annotations

import copy
import functools
import json
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import azure.functions as func
import httpx
import pytest
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

from functions.azure import _app
from regwarden import azure_clients
from regwarden.devtools import Content, LocalRegistry, make_image, write_layout
from regwarden.devtools import skopeo_copy as copy_image
from regwarden.oci import Credentials, DeadlineTransport, RegistryClient
from regwarden.signatures import publish, sign_legacy
from regwarden.signatures.keys import PrivateKey, generate_private_key
from regwarden.store import Ledger, open_ledger
from support.aws_gate import Sink
from support.azurite import Azurite
from support.fake_acr import TOKEN_USER, FakeAcr
from support.fake_eventgrid import FakeEventGrid
from support.fake_keyvault import FakeKeyVault
from support.fake_resourcegraph import SUBSCRIPTION, FakeResourceGraph

__all__ = [
    "ALERTS_TOPIC",
    "EVENTS",
    "HOST",
    "SUBSCRIPTION",
    "T0",
    "VAULT",
    "Azure",
    "azure",
    "image",
]

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events" / "azure"
HOST = "fakereg.azurecr.io"
"""The registry's login server (FakeAcr's): what events and the policy name."""
ALERTS_TOPIC = "https://regwarden-alerts.westeurope-1.eventgrid.azure.net/api/events"
"""The alerts custom topic's endpoint (served by FakeEventGrid through the override)."""
VAULT = "https://regwarden-kv.vault.azure.net"
"""REGWARDEN_KEY_VAULT (served by FakeKeyVault through the override)."""
T0 = datetime(2026, 1, 1, tzinfo=UTC)
"""FakeAcr's and FakeResourceGraph's clock (push and scan times)."""


def _load(name: str) -> Any:
    return json.loads((EVENTS / name).read_text())


@dataclass
class Azure:
    acr: FakeAcr
    graph: FakeResourceGraph
    topic: FakeEventGrid
    vault: FakeKeyVault
    storage: Azurite
    sink: Sink
    key: PrivateKey
    root: Path
    monkeypatch: pytest.MonkeyPatch
    env: dict[str, str] = field(default_factory=dict)
    """What the fixture set in the environment (the app settings)."""

    # -- the functions ---------------------------------------------------------------------

    def function(self, name: str) -> Callable[..., Any]:
        """The user function `name` of the app, as the host calls it."""
        return _user_functions()[name]

    def setenv(self, name: str, value: str) -> None:
        """Set one of the app settings (kept in `env` too); states built before are
        forgotten."""
        self.monkeypatch.setenv(name, value)
        self.env[name] = value
        _app.reset()

    def with_alerts_topic(self) -> None:
        """Every gate alert to the alerts topic (REGWARDEN_ALERTS_TOPIC), as deployed."""
        self.setenv("REGWARDEN_ALERTS_TOPIC", ALERTS_TOPIC)

    def at(self, moment: datetime) -> None:
        """Set the functions' clock."""
        self.monkeypatch.setattr(_app, "CLOCK", lambda: moment)

    # -- the registry ----------------------------------------------------------------------

    def client(self) -> RegistryClient:
        """An OCI client on FakeAcr's `/v2/`, as `docker login` with a refresh token."""
        transport = DeadlineTransport(limits=httpx.Limits(), ca_file=self.acr.ca_file)
        creds = Credentials(username=TOKEN_USER, password=self.acr.mint_refresh_token())
        return RegistryClient(f"https://{self.acr.host}", credentials=creds, transport=transport)

    def push(self, repository: str, tag: str, seed: int) -> str:
        return self.push_content(repository, tag, make_image(seed=seed))

    def push_content(self, repository: str, tag: str, content: Content) -> str:
        """`content` pushed by skopeo through the front as `repository:tag`; its digest."""
        layout = self.root / uuid.uuid4().hex[:8]
        write_layout(layout, content, tag="t")
        copy_image(
            f"oci:{layout}:t",
            f"docker://{self.acr.host}/{repository}:{tag}",
            creds=(TOKEN_USER, self.acr.mint_refresh_token()),
        )
        return str(content.manifest_digest)

    def sign(self, repository: str, digest: str) -> str:
        """A cosign `.sig` of `repository@digest` with the policy's key; its tag."""
        art = sign_legacy(
            image_digest=digest, docker_reference=f"{HOST}/{repository}", key=self.key
        )
        with self.client() as client:
            publish(client, repository, art)
        assert art.tag is not None
        return art.tag

    def fail_v2(self, repository: str, times: int = 20) -> None:
        """The next `times` reads of `repository`'s manifests answer 503 (more than any
        caller retries); `heal` drops what is left."""
        for _ in range(times):
            self.acr.fail_next("GET", rf"/v2/{repository}/manifests/.*", 503)
            self.acr.fail_next("HEAD", rf"/v2/{repository}/manifests/.*", 503)

    def heal(self) -> None:
        with self.acr.lock:
            self.acr._faults.clear()

    # -- what the triggers hand the functions ----------------------------------------------

    def pushed(
        self,
        repository: str,
        digest: str,
        tag: str | None,
        *,
        schema: str = "eventgrid",
        event_id: str | None = None,
        kind: str = "image-pushed",
    ) -> Any:
        """The ACR event of a push (`kind` image-pushed or image-deleted) as the worker
        hands it to an Event Grid trigger: `func.EventGridEvent` (`schema` eventgrid) or
        `func.CloudEvent` (cloudevent), from the recorded sample."""
        sample = _load(f"{schema}-{kind}.json")
        doc = sample[0] if isinstance(sample, list) else sample
        doc = copy.deepcopy(doc)
        doc["id"] = event_id or str(uuid.uuid4())
        stamp = self.acr.now().isoformat().replace("+00:00", "Z")  # pushed when ACR says
        doc["time" if schema == "cloudevent" else "eventTime"] = stamp
        data = doc["data"]
        data["timestamp"] = stamp
        data["target"].update({"repository": repository, "digest": digest})
        if tag is None:
            data["target"].pop("tag", None)
        else:
            data["target"]["tag"] = tag
        data["request"]["host"] = HOST
        subject = f"{repository}:{tag}" if tag else f"{repository}@{digest}"
        if schema == "cloudevent":
            return func.CloudEvent(
                id=doc["id"],
                source=doc["source"],
                type=doc["type"],
                specversion=doc["specversion"],
                time=_time(doc["time"]),
                subject=subject,
                data=data,
            )
        return func.EventGridEvent(
            id=doc["id"],
            data=data,
            topic=doc["topic"],
            subject=subject,
            event_type=doc["eventType"],
            event_time=_time(doc["eventTime"]),
            data_version=doc["dataVersion"],
        )

    @staticmethod
    def alert_event(posted: dict[str, Any]) -> func.CloudEvent:
        """A CloudEvent the alerts topic accepted, as the worker hands it to `notify`."""
        return func.CloudEvent(
            id=posted["id"],
            source=posted["source"],
            type=posted["type"],
            specversion=posted["specversion"],
            time=_time(posted["time"]) if posted.get("time") else None,
            subject=posted.get("subject"),
            data=posted["data"],
        )

    def webhook_body(self, repository: str, digest: str, tag: str) -> bytes:
        """ACR's own `quarantine` webhook for a push (the recorded sample)."""
        doc = _load("webhook-quarantine.json")
        doc["id"] = str(uuid.uuid4())
        doc["target"].update({"repository": repository, "digest": digest, "tag": tag})
        doc["request"]["host"] = HOST
        return json.dumps(doc).encode()

    @staticmethod
    def validation_body() -> tuple[bytes, str]:
        """Event Grid's SubscriptionValidationEvent (the recorded sample) and its code."""
        doc = _load("eventgrid-validation.json")
        return json.dumps(doc).encode(), doc[0]["data"]["validationCode"]

    @staticmethod
    def timer(*, past_due: bool = False) -> func.TimerRequest:
        return TimerRequest(past_due=past_due)

    @staticmethod
    def queue_message(body: bytes, *, dequeue_count: int = 1) -> func.QueueMessage:
        """A queue trigger's message as the worker builds it (the body decoded)."""
        message: func.QueueMessage = QueueMessage(  # type: ignore[no-untyped-call]
            id=str(uuid.uuid4()), body=body, dequeue_count=dequeue_count, pop_receipt="pr"
        )
        return message

    # -- what happened ---------------------------------------------------------------------

    def ledger(self) -> Ledger:
        """The functions' ledger (REGWARDEN_LEDGER: Table Storage on Azurite), opened anew."""
        return open_ledger(self.env["REGWARDEN_LEDGER"])

    def queue(self, name: str) -> Any:
        """A QueueClient of `name` on this test's Azurite (base64 text, as the host reads)."""
        from azure.storage.queue import (
            BinaryBase64DecodePolicy,
            BinaryBase64EncodePolicy,
            QueueClient,
        )

        return QueueClient.from_connection_string(
            self.storage.connection_string,
            name,
            message_encode_policy=BinaryBase64EncodePolicy(),
            message_decode_policy=BinaryBase64DecodePolicy(),
        )

    def depth(self, name: str) -> int:
        """Messages on queue `name`, visible or not (Storage's approximate count, exact
        on Azurite)."""
        count: int = self.queue(name).get_queue_properties().approximate_message_count
        return count

    def visible(self, name: str) -> list[bytes]:
        """The bodies of the messages of `name` visible now (peeked: left as they are)."""
        return [bytes(m.content) for m in self.queue(name).peek_messages(max_messages=32)]

    def take(self, name: str, *, timeout: float = 30.0) -> tuple[bytes, int]:
        """The next message of `name` once it is visible, as the host's listener takes it
        (received, then deleted as a function that returned): (body, dequeue count).
        Waits on the condition, up to `timeout` seconds."""
        import time

        client = self.queue(name)
        deadline = time.monotonic() + timeout
        while True:
            for message in client.receive_messages(max_messages=1, visibility_timeout=30):
                client.delete_message(message)
                return bytes(message.content), int(message.dequeue_count)
            if time.monotonic() > deadline:
                raise AssertionError(f"no message became visible on {name} in {timeout}s")
            time.sleep(0.2)


@functools.cache
def _user_functions() -> dict[str, Callable[..., Any]]:
    """The app's functions by name, indexed once (azure-functions refuses a second
    `get_functions()`, as the worker indexes an app once)."""
    from support.azure_app import app_functions

    return {str(f.get_function_name()): f.get_user_function() for f in app_functions()}


def _time(text: str) -> datetime:
    """An Event Grid time (UTC, `Z`, up to 7 fraction digits) as the worker parses it."""
    head, _, fraction = text.rstrip("Z").partition(".")
    return datetime.fromisoformat(head + ("." + fraction[:6] if fraction else "")).replace(
        tzinfo=UTC
    )


def image(area: str) -> str:
    """A fresh repository under `area`."""
    return f"{area}/app-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def azure(
    registry: LocalRegistry,
    azurite: Azurite,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    azure_policy: str,
) -> Iterator[Azure]:
    """Every stand-in started, the app settings in the environment (the policy
    `azure_policy` in `policy.yaml`, `{hook}` there the sink's URL; a cosign key pair
    beside it; the ledger in Table Storage on the session's Azurite, tables of this test's
    own), the functions' clock at T0 + 1 min. Rechecks: not scheduled (no
    REGWARDEN_STORAGE_ACCOUNT; a test that wants them calls `with_storage`)."""
    if shutil.which("skopeo") is None:
        pytest.skip("needs skopeo")
    key = generate_private_key("ecdsa-p256")
    pem = key.public_key.pem
    (tmp_path / "cosign.pub").write_bytes(pem if isinstance(pem, bytes) else pem.encode())
    sink = Sink()
    (tmp_path / "policy.yaml").write_text(azure_policy.replace("{hook}", sink.url))
    with (
        FakeAcr(registry.host, login_server=HOST) as acr,
        FakeResourceGraph(now=T0) as graph,
        FakeEventGrid(token=acr.aad_token) as topic,
        FakeKeyVault(token=acr.aad_token) as vault,
    ):
        acr.now = lambda: T0
        # one identity for both stand-ins (as the app's one managed identity), and one
        # bundle of their test CAs
        credential = acr.credential()
        monkeypatch.setattr(azure_clients, "default_credential", lambda: credential)
        bundle = tmp_path / "test-cas.pem"
        bundle.write_text(
            "".join(Path(f).read_text() for f in (acr.ca_file, topic.ca_file, vault.ca_file))
        )
        env = {
            "REGWARDEN_POLICY": str(tmp_path / "policy.yaml"),
            "REGWARDEN_LEDGER": f"azuretable://{azurite.account}?prefix=f{uuid.uuid4().hex[:12]}",
            "REGWARDEN_AZURE_SUBSCRIPTION": SUBSCRIPTION,
            "REGWARDEN_AZURE_ENDPOINT_RESOURCEGRAPH": graph.url,
            **acr.env(),
            **topic.env(),
            **azurite.env(),
            "REGWARDEN_KEY_VAULT": VAULT,
            "REGWARDEN_AZURE_ENDPOINT_KEYVAULT": vault.url,
            "REGWARDEN_AZURE_CA_BUNDLE": str(bundle),
        }
        for name in ("REGWARDEN_STORAGE_ACCOUNT", "REGWARDEN_ALERTS_TOPIC"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        monkeypatch.chdir(tmp_path)
        _app.reset()
        harness = Azure(acr, graph, topic, vault, azurite, sink, key, tmp_path, monkeypatch, env)
        harness.at(T0 + timedelta(minutes=1))
        try:
            yield harness
        finally:
            _app.reset()
            sink.close()


def with_storage(azure: Azure) -> str:
    """`azure` with its rechecks on Azurite's queues: REGWARDEN_STORAGE_ACCOUNT set, and a
    rechecks queue of this test's own (REGWARDEN_RECHECK_QUEUE: Azurite is shared by the
    session); its name."""
    rechecks = "rechecks-" + uuid.uuid4().hex[:12]
    settings = {
        "REGWARDEN_STORAGE_ACCOUNT": azure.storage.account,
        "REGWARDEN_RECHECK_QUEUE": rechecks,
    }
    for name, value in settings.items():
        azure.setenv(name, value)
    azure.queue(rechecks).create_queue()
    return rechecks
