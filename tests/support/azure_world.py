"""The Azure function app run as Azure runs it, for the scenario and chaos tests: the
Functions host stand-in (`support.azure_host`, a process of its own) serving
`functions/azure/function_app.py`, with everything it talks to on loopback.

    world = azure_world(registry, tmp_path, POLICY)       # a context manager
    digest, events = world.push_content(repo, "1.0", index)
    world.deliver(events)                                  # as ACR's system topic delivers

Real parts: a local CNCF distribution behind `FakeAcr`'s `/v2/` front (skopeo pushes
through it with an ACR refresh token; signatures are published through it with
`regwarden sign`'s own code), the azure-containerregistry client in the host process
against FakeAcr (HTTPS, test CA), azure-eventgrid's publisher against `FakeEventGrid`
(the alerts custom topic), Azurite (one per world, so no queue is shared between tests)
for the Storage queues — and the ledger when `azuretable` is registered (an SQLite file
on disk otherwise: both outlive the host process). The host's identity is FakeAcr's AAD
token (`support.azure_identity`, preloaded); FakeEventGrid takes the same token. Both
stand-ins' test CAs are in one bundle (`REGWARDEN_AZURE_CA_BUNDLE`).

Events: ACR emits `ImagePushed` for every manifest PUT. `push_content` and `sign` return
the events of the PUTs they made, read back from the front's log (`acr.v2_requests`) and
the real registry (digest, media type, size), in the recorded sample's shape
(`events/azure/eventgrid-image-pushed.json`, the Event Grid schema). The functions run on
the real clock; FakeAcr's push times are real too.
"""

from __future__ import annotations

import copy
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from regwarden.devtools import Content, LocalRegistry, skopeo_copy, write_layout
from regwarden.oci import Credentials, DeadlineTransport, RegistryClient
from regwarden.providers import ProviderOptions
from regwarden.providers.acr import AcrRegistry
from regwarden.signatures import publish, sign_bundle, sign_legacy
from regwarden.signatures.keys import PrivateKey, generate_private_key
from regwarden.store import LEDGERS, Ledger, open_ledger
from support.aws_gate import Sink
from support.azure_host import HostProcess
from support.azurite import Azurite
from support.fake_acr import TOKEN_USER, FakeAcr
from support.fake_eventgrid import FakeEventGrid

__all__ = ["ALERTS_TOPIC", "APP", "HOST", "World", "azure_world", "image"]

ROOT = Path(__file__).resolve().parents[2]
APP = ROOT / "functions" / "azure" / "function_app.py"
HOST = "fakereg.azurecr.io"
ALERTS_TOPIC = "https://regwarden-alerts.westeurope-1.eventgrid.azure.net/api/events"
SIGN_AGENT = "regwarden-sign/test"
"""`regwarden sign`'s User-Agent: a signature is news to the gate, not its own write."""
_SAMPLE = json.loads((ROOT / "events" / "azure" / "eventgrid-image-pushed.json").read_text())[0]


def image(area: str) -> str:
    """A fresh repository under `area`."""
    return f"{area}/app-{uuid.uuid4().hex[:8]}"


