"""The receiver stores only what the pipeline would act on: regwarden's own reads and
writes, quarantine events, deletes and pulls (the access monitor's: see
test_receiver_access.py) are acknowledged and dropped before the queue."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from regwarden import USER_AGENT
from regwarden.pipeline import Pipeline
from regwarden.receiver import CallerAuthenticator, create_app
from regwarden.runtime import load_runtime
from regwarden.service import count_events, parse_body, receiver_validators
from regwarden.store import SqliteLedger

DIGEST = "sha256:" + "ab" * 32
POLICY = """\
apiVersion: regwarden/v1
kind: Policy
repositories:
  - match: "team/**"
    team: team
"""


def _event(
    action: str, repository: str, user_agent: str, *, tag: str | None = "v1"
) -> dict[str, Any]:
    target: dict[str, Any] = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": DIGEST,
        "size": 500,
        "repository": repository,
    }
    if tag:
        target["tag"] = tag
    return {
        "id": f"{action}-{repository}-{user_agent}",
        "timestamp": "2026-11-27T10:00:00Z",
        "action": action,
        "target": target,
        "request": {"method": "GET", "useragent": user_agent, "host": "127.0.0.1:5000"},
        "actor": {"name": "ci"},
    }


def _body(*events: dict[str, Any]) -> bytes:
    return json.dumps({"events": list(events)}).encode()


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    (tmp_path / "regwarden.yaml").write_text(POLICY)
    runtime = load_runtime(tmp_path / "regwarden.yaml", ledger=tmp_path / "ledger.db")
    try:
        yield runtime.pipeline()
    finally:
        runtime.close()


OWN = f"{USER_AGENT} (gate)"
ORDINARY = [
    _event("push", "team/app", "containers/5.23.1"),
]
IGNORED = [
    _event("pull", "team/app", "containerd/v1.7.13"),  # a deployment: the access monitor's
    _event("pull", "team/app", OWN),  # regwarden reading the image to judge it
    _event("push", "quarantine/team/app", OWN, tag="quarantined-abababababab"),
    _event("push", "quarantine/team/app", "containers/5.23.1"),  # by hand, still quarantine
    _event("delete", "team/app", OWN, tag=None),
    _event("delete", "team/app", "containers/5.23.1", tag=None),
]


def test_wants_keeps_ordinary_events_and_drops_the_rest(pipeline: Pipeline) -> None:
    kept = [e for e in parse_body("distribution", _body(*ORDINARY), None) if pipeline.wants(e)]
    assert [(e.kind.name, e.image.repository) for e in kept] == [("PUSHED", "team/app")]
    dropped = parse_body("distribution", _body(*IGNORED), None)
    assert len(dropped) == len(IGNORED)  # all parse; none is wanted
    assert not any(pipeline.wants(e) for e in dropped)


def test_count_events_counts_only_wanted_events(pipeline: Pipeline) -> None:
    body = _body(*IGNORED, *ORDINARY)
    assert count_events("distribution")(body, None) == len(IGNORED) + len(ORDINARY)
    assert count_events("distribution", pipeline.wants)(body, None) == len(ORDINARY)


def test_receiver_acknowledges_but_does_not_store_ignored_deliveries(
    pipeline: Pipeline, tmp_path: Path
) -> None:
    ledger = SqliteLedger(tmp_path / "queue.db")
    app = create_app(
        ledger=ledger,
        auth=CallerAuthenticator(["t0ken"]),
        validators=receiver_validators(pipeline.wants),
    )
    client = TestClient(app)
    headers = {"Authorization": "Bearer t0ken"}
    resp = client.post("/events/distribution", content=_body(*IGNORED), headers=headers)
    assert resp.status_code == 202
    assert resp.json() == {"accepted": 0}
    assert ledger.pending_count() == 0
    resp = client.post(
        "/events/distribution", content=_body(IGNORED[0], ORDINARY[0]), headers=headers
    )
    assert resp.status_code == 202
    assert resp.json()["accepted"] == 1
    assert ledger.pending_count() == 1  # stored whole; the pipeline skips the rest again
    resp = client.post("/events/distribution", content=b"{nope", headers=headers)
    assert resp.status_code == 400  # filtering never hides a malformed body


def test_the_pipeline_leaves_pulls_to_the_access_monitor(pipeline: Pipeline) -> None:
    (pull,) = parse_body("distribution", _body(IGNORED[0]), None)
    handled = pipeline.handle(pull, now=pull.time)
    assert handled.ignored == "pull: the access monitor records it"
    ledger = pipeline.ledger
    assert ledger.pull_tallies("127.0.0.1:5000", "team/app") == []
    assert ledger.image_times("127.0.0.1:5000", "team/app") == {}
