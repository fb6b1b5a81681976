"""Exactly-once effects on AWS (#11): the gate functions on moto with a real registry as ECR's
data plane, interrupted between the steps of a quarantine, then the same SQS message
delivered again, or the scheduled `recovery` function run.

An exception between steps fails the record (Powertools drops its in-progress idempotency
record, SQS delivers it again); a killed invocation leaves the in-progress record, which
holds a redelivery off until that invocation's time has run out. Either way the redelivery
(or the sweep) finishes the move from the DynamoDB intent: the image ends whole in
quarantine, with one verdict and one alert. Also here: the registry hosts the functions
may contact, and the recovery function's wiring in `template.yaml`.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from support import aws_faults, aws_gate
from support import moto_server as support
from support.aws_faults import expire_in_progress, faults, idempotency_records, poll, send
from support.aws_gate import Aws, attributes
from support.cfn import load_template
from support.moto_server import REGISTRY_HOST

from regwarden.devtools import make_image
from regwarden.reference import short_digest

moto_server = support.moto_server
moto = support.moto
ecr_proxy = aws_faults.faulty_ecr_proxy
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
repositories:
  - match: "alpha/**"
    team: alpha
    vulnerabilities: {{maxSeverity: high, sources: [ecr], scanTimeout: 30m}}
    quarantine: {{strategy: move, repository: "quarantine/{{repository}}"}}
notifications:
  channels:
    alerts-topic: {{type: sns, topicArn: "{topic}"}}
  routes:
    - {{match: {{team: alpha}}, to: [alerts-topic]}}
"""
OTHER_ACCOUNT = "999999999999"
OTHER_HOST = f"{OTHER_ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com"


@pytest.fixture
def aws_policy() -> str:
    return POLICY


class Killed(BaseException):
    """The Lambda runtime ending an invocation: nothing in the handler catches it."""


@pytest.fixture
def kill_at(monkeypatch: pytest.MonkeyPatch) -> Callable[[str, str], list[str]]:
    """`kill_at(operation, repository)`: the handler's ECR client dies (raises `Killed`)
    the first time it is about to send `operation` for `repository`, before the request
    leaves. Returns the list the kill is recorded in."""
    from regwarden import botocore_config

    def arm(operation: str, repository: str) -> list[str]:
        killed: list[str] = []

        def kill(params: dict[str, Any], **_: Any) -> None:
            if not killed and params.get("repositoryName") == repository:
                killed.append(operation)
                raise Killed(operation)

        session = boto3.session.Session()
        session.events.register(f"before-parameter-build.ecr.{operation}", kill)
        # the process's session for the clients the handlers build from now
        monkeypatch.setattr(botocore_config, "_SESSION", session)
        monkeypatch.setattr(botocore_config, "_SESSION_ENV", botocore_config._aws_environment())
        monkeypatch.setattr(botocore_config, "_CLIENTS", {})
        return killed

    return arm


def critical_push(aws: Aws, repo: str, seed: int) -> tuple[str, dict[str, Any]]:
    aws.repository(repo)
    digest = aws.push(repo, make_image(seed=seed), "1.0.0")
    aws.scan_result(repo, digest, ["CRITICAL"])
    return digest, aws.sample("ecr-image-push.json", repository=repo, digest=digest, tag="1.0.0")


def assert_whole_in_quarantine(aws: Aws, repo: str, digest: str) -> None:
    assert not aws.present(repo, digest)
    assert aws.tags(f"quarantine/{repo}", digest) == [f"quarantined-{short_digest(digest)}"]
    ledger = aws.ledger()
    assert [(a.kind, a.status) for a in ledger.actions()] == [("quarantine", "done")]
    assert ledger.actions(status="intent") == []
    assert ledger.outbox_unsent() == 0


def one_alert(aws: Aws) -> dict[str, str]:
    (alert,) = aws.drain("alpha-alerts")
    return attributes(alert)


# -- an exception between two steps: the redelivery finishes ------------------------------


