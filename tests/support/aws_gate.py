"""The deployed AWS stack on loopback, for tests of the Lambda handlers (`functions/aws/`).

Real parts: moto serves ECR (behind `EcrLimitsProxy`, so ECR's paging and batch limits
hold), DynamoDB, SNS, SQS, S3 and Secrets Manager over boto3's real wire protocol; a local
CNCF distribution (`docker-registry`) is ECR's `/v2/` data plane; the webhook channel posts
to a loopback HTTP sink.

    from support import aws_gate
    local, aws = aws_gate.local, aws_gate.aws       # register the fixtures

    @pytest.fixture
    def aws_policy() -> str:                        # each module brings its policy
        return POLICY                               # `{topic}`: the alerts topic ARN

The `aws` fixture also needs `moto`, `ecr_proxy` (`support.moto_server`) registered.
"""

from __future__ import annotations

import contextlib
import json
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest

from regwarden.devtools import ImageBlobs, IndexBlobs, LocalRegistry, push_image
from regwarden.oci import RegistryClient
from regwarden.store import DynamoLedger
from regwarden.store._dynamo import TTL_ATTRIBUTE, table_definition
from support.loopback import LoopbackServer
from support.moto_server import (
    ACCOUNT,
    REGION,
    EcrLimitsProxy,
    MotoServer,
    put_manifest,
)

ROOT = Path(__file__).resolve().parents[2]
if (
    str(ROOT) not in sys.path
):  # `functions/` imports from the repo root (`python -m pytest` adds it)
    sys.path.insert(0, str(ROOT))

EVENTS = ROOT / "events" / "aws"
TABLE = "regwarden"
BUCKET = "regwarden-config"
HMAC_KEY = "webhook-signing-key"


@dataclass
class LambdaContext:
    """What the Lambda runtime passes as `context` (the attributes Powertools reads)."""

    function_name: str
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    remaining_ms: int = 120_000

    @property
    def invoked_function_arn(self) -> str:
        return f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{self.function_name}"

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


