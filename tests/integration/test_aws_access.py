"""Access monitoring on AWS (issue #16): the `on_access` handler against moto in server mode.

Real parts, as in test_aws_functions.py: moto serves ECR (behind `EcrLimitsProxy`, which
records every ECR call), DynamoDB, SNS, SQS and S3 over boto3's wire protocol; a local
`docker-registry` is ECR's `/v2/`. An image is gated and quarantined by `on_push` first
(so the ledger holds its tags, verdict and quarantine record, as on a deployed stack);
then CloudTrail events from `events/access/` (EventBridge "AWS API Call via CloudTrail"),
adapted to this account, region, repository and image, go through a real SQS queue to
`on_access`. Alerts are read back through SQS queues subscribed to the alerts topic with
per-team filter policies. Windows close by the handler's clock (`_access.clock`), moved
forward by the test instead of waiting ten minutes.
"""

from __future__ import annotations

import fnmatch
import json
import shutil
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support import aws_gate
from support import moto_server as support
from support.aws_gate import Aws, attributes
from support.cfn import load_template
from support.moto_server import ACCOUNT, REGION, REGISTRY_HOST

from regwarden.devtools import make_image

moto_server = support.moto_server
moto = support.moto
ecr_proxy = support.ecr_proxy
local = aws_gate.local
_aws = aws_gate.aws

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        shutil.which("docker-registry") is None, reason="needs the docker-registry binary"
    ),
]

ROOT = Path(__file__).resolve().parents[2]
ACCESS = ROOT / "events" / "access"
DEPLOYER = f"arn:aws:iam::{ACCOUNT}:role/eks-prod-node"
CI = f"arn:aws:iam::{ACCOUNT}:role/ci-release"
STRANGER = f"arn:aws:iam::{ACCOUNT}:role/laptop-admin"
OWN = f"arn:aws:iam::{ACCOUNT}:role/regwarden-OnPushRole-1A2B3C4D5E6F"

POLICY = """\
apiVersion: regwarden/v1
kind: Policy
defaults:
  mode: enforce
  quarantine: {{strategy: retag}}
repositories:
  - match: "alpha/**"
    team: alpha
    vulnerabilities: {{maxSeverity: high, sources: [ecr], scanTimeout: 30m}}
    quarantine: {{strategy: move, repository: "quarantine/{{repository}}"}}
    access:
      pushers: ["arn:aws:iam::*:role/ci-*"]
  - match: "bravo/**"
    team: bravo
    vulnerabilities: {{maxSeverity: high, sources: [ecr], scanTimeout: 30m}}
notifications:
  channels:
    alerts-topic: {{type: sns, topicArn: "{topic}"}}
  routes:
    - {{match: {{action: [quarantine, access]}}, to: [alerts-topic]}}
"""


@pytest.fixture
def aws_policy() -> str:
    return POLICY