@pytest.mark.parametrize("phase", ["before", "after"])
def test_a_move_interrupted_at_its_delete_is_finished_by_the_redelivery(
    aws: Aws, phase: str
) -> None:
    """The source DELETE fails once: refused (before), or made with its answer lost
    (after). The record fails, nothing is committed, and the redelivery of the same SQS
    message resumes the intent: whole-moved, one verdict, one alert."""
    repo = "alpha/api"
    digest, event = critical_push(aws, repo, 601)
    faults(aws).fail("BatchDeleteImage", repository=repo, phase=phase)  # type: ignore[arg-type]
    send(aws, event)

    first = poll(aws, "on_push")

    assert len(first["batchItemFailures"]) == 1  # not acknowledged: SQS delivers it again
    assert aws.present(f"quarantine/{repo}", digest)  # copied
    assert aws.present(repo, digest) is (phase == "before")
    ledger = aws.ledger()
    assert ledger.verdict_log(REGISTRY_HOST, repo, digest) == []  # no outcome committed
    assert [a.status for a in ledger.actions()] == ["intent"]
    assert aws.drain("alpha-alerts") == []
    assert idempotency_records(aws, "on_push") == []  # dropped on the exception
    note = ledger.failure("on_push", event["id"])
    assert note is not None and note.failures == 1 and "injected fault" in note.first_error

    second = poll(aws, "on_push")

    assert second == {"batchItemFailures": []}
    assert_whole_in_quarantine(aws, repo, digest)
    assert [v for _, v, _ in ledger.verdict_log(REGISTRY_HOST, repo, digest)] == ["FAILED"]
    alert = one_alert(aws)
    assert alert["verdict"] == "FAILED" and alert["action"] == "quarantine"
    (record,) = idempotency_records(aws, "on_push")
    assert record["status"]["S"] == "COMPLETED"

    # delivered once more (at-least-once): answered from the completed record
    send(aws, event)
    assert poll(aws, "on_push") == {"batchItemFailures": []}
    assert len(ledger.verdict_log(REGISTRY_HOST, repo, digest)) == 1
    assert aws.drain("alpha-alerts") == []


# -- a killed invocation: the in-progress record, then the redelivery or the sweep ----------


def test_a_killed_move_is_resumed_once_the_killed_invocation_has_timed_out(
    aws: Aws, kill_at: Callable[[str, str], list[str]]
) -> None:
    repo = "alpha/killed"
    digest, event = critical_push(aws, repo, 602)
    killed = kill_at("BatchDeleteImage", repo)
    send(aws, event)

    with pytest.raises(Killed):
        poll(aws, "on_push")

    assert killed == ["BatchDeleteImage"]
    assert aws.present(repo, digest) and aws.present(f"quarantine/{repo}", digest)
    (record,) = idempotency_records(aws, "on_push")
    assert record["status"]["S"] == "INPROGRESS"  # nothing said it finished

    # redelivered while the killed invocation could still be running: held off
    early = poll(aws, "on_push")
    assert len(early["batchItemFailures"]) == 1
    assert aws.present(repo, digest)
    assert aws.ledger().verdict_log(REGISTRY_HOST, repo, digest) == []

    assert expire_in_progress(aws, "on_push") == 1  # its Lambda timeout has passed
    assert poll(aws, "on_push") == {"batchItemFailures": []}

    assert_whole_in_quarantine(aws, repo, digest)
    assert len(aws.ledger().verdict_log(REGISTRY_HOST, repo, digest)) == 1
    alert = one_alert(aws)
    assert alert["verdict"] == "FAILED" and alert["action"] == "quarantine"


def scheduled_event() -> dict[str, Any]:
    return {
        "version": "0",
        "id": "5f1e0b1c-0000-4000-8000-000000000000",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": support.ACCOUNT,
        "region": support.REGION,
        "resources": [],
        "detail": {},
    }


