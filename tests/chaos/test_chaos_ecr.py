"""Chaos on the ECR path: `retag` quarantine and tag roll-back interrupted at every write.

Distribution 2.8 cannot delete a tag, so these kill points run where tags can be deleted:
the Lambda gate (`functions/aws/on_push.py`) on moto, with a real `docker-registry` as ECR's
`/v2/` data plane. Every write of the action is an ECR API call (`PutImage` puts a tag,
`BatchDeleteImage` takes one away) and the alert is an SNS `Publish`; `support.chaos_ecr.
WriteGate` numbers them. A clean run of each scenario finds its writes; then, for each
write N and each side of it:

- `exception`: the Nth write is answered with an error the SDK does not retry, before
  moto gets it (nothing written) or after (written, the answer lost);
- `kill`: the handler runs in a child process, which is SIGKILLed while the proxy holds the
  Nth write, before forwarding it or once moto has answered it.

Then SQS hands the same message again (same id, receive count + 1) after its visibility
timeout, up to the queue's last receive, and the recovery function (if the stack has one)
runs once, as its schedule would. Each trial must end with the event acknowledged,
the action whole (every deployable tag removed or rolled back, the quarantine tag on the
image), exactly one verdict for the event in the table's verdict log, an alert on the
alerts topic, and the Powertools idempotency record COMPLETED only once the action is
whole.

A step the registry keeps refusing through the last receive ends that event in ERROR with
an alert naming what is left; the recovery schedule then finishes the action once the
registry takes the write again, with its own verdict and alert.

Each test prints its figures as one JSON line (and records them as the test's `chaos`
property).
"""

from __future__ import annotations

import importlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from support import aws_gate, chaos_ecr
from support import moto_server as support
from support.aws_gate import TABLE, Aws, LambdaContext
from support.chaos_ecr import (
    RECOVERY_TICK,
    VISIBILITY_TIMEOUT,
    Child,
    Clocks,
    EventSource,
    Fault,
    Figures,
    Phase,
    Trial,
    WriteGate,
    idempotency_records,
    verdict_log,
)
from support.moto_server import ACCOUNT, REGION, REGISTRY_HOST, put_manifest

from regwarden.devtools import make_image
from regwarden.notify import Alert
from regwarden.reference import short_digest

moto_server = support.moto_server
moto = support.moto
ecr_proxy = chaos_ecr.write_gate
local = aws_gate.local
aws = aws_gate.aws

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("docker-registry") is None, reason="needs the docker-registry binary"
    ),
]

FUNCTION = "on_push"
PHASES: tuple[Phase, ...] = ("before", "after")
LAST_RECEIVE = 3
"""REGWARDEN_MAX_RECEIVES in the `aws` fixture: after it SQS dead-letters the message."""
SCHEDULED = {"source": "aws.events", "detail-type": "Scheduled Event", "detail": {}}
"""What EventBridge's schedule hands the recovery function."""

# Signatures are not required: the scan alone decides (CRITICAL fails, LOW passes), so the
# trials spend their time on the action, not on signature discovery.
POLICY = """\
apiVersion: regwarden/v1
kind: Policy
defaults:
  mode: enforce
  team: gate
  quarantine: {{strategy: retag}}
  signatures: {{required: false}}
  vulnerabilities: {{maxSeverity: high, scanTimeout: 30m, sources: [ecr]}}
notifications:
  channels:
    alerts-topic: {{type: sns, topicArn: "{topic}"}}
  routes:
    - {{match: {{}}, to: [alerts-topic]}}
"""


@pytest.fixture
def aws_policy() -> str:
    return POLICY


def qtag(digest: str) -> str:
    return f"quarantined-{short_digest(digest)}"


# -- scenarios ------------------------------------------------------------------------------


@dataclass
class Scenario:
    """A FAILED push and what its quarantine must leave: digest → tags, once whole."""

    repository: str
    digest: str
    event: dict[str, Any]
    before: dict[str, list[str]]
    whole: dict[str, list[str]]

    def state(self, aws: Aws) -> str:
        now = {d: aws.tags(self.repository, d) for d in self.whole}
        if now == self.whole:
            return "whole"
        return "not started" if now == self.before else "half-done"


def push_event(aws: Aws, repository: str, digest: str, tag: str) -> dict[str, Any]:
    return aws.sample("ecr-image-push.json", repository=repository, digest=digest, tag=tag)


