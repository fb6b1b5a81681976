"""The AWS stack on loopback for the cold-start bench, as the handler tests build it
(`tests/support/aws_gate.py`): moto in server mode (DynamoDB, S3, SNS, SQS, ECR's control
plane), a local `docker-registry` as ECR's `/v2/` data plane, the policy in S3, an image
pushed, and an EventBridge "ECR Image Action" in an SQS record taken from a real queue.
Both servers sit behind a `RecordingProxy`, so the bench sees every request a child makes.

The recorded path is the usual first record on ECR with scan on push: the push event
arrives before the scan has finished, so the image is held (PENDING: retagged), the alert
goes to the alerts topic and the recheck to the recheck queue — DynamoDB, S3, ECR (control
and data plane), SNS and SQS on one record.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from _cold_proxy import RecordingProxy
from moto.server import ThreadedMotoServer
from support.aws_gate import EVENTS, lambda_records
from support.cfn import load_template
from support.moto_server import ACCOUNT, DUMMY_CREDENTIALS, REGION, MotoServer, put_manifest

from regwarden.devtools import LocalRegistry, make_image, push_image
from regwarden.oci import RegistryClient
from regwarden.store._dynamo import TTL_ATTRIBUTE, table_definition

ROOT = Path(__file__).resolve().parents[1]
FUNCTION = "on_push"
FUNCTION_NAME = f"regwarden-{FUNCTION}"
FUNCTION_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{FUNCTION_NAME}"
TABLE = "regwarden"
BUCKET = "regwarden-config"
REPOSITORY = "bench/app"
TAG = "1.0.0"
TRACE_ID = "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8"
POLICY = """\
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


def tracing_active(function: str = "OnPushFunction") -> bool:
    """Whether `template.yaml` turns X-Ray tracing on for `function` (its own `Tracing`,
    else the `Globals`)."""
    template = load_template()
    own = template["Resources"][function].get("Properties", {}).get("Tracing")
    shared = template.get("Globals", {}).get("Function", {}).get("Tracing")
    return bool((own or shared) == "Active")


def template_variables() -> dict[str, str]:
    """The plain (string) environment variables the template gives every function."""
    variables = load_template().get("Globals", {}).get("Function", {})
    found = variables.get("Environment", {}).get("Variables", {})
    return {k: v for k, v in found.items() if isinstance(v, str)}


