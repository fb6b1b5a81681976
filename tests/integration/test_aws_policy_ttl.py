"""A warm AWS function looks at its policy and secrets again after `REGWARDEN_POLICY_TTL`:
a changed policy judges the next event, a rotated channel secret reaches the next alert,
an unchanged one rebuilds nothing; metrics carry no repository dimension."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime

import pytest
from support import aws_gate
from support import moto_server as support
from support.aws_gate import BUCKET, HMAC_KEY, Aws
from support.moto_server import REGISTRY_HOST

from regwarden.devtools import make_image
from regwarden.notify import verify_signature

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

POLICY = """\
apiVersion: regwarden/v1
kind: Policy
defaults:
  mode: enforce
  quarantine: {{strategy: retag}}
repositories:
  - match: "apps/**"
    team: alpha
    tags: {{pattern: semver}}
notifications:
  channels:
    hook: {{type: webhook, url: "secret://regwarden/hook-url", secret: "secret://regwarden/hmac"}}
    alerts-topic: {{type: sns, topicArn: "{topic}"}}
  routes:
    - {{match: {{team: alpha}}, to: [hook]}}
"""


@pytest.fixture
def aws_policy() -> str:
    return POLICY


def _judge(aws: Aws, repo: str, seed: int, tag: str) -> str | None:
    aws.repository(repo)
    digest = aws.push(repo, make_image(seed=seed), tag)
    event = aws.sample("ecr-image-push.json", repository=repo, digest=digest, tag=tag)
    assert aws.gate("on_push", event) == {"batchItemFailures": []}
    return aws.ledger().last_verdict(REGISTRY_HOST, repo, digest)


def _policy_text(aws: Aws) -> str:
    s3 = aws.moto.client("s3")
    return str(s3.get_object(Bucket=BUCKET, Key="regwarden.yaml")["Body"].read().decode())


def test_a_changed_policy_judges_the_next_event_of_a_warm_function(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.aws import _app

    monkeypatch.setenv("REGWARDEN_POLICY_TTL", "0")  # look again on every invocation
    assert _judge(aws, "apps/one", 701, "not-semver") == "FAILED"
    warm = _app.state("on_push")
    assert _judge(aws, "apps/two", 702, "not-semver") == "FAILED"
    assert _app.state("on_push") is warm  # unchanged policy and secrets: nothing rebuilt

    relaxed = _policy_text(aws).replace("tags: {pattern: semver}", "tags: {forbidden: [x]}")
    aws.moto.client("s3").put_object(Bucket=BUCKET, Key="regwarden.yaml", Body=relaxed.encode())
    assert _judge(aws, "apps/three", 703, "not-semver") == "PASSED"
    assert _app.state("on_push") is not warm


def test_the_policy_is_trusted_until_its_ttl_passes(aws: Aws) -> None:
    # the default TTL (300 s) has not passed between two invocations
    assert _judge(aws, "apps/four", 704, "not-semver") == "FAILED"
    relaxed = _policy_text(aws).replace("tags: {pattern: semver}", "tags: {forbidden: [x]}")
    aws.moto.client("s3").put_object(Bucket=BUCKET, Key="regwarden.yaml", Body=relaxed.encode())
    assert _judge(aws, "apps/five", 705, "not-semver") == "FAILED"


def test_a_rotated_channel_secret_reaches_the_next_alert(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.aws import _app

    monkeypatch.setenv("REGWARDEN_POLICY_TTL", "0")
    assert _judge(aws, "apps/six", 706, "not-semver") == "FAILED"
    assert aws.invoke("notify", aws.receive("notify", 1)) == {"batchItemFailures": []}
    (first,) = aws.sink.received
    assert verify_signature(HMAC_KEY.encode(), first[0], first[1], now=datetime.now(UTC))
    warm = _app.state("notify")

    aws.moto.client("secretsmanager").put_secret_value(
        SecretId="regwarden/hmac", SecretString="rotated-key"
    )
    assert _judge(aws, "apps/seven", 707, "not-semver") == "FAILED"
    assert aws.invoke("notify", aws.receive("notify", 1)) == {"batchItemFailures": []}
    assert _app.state("notify") is not warm
    second = aws.sink.received[1]
    assert json.loads(second[1])["data"]["image"].split("@")[0].endswith("apps/seven")
    assert verify_signature(b"rotated-key", second[0], second[1], now=datetime.now(UTC))


def test_verdict_metrics_have_no_repository_dimension(aws: Aws) -> None:
    assert _judge(aws, "apps/eight", 708, "not-semver") == "FAILED"
    (blob,) = [m for m in aws.metrics() if "Verdicts" in m]
    dimensions = blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"]
    assert dimensions == [["function", "outcome"]]
    assert blob["repository"] == "apps/eight"  # in the log line, not a dimension