def retag_scenario(aws: Aws, n: int) -> Scenario:
    """An image pushed as `1.0` and `edge` whose scan is CRITICAL, no earlier digest for
    either tag: retag puts `quarantined-…` on it, then takes `1.0` and `edge` away."""
    repo = f"chaos/retag-{n}"
    aws.repository(repo)
    image = make_image(seed=9100 + n, layer_size=64)
    digest = aws.push(repo, image, "1.0")
    put_manifest(aws.ecr, repo, image.manifest, tag="edge", media_type=image.media_type)
    aws.scan_result(repo, digest, ["CRITICAL"])
    return Scenario(
        repo,
        digest,
        push_event(aws, repo, digest, "edge"),
        before={digest: ["1.0", "edge"]},
        whole={digest: [qtag(digest)]},
    )


def rollback_scenario(aws: Aws, n: int) -> Scenario:
    """`1.0` named a PASSED image (also tagged `build-1`); a push moves it to a CRITICAL
    one: retag puts `quarantined-…` on the new image, then `1.0` goes back to the PASSED
    one. (`build-1` keeps the PASSED image in moto, which deletes an image whose last tag a
    push takes away; ECR keeps it untagged.)"""
    repo = f"chaos/rollback-{n}"
    aws.repository(repo)
    image = make_image(seed=9200 + n, layer_size=64)
    good = aws.push(repo, image, "build-1")
    put_manifest(aws.ecr, repo, image.manifest, tag="1.0", media_type=image.media_type)
    aws.scan_result(repo, good, ["LOW"])
    assert aws.gate(FUNCTION, push_event(aws, repo, good, "1.0")) == {"batchItemFailures": []}
    assert aws.ledger().last_verdict(REGISTRY_HOST, repo, good) == "PASSED"
    bad = aws.push(repo, make_image(seed=9300 + n, layer_size=64), "1.0")
    aws.scan_result(repo, bad, ["CRITICAL"])
    return Scenario(
        repo,
        bad,
        push_event(aws, repo, bad, "1.0"),
        before={bad: ["1.0"], good: ["build-1"]},
        whole={bad: [qtag(bad)], good: ["1.0", "build-1"]},
    )


# -- one trial ------------------------------------------------------------------------------


@dataclass
class Chaos:
    """The rig: the stack, its kill points, its clocks and the events queue as Lambda's
    event source mapping drives it."""

    aws: Aws
    proxy: WriteGate
    clocks: Clocks
    source: EventSource
    workdir: Path

    def idempotency(self) -> dict[str, str]:
        return idempotency_records(self.aws.moto.client("dynamodb"), TABLE, FUNCTION)

    def child(self) -> Child:
        arn = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:regwarden-{FUNCTION}"
        return Child(FUNCTION, arn=arn, workdir=self.workdir)

    def sweep(self) -> None:
        """The recovery function's next scheduled run, if the stack has one."""
        try:
            recovery = importlib.import_module("functions.aws.recovery")
        except ModuleNotFoundError:
            return  # before #11: nothing sweeps
        self.clocks.offset += RECOVERY_TICK
        recovery.handler(SCHEDULED, LambdaContext("regwarden-recovery"))

    def trial(
        self,
        name: str,
        scenario: Scenario,
        *,
        mode: str,
        nth: int | None,
        phase: Phase,
        child: Child | None = None,
    ) -> Trial:
        """Deliver the scenario's event with the fault (None: clean), in `child` for a
        kill; deliver it again until it is acknowledged or SQS's receives run out; let the
        recovery schedule tick once. What it left behind."""
        aws, source = self.aws, self.source
        aws.drain("notify")
        known = set(self.idempotency())
        fault: Fault | None = None
        if nth is not None:
            fault = self.proxy.arm(scenario.repository, nth, phase=phase, hold=mode == "kill")
        self.clocks.offset = timedelta(0)
        source.send(json.dumps(scenario.event))
        event = source.receive()
        assert event is not None
        early = False

        def completed() -> bool:
            fresh = [v for k, v in self.idempotency().items() if k not in known]
            return "COMPLETED" in fresh

        def completed_early() -> bool:
            return completed() and scenario.state(aws) != "whole"

        if mode == "kill":
            assert fault is not None and child is not None
            child.invoke(event)
            reached = child.kill_at(fault)
            assert reached, f"{name}: the handler ended before write {nth}:\n{child.output()}"
            acked = False  # it never answered: the message stays in flight
        else:
            acked = source.acknowledge(event, aws.invoke(FUNCTION, event))
            assert fault is None or fault.write is not None, f"{name}: write {nth} never came"
        early |= completed_early()
        interrupted = scenario.state(aws)
        receives = 1
        started = time.monotonic()
        while not acked and receives < LAST_RECEIVE:
            source.time_out(event)  # the visibility timeout is over: SQS hands it again
            self.clocks.offset = VISIBILITY_TIMEOUT * receives
            again = source.receive()
            assert again is not None, f"{name}: the message is gone before it was acknowledged"
            event = again
            receives = int(event["Records"][0]["attributes"]["ApproximateReceiveCount"])
            acked = source.acknowledge(event, aws.invoke(FUNCTION, event))
            early |= completed_early()
        if nth is not None:
            self.sweep()
            early |= completed_early()
        recovery = time.monotonic() - started
        alerts = [
            Alert.model_validate_json(m["Body"])
            for m in aws.drain("notify")
            if scenario.digest in m["Body"]
        ]
        logged = verdict_log(aws.ledger(), scenario.repository, scenario.digest)
        final = scenario.state(aws)
        return Trial(
            name=name,
            interrupted=interrupted,
            acknowledged=acked and source.left() == 0,
            whole=final == "whole",
            started=final != "not started",
            verdicts=None if logged is None else len(logged),
            last_verdict=aws.ledger().last_verdict(
                REGISTRY_HOST, scenario.repository, scenario.digest
            ),
            alerts=len(alerts),
            alert_ids=len({a.dedup_key for a in alerts}),
            completed_early=early,
            completed=completed(),
            recovery_s=recovery,
            receives=receives,
        )


