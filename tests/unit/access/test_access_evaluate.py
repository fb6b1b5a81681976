"""Pure evaluation of accesses and the access alerts (renderers, SNS/Pub/Sub attributes,
CloudEvents type, dedup keys per window, routes matching `action: access`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from regwarden.access import (
    AccessEvent,
    AccessRules,
    DigestState,
    access_alert,
    evaluate,
    summary_alert,
)
from regwarden.model import Outcome, Severity
from regwarden.notify import (
    ACCESS_CLOUDEVENT_TYPE,
    Alert,
    pubsub_attributes,
    render_cloudevent,
    render_slack,
    render_teams,
    render_text,
    routed_to,
    sns_attributes,
)
from regwarden.policy import Access, Notifications
from regwarden.reference import ImageRef

T0 = datetime(2026, 3, 2, 8, 15, tzinfo=UTC)
D = "sha256:" + "ab" * 32


def pull(**changes: object) -> AccessEvent:
    fields: dict[str, object] = {
        "source": "distribution",
        "event_id": "e1",
        "action": "pull",
        "registry": "registry.example.com",
        "repository": "payments/api",
        "digest": D,
        "tag": "1.4.2",
        "principal": "system:serviceaccount:prod:deployer",
        "principal_type": "user",
        "source_ip": "10.2.3.4",
        "user_agent": "containerd/v1.7.13",
        "time": T0,
    }
    fields.update(changes)
    return AccessEvent(**fields)  # type: ignore[arg-type]


def kinds(event: AccessEvent, rules: AccessRules, state: DigestState, **kw: int) -> list[str]:
    return [f.kind for f in evaluate(event, rules, state, T0, **kw)]


def test_blocked_pulls_alert_by_default_without_a_section() -> None:
    rules = AccessRules.of(None)
    assert kinds(pull(), rules, DigestState()) == []
    assert kinds(pull(), rules, DigestState(verdict="PASSED")) == []
    (failed,) = evaluate(pull(), rules, DigestState(verdict="FAILED"), T0)
    assert (failed.kind, failed.severity) == ("blocked-pull", Severity.CRITICAL)
    assert "FAILED" in failed.reason and "10.2.3.4" in failed.reason
    (pending,) = evaluate(pull(), rules, DigestState(verdict="PENDING"), T0)
    assert pending.severity is Severity.HIGH
    held = DigestState(verdict="FAILED", quarantined=True, quarantine_location="quarantine/p/a")
    (quarantined,) = evaluate(pull(), rules, held, T0)
    assert "quarantined (held in quarantine/p/a)" in quarantined.reason
    # a push of a blocked digest is no blocked pull
    assert kinds(pull(action="push"), rules, held) == []
    off = AccessRules.of(Access.model_validate({"alertOn": {"blockedPull": False}}))
    assert kinds(pull(), off, held) == []


def test_pushers_and_pullers_globs() -> None:
    rules = AccessRules.of(
        Access(
            pushers=("arn:aws:iam::*:role/ci-*", "ci-bot"),
            pullers=("system:serviceaccount:prod:*",),
        )
    )
    ok = DigestState(verdict="PASSED")
    assert kinds(pull(), rules, ok) == []
    assert kinds(pull(principal="system:serviceaccount:dev:x"), rules, ok) == ["unexpected-puller"]
    assert kinds(pull(principal=None), rules, ok) == ["unexpected-puller"]
    role = "arn:aws:iam::123456789012:role/ci-deploy"
    assert kinds(pull(action="push", principal=role), rules, ok) == []
    assert kinds(pull(action="push", principal="ci-bot"), rules, ok) == []
    assert kinds(pull(action="push", principal="CI-BOT"), rules, ok) == ["unexpected-pusher"]
    (alice,) = evaluate(pull(action="push", principal="alice"), rules, ok, T0)
    assert alice.reason.startswith("alice pushed payments/api@") and "pushers" in alice.reason
    # `*` crosses '/' and ':' (an ARN's parts), '?' is one character
    assert AccessRules.of(Access(pullers=("a?c",))).allows_principal("pull", "abc")
    assert not AccessRules.of(Access(pullers=("a?c",))).allows_principal("pull", "abbc")


def test_unset_lists_allow_anyone_and_empty_lists_nobody() -> None:
    ok = DigestState()
    assert kinds(pull(action="push", principal="x"), AccessRules.of(Access()), ok) == []
    nobody = AccessRules.of(Access(pushers=()))
    assert kinds(pull(action="push", principal="x"), nobody, ok) == ["unexpected-pusher"]
    quiet = AccessRules.of(
        Access.model_validate({"pushers": [], "alertOn": {"unexpectedPusher": False}})
    )
    assert kinds(pull(action="push", principal="x"), quiet, ok) == []


def test_networks() -> None:
    rules = AccessRules.of(Access(networks=("10.0.0.0/8", "2001:db8::/32")))
    ok = DigestState()
    assert kinds(pull(), rules, ok) == []
    assert kinds(pull(source_ip="2001:db8::7"), rules, ok) == []
    assert kinds(pull(source_ip="192.0.2.1"), rules, ok) == ["unexpected-puller"]
    assert kinds(pull(source_ip=None), rules, ok) == []  # nothing to check
    (push,) = evaluate(pull(action="push", source_ip="192.0.2.1"), rules, ok, T0)
    assert push.kind == "unexpected-pusher" and "networks" in push.reason


def test_pull_rate() -> None:
    rules = AccessRules.of(Access.model_validate({"alertOn": {"pullRate": 10}}))
    assert kinds(pull(), rules, DigestState(), pulls_last_minute=10) == []
    (rate,) = evaluate(pull(), rules, DigestState(), T0, pulls_last_minute=11)
    assert (rate.kind, rate.severity) == ("pull-rate", Severity.MEDIUM)
    assert kinds(pull(), AccessRules.of(None), DigestState(), pulls_last_minute=10**6) == []


def test_rules_are_compiled_once_per_section() -> None:
    section = Access(pullers=("a*",))
    assert AccessRules.of(section) is AccessRules.of(Access(pullers=("a*",)))
    assert AccessRules.of(section).dedupe_window == timedelta(minutes=10)


FAILED = DigestState(verdict="FAILED")


def _alert(state: DigestState = FAILED) -> Alert:
    event = pull(repository="quarantine/payments/api")
    (finding,) = evaluate(event, AccessRules.of(None), state, T0)
    image = ImageRef(registry="registry.example.com", repository="payments/api", digest=D)
    return access_alert(event, finding, image=image, state=state, team="payments", window_start=T0)


def test_access_alert_fields_and_renderings() -> None:
    alert = _alert()
    assert (alert.kind, alert.action, alert.outcome, alert.severity) == (
        "access",
        "access",
        Outcome.FAILED,
        Severity.CRITICAL,
    )
    assert alert.access is not None
    assert alert.access.reference == f"registry.example.com/quarantine/payments/api@{D}"
    assert alert.title == (
        "ACCESS blocked-pull: payments/api (pull by system:serviceaccount:prod:deployer)"
    )
    text = render_text(alert)
    assert "Who: system:serviceaccount:prod:deployer (user)" in text
    assert "From: 10.2.3.4" in text and "containerd/v1.7.13" in text
    slack = json.dumps(render_slack(alert))
    assert "*Who*" in slack and "10.2.3.4" in slack
    teams = json.dumps(render_teams(alert))
    assert '"title": "From", "value": "10.2.3.4"' in teams
    event = render_cloudevent(alert)
    assert event["type"] == ACCESS_CLOUDEVENT_TYPE == "dev.regwarden.access"
    assert Alert.model_validate(event["data"]) == alert
    assert sns_attributes(alert) == {
        "team": "payments",
        "repository": "payments/api",
        "severity": "critical",
        "verdict": "FAILED",
        "action": "access",
        "kind": "access",
        "finding": "blocked-pull",
    }
    assert pubsub_attributes(alert)["kind"] == "access"
    # a verdict alert is unchanged but for its kind
    assert (
        render_cloudevent(alert.model_copy(update={"kind": "verdict", "access": None}))["type"]
        == "dev.regwarden.alert.v1"
    )


def test_outcome_for_states_without_a_verdict() -> None:
    quarantined = DigestState(quarantined=True)
    assert _alert(quarantined).outcome is Outcome.FAILED
    assert _alert(DigestState(verdict="PENDING")).outcome is Outcome.PENDING


def test_summary_and_dedup_keys_per_window() -> None:
    alert = _alert()
    later = T0 + timedelta(minutes=10)
    summary = summary_alert(alert, count=1000, closed_at=later, last_seen=later)
    assert summary.access is not None
    assert (summary.access.count, summary.access.summary, summary.access.window_end) == (
        1000,
        True,
        later,
    )
    assert summary.summary.startswith("1000 more blocked-pull accesses")
    assert "Count: 1000 more" in render_text(summary)
    assert "*Count*\\n1000" in json.dumps(render_slack(summary))
    keys = {alert.dedup_key, summary.dedup_key}
    reopened = alert.model_copy(
        update={"access": alert.access.model_copy(update={"window_start": later})}  # type: ignore[union-attr]
    )
    keys.add(reopened.dedup_key)
    assert len(keys) == 3  # each window alerts once, and its summary once
    assert alert.dedup_key == _alert().dedup_key  # a redelivery is the same alert
    with pytest.raises(ValueError, match="without a summary"):
        summary_alert(alert, count=0, closed_at=later, last_seen=None)


def test_routes_match_action_access() -> None:
    rules = Notifications.model_validate(
        {
            "channels": {"sec": {"type": "stdout"}, "ops": {"type": "stdout"}},
            "routes": [
                {"match": {"action": ["access"]}, "to": ["sec"]},
                {"match": {"action": ["quarantine"]}, "to": ["ops"]},
            ],
        }
    )
    assert routed_to(rules, _alert()) == ("sec",)
