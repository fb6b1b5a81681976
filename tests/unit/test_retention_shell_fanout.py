"""Running retention from a runtime: fan-out messages, a worker per repository (resuming a
redelivered message), one alert per team, quarantine held from the ledger, in-use images
re-checked when a run resumes, and inventory failures that stop the run."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.retention import FakeRegistry, FakeRuntime, record

from regwarden.errors import IntakeError, UsageError
from regwarden.model import Outcome
from regwarden.policy import Policy, load_policy_text
from regwarden.reference import ImageRef
from regwarden.retention import InUse, fan_out, run_retention, work
from regwarden.store import QuarantineRecord, SqliteLedger

NOW = datetime(2026, 11, 27, 12, 0, tzinfo=UTC)
DAY = timedelta(days=1)
HOST = "registry.test"

POLICY = """\
apiVersion: regwarden/v1
kind: Policy
defaults:
  team: platform
  retention:
    keep: [{mostRecent: 1}]
    delete: [{olderThan: 30d}, {quarantineExpired: {after: 30d}}]
    guard: {maxDeletes: 100, maxShare: 1}
repositories:
  - match: "payments/**"
    team: payments
  - match: "scratch/**"
    team: scratch
    retention: {delete: [{olderThan: 1d}], guard: {maxDeletes: 1, maxShare: 1}}
  - match: "docs/**"
    team: docs
    retention: {keep: [{mostRecent: 1}]}
  - match: "base/**"
    quarantine: {strategy: retag}
