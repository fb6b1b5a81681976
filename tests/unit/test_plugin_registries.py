"""Alert channels, intake parsers and in-use inventories are plug-in registries: a test
registers a stand-in (and removes it after) and the core uses it with no edit; an unknown
name is a usage error listing the valid ones."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest
from pydantic import BaseModel, ConfigDict
from starlette.testclient import TestClient

from regwarden.errors import IntakeError, NotImplementedYet, UsageError
from regwarden.intake import PARSERS, EventParser
from regwarden.intake.eventbridge import parse_eventbridge
from regwarden.model import EventKind, ImageEvent, Outcome, Severity
from regwarden.notify import (
    CHANNELS,
    Alert,
    ChannelContext,
    EventGridChannel,
    PubSubChannel,
    StreamChannel,
    build_channels,
)
from regwarden.plugins import PluginRegistry
from regwarden.policy import Inventory, Location, Policy, load_policy_text, secret_env_var
from regwarden.receiver import CallerAuthenticator, create_app
from regwarden.reference import ImageRef
from regwarden.retention import (
    INVENTORIES,
    InUse,
    InventoryContext,
    InventoryReader,
    gather_in_use,
)
from regwarden.service import detect_source, parse_body, receiver_validators
from regwarden.store import SqliteLedger

T = TypeVar("T")
EVENTS = Path(__file__).resolve().parents[2] / "events"
DIGEST = "sha256:" + "c" * 64
HOST = "quay.example.com"


@contextmanager
def registered(registry: PluginRegistry[T], name: str, factory: T) -> Iterator[T]:
    """`factory` under `name` for the block; removed after, whatever happens."""
    registry.add(name, factory)
    try:
        yield factory
    finally:
        registry.unregister(name)


def _policy(text: str, base_dir: Path) -> Policy:
    head = "apiVersion: regwarden/v1\nkind: Policy\n"
    return load_policy_text(head + text, source=str(base_dir / "p.yaml"), base_dir=base_dir)


def _alert() -> Alert:
    return Alert(
        time=datetime(2026, 11, 27, 12, tzinfo=UTC),
        image=ImageRef.parse(f"127.0.0.1:5000/payments/api@{DIGEST}"),
        team="payments",
        outcome=Outcome.FAILED,
        severity=Severity.HIGH,
        action="quarantine",
        summary="unsigned",
    )


# -- alert channels -------------------------------------------------------------------------------


@dataclass(frozen=True)
class PigeonConfig:
    """A channel model the policy schema does not know (a plug-in brings its own)."""

    type: str
    loft: Location


@dataclass
class Pigeon:
    name: str
    loft: str
    sent: list[Alert] = field(default_factory=list)

    def send(self, alert: Alert) -> None:
        self.sent.append(alert)


def _pigeon(name: str, config: PigeonConfig, context: ChannelContext) -> Pigeon:
    return Pigeon(name, context.value(config.loft))


def _with_pigeon(policy: Policy) -> Policy:
    channels = {
        **policy.notifications.channels,
        "birds": PigeonConfig("pigeon", Location.parse("secret://loft")),
    }
    notifications = policy.notifications.model_copy(update={"channels": channels})
    return policy.model_copy(update={"notifications": notifications})


def test_a_registered_channel_type_is_built_with_its_secret_resolved(tmp_path: Path) -> None:
    policy = _with_pigeon(_policy("notifications: {channels: {ops: {type: stdout}}}", tmp_path))
    env = {secret_env_var("loft"): "north-tower"}
    with registered(CHANNELS, "pigeon", _pigeon):
        built = build_channels(policy, env)
        bird = built["birds"]
        assert isinstance(bird, Pigeon)
        assert (bird.name, bird.loft) == ("birds", "north-tower")
        bird.send(_alert())
        assert len(bird.sent) == 1
        assert isinstance(built["ops"], StreamChannel)  # the built-in types are untouched
        with pytest.raises(UsageError, match="REGWARDEN_SECRET_LOFT"):
            build_channels(policy, {})  # secret:// resolution is the core's, as for slack
    assert "pigeon" not in CHANNELS
    # Unregistered, the type is one this runtime cannot deliver: it says so per alert.
    unsupported = build_channels(policy, env)["birds"]
    with pytest.raises(NotImplementedYet, match="'birds': pigeon delivery is not available"):
        unsupported.send(_alert())


def test_an_unknown_channel_type_lists_the_registered_ones() -> None:
    with pytest.raises(
        UsageError,
        match=r"unknown channel type 'pigeon'; valid: eventgrid, file, pubsub, slack, sns, "
        r"stdout, ",
    ):
        CHANNELS.get("pigeon")


def test_the_cloud_channels_build_without_reaching_their_clouds(tmp_path: Path) -> None:
    policy = _policy(
        "notifications:\n  channels:\n"
        "    gcp: {type: pubsub, topic: projects/my-project/topics/alerts}\n"
        "    azure: {type: eventgrid, endpoint: 'https://t.westeurope-1.eventgrid.azure.net/api/events'}\n"
        "    file: {type: file, path: alerts.jsonl}\n",
        tmp_path,
    )
    built = build_channels(policy, {})
    # Event Grid is delivered since the Azure issue (tests/integration/test_eventgrid_channel.py)
    assert isinstance(built["azure"], EventGridChannel)
    assert built["azure"].url == "https://t.westeurope-1.eventgrid.azure.net/api/events"
    # Pub/Sub is delivered since the Google Cloud issue (tests/unit/test_notify_pubsub.py)
    assert isinstance(built["gcp"], PubSubChannel)
    assert built["gcp"].topic == "projects/my-project/topics/alerts"
    built["file"].send(_alert())  # relative to the policy file's directory
    assert json.loads((tmp_path / "alerts.jsonl").read_text())["team"] == "payments"


# -- intake parsers -------------------------------------------------------------------------------


def _quay_parse(body: bytes, content_type: str | None) -> list[ImageEvent]:
    doc = json.loads(body)
    if not isinstance(doc, dict) or "quay_push" not in doc:
        raise IntakeError("expected a Quay push")
    return [
        ImageEvent(
            kind=EventKind.PUSHED,
            source="quay",
            image=ImageRef.parse(f"{HOST}/{doc['quay_push']}@{DIGEST}"),
            time=datetime(2026, 11, 27, 12, tzinfo=UTC),
            delivery_id=str(doc["id"]),
        )
    ]


QUAY = EventParser(
    _quay_parse,
    lambda doc: isinstance(doc, dict) and "quay_push" in doc,
    "a Quay notification",
)
QUAY_BODY = json.dumps({"quay_push": "team/api", "id": "q-1"}).encode()


def test_a_registered_source_is_parsed_detected_and_received(tmp_path: Path) -> None:
    with registered(PARSERS, "quay", QUAY):
        assert detect_source(QUAY_BODY) == "quay"
        (event,) = parse_body("quay", QUAY_BODY, "application/json")
        assert (event.source, str(event.image)) == ("quay", f"{HOST}/team/api@{DIGEST}")
        with pytest.raises(IntakeError, match=r"cannot tell the event source: .*a Quay notif"):
            detect_source(b'{"something": "else"}')
        ledger = SqliteLedger(tmp_path / "queue.db")
        try:
            app = create_app(
                ledger=ledger,
                auth=CallerAuthenticator(["t0ken"]),
                validators=receiver_validators(),
            )
            resp = TestClient(app).post(
                "/events/quay", content=QUAY_BODY, headers={"Authorization": "Bearer t0ken"}
            )
            assert resp.status_code == 202, resp.text
            assert resp.json()["accepted"] == 1
            assert ledger.pending_count() == 1
        finally:
            ledger.close()
    assert "quay" not in PARSERS
    assert "quay" not in receiver_validators()
    with pytest.raises(IntakeError, match="unknown event source 'quay'; valid: distribution, "):
        parse_body("quay", QUAY_BODY, None)
    with pytest.raises(IntakeError, match="cannot tell the event source"):
        detect_source(QUAY_BODY)


def test_an_unknown_source_lists_the_registered_ones() -> None:
    with pytest.raises(
        UsageError,
        match=r"unknown event source 'quay'; valid: "
        r"distribution, eventbridge, eventgrid, gcr, harbor",
    ):
        PARSERS.get("quay")


def test_the_receiver_takes_the_webhook_sources_only() -> None:
    # EventBridge events arrive through SQS, never at /events/<source>.
    assert sorted(receiver_validators()) == ["distribution", "eventgrid", "harbor"]


@pytest.mark.parametrize(
    ("path", "source"),
    [
        ("aws/ecr-image-push.json", "eventbridge"),
        ("aws/inspector2-scan.json", "eventbridge"),
        ("harbor/push-artifact.json", "harbor"),
        ("harbor/harbor-cloudevents-push.json", "harbor"),
    ],
)
def test_each_sample_is_detected_and_parsed_by_its_source(path: str, source: str) -> None:
    body = (EVENTS / path).read_bytes()
    assert detect_source(body) == source
    events = parse_body(source, body, "application/json")
    assert events
    if source == "eventbridge":
        assert events == parse_eventbridge(json.loads(body))


def test_a_distribution_envelope_is_detected_first() -> None:
    # A document carrying several sources' markers goes to the first by name, as before.
    assert detect_source(b'{"events": [], "detail-type": "x", "event_data": {}}') == "distribution"
    assert detect_source(b'{"detail-type": "x", "specversion": "1.0"}') == "eventbridge"


def test_an_eventbridge_file_that_is_not_json_is_an_intake_error() -> None:
    with pytest.raises(IntakeError, match="EventBridge event is not JSON"):
        parse_body("eventbridge", b"{nope", None)


# -- in-use inventories ----------------------------------------------------------------------------


class CmdbInventory(BaseModel):
    """A plug-in's own `inventory.cmdb` section."""

    model_config = ConfigDict(frozen=True)
    service: str


