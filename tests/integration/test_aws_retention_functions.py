"""The retention functions end to end against moto in server mode on loopback.

Real parts: moto serves ECR (behind `EcrLimitsProxy`: ECR's paging and 100-id batch limits),
SQS, SNS, DynamoDB, S3, ECS and Lambda over boto3's real wire protocol. The fan-out handler
is invoked with the EventBridge Scheduler payload `template.yaml` configures and sends to a
real SQS work queue (with a redrive policy); the worker is fed the way Lambda's SQS event
source mapping does it: messages received from that queue, handed over as the SQS event
with a Lambda context, deleted only when not reported in `batchItemFailures`. Alerts are
read back through an SQS queue subscribed to the alerts topic. Every AWS API call the
handlers make is recorded on the client (botocore `before-call`) and checked against the
IAM grants of the function's role in `template.yaml`.
"""

from __future__ import annotations

import fnmatch
import json
import math
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from support import moto_server as support
from support.cfn import load_template
from support.moto_server import (
    ACCOUNT,
    REGION,
    REGISTRY_HOST,
    EcrLimitsProxy,
    MotoServer,
    oci_manifest,
    put_manifest,
)

from regwarden.errors import IntakeError, UsageError
from regwarden.store import DynamoLedger
from regwarden.store._dynamo import TTL_ATTRIBUTE, table_definition

moto_server = support.moto_server
moto = support.moto

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `functions/` imports from the repo root
    sys.path.insert(0, str(ROOT))

pytestmark = pytest.mark.integration

TABLE = "regwarden"
BUCKET = "regwarden-config"
NOW = datetime.now(UTC)

POLICY = """\
apiVersion: regwarden/v1
kind: Policy
defaults:
  team: platform
repositories:
  - match: "apps/**"
    team: apps
    retention:
      keep: [{mostRecent: 2}]
      delete: [{olderThan: 30d}]
      guard: {maxDeletes: 100, maxShare: 0.9}
  - match: "bulk/**"
    team: bulk
    retention:
      keep: [{mostRecent: 2}]
      delete: [{olderThan: 30d}]
      guard: {maxDeletes: 1000, maxShare: 1}
  - match: "scratch/**"
    team: scratch
    retention: {delete: [{olderThan: 1d}], guard: {maxDeletes: 2, maxShare: 1}}
  - match: "docs/**"
    team: docs
  - match: "quarantine/**"
    team: security
    retention: {delete: [{quarantineExpired: {after: 30d}}]}
"""
KEEP_MOST_RECENT = 2  # apps/** and bulk/**, as above
OLDER_THAN_DAYS = 30

# Each image's age in days, by tag (apps/api)
API_AGES = {"1.0.5": 1, "1.0.4": 5, "1.0.3": 40, "1.0.2": 50, "1.0.1": 60, "1.0.0": 70}


# -- what the handlers call, and what the template grants ----------------------------------------


_IAM_ALIAS = {
    "SendMessageBatch": "SendMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
}


