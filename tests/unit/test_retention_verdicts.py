"""Retention of regwarden's verdict attestations: the latest of a kept image follows it,
the ones a newer verdict replaced (named by the ledger's `verdict-attestation` actions)
are orphans, judged by the orphans rule; a tagged manifest is never one of them; the
ledger's records give the superseded digests only for finished actions of the registry;
and a whole run (plan_run) reads them from a real SQLite ledger."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from regwarden.policy import Policy
from regwarden.retention import (
    DeleteOrphans,
    DeleteUntagged,
    Guard,
    ImageRecord,
    KeepMostRecent,
    RepositoryPlan,
    RetentionRules,
    plan_registry,
    plan_repository,
)
from regwarden.retention.running._verdicts import superseded_verdicts
from regwarden.store import ActionRecord

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
DAY = 86400.0
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
NO_GUARD = Guard(max_deletes=None, max_share=None)
RULES = RetentionRules(
    keep=(KeepMostRecent(5),),
    delete=(DeleteUntagged(timedelta(days=7)), DeleteOrphans(timedelta(days=1))),
    guard=NO_GUARD,
)
NO_ORPHANS_RULE = RetentionRules(keep=(KeepMostRecent(5),), guard=NO_GUARD)
_NAMES: dict[str, str] = {}


def dg(name: str) -> str:
    digest = "sha256:" + hashlib.sha256(name.encode()).hexdigest()
    _NAMES[digest] = name
    return digest


def rec(name: str, *tags: str, age: float = 1, subject: str | None = None) -> ImageRecord:
    return ImageRecord(
        digest=dg(name),
        tags=tags,
        pushed=NOW.timestamp() - age * DAY,
        size=100,
        media_type=MANIFEST,
        subject=None if subject is None else dg(subject),
    )


def outcome(plan: RepositoryPlan) -> dict[str, tuple[str, str]]:
    return {_NAMES[d.digest]: (d.action, d.rule) for d in plan.decisions}


def reasons(plan: RepositoryPlan) -> dict[str, str]:
    return {_NAMES[d.digest]: d.reason for d in plan.decisions}


def records() -> list[ImageRecord]:
    return [
        rec("img", "v1", age=30),
        rec("verdict-new", age=2, subject="img"),  # the latest: follows its image
        rec("verdict-old", age=20, subject="img"),  # replaced by verdict-new
        rec("verdict-young", age=0.5, subject="img"),  # replaced, but within olderThan
        rec("att-old", age=20),  # a rewritten .att manifest, untagged now
        rec("sbom", age=20, subject="img"),  # someone else's referrer: untouched
    ]


SUPERSEDED = {dg("verdict-old"), dg("verdict-young"), dg("att-old")}


def test_superseded_verdicts_are_orphans_and_the_latest_follows_its_image() -> None:
    plan = plan_repository("app", records(), RULES, now=NOW, superseded=SUPERSEDED)

    assert outcome(plan) == {
        "img": ("keep", "mostRecent"),
        "verdict-new": ("keep", "referrerOfKept"),
        "sbom": ("keep", "referrerOfKept"),
        "verdict-old": ("delete", "orphans"),
        "att-old": ("delete", "orphans"),
        "verdict-young": ("keep", "default"),
    }
    why = reasons(plan)
    assert why["verdict-old"] == (
        f"deleted: superseded verdict attestation of {dg('img')} (a newer one stands; orphans rule)"
    )
    assert why["att-old"] == (
        "deleted: superseded verdict attestation (a newer one stands; orphans rule)"
    )
    assert why["verdict-young"] == (
        "kept: superseded verdict attestation not older than 1d (orphans rule)"
    )
    roles = {_NAMES[d.digest]: d.role for d in plan.decisions}
    assert roles["verdict-old"] == "orphan" and roles["verdict-new"] == "referrer"


def test_without_superseded_digests_every_verdict_follows_its_image() -> None:
    plan = plan_repository("app", records(), RULES, now=NOW)

    got = outcome(plan)
    assert got["verdict-old"] == ("keep", "referrerOfKept")
    assert got["att-old"] == ("delete", "untagged")  # an untagged image, as before


def test_without_an_orphans_rule_superseded_verdicts_stay_and_say_why() -> None:
    plan = plan_repository("app", records(), NO_ORPHANS_RULE, now=NOW, superseded=SUPERSEDED)

    assert outcome(plan)["verdict-old"] == ("keep", "default")
    assert reasons(plan)["verdict-old"] == "kept: superseded verdict attestation (no orphans rule)"


def test_a_tagged_manifest_is_never_judged_superseded() -> None:
    """The `.att` tag (and the referrers index tag) name what stands now, whatever the
    ledger says."""
    att = rec("att-now", f"sha256-{dg('img')[7:]}.att", age=20)
    plan = plan_repository(
        "app", [rec("img", "v1", age=30), att], RULES, now=NOW, superseded={dg("att-now")}
    )

    assert outcome(plan)["att-now"] == ("keep", "referrerOfKept")


def test_plan_registry_takes_superseded_digests_by_repository() -> None:
    plan = plan_registry(
        {"app": records(), "other": records()},
        RULES,
        now=NOW,
        superseded={"app": SUPERSEDED},
    )

    by_repo = {p.repository: outcome(p) for p in plan.plans}
    assert by_repo["app"]["verdict-old"] == ("delete", "orphans")
    assert by_repo["other"]["verdict-old"] == ("keep", "referrerOfKept")


def action(
    repository: str,
    digest: str,
    *,
    status: str = "done",
    registry: str = "reg.example",
    kind: str = "verdict-attestation",
    pushed: tuple[str, ...] = (),
    history: tuple[str, ...] = (),
) -> ActionRecord:
    state: dict[str, Any] = {
        "pushed": [{"format": "bundle", "digest": d} for d in pushed],
        "history": list(history),
    }
    return ActionRecord(
        key=f"{kind}:{registry}/{repository}@{digest}",
        at=NOW,
        registry=registry,
        repository=repository,
        digest=digest,
        kind=kind,
        status=status,
        reason="",
        state=state,
    )


def test_superseded_digests_come_from_finished_actions_of_the_registry() -> None:
    got = superseded_verdicts(
        [
            action("app", "sha256:a", pushed=("m3", "i3"), history=("m1", "i1", "m2", "m3", "i3")),
            action("app", "sha256:b", pushed=("n1",), history=("n1",)),
            action("lib", "sha256:c", pushed=(), history=("k1",)),  # FAILED→removed: all gone
            action("app", "sha256:d", status="intent", pushed=("x1",), history=("x0", "x1")),
            action("app", "sha256:e", registry="other.example", history=("y1",)),
            action("app", "sha256:f", kind="quarantine", history=("z1",)),
        ],
        registry="reg.example",
    )

    assert got == {"app": frozenset({"m1", "i1", "m2"}), "lib": frozenset({"k1"})}


POLICY = """\
apiVersion: regwarden/v1
kind: Policy
defaults:
  team: platform
  retention:
    keep:
      - mostRecent: 5
    delete:
      - orphans: {}
    guard: {maxDeletes: 100, maxShare: 1}