class InventoryWithCmdb(Inventory):
    cmdb: CmdbInventory | None = None


def _cmdb(section: CmdbInventory, context: InventoryContext) -> InUse:
    ref = ImageRef.parse(f"{HOST}/{section.service}:prod")
    return InUse(refs=(ref,), sources={f"cmdb:{section.service}": 1})


def test_a_registered_inventory_is_read_after_the_files(tmp_path: Path) -> None:
    (tmp_path / "in-use.txt").write_text(f"{HOST}/team/web:1.0\n")
    inventory = InventoryWithCmdb(
        files=(Location.parse("file://in-use.txt"),), cmdb=CmdbInventory(service="team/api")
    )
    with registered(INVENTORIES, "cmdb", _cmdb):
        found = gather_in_use(inventory, base_dir=tmp_path)
    assert [str(r) for r in found.refs] == [f"{HOST}/team/web:1.0", f"{HOST}/team/api:prod"]
    assert list(found.sources.items()) == [("file://in-use.txt", 1), ("cmdb:team/api", 1)]
    assert "cmdb" not in INVENTORIES
    valid = "aks, aws, cloudrun, containerapps, files, kubernetes"
    with pytest.raises(UsageError, match=rf"unknown inventory source 'cmdb'; valid: {valid}"):
        gather_in_use(inventory, base_dir=tmp_path)  # fail closed: never silently skipped


