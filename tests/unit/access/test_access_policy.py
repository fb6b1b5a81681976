"""The policy's `access` section: parsing, defaults, per-repository merge, schema, problems."""

from __future__ import annotations

from datetime import timedelta

from regwarden.policy import (
    SECTIONS,
    Access,
    load_policy_text,
    policy_json_schema,
    validate_text,
)

POLICY = """\
apiVersion: regwarden/v1
kind: Policy
defaults:
  access:
    pushers: ["arn:aws:iam::*:role/ci-*", "ci-bot"]
    networks: ["10.0.0.0/8", "2001:db8::/32"]
    alertOn:
      pullRate: 600
repositories:
  - match: "payments/**"
    access:
      pullers: ["system:serviceaccount:prod:*"]
      dedupeWindow: 1m
  - match: "tools/*"
    team: tools
"""


def test_section_is_merged_per_repository_as_a_whole() -> None:
    policy = load_policy_text(POLICY, source="regwarden.yaml", base_dir="/")
    assert "access" in SECTIONS
    payments = policy.for_repository("payments/api")
    assert payments.access is not None
    assert payments.origins["access"] == "repositories[0]"
    # the entry's section replaces the defaults' whole: no pushers, networks nor pull rate
    assert (payments.access.pushers, payments.access.networks) == (None, None)
    assert payments.access.pullers == ("system:serviceaccount:prod:*",)
    assert payments.access.dedupe_window == timedelta(minutes=1)
    assert payments.access.alert_on.pull_rate is None
    tools = policy.for_repository("tools/build")
    assert tools.access is not None and tools.origins["access"] == "defaults"
    assert tools.access.pushers == ("arn:aws:iam::*:role/ci-*", "ci-bot")
    assert tools.access.alert_on.pull_rate == 600
    assert tools.access.dedupe_window == timedelta(minutes=10)


def test_alert_defaults_follow_the_lists() -> None:
    assert Access().alert_on.blocked_pull is True
    assert not Access().alerts_unexpected_pusher and not Access().alerts_unexpected_puller
    assert Access(pushers=("ci",)).alerts_unexpected_pusher
    assert not Access(pushers=("ci",)).alerts_unexpected_puller
    assert Access(networks=("10.0.0.0/8",)).alerts_unexpected_puller
    quiet = Access.model_validate({"pullers": ["a"], "alertOn": {"unexpectedPuller": False}})
    assert not quiet.alerts_unexpected_puller


def test_no_section_means_none() -> None:
    text = "apiVersion: regwarden/v1\nkind: Policy\n"
    assert load_policy_text(text, source="p", base_dir="/").for_repository("a").access is None


def test_problems_name_their_paths() -> None:
    bad = (
        POLICY.replace('"10.0.0.0/8"', '"10.0.0.1/8"')
        .replace('"ci-bot"', '""')
        .replace("pullRate: 600", "pullRate: 0")
        .replace("dedupeWindow: 1m", "dedupeWindow: soon")
    )
    bad += "    access:\n      pullers: any\n      unknownKey: 1\n"
    messages = [str(p) for p in validate_text(bad, source="regwarden.yaml")]
    wanted = [
        "defaults.access.pushers[1]: got an empty glob",
        "defaults.access.networks[0]: got '10.0.0.1/8', expected a CIDR",
        "defaults.access.alertOn.pullRate: got 0",
        "repositories[0].access.dedupeWindow",
        "repositories[1].access.pullers",
        "repositories[1].access.unknownKey",
    ]
    for want in wanted:
        assert any(want in m for m in messages), (want, messages)


def test_json_schema_covers_the_section() -> None:
    defs = policy_json_schema()["$defs"]
    access = defs["Access"]["properties"]
    assert set(access) == {"pushers", "pullers", "networks", "alertOn", "dedupeWindow"}
    assert access["dedupeWindow"]["default"] == "10m"
    assert access["pushers"]["description"].startswith("Globs over the principals allowed")
    assert set(defs["AccessAlertOn"]["properties"]) == {
        "blockedPull",
        "unexpectedPusher",
        "unexpectedPuller",
        "pullRate",
    }
    assert "access" in defs["Defaults"]["properties"]
    assert "access" in defs["RepositoryEntry"]["properties"]