class Sink:
    """A loopback webhook receiver; `status` is what it answers."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.status = 204
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if sink.status < 300:
                    sink.received.append((dict(self.headers), body))
                self.send_response(sink.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = LoopbackServer(Handler).start()

    @property
    def url(self) -> str:
        return f"{self.server.url}/hook"

    def close(self) -> None:
        self.server.stop()


@dataclass
class Aws:
    """The deployed stack, as moto resources, and helpers to drive the handlers."""

    moto: MotoServer
    proxy: EcrLimitsProxy
    oci: RegistryClient
    sink: Sink
    topic: str
    queues: dict[str, str]
    """name → queue URL: `events` (EventBridge target), `recheck`, `notify`, team queues."""
    capsys: pytest.CaptureFixture[str]
    ecr: Any = None
    sqs: Any = None

    def queue_arn(self, name: str) -> str:
        return f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"

    # -- images ----------------------------------------------------------------------------

    def repository(self, name: str) -> None:
        self.ecr.create_repository(repositoryName=name)

    def push(self, repository: str, image: ImageBlobs, tag: str | None) -> str:
        """Blobs into the data plane, the manifest into ECR (as `docker push` would)."""
        push_image(self.oci, repository, image, tag)
        return put_manifest(
            self.ecr, repository, image.manifest, tag=tag, media_type=image.media_type
        )

    def push_index(self, repository: str, index: IndexBlobs, tag: str | None) -> str:
        """A multi-arch push as ECR sees it: each child manifest by digest (untagged),
        then the index under `tag`."""
        push_image(self.oci, repository, index, tag)
        for child in index.children:
            put_manifest(self.ecr, repository, child.manifest, media_type=child.media_type)
        return put_manifest(
            self.ecr, repository, index.manifest, tag=tag, media_type=index.media_type
        )

    def tags(self, repository: str, digest: str) -> list[str]:
        found = self.ecr.describe_images(
            repositoryName=repository, imageIds=[{"imageDigest": digest}]
        )["imageDetails"]
        return sorted(found[0].get("imageTags") or [])

    def present(self, repository: str, digest: str) -> bool:
        try:
            self.ecr.describe_images(repositoryName=repository, imageIds=[{"imageDigest": digest}])
        except self.ecr.exceptions.ImageNotFoundException:
            return False
        except self.ecr.exceptions.RepositoryNotFoundException:
            return False
        return True

    def scan_result(self, repository: str, digest: str, severities: list[str]) -> None:
        """Start a scan (moto needs one) and configure its findings through moto's API."""
        # the gate may have started one already (once a day per image, as on ECR)
        with contextlib.suppress(self.ecr.exceptions.LimitExceededException):
            self.ecr.start_image_scan(repositoryName=repository, imageId={"imageDigest": digest})
        self.moto.set_ecr_scan_findings(
            {
                "registryId": ACCOUNT,
                "repositoryName": repository,
                "imageId": {"imageDigest": digest},
                "imageScanStatus": {"status": "COMPLETE", "description": "done"},
                "imageScanFindings": {
                    "imageScanCompletedAt": datetime.now(UTC).timestamp(),
                    "findingSeverityCounts": {},
                    "findings": [
                        {
                            "name": f"CVE-2099-{n:04d}",
                            "severity": severity,
                            "attributes": [
                                {"key": "package_name", "value": f"pkg{n}"},
                                {"key": "package_version", "value": "1.0"},
                            ],
                        }
                        for n, severity in enumerate(severities)
                    ],
                },
            }
        )

    # -- events ----------------------------------------------------------------------------

    def sample(
        self,
        name: str,
        *,
        repository: str,
        digest: str,
        tag: str | None = None,
        time: datetime | None = None,
    ) -> dict[str, Any]:
        """An `events/aws/` sample adapted to this account, region, repository and image."""
        event: dict[str, Any] = json.loads((EVENTS / name).read_text())
        event["id"] = str(uuid.uuid4())
        event["account"], event["region"] = ACCOUNT, REGION
        event["time"] = (time or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
        arn = f"arn:aws:ecr:{REGION}:{ACCOUNT}:repository/{repository}"
        detail = event["detail"]
        if event["source"] == "aws.inspector2":
            detail["repository-name"] = arn
        else:
            detail["repository-name"] = repository
        if event["resources"]:
            event["resources"] = [arn]
        detail["image-digest"] = digest
        if "image-tag" in detail:
            detail["image-tag"] = tag
            if tag is None:
                del detail["image-tag"]
        if "image-tags" in detail:
            detail["image-tags"] = [tag] if tag else []
        return event

    def sqs_event(self, *bodies: str, queue: str = "events") -> dict[str, Any]:
        """Send `bodies` through the real queue, receive them, and shape them as the
        Lambda SQS event (what the event source mapping hands the function)."""
        url = self.queues[queue]
        for body in bodies:
            self.sqs.send_message(QueueUrl=url, MessageBody=body)
        return self.receive(queue, len(bodies))

    def receive(self, queue: str, count: int) -> dict[str, Any]:
        url = self.queues[queue]
        messages: list[dict[str, Any]] = []
        for _ in range(20):
            if len(messages) >= count:
                break
            got = self.sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=10,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
                WaitTimeSeconds=0,
            ).get("Messages", [])
            messages += got
        assert len(messages) == count, f"expected {count} messages in {queue}, got {len(messages)}"
        records = lambda_records(messages, self.queue_arn(queue))
        for m in messages:
            self.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        return {"Records": records}

    def drain(self, queue: str) -> list[dict[str, Any]]:
        """Every message waiting in `queue` (alerts read back through a subscription)."""
        out: list[dict[str, Any]] = []
        while True:
            got = self.sqs.receive_message(
                QueueUrl=self.queues[queue],
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                AttributeNames=["All"],
            ).get("Messages", [])
            if not got:
                return out
            for m in got:
                self.sqs.delete_message(
                    QueueUrl=self.queues[queue], ReceiptHandle=m["ReceiptHandle"]
                )
            out += got

    def _moto_queue(self, queue: str) -> Any:
        # moto runs in this process (ThreadedMotoServer): its SQS backend is readable here
        from moto.sqs.models import sqs_backends

        return sqs_backends[ACCOUNT][REGION].queues[queue]

    def delayed(self, queue: str) -> list[tuple[dict[str, Any], int]]:
        """The messages still delayed on `queue` (body, DelaySeconds they were sent with):
        what a handler scheduled, which SQS's API hides until the delay is over."""
        return [
            (json.loads(m.body), round((m.delayed_until - m.sent_timestamp) / 1000))
            for m in self._moto_queue(queue)._messages
            if m.delayed
        ]

    def elapse(self, queue: str) -> None:
        """End the delay of every message on `queue` (time passing, as far as SQS knows)."""
        for m in self._moto_queue(queue)._messages:
            m.delayed_until = 0.0

    def invoke(self, function: str, event: dict[str, Any]) -> dict[str, Any]:
        module = __import__(f"functions.aws.{function}", fromlist=["handler"])
        result: dict[str, Any] = module.handler(event, LambdaContext(f"regwarden-{function}"))
        return result

    def gate(self, function: str, *events: dict[str, Any]) -> dict[str, Any]:
        return self.invoke(function, self.sqs_event(*(json.dumps(e) for e in events)))

    def ledger(self) -> DynamoLedger:
        return DynamoLedger(TABLE, client=self.moto.client("dynamodb"))

    def metrics(self) -> list[dict[str, Any]]:
        """The CloudWatch EMF blobs the handlers printed (Powertools Metrics)."""
        out = []
        for line in self.capsys.readouterr().out.splitlines():
            if line.startswith("{") and '"_aws"' in line:
                out.append(json.loads(line))
        return out


