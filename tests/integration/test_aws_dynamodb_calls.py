"""The DynamoDB calls of one gated push (issue #12 item 8): the `on_push` handler on moto,
the cold-start bench's path (a push whose scan has not finished: PENDING, held by retag,
alerted), every call counted by operation. Each call costs a Lambda a round trip and
botocore's serialise/sign/parse work, so a call added anywhere (the idempotency layer, the
pipeline's ledger reads and writes, the quarantine's progress, the outcome's commit) shows
here first; the list in the message says which."""

from __future__ import annotations

import json
import shutil
import uuid
from collections import Counter
from typing import Any

import pytest
from support import aws_gate
from support import moto_server as support
from support.aws_gate import Aws

from regwarden.devtools import make_image
from regwarden.reference import short_digest

moto_server = support.moto_server
moto = support.moto
ecr_proxy = support.ecr_proxy
local = aws_gate.local
aws = aws_gate.aws

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("docker-registry") is None, reason="needs the docker-registry binary"
    ),
]

FIRST_RECORD = {
    # Powertools' idempotency record (in progress), the tag row (conditional: its first
    # sighting wins), the quarantine intent (conditional: answers with the record), the
    # quarantine record
    "PutItem": 4,
    # the delivery's committed outcome, the quarantine intent (read once: the pipeline
    # passes it to the action), the digest's quarantine record
    "GetItem": 3,
    # the tags the ledger holds for the digest with the pushed tag's history (moved tag),
    # one query of the repository's tag rows; the tag's history again for the roll-back
    # targets
    "Query": 2,
    # first-seen time (answering it too), the intent's progress (tagged with its roll-back
    # plan, before the tag is moved; then done), the alert sent, Powertools' record
    # completed
    "UpdateItem": 5,
    # verdict, verdict log, delivery marker and outbox: the delivery's outcome, at once
    "TransactWriteItems": 1,
}
REDELIVERY = {"PutItem": 1}
"""The same event again: Powertools' conditional put answers with the completed record."""


@pytest.fixture
def aws_policy() -> str:
    return """\
apiVersion: regwarden/v1
kind: Policy
defaults:
  mode: enforce
  quarantine: {{strategy: retag}}
repositories:
  - match: "bench/**"
    team: bench
    vulnerabilities: {{maxSeverity: high, sources: [ecr], scanTimeout: 30m}}
notifications:
  channels:
    alerts-topic: {{type: sns, topicArn: "{topic}"}}
  routes:
    - {{match: {{action: [quarantine]}}, to: [alerts-topic]}}
"""


def _item(params: dict[str, Any]) -> str:
    """`pk | sk` of a call's item, a transaction's sort keys, a query's key condition."""
    if "TransactItems" in params:
        return ", ".join(
            next(iter(op.values())).get("Item", {}).get("sk", {}).get("S", "?")[:24]
            for op in params["TransactItems"]
        )
    key = params.get("Key") or params.get("Item") or {}
    if key:
        return f"{key['pk']['S']} | {key['sk']['S']}"
    values = params.get("ExpressionAttributeValues") or {}
    return " ".join(str(v.get("S", v)) for v in values.values())


def test_one_gated_push_makes_exactly_these_dynamodb_calls(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    from botocore.session import Session as BotocoreSession

    import functions.aws.on_push  # noqa: F401  # the module import makes no DynamoDB call

    repo = "bench/app"
    aws.repository(repo)
    digest = aws.push(repo, make_image(seed=1212), "1.0.0")
    sample = aws.sample("ecr-image-push.json", repository=repo, digest=digest, tag="1.0.0")
    body = json.dumps(sample)
    monkeypatch.setenv("AWS_REGWARDEN_TEST_RUN", uuid.uuid4().hex)  # fresh clients, hooked
    calls: list[tuple[str, str]] = []
    create = BotocoreSession.create_client

    def record(model: Any, params: dict[str, Any], **_: Any) -> None:
        calls.append((model.name, _item(params)))

    def created(self: Any, service_name: str, *args: Any, **kwargs: Any) -> Any:
        client = create(self, service_name, *args, **kwargs)
        if service_name == "dynamodb":
            # once per API call (its retries are not calls), with the call's own parameters
            client.meta.events.register("before-parameter-build.dynamodb", record)
        return client

    monkeypatch.setattr(BotocoreSession, "create_client", created)

    assert aws.invoke("on_push", aws.sqs_event(body)) == {"batchItemFailures": []}
    first = list(calls)
    assert aws.tags(repo, digest) == [f"quarantined-{short_digest(digest)}"]  # held: PENDING
    (alert,) = aws.drain("notify")  # the alert went to the topic: its outbox row was sent
    assert json.loads(alert["Body"])["action"] == "quarantine"

    listing = "\n".join(f"{op:20} {item}" for op, item in first)
    assert len(first) == sum(FIRST_RECORD.values()), listing
    assert Counter(op for op, _ in first) == FIRST_RECORD, listing

    calls.clear()
    assert aws.invoke("on_push", aws.sqs_event(body)) == {"batchItemFailures": []}
    assert Counter(op for op, _ in calls) == REDELIVERY, calls
