"""The AWS Lambda handlers end to end against moto in server mode on loopback.

Real parts: moto serves ECR (behind `EcrLimitsProxy`, so ECR's paging and batch limits
hold), DynamoDB, SNS, SQS, S3 and Secrets Manager over boto3's real wire protocol; a local
CNCF distribution (`docker-registry`) is ECR's `/v2/` data plane; the webhook channel posts
to a loopback HTTP sink. Each EventBridge sample in `events/aws/` is adapted to this
account, region, repository and digest, sent through a real SQS queue, received, and handed
to the handler as the Lambda SQS event with a Lambda context object. Alerts are read back
through SQS queues subscribed to the alerts topic with per-team filter policies.
"""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime, timedelta

import pytest
from support import aws_gate
from support import moto_server as support
from support.aws_gate import BUCKET, HMAC_KEY, TABLE, Aws, attributes
from support.moto_server import REGISTRY_HOST, put_manifest

from regwarden.devtools import make_image
from regwarden.notify import verify_signature
from regwarden.reference import short_digest
from regwarden.store import TTL_ATTRIBUTE

moto_server = support.moto_server
moto = support.moto
ecr_proxy = support.ecr_proxy

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
  - match: "alpha/**"
    team: alpha
    vulnerabilities: {{maxSeverity: high, sources: [ecr], scanTimeout: 30m}}
    quarantine: {{strategy: move, repository: "quarantine/{{repository}}"}}
  - match: "bravo/**"
    team: bravo
    vulnerabilities: {{maxSeverity: high, sources: [ecr, inspector], scanTimeout: 30m}}
  - match: "docker-hub/**"
    team: platform
    tags: {{forbidden: [latest]}}
  - match: "apps/**"
    team: apps
    tags: {{pattern: semver}}
notifications:
  channels:
    hook: {{type: webhook, url: "secret://regwarden/hook-url", secret: "secret://regwarden/hmac"}}
    alerts-topic: {{type: sns, topicArn: "{topic}"}}
  routes:
    - {{match: {{team: alpha}}, to: [hook]}}
    - {{match: {{action: [quarantine]}}, to: [alerts-topic]}}