def lambda_records(messages: list[dict[str, Any]], queue_arn: str) -> list[dict[str, Any]]:
    """SQS messages (as `receive_message` returns them) shaped as the records of the Lambda
    SQS event (what the event source mapping hands the function)."""
    return [
        {
            "messageId": m["MessageId"],
            "receiptHandle": m["ReceiptHandle"],
            "body": m["Body"],
            "attributes": m["Attributes"],
            "messageAttributes": {
                k: {"stringValue": v.get("StringValue"), "dataType": v["DataType"]}
                for k, v in (m.get("MessageAttributes") or {}).items()
            },
            "md5OfBody": m["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": REGION,
        }
        for m in messages
    ]


def attributes(message: dict[str, Any]) -> dict[str, str]:
    return {k: v["StringValue"] for k, v in (message.get("MessageAttributes") or {}).items()}


@pytest.fixture(scope="module")
def local() -> Iterator[LocalRegistry]:
    with LocalRegistry() as reg:
        yield reg


@pytest.fixture
def aws(
    aws_policy: str,
    moto: MotoServer,
    ecr_proxy: EcrLimitsProxy,
    local: LocalRegistry,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Aws]:
    from aws_lambda_powertools.utilities import parameters

    from functions.aws import _app

    sink = Sink()
    sqs, sns = moto.client("sqs"), moto.client("sns")
    topic = sns.create_topic(Name="regwarden-alerts")["TopicArn"]
    queues = {
        name: sqs.create_queue(QueueName=name)["QueueUrl"]
        for name in ("events", "recheck", "notify", "alpha-alerts", "bravo-alerts")
    }
    subscriptions = {
        "notify": None,
        "alpha-alerts": {"team": ["alpha"]},
        "bravo-alerts": {"team": ["bravo"], "severity": ["high", "critical", "unknown"]},
    }
    for name, filter_policy in subscriptions.items():
        attrs = {"RawMessageDelivery": "true"}
        if filter_policy is not None:
            attrs["FilterPolicy"] = json.dumps(filter_policy)
        sns.subscribe(
            TopicArn=topic,
            Protocol="sqs",
            Endpoint=f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}",
            Attributes=attrs,
        )
    dynamodb = moto.client("dynamodb")
    dynamodb.create_table(**table_definition(TABLE))
    dynamodb.update_time_to_live(
        TableName=TABLE,
        TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
    )
    s3 = moto.client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="regwarden.yaml", Body=aws_policy.format(topic=topic).encode())
    secrets = moto.client("secretsmanager")
    secrets.create_secret(Name="regwarden/hook-url", SecretString=sink.url)
    secrets.create_secret(Name="regwarden/hmac", SecretString=HMAC_KEY)

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.endpoint_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL_ECR", ecr_proxy.endpoint_url)
    monkeypatch.setenv("REGWARDEN_POLICY", f"s3://{BUCKET}/regwarden.yaml")
    monkeypatch.setenv("REGWARDEN_TABLE", TABLE)
    monkeypatch.setenv("REGWARDEN_ALERTS_TOPIC", topic)
    monkeypatch.setenv("REGWARDEN_RECHECK_QUEUE", queues["recheck"])
    monkeypatch.setenv("REGWARDEN_MAX_RECEIVES", "3")
    monkeypatch.setenv("ECR_DATA_PLANE", local.host)
    monkeypatch.setenv("POWERTOOLS_TRACE_DISABLED", "true")
    monkeypatch.setenv("POWERTOOLS_METRICS_NAMESPACE", "regwarden-test")
    monkeypatch.delenv("REGWARDEN_SECRET_REGWARDEN_HOOK_URL", raising=False)
    _app.reset()
    parameters.clear_caches()  # type: ignore[no-untyped-call]
    with RegistryClient(local.host) as oci:
        env = Aws(moto, ecr_proxy, oci, sink, topic, queues, capsys)
        env.ecr, env.sqs = moto.client("ecr"), sqs
        try:
            yield env
        finally:
            _app.reset()
            parameters.clear_caches()  # type: ignore[no-untyped-call]
            sink.close()
