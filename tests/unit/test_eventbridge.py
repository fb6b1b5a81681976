"""EventBridge intake: every sample in events/aws/, the drop rules, errors naming the field,
both envelope validators, and a hypothesis fuzz that only IntakeError ever escapes."""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regwarden.errors import IntakeError
from regwarden.intake import eventbridge
from regwarden.intake.eventbridge import (
    DETAIL_TYPES,
    ecr_registry_host,
    parse_eventbridge,
    parse_eventbridge_results,
)
from regwarden.model import EventKind, Severity
from regwarden.scanning import ScanStatus

EVENTS = Path(__file__).resolve().parents[2] / "events" / "aws"
SAMPLES = sorted(p.name for p in EVENTS.glob("*.json"))


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return doc


def digest_of(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(params=["powertools", "fallback"])
def envelope(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with Powertools' EventBridgeModel and with the built-in fallback model."""
    if request.param == "fallback":
        monkeypatch.setattr(eventbridge, "_envelope_model", lambda: eventbridge._Envelope)
    return str(request.param)


def test_every_listed_sample_exists() -> None:
    wanted = {
        "ecr-image-push.json",
        "ecr-image-delete.json",
        "ecr-image-push-failure.json",
        "ecr-image-scan.json",
        "ecr-referrer-action.json",
        "inspector2-scan.json",
        "ecr-pull-through-cache.json",
    }
    assert wanted <= set(SAMPLES)
    for name in SAMPLES:
        assert load(name)["detail-type"] in DETAIL_TYPES


def test_powertools_envelope_is_used_when_installed() -> None:
    from aws_lambda_powertools.utilities.parser.models import EventBridgeModel

    eventbridge._envelope_model.cache_clear()
    assert eventbridge._envelope_model() is EventBridgeModel


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_parses_to_what_its_detail_says(name: str, envelope: str) -> None:
    doc = load(name)
    detail = doc["detail"]
    events = parse_eventbridge(doc)
    status = detail.get("result", detail.get("sync-status", "SUCCESS"))
    if status != "SUCCESS":
        assert events == []
        return
    assert len(events) == 1
    event = events[0]
    assert event.delivery_id == doc["id"]
    assert event.source == doc["source"]
    assert event.time.isoformat().replace("+00:00", "Z") == doc["time"]
    repo = detail["repository-name"]
    if repo.startswith("arn:"):  # Inspector2 names the repository by ARN
        _, _, _, region, account, resource = repo.split(":", 5)
        repo = resource.removeprefix("repository/")
    else:
        account, region = doc["account"], doc["region"]
    assert event.image.registry == f"{account}.dkr.ecr.{region}.amazonaws.com"
    assert event.image.repository == repo
    assert event.image.digest == detail["image-digest"]
    expected_kind = {
        ("ECR Image Action", "PUSH"): EventKind.PUSHED,
        ("ECR Image Action", "DELETE"): EventKind.DELETED,
        ("ECR Referrer Action", "PUSH"): EventKind.SIGNED,
        ("ECR Replication Action", "REPLICATE"): EventKind.PUSHED,
    }.get((doc["detail-type"], detail.get("action-type")))
    if doc["detail-type"] in ("ECR Image Scan", "Inspector2 Scan"):
        expected_kind = EventKind.SCANNED
    if doc["detail-type"] == "ECR Pull Through Cache Action":
        expected_kind = EventKind.PUSHED
    assert event.kind is expected_kind
    if event.kind in (EventKind.PUSHED, EventKind.DELETED):
        assert event.image.tag == detail.get("image-tag")
    if event.kind is EventKind.SIGNED:
        # the referrer event names the referrer, not its subject
        assert event.subject_digest is None
    assert event.media_type == detail.get("manifest-media-type")


@pytest.mark.parametrize("name", ["ecr-image-scan.json", "inspector2-scan.json"])
def test_scan_samples_carry_the_senders_counts(name: str) -> None:
    doc = load(name)
    counts = doc["detail"]["finding-severity-counts"]
    (result,) = parse_eventbridge_results(doc)
    assert result.scan_status is ScanStatus.SUCCEEDED
    summary = result.scan_summary
    assert summary is not None and summary.digest == doc["detail"]["image-digest"]
    for key, count in counts.items():
        if key != "TOTAL":
            assert summary.counts()[Severity.parse(key)] == count
    assert summary.total == counts.get("TOTAL", sum(counts.values()))


def test_failed_basic_scan_is_scanned_without_summary() -> None:
    doc = load("ecr-image-scan.json")
    doc["detail"]["scan-status"] = "FAILED"
    (result,) = parse_eventbridge_results(doc)
    assert result.event.kind is EventKind.SCANNED
    assert result.scan_status is ScanStatus.FAILED
    assert result.scan_summary is None


def test_inspector_counts_keep_total_above_listed_severities() -> None:
    doc = load("inspector2-scan.json")
    counts = doc["detail"]["finding-severity-counts"]
    (result,) = parse_eventbridge_results(doc)
    assert result.scan_summary is not None
    listed = sum(v for k, v in counts.items() if k != "TOTAL")
    assert result.scan_summary.total == counts["TOTAL"] > listed


@pytest.mark.parametrize(
    ("name", "key", "value"),
    [
        ("ecr-image-push-failure.json", "result", "FAILURE"),
        ("ecr-image-push.json", "result", "FAILED"),
        ("ecr-replication-action.json", "result", "FAILED"),
        ("ecr-pull-through-cache.json", "sync-status", "FAILED"),
        ("ecr-referrer-action.json", "result", "FAILURE"),
    ],
)
def test_non_success_is_dropped_with_a_log_line(
    name: str, key: str, value: str, caplog: pytest.LogCaptureFixture
) -> None:
    doc = load(name)
    doc["detail"][key] = value
    with caplog.at_level(logging.INFO, logger="regwarden.intake"):
        assert parse_eventbridge(doc) == []
    lines = [r.getMessage() for r in caplog.records if r.name == "regwarden.intake"]
    assert len(lines) == 1
    assert doc["id"] in lines[0] and value in lines[0]


def test_pull_through_failure_reason_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    doc = load("ecr-pull-through-cache.json")
    doc["detail"].update(
        {"sync-status": "FAILED", "failure-code": "UPSTREAM_ERROR", "failure-reason": "timeout"}
    )
    with caplog.at_level(logging.INFO, logger="regwarden.intake"):
        assert parse_eventbridge(doc) == []
    assert "timeout" in caplog.text


@pytest.mark.parametrize(
    ("name", "action"),
    [
        ("ecr-image-push.json", "UPDATE_STORAGE_CLASS"),
        ("ecr-referrer-action.json", "DELETE"),
        ("ecr-referrer-action.json", "UPDATE_STORAGE_CLASS"),
    ],
)
def test_actions_without_new_content_are_dropped(name: str, action: str) -> None:
    doc = load(name)
    doc["detail"]["action-type"] = action
    assert parse_eventbridge(doc) == []


@pytest.mark.parametrize("suffix", [".sig", ".att", ".sbom", ""])
def test_signature_tag_push_is_signed_for_the_subject(suffix: str) -> None:
    subject = digest_of("the signed image")
    doc = load("ecr-image-push.json")
    doc["detail"]["image-tag"] = subject.replace(":", "-") + suffix
    (event,) = parse_eventbridge(doc)
    assert event.kind is EventKind.SIGNED
    assert event.subject_digest == subject
    assert event.image.digest == subject and event.image.tag is None


def test_referrer_with_referrers_schema_tag_names_the_subject() -> None:
    subject = digest_of("subject")
    doc = load("ecr-referrer-action.json")
    doc["detail"]["image-tag"] = subject.replace(":", "-")
    (event,) = parse_eventbridge(doc)
    assert event.kind is EventKind.SIGNED and event.subject_digest == subject


def test_delete_by_tag_only_and_by_nothing() -> None:
    doc = load("ecr-image-delete.json")
    del doc["detail"]["image-digest"]
    (event,) = parse_eventbridge(doc)
    assert event.kind is EventKind.DELETED
    assert event.image.digest is None and event.image.tag == doc["detail"]["image-tag"]
    del doc["detail"]["image-tag"]
    with pytest.raises(IntakeError, match=r"at detail\.image-digest: .*image-digest or image-tag"):
        parse_eventbridge(doc)


def test_push_without_digest_is_an_error_not_a_silent_skip() -> None:
    doc = load("ecr-image-push.json")
    del doc["detail"]["image-digest"]
    with pytest.raises(IntakeError, match=r"at detail\.image-digest: got nothing"):
        parse_eventbridge(doc)


def test_inspector_digest_from_resources_and_ambiguity() -> None:
    doc = load("inspector2-scan.json")
    digest = doc["detail"].pop("image-digest")
    arn = doc["detail"]["repository-name"]
    doc["resources"] = [arn, f"{arn}/{digest}"]
    (event,) = parse_eventbridge(doc)
    assert event.image.digest == digest
    doc["resources"].append(f"{arn}/{digest_of('another image')}")
    with pytest.raises(IntakeError, match=r"at detail\.image-digest: got 2 digests in resources"):
        parse_eventbridge(doc)


def test_inspector_registry_comes_from_the_repository_arn() -> None:
    doc = load("inspector2-scan.json")
    doc["detail"]["repository-name"] = "arn:aws:ecr:eu-central-1:210987654321:repository/team/api"
    (event,) = parse_eventbridge(doc)
    assert event.image.registry == "210987654321.dkr.ecr.eu-central-1.amazonaws.com"
    assert event.image.repository == "team/api"


def test_china_region_host() -> None:
    doc = load("ecr-image-push.json")
    doc["region"] = "cn-north-1"
    (event,) = parse_eventbridge(doc)
    assert event.image.registry == ecr_registry_host(doc["account"], "cn-north-1")
    assert event.image.registry.endswith(".amazonaws.com.cn")


def test_scan_resource_change_and_inspector_findings_are_dropped() -> None:
    doc = load("ecr-image-scan.json")
    doc["detail-type"] = "ECR Scan Resource Change"
    doc["detail"] = {"action-type": "SCAN_FREQUENCY_CHANGE", "repositories": []}
    assert parse_eventbridge(doc) == []
    doc["detail-type"], doc["source"] = "Inspector2 Finding", "aws.inspector2"
    assert parse_eventbridge(doc) == []


def _mutate(name: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    doc = load(name)
    change(doc)
    return doc


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        (
            _mutate("ecr-image-push.json", lambda d: d.update({"detail-type": "ECR Image Thing"})),
            r"at detail-type: got 'ECR Image Thing', expected one of: ECR Image Action, ",
        ),
        (
            _mutate("ecr-image-push.json", lambda d: d.update({"source": "custom.ecr"})),
            r"at source: got 'custom\.ecr' for 'ECR Image Action', expected 'aws\.ecr'",
        ),
        (
            _mutate("ecr-image-push.json", lambda d: d.pop("account")),
            r"at account: got nothing \(the key is missing\), expected a value",
        ),
        (
            _mutate("ecr-image-push.json", lambda d: d.update({"account": "1234"})),
            r"got account '1234', expected 12 digits",
        ),
        (
            _mutate("ecr-image-push.json", lambda d: d.update({"region": "moon-1"})),
            r"got region 'moon-1', expected a region like us-east-1",
        ),
        (
            _mutate("ecr-image-push.json", lambda d: d.update({"time": "yesterday"})),
            r"at time: got 'yesterday', expected a valid datetime",
        ),
        (
            _mutate("ecr-image-push.json", lambda d: d.update({"detail": ["x"]})),
            r"at detail: got a list, expected a valid dictionary",
        ),
        (
            _mutate("ecr-image-push.json", lambda d: d["detail"].update({"action-type": "PULL"})),
            r"at detail\.action-type: got 'PULL', expected one of PUSH, DELETE, "
            r"UPDATE_STORAGE_CLASS",
        ),
        (
            _mutate(
                "ecr-image-push.json", lambda d: d["detail"].update({"image-digest": "sha256:ab"})
            ),
            r"at detail\.image-digest: got 'sha256:ab', expected a digest like sha256:<64",
        ),
        (
            _mutate(
                "ecr-image-push.json",
                lambda d: d["detail"].update({"repository-name": "Bad//Name"}),
            ),
            r"at detail\.repository-name: got 'Bad//Name', expected a repository name",
        ),
        (
            _mutate(
                "ecr-image-push.json", lambda d: d["detail"].update({"image-tag": "no spaces"})
            ),
            r"at detail\.image-tag: got 'no spaces', expected a tag",
        ),
        (
            _mutate("ecr-image-push.json", lambda d: d["detail"].update({"result": 1})),
            r"at detail\.result: got 1, expected a string",
        ),
        (
            _mutate(
                "ecr-image-scan.json",
                lambda d: d["detail"]["finding-severity-counts"].update({"SEVERE": 1}),
            ),
            r"at detail\.finding-severity-counts\.SEVERE: got key 'SEVERE', expected a count under",
        ),
        (
            _mutate(
                "ecr-image-scan.json",
                lambda d: d["detail"]["finding-severity-counts"].update({"HIGH": -1}),
            ),
            r"at detail\.finding-severity-counts\.HIGH: got -1, expected an integer >= 0",
        ),
        (
            _mutate(
                "inspector2-scan.json",
                lambda d: d["detail"].update({"repository-name": "amazon/amazon-ecs-sample"}),
            ),
            r"at detail\.repository-name: got 'amazon/amazon-ecs-sample', expected an ECR "
            r"repository ARN",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) and len(v) < 3 else None,
)
def test_malformed_input_names_the_field(doc: dict[str, Any], match: str, envelope: str) -> None:
    with pytest.raises(IntakeError, match=match):
        parse_eventbridge(doc)


@pytest.mark.parametrize("value", [None, [], "text", 3, b"{}"])
def test_non_object_event(value: object) -> None:
    with pytest.raises(
        IntakeError, match=r"invalid EventBridge event: got .*expected a JSON object"
    ):
        parse_eventbridge(value)


# -- fuzzing ------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)


def _outcome(event: object) -> None:
    """Either a list of events or an IntakeError with the standard prefix; nothing else."""
    error: IntakeError | None = None
    result: object = None
    try:
        result = parse_eventbridge(event)
    except IntakeError as exc:
        error = exc
    if error is not None:
        assert str(error).startswith("invalid EventBridge event")
    else:
        assert isinstance(result, list)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(json_values)
def test_fuzz_arbitrary_json(value: object) -> None:
    _outcome(value)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(SAMPLES),
    where=st.sampled_from(["envelope", "detail"]),
    key=st.text(max_size=20),
    pick=st.integers(min_value=0, max_value=50),
    value=json_values,
    drop=st.booleans(),
)
def test_fuzz_mutated_samples(
    name: str, where: str, key: str, pick: int, value: object, drop: bool
) -> None:
    doc = copy.deepcopy(load(name))
    target = doc if where == "envelope" else doc["detail"]
    keys = list(target)
    chosen = keys[pick % len(keys)] if pick < 40 and keys else key
    if drop:
        target.pop(chosen, None)
    else:
        target[chosen] = value
    _outcome(doc)


@settings(max_examples=200, deadline=None)
@given(
    detail_type=st.sampled_from(sorted(DETAIL_TYPES)),
    detail=st.dictionaries(
        st.sampled_from(
            [
                "result",
                "sync-status",
                "action-type",
                "repository-name",
                "image-digest",
                "image-tag",
                "scan-status",
                "finding-severity-counts",
                "manifest-media-type",
            ]
        ),
        json_values,
    ),
)
def test_fuzz_details_of_every_kind(detail_type: str, detail: dict[str, Any]) -> None:
    doc = load("ecr-image-push.json")
    doc["detail-type"] = detail_type
    doc["source"] = DETAIL_TYPES[detail_type]
    doc["detail"] = detail
    _outcome(doc)
