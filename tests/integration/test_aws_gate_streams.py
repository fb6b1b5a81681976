"""The ECR path of the push gate, driven the way ECR drives it: EventBridge events through
the Lambda handlers, on moto server with a real `docker-registry` as ECR's `/v2/` data plane.

What ECR really sends, and what a gate must make of it:

- a scan event for an image whose push regwarden never saw (deployed before it, or the
  push event lost): the registry's own scan is read without `sources` being spelled out,
  and `retag` removes the tags ECR holds now, not the ones the ledger happens to know;
- a multi-arch push: one push event per child (untagged, by digest) before the index's; the
  children wait for the settle window (an SQS recheck, re-sent past SQS's 15-minute
  maximum delay) and are never judged while an index lists them;
- an "ECR Referrer Action" for a signature: evidence for its subject, never a verdict of
  its own;
- clocks start at ECR's `imagePushedAt`, never at a scan event's time;
- a data-plane failure while gathering evidence fails the SQS record (retried), no action.

The recheck queue is read in moto's SQS backend (moto runs in this process), because SQS
hides a delayed message until its delay is over; a recheck is delivered "later" by ending
its delay there and moving the handler's clock (`_app.datetime`) forward.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

import pytest
from support import aws_gate
from support import moto_server as support
from support.aws_gate import Aws, attributes
from support.moto_server import ACCOUNT, REGION, REGISTRY_HOST, put_manifest
from support.proxy import RegistryProxy

from regwarden.devtools import ImageBlobs, IndexBlobs, LocalRegistry, make_image, make_multiarch
from regwarden.reference import short_digest
from regwarden.signatures import BUNDLE_V03_MEDIA_TYPE, publish, sign_bundle, sign_legacy
from regwarden.signatures.keys import PrivateKey, generate_private_key

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

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
SQS_MAX_DELAY = 900
SETTLE = timedelta(minutes=20)
"""Longer than SQS's longest delay, so the settle recheck has to be sent again."""

# `scan/**` leaves `vulnerabilities.sources` unset (the registry's own scan is the default);
# `sourced/**` names `ecr`, so those cases test one thing each, whatever the defaults do.
POLICY = """\
apiVersion: regwarden/v1
kind: Policy
defaults:
  mode: enforce
  team: gate
  settleWindow: 20m
  quarantine: {{strategy: retag}}
  signatures:
    required: true
    cosign: {{keys: ["secret://regwarden/cosign-pub"]}}
    gracePeriod: 2m
  vulnerabilities: {{maxSeverity: high, scanTimeout: 30m}}
repositories:
  - match: "scan/**"
    team: scan
  - match: "sourced/**"
    vulnerabilities: {{maxSeverity: high, scanTimeout: 30m, sources: [ecr]}}
  - match: "moved/**"
    vulnerabilities: {{maxSeverity: high, scanTimeout: 30m, sources: [ecr]}}
    quarantine: {{strategy: move, repository: "quarantine/{{repository}}"}}
notifications:
  channels:
    alerts-topic: {{type: sns, topicArn: "{topic}"}}
  routes:
    - {{match: {{}}, to: [alerts-topic]}}
"""


@pytest.fixture
def aws_policy() -> str:
    return POLICY


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return generate_private_key()


@pytest.fixture(autouse=True)
def cosign_secret(aws: Aws, key: PrivateKey) -> None:
    """The policy's cosign key, in Secrets Manager (read at the functions' cold start)."""
    aws.moto.client("secretsmanager").create_secret(
        Name="regwarden/cosign-pub", SecretString=key.public_key.pem.decode()
    )


# -- helpers ------------------------------------------------------------------------------


def sign(aws: Aws, repository: str, digest: str, key: PrivateKey) -> None:
    """A legacy cosign signature (`.sig` tag) on the data plane, as `cosign sign` leaves it."""
    signature = sign_legacy(
        image_digest=digest, docker_reference=f"{REGISTRY_HOST}/{repository}", key=key
    )
    publish(aws.oci, repository, signature)