"""


def dg(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def policy(extra: str = "") -> Policy:
    return load_policy_text(POLICY + extra, source="p.yaml", base_dir="/tmp")


def repo(name: str, n: int) -> list:  # type: ignore[type-arg]
    return [
        record(name, dg(f"{name}/{i}"), f"v{i}", pushed=NOW - (10 + 40 * i) * DAY) for i in range(n)
    ]


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    store = SqliteLedger(tmp_path / "ledger.db")
    yield store
    store.close()


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry(
        {
            "payments/api": repo("payments/api", 4),
            "payments/web": repo("payments/web", 3),
            "team/tool": repo("team/tool", 3),
            "docs/site": repo("docs/site", 3),
        },
        host=HOST,
    )


def test_fan_out_names_every_repository_with_rules(registry: FakeRegistry) -> None:
    messages = fan_out(registry, policy(), run="r1")
    assert [m["repository"] for m in messages] == [
        "docs/site",
        "payments/api",
        "payments/web",
        "team/tool",
    ]
    assert all(
        m == {"registry": HOST, "repository": m["repository"], "run": "r1"} for m in messages
    )
    assert [
        m["repository"] for m in fan_out(registry, policy(), run="r1", globs=["payments/*"])
    ] == [
        "payments/api",
        "payments/web",
    ]
    with pytest.raises(UsageError, match="run id or now"):
        fan_out(registry, policy())


def test_a_worker_plans_applies_and_alerts_its_team(
    registry: FakeRegistry, ledger: SqliteLedger
) -> None:
    runtime = FakeRuntime(policy(), ledger, {HOST: registry})
    message = {"registry": HOST, "repository": "payments/api", "run": "r1"}
    outcome = work(message, runtime, now=NOW)
    assert outcome.result is not None and outcome.result.status == "done"
    assert {d for _, d in registry.deleted()} == {dg(f"payments/api/{i}") for i in (1, 2, 3)}
    assert outcome.exit_code == 0
    [alert] = runtime.channel.alerts
    assert alert.team == "payments" and alert.action == "delete"
    assert alert.outcome is Outcome.PASSED
    assert "3 images deleted" in alert.summary
    assert alert.reasons == ("payments/api: 3 deleted (2.9 KiB)",)  # 3 x 1000 bytes

    # SQS redelivers the same message: the recorded run resumes, nothing is re-deleted
    again = work(message, runtime, now=NOW + DAY)
    assert again.run.plan is None  # loaded, not planned
    assert again.result is not None and again.result.resumed == 3
    assert len(registry.deleted()) == 3
    assert len(runtime.channel.alerts) == 1  # one alert per run, team and status

    with pytest.raises(IntakeError, match="expected a non-empty string"):
        work({"registry": HOST}, runtime, now=NOW)


def test_a_tripped_repository_stops_the_run_and_alerts_its_team(
    ledger: SqliteLedger,
) -> None:
    registry = FakeRegistry(
        {"scratch/a": repo("scratch/a", 4), "payments/api": repo("payments/api", 4)}, host=HOST
    )
    runtime = FakeRuntime(policy(), ledger, {HOST: registry})
    outcome = run_retention(runtime, registry=HOST, now=NOW, execute=True)
    assert outcome.run.tripped and outcome.exit_code == 1
    assert registry.deleted() == []  # payments/api was fine, but the run deletes nothing
    [alert] = runtime.channel.alerts
    assert alert.team == "scratch" and alert.outcome is Outcome.FAILED
    assert "guard tripped (maxDeletes 1)" in alert.reasons[0]


def test_quarantined_images_are_kept_until_they_expire(ledger: SqliteLedger) -> None:
    held, expired = dg("held"), dg("expired")
    registry = FakeRegistry(
        {
            "quarantine/payments/api": [
                record("quarantine/payments/api", held, pushed=NOW - 400 * DAY),
                record("quarantine/payments/api", expired, pushed=NOW - 400 * DAY),
                record("quarantine/payments/api", dg("unknown"), pushed=NOW - 400 * DAY),
            ],
            "base/debian": [
                record("base/debian", dg("retagged"), "quarantined-abc", pushed=NOW - 90 * DAY),
                record("base/debian", dg("fresh"), "12", pushed=NOW - DAY),
            ],
        },
        host=HOST,
    )
    for digest, since, repo_name, location in (
        (held, NOW - 5 * DAY, "payments/api", "quarantine/payments/api"),
        (expired, NOW - 60 * DAY, "payments/api", "quarantine/payments/api"),
        (dg("retagged"), NOW - 5 * DAY, "base/debian", "base/debian"),
    ):
        ledger.record_quarantine(
            QuarantineRecord(HOST, repo_name, digest, "move", location, (), "test", since, None)
        )
    runtime = FakeRuntime(policy(), ledger, {HOST: registry})
    outcome = run_retention(runtime, registry=HOST, now=NOW, execute=False)
    assert outcome.run.plan is not None
    q = outcome.run.plan.plan("quarantine/payments/api")
    assert q.decision(held).rule == "quarantined"
    assert q.decision(dg("unknown")).rule == "quarantined"  # no record: never expires
    assert q.decision(expired).rule == "quarantineExpired"
    base = outcome.run.plan.plan("base/debian")
    assert base.decision(dg("retagged")).rule == "quarantined"


def test_a_resumed_run_skips_repositories_whose_images_are_now_in_use(
    registry: FakeRegistry, ledger: SqliteLedger
) -> None:
    runtime = FakeRuntime(policy(), ledger, {HOST: registry})
    first = run_retention(
        runtime,
        registry=HOST,
        now=NOW,
        execute=True,
        run_id="r2",
        globs=["payments/*"],
        should_stop=lambda: True,  # stopped before the first deletion
    )
    assert first.result is not None and first.result.status == "interrupted"
    assert registry.deleted() == []
    now_running = InUse(refs=(ImageRef.parse(f"{HOST}/payments/api:v2"),))
    resumed = run_retention(
        runtime, registry=HOST, now=NOW, execute=True, run_id="r2", in_use=now_running
    )
    assert resumed.result is not None and resumed.result.status == "done"
    assert {r for r, _ in registry.deleted()} == {"payments/web"}
    assert any("payments/api" in n and "in use now" in n for n in resumed.notes)


def test_an_unreadable_inventory_plans_nothing(
    registry: FakeRegistry, ledger: SqliteLedger, tmp_path: Path
) -> None:
    extra = "inventory: {files: ['file://missing.txt']}\n"
    pol = load_policy_text(POLICY + extra, source=str(tmp_path / "p.yaml"), base_dir=tmp_path)
    runtime = FakeRuntime(pol, ledger, {HOST: registry})
    with pytest.raises(UsageError, match=r"missing\.txt"):
        run_retention(runtime, registry=HOST, now=NOW, execute=True)
    assert registry.deleted() == []