@dataclass
class World:
    registry: LocalRegistry
    acr: FakeAcr
    topic: FakeEventGrid
    storage: Azurite
    key: PrivateKey
    root: Path
    env: dict[str, str]
    sink: Sink
    """The webhook `{hook}` in the policy names."""
    host: HostProcess | None = None
    starts: int = 0
    hosts: list[HostProcess] = field(default_factory=list)

    # -- the host ------------------------------------------------------------------------

    def start(self) -> HostProcess:
        """A new host process (the last one must be gone)."""
        assert self.host is None or self.host.proc.poll() is not None
        self.starts += 1
        self.host = HostProcess(APP, self.env, log=self.root / f"host-{self.starts}.log")
        self.hosts.append(self.host)
        return self.host

    def kill(self) -> None:
        if self.host is not None:
            self.host.kill()

    def restart(self) -> HostProcess:
        self.kill()
        return self.start()

    def trust(self, ca_file: str) -> None:
        """Add a stand-in's test CA to the host's bundle (read at the host's next start)."""
        bundle = Path(self.env["REGWARDEN_AZURE_CA_BUNDLE"])
        bundle.write_text(bundle.read_text() + Path(ca_file).read_text())

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.root.glob("host-*.log")))

    # -- the registry --------------------------------------------------------------------

    def client(self, user_agent: str | None = None) -> RegistryClient:
        """An OCI client on FakeAcr's `/v2/`, as `docker login` with a refresh token."""
        transport = DeadlineTransport(limits=httpx.Limits(), ca_file=self.acr.ca_file)
        creds = Credentials(username=TOKEN_USER, password=self.acr.mint_refresh_token())
        url = f"https://{self.acr.host}"
        if user_agent:
            return RegistryClient(
                url, credentials=creds, transport=transport, user_agent=user_agent
            )
        return RegistryClient(url, credentials=creds, transport=transport)

    def origin(self) -> RegistryClient:
        """The docker-registry itself, the fake out of the way."""
        return RegistryClient(self.registry.host)

    def provider(self) -> AcrRegistry:
        """ACR as a person's tools see it (`regwarden quarantine release` opens this)."""
        opts = ProviderOptions(credentials=self.acr.credential())
        return AcrRegistry(HOST, opts, env=self.acr.env(), sleep=lambda _s: None)

    def push_content(self, repository: str, tag: str, content: Content) -> tuple[str, list[Any]]:
        """`content` (an index with every platform: `skopeo copy --all`) pushed through the
        front as `repository:tag`: its digest and the events of its PUTs."""
        layout = self.root / uuid.uuid4().hex[:8]
        write_layout(layout, content, tag="t")
        since = len(self.acr.v2_requests)
        skopeo_copy(
            f"oci:{layout}:t",
            f"docker://{self.acr.host}/{repository}:{tag}",
            creds=(TOKEN_USER, self.acr.mint_refresh_token()),
        )
        return str(content.manifest_digest), self.events_since(since, "skopeo/1.13.3")

    def sign(self, repository: str, digest: str, fmt: str) -> list[dict[str, Any]]:
        """`regwarden sign --format FMT` of `repository@digest` (its code: sign_legacy or
        sign_bundle, then publish, under its User-Agent): the events of its PUTs."""
        since = len(self.acr.v2_requests)
        with self.client(SIGN_AGENT) as client:
            desc = client.head_manifest(repository, digest)
            assert desc is not None
            if fmt == "legacy":
                art = sign_legacy(
                    image_digest=digest, docker_reference=f"{HOST}/{repository}", key=self.key
                )
            else:
                subject = {"mediaType": desc.media_type, "digest": digest, "size": desc.size}
                art = sign_bundle(subject=subject, key=self.key, created=datetime.now(UTC))
            publish(client, repository, art)
        return self.events_since(since, SIGN_AGENT)

    def events_since(self, since: int, agent: str) -> list[dict[str, Any]]:
        """ImagePushed (Event Grid schema) for every manifest PUT the front answered 201
        from `acr.v2_requests[since:]`, in order."""
        out = []
        with self.origin() as origin:
            for seen in self.acr.v2_requests[since:]:
                if seen.method != "PUT" or seen.status != 201 or "/manifests/" not in seen.path:
                    continue
                name, _, ref = seen.path.removeprefix("/v2/").partition("/manifests/")
                desc = origin.head_manifest(name, ref)
                assert desc is not None, seen
                tag = None if ref.startswith("sha256:") else ref
                out.append(self.pushed(name, desc.digest, tag, desc.media_type, desc.size, agent))
        return out

    @staticmethod
    def pushed(
        repository: str,
        digest: str,
        tag: str | None,
        media_type: str,
        size: int,
        agent: str = "skopeo/1.13.3",
    ) -> dict[str, Any]:
        """ACR's ImagePushed for one manifest PUT, from the recorded sample."""
        event = copy.deepcopy(_SAMPLE)
        event["id"] = str(uuid.uuid4())
        event["subject"] = f"{repository}:{tag}" if tag else f"{repository}@{digest}"
        event["eventTime"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        data = event["data"]
        data["id"] = str(uuid.uuid4())
        data["timestamp"] = event["eventTime"]
        target = {"mediaType": media_type, "size": size, "digest": digest, "length": size}
        data["target"] = {**target, "repository": repository, **({"tag": tag} if tag else {})}
        data["request"].update({"id": str(uuid.uuid4()), "host": HOST, "useragent": agent})
        return dict(event)

    # -- delivery ------------------------------------------------------------------------

    def deliver(self, events: list[dict[str, Any]], *, function: str = "on_push") -> None:
        """Each event as its own delivery (Event Grid's default batch of one), in order;
        every one must be accepted."""
        assert self.host is not None
        for event in events:
            status, answer = self.host.eventgrid(function, [event])
            assert status == 200, (status, answer, self.log()[-4000:])

    # -- what happened ---------------------------------------------------------------------

    def alerts(self) -> list[dict[str, Any]]:
        """The CloudEvents published on the alerts topic."""
        return self.topic.events

    def ledger(self) -> Ledger:
        """The functions' ledger, opened here (an Azure Table one reaches this world's
        Azurite through the endpoints and key `azure_world` sets in this process too)."""
        return open_ledger(self.env["REGWARDEN_LEDGER"])

    def attributes(self, repository: str, digests: list[str]) -> dict[str, dict[str, bool]]:
        """FakeAcr's changeable attributes of each digest."""
        return {d: self.acr.attributes(repository, d) for d in digests}


def _ledger_url(root: Path, storage: Azurite) -> str:
    if "azuretable" in LEDGERS:
        return f"azuretable://{storage.account}?prefix=w{uuid.uuid4().hex[:8]}"
    return str(root / "ledger.db")


@contextmanager
def azure_world(
    registry: LocalRegistry, root: Path, policy: str, **settings: str
) -> Iterator[World]:
    """Every stand-in started, the policy in `root/policy.yaml` (`{hook}` there the
    webhook sink's URL; a cosign key pair beside it), the app settings in `World.env`
    (plus `settings`); the host not started (`World.start`)."""
    key = generate_private_key("ecdsa-p256")
    pem = key.public_key.pem
    (root / "cosign.pub").write_bytes(pem if isinstance(pem, bytes) else pem.encode())
    with ExitStack() as stack:
        sink = Sink()
        stack.callback(sink.close)
        (root / "policy.yaml").write_text(policy.replace("{hook}", sink.url))
        acr = stack.enter_context(FakeAcr(registry.host, login_server=HOST))
        topic = stack.enter_context(FakeEventGrid(token=acr.aad_token))
        storage = stack.enter_context(Azurite())
        bundle = root / "ca-bundle.pem"
        bundle.write_text(Path(acr.ca_file).read_text() + Path(topic.ca_file).read_text())
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(root),
            "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "shared"), str(ROOT / "tests")]),
            "AZURE_HOST_CWD": str(root),
            "AZURE_HOST_PRELOAD": "support.azure_identity",
            "AZURE_HOST_POLL_SECONDS": "0.2",
            "AZURE_TEST_AAD_TOKEN": acr.aad_token,
            "AzureWebJobsStorage": storage.connection_string,
            "REGWARDEN_POLICY": str(root / "policy.yaml"),
            "REGWARDEN_LEDGER": _ledger_url(root, storage),
            "REGWARDEN_ALERTS_TOPIC": ALERTS_TOPIC,
            "REGWARDEN_SCAN_SCHEDULE": "0 */5 * * * *",
            "REGWARDEN_RECOVERY_SCHEDULE": "0 */10 * * * *",
            "REGWARDEN_RETENTION_SCHEDULE": "0 0 3 * * *",
            "REGWARDEN_MAX_DEQUEUE": "5",
            **storage.env(),
            **acr.env(),
            **topic.env(),
            "REGWARDEN_AZURE_CA_BUNDLE": str(bundle),
            **settings,
        }
        from regwarden.rechecks import RECHECK_SCHEDULERS

        if "storagequeue" in RECHECK_SCHEDULERS:  # rechecks on the queue, when it has landed
            env.setdefault("REGWARDEN_STORAGE_ACCOUNT", storage.account)
        world = World(registry, acr, topic, storage, key, root, env, sink)
        saved = {k: os.environ.get(k) for k in storage.env()}
        os.environ.update(storage.env())  # this process opens the ledger too
        try:
            yield world
        finally:
            acr.unpark()
            for host in world.hosts:
                host.kill()
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
