"""The AWS dead letters (`regwarden deadletters list|retry --source aws`) on moto server: the
gate function fails records until SQS's redrive policy moves them to the dead-letter
queue; the listing shows each with its function, event id, images, receive count and the
errors the function noted, without consuming it; retry moves it back to its source queue.
"""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest
from support import aws_gate
from support import moto_server as support
from support.aws_faults import poll
from support.aws_gate import TABLE, Aws
from support.moto_server import REGISTRY_HOST, MotoServer

from regwarden.cli import _deadletters_aws as dlq
from regwarden.errors import UsageError
from regwarden.store._dynamo import dead_letter_key

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
repositories:
  - match: "alpha/**"
    team: alpha
notifications:
  channels:
    alerts-topic: {{type: sns, topicArn: "{topic}"}}
"""
MAX_RECEIVES = 3  # the `aws` fixture's REGWARDEN_MAX_RECEIVES


@pytest.fixture
def aws_policy() -> str:
    return POLICY


def dead_letter_queue(aws: Aws, source: str = "events") -> str:
    """A DLQ behind `source`, as template.yaml's RedrivePolicy sets it up."""
    url = str(aws.sqs.create_queue(QueueName=f"{source}-dlq")["QueueUrl"])
    redrive = {"deadLetterTargetArn": aws.queue_arn(f"{source}-dlq"), "maxReceiveCount": 3}
    aws.sqs.set_queue_attributes(
        QueueUrl=aws.queues[source], Attributes={"RedrivePolicy": json.dumps(redrive)}
    )
    return url


def fail_until_dead(aws: Aws, body: str) -> None:
    aws.sqs.send_message(QueueUrl=aws.queues["events"], MessageBody=body)
    for _ in range(MAX_RECEIVES):
        result = poll(aws, "on_push")
        assert len(result["batchItemFailures"]) == 1
    # the next receive finds it over maxReceiveCount: SQS moves it to the DLQ
    got = aws.sqs.receive_message(QueueUrl=aws.queues["events"], WaitTimeSeconds=0)
    assert got.get("Messages", []) == []