@contextmanager
def replaced(registry: PluginRegistry[T], name: str, factory: T) -> Iterator[None]:
    original = registry.unregister(name)
    try:
        with registered(registry, name, factory):
            yield
    finally:
        registry.add(name, original)


def test_the_policy_sources_are_read_files_kubernetes_aws_in_that_order(tmp_path: Path) -> None:
    """The order `plan` prints where in-use references came from stays what it was."""
    (tmp_path / "in-use.txt").write_text(f"{HOST}/team/web:1.0\n")
    policy = _policy(
        "inventory:\n  aws: {regions: [eu-west-1]}\n  kubernetes: {contexts: [prod]}\n"
        "  files: ['file://in-use.txt']\n",
        tmp_path,
    )
    seen: list[object] = []
    originals = (INVENTORIES.get("kubernetes"), INVENTORIES.get("aws"))

    def fake(label: str) -> InventoryReader:
        def read(section: object, context: InventoryContext) -> InUse:
            seen.append(section)
            return InUse(refs=(ImageRef.parse(f"{HOST}/{label}:1"),), sources={label: 1})

        return read

    with (
        replaced(INVENTORIES, "kubernetes", fake("k8s")),
        replaced(INVENTORIES, "aws", fake("aws")),
    ):
        found = gather_in_use(policy.inventory, base_dir=tmp_path)
    assert list(found.sources) == ["file://in-use.txt", "k8s", "aws"]
    assert seen == [policy.inventory.kubernetes, policy.inventory.aws]
    assert (INVENTORIES.get("kubernetes"), INVENTORIES.get("aws")) == originals  # restored