"""
ATTESTING = POLICY + "  attest: {key: file://cosign.key}\n"
"""The same, signing its PASSED verdicts: superseded verdict attestations exist only then."""


class ListingRegistry:
    """A registry whose listing shows every manifest with its subject (the ECR/ACR kind):
    all a retention run asks of it here."""

    kind = "listing"
    host = "reg.example"

    def __init__(self, listing: list[Any]) -> None:
        from regwarden.providers import CAP_MANIFEST_LISTING

        self.capabilities = frozenset({CAP_MANIFEST_LISTING})
        self.listing = listing

    def list_images(self, repository: str) -> list[Any]:
        return list(self.listing)


def test_a_run_reads_superseded_verdicts_from_the_ledger(tmp_path: Path) -> None:
    """plan_run over a listing and a real SQLite ledger whose verdict-attestation action
    replaced one attestation by another: the replaced one is an orphan, deleted; the
    latest follows its image."""
    from regwarden.policy import load_policy_text
    from regwarden.providers import ListedImage
    from regwarden.retention import plan_run
    from regwarden.store import SqliteLedger

    def listed(name: str, *tags: str, subject: str | None = None) -> ListedImage:
        return ListedImage(
            repository="app",
            digest=dg(name),
            media_type=MANIFEST,
            tags=tags,
            size=100,
            pushed=NOW - timedelta(days=3),
            subject=None if subject is None else dg(subject),
        )

    registry = ListingRegistry(
        [
            listed("img", "v1"),
            listed("verdict-new", subject="img"),
            listed("verdict-old", subject="img"),
        ]
    )
    ledger = SqliteLedger(tmp_path / "ledger.db")
    key = f"verdict-attestation:reg.example/app@{dg('img')}"
    ledger.begin_action(
        key,
        registry="reg.example",
        repository="app",
        digest=dg("img"),
        kind="verdict-attestation",
        reason="verdict PASSED",
        state={},
        now=NOW,
    )
    policy = load_policy_text(ATTESTING, source="p.yaml", base_dir="/tmp")

    def decided(policy: Policy = policy) -> dict[str, tuple[str, str]]:
        run = plan_run(registry, policy, ledger=ledger, now=NOW, repositories=["app"])
        assert run.plan is not None
        [plan] = run.plan.plans
        return outcome(plan)

    # an intent not yet finished: nothing of it is judged
    assert decided()["verdict-old"] == ("keep", "referrerOfKept")
    ledger.finish_action(
        key,
        status="done",
        state={
            "pushed": [{"format": "bundle", "digest": dg("verdict-new")}],
            "history": [dg("verdict-old"), dg("verdict-new")],
        },
    )
    got = decided()
    assert got["verdict-old"] == ("delete", "orphans")
    assert got["verdict-new"] == ("keep", "referrerOfKept")

    # Looked up by key, one image at a time: never a listing of every action (on DynamoDB
    # a whole-table Scan, which no retention role is granted) …
    listed: list[object] = []
    keys: list[str] = []
    every_action, one_action = ledger.actions, ledger.action
    ledger.actions = lambda **kw: listed.append(kw) or every_action(**kw)  # type: ignore[method-assign]
    ledger.action = lambda key: keys.append(key) or one_action(key)  # type: ignore[method-assign]
    assert decided() == got
    assert listed == []
    assert keys == [key]  # the image's own record; referrers have no verdict of their own
    # … and only where the policy attests: otherwise every referrer follows its image.
    keys.clear()
    quiet = decided(load_policy_text(POLICY, source="p.yaml", base_dir="/tmp"))
    assert keys == [] and listed == []
    assert quiet["verdict-old"] == ("keep", "referrerOfKept")
    ledger.close()