def sign_with_bundle(
    aws: Aws, repository: str, content: ImageBlobs | IndexBlobs, key: PrivateKey
) -> str:
    """A Sigstore bundle referrer of `content` (`regwarden sign --format bundle`): on the
    data plane, and in ECR, which stores it as an image of its own; its digest."""
    bundle = sign_bundle(
        subject={
            "mediaType": content.media_type,
            "digest": content.manifest_digest,
            "size": len(content.manifest),
        },
        key=key,
        created=datetime.now(UTC),
    )
    publish(aws.oci, repository, bundle)
    digest = put_manifest(aws.ecr, repository, bundle.manifest, media_type=bundle.media_type)
    assert digest == bundle.digest
    return digest


def push_event(aws: Aws, repository: str, digest: str, tag: str | None) -> dict[str, Any]:
    return aws.sample("ecr-image-push.json", repository=repository, digest=digest, tag=tag)


def index_push_event(aws: Aws, repository: str, digest: str, tag: str) -> dict[str, Any]:
    event = push_event(aws, repository, digest, tag)
    event["detail"]["manifest-media-type"] = OCI_INDEX
    event["detail"].pop("artifact-media-type", None)  # ECR sends none for an index
    return event


def scan_event(aws: Aws, repository: str, digest: str) -> dict[str, Any]:
    return aws.sample("ecr-image-scan.json", repository=repository, digest=digest)


def enhanced_scan_result(aws: Aws, repository: str, digest: str, severity: str) -> None:
    """The registry on enhanced scanning (Amazon Inspector), and one ACTIVE finding for the
    image in ECR's findings API, as ECR answers under enhanced scanning."""
    aws.ecr.put_registry_scanning_configuration(
        scanType="ENHANCED",
        rules=[
            {
                "scanFrequency": "CONTINUOUS_SCAN",
                "repositoryFilters": [{"filter": "*", "filterType": "WILDCARD"}],
            }
        ],
    )
    aws.ecr.start_image_scan(repositoryName=repository, imageId={"imageDigest": digest})
    aws.moto.set_ecr_scan_findings(
        {
            "registryId": ACCOUNT,
            "repositoryName": repository,
            "imageId": {"imageDigest": digest},
            "imageScanStatus": {"status": "ACTIVE", "description": "Continuous scan"},
            "imageScanFindings": {
                "imageScanCompletedAt": datetime.now(UTC).timestamp(),
                "findingSeverityCounts": {severity: 1},
                "enhancedFindings": [
                    {
                        "awsAccountId": ACCOUNT,
                        "findingArn": f"arn:aws:inspector2:{REGION}:{ACCOUNT}:finding/f0",
                        "packageVulnerabilityDetails": {
                            "vulnerabilityId": "CVE-2099-0000",
                            "source": "NVD",
                            "vulnerablePackages": [{"name": "pkg0", "version": "1.0"}],
                        },
                        "severity": severity,
                        "status": "ACTIVE",
                        "title": "CVE-2099-0000 - pkg0",
                        "type": "PACKAGE_VULNERABILITY",
                    }
                ],
            },
        }
    )


def verdict(aws: Aws, repository: str, digest: str) -> str | None:
    return aws.ledger().last_verdict(REGISTRY_HOST, repository, digest)


def qtag(digest: str) -> str:
    return f"quarantined-{short_digest(digest)}"


def ahead(monkeypatch: pytest.MonkeyPatch, by: timedelta) -> None:
    """The handlers' clock runs `by` ahead of the wall clock from now on."""
    from functions.aws import _app

    class Later(datetime):
        @classmethod
        def now(cls, tz: tzinfo | None = None) -> datetime:  # type: ignore[override]
            return datetime.now(tz) + by

    monkeypatch.setattr(_app, "datetime", Later)


def deliver_rechecks(aws: Aws) -> dict[str, Any]:
    """Every delayed recheck, delivered now (their delay over), as one SQS batch."""
    waiting = aws.delayed("recheck")
    aws.elapse("recheck")
    return aws.receive("recheck", len(waiting))


