"""Kill points on the ECR path of the gate: the Lambda handlers on moto, interrupted between
the writes of an action, then the same SQS message delivered again.

ECR's tag writes are control-plane calls (`PutImage` adds or moves a tag,
`BatchDeleteImage` removes one), and the alert is an SNS `Publish`, so the kill points sit
in front of moto: `WriteGate` is the `EcrLimitsProxy` (the functions' ECR and SNS endpoint)
that numbers those writes per repository and, at the Nth, answers an error (the write not
made, or made and its answer lost) or holds it (before forwarding it, or once moto has
answered it) while the test kills the handler's process.

    from support import chaos_ecr
    ecr_proxy = chaos_ecr.write_gate     # the `aws` fixture's ECR endpoint, with kill points

- `EventSource` plays the SQS event source mapping: it receives without deleting, deletes
  what the handler acknowledged, and ends a message's visibility timeout so SQS hands the
  same message (same id, receive count + 1) to the next invocation.
- `Child` runs one invocation of a handler in a child process, which the test SIGKILLs
  while the proxy holds a write.
- `Clocks` moves the handler's and Powertools' clocks forward for a redelivery: SQS brings a
  message back only after its visibility timeout, by when the killed invocation's in-progress
  idempotency record has expired (its Lambda timeout is shorter).
- `Figures` counts trials, lost events, half-done actions, duplicated verdicts and alerts,
  and prints one JSON line per test.
"""

from __future__ import annotations

import datetime as _datetime
import importlib
import json
import os
import pkgutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs

import pytest

from support.moto_server import REGISTRY_HOST, EcrLimitsProxy, MotoServer

ROOT = Path(__file__).resolve().parents[2]

ECR_WRITES = frozenset({"PutImage", "BatchDeleteImage"})
"""The ECR API calls that change what a tag names (every write of `retag` and roll-back)."""
PUBLISH = "Publish"
"""SNS: the alert on the alerts topic, the last write of a handled event."""
FUNCTION_TIMEOUT_MS = 120_000
"""The gate functions' `Timeout` in template.yaml: the killed invocation's Lambda context."""
VISIBILITY_TIMEOUT = _datetime.timedelta(seconds=720)
"""The gate queues' `VisibilityTimeout` in template.yaml: when SQS hands a message again."""
RECOVERY_TICK = _datetime.timedelta(minutes=5)
"""The recovery function's schedule in template.yaml."""
HOLD_LIMIT = 60.0
"""How long a held write waits for the test before it gives up (a test that died)."""
_ECR_TARGET_PREFIX = "AmazonEC2ContainerRegistry_V20150921."

Phase = Literal["before", "after"]


# -- ECR and SNS with kill points ----------------------------------------------------------


@dataclass
class Write:
    """One write the proxy saw: its number in the repository, operation and tag."""

    n: int
    operation: str
    repository: str
    tag: str = ""

    @property
    def label(self) -> str:
        if self.operation == PUBLISH:
            return "publish alert"
        verb = "delete tag" if self.operation == "BatchDeleteImage" else "put tag"
        return f"{verb} {self.tag}"


@dataclass
class Fault:
    """At the `nth` write to `repository`: answer an error (`hold=False`) or hold the
    request until `release` (`hold=True`); `phase` says whether moto got the write first."""

    repository: str
    nth: int
    phase: Phase
    hold: bool
    reached: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    write: Write | None = None


def _ecr_write(operation: str, body: bytes) -> tuple[str, str]:
    """(repository, tag) of an ECR write."""
    request = json.loads(body or b"{}")
    tag = request.get("imageTag")
    if operation == "BatchDeleteImage":
        ids = request.get("imageIds") or [{}]
        tag = ids[0].get("imageTag") or ids[0].get("imageDigest")
    return str(request.get("repositoryName")), str(tag)


def _sns_publish(body: bytes) -> str | None:
    """The `repository` message attribute of an SNS Publish (query protocol), else None."""
    form = {k: v[0] for k, v in parse_qs(body.decode(errors="replace")).items()}
    if form.get("Action") != PUBLISH:
        return None
    for key, name in form.items():
        if (
            key.startswith("MessageAttributes.entry.")
            and key.endswith(".Name")
            and name == "repository"
        ):
            return form.get(key.removesuffix(".Name") + ".Value.StringValue")
    return None


def _ecr_error(message: str) -> tuple[int, dict[str, str], bytes]:
    """An ECR error botocore does not retry: it reaches the handler on the first answer."""
    code = "InvalidParameterException"
    headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-ErrorType": code}
    return 400, headers, json.dumps({"__type": code, "message": message}).encode()


