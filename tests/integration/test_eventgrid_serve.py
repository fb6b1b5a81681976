"""`regwarden serve` taking ACR's events from Event Grid at `/events/eventgrid`, as a real
process over real HTTP: the subscription handshakes answered (a validation event, the
CloudEvents OPTIONS request) without credentials, every delivery only with them (Event
Grid sends the token as a secret delivery property), and a push judged by the worker on
a real local registry."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.gate import TOKEN
from support.registries import PushImage
from support.streams import Serve

from regwarden.devtools import LocalRegistry, free_port

pytestmark = pytest.mark.integration

EVENTS = Path(__file__).resolve().parents[2] / "events" / "azure"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CODE = "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory, registry: LocalRegistry) -> Iterator[Serve]:
    root = tmp_path_factory.mktemp("eventgrid-serve")
    policy = root / "regwarden.yaml"
    policy.write_text(
        "apiVersion: regwarden/v1\nkind: Policy\nrepositories:\n  - {match: 't/**', team: t}\n"
    )
    proc = Serve.start(root, policy, free_port(), workers=1, registries=[registry.host])
    try:
        yield proc
    finally:
        proc.stop()
    log = proc.log.read_text(errors="replace")
    assert "Traceback" not in log, log


def _url(serve: Serve, source: str = "eventgrid") -> str:
    return f"{serve.url}/events/{source}"


def _queued(serve: Serve) -> int:
    with sqlite3.connect(serve.ledger_path) as db:
        (count,) = db.execute("SELECT count(*) FROM queue").fetchone()
    return int(count)


def _verdicts(serve: Serve) -> list[tuple[Any, ...]]:
    with sqlite3.connect(serve.ledger_path) as db:
        return db.execute("SELECT delivery_id, digest, outcome FROM verdict_log").fetchall()


def _push_event(host: str, repo: str, digest: str, event_id: str) -> list[dict[str, Any]]:
    doc = json.loads((EVENTS / "eventgrid-image-pushed.json").read_bytes())
    doc[0]["id"] = event_id
    doc[0]["data"]["target"].update(repository=repo, digest=digest, tag="1.0.0")
    doc[0]["data"]["request"]["host"] = host
    return list(doc)


def test_the_validation_event_is_answered_without_credentials(serve: Serve) -> None:
    before = _queued(serve)
    body = (EVENTS / "eventgrid-validation.json").read_bytes()
    response = httpx.post(_url(serve), content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json() == {"validationResponse": CODE}
    # with them too; and it is never queued as a delivery
    assert httpx.post(_url(serve), content=body, headers=AUTH).json() == {
        "validationResponse": CODE
    }
    assert _queued(serve) == before


def test_the_cloudevents_abuse_protection_request_is_allowed(serve: Serve) -> None:
    origin = {"WebHook-Request-Origin": "eventgrid.azure.net"}
    response = httpx.options(_url(serve), headers=origin)
    assert response.status_code == 200
    assert response.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert response.headers["WebHook-Allowed-Rate"] == "*"
    # no origin, or a source that does not handshake: nothing to allow
    assert httpx.options(_url(serve)).status_code == 405
    assert httpx.options(_url(serve, "distribution"), headers=origin).status_code == 405
    bad = httpx.options(_url(serve), headers={"WebHook-Request-Origin": "a b"})
    assert bad.status_code == 400


def test_a_delivery_without_credentials_is_refused_and_never_queued(
    serve: Serve, registry: LocalRegistry
) -> None:
    before = _queued(serve)
    body = json.dumps(_push_event(registry.host, "t/app", "sha256:" + "a" * 64, "no-auth"))
    assert httpx.post(_url(serve), content=body).status_code == 401
    wrong = {"Authorization": "Bearer not-the-token"}
    assert httpx.post(_url(serve), content=body, headers=wrong).status_code == 401
    # a big body from a caller without credentials is read no further than a handshake's
    big = b"[" + b" " * (128 << 10) + b"]"
    assert httpx.post(_url(serve), content=big).status_code == 401
    assert _queued(serve) == before


def test_a_malformed_validation_event_is_a_400(serve: Serve) -> None:
    doc = json.loads((EVENTS / "eventgrid-validation.json").read_bytes())
    del doc[0]["data"]["validationCode"]
    response = httpx.post(_url(serve), content=json.dumps(doc))
    assert response.status_code == 400
    assert "validationCode" in response.json()["error"]


def test_a_push_with_credentials_is_queued_and_judged(
    serve: Serve, registry: LocalRegistry, repo: str, push: PushImage
) -> None:
    image = push(repo, "1.0.0", seed=91)
    digest = image.manifest_digest
    grid = _push_event(registry.host, repo, digest, "grid-push-1")
    response = httpx.post(_url(serve), content=json.dumps(grid), headers=AUTH)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 1
    # the same push as a CloudEvent, structured mode
    cloud = json.loads((EVENTS / "cloudevent-image-pushed.json").read_bytes())
    cloud["id"] = "cloud-push-1"
    cloud["data"] = grid[0]["data"]
    headers = {**AUTH, "Content-Type": "application/cloudevents+json; charset=utf-8"}
    response = httpx.post(_url(serve), content=json.dumps(cloud), headers=headers)
    assert response.status_code == 202, response.text
    deadline = time.monotonic() + 30
    while len(_verdicts(serve)) < 2:
        assert time.monotonic() < deadline, serve.log.read_text(errors="replace")
        time.sleep(0.1)
    assert sorted(_verdicts(serve)) == [
        ("eventgrid:cloud-push-1", digest, "PASSED"),
        ("eventgrid:grid-push-1", digest, "PASSED"),
    ]


def test_an_event_for_an_unconfigured_registry_is_a_400(serve: Serve) -> None:
    body = json.dumps(_push_event("other.azurecr.io", "t/app", "sha256:" + "b" * 64, "other"))
    response = httpx.post(_url(serve), content=body, headers=AUTH)
    assert response.status_code == 400
    assert "other.azurecr.io" in response.json()["error"]
