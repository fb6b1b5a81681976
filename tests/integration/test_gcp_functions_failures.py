"""Failed deliveries of the GCP functions noted in the Firestore ledger, so an operator
sees why a message was dead-lettered (as the AWS functions note failed records).

Driven like `test_gcp_functions.py` (`support.gcp_harness`: functions-framework's app, the
real docker-registry behind FakeGar, the Google clients on REST at the stand-ins), with
the ledger in `FakeFirestore`. The note is read back the way an operator finds it from a
dead letter: Pub/Sub forwards the message with a new message id, its data unchanged, so
the key is `sha256:` of the data.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Iterator
from datetime import timedelta

import pytest
from support import fake_firestore as firestore_support
from support import gcp_harness
from support.fake_firestore import FakeFirestore
from support.gcp_harness import PROJECT, T0, Gcp, image

from functions.gcp._failures import FAILURE_TTL
from regwarden.store import FirestoreLedger

fake_firestore = firestore_support.fake_firestore
gcp = gcp_harness.gcp

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(shutil.which("skopeo") is None, reason="needs skopeo"),
]

POLICY = f"""\
apiVersion: regwarden/v1
kind: Policy
registries:
  - {{host: us-docker.pkg.dev, kind: gar}}
defaults:
  mode: enforce
  quarantine: {{strategy: retag}}
repositories:
  - match: "{PROJECT}/signed/**"
    team: alpha
    signatures: {{required: true, cosign: {{keys: ["file://cosign.pub"]}}, gracePeriod: 0s}}
notifications:
  channels:
    hook: {{type: webhook, url: "secret://hook-url", secret: "secret://hmac"}}
    alerts: {{type: pubsub, topic: "{gcp_harness.ALERTS}"}}
  routes:
    - {{match: {{team: alpha}}, to: [hook]}}
    - {{to: [alerts]}}
"""


@pytest.fixture
def gcp_policy() -> str:
    return POLICY


@pytest.fixture
def ledger(gcp: Gcp, fake_firestore: FakeFirestore) -> Iterator[FirestoreLedger]:
    """The functions' ledger in FakeFirestore, and a reader of it."""
    gcp.setenv("REGWARDEN_LEDGER", f"firestore://{PROJECT}?prefix=fn")
    reader = FirestoreLedger(PROJECT, prefix="fn")
    yield reader
    reader.close()


def letter_key(data: bytes) -> str:
    """What a dead letter's data gives an operator: the note's key."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_a_failed_push_is_noted_with_its_error_and_a_later_failure_supersedes_it(
    gcp: Gcp, ledger: FirestoreLedger
) -> None:
    repo = image("signed")
    digest = gcp.push(repo, "1.0.0", seed=731)
    push = gcp.gcr_for(repo, "1.0.0")
    tag = r".*/packages/[^/]+/tags/1\.0\.0"
    gcp.gar.fail_next("DELETE", tag, 500, times=2)  # the quarantine's retag fails twice

    first_at = T0 + timedelta(minutes=1)
    status, answer = gcp.deliver("on_push", push, mode="push", attempt=1)

    assert status == 500, answer
    note = ledger.failure("on_push", letter_key(push["data"]))
    assert note is not None and note.failures == 1
    assert note.first_error == note.last_error
    assert note.first_error.startswith(f"message {push['messageId']}: ")
    assert "500" in note.first_error and answer["error"] in note.first_error
    assert note.first_at == note.last_at == first_at
    assert ledger.failure("on_scan", letter_key(push["data"])) is None  # its function's only

    later = T0 + timedelta(minutes=3)
    gcp.at(later)
    status, _ = gcp.deliver("on_push", push, mode="binary")

    assert status == 500
    again = ledger.failure("on_push", letter_key(push["data"]))
    assert again is not None and again.failures == 2
    assert (again.first_error, again.first_at) == (note.first_error, first_at)
    assert again.last_at == later

    # the third attempt succeeds (the intent resumed): the note stays as it was, as on AWS
    # (a message that succeeded is no dead letter; the note goes with its TTL)
    gcp.at(later + timedelta(minutes=1))
    status, done = gcp.deliver("on_push", push, mode="structured")

    assert status == 200, done
    (result,) = done["results"]
    assert result["verdict"] == "FAILED" and any(
        a.startswith("quarantine") for a in result["actions"]
    )
    assert ledger.quarantined("us-docker.pkg.dev", repo, digest) is not None
    kept = ledger.failure("on_push", letter_key(push["data"]))
    assert kept is not None and kept.failures == 2 and kept.last_at == later
    assert timedelta(days=7 + 31) == FAILURE_TTL  # the push and dead-letter retentions


def test_a_malformed_message_is_noted_with_the_intake_error(
    gcp: Gcp, ledger: FirestoreLedger
) -> None:
    message = {
        "data": b'{"action": "UPSERT"}',
        "messageId": "4242",
        "publishTime": "2026-01-01T00:00:00Z",
        "topic": gcp_harness.TOPICS["on_push"],
    }

    status, answer = gcp.deliver("on_push", message, mode="structured")

    assert status == 400, answer
    note = ledger.failure("on_push", letter_key(message["data"]))
    assert note is not None and note.failures == 1
    assert note.last_error.startswith("message 4242: IntakeError: ")
    assert answer["error"] in note.last_error


def test_a_notify_delivery_refused_by_its_channel_is_noted(
    gcp: Gcp, ledger: FirestoreLedger
) -> None:
    repo = image("signed")
    gcp.push(repo, "2.0.0", seed=732)
    assert gcp.deliver("on_push", gcp.gcr_for(repo, "2.0.0"))[0] == 200
    (alert,) = gcp.alerts()
    gcp.sink.status = 403  # the team's webhook refuses it: permanent, not retried here

    status, answer = gcp.deliver("notify", {**alert, "topic": gcp_harness.ALERTS})

    assert status == 500, answer
    data = alert["data"] if isinstance(alert["data"], bytes) else alert["data"].encode()
    note = ledger.failure("notify", letter_key(data))
    assert note is not None and note.failures == 1
    assert "delivery failed on hook" in note.last_error and answer["error"] in note.last_error
    assert json.loads(data)["image"].startswith("us-docker.pkg.dev/")