def _sns_error(message: str) -> tuple[int, dict[str, str], bytes]:
    """The same for SNS (query protocol: an XML error document)."""
    xml = (
        '<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/"><Error>'
        f"<Type>Sender</Type><Code>InvalidParameter</Code><Message>{message}</Message>"
        "</Error><RequestId>chaos</RequestId></ErrorResponse>"
    )
    return 400, {"Content-Type": "text/xml"}, xml.encode()


class WriteGate(EcrLimitsProxy):
    """`EcrLimitsProxy` that numbers ECR's tag writes and SNS publishes per repository and
    applies one armed `Fault` to the write it names."""

    def __init__(self, upstream: str) -> None:
        super().__init__(upstream)
        self._guard = threading.Lock()
        self._writes: dict[str, list[Write]] = {}
        self._faults: list[Fault] = []
        self._refused: set[tuple[str, str]] = set()
        server = self._server.server

        def quiet(request: Any, client_address: Any) -> None:
            # a killed client's socket: writing the held answer to it fails, as it should
            if not isinstance(sys.exc_info()[1], BrokenPipeError | ConnectionResetError):
                ThreadingHTTPServer.handle_error(server, request, client_address)

        server.handle_error = quiet  # type: ignore[method-assign]

    def arm(self, repository: str, nth: int, *, phase: Phase, hold: bool) -> Fault:
        fault = Fault(repository, nth, phase, hold)
        with self._guard:
            self._faults.append(fault)
        return fault

    def refuse(self, repository: str, label: str) -> None:
        """Answer every write to `repository` with this label with an error, unforwarded,
        until `allow` (a registry that keeps refusing one step)."""
        with self._guard:
            self._refused.add((repository, label))

    def allow(self, repository: str, label: str) -> None:
        with self._guard:
            self._refused.discard((repository, label))

    def writes(self, repository: str) -> list[Write]:
        with self._guard:
            return list(self._writes.get(repository, ()))

    def stop(self) -> None:
        with self._guard:
            for fault in self._faults:  # a held request must not outlive the test
                fault.release.set()
        super().stop()

    def handle(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict[str, str], bytes]:
        target = headers.get("X-Amz-Target") or headers.get("x-amz-target") or ""
        operation = target.removeprefix(_ECR_TARGET_PREFIX)
        if target.startswith(_ECR_TARGET_PREFIX) and operation in ECR_WRITES:
            repository, tag = _ecr_write(operation, body)
            error = _ecr_error
        elif not target and (published := _sns_publish(body)) is not None:
            operation, repository, tag = PUBLISH, published, ""
            error = _sns_error
        else:
            return super().handle(method, path, headers, body)
        with self._guard:
            seen = self._writes.setdefault(repository, [])
            write = Write(len(seen) + 1, operation, repository, tag)
            seen.append(write)
            fault = next(
                (f for f in self._faults if (f.repository, f.nth) == (repository, write.n)), None
            )
            if fault is not None:
                self._faults.remove(fault)
                fault.write = write
            refused = (repository, write.label) in self._refused
        injected = error(f"chaos: fault injected at write {write.n} ({write.label})")
        if refused:
            return injected
        if fault is None:
            return super().handle(method, path, headers, body)
        answer = injected
        if fault.phase == "after":
            answer = super().handle(method, path, headers, body)
            if not fault.hold:
                answer = injected  # it landed; the answer is lost
        if fault.hold:
            fault.reached.set()
            fault.release.wait(HOLD_LIMIT)  # the client is gone by then: nobody reads this
        return answer


@pytest.fixture(name="ecr_proxy")
def write_gate(moto: MotoServer) -> Iterator[WriteGate]:
    """A `WriteGate` in front of the (freshly reset) moto server, as the fixture `ecr_proxy`:
    the `aws` fixture points the functions' ECR endpoint at it."""
    proxy = WriteGate(moto.endpoint_url)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


# -- SQS as the event source mapping uses it ------------------------------------------------


