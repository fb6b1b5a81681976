"""A cold start's AWS clients (issue #12 item 8): the first record of `on_push` makes every
client it calls through (policy, ledger, idempotency, ECR, alerts topic, recheck queue)
from one boto3 session, so the endpoint rules and each service model load once."""

from __future__ import annotations

import json
import shutil
import uuid
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


def test_the_first_record_makes_every_client_from_one_session(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    import boto3
    from botocore.session import Session as BotocoreSession

    import functions.aws.on_push  # noqa: F401  # module import (X-Ray's own clients) first

    repo = "bench/app"
    aws.repository(repo)
    digest = aws.push(repo, make_image(seed=812), "1.0.0")
    sample = aws.sample("ecr-image-push.json", repository=repo, digest=digest, tag="1.0.0")
    push = aws.sqs_event(json.dumps(sample))
    monkeypatch.setenv("AWS_REGWARDEN_TEST_RUN", uuid.uuid4().hex)  # no session from before
    sessions: list[object] = []
    services: list[str] = []
    init, create = boto3.session.Session.__init__, BotocoreSession.create_client

    def counted(self: Any, *args: Any, **kwargs: Any) -> None:
        sessions.append(self)
        init(self, *args, **kwargs)

    def created(self: Any, service_name: str, *args: Any, **kwargs: Any) -> Any:
        services.append(service_name)
        return create(self, service_name, *args, **kwargs)

    monkeypatch.setattr(boto3.session.Session, "__init__", counted)
    monkeypatch.setattr(BotocoreSession, "create_client", created)

    assert aws.invoke("on_push", push) == {"batchItemFailures": []}
    assert aws.tags(repo, digest) == [f"quarantined-{short_digest(digest)}"]  # held: PENDING
    # the policy (S3), the ledger and Powertools' idempotency records (DynamoDB), ECR (its
    # client, and the one without retries that starts the scan), the alerts topic, the
    # recheck queue: one session for all of them
    assert sorted(services) == ["dynamodb", "dynamodb", "ecr", "ecr", "s3", "sns", "sqs"]
    assert len(sessions) == 1