"""


# -- fixtures -----------------------------------------------------------------------------------

local = aws_gate.local
aws = aws_gate.aws


@pytest.fixture
def aws_policy() -> str:
    return POLICY


# -- on_push ------------------------------------------------------------------------------------


def test_critical_push_is_moved_to_quarantine_once_and_alerts_only_its_team(aws: Aws) -> None:
    repo = "alpha/api"
    aws.repository(repo)
    image = make_image(seed=501)
    digest = aws.push(repo, image, "1.0.0")
    aws.scan_result(repo, digest, ["CRITICAL", "LOW"])
    event = aws.sample("ecr-image-push.json", repository=repo, digest=digest, tag="1.0.0")

    result = aws.gate("on_push", event)

    assert result == {"batchItemFailures": []}
    assert not aws.present(repo, digest)  # moved out of the source repository
    qrepo = f"quarantine/{repo}"
    assert aws.tags(qrepo, digest) == [f"quarantined-{short_digest(digest)}"]
    assert aws.oci.blob_exists(qrepo, image.config_digest)  # blobs mounted on the data plane
    (alert,) = aws.drain("alpha-alerts")
    assert attributes(alert) == {
        "team": "alpha",
        "repository": repo,
        "severity": "critical",
        "verdict": "FAILED",
        "action": "quarantine",
        "kind": "verdict",
    }
    body = json.loads(alert["Body"])
    assert body["image"].endswith(f"{repo}@{digest}") and body["action"] == "quarantine"
    assert "CVE-2099-0000" in json.dumps(body["top_findings"])
    assert aws.drain("bravo-alerts") == []  # the filter policy keeps bravo's queue clean
    emf = aws.metrics()
    verdicts = [m for m in emf if "Verdicts" in m]
    assert verdicts and verdicts[0]["outcome"] == "FAILED" and verdicts[0]["repository"] == repo
    assert any("ActionLatency" in m and m["action"] == "quarantine" for m in emf)

    # the same EventBridge event delivered again (at-least-once): no second action or alert
    again = aws.gate("on_push", event)
    assert again == {"batchItemFailures": []}
    ledger = aws.ledger()
    quarantines = [a for a in ledger.actions() if a.kind == "quarantine"]
    assert len(quarantines) == 1 and quarantines[0].status == "done"
    assert aws.drain("alpha-alerts") == []
    (record,) = aws.moto.client("dynamodb").query(  # one idempotency record: this event id
        TableName=TABLE,
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": "idempotency#on_push"}},
    )["Items"]
    assert record["status"]["S"] == "COMPLETED"
    assert int(record[TTL_ATTRIBUTE]["N"]) > datetime.now(UTC).timestamp()
    assert json.loads(record["data"]["S"])["id"] == event["id"]
    held = ledger.quarantined(REGISTRY_HOST, repo, digest)
    assert held is not None and held.tags == ("1.0.0",) and held.location == qrepo


def test_pending_image_is_held_by_retag_then_released_by_its_scan(aws: Aws) -> None:
    repo = "bravo/web"
    aws.repository(repo)
    digest = aws.push(repo, make_image(seed=502), "2.1.0")
    push = aws.sample("ecr-image-push.json", repository=repo, digest=digest, tag="2.1.0")

    assert aws.gate("on_push", push) == {"batchItemFailures": []}
    qtag = f"quarantined-{short_digest(digest)}"
    assert aws.tags(repo, digest) == [qtag]  # held: reachable by digest, not deployable
    (held,) = aws.drain("bravo-alerts")
    assert attributes(held)["verdict"] == "PENDING" and attributes(held)["action"] == "quarantine"
    delayed = aws.sqs.get_queue_attributes(
        QueueUrl=aws.queues["recheck"], AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    assert delayed["ApproximateNumberOfMessagesDelayed"] == "1"  # back at the scan deadline

    aws.scan_result(repo, digest, ["LOW"])
    scan = aws.sample("ecr-image-scan.json", repository=repo, digest=digest, tag=None)
    assert aws.gate("on_scan", scan) == {"batchItemFailures": []}
    assert aws.tags(repo, digest) == ["2.1.0"]  # released: exactly the tags it had
    assert aws.ledger().last_verdict(REGISTRY_HOST, repo, digest) == "PASSED"
    released = aws.ledger().quarantined(REGISTRY_HOST, repo, digest)
    assert released is not None and released.released_at is not None
    # bravo subscribed to high/critical/unknown only: the LOW-severity release is not theirs
    assert aws.drain("bravo-alerts") == []
    assert aws.drain("alpha-alerts") == []


def test_inspector_scan_with_critical_findings_keeps_the_image_held(aws: Aws) -> None:
    repo = "bravo/worker"
    aws.repository(repo)
    digest = aws.push(repo, make_image(seed=503), "3.0.0")
    push = aws.sample("ecr-image-push.json", repository=repo, digest=digest, tag="3.0.0")
    aws.gate("on_push", push)
    aws.drain("bravo-alerts")
    aws.scan_result(repo, digest, ["CRITICAL"])

    scan = aws.sample("inspector2-scan.json", repository=repo, digest=digest, tag="3.0.0")
    assert scan["detail"]["repository-name"].startswith("arn:aws:ecr:")
    assert aws.gate("on_scan", scan) == {"batchItemFailures": []}

    assert aws.tags(repo, digest) == [f"quarantined-{short_digest(digest)}"]
    assert aws.ledger().last_verdict(REGISTRY_HOST, repo, digest) == "FAILED"
    (alert,) = aws.drain("bravo-alerts")
    assert attributes(alert)["verdict"] == "FAILED"
    assert attributes(alert)["severity"] == "critical"
    assert attributes(alert)["action"] == "quarantine"  # the standing state, not a new action
    quarantines = [a for a in aws.ledger().actions() if a.kind == "quarantine"]
    assert len(quarantines) == 1


def test_referrer_push_re_evaluates_the_subject_image(aws: Aws) -> None:
    repo = "apps/web"
    aws.repository(repo)
    image = make_image(seed=504)
    digest = aws.push(repo, image, "1.2.3")
    referrer = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "config": {
            "mediaType": "application/vnd.oci.empty.v1+json",
            "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
            "size": 2,
        },
        "layers": [],
        "subject": {
            "mediaType": image.media_type,
            "digest": digest,
            "size": len(image.manifest),
        },
    }
    raw = json.dumps(referrer, separators=(",", ":")).encode()
    ref_digest = put_manifest(aws.ecr, repo, raw)
    event = aws.sample("ecr-referrer-action.json", repository=repo, digest=ref_digest)

    assert aws.gate("on_push", event) == {"batchItemFailures": []}
    ledger = aws.ledger()
    assert ledger.last_verdict(REGISTRY_HOST, repo, digest) == "PASSED"  # the subject
    assert ledger.last_verdict(REGISTRY_HOST, repo, ref_digest) is None  # never the referrer
    assert aws.tags(repo, digest) == ["1.2.3"]


def test_pull_through_cache_image_with_a_forbidden_tag_is_quarantined(aws: Aws) -> None:
    repo = "docker-hub/alpine"
    aws.repository(repo)
    digest = aws.push(repo, make_image(seed=505), "latest")
    aws.ecr.put_image(  # a second tag on the same image
        repositoryName=repo,
        imageManifest=make_image(seed=505).manifest.decode(),
        imageManifestMediaType=make_image(seed=505).media_type,
        imageDigest=digest,
        imageTag="3.17.2",
    )
    event = aws.sample("ecr-pull-through-cache.json", repository=repo, digest=digest, tag="latest")

    assert aws.gate("on_push", event) == {"batchItemFailures": []}
    # retag: the quarantine tag first, then every tag the registry holds for the digest is
    # removed — the one regwarden saw pushed and the one it never saw (read from ECR)
    assert aws.tags(repo, digest) == [f"quarantined-{short_digest(digest)}"]
    notified = aws.drain("notify")
    assert [attributes(m)["team"] for m in notified] == ["platform"]
    assert aws.drain("alpha-alerts") == [] and aws.drain("bravo-alerts") == []


def test_replicated_image_is_gated_and_passes(aws: Aws) -> None:
    repo = "docker-hub/busybox"
    aws.repository(repo)
    digest = aws.push(repo, make_image(seed=506), "1.36.1")
    event = aws.sample("ecr-replication-action.json", repository=repo, digest=digest, tag="1.36.1")
    assert aws.gate("on_push", event) == {"batchItemFailures": []}
    assert aws.ledger().last_verdict(REGISTRY_HOST, repo, digest) == "PASSED"
    assert aws.tags(repo, digest) == ["1.36.1"]
    assert aws.drain("notify") == []  # nothing to report


def test_failed_push_and_delete_events_change_nothing(aws: Aws) -> None:
    repo = "apps/noop"
    aws.repository(repo)
    digest = aws.push(repo, make_image(seed=507), "latest")
    failure = aws.sample(
        "ecr-image-push-failure.json", repository=repo, digest=digest, tag="latest"
    )
    delete = aws.sample("ecr-image-delete.json", repository=repo, digest=digest, tag="latest")
    assert aws.gate("on_push", failure, delete) == {"batchItemFailures": []}
    assert aws.tags(repo, digest) == ["latest"]
    assert aws.ledger().last_verdict(REGISTRY_HOST, repo, digest) is None
    assert aws.drain("notify") == []


def test_one_malformed_record_in_a_batch_of_ten_fails_alone(aws: Aws) -> None:
    repo = "apps/bulk"
    aws.repository(repo)
    events = []
    for n in range(9):
        digest = aws.push(repo, make_image(seed=600 + n), f"1.0.{n}")
        events.append(
            aws.sample("ecr-image-push.json", repository=repo, digest=digest, tag=f"1.0.{n}")
        )
    bodies = [json.dumps(e) for e in events]
    bodies.insert(4, '{"version": "0", "id": "broken", "detail-type": "ECR Image Action"')
    batch = aws.sqs_event(*bodies)
    assert len(batch["Records"]) == 10
    (bad,) = [r for r in batch["Records"] if "broken" in r["body"]]

    result = aws.invoke("on_push", batch)

    assert result == {"batchItemFailures": [{"itemIdentifier": bad["messageId"]}]}
    ledger = aws.ledger()
    verdicts = [
        ledger.last_verdict(REGISTRY_HOST, repo, e["detail"]["image-digest"]) for e in events
    ]
    assert verdicts == ["PASSED"] * 9


def test_misrouted_event_fails_its_record(aws: Aws) -> None:
    repo = "apps/misrouted"
    aws.repository(repo)
    digest = aws.push(repo, make_image(seed=508), "1.0.0")
    scan = aws.sample("ecr-image-scan.json", repository=repo, digest=digest)
    push = aws.sample("ecr-image-push.json", repository=repo, digest=digest, tag="1.0.0")
    batch = aws.sqs_event(json.dumps(scan), json.dumps(push))
    result = aws.invoke("on_push", batch)
    (failed,) = result["batchItemFailures"]
    assert (
        json.loads(
            next(r for r in batch["Records"] if r["messageId"] == failed["itemIdentifier"])["body"]
        )["detail-type"]
        == "ECR Image Scan"
    )
    assert aws.ledger().last_verdict(REGISTRY_HOST, repo, digest) == "PASSED"


def test_recheck_message_re_evaluates_or_waits(aws: Aws) -> None:
    repo = "alpha/slow"
    aws.repository(repo)
    digest = aws.push(repo, make_image(seed=509), "0.1.0")
    push = aws.sample("ecr-image-push.json", repository=repo, digest=digest, tag="0.1.0")
    assert aws.gate("on_push", push) == {"batchItemFailures": []}  # no scan yet: PENDING
    assert aws.tags(repo, digest) == ["0.1.0"]  # `move` never holds a PENDING image
    aws.scan_result(repo, digest, ["LOW"])  # the scan lands; its event was lost
    image = f"{REGISTRY_HOST}/{repo}@{digest}"
    now = datetime.now(UTC)
    early = {
        "id": "r1",
        "source": "regwarden.recheck",
        "image": image,
        "at": (now + timedelta(hours=1)).isoformat(),
    }
    due = {
        "id": "r2",
        "source": "regwarden.recheck",
        "image": image,
        "at": (now - timedelta(seconds=5)).isoformat(),
    }
    before = int(
        aws.sqs.get_queue_attributes(
            QueueUrl=aws.queues["recheck"], AttributeNames=["ApproximateNumberOfMessagesDelayed"]
        )["Attributes"]["ApproximateNumberOfMessagesDelayed"]
    )
    assert aws.gate("on_push", early, due) == {"batchItemFailures": []}
    after = int(
        aws.sqs.get_queue_attributes(
            QueueUrl=aws.queues["recheck"], AttributeNames=["ApproximateNumberOfMessagesDelayed"]
        )["Attributes"]["ApproximateNumberOfMessagesDelayed"]
    )
    assert after == before + 1  # the early one is sent again, delayed; the due one ran
    assert aws.ledger().last_verdict(REGISTRY_HOST, repo, digest) == "PASSED"


# -- notify -------------------------------------------------------------------------------------


def _quarantine_alpha(aws: Aws, repo: str, seed: int) -> str:
    aws.repository(repo)
    digest = aws.push(repo, make_image(seed=seed), "1.0.0")
    aws.scan_result(repo, digest, ["CRITICAL"])
    aws.gate(
        "on_push", aws.sample("ecr-image-push.json", repository=repo, digest=digest, tag="1.0.0")
    )
    return digest


def test_notify_delivers_to_the_policys_channels_once(aws: Aws) -> None:
    digest = _quarantine_alpha(aws, "alpha/notified", 510)
    batch = aws.receive("notify", 1)  # the alert, as the topic delivered it
    assert json.loads(batch["Records"][0]["body"])["image"].endswith(digest)

    assert aws.invoke("notify", batch) == {"batchItemFailures": []}

    (delivery,) = aws.sink.received
    headers, body = delivery
    # key from Secrets Manager
    assert verify_signature(HMAC_KEY.encode(), headers, body, now=datetime.now(UTC))
    cloudevent = json.loads(body)
    assert cloudevent["data"]["action"] == "quarantine"
    # the route to the alerts topic itself is skipped: nothing new on the topic
    assert aws.drain("notify") == [] and aws.drain("alpha-alerts") != []

    assert aws.invoke("notify", batch) == {"batchItemFailures": []}  # redelivered
    assert len(aws.sink.received) == 1


def test_notify_retries_only_the_failed_channel(aws: Aws) -> None:
    _quarantine_alpha(aws, "alpha/flaky", 511)
    batch = aws.receive("notify", 1)
    aws.sink.status = 500
    first = aws.invoke("notify", batch)
    assert first == {"batchItemFailures": [{"itemIdentifier": batch["Records"][0]["messageId"]}]}
    assert aws.sink.received == []
    aws.sink.status = 204
    batch["Records"][0]["attributes"]["ApproximateReceiveCount"] = "2"
    assert aws.invoke("notify", batch) == {"batchItemFailures": []}
    assert len(aws.sink.received) == 1


def test_policy_from_ssm_and_missing_settings(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    from functions.aws import _app
    from functions.aws._settings import Settings, load_policy

    ssm = aws.moto.client("ssm")
    text = aws.moto.client("s3").get_object(Bucket=BUCKET, Key="regwarden.yaml")["Body"].read()
    ssm.put_parameter(Name="/regwarden/policy", Value=text.decode(), Type="SecureString")
    policy = load_policy("ssm:/regwarden/policy")
    assert policy.for_repository("alpha/x").team == "alpha"

    from regwarden.errors import PolicyError, UsageError

    with pytest.raises(PolicyError, match="cannot read the policy from ssm:/missing"):
        load_policy("ssm:/missing")
    with pytest.raises(UsageError, match="REGWARDEN_TABLE is not set"):
        Settings.from_env({"REGWARDEN_POLICY": "ssm:/regwarden/policy"})
    with pytest.raises(UsageError, match="REGWARDEN_SECRET_STORE: got 'vault'"):
        Settings.from_env(
            {"REGWARDEN_POLICY": "x", "REGWARDEN_TABLE": "t", "REGWARDEN_SECRET_STORE": "vault"}
        )
    monkeypatch.delenv("REGWARDEN_TABLE")
    _app.reset()
    repo = "apps/unconfigured"
    aws.repository(repo)
    digest = aws.push(repo, make_image(seed=512), "1.0.0")
    event = aws.sqs_event(
        json.dumps(aws.sample("ecr-image-push.json", repository=repo, digest=digest, tag="1.0.0"))
    )
    with pytest.raises(UsageError, match="REGWARDEN_TABLE is not set"):
        aws.invoke("on_push", event)  # the whole batch fails: SQS retries it, nothing lost


def test_release_of_a_moved_image_restores_it_from_the_dynamodb_ledger(aws: Aws) -> None:
    """A person's release (generic `actions.release` over the ECR provider and the DynamoDB
    ledger): the image comes back to its repository with exactly its tags, the quarantine
    copy goes, and a later push event of the same digest does not quarantine it again."""
    from regwarden.actions import release
    from regwarden.providers import ProviderOptions
    from regwarden.providers.ecr import EcrRegistry
    from regwarden.reference import ImageRef

    repo = "alpha/released"
    digest = _quarantine_alpha(aws, repo, 513)
    assert not aws.present(repo, digest)
    registry = EcrRegistry(
        REGISTRY_HOST, ProviderOptions(data_plane_host=aws.oci.host, create_repositories=True)
    )
    ledger = aws.ledger()
    image = ImageRef.parse(f"{REGISTRY_HOST}/{repo}@{digest}")
    try:
        outcome = release(
            registry, ledger, image=image, reason="false positive", now=datetime.now(UTC)
        )
    finally:
        registry.close()
    assert outcome.restored_tags == ("1.0.0",)
    assert aws.tags(repo, digest) == ["1.0.0"]
    assert not aws.present(f"quarantine/{repo}", digest)
    held = ledger.quarantined(REGISTRY_HOST, repo, digest)
    assert held is not None and held.released_at is not None
    assert [a.kind for a in ledger.actions()] == ["quarantine", "release"]
    aws.drain("alpha-alerts")
    push = aws.sample("ecr-image-push.json", repository=repo, digest=digest, tag="1.0.0")
    assert aws.gate("on_push", push) == {"batchItemFailures": []}  # the release push itself
    assert aws.tags(repo, digest) == ["1.0.0"]  # the person's decision stands