class EventSource:
    """One SQS queue feeding one function, as Lambda's event source mapping drives it:
    messages stay in flight while the function runs; acknowledged records are deleted;
    the rest come back (same message, receive count + 1) once their visibility ends."""

    def __init__(self, sqs: Any, url: str, arn: str) -> None:
        self.sqs = sqs
        self.url = url
        self.arn = arn

    def send(self, body: str) -> str:
        return str(self.sqs.send_message(QueueUrl=self.url, MessageBody=body)["MessageId"])

    def receive(self) -> dict[str, Any] | None:
        """The next message as a Lambda SQS event (one record), left in flight."""
        from support.aws_gate import lambda_records

        got = self.sqs.receive_message(
            QueueUrl=self.url,
            MaxNumberOfMessages=1,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
            WaitTimeSeconds=0,
        ).get("Messages", [])
        if not got:
            return None
        return {"Records": lambda_records(got, self.arn)}

    def acknowledge(self, event: dict[str, Any], result: dict[str, Any] | None) -> bool:
        """Delete the records the function reported done (`result` None: it never answered);
        True when every record was acknowledged."""
        failed = {f["itemIdentifier"] for f in (result or {}).get("batchItemFailures", [])}
        done = result is not None
        for record in event["Records"]:
            if result is not None and record["messageId"] not in failed:
                self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=record["receiptHandle"])
            else:
                done = False
        return done

    def time_out(self, event: dict[str, Any]) -> None:
        """The visibility timeout of `event`'s messages is over: SQS may hand them again."""
        for record in event["Records"]:
            self.sqs.change_message_visibility(
                QueueUrl=self.url, ReceiptHandle=record["receiptHandle"], VisibilityTimeout=0
            )

    def left(self) -> int:
        """Messages not yet deleted (visible or in flight)."""
        attrs = self.sqs.get_queue_attributes(
            QueueUrl=self.url,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )["Attributes"]
        return sum(int(v) for v in attrs.values())


# -- a handler in a child process -----------------------------------------------------------

# The child is a warm Lambda container: the handler imported and its cold-start state built
# (policy, ledger, clients), then it waits for its one invocation on stdin. Nothing of the
# test's support (no moto) is imported: the next trial's child warms up while this one runs.
_DRIVER = """
import json, logging, sys, uuid
logging.basicConfig(level=logging.WARNING)  # a record's failure shows in the child's log
function, arn, remaining_ms = sys.argv[1], sys.argv[2], int(sys.argv[3])
module = __import__("functions.aws." + function, fromlist=["handler"])
from functions.aws import _app


class Context:  # what Powertools and the functions read of the Lambda context
    function_name = "regwarden-" + function
    memory_limit_in_mb = 512
    aws_request_id = str(uuid.uuid4())
    invoked_function_arn = arn

    def get_remaining_time_in_millis(self):
        return remaining_ms


_app.start(function, Context())  # the cold start, as an earlier invocation left it
print("ready", flush=True)
event = json.load(sys.stdin)
print(json.dumps({"result": module.handler(event, Context())}), flush=True)
"""


class Child:
    """One Lambda invocation of `functions.aws.<function>` in a child process, with the
    test's environment (moto, the proxy, the data plane)."""

    def __init__(self, function: str, *, arn: str, workdir: Path) -> None:
        env = dict(os.environ)
        # this tree first (its `shared/` too, whatever the venv's editable install names)
        paths = [str(ROOT), str(ROOT / "shared"), env.get("PYTHONPATH", "")]
        env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
        self.log = workdir / f"{function}-{time.monotonic_ns()}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _DRIVER, function, arn, str(FUNCTION_TIMEOUT_MS)],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def invoke(self, event: dict[str, Any]) -> None:
        """Hand the child its event (it runs the handler and exits)."""
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(event).encode())
        self.process.stdin.close()

    def kill_at(self, fault: Fault, *, timeout: float = 60.0) -> bool:
        """SIGKILL the child once the proxy holds the write `fault` names; False when the
        child ended first (it never reached that write)."""
        child = self.process
        deadline = time.monotonic() + timeout
        while not fault.reached.wait(0.02):
            if child.poll() is not None:
                return False
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"write {fault.nth} to {fault.repository} never came")
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        fault.release.set()
        return True

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


# -- clocks ---------------------------------------------------------------------------------


