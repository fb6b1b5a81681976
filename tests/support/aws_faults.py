"""Faults and redeliveries for the AWS handler tests: an ECR API that refuses chosen writes,
the SQS event source mapping's redelivery, and time passing for Powertools' in-progress
idempotency records.

    from support import aws_faults
    ecr_proxy = aws_faults.faulty_ecr_proxy      # the `aws` fixture's ECR endpoint, faulty

    faults(aws).fail("BatchDeleteImage", repository="alpha/api", phase="after")
    aws_faults.send(aws, event)
    result = aws_faults.poll(aws, "on_push")     # receive, invoke, ack or make visible again
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

import pytest

from support.aws_gate import TABLE, Aws, LambdaContext, lambda_records
from support.moto_server import EcrLimitsProxy, MotoServer

_ECR_TARGET_PREFIX = "AmazonEC2ContainerRegistry_V20150921."
_INJECTED = "InvalidParameterException"
"""Not retried by botocore: the handler sees the fault on the first answer."""

Phase = Literal["before", "after"]


@dataclass
class Fault:
    operation: str
    repository: str
    times: int
    phase: Phase
    """before: the write is not made; after: it is made and its answer lost."""


class FaultyEcrProxy(EcrLimitsProxy):
    """`EcrLimitsProxy` that answers chosen ECR operations on a repository with an error,
    either instead of forwarding them or after moto has carried them out."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.faults: list[Fault] = []
        self.injected: list[tuple[str, str, Phase]] = []
        self._guard = threading.Lock()

    def fail(
        self, operation: str, *, repository: str, times: int = 1, phase: Phase = "before"
    ) -> None:
        with self._guard:
            self.faults.append(Fault(operation, repository, times, phase))

    def clear(self) -> None:
        with self._guard:
            self.faults.clear()

    def _take(self, operation: str, repository: str) -> Fault | None:
        with self._guard:
            for fault in self.faults:
                if fault.operation == operation and fault.repository == repository:
                    if fault.times <= 0:
                        return None
                    fault.times -= 1
                    self.injected.append((operation, repository, fault.phase))
                    return fault
        return None

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        target = headers.get("X-Amz-Target") or headers.get("x-amz-target") or ""
        if target.startswith(_ECR_TARGET_PREFIX):
            operation = target.removeprefix(_ECR_TARGET_PREFIX)
            request = json.loads(body or b"{}")
            fault = self._take(operation, str(request.get("repositoryName", "")))
            if fault is not None:
                if fault.phase == "after":
                    super().handle(method, path, headers, body)  # made, answer lost
                payload = json.dumps(
                    {"__type": _INJECTED, "message": f"injected fault on {operation}"}
                ).encode()
                return (
                    400,
                    {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": _INJECTED},
                    payload,
                )
        return super().handle(method, path, headers, body)


@pytest.fixture
def faulty_ecr_proxy(moto: MotoServer) -> Iterator[FaultyEcrProxy]:
    """A `FaultyEcrProxy` in front of the (freshly reset) moto server; register it as
    `ecr_proxy` so the `aws` fixture's functions use it."""
    proxy = FaultyEcrProxy(moto.endpoint_url).start()
    assert isinstance(proxy, FaultyEcrProxy)
    try:
        yield proxy
    finally:
        proxy.stop()


def faults(aws: Aws) -> FaultyEcrProxy:
    """The `aws` fixture's ECR proxy, when the module registered `faulty_ecr_proxy`."""
    assert isinstance(aws.proxy, FaultyEcrProxy), "register ecr_proxy = faulty_ecr_proxy"
    return aws.proxy


# -- the SQS event source mapping ----------------------------------------------------------


def send(aws: Aws, *bodies: dict[str, Any], queue: str = "events") -> None:
    for body in bodies:
        aws.sqs.send_message(QueueUrl=aws.queues[queue], MessageBody=json.dumps(body))


def poll(
    aws: Aws,
    function: str,
    *,
    queue: str = "events",
    context: LambdaContext | None = None,
) -> dict[str, Any]:
    """One poll of the event source mapping: receive what is visible (without deleting),
    invoke the handler, delete the records it acknowledged and make the failed ones
    visible again at once (as their visibility timeout running out would), so the next
    poll redelivers them with their receive count one higher. An exception out of the
    handler (a killed invocation) acknowledges nothing."""
    url = aws.queues[queue]
    messages = aws.sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        AttributeNames=["All"],
        MessageAttributeNames=["All"],
        WaitTimeSeconds=0,
    ).get("Messages", [])
    assert messages, f"nothing to deliver on {queue}"
    event = {"Records": lambda_records(messages, aws.queue_arn(queue))}
    module = __import__(f"functions.aws.{function}", fromlist=["handler"])
    try:
        result: dict[str, Any] = module.handler(
            event, context or LambdaContext(f"regwarden-{function}")
        )
    except BaseException:
        _release(aws, url, messages)
        raise
    failed = {f["itemIdentifier"] for f in result.get("batchItemFailures", [])}
    for m in messages:
        if m["MessageId"] not in failed:
            aws.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    _release(aws, url, [m for m in messages if m["MessageId"] in failed])
    return result


def _release(aws: Aws, url: str, messages: list[dict[str, Any]]) -> None:
    for m in messages:
        aws.sqs.change_message_visibility(
            QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=0
        )


# -- Powertools' idempotency records -----------------------------------------------------


def idempotency_records(aws: Aws, function: str) -> list[dict[str, Any]]:
    return list(
        aws.moto.client("dynamodb").query(
            TableName=TABLE,
            KeyConditionExpression="pk = :pk",
            ExpressionAttributeValues={":pk": {"S": f"idempotency#{function}"}},
            ConsistentRead=True,
        )["Items"]
    )


def expire_in_progress(aws: Aws, function: str) -> int:
    """End the in-progress window of every INPROGRESS record of `function` (the killed
    invocation's time ran out, as far as Powertools can tell). Returns how many."""
    client = aws.moto.client("dynamodb")
    count = 0
    for record in idempotency_records(aws, function):
        if record["status"]["S"] != "INPROGRESS":
            continue
        client.update_item(
            TableName=TABLE,
            Key={"pk": record["pk"], "sk": record["sk"]},
            UpdateExpression="SET in_progress_expiration = :past",
            ExpressionAttributeValues={":past": {"N": "0"}},
        )
        count += 1
    return count