class Clock:
    """The handler's clock: now, or later by what the test says."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    from functions.aws import _access

    fake = Clock()
    monkeypatch.setattr(_access, "clock", fake)
    return fake


@pytest.fixture
def aws(_aws: Aws, monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    from functions.aws import _access

    monkeypatch.setenv("REGWARDEN_ACCESS_IGNORE_PRINCIPALS", f"{OWN},arn:aws:iam::{ACCOUNT}:user/x")
    _access.reset()
    try:
        yield _aws
    finally:
        _access.reset()


def cloudtrail(
    name: str,
    *,
    repository: str,
    principal: str = DEPLOYER,
    digest: str | None = None,
    tag: str | None = None,
    ip: str = "10.2.3.4",
    when: datetime | None = None,
) -> dict[str, Any]:
    """An `events/access/` CloudTrail sample for this account, region and image, pulled or
    pushed by the role `principal` (an assumed role's session: CloudTrail names the session,
    the role is its issuer)."""
    event: dict[str, Any] = json.loads((ACCESS / name).read_text())
    stamp = (when or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    event.update(id=str(uuid.uuid4()), account=ACCOUNT, region=REGION, time=stamp)
    detail = event["detail"]
    detail.update(
        eventID=str(uuid.uuid4()),
        eventTime=stamp,
        awsRegion=REGION,
        recipientAccountId=ACCOUNT,
        sourceIPAddress=ip,
    )
    role = principal.rsplit("/", 1)[-1]
    detail["userIdentity"] = {
        "type": "AssumedRole",
        "principalId": "AROAEXAMPLEID:session-1",
        "arn": f"arn:aws:sts::{ACCOUNT}:assumed-role/{role}/session-1",
        "accountId": ACCOUNT,
        "sessionContext": {
            "sessionIssuer": {"type": "Role", "arn": principal, "accountId": ACCOUNT},
            "attributes": {"creationDate": stamp, "mfaAuthenticated": "false"},
        },
    }
    params = detail["requestParameters"]
    params.update(repositoryName=repository, registryId=ACCOUNT)
    if detail["eventName"] == "BatchGetImage":
        params["imageIds"] = [{"imageDigest": digest} if digest else {"imageTag": tag}]
    else:
        assert digest is not None
        params["imageTag"] = tag
        image = detail["responseElements"]["image"]
        image.update(repositoryName=repository, registryId=ACCOUNT)
        image["imageId"] = {"imageDigest": digest, "imageTag": tag}
    return event


def quarantined_image(aws: Aws, repo: str, seed: int, tag: str) -> str:
    """An image pushed, judged FAILED by `on_push` and moved to `quarantine/<repo>`; its
    quarantine alert read off the team's queue."""
    aws.repository(repo)
    digest = aws.push(repo, make_image(seed=seed), tag)
    aws.scan_result(repo, digest, ["CRITICAL"])
    push = aws.sample("ecr-image-push.json", repository=repo, digest=digest, tag=tag)
    assert aws.gate("on_push", push) == {"batchItemFailures": []}
    held = aws.ledger().quarantined(REGISTRY_HOST, repo, digest)
    assert held is not None and held.location == f"quarantine/{repo}"
    aws.drain("alpha-alerts")
    aws.drain("notify")
    return digest


def access(aws: Aws, *events: dict[str, Any]) -> dict[str, Any]:
    return aws.gate("on_access", *events)


def sweep(aws: Aws) -> dict[str, Any]:
    """The one-minute schedule's tick (EventBridge Scheduler's payload, time filled in)."""
    tick = {"regwarden": "access-sweep", "scheduledTime": datetime.now(UTC).isoformat()}
    return aws.invoke("on_access", tick)