class Clocks:
    """The functions' clocks (the `datetime` of every `functions.aws` module) and
    Powertools' idempotency clock, `offset` ahead of the wall clock (0 until a redelivery
    moves them)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from aws_lambda_powertools.utilities.idempotency.persistence import base, dynamodb

        import functions.aws

        self.offset = _datetime.timedelta(0)
        clocks = self

        class Shifted(_datetime.datetime):
            @classmethod
            def now(cls, tz: _datetime.tzinfo | None = None) -> Shifted:
                moved = _datetime.datetime.now(tz) + clocks.offset
                return cls.fromtimestamp(moved.timestamp(), tz)

        class ShiftedModule(types.ModuleType):
            def __getattr__(self, name: str) -> Any:
                return getattr(_datetime, name)

        for info in pkgutil.iter_modules(functions.aws.__path__, "functions.aws."):
            module = importlib.import_module(info.name)
            if getattr(module, "datetime", None) is _datetime.datetime:
                monkeypatch.setattr(module, "datetime", Shifted)
        shim = ShiftedModule("datetime")
        shim.datetime = Shifted  # type: ignore[attr-defined]
        monkeypatch.setattr(dynamodb, "dt", shim)
        monkeypatch.setattr(base, "dt", shim)


# -- what a trial left behind ---------------------------------------------------------------


def idempotency_records(dynamodb: Any, table: str, function: str) -> dict[str, str]:
    """The function's Powertools idempotency records: key → status."""
    out: dict[str, str] = {}
    params: dict[str, Any] = {
        "TableName": table,
        "KeyConditionExpression": "pk = :pk",
        "ExpressionAttributeValues": {":pk": {"S": f"idempotency#{function}"}},
        "ConsistentRead": True,
    }
    while True:
        page = dynamodb.query(**params)
        for item in page.get("Items", []):
            out[item["sk"]["S"]] = item.get("status", {}).get("S", "?")
        if "LastEvaluatedKey" not in page:
            return out
        params["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def verdict_log(ledger: Any, repository: str, digest: str) -> list[Any] | None:
    """The ledger's `verdict_log` entries for `digest` (one per committed verdict, never
    overwritten); None when the ledger keeps no verdict log (before #11)."""
    read = getattr(ledger, "verdict_log", None)
    if read is None:
        return None
    return list(read(REGISTRY_HOST, repository, digest))


@dataclass
class Trial:
    """One interrupted event, after its redeliveries."""

    name: str
    interrupted: str
    """What the first attempt left: `not started`, `half-done`, `whole`."""
    acknowledged: bool
    whole: bool
    started: bool
    verdicts: int | None
    """verdict_log entries for the event (None: no verdict log in the table)."""
    last_verdict: str | None
    alerts: int
    alert_ids: int
    """Distinct alert ids (dedup keys) among `alerts`."""
    completed_early: bool
    """The idempotency record was COMPLETED while the action was not whole."""
    completed: bool
    """The event's idempotency record is COMPLETED at the end."""
    recovery_s: float
    receives: int

    def problems(self) -> list[str]:
        out = []
        if not self.acknowledged:
            out.append("lost (never acknowledged)")
        if self.started and not self.whole:
            out.append("half-done")
        if not self.started:
            out.append("action never started")
        if self.verdicts is None:
            out.append("no verdict log")
        elif self.verdicts != 1:
            out.append(f"{self.verdicts} verdicts")
        if self.last_verdict != "FAILED":
            out.append(f"last verdict {self.last_verdict}")
        if self.alerts == 0:
            out.append("no alert")
        if self.completed_early:
            out.append("idempotency COMPLETED before the action was whole")
        if not self.completed:
            out.append("idempotency record not COMPLETED")
        return out


@dataclass
class Figures:
    test: str
    trials: list[Trial] = field(default_factory=list)
    clean: list[str] = field(default_factory=list)
    """What the run without a fault got wrong (the control)."""

    def add(self, trial: Trial) -> None:
        self.trials.append(trial)

    def line(self) -> dict[str, Any]:
        t = self.trials
        times = [x.recovery_s for x in t] or [0.0]
        logged = [x.verdicts for x in t if x.verdicts is not None]
        return {
            "test": self.test,
            "trials": len(t),
            "interrupted_half_done": sum(x.interrupted == "half-done" for x in t),
            "lost": sum(not x.acknowledged for x in t),
            "half_done": sum(x.started and not x.whole for x in t),
            "never_started": sum(not x.started for x in t),
            "without_verdict": sum(x.last_verdict is None for x in t),
            "ledger_keeps_verdict_log": len(logged) == len(t),
            "duplicated": sum(max(v - 1, 0) for v in logged),
            "without_verdict_log": sum(v == 0 for v in logged) + (len(t) - len(logged)),
            "without_alert": sum(x.alerts == 0 for x in t),
            "duplicate_alerts": sum(x.alerts - x.alert_ids for x in t),
            "completed_early": sum(x.completed_early for x in t),
            "recovery_s": {
                "median": round(statistics.median(times), 3),
                "max": round(max(times), 3),
                "plus_visibility_timeout_s": VISIBILITY_TIMEOUT.total_seconds(),
            },
            "clean": self.clean,
            "problems": {x.name: x.problems() for x in t if x.problems()},
        }