def mentions(bodies: list[tuple[dict[str, Any], int]], digest: str) -> list[int]:
    """The delays of the scheduled messages that name `digest`."""
    return [delay for body, delay in bodies if digest in json.dumps(body)]


def verdict_metrics(aws: Aws) -> list[tuple[str, str]]:
    return [(m["repository"], m["outcome"]) for m in aws.metrics() if "Verdicts" in m]


def alert_body(message: dict[str, Any]) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(message["Body"])
    return body


# -- registry's own scan, retag from the registry's state -----------------------------------


@pytest.mark.parametrize("scanning", ["basic", "enhanced"])
def test_critical_scan_of_an_image_never_seen_pushed_fails_and_retag_leaves_no_tag(
    aws: Aws, key: PrivateKey, scanning: str
) -> None:
    repo = f"scan/critical-{scanning}"
    aws.repository(repo)
    digest = aws.push(repo, make_image(seed=801, layer_size=64), "1.0.1")
    sign(aws, repo, digest, key)  # signed: the scan alone decides
    if scanning == "basic":
        aws.scan_result(repo, digest, ["CRITICAL", "LOW"])
        event = scan_event(aws, repo, digest)
    else:
        enhanced_scan_result(aws, repo, digest, "CRITICAL")
        event = aws.sample("inspector2-scan.json", repository=repo, digest=digest, tag="1.0.1")

    # no push event: deployed before regwarden, or the event was lost
    assert aws.gate("on_scan", event) == {"batchItemFailures": []}

    assert verdict(aws, repo, digest) == "FAILED"
    assert aws.tags(repo, digest) == [qtag(digest)]
    listed = aws.ecr.list_images(repositoryName=repo)["imageIds"]
    assert [i.get("imageTag") for i in listed if i["imageDigest"] == digest] == [qtag(digest)]
    pulled = aws.ecr.batch_get_image(repositoryName=repo, imageIds=[{"imageTag": "1.0.1"}])
    assert pulled["images"] == []  # `docker pull …:1.0.1` finds nothing
    held = aws.ledger().quarantined(REGISTRY_HOST, repo, digest)
    assert held is not None and held.tags == ("1.0.1",)  # what release puts back
    (alert,) = aws.drain("notify")
    assert attributes(alert)["verdict"] == "FAILED"
    body = alert_body(alert)
    assert "CVE-2099-0000" in json.dumps(body["top_findings"])  # ECR's findings were read


def test_low_scan_of_a_signed_image_never_seen_pushed_passes_with_its_tags(
    aws: Aws, key: PrivateKey
) -> None:
    repo = "scan/low"
    aws.repository(repo)
    digest = aws.push(repo, make_image(seed=802, layer_size=64), "1.0.2")
    sign(aws, repo, digest, key)
    aws.scan_result(repo, digest, ["LOW"])

    assert aws.gate("on_scan", scan_event(aws, repo, digest)) == {"batchItemFailures": []}

    assert verdict(aws, repo, digest) == "PASSED"
    assert aws.tags(repo, digest) == ["1.0.2"]
    assert aws.ledger().quarantined(REGISTRY_HOST, repo, digest) is None
    assert aws.drain("notify") == []


# -- multi-arch pushes and untagged manifests ----------------------------------------------