class Stack:
    """Servers started once; `prepare()` resets the AWS state before each child."""

    def __init__(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._moto = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self._registry = LocalRegistry()
        self._xray = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.moto: MotoServer | None = None
        self.aws: RecordingProxy | None = None
        self.data_plane: RecordingProxy | None = None
        self.image = make_image(seed=1201)
        self.tracing = tracing_active()
        self.topic = ""
        self.queues: dict[str, str] = {}

    def __enter__(self) -> Stack:
        self._moto.start()
        host, port = self._moto.get_host_and_port()
        self.moto = MotoServer(endpoint_url=f"http://{host}:{port}")
        self._registry.start()
        self.aws = RecordingProxy(f"{host}:{port}").start()
        self.data_plane = RecordingProxy(self._registry.host).start()
        # the X-Ray SDK sends segments over UDP to its daemon: a bound socket takes them
        self._xray.bind(("127.0.0.1", 0))
        with RegistryClient(self._registry.host) as oci:
            push_image(oci, REPOSITORY, self.image, TAG)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for proxy in (self.aws, self.data_plane):
            if proxy is not None:
                proxy.stop()
        if self.moto is not None:
            self.moto.close()
        self._moto.stop()
        self._registry.stop()
        self._xray.close()

    def _ready(self) -> tuple[MotoServer, RecordingProxy, RecordingProxy]:
        assert self.moto and self.aws and self.data_plane, "use Stack in a with block"
        return self.moto, self.aws, self.data_plane

    def prepare(self) -> dict[str, Any]:
        """Fresh AWS state (table, policy, topic, queues, the image in ECR) and the Lambda
        SQS event of its push, as the event source mapping hands it to the function. The
        setup talks to moto directly: the proxies record nothing of it."""
        moto, aws, data_plane = self._ready()
        moto.reset()
        dynamodb = moto.client("dynamodb")
        dynamodb.create_table(**table_definition(TABLE))
        dynamodb.update_time_to_live(
            TableName=TABLE,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )
        topic = moto.client("sns").create_topic(Name="regwarden-alerts")["TopicArn"]
        s3 = moto.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        policy = POLICY.format(topic=topic).encode()
        s3.put_object(Bucket=BUCKET, Key="regwarden.yaml", Body=policy)
        sqs = moto.client("sqs")
        self.queues = {n: sqs.create_queue(QueueName=n)["QueueUrl"] for n in ("events", "recheck")}
        self.topic = topic
        ecr = moto.client("ecr")
        ecr.create_repository(repositoryName=REPOSITORY)
        digest = put_manifest(
            ecr, REPOSITORY, self.image.manifest, tag=TAG, media_type=self.image.media_type
        )
        sqs.send_message(QueueUrl=self.queues["events"], MessageBody=json.dumps(self._push(digest)))
        messages = sqs.receive_message(
            QueueUrl=self.queues["events"], MaxNumberOfMessages=1, AttributeNames=["All"]
        )["Messages"]
        for message in messages:
            sqs.delete_message(
                QueueUrl=self.queues["events"], ReceiptHandle=message["ReceiptHandle"]
            )
        aws.take()
        data_plane.take()
        return {"Records": lambda_records(messages, f"arn:aws:sqs:{REGION}:{ACCOUNT}:events")}

    def _push(self, digest: str) -> dict[str, Any]:
        """The EventBridge sample of a push, for this account, region and image."""
        event: dict[str, Any] = json.loads((EVENTS / "ecr-image-push.json").read_text())
        event.update(
            id=str(uuid.uuid4()),
            account=ACCOUNT,
            region=REGION,
            time=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        event["detail"].update({"repository-name": REPOSITORY, "image-digest": digest})
        event["detail"]["image-tag"] = TAG
        return event

    def environment(self) -> dict[str, str]:
        """A child's environment: what Lambda sets for the function (template variables,
        its name, task root, X-Ray daemon and trace header), plus the stack's endpoints.
        Nothing AWS- or Powertools-related is inherited from this process, nor a setting
        that stops bytecode caching (every run would then recompile: product and floor both
        start from cached bytecode, as the warm-up round intends)."""
        _, aws, data_plane = self._ready()
        prefixes = ("AWS_", "POWERTOOLS_", "REGWARDEN_", "_X_AMZN", "LAMBDA_", "ECR_")
        dropped = ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(prefixes) and k not in dropped
        }
        env.update(DUMMY_CREDENTIALS)
        env.update(template_variables())
        sampled = "1" if self.tracing else "0"
        env.update(
            PYTHONPATH=str(ROOT),
            AWS_CONFIG_FILE="/nonexistent/regwarden-bench-aws-config",
            AWS_SHARED_CREDENTIALS_FILE="/nonexistent/regwarden-bench-aws-creds",
            AWS_ENDPOINT_URL=aws.url,
            AWS_REGION=REGION,
            AWS_LAMBDA_FUNCTION_NAME=FUNCTION_NAME,
            AWS_LAMBDA_FUNCTION_MEMORY_SIZE="512",
            LAMBDA_TASK_ROOT=str(ROOT),
            AWS_XRAY_DAEMON_ADDRESS=f"127.0.0.1:{self._xray.getsockname()[1]}",
            AWS_XRAY_CONTEXT_MISSING="LOG_ERROR",
            _X_AMZN_TRACE_ID=f"{TRACE_ID};Sampled={sampled}",
            REGWARDEN_POLICY=f"s3://{BUCKET}/regwarden.yaml",
            REGWARDEN_TABLE=TABLE,
            REGWARDEN_ALERTS_TOPIC=self.topic,
            REGWARDEN_RECHECK_QUEUE=self.queues["recheck"],
            ECR_DATA_PLANE=data_plane.host,
        )
        return env