class ApiCalls:
    """Every AWS API call made through boto3 while `recording()` is on: (IAM service
    prefix, operation), from botocore's `before-call` event on each client."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, dict[str, Any]]] = []
        self._on = False
        self._lock = threading.Lock()

    def hook(self, model: Any, params: Any = None, **_: Any) -> None:
        if self._on:
            body = (params or {}).get("body") or b"{}"
            try:
                decoded = json.loads(body) if isinstance(body, bytes | str) and body else {}
            except ValueError:
                decoded = {}
            with self._lock:
                self.seen.append((str(model.service_model.signing_name), str(model.name), decoded))

    @contextmanager
    def recording(self) -> Iterator[None]:
        self._on = True
        try:
            yield
        finally:
            self._on = False

    def count(self, service: str, operation: str) -> int:
        return len(self.of(service, operation))

    def of(self, service: str, operation: str) -> list[dict[str, Any]]:
        return [p for s, o, p in self.seen if (s, o) == (service, operation)]

    def actions(self) -> set[str]:
        return {f"{s}:{_IAM_ALIAS.get(o, o)}" for s, o, _ in self.seen}


TEMPLATE: dict[str, Any] = load_template()


def granted(role: str) -> list[str]:
    """Every action a role's inline policies allow (both branches of an `!If`)."""

    def flat(value: Any) -> list[str]:
        if isinstance(value, str):
            return [value]
        if isinstance(value, list):
            return [a for v in value for a in flat(v)]
        if isinstance(value, dict) and "Fn::If" in value:
            _, yes, no = value["Fn::If"]
            return flat(yes) + flat(no)
        raise AssertionError(f"unexpected Action {value!r}")

    out: list[str] = []
    for policy in TEMPLATE["Resources"][role]["Properties"]["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            assert statement["Effect"] == "Allow"
            out += flat(statement["Action"])
    return out


def ungranted(calls: ApiCalls, role: str) -> set[str]:
    patterns = [p.lower() for p in granted(role)]
    return {a for a in calls.actions() if not any(fnmatch.fnmatch(a.lower(), p) for p in patterns)}


# -- the deployed stack, as moto resources --------------------------------------------------------


@dataclass
class Context:
    """What the Lambda runtime passes as `context` (what Powertools and the worker read)."""

    function_name: str
    remaining: Callable[[], int] = lambda: 900_000
    memory_limit_in_mb: int = 1024
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining()


@dataclass
class Stack:
    moto: MotoServer
    proxy: EcrLimitsProxy
    calls: ApiCalls
    capsys: pytest.CaptureFixture[str]
    topic: str
    queues: dict[str, str]
    """`work` (the retention queue), `dlq` (its dead letters), `alerts` (on the topic)."""
    ages: dict[str, float] = field(default_factory=dict)
    """digest → age in days, as ECR's describe_images will report it."""
    ecr: Any = None
    sqs: Any = None
    out: list[str] = field(default_factory=list)

    # -- images ---------------------------------------------------------------------------

    def repository(self, name: str) -> None:
        self.ecr.create_repository(repositoryName=name)

    def push(self, repository: str, tag: str, age_days: float) -> str:
        raw, _ = oci_manifest(f"{repository}:{tag}")
        digest = put_manifest(self.ecr, repository, raw, tag=tag)
        self.ages[digest] = age_days
        return digest

    def remaining(self, repository: str) -> set[str]:
        out: set[str] = set()
        for page in self.ecr.get_paginator("describe_images").paginate(repositoryName=repository):
            out |= {d["imageDigest"] for d in page["imageDetails"]}
        return out

    def ledger(self) -> DynamoLedger:
        return DynamoLedger(TABLE, client=self.moto.client("dynamodb"))

    # -- invoking -------------------------------------------------------------------------

    def fan_out(self, event: dict[str, Any] | None) -> dict[str, Any]:
        from functions.aws import retention_fanout

        with self.calls.recording():
            result: dict[str, Any] = retention_fanout.handler(
                event, Context("regwarden-retention-fanout")
            )
        return result

    def send(self, *messages: dict[str, Any] | str) -> None:
        for m in messages:
            body = m if isinstance(m, str) else json.dumps(m)
            self.sqs.send_message(QueueUrl=self.queues["work"], MessageBody=body)

    def deliver(
        self, batch_size: int = 1, context: Context | None = None
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """One poll of Lambda's SQS event source mapping: receive up to `batch_size`
        messages, invoke the worker, delete the messages it did not report failed."""
        from functions.aws import retention_worker

        url = self.queues["work"]
        messages: list[dict[str, Any]] = []
        for _ in range(10):
            if len(messages) >= batch_size:
                break
            messages += self.sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=batch_size - len(messages),
                AttributeNames=["All"],
                WaitTimeSeconds=0,
            ).get("Messages", [])
        assert messages, "the work queue is empty"
        records = [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": m["Attributes"],
                "messageAttributes": {},
                "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:retention-work",
                "awsRegion": REGION,
            }
            for m in messages
        ]
        with self.calls.recording():
            result: dict[str, Any] = retention_worker.handler(
                {"Records": records}, context or Context("regwarden-retention-worker")
            )
        failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
        for m in messages:
            if m["MessageId"] not in failed:
                self.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        return result, records

    def visible_again(self, records: list[dict[str, Any]]) -> None:
        """The visibility timeout of these (failed) records has passed."""
        for r in records:
            self.sqs.change_message_visibility(
                QueueUrl=self.queues["work"], ReceiptHandle=r["receiptHandle"], VisibilityTimeout=0
            )

    def waiting(self, queue: str) -> int:
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.queues[queue],
            AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
        )["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(
            attrs["ApproximateNumberOfMessagesNotVisible"]
        )

    def drain(self, queue: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            got = self.sqs.receive_message(
                QueueUrl=self.queues[queue], MaxNumberOfMessages=10, MessageAttributeNames=["All"]
            ).get("Messages", [])
            if not got:
                return out
            for m in got:
                self.sqs.delete_message(
                    QueueUrl=self.queues[queue], ReceiptHandle=m["ReceiptHandle"]
                )
            out += got

    # -- what the handlers printed --------------------------------------------------------

    def _lines(self) -> list[dict[str, Any]]:
        self.out += self.capsys.readouterr().out.splitlines()
        docs = []
        for line in self.out:
            if line.startswith("{"):
                try:
                    docs.append(json.loads(line))
                except ValueError:
                    continue
        return docs

    def metrics(self, name: str) -> list[float]:
        """Every value of one EMF metric the handlers emitted so far."""
        values: list[float] = []
        for doc in self._lines():
            if "_aws" in doc and name in doc:
                v = doc[name]
                values += v if isinstance(v, list) else [v]
        return values

    def logs(self, message: str) -> list[dict[str, Any]]:
        return [d for d in self._lines() if str(d.get("message", "")).startswith(message)]


def alert_bodies(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [json.loads(m["Body"]) for m in messages]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> ApiCalls:
    """Record the API calls of every boto3 client created from now on."""
    recorder = ApiCalls()
    original = boto3.session.Session.client

    def client(self: boto3.session.Session, *args: Any, **kwargs: Any) -> Any:
        made = original(self, *args, **kwargs)
        made.meta.events.register("before-call", recorder.hook)
        return made

    monkeypatch.setattr(boto3.session.Session, "client", client)
    return recorder


class SqsFaults(EcrLimitsProxy):
    """`EcrLimitsProxy` (ECR's limits) that also answers SendMessageBatch for SQS as SQS
    does when it cannot take some entries: those entries are not forwarded, and the answer
    lists them under `Failed`. `failing` maps a repository to how many sends of its entry
    fail; `batches` records the size of every SendMessageBatch."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self.failing: dict[str, int] = {}
        self.batches: list[int] = []

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        target = headers.get("X-Amz-Target") or headers.get("x-amz-target") or ""
        if target != "AmazonSQS.SendMessageBatch":
            return super().handle(method, path, headers, body)
        request = json.loads(body)
        self.batches.append(len(request["Entries"]))
        keep, failed = [], []
        for entry in request["Entries"]:
            repository = json.loads(entry["MessageBody"])["repository"]
            if self.failing.get(repository, 0) > 0:
                self.failing[repository] -= 1
                failed.append(
                    {
                        "Id": entry["Id"],
                        "SenderFault": False,
                        "Code": "InternalError",
                        "Message": "try again",
                    }
                )
            else:
                keep.append(entry)
        answer: dict[str, Any] = {"Successful": [], "Failed": failed}
        if keep:
            status, _, payload = self._forward(
                method, path, headers, json.dumps({**request, "Entries": keep}).encode()
            )
            assert status == 200, payload
            answer["Successful"] = json.loads(payload).get("Successful", [])
        return 200, {"Content-Type": "application/x-amz-json-1.0"}, json.dumps(answer).encode()


@pytest.fixture
def stack(
    moto: MotoServer,
    calls: ApiCalls,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Stack]:
    from aws_lambda_powertools.utilities import parameters

    from functions.aws import _retention

    proxy = SqsFaults(moto.endpoint_url).start()
    sqs, sns = moto.client("sqs"), moto.client("sns")
    topic = sns.create_topic(Name="regwarden-alerts")["TopicArn"]
    dlq = sqs.create_queue(QueueName="retention-dlq")["QueueUrl"]
    work = sqs.create_queue(
        QueueName="retention-work",
        Attributes={
            "VisibilityTimeout": "5400",
            "RedrivePolicy": json.dumps(
                {
                    "deadLetterTargetArn": f"arn:aws:sqs:{REGION}:{ACCOUNT}:retention-dlq",
                    "maxReceiveCount": "2",
                }
            ),
        },
    )["QueueUrl"]
    alerts = sqs.create_queue(QueueName="alerts")["QueueUrl"]
    sns.subscribe(
        TopicArn=topic,
        Protocol="sqs",
        Endpoint=f"arn:aws:sqs:{REGION}:{ACCOUNT}:alerts",
        Attributes={"RawMessageDelivery": "true"},
    )
    dynamodb = moto.client("dynamodb")
    dynamodb.create_table(**table_definition(TABLE))
    dynamodb.update_time_to_live(
        TableName=TABLE, TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE}
    )
    s3 = moto.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="regwarden.yaml", Body=POLICY.encode())

    env = {
        "AWS_ENDPOINT_URL": moto.endpoint_url,
        "AWS_ENDPOINT_URL_ECR": proxy.endpoint_url,
        "AWS_ENDPOINT_URL_SQS": proxy.endpoint_url,
        "REGWARDEN_POLICY": f"s3://{BUCKET}/regwarden.yaml",
        "REGWARDEN_TABLE": TABLE,
        "REGWARDEN_ALERTS_TOPIC": topic,
        "REGWARDEN_REGISTRY": REGISTRY_HOST,
        "REGWARDEN_RETENTION_QUEUE": work,
        "REGWARDEN_RETENTION_RESUME_DELAY": "0",
        "RETENTION_MODE": "apply",
        "POWERTOOLS_TRACE_DISABLED": "true",
        "POWERTOOLS_METRICS_NAMESPACE": "regwarden-test",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("REGWARDEN_RETENTION_PREFIXES", "REGWARDEN_RETENTION_INVENTORY", "ECR_DATA_PLANE"):
        monkeypatch.delenv(name, raising=False)
    _retention.reset()
    parameters.clear_caches()
    st = Stack(moto, proxy, calls, capsys, topic, {"work": work, "dlq": dlq, "alerts": alerts})
    st.ecr, st.sqs = moto.client("ecr"), sqs

    def ages(doc: dict[str, Any]) -> None:
        for detail in doc.get("imageDetails") or []:
            age = st.ages.get(detail["imageDigest"])
            if age is not None:
                detail["imagePushedAt"] = (NOW - timedelta(days=age)).timestamp()

    proxy.rewrite["DescribeImages"] = ages
    try:
        yield st
    finally:
        _retention.reset()
        parameters.clear_caches()
        proxy.stop()


def message(repository: str, run: str = "20261127T030000Z-abc123") -> dict[str, str]:
    return {"registry": REGISTRY_HOST, "repository": repository, "run": run}


def api_repository(stack: Stack) -> tuple[dict[str, str], set[str]]:
    """apps/api with `API_AGES`; (tag → digest, the digests its rules delete)."""
    stack.repository("apps/api")
    digests = {tag: stack.push("apps/api", tag, age) for tag, age in API_AGES.items()}
    newest = sorted(API_AGES, key=API_AGES.__getitem__)[:KEEP_MOST_RECENT]
    doomed = {digests[t] for t, age in API_AGES.items() if age > OLDER_THAN_DAYS} - {
        digests[t] for t in newest
    }
    return digests, doomed


def run_ecs_task(stack: Stack, image: str) -> None:
    """A running ECS task (Fargate) whose container runs `image`."""
    ecs = stack.moto.client("ecs")
    ecs.create_cluster(clusterName="prod")
    ecs.register_task_definition(
        family="api", containerDefinitions=[{"name": "api", "image": image, "memory": 128}]
    )
    ecs.run_task(
        cluster="prod",
        taskDefinition="api",
        launchType="FARGATE",
        networkConfiguration={"awsvpcConfiguration": {"subnets": ["subnet-12345678"]}},
    )


# -- fan-out -------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [5, 23])
def test_fan_out_queues_one_message_per_repository_with_rules(stack: Stack, count: int) -> None:
    from regwarden.retention import run_id_for

    with_rules = [f"apps/svc-{n:02d}" for n in range(count)]
    for name in [*with_rules, "docs/site", "other/tool"]:  # the last two have no retention
        stack.repository(name)
    scheduled = {"scheduledTime": "2026-11-27T03:00:00Z"}

    summary = stack.fan_out(scheduled)

    run = summary["run"]
    assert run.startswith("20261127T030000Z-")
    assert run == run_id_for(datetime(2026, 11, 27, 3, tzinfo=UTC), REGISTRY_HOST)
    assert summary["queued"] == count and summary["mode"] == "apply"
    bodies = [json.loads(m["Body"]) for m in stack.drain("work")]
    assert sorted(bodies, key=lambda b: b["repository"]) == [message(r, run) for r in with_rules]
    batches = math.ceil(count / 10)
    assert stack.calls.count("sqs", "SendMessageBatch") == batches == summary["send_calls"]
    assert stack.proxy.batches == [min(10, count - 10 * i) for i in range(batches)]
    assert stack.metrics("RepositoriesQueued") == [count]
    assert not ungranted(stack.calls, "RetentionFanoutRole"), ungranted(
        stack.calls, "RetentionFanoutRole"
    )

    again = stack.fan_out(scheduled)  # a retried invocation: the same run, so workers resume
    assert again["run"] == run
    later = stack.fan_out({"scheduledTime": "2026-11-28T03:00:00+00:00"})
    assert later["run"] != run and later["run"].startswith("20261128T030000Z-")


def test_fan_out_keeps_to_the_stack_scope_and_the_payload_globs(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGWARDEN_RETENTION_PREFIXES", "apps/,quarantine/apps/")
    for name in ("apps/a1", "apps/a2", "apps/b1", "scratch/tmp", "quarantine/apps/a1"):
        stack.repository(name)

    everything = stack.fan_out({"run": "manual-1"})
    assert everything["repositories"] == ["apps/a1", "apps/a2", "apps/b1", "quarantine/apps/a1"]
    assert everything["out_of_scope"] == 1  # scratch/tmp has rules, but IAM does not reach it
    stack.drain("work")

    some = stack.fan_out({"run": "manual-2", "globs": ["apps/a*"]})
    assert [json.loads(m["Body"]) for m in stack.drain("work")] == [
        message("apps/a1", "manual-2"),
        message("apps/a2", "manual-2"),
    ]
    assert some["queued"] == 2


def test_fan_out_sends_failed_entries_again_then_fails_naming_them(stack: Stack) -> None:
    names = [f"apps/svc-{n:02d}" for n in range(12)]
    for name in names:
        stack.repository(name)
    stack.proxy.failing = {"apps/svc-03": 1, "apps/svc-11": 2}  # fail once, fail twice

    summary = stack.fan_out({"run": "r-flaky"})

    assert summary["queued"] == 12
    assert sorted(json.loads(m["Body"])["repository"] for m in stack.drain("work")) == names
    # batch 1: 10 entries, then svc-03 again; batch 2: 2 entries, svc-11 twice more
    assert stack.proxy.batches == [10, 1, 2, 1, 1]
    assert summary["send_calls"] == 5

    stack.proxy.batches.clear()
    stack.proxy.failing = {"apps/svc-05": 99}
    from regwarden.errors import RegistryError

    with pytest.raises(RegistryError, match=r"1 retention messages not queued.*apps/svc-05"):
        stack.fan_out({"run": "r-broken"})
    assert stack.proxy.batches == [10, 1, 1, 2]  # three attempts for the failing entry
    assert len(stack.drain("work")) == 11  # the others are queued: the retry resumes them
    (warning, *_) = stack.logs("some retention messages were not queued")
    assert warning["failed"][0]["Code"] == "InternalError"


def test_fan_out_refuses_a_malformed_payload(stack: Stack) -> None:
    stack.repository("apps/a")
    with pytest.raises(IntakeError, match=r"got keys \['glob'\], expected only: globs, run"):
        stack.fan_out({"glob": "apps/**"})
    with pytest.raises(IntakeError, match="scheduledTime: got 'yesterday'"):
        stack.fan_out({"scheduledTime": "yesterday"})
    assert stack.waiting("work") == 0


# -- worker --------------------------------------------------------------------------------------


def test_plan_mode_deletes_nothing_and_logs_the_plan(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETENTION_MODE", "plan")
    digests, doomed = api_repository(stack)
    stack.send(message("apps/api"))

    result, _ = stack.deliver()

    assert result == {"batchItemFailures": []}
    assert stack.remaining("apps/api") == set(digests.values())
    assert stack.calls.count("ecr", "BatchDeleteImage") == 0
    (logged,) = stack.logs("retention planned")
    outcome = logged["outcome"]
    assert outcome["mode"] == "plan" and outcome["result"] is None
    assert outcome["planned_deletions"] == len(doomed)
    (repo,) = outcome["plan"]["repositories"]
    assert {d["digest"] for d in repo["decisions"]} == doomed
    assert {d["rule"] for d in repo["decisions"]} == {"olderThan"}
    assert stack.metrics("ImagesPlanned") == [len(doomed)]
    assert stack.metrics("ImagesDeleted") == []
    assert stack.drain("alerts") == []
    assert [a for a in stack.ledger().actions() if a.kind.startswith("retention")] == []
    assert stack.waiting("work") == 0


def test_apply_deletes_exactly_the_plan_and_keeps_what_ecs_runs(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    digests, doomed = api_repository(stack)
    running = digests["1.0.2"]  # 50 days old: an age rule would delete it
    assert running in doomed
    run_ecs_task(stack, f"{REGISTRY_HOST}/apps/api:1.0.2")

    monkeypatch.setenv("RETENTION_MODE", "plan")
    stack.send(message("apps/api", run="plan-first"))
    stack.deliver()
    (planned,) = stack.logs("retention planned")
    (repo,) = planned["outcome"]["plan"]["repositories"]
    plan = {d["digest"] for d in repo["decisions"]}
    assert plan == doomed - {running}
    assert planned["outcome"]["in_use"]["ecs:default"] >= 1

    from functions.aws import _retention

    _retention.reset()
    monkeypatch.setenv("RETENTION_MODE", "apply")
    stack.calls.seen.clear()
    stack.send(message("apps/api"))

    result, _ = stack.deliver()

    assert result == {"batchItemFailures": []}
    assert stack.remaining("apps/api") == set(digests.values()) - plan
    assert running in stack.remaining("apps/api")
    deleted = [
        i["imageDigest"] for b in stack.calls.of("ecr", "BatchDeleteImage") for i in b["imageIds"]
    ]
    assert sorted(deleted) == sorted(plan)
    (applied,) = stack.logs("retention applied")
    assert applied["outcome"]["result"]["deleted"] == len(plan)
    assert stack.metrics("ImagesDeleted") == [len(plan)]
    assert stack.metrics("BytesFreed") == [applied["outcome"]["result"]["bytes_freed"]]
    (alert,) = alert_bodies(stack.drain("alerts"))
    assert alert["team"] == "apps" and alert["action"] == "delete"
    assert f"{len(plan)} images deleted" in alert["summary"]
    assert not ungranted(stack.calls, "RetentionWorkerRole"), ungranted(
        stack.calls, "RetentionWorkerRole"
    )
    assert {"ecs:ListTasks", "ecs:DescribeTasks", "lambda:ListFunctions"} <= stack.calls.actions()


def test_the_same_message_twice_resumes_and_deletes_nothing_more(stack: Stack) -> None:
    digests, doomed = api_repository(stack)
    stack.send(message("apps/api"), message("apps/api"))  # SQS delivers at least once

    first, _ = stack.deliver()
    deletes = stack.calls.count("ecr", "BatchDeleteImage")
    second, _ = stack.deliver()

    assert first == second == {"batchItemFailures": []}
    assert stack.calls.count("ecr", "BatchDeleteImage") == deletes == 1
    assert stack.remaining("apps/api") == set(digests.values()) - doomed
    applied = [line["outcome"]["result"] for line in stack.logs("retention applied")]
    assert [(r["deleted"], r["resumed"]) for r in applied] == [(len(doomed), 0), (0, len(doomed))]
    assert len(stack.drain("alerts")) == 1  # one alert per run and team
    runs = [a for a in stack.ledger().actions() if a.kind == "retention-plan"]
    assert len(runs) == 1


def test_a_long_run_id_still_keeps_each_repository_its_own_run(stack: Stack) -> None:
    """Worker run ids are the fan-out's run plus the repository's tag; a long run id is cut,
    never the tag, so a second repository plans its own run instead of resuming another's."""
    doomed: dict[str, set[str]] = {}
    for repo in ("apps/api", "apps/web"):
        stack.repository(repo)
        pushed = [stack.push(repo, f"2.0.{i}", 40 + i) for i in range(4)]
        doomed[repo] = set(pushed[KEEP_MOST_RECENT:])
    long_run = "scheduled-by-hand-" + "x" * 50
    stack.send(message("apps/api", long_run), message("apps/web", long_run))

    result, _ = stack.deliver(batch_size=2)

    assert result == {"batchItemFailures": []}
    for repo, gone in doomed.items():
        assert not stack.remaining(repo) & gone, repo
    run_ids = [line["outcome"]["run_id"] for line in stack.logs("retention applied")]
    assert len(set(run_ids)) == 2 and all(len(r) <= 64 for r in run_ids)


def test_a_malformed_message_fails_alone_and_ends_in_the_dead_letter_queue(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGWARDEN_RETENTION_PREFIXES", "apps/,quarantine/apps/")
    digests, doomed = api_repository(stack)
    good = json.dumps(message("apps/api"))
    bad = {
        "not json": "body is not JSON",
        json.dumps(
            {**message("apps/api"), "registry": "999999999999.dkr.ecr.eu-west-1.amazonaws.com"}
        ): "expected '123456789012.dkr.ecr",
        json.dumps(message("scratch/tmp")): "outside this stack's scope",
        json.dumps({"registry": REGISTRY_HOST, "repository": "apps/api"}): "got run=None",
    }
    stack.send(good, *bad)

    result, records = stack.deliver(batch_size=5)

    failed = {f["itemIdentifier"] for f in result["batchItemFailures"]}
    by_body = {r["body"]: r["messageId"] for r in records}
    assert failed == {by_body[b] for b in bad}
    assert stack.remaining("apps/api") == set(digests.values()) - doomed  # the good one ran
    reasons = [line["reason"] for line in stack.logs("retention message failed")]
    for expected in bad.values():
        assert any(expected in r for r in reasons), (expected, reasons)

    # maxReceiveCount (2) attempts, then SQS moves them to the dead-letter queue
    stack.visible_again([r for r in records if r["messageId"] in failed])
    again, records = stack.deliver(batch_size=4)
    assert len(again["batchItemFailures"]) == 4
    stack.visible_again(records)
    assert stack.sqs.receive_message(QueueUrl=stack.queues["work"]).get("Messages", []) == []
    assert sorted(m["Body"] for m in stack.drain("dlq")) == sorted(bad)


def test_out_of_time_fails_the_record_and_the_redelivery_completes_the_run(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REGWARDEN_RETENTION_CONCURRENCY", "1")
    stack.repository("bulk/app")
    total = 150

    def push(i: int) -> str:
        return stack.push("bulk/app", f"v{i}", 1 if i < KEEP_MOST_RECENT else 40 + i)

    with ThreadPoolExecutor(max_workers=8) as pool:
        pushed = list(pool.map(push, range(total)))
    doomed = set(pushed[KEEP_MOST_RECENT:])
    stack.send(message("bulk/app"))

    def low_after_first_batch() -> int:  # 10 s left once a batch of deletions went out
        return 10_000 if stack.calls.count("ecr", "BatchDeleteImage") else 600_000

    first, _ = stack.deliver(context=Context("regwarden-retention-worker", low_after_first_batch))

    assert len(first["batchItemFailures"]) == 1
    assert len(stack.remaining("bulk/app")) == total - 100  # one whole batch, then it stopped
    (stopped,) = stack.logs("retention message failed")
    assert stopped["error"] == "RunInterrupted" and "resumes" in stopped["reason"]
    assert stack.drain("alerts") == []  # an interrupted run alerts nothing yet

    second, records = stack.deliver()  # visible again after REGWARDEN_RETENTION_RESUME_DELAY

    assert second == {"batchItemFailures": []}
    assert records[0]["attributes"]["ApproximateReceiveCount"] == "2"
    assert stack.remaining("bulk/app") == set(pushed) - doomed
    sent = [
        i["imageDigest"] for b in stack.calls.of("ecr", "BatchDeleteImage") for i in b["imageIds"]
    ]
    assert len(sent) == len(set(sent)) == len(doomed)  # nothing sent twice
    (done,) = stack.logs("retention applied")
    assert done["outcome"]["result"]["resumed"] == 100
    assert done["outcome"]["result"]["deleted"] == len(doomed) - 100
    (alert,) = alert_bodies(stack.drain("alerts"))
    assert f"{len(doomed)} images deleted" in alert["summary"]
    assert "sqs:ChangeMessageVisibility" in stack.calls.actions()
    assert not ungranted(stack.calls, "RetentionWorkerRole")


def test_a_tripped_guard_rail_deletes_nothing_and_alerts_the_team(stack: Stack) -> None:
    stack.repository("scratch/tmp")
    digests = {stack.push("scratch/tmp", f"t{i}", 10) for i in range(4)}  # 4 > maxDeletes 2
    stack.send(message("scratch/tmp"))

    result, _ = stack.deliver()

    assert result == {"batchItemFailures": []}  # a retry would trip again: not a failure
    assert stack.remaining("scratch/tmp") == digests
    assert stack.calls.count("ecr", "BatchDeleteImage") == 0
    (alert,) = alert_bodies(stack.drain("alerts"))
    assert alert["team"] == "scratch" and alert["outcome"] == "FAILED"
    assert "guard tripped" in " ".join(alert["reasons"])
    assert stack.metrics("GuardTripped") == [1]
    (logged,) = stack.logs("retention guard rail tripped")
    assert logged["outcome"]["tripped"] is True


def test_an_unreadable_inventory_or_a_bad_mode_deletes_nothing(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    from functions.aws import _retention

    digests, _ = api_repository(stack)
    monkeypatch.setenv("RETENTION_MODE", "delete")
    stack.send(message("apps/api"))
    result, records = stack.deliver()
    assert len(result["batchItemFailures"]) == 1
    (failed,) = stack.logs("retention message failed")
    assert failed["reason"] == "RETENTION_MODE: got 'delete', expected one of: plan, apply"

    _retention.reset()
    monkeypatch.setenv("RETENTION_MODE", "apply")
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECS", "http://127.0.0.1:9")  # ECS unreachable
    stack.visible_again(records)
    result, _ = stack.deliver()
    assert len(result["batchItemFailures"]) == 1
    reasons = [line["reason"] for line in stack.logs("retention message failed")]
    assert "inventory.aws region default: cannot list running images" in reasons[-1]
    assert stack.remaining("apps/api") == set(digests.values())
    assert stack.calls.count("ecr", "BatchDeleteImage") == 0


# -- pure parts, settings, packaging ----------------------------------------------------------


def test_schedule_payloads_and_run_ids() -> None:
    from regwarden.retention import ScheduledRun, bounded, run_id_for, scheduled_run

    assert scheduled_run(None) == ScheduledRun() == scheduled_run({})
    parsed = scheduled_run({"scheduledTime": "2026-11-27T03:00:00Z", "globs": ["apps/**"]})
    assert parsed.globs == ("apps/**",) and parsed.scheduled == datetime(
        2026, 11, 27, 3, tzinfo=UTC
    )
    for bad, match in (
        ([], "got list, expected an object"),
        ({"globs": "apps/**"}, "expected a list of repository globs"),
        ({"globs": [""]}, "expected non-empty strings"),
        ({"run": 7}, "payload run: got 7"),
        ({"run": "a run"}, "expected a run id: letters, digits"),
        ({"run": "r" * 54}, r"\(at most 53\)"),
        ({"scheduledTime": "2026-11-27T03:00:00"}, "expected an ISO 8601 time with a zone"),
    ):
        with pytest.raises(IntakeError, match=match):
            scheduled_run(bad)
    at = datetime(2026, 11, 27, 4, tzinfo=UTC)
    assert run_id_for(at, REGISTRY_HOST) == run_id_for(at.astimezone(), REGISTRY_HOST)
    assert run_id_for(at, REGISTRY_HOST) != run_id_for(at, "1.dkr.ecr.eu-west-1.amazonaws.com")
    assert bounded({"a": list(range(5))}, 2) == {"a": [0, 1, "... 3 more"]}


def test_retention_settings_fail_closed() -> None:
    from functions.aws._settings import RetentionSettings

    base = {"REGWARDEN_REGISTRY": REGISTRY_HOST}
    default = RetentionSettings.from_env(base)
    assert default.mode == "plan" and not default.apply  # nothing is deleted unless asked
    assert default.prefixes == ("",) and default.inventory == "aws"
    scoped = RetentionSettings.from_env({**base, "REGWARDEN_RETENTION_PREFIXES": "apps/,q/apps/"})
    assert scoped.prefixes == ("apps/", "q/apps/")
    for env, match in (
        ({}, "REGWARDEN_REGISTRY is not set"),
        ({"REGWARDEN_REGISTRY": "ghcr.io"}, "not an ECR registry host: got 'ghcr.io'"),
        ({**base, "RETENTION_MODE": "yes"}, "expected one of: plan, apply"),
        ({**base, "REGWARDEN_RETENTION_INVENTORY": "k8s"}, "expected one of: aws, policy"),
        ({**base, "REGWARDEN_RETENTION_CONCURRENCY": "0"}, "expected a whole number >= 1"),
    ):
        with pytest.raises(UsageError, match=match):
            RetentionSettings.from_env(env)


def test_handlers_defer_the_core_and_run_without_cli_packages() -> None:
    code = """
import sys
startup = set(sys.modules)
import functions.aws.retention_fanout, functions.aws.retention_worker
heavy = ("boto3", "regwarden", "pydantic", "httpx")  # X-Ray loads with the Tracer (#12 item 8)
print(sorted(m for m in heavy if m in sys.modules))
for name in ("typer", "rich", "click", "pygments", "starlette", "uvicorn", "kubernetes"):
    sys.modules[name] = None  # the layer ships none of them
import functions.aws._retention, regwarden.retention, regwarden.runtime, regwarden.store
import regwarden.providers.ecr, regwarden.notify
loaded = [m for m in set(sys.modules) - startup if m.split(".")[0] in ("google", "azure", "grpc")]
print(",".join(loaded) or "clean")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[]", "clean"]