def test_multi_arch_push_children_wait_and_the_index_is_judged_once(
    aws: Aws, key: PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = "sourced/multi"
    aws.repository(repo)
    index = make_multiarch(seed=83, layers=1, layer_size=64)
    index_digest = aws.push_index(repo, index, "2.0.0")
    children = [c.digest for c in index.children]
    sign(aws, repo, index_digest, key)  # signatures and scans on the index digest
    aws.scan_result(repo, index_digest, ["LOW"])

    # ECR notifies each child first, untagged, by digest
    child_events = [push_event(aws, repo, d, None) for d in children]
    assert aws.gate("on_push", *child_events) == {"batchItemFailures": []}

    for d in children:
        assert verdict(aws, repo, d) is None  # no verdict on arrival
        assert aws.tags(repo, d) == []  # nothing held
    waiting = aws.delayed("recheck")
    for d in children:
        (delay,) = mentions(waiting, d)  # one recheck each, at the settle window
        assert delay == SQS_MAX_DELAY  # 20m away: as far as SQS can delay

    assert aws.gate("on_push", index_push_event(aws, repo, index_digest, "2.0.0")) == {
        "batchItemFailures": []
    }
    assert verdict(aws, repo, index_digest) == "PASSED"
    assert aws.tags(repo, index_digest) == ["2.0.0"]

    # the children's rechecks, after the window: the index lists them, so no verdict
    batch = deliver_rechecks(aws)
    assert len(batch["Records"]) == len(children)
    ahead(monkeypatch, SETTLE + timedelta(minutes=40))
    assert aws.invoke("on_push", batch) == {"batchItemFailures": []}

    for d in children:
        assert verdict(aws, repo, d) is None
        assert aws.tags(repo, d) == []
        assert aws.present(repo, d)  # still in the repository, pullable by digest
    assert aws.delayed("recheck") == []  # nothing left to wait for
    assert aws.ledger().quarantined(REGISTRY_HOST, repo, index_digest) is None
    assert verdict_metrics(aws) == [(repo, "PASSED")]  # one verdict: the index's
    assert aws.drain("notify") == []


def test_failed_multi_arch_index_moves_with_its_children_and_release_restores_both(
    aws: Aws,
) -> None:
    from regwarden.actions import release
    from regwarden.providers import ProviderOptions
    from regwarden.providers.ecr import EcrRegistry
    from regwarden.reference import ImageRef

    repo = "moved/multi"
    aws.repository(repo)
    index = make_multiarch(seed=87, layers=1, layer_size=64)
    index_digest = aws.push_index(repo, index, "3.0.0")
    children = [c.digest for c in index.children]
    aws.scan_result(repo, index_digest, ["CRITICAL"])  # unsigned too
    child_events = [push_event(aws, repo, d, None) for d in children]
    assert aws.gate("on_push", *child_events) == {"batchItemFailures": []}

    event = index_push_event(aws, repo, index_digest, "3.0.0")
    assert aws.gate("on_push", event) == {"batchItemFailures": []}

    assert verdict(aws, repo, index_digest) == "FAILED"
    qrepo = f"quarantine/{repo}"
    for d in [index_digest, *children]:
        assert not aws.present(repo, d), d  # the index and every child left together
        assert aws.present(qrepo, d), d
    assert aws.tags(qrepo, index_digest) == [qtag(index_digest)]
    for d in children:
        assert verdict(aws, repo, d) is None  # moved as part of the index, never judged

    registry = EcrRegistry(
        REGISTRY_HOST, ProviderOptions(data_plane_host=aws.oci.host, create_repositories=True)
    )
    try:
        outcome = release(
            registry,
            aws.ledger(),
            image=ImageRef.parse(f"{REGISTRY_HOST}/{repo}@{index_digest}"),
            reason="accepted risk",
            now=datetime.now(UTC),
        )
    finally:
        registry.close()
    assert outcome.restored_tags == ("3.0.0",)
    assert aws.tags(repo, index_digest) == ["3.0.0"]
    for d in children:
        assert aws.present(repo, d), d  # the index can be pulled again, every platform
    for d in [index_digest, *children]:
        assert not aws.present(qrepo, d), d


def test_stand_alone_untagged_push_is_judged_after_the_settle_window(
    aws: Aws, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = "sourced/solo"
    aws.repository(repo)
    digest = aws.push(repo, make_image(seed=804, layer_size=64), None)  # by digest only

    assert aws.gate("on_push", push_event(aws, repo, digest, None)) == {"batchItemFailures": []}
    assert verdict(aws, repo, digest) is None
    assert aws.tags(repo, digest) == []
    (first,) = mentions(aws.delayed("recheck"), digest)
    assert first == SQS_MAX_DELAY

    # SQS brings it back after 15 minutes: 5 left of the window, so it is sent again
    batch = deliver_rechecks(aws)
    ahead(monkeypatch, timedelta(minutes=15))
    assert aws.invoke("on_push", batch) == {"batchItemFailures": []}
    assert verdict(aws, repo, digest) is None
    (again,) = mentions(aws.delayed("recheck"), digest)
    assert 0 < again <= 5 * 60 + 5

    # past the window, no index lists it: a stand-alone image, judged (unsigned: held)
    batch = deliver_rechecks(aws)
    ahead(monkeypatch, SETTLE + timedelta(minutes=40))
    assert aws.invoke("on_push", batch) == {"batchItemFailures": []}
    assert verdict(aws, repo, digest) == "FAILED"
    assert aws.tags(repo, digest) == [qtag(digest)]
    assert aws.ledger().quarantined(REGISTRY_HOST, repo, digest) is not None
    (alert,) = aws.drain("notify")
    assert attributes(alert)["action"] == "quarantine"
    assert any(r.startswith("signatures:") for r in alert_body(alert)["reasons"])


# -- referrers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sample",
    [
        "ecr-referrer-action.json",
        "ecr-image-push.json",  # a manifest with a `subject` pushed by digest, no tag
    ],
)
def test_bundle_referrer_re_evaluates_its_subject_and_is_never_judged(
    aws: Aws, key: PrivateKey, sample: str
) -> None:
    repo = f"sourced/signed-later-{sample.split('.')[0]}"
    aws.repository(repo)
    image = make_image(seed=805, layer_size=64)
    digest = aws.push(repo, image, "1.0.0")
    aws.scan_result(repo, digest, ["LOW"])

    assert aws.gate("on_push", push_event(aws, repo, digest, "1.0.0")) == {"batchItemFailures": []}
    assert verdict(aws, repo, digest) == "PENDING"  # within the grace period, unsigned
    assert aws.tags(repo, digest) == [qtag(digest)]  # held by retag meanwhile

    ref_digest = sign_with_bundle(aws, repo, image, key)
    referrer = aws.sample(sample, repository=repo, digest=ref_digest)
    referrer["detail"]["artifact-media-type"] = BUNDLE_V03_MEDIA_TYPE
    assert aws.gate("on_push", referrer) == {"batchItemFailures": []}

    assert verdict(aws, repo, digest) == "PASSED"
    assert aws.tags(repo, digest) == ["1.0.0"]  # released
    ledger = aws.ledger()
    assert ledger.last_verdict(REGISTRY_HOST, repo, ref_digest) is None
    assert ledger.quarantined(REGISTRY_HOST, repo, ref_digest) is None
    assert aws.present(repo, ref_digest)  # the referrer: where it was, as it was
    assert aws.tags(repo, ref_digest) == []


# -- clocks ---------------------------------------------------------------------------------


def test_grace_period_counts_from_ecrs_push_time_not_the_scan_event(aws: Aws) -> None:
    repo = "sourced/aged"
    aws.repository(repo)
    digest = aws.push(repo, make_image(seed=806, layer_size=64), "0.9.0")
    aws.scan_result(repo, digest, ["LOW"])  # the scan passes: only the signature is at stake
    pushed = datetime.now(UTC) - timedelta(hours=3)

    def pushed_long_ago(doc: dict[str, Any]) -> None:
        for detail in doc.get("imageDetails") or []:
            if detail.get("imageDigest") == digest:
                detail["imagePushedAt"] = pushed.timestamp()

    aws.proxy.rewrite["DescribeImages"] = pushed_long_ago  # what ECR says of an old image

    # the scan event is now; the push (never seen) was 3h ago, grace period 2m
    assert aws.gate("on_scan", scan_event(aws, repo, digest)) == {"batchItemFailures": []}

    assert aws.proxy.operations("DescribeImages")  # the push time was ECR's to tell
    assert verdict(aws, repo, digest) == "FAILED"  # not PENDING from the event's time
    assert aws.tags(repo, digest) == [qtag(digest)]
    (alert,) = aws.drain("notify")
    reasons = alert_body(alert)["reasons"]
    assert any(r.startswith("signatures:") and "not signed" in r for r in reasons), reasons
    assert not any(r.startswith("vulnerabilities:") for r in reasons), reasons
    assert mentions(aws.delayed("recheck"), digest) == []  # nothing to wait for


# -- infrastructure failures ----------------------------------------------------------------


@pytest.fixture
def flaky_data_plane(
    local: LocalRegistry, monkeypatch: pytest.MonkeyPatch
) -> Iterator[RegistryProxy]:
    """ECR's `/v2/` as the functions reach it, through a proxy that can inject faults."""
    with RegistryProxy(local.host) as proxy:
        monkeypatch.setenv("ECR_DATA_PLANE", proxy.host)  # read at the first cold start
        yield proxy


def signed_behind_503(
    aws: Aws, key: PrivateKey, flaky_data_plane: RegistryProxy, repo: str, seed: int
) -> tuple[str, str, dict[str, Any]]:
    """A signed image with a LOW scan whose `.sig` lookups the data plane answers with 503,
    and its push event as one SQS batch: (digest, signature path pattern, batch)."""
    aws.repository(repo)
    digest = aws.push(repo, make_image(seed=seed, layer_size=64), "1.0.0")
    sign(aws, repo, digest, key)
    aws.scan_result(repo, digest, ["LOW"])
    signature = rf"/v2/{repo}/manifests/sha256-[0-9a-f]{{64}}\.sig"
    flaky_data_plane.inject(503, count=None, path=signature)
    return digest, signature, aws.sqs_event(json.dumps(push_event(aws, repo, digest, "1.0.0")))


def test_data_plane_503_during_signature_discovery_fails_the_record_without_action(
    aws: Aws, key: PrivateKey, flaky_data_plane: RegistryProxy
) -> None:
    repo = "sourced/flaky"
    digest, signature, batch = signed_behind_503(aws, key, flaky_data_plane, repo, seed=807)
    (record,) = batch["Records"]
    result = aws.invoke("on_push", batch)

    assert flaky_data_plane.count(path=signature) >= 1  # the fault was met
    assert result == {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}
    assert aws.tags(repo, digest) == ["1.0.0"]  # no action
    assert verdict(aws, repo, digest) in (None, "ERROR")  # never FAILED/PENDING on a guess
    assert aws.ledger().quarantined(REGISTRY_HOST, repo, digest) is None

    # SQS delivers it again once the registry is back: judged on the evidence
    flaky_data_plane.clear()
    record["attributes"]["ApproximateReceiveCount"] = "2"
    assert aws.invoke("on_push", batch) == {"batchItemFailures": []}
    assert verdict(aws, repo, digest) == "PASSED"
    assert aws.tags(repo, digest) == ["1.0.0"]


def test_data_plane_503_on_the_last_attempt_dead_letters_with_an_ops_alert(
    aws: Aws, key: PrivateKey, flaky_data_plane: RegistryProxy
) -> None:
    repo = "sourced/down"
    digest, _, batch = signed_behind_503(aws, key, flaky_data_plane, repo, seed=808)
    (record,) = batch["Records"]
    record["attributes"]["ApproximateReceiveCount"] = "3"  # REGWARDEN_MAX_RECEIVES
    result = aws.invoke("on_push", batch)

    # failed again: SQS moves it to the dead-letter queue
    assert result == {"batchItemFailures": [{"itemIdentifier": record["messageId"]}]}
    assert verdict(aws, repo, digest) == "ERROR"
    assert aws.tags(repo, digest) == ["1.0.0"]  # no action, ever, on missing evidence
    assert aws.ledger().quarantined(REGISTRY_HOST, repo, digest) is None
    (alert,) = aws.drain("notify")
    assert attributes(alert)["verdict"] == "ERROR"
    assert attributes(alert)["action"] == "none"
    reasons = alert_body(alert)["reasons"]
    assert any(r.startswith("signatures:") and "HTTP 503" in r for r in reasons), reasons
    assert not any(r.startswith("vulnerabilities:") for r in reasons), reasons  # scan was read