def body(message: dict[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(message["Body"])
    return doc


# -- blocked pulls --------------------------------------------------------------------------------


def test_pull_of_a_quarantined_digest_by_tag_alerts_the_owning_team_from_the_ledger(
    aws: Aws, clock: Clock
) -> None:
    repo = "alpha/api"
    digest = quarantined_image(aws, repo, 801, "1.0.0")
    ecr_calls = len(aws.proxy.calls)

    pull = cloudtrail("cloudtrail-batchgetimage-tag.json", repository=repo, tag="1.0.0")
    assert access(aws, pull) == {"batchItemFailures": []}

    (alert,) = aws.drain("alpha-alerts")
    attrs = attributes(alert)
    assert attrs["team"] == "alpha" and attrs["repository"] == repo
    assert (attrs["action"], attrs["kind"], attrs["finding"]) == (
        "access",
        "access",
        "blocked-pull",
    )
    assert attrs["verdict"] == "FAILED"  # the digest's standing verdict
    doc = body(alert)
    assert doc["image"].endswith(f"{repo}@{digest}")  # the tag resolved by the ledger
    who = doc["access"]
    assert (who["principal"], who["source_ip"], who["access"]) == (DEPLOYER, "10.2.3.4", "pull")
    assert who["source"] == "aws.cloudtrail" and not who["summary"]
    assert aws.drain("bravo-alerts") == []  # another team's filter policy keeps it out
    assert len(aws.proxy.calls) == ecr_calls  # no ECR call: the ledger answered
    # the alert left the outbox (sent, not pending for the recovery function)
    assert aws.ledger().outbox_pending(now=clock() + timedelta(hours=2)) == []


def test_pull_from_the_quarantine_location_by_digest_is_a_blocked_pull(
    aws: Aws, clock: Clock
) -> None:
    repo = "alpha/worker"
    digest = quarantined_image(aws, repo, 802, "2.0.0")

    pull = cloudtrail(
        "cloudtrail-batchgetimage-digest.json", repository=f"quarantine/{repo}", digest=digest
    )
    assert access(aws, pull) == {"batchItemFailures": []}

    (alert,) = aws.drain("alpha-alerts")
    assert attributes(alert)["finding"] == "blocked-pull"
    assert digest in body(alert)["image"]
    assert f"quarantine/{repo}" in body(alert)["access"]["reference"]  # where it was pulled


def test_repeated_pulls_alert_once_then_one_summary_when_the_window_closes(
    aws: Aws, clock: Clock
) -> None:
    repo = "alpha/loop"
    digest = quarantined_image(aws, repo, 803, "3.0.0")

    def pull() -> dict[str, Any]:
        return cloudtrail(
            "cloudtrail-batchgetimage-digest.json", repository=repo, digest=digest, when=clock()
        )

    assert access(aws, pull()) == {"batchItemFailures": []}
    assert len(aws.drain("alpha-alerts")) == 1
    # a crash-looping pod: more pulls inside the window (two batches) alert no more
    assert access(aws, *(pull() for _ in range(6))) == {"batchItemFailures": []}
    assert access(aws, *(pull() for _ in range(4))) == {"batchItemFailures": []}
    assert aws.drain("alpha-alerts") == []
    assert sweep(aws)["summaries"] == []  # not due yet: no summary
    assert aws.drain("alpha-alerts") == []

    clock.offset = timedelta(minutes=11)  # past the default 10m window
    done = sweep(aws)
    assert len(done["summaries"]) == 1 and done["sent"] == 1
    (summary,) = aws.drain("alpha-alerts")
    assert attributes(summary)["finding"] == "blocked-pull"
    detail = body(summary)["access"]
    assert detail["summary"] and detail["count"] == 10  # the pulls after the first
    assert detail["principal"] == DEPLOYER
    assert sweep(aws)["summaries"] == []  # closed once
    assert aws.drain("alpha-alerts") == []

    # pull counts and tracking for retention: every pull, coalesced per batch
    (tally,) = [t for t in aws.ledger().pull_tallies(REGISTRY_HOST, repo) if t.digest == digest]
    assert tally.principal == DEPLOYER and tally.count == 11
    assert aws.ledger().pull_tracking_since(REGISTRY_HOST, repo) is not None


def test_a_batch_closes_due_windows_too(
    aws: Aws, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A busy stream gets its summaries from the batches themselves (the schedule's tick
    may wait behind the queue's pollers)."""
    monkeypatch.setenv("REGWARDEN_ACCESS_SWEEP_INTERVAL", "0")
    repo = "alpha/busy"
    digest = quarantined_image(aws, repo, 804, "4.0.0")
    pulls = [
        cloudtrail("cloudtrail-batchgetimage-digest.json", repository=repo, digest=digest)
        for _ in range(2)
    ]
    assert access(aws, *pulls) == {"batchItemFailures": []}
    assert len(aws.drain("alpha-alerts")) == 1

    clock.offset = timedelta(minutes=11)
    later = cloudtrail(
        "cloudtrail-batchgetimage-digest.json",
        repository=repo,
        digest=digest,
        principal=CI,
        when=clock(),
    )
    assert access(aws, later) == {"batchItemFailures": []}
    got = aws.drain("alpha-alerts")
    seen = sorted((body(m)["access"]["principal"], body(m)["access"]["summary"]) for m in got)
    # the new puller's alert and the old window's summary
    assert seen == [(CI, False), (DEPLOYER, True)]


# -- pushes, own roles, failures -----------------------------------------------------------------


def test_push_by_a_principal_outside_pushers_alerts_and_ci_does_not(aws: Aws) -> None:
    repo = "alpha/web"
    aws.repository(repo)
    digest = aws.push(repo, make_image(seed=805), "5.0.0")

    by_ci = cloudtrail(
        "cloudtrail-putimage.json", repository=repo, digest=digest, tag="5.0.0", principal=CI
    )
    assert access(aws, by_ci) == {"batchItemFailures": []}
    assert aws.drain("alpha-alerts") == []

    by_stranger = cloudtrail(
        "cloudtrail-putimage.json",
        repository=repo,
        digest=digest,
        tag="5.0.1",
        principal=STRANGER,
        ip="198.51.100.7",
    )
    assert access(aws, by_stranger) == {"batchItemFailures": []}
    (alert,) = aws.drain("alpha-alerts")
    assert attributes(alert)["finding"] == "unexpected-pusher"
    who = body(alert)["access"]
    assert (who["principal"], who["source_ip"], who["access"]) == (STRANGER, "198.51.100.7", "push")


def test_regwardens_own_roles_and_other_registries_are_not_watched(aws: Aws) -> None:
    repo = "alpha/own"
    digest = quarantined_image(aws, repo, 806, "6.0.0")
    own = cloudtrail(
        "cloudtrail-batchgetimage-digest.json",
        repository=f"quarantine/{repo}",
        digest=digest,
        principal=OWN,
    )
    foreign = cloudtrail("cloudtrail-batchgetimage-digest.json", repository=repo, digest=digest)
    foreign["detail"]["requestParameters"]["registryId"] = "210987654321"  # cross-account
    assert access(aws, own, foreign) == {"batchItemFailures": []}
    assert aws.drain("alpha-alerts") == []
    assert aws.drain("notify") == []
    assert [t for t in aws.ledger().pull_tallies(REGISTRY_HOST, repo) if t.digest == digest] == []


def test_a_malformed_record_fails_alone_and_is_noted(aws: Aws) -> None:
    from regwarden.store import dead_letter_key

    repo = "alpha/mixed"
    digest = quarantined_image(aws, repo, 807, "7.0.0")
    good = cloudtrail("cloudtrail-batchgetimage-digest.json", repository=repo, digest=digest)
    bad = cloudtrail("cloudtrail-batchgetimage-digest.json", repository=repo, digest=digest)
    bad["detail"]["requestParameters"]["imageIds"] = [{"imageDigest": "sha256:nothex"}]
    misrouted = aws.sample("ecr-image-push.json", repository=repo, digest=digest, tag="7.0.0")
    event = aws.sqs_event(json.dumps(good), json.dumps(bad), json.dumps(misrouted))
    by_body = {r["body"]: r["messageId"] for r in event["Records"]}

    result = aws.invoke("on_access", event)

    failed = sorted(f["itemIdentifier"] for f in result["batchItemFailures"])
    assert failed == sorted([by_body[json.dumps(bad)], by_body[json.dumps(misrouted)]])
    assert len(aws.drain("alpha-alerts")) == 1  # the good record's alert
    note = aws.ledger().failure("on_access", dead_letter_key(json.dumps(bad), "x"))
    assert note is not None and "imageDigest" in note.last_error


def test_an_unknown_invocation_payload_is_refused(aws: Aws) -> None:
    from regwarden.errors import UsageError

    with pytest.raises(UsageError, match="access-sweep"):
        aws.invoke("on_access", {"detail-type": "Scheduled Event"})


# -- least privilege: every call the function makes is one its role grants -----------------------

TEMPLATE: dict[str, Any] = load_template()
RESOURCES: dict[str, Any] = TEMPLATE["Resources"]
TRANSACT_ACTIONS = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


def _statements(role: str) -> list[dict[str, Any]]:
    return [
        s
        for policy in RESOURCES[role]["Properties"]["Policies"]
        for s in policy["PolicyDocument"]["Statement"]
    ]


def _listed(value: Any) -> list[Any]:
    """Actions or resources as a list; both branches of an `!If`."""
    if isinstance(value, dict) and "Fn::If" in value:
        _, yes, no = value["Fn::If"]
        return _listed(yes) + _listed(no)
    return value if isinstance(value, list) else [value]


def _granted(action: str, leading_key: str | None) -> bool:
    """Whether OnAccessRole allows `action` on the ledger table for an item (or a query)
    under partition key `leading_key` (its dynamodb:LeadingKeys conditions)."""
    for s in _statements("OnAccessRole"):
        if action not in _listed(s["Action"]):
            continue
        if action.startswith("dynamodb:"):
            if s["Resource"] != {"Fn::GetAtt": "LedgerTable.Arn"}:
                continue
            globs = (s.get("Condition") or {}).get("ForAllValues:StringLike", {})
            keys = globs.get("dynamodb:LeadingKeys")
            if keys is not None and not any(
                fnmatch.fnmatchcase(leading_key or "", g) for g in keys
            ):
                continue
        return True
    return False


def _dynamodb_items(operation: str, params: dict[str, Any]) -> list[tuple[str, str]]:
    """(IAM action, partition key) of each item a DynamoDB call touches."""
    if operation == "TransactWriteItems":
        out = []
        for item in params["TransactItems"]:
            ((kind, op),) = item.items()
            key = op.get("Item") or op.get("Key")
            out.append((f"dynamodb:{TRANSACT_ACTIONS[kind]}", key["pk"]["S"]))
        return out
    if operation == "Query":
        values = params.get("ExpressionAttributeValues") or {}
        pk = next(v["S"] for k, v in values.items() if k in (":pk", ":p"))
        return [(f"dynamodb:{operation}", pk)]
    key = params.get("Key") or params.get("Item") or {}
    return [(f"dynamodb:{operation}", key["pk"]["S"])]


def test_every_call_of_the_function_is_granted_to_its_role(
    aws: Aws, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The function's calls recorded on the wire (every client's parameters, as botocore
    builds them) and held against OnAccessRole: DynamoDB actions by partition key against
    the LeadingKeys conditions, SNS to the alerts topic only, the policy read, and no ECR
    call at all."""
    from botocore.session import Session as BotocoreSession

    repo = "alpha/iam"
    digest = quarantined_image(aws, repo, 808, "8.0.0")
    pulls = [
        cloudtrail("cloudtrail-batchgetimage-tag.json", repository=repo, tag="8.0.0"),
        cloudtrail("cloudtrail-batchgetimage-digest.json", repository=repo, digest=digest),
        cloudtrail(
            "cloudtrail-putimage.json",
            repository=repo,
            digest=digest,
            tag="8.0.1",
            principal=STRANGER,
        ),
    ]
    bodies = [json.dumps(p) for p in pulls]
    bad = json.dumps(dict(pulls[0], detail={**pulls[0]["detail"], "eventSource": "x"}))
    monkeypatch.setenv("AWS_REGWARDEN_TEST_RUN", uuid.uuid4().hex)  # fresh clients, hooked
    calls: list[tuple[str, str, dict[str, Any]]] = []
    create = BotocoreSession.create_client

    def created(self: Any, service_name: str, *args: Any, **kwargs: Any) -> Any:
        client = create(self, service_name, *args, **kwargs)

        def record(model: Any, params: dict[str, Any], **_: Any) -> None:
            calls.append((service_name, model.name, params))

        client.meta.events.register("before-parameter-build", record)
        return client

    monkeypatch.setattr(BotocoreSession, "create_client", created)
    event = aws.sqs_event(*bodies, bad)
    calls.clear()  # the test's own SQS calls

    result = aws.invoke("on_access", event)
    assert len(result["batchItemFailures"]) == 1  # the bad one: its failure is noted
    clock.offset = timedelta(minutes=11)
    assert sweep(aws)["summaries"]

    services = {s for s, _, _ in calls}
    assert services <= {"dynamodb", "sns", "s3"}, services
    assert "ecr" not in services
    ungranted = []
    for service, operation, params in calls:
        if service == "dynamodb":
            for action, pk in _dynamodb_items(operation, params):
                if not _granted(action, pk):
                    ungranted.append((action, pk))
        elif service == "sns":
            assert operation == "Publish" and params["TopicArn"] == aws.topic
            assert _granted("sns:Publish", None)
        else:
            assert (service, operation) == ("s3", "GetObject")  # the policy (S3 here)
    assert ungranted == [], ungranted
    ops = {(s, o) for s, o, _ in calls}
    assert ("dynamodb", "UpdateItem") in ops and ("sns", "Publish") in ops
    assert ("dynamodb", "Query") in ops  # tag history, due windows


def test_the_role_has_no_ecr_access_and_no_wider_ledger_grants() -> None:
    actions = [a for s in _statements("OnAccessRole") for a in _listed(s["Action"])]
    assert not [a for a in actions if a.startswith("ecr:")]
    assert "dynamodb:Scan" not in actions and "dynamodb:BatchWriteItem" not in actions
    for s in _statements("OnAccessRole"):
        if any(str(a).startswith("dynamodb:") for a in _listed(s["Action"])):
            assert "dynamodb:LeadingKeys" in s["Condition"]["ForAllValues:StringLike"], s["Sid"]


def test_a_record_that_failed_alerts_when_it_comes_back(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DynamoDB refusing the window's write fails the record; SQS delivers it again to the
    same warm function, which must not take it for a duplicate it already handled."""
    from functions.aws import _access

    repo = "alpha/retry"
    digest = quarantined_image(aws, repo, 809, "9.0.0")
    pull = json.dumps(
        cloudtrail("cloudtrail-batchgetimage-digest.json", repository=repo, digest=digest)
    )
    sweep(aws)  # the warm function's state, built as an invocation builds it
    st = _access.state()
    real = type(st.ledger).open_access_window
    calls = []

    def throttled(self: Any, window: Any, **kwargs: Any) -> bool:
        calls.append(window.key)
        if len(calls) == 1:
            raise RuntimeError("ProvisionedThroughputExceededException (simulated)")
        return real(self, window, **kwargs)

    monkeypatch.setattr(type(st.ledger), "open_access_window", throttled)
    event = aws.sqs_event(pull)
    (failed,) = aws.invoke("on_access", event)["batchItemFailures"]
    assert failed["itemIdentifier"] == event["Records"][0]["messageId"]
    assert aws.drain("alpha-alerts") == []

    assert aws.invoke("on_access", aws.sqs_event(pull)) == {"batchItemFailures": []}
    assert len(calls) == 2
    (alert,) = aws.drain("alpha-alerts")
    assert attributes(alert)["finding"] == "blocked-pull"


def test_a_batch_of_pulls_costs_a_few_writes_not_one_per_pull(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Pull volume: 50 pulls of one image by one principal in one batch are one tally in
    memory, written once at the end of the batch (issue #16 item 5: no per-pull weight)."""
    from botocore.session import Session as BotocoreSession

    repo = "alpha/volume"
    aws.repository(repo)
    digest = aws.push(repo, make_image(seed=810), "10.0.0")
    aws.scan_result(repo, digest, ["LOW"])
    push = aws.sample("ecr-image-push.json", repository=repo, digest=digest, tag="10.0.0")
    assert aws.gate("on_push", push) == {"batchItemFailures": []}
    sweep(aws)  # warm: the state is built, the first tick's sweep done
    bodies = [
        json.dumps(
            cloudtrail("cloudtrail-batchgetimage-digest.json", repository=repo, digest=digest)
        )
        for _ in range(50)
    ]
    monkeypatch.setenv("AWS_REGWARDEN_TEST_RUN", uuid.uuid4().hex)  # fresh clients, hooked
    calls: list[str] = []
    create = BotocoreSession.create_client

    def created(self: Any, service_name: str, *args: Any, **kwargs: Any) -> Any:
        client = create(self, service_name, *args, **kwargs)
        if service_name == "dynamodb":
            client.meta.events.register(
                "before-parameter-build.dynamodb", lambda model, **_: calls.append(model.name)
            )
        return client

    monkeypatch.setattr(BotocoreSession, "create_client", created)
    from functions.aws import _access

    _access.reset()  # the state again, on the hooked clients
    sweep(aws)
    event = aws.sqs_event(*bodies)
    calls.clear()

    assert aws.invoke("on_access", event) == {"batchItemFailures": []}

    writes = [
        c for c in calls if c in ("PutItem", "UpdateItem", "DeleteItem", "TransactWriteItems")
    ]
    # pull tracking started, the tally row, the image's last pull; the digest's state read
    # once (quarantine record, verdict): 5 calls for 50 pulls
    assert len(writes) <= 3 and len(calls) <= 6, calls
    (tally,) = aws.ledger().pull_tallies(REGISTRY_HOST, repo)
    assert tally.count == 50