def test_the_recovery_function_finishes_a_killed_move_whose_event_never_returned(
    aws: Aws, kill_at: Callable[[str, str], list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The event went to the dead-letter queue (or its redelivery is far off): the
    scheduled sweep resumes the intent from DynamoDB alone, once the invocation that began
    it cannot be running any more."""
    from functions.aws import _app

    repo = "alpha/swept"
    digest, event = critical_push(aws, repo, 603)
    kill_at("BatchDeleteImage", repo)
    send(aws, event)
    with pytest.raises(Killed):
        poll(aws, "on_push")
    assert aws.drain("alpha-alerts") == []
    idle = {"resumed": 0, "still_failing": 0, "alerts_sent": 0}

    # a tick right away: for all the sweep knows, the gate invocation is still at work
    assert aws.invoke("recovery", scheduled_event()) == idle
    assert aws.present(repo, digest)
    assert [a.status for a in aws.ledger().actions()] == ["intent"]

    monkeypatch.setenv("REGWARDEN_RECOVERY_SETTLE", "0")  # that invocation's time is over
    _app.reset()
    report = aws.invoke("recovery", scheduled_event())

    assert report == {"resumed": 1, "still_failing": 0, "alerts_sent": 1}
    assert_whole_in_quarantine(aws, repo, digest)
    assert [v for _, v, _ in aws.ledger().verdict_log(REGISTRY_HOST, repo, digest)] == ["FAILED"]
    alert = one_alert(aws)
    assert alert["verdict"] == "FAILED" and alert["action"] == "quarantine"
    emf = [m for m in aws.metrics() if "Resumed" in m]
    assert [m["Resumed"] for m in emf] == [[0.0], [1.0]] and emf[-1]["function"] == "recovery"

    # nothing left: a second tick does nothing
    assert aws.invoke("recovery", scheduled_event()) == idle
    # the event comes back after all: no second move, no second alert
    expire_in_progress(aws, "on_push")
    assert poll(aws, "on_push") == {"batchItemFailures": []}
    assert [(a.kind, a.status) for a in aws.ledger().actions()] == [("quarantine", "done")]
    assert aws.drain("alpha-alerts") == []


def test_an_alert_the_topic_refused_is_sent_by_the_recovery_function(aws: Aws) -> None:
    repo = "alpha/unheard"
    digest, event = critical_push(aws, repo, 604)
    sns = aws.moto.client("sns")
    sns.delete_topic(TopicArn=aws.topic)  # publishing fails until it is back

    assert aws.gate("on_push", event) == {"batchItemFailures": []}  # the outcome committed

    assert not aws.present(repo, digest)
    ledger = aws.ledger()
    assert [v for _, v, _ in ledger.verdict_log(REGISTRY_HOST, repo, digest)] == ["FAILED"]
    (row,) = ledger.outbox_pending(now=datetime.now(UTC) + timedelta(days=1))
    assert row.error  # why it is still pending
    assert sns.create_topic(Name="regwarden-alerts")["TopicArn"] == aws.topic
    sns.subscribe(
        TopicArn=aws.topic,
        Protocol="sqs",
        Endpoint=aws.queue_arn("alpha-alerts"),
        Attributes={"RawMessageDelivery": "true", "FilterPolicy": json.dumps({"team": ["alpha"]})},
    )
    ledger.outbox_retry(row.key, at=datetime.now(UTC), error=row.error)  # its backoff is over

    report = aws.invoke("recovery", scheduled_event())

    assert report == {"resumed": 0, "still_failing": 0, "alerts_sent": 1}
    alert = one_alert(aws)
    assert alert["verdict"] == "FAILED" and alert["action"] == "quarantine"
    assert ledger.outbox_unsent() == 0
    assert aws.invoke("recovery", scheduled_event())["alerts_sent"] == 0


# -- allowed hosts ------------------------------------------------------------------------------


def foreign_push(aws: Aws, repo: str, seed: int) -> dict[str, Any]:
    aws.repository(repo)
    digest = aws.push(repo, make_image(seed=seed), "1.0.0")
    event = aws.sample("ecr-image-push.json", repository=repo, digest=digest, tag="1.0.0")
    event["account"] = OTHER_ACCOUNT  # another account's registry (a shared event bus)
    return event


def test_an_event_for_another_registry_is_rejected_without_contacting_it(aws: Aws) -> None:
    event = foreign_push(aws, "alpha/foreign", 605)
    aws.proxy.calls.clear()

    assert aws.gate("on_push", event) == {"batchItemFailures": []}  # not retried

    assert aws.proxy.calls == []  # no ECR call at all, for either registry
    (record,) = idempotency_records(aws, "on_push")
    (result,) = json.loads(record["data"]["S"])["results"]
    assert OTHER_HOST in result["rejected"] and "not configured" in result["rejected"]
    assert any(m.get("RejectedEvents") == [1.0] for m in aws.metrics())
    recheck = {
        "id": "recheck:foreign",
        "source": "regwarden.recheck",
        "image": f"{OTHER_HOST}/alpha/foreign@sha256:{'a' * 64}",
        "at": "2020-01-01T00:00:00+00:00",
    }
    assert aws.gate("on_push", recheck) == {"batchItemFailures": []}
    assert aws.proxy.calls == []


def test_registries_from_the_environment_are_contacted_and_the_setting_wins(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.aws import _app

    event = foreign_push(aws, "alpha/listed", 606)
    monkeypatch.setenv("REGWARDEN_REGISTRIES", f"{OTHER_HOST},registry.example.com")
    _app.reset()
    aws.proxy.calls.clear()
    aws.gate("on_push", event)
    assert {c.body.get("registryId") for c in aws.proxy.calls} >= {OTHER_ACCOUNT}

    # REGWARDEN_REGISTRY names the function's own registry; the ARN's is then not allowed
    monkeypatch.delenv("REGWARDEN_REGISTRIES")
    monkeypatch.setenv("REGWARDEN_REGISTRY", OTHER_HOST)
    _app.reset()
    repo = "alpha/home"
    aws.repository(repo)
    digest = aws.push(repo, make_image(seed=607), "1.0.0")
    home = aws.sample("ecr-image-push.json", repository=repo, digest=digest, tag="1.0.0")
    aws.proxy.calls.clear()
    assert aws.gate("on_push", home) == {"batchItemFailures": []}
    assert aws.proxy.calls == []
    assert aws.present(repo, digest) and aws.ledger().verdict_log(REGISTRY_HOST, repo, digest) == []


# -- template.yaml: the recovery function ---------------------------------------------------


def _statements(role: str) -> list[dict[str, Any]]:
    resources = load_template()["Resources"]
    return [
        statement
        for policy in resources[role]["Properties"]["Policies"]
        for statement in policy["PolicyDocument"]["Statement"]
    ]


def _listed(value: Any) -> list[Any]:
    if isinstance(value, dict) and "Fn::If" in value:
        _, yes, no = value["Fn::If"]
        return _listed(yes) + _listed(no)
    return value if isinstance(value, list) else [value]


def test_recovery_runs_every_five_minutes_alone_with_least_privilege() -> None:
    resources = load_template()["Resources"]
    props = resources["RecoveryFunction"]["Properties"]
    assert props["Handler"] == "functions.aws.recovery.handler"
    (source,) = props["Events"].values()
    assert source["Type"] == "Schedule"
    assert source["Properties"]["Schedule"] == "rate(5 minutes)"
    assert props["ReservedConcurrentExecutions"] == 1  # sweeps never overlap
    assert props["EventInvokeConfig"]["MaximumRetryAttempts"] == 0  # the next tick retries
    assert props["Role"] == {"Fn::GetAtt": "RecoveryRole.Arn"}
    statements = _statements("RecoveryRole")
    actions = {a for s in statements for a in _listed(s["Action"])}
    assert not any(a.endswith(":*") or a == "*" for a in actions)
    # no secrets (it judges nothing), no queues, no scan findings, no table scans
    assert not {a for a in actions if a.split(":")[0] in ("secretsmanager", "sqs")}
    assert "ssm:GetParameter" in actions  # the policy, when it lives in SSM
    assert not {"ecr:DescribeImageScanFindings", "ecr:StartImageScan", "dynamodb:Scan"} & actions
    (ledger,) = [s for s in statements if any(a.startswith("dynamodb:") for a in s["Action"])]
    assert ledger["Resource"] == [
        {"Fn::GetAtt": "LedgerTable.Arn"},
        {"Fn::Sub": "${LedgerTable.Arn}/index/pending"},
    ]
    for statement in statements:
        if statement["Resource"] == "*":
            assert set(_listed(statement["Action"])) <= {
                "ecr:GetAuthorizationToken",
                "xray:PutTraceSegments",
                "xray:PutTelemetryRecords",
            }, statement["Sid"]
    gate_timeout = load_template()["Globals"]["Function"]["Timeout"]
    assert props["Environment"]["Variables"]["REGWARDEN_RECOVERY_SETTLE"] > gate_timeout
    (publish,) = [s for s in statements if s["Action"] == "sns:Publish"]
    assert publish["Resource"] == {"Ref": "AlertsTopic"}
    makefile = (aws_gate.ROOT / "functions" / "aws" / "Makefile").read_text()
    assert "build-RecoveryFunction" in makefile
    assert "recovery.py" in makefile and "_recovery.py" in makefile
    env = load_template()["Globals"]["Function"]["Environment"]["Variables"]
    assert env["REGWARDEN_REGISTRY"] == {
        "Fn::Sub": "${AWS::AccountId}.dkr.ecr.${AWS::Region}.${AWS::URLSuffix}"
    }