@pytest.fixture
def chaos(aws: Aws, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Chaos:
    assert isinstance(aws.proxy, WriteGate)
    # the alerts topic through the gate too: the alert is the event's last write
    monkeypatch.setenv("AWS_ENDPOINT_URL_SNS", aws.proxy.endpoint_url)
    source = EventSource(aws.sqs, aws.queues["events"], aws.queue_arn("events"))
    return Chaos(aws, aws.proxy, Clocks(monkeypatch), source, tmp_path)


def run(
    chaos: Chaos, make: Callable[[Aws, int], Scenario], *, mode: str, steps: list[str]
) -> Figures:
    """A clean run finds the event's writes; then one trial per write and side of it."""
    aws = chaos.aws
    figures = Figures(f"{make.__name__.removesuffix('_scenario')}/{mode}")
    clean = make(aws, 0)
    control = chaos.trial("clean", clean, mode="exception", nth=None, phase="before")
    assert control.interrupted == "whole", control  # one delivery, no fault: whole at once
    figures.clean = control.problems()
    writes = chaos.proxy.writes(clean.repository)
    labels = [w.label.replace(qtag(clean.digest), "quarantined-…") for w in writes]
    assert labels == steps  # the event's writes, in order: each is a kill point
    points = [(nth, phase) for nth in range(1, len(writes) + 1) for phase in PHASES]
    spare = chaos.child() if mode == "kill" else None
    try:
        for n, (nth, phase) in enumerate(points, start=1):
            name = f"{mode} {phase} write {nth} ({labels[nth - 1]})"
            child, spare = spare, None
            if child is not None and n < len(points):
                spare = chaos.child()  # warms up while this trial runs
            try:
                scenario = make(aws, n)
                trial = chaos.trial(name, scenario, mode=mode, nth=nth, phase=phase, child=child)
            finally:
                if child is not None:
                    child.stop()
            figures.add(trial)
    finally:
        if spare is not None:
            spare.stop()
    return figures


def report(
    figures: Figures,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> dict[str, Any]:
    line = figures.line()
    record_property("chaos", json.dumps(line))
    with capsys.disabled():
        print("\nCHAOS " + json.dumps(line), flush=True)
    return line


def check(line: dict[str, Any]) -> None:
    assert line["interrupted_half_done"] >= 1, "no trial was interrupted mid-action"
    assert line["clean"] == [], line["clean"]
    assert line["problems"] == {}, json.dumps(line["problems"], indent=1)
    assert (line["lost"], line["half_done"], line["duplicated"]) == (0, 0, 0)


# -- the tests ------------------------------------------------------------------------------

RETAG = ["put tag quarantined-…", "delete tag 1.0", "delete tag edge", "publish alert"]
ROLLBACK = ["put tag quarantined-…", "put tag 1.0", "publish alert"]


@pytest.mark.parametrize("mode", ["exception", "kill"])
def test_retag_interrupted_at_every_write_ends_whole_with_one_verdict_and_an_alert(
    chaos: Chaos,
    mode: str,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    figures = run(chaos, retag_scenario, mode=mode, steps=RETAG)
    check(report(figures, capsys, record_property))


@pytest.mark.parametrize("mode", ["exception", "kill"])
def test_tag_rollback_interrupted_at_every_write_ends_whole_with_one_verdict_and_an_alert(
    chaos: Chaos,
    mode: str,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    figures = run(chaos, rollback_scenario, mode=mode, steps=ROLLBACK)
    check(report(figures, capsys, record_property))


# -- a step refused through the last receive: the recovery schedule finishes it ---------------

SWEEP_TICKS = 16
"""Recovery ticks (5 minutes each) a test waits for: past the sweep's settle time and its
first backoffs."""


@pytest.mark.parametrize(
    ("make", "step"),
    [(retag_scenario, "delete tag edge"), (rollback_scenario, "put tag 1.0")],
    ids=["retag", "rollback"],
)
def test_a_step_refused_through_the_last_receive_is_finished_by_the_recovery_schedule(
    chaos: Chaos,
    make: Callable[[Aws, int], Scenario],
    step: str,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, object], None],
) -> None:
    aws, source = chaos.aws, chaos.source
    scenario = make(aws, 90)
    chaos.proxy.refuse(scenario.repository, step)
    aws.drain("notify")
    earlier = set(chaos.idempotency())  # records of the scenario's set-up pushes
    source.send(json.dumps(scenario.event))
    results = []
    event = source.receive()
    for receive in range(1, LAST_RECEIVE + 1):
        assert event is not None
        chaos.clocks.offset = VISIBILITY_TIMEOUT * (receive - 1)
        results.append(source.acknowledge(event, aws.invoke(FUNCTION, event)))
        if receive < LAST_RECEIVE:
            source.time_out(event)
            event = source.receive()
    logged = verdict_log(aws.ledger(), scenario.repository, scenario.digest)
    alerts = [
        Alert.model_validate_json(m["Body"])
        for m in aws.drain("notify")
        if scenario.digest in m["Body"]
    ]
    left = step.split(" ")[-1]

    # retried while receives remain; the last one records ERROR and alerts, saying what is
    # left, but is not acknowledged: SQS's redrive dead-letters it, and the idempotency
    # record is never COMPLETED while the image is half-done
    assert results == [False] * LAST_RECEIVE
    assert scenario.state(aws) == "half-done"
    assert logged is not None and [v[1] for v in logged] == ["ERROR"]
    (alert,) = alerts
    assert (alert.outcome.value, alert.action) == ("ERROR", "quarantine")
    assert alert.state is not None and left in alert.state, alert.state
    handed_over = {k: v for k, v in chaos.idempotency().items() if k not in earlier}
    assert "COMPLETED" not in handed_over.values(), handed_over

    # the schedule keeps at it while the registry refuses, without repeating the alert
    chaos.sweep()
    assert scenario.state(aws) == "half-done"
    assert not [m for m in aws.drain("notify") if scenario.digest in m["Body"]]

    # the registry takes the write again: the next due tick finishes the action
    chaos.proxy.allow(scenario.repository, step)
    started = time.monotonic()
    ticks = 0
    while scenario.state(aws) != "whole" and ticks < SWEEP_TICKS:
        chaos.sweep()
        ticks += 1
    recovery = time.monotonic() - started
    assert scenario.state(aws) == "whole"
    logged = verdict_log(aws.ledger(), scenario.repository, scenario.digest)
    assert logged is not None
    # no verdict counts as the event's (it was dead-lettered); the last receive's ERROR and
    # the sweep's own verdicts carry no delivery and end in FAILED once whole
    assert [v for v in logged if v[0] is not None] == []
    swept = [v[1] for v in logged]
    assert swept[0] == "ERROR" and swept[-1:] == ["FAILED"]
    alerts = [
        Alert.model_validate_json(m["Body"])
        for m in aws.drain("notify")
        if scenario.digest in m["Body"]
    ]
    assert [(a.outcome.value, a.action, a.state) for a in alerts] == [
        ("FAILED", "quarantine", None)
    ]
    assert source.left() == 1  # the dead letter: SQS's redrive moves it to the DLQ
    line = {
        "test": f"{make.__name__.removesuffix('_scenario')}/refused-through-last-receive",
        "refused": step,
        "receives": LAST_RECEIVE,
        "idempotency_at_last_receive": sorted(set(handed_over.values())),
        "state_at_last_receive": "half-done",
        "ticks_after_allowed": ticks,
        "simulated_minutes": round(chaos.clocks.offset.total_seconds() / 60),
        "recovery_s": round(recovery, 3),
        "event_verdicts": [v[1] for v in logged if v[0] is not None],
        "sweep_verdicts": swept,
    }
    record_property("chaos", json.dumps(line))
    with capsys.disabled():
        print("\nCHAOS " + json.dumps(line), flush=True)
