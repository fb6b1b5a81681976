"""Running retention from a runtime: fan-out messages, a worker per repository (resuming a
redelivered message), one alert per team, quarantine held from the ledger, in-use images
re-checked when a run resumes, and inventory failures that stop the run; through a queue,
the run id a retried schedule repeats, messages read back with their checks, what an
outcome means for its message, and the secrets a policy names."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.retention import FakeRegistry, FakeRuntime, record

from regwarden.errors import IntakeError, RegistryError, UsageError
from regwarden.model import Outcome
from regwarden.policy import (
    AwsInventory,
    CloudRunInventory,
    Policy,
    load_policy_text,
    policy_secrets,
)
from regwarden.reference import ImageRef
from regwarden.retention import (
    InUse,
    RunInterrupted,
    ScheduledRun,
    deadline_guard,
    fan_out,
    fan_out_scheduled,
    inventory_with,
    message_body,
    outcome_failure,
    run_id_for,
    run_retention,
    scheduled_run,
    scheduled_run_id,
    work,
    work_body,
    work_message,
)
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


# -- through a queue: schedule, message, outcome; the secrets a platform serves ------------


def test_a_retried_schedule_names_the_same_run_and_a_manual_one_a_new_run() -> None:
    at = datetime(2026, 11, 27, 3, tzinfo=UTC)
    timed = scheduled_run({"scheduledTime": "2026-11-27T03:00:00Z"})
    first = scheduled_run_id(timed, HOST, now=NOW)
    assert first == scheduled_run_id(timed, HOST, now=NOW + DAY) == run_id_for(at, HOST)
    assert first.startswith("20261127T030000Z-")
    assert scheduled_run_id(timed, "other.test", now=NOW) != first  # per registry

    explicit = scheduled_run({"run": "by-hand-1", "scheduledTime": "2026-11-27T03:00:00Z"})
    assert scheduled_run_id(explicit, HOST, now=NOW) == "by-hand-1"  # its own id wins

    manual = [scheduled_run_id(ScheduledRun(), HOST, now=NOW) for _ in range(2)]
    assert all(m.startswith("20261127T120000Z-") for m in manual)
    assert manual[0] != manual[1]  # nothing to repeat: each start is a new run


def test_a_queued_message_reads_back_as_fanned_out_and_is_checked(
    registry: FakeRegistry,
) -> None:
    scope = ("payments/",)
    messages = fan_out(registry, policy(), run="r1")
    docs, api, web, tool = (message_body(m) for m in messages)
    assert [work_message(b, registry=HOST, prefixes=scope) for b in (api, web)] == messages[1:3]
    for out in (docs, tool):
        with pytest.raises(IntakeError, match="is outside this stack's scope"):
            work_message(out, registry=HOST, prefixes=scope)
    assert work_message(tool, registry=HOST, prefixes=("",)) == messages[3]  # "": all

    first = messages[1]
    for body, match in (
        ("{", "body is not JSON"),
        ("[]", "got list, expected an object"),
        (message_body({**first, "extra": "x"}), r"got keys \['extra'\]"),
        (message_body({"registry": HOST, "repository": "payments/api"}), "got run=None"),
        (message_body({**first, "registry": "elsewhere.test"}), "expected 'registry.test'"),
    ):
        with pytest.raises(IntakeError, match=match):
            work_message(body, registry=HOST, prefixes=scope)


def test_an_outcome_says_whether_its_message_must_come_back(
    registry: FakeRegistry, ledger: SqliteLedger
) -> None:
    runtime = FakeRuntime(policy(), ledger, {HOST: registry})
    api = {"registry": HOST, "repository": "payments/api", "run": "r1"}

    planned = work(api, runtime, now=NOW, execute=False)
    assert planned.run.deletions == 3 and outcome_failure(planned, resume_delay=60) is None

    stopped = work(api, runtime, now=NOW, should_stop=lambda: True)
    failure = outcome_failure(stopped, resume_delay=60)
    assert isinstance(failure, RunInterrupted)
    assert "0 of 3 deletions done before the time limit" in str(failure)
    assert "returns in 60s and the run resumes" in str(failure)

    done = work(api, runtime, now=NOW)  # the same message again: the run resumes
    assert done.result is not None and done.result.status == "done"
    assert outcome_failure(done, resume_delay=60) is None

    registry.fail(dg("payments/web/1"))
    failed = work({**api, "repository": "payments/web"}, runtime, now=NOW)
    failure = outcome_failure(failed, resume_delay=60)
    assert isinstance(failure, RegistryError) and not isinstance(failure, RunInterrupted)
    assert f"failed: 1 deletions failed ({dg('payments/web/1')}: " in str(failure)
    assert "a retry resumes the run" in str(failure)


def test_a_scheduled_fan_out_and_its_worker_through_any_queue(
    registry: FakeRegistry, ledger: SqliteLedger
) -> None:
    runtime = FakeRuntime(policy(), ledger, {HOST: registry})
    tick = {"scheduledTime": "2026-11-27T03:00:00Z"}
    done = fan_out_scheduled(tick, registry, policy(), prefixes=("payments/",), now=NOW)
    again = fan_out_scheduled(tick, registry, policy(), prefixes=("payments/",), now=NOW + DAY)
    assert done == again  # a retried schedule queues the same run
    assert done.run == run_id_for(datetime(2026, 11, 27, 3, tzinfo=UTC), HOST)
    assert [m["repository"] for m in done.messages] == ["payments/api", "payments/web"]
    assert done.out_of_scope == 2  # docs/site and team/tool have rules, out of scope
    summary = done.summary(mode="plan")
    assert summary["queued"] == 2 and summary["mode"] == "plan"
    with pytest.raises(IntakeError, match="retention schedule payload"):
        fan_out_scheduled({"cron": "x"}, registry, policy(), now=NOW)

    seen: list[str] = []
    reads: list[str] = []

    def read_inventory() -> InUse:
        reads.append("read")
        return InUse(refs=(ImageRef.parse(f"{HOST}/payments/api:v2"),), sources={"test": 1})

    api, web = done.bodies()
    stopped = work_body(
        api,
        runtime,
        registry=HOST,
        prefixes=("payments/",),
        now=NOW,
        in_use=read_inventory,
        should_stop=lambda: True,
        resume_delay=30,
        on_message=lambda m: seen.append(m["repository"]),
    )
    assert seen == ["payments/api"] and reads == ["read"]
    assert isinstance(stopped.failure, RunInterrupted)
    assert "returns in 30s" in str(stopped.failure)
    assert stopped.summary(mode="apply")["in_use"] == {"test": 1}
    resumed = work_body(api, runtime, registry=HOST, prefixes=("",), now=NOW, in_use=read_inventory)
    assert resumed.failure is None and resumed.outcome.result is not None
    assert resumed.outcome.result.deleted == 2  # v2 runs: kept (planned before it was stopped)
    assert resumed.outcome.run.run_id == stopped.outcome.run.run_id
    with pytest.raises(IntakeError, match="outside this stack's scope"):
        work_body(web, runtime, registry=HOST, prefixes=("docs/",), now=NOW, in_use=read_inventory)
    assert reads == ["read", "read"]  # a refused message reads no inventory


def test_a_platform_inventory_is_added_only_where_the_policy_has_none() -> None:
    own = AwsInventory(regions=("eu-west-1",))
    with_own = load_policy_text(
        POLICY + "inventory: {aws: {regions: [eu-west-1]}}\n", source="p.yaml", base_dir="/tmp"
    )
    assert inventory_with(with_own.inventory, aws=AwsInventory()).aws == own
    bare = policy().inventory
    added = inventory_with(bare, aws=AwsInventory(), cloudrun=CloudRunInventory())
    assert added.aws == AwsInventory() and added.cloudrun == CloudRunInventory()
    assert bare.aws is None  # the policy's own is left alone
    assert inventory_with(bare) is bare


def test_a_deadline_guard_stops_with_the_margin_left() -> None:
    now = [100.0]
    guard = deadline_guard(160.0, margin_s=30, clock=lambda: now[0])
    assert not guard()
    now[0] = 129.9
    assert not guard()
    now[0] = 130.1
    assert guard()


def test_policy_secrets_are_every_secret_location_the_policy_names() -> None:
    text = POLICY.replace("  team: platform\n", SIGNED, 1) + NOTIFY
    full = load_policy_text(text, source="p.yaml", base_dir="/tmp")
    assert policy_secrets(full) == {
        "REGWARDEN_SECRET_REGWARDEN_KEYS_CI": "regwarden/keys/ci",
        "REGWARDEN_SECRET_REGWARDEN_SLACK": "regwarden/slack",
        "REGWARDEN_SECRET_REGWARDEN_HMAC": "regwarden/hmac",
    }
    assert policy_secrets(full, notifications=False) == {
        "REGWARDEN_SECRET_REGWARDEN_KEYS_CI": "regwarden/keys/ci"
    }
    assert policy_secrets(policy()) == {}


SIGNED = "  team: platform\n  signatures:\n    cosign:\n      keys: [secret://regwarden/keys/ci]\n"
NOTIFY = (
    "notifications:\n  channels:\n"
    '    slack: {type: slack, url: "secret://regwarden/slack"}\n'
    '    hook: {type: webhook, url: "https://hooks.example.com/x", '
    'secret: "secret://regwarden/hmac"}\n'
    "  routes:\n    - {match: {team: payments}, to: [slack, hook]}\n"
)