def depth(aws: Aws, url: str) -> int:
    attrs = aws.sqs.get_queue_attributes(
        QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"])


def test_dead_letters_are_listed_with_their_errors_without_being_consumed(
    aws: Aws, capsys: pytest.CaptureFixture[str]
) -> None:
    url = dead_letter_queue(aws)
    misrouted = aws.sample(
        "ecr-image-scan.json", repository="alpha/api", digest="sha256:" + "a" * 64
    )
    fail_until_dead(aws, json.dumps(misrouted))  # a scan event on the push queue
    fail_until_dead(aws, "not json at all")

    target = dlq.resolve(queue_urls=[url], function="on_push", table=TABLE)
    letters = dlq.list_letters(target)

    assert len(letters) == 2 and depth(aws, url) == 2  # nothing consumed
    by_event = {d.event_id: d for d in letters}
    scan = by_event[misrouted["id"]]
    assert scan.function == "on_push" and scan.queue == url
    assert scan.images == (f"{REGISTRY_HOST}/alpha/api@sha256:{'a' * 64}",)
    assert scan.receives >= MAX_RECEIVES and scan.failures == MAX_RECEIVES
    assert scan.first_error is not None and scan.first_error.startswith("IntakeError: on_push")
    assert "detail-type 'ECR Image Scan'" in scan.first_error
    assert scan.sent_at is not None
    (garbage,) = [d for d in letters if d is not scan]
    assert garbage.event_id == garbage.id and garbage.images == ()
    assert garbage.first_error is not None and "body is not JSON" in garbage.first_error

    again = dlq.list_letters(target)  # listing twice shows the same letters
    assert {d.id for d in again} == {d.id for d in letters}
    assert depth(aws, url) == 2
    assert json.loads(json.dumps([dlq.row(d) for d in again]))[0]["function"] == "on_push"
    dlq.print_letters(again, title="dead letters")
    out = capsys.readouterr().out
    assert "on_push" in out and "2 dead letter(s)" in out

    # given by URL alone: the note is found under whichever function wrote it
    unnamed = dlq.list_letters(dlq.resolve(queue_urls=[url], table=TABLE))
    assert {d.function for d in unnamed} == {"on_push"}
    # without the table: the letters, errors unknown
    bare = dlq.list_letters(dlq.resolve(queue_urls=[url]))
    assert {d.first_error for d in bare} == {None} and {d.failures for d in bare} == {None}


def test_retry_moves_chosen_letters_back_to_their_source_queue(aws: Aws) -> None:
    url = dead_letter_queue(aws)
    first = aws.sample("ecr-image-scan.json", repository="alpha/a", digest="sha256:" + "b" * 64)
    second = aws.sample("ecr-image-scan.json", repository="alpha/b", digest="sha256:" + "c" * 64)
    fail_until_dead(aws, json.dumps(first))
    fail_until_dead(aws, json.dumps(second))
    target = dlq.resolve(queue_urls=[url], function="on_push", table=TABLE)
    letters = {d.event_id: d for d in dlq.list_letters(target)}

    with pytest.raises(UsageError, match="no dead letter with id nope"):
        dlq.retry_letters(target, ["nope", letters[first["id"]].id])
    assert depth(aws, url) == 2  # nothing moved
    planned = dlq.retry_letters(target, [letters[first["id"]].id], dry_run=True)
    assert [d.event_id for d in planned] == [first["id"]] and depth(aws, url) == 2

    moved = dlq.retry_letters(target, [letters[first["id"]].id])

    assert [d.event_id for d in moved] == [first["id"]]
    assert depth(aws, url) == 1
    (back,) = aws.sqs.receive_message(QueueUrl=aws.queues["events"]).get("Messages", [])
    assert json.loads(back["Body"]) == first  # the event as it was, due at once
    rest = dlq.retry_letters(target, None)  # --all
    assert [d.event_id for d in rest] == [second["id"]] and depth(aws, url) == 0


def test_a_queue_nothing_redrives_to_is_listed_but_not_retried(aws: Aws) -> None:
    orphan = str(aws.sqs.create_queue(QueueName="fanout-dlq")["QueueUrl"])
    aws.sqs.send_message(QueueUrl=orphan, MessageBody='{"scheduledTime": "x"}')
    target = dlq.resolve(queue_urls=[orphan], function="retention_fanout")
    (letter,) = dlq.list_letters(target)
    assert letter.function == "retention_fanout" and letter.first_error is None
    with pytest.raises(UsageError, match="no single source queue"):
        dlq.retry_letters(target, None)
    assert depth(aws, orphan) == 1


def test_dead_letter_keys_follow_the_body() -> None:
    assert dead_letter_key(json.dumps({"id": "e-1", "detail": {}}), "m-1") == "e-1"
    assert dead_letter_key(json.dumps({"dedup_key": "k-1"}), "m-1") == "k-1"
    assert dead_letter_key("[1, 2]", "m-1") == "m-1"
    assert dead_letter_key("{not json", "m-1") == "m-1"


# -- finding the queues from the deployed stack -------------------------------------------------

STACK = """\
Resources:
  PushDeadLetterQueue: {Type: AWS::SQS::Queue}
  ScanDeadLetterQueue: {Type: AWS::SQS::Queue}
  NotifyDeadLetterQueue: {Type: AWS::SQS::Queue}
Outputs:
  PushDeadLetterQueueUrl: {Value: !Ref PushDeadLetterQueue}
  ScanDeadLetterQueueUrl: {Value: !Ref ScanDeadLetterQueue}
  NotifyDeadLetterQueueUrl: {Value: !Ref NotifyDeadLetterQueue}
  LedgerTableName: {Value: regwarden-ledger}
"""


def test_a_stacks_outputs_name_its_queues_and_table(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint_url)
    moto.client("cloudformation").create_stack(StackName="regwarden", TemplateBody=STACK)

    target = dlq.resolve(stack="regwarden")

    assert target.table == "regwarden-ledger"
    assert [q.function for q in target.queues] == ["on_push", "on_scan", "notify"]
    assert all(q.url.startswith("http") for q in target.queues)
    only: Any = dlq.resolve(stack="regwarden", function="notify", table="other")
    assert [q.function for q in only.queues] == ["notify"] and only.table == "other"
    assert dlq.list_letters(only) == []
    with pytest.raises(UsageError, match="stack 'missing'"):
        dlq.resolve(stack="missing")
    with pytest.raises(UsageError, match="unknown function 'on_pull'"):
        dlq.resolve(stack="regwarden", function="on_pull")
    with pytest.raises(UsageError, match="--stack NAME"):
        dlq.resolve()


def test_the_cli_lists_and_retries_aws_dead_letters(aws: Aws) -> None:
    """`regwarden deadletters list|retry --source aws` as an operator runs it."""
    import os

    from support.cli import run_cli

    url = dead_letter_queue(aws)
    event = aws.sample("ecr-image-scan.json", repository="alpha/cli", digest="sha256:" + "d" * 64)
    fail_until_dead(aws, json.dumps(event))
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGWARDEN_")}
    where = ("--source", "aws", "--queue-url", url, "--function", "on_push", "--table", TABLE)

    listed = run_cli("deadletters", "list", *where, "-o", "json", env=env)

    assert listed.returncode == 0, listed.stderr
    (letter,) = json.loads(listed.stdout)
    assert letter["eventId"] == event["id"] and letter["failures"] == MAX_RECEIVES
    assert letter["firstError"].startswith("IntakeError: on_push got detail-type")
    table = run_cli("deadletters", "list", *where, env={**env, "COLUMNS": "200"})
    assert table.returncode == 0 and letter["id"] in table.stdout
    assert depth(aws, url) == 1

    wrong = run_cli("deadletters", "retry", "no-such-id", *where, env=env)
    assert wrong.returncode == 2 and "no dead letter with id no-such-id" in wrong.stderr
    moved = run_cli("deadletters", "retry", letter["id"], *where, "-o", "json", env=env)

    assert moved.returncode == 0, moved.stderr
    assert [r["eventId"] for r in json.loads(moved.stdout)["requeued"]] == [event["id"]]
    assert depth(aws, url) == 0 and depth(aws, aws.queues["events"]) == 1
