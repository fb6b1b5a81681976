"""Retention's `pulledWithin` over the access stream's records (issue #16), on the real
registry (distribution on loopback, which keeps no pull times) and a real SQLite ledger:
images pushed before pull tracking began are never deleted because nobody was seen pulling
them; a recently pulled one is kept; once tracking covers the whole window, an image nobody
pulled is deleted (applied, and gone from the registry)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from regwarden.devtools import LocalRegistry, make_image, push_image
from regwarden.oci import RegistryClient
from regwarden.policy import load_policy_text
from regwarden.providers import ProviderOptions
from regwarden.providers.oci import OciRegistry
from regwarden.retention import RunPlan, apply, plan_run
from regwarden.store import PullTally, SqliteLedger

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
DAY = timedelta(days=1)

POLICY = """\
apiVersion: regwarden/v1
kind: Policy
defaults:
  team: platform
  retention:
    keep:
      - pulledWithin: 30d
    delete:
      - olderThan: 60d
    guard: {maxDeletes: 10, maxShare: 1.0}
"""


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    store = SqliteLedger(tmp_path / "ledger.db")
    yield store
    store.close()


@pytest.fixture
def oci(registry: LocalRegistry) -> Iterator[OciRegistry]:
    reg = OciRegistry(registry.host, ProviderOptions(concurrency=4))
    yield reg
    reg.close()


def plan(oci: OciRegistry, ledger: SqliteLedger, repo: str, host: str) -> RunPlan:
    policy = load_policy_text(POLICY, source="p.yaml", base_dir="/tmp")
    return plan_run(oci, policy, ledger=ledger, now=NOW, repositories=[repo], registry_name=host)


def decisions(run: RunPlan, names: dict[str, str]) -> dict[str, tuple[str, str]]:
    (repo_plan,) = run.plan.plans
    return {names[d.digest]: (d.action, d.reason) for d in repo_plan.decisions}


def test_pulled_within_waits_for_tracking_to_cover_its_window(
    registry: LocalRegistry, client: RegistryClient, oci: OciRegistry, ledger: SqliteLedger
) -> None:
    host = registry.host
    repo = f"pt-{uuid.uuid4().hex[:8]}/api"
    names: dict[str, str] = {}
    for n, name in enumerate(("unpulled", "pulled", "also-unpulled")):
        image = make_image(layers=1, layer_size=128, seed=n, annotations={"n": name})
        digest = push_image(client, repo, image, tag=name)
        names[digest] = name
        ledger.record_push(host, repo, digest, (name,), now=NOW - 200 * DAY)  # long before
    digest_of = {name: digest for digest, name in names.items()}

    # the ledger saw one pull before tracking began (the pipeline's old record_pull path):
    # that alone must not make the others look "never pulled"
    ledger.record_pull(host, repo, digest_of["pulled"], now=NOW - 2 * DAY)
    untracked = decisions(plan(oci, ledger, repo, host), names)
    assert untracked["pulled"][0] == "keep"
    assert untracked["unpulled"] == (
        "keep",
        "kept: pulledWithin 30d cannot be judged: pulls of this repository are not tracked: "
        "no pull-tracking record",
    )
    assert untracked["also-unpulled"][0] == "keep"

    # the access stream starts: tracking began 5 days ago, one image pulled yesterday
    ledger.start_pull_tracking(host, repo, now=NOW - 5 * DAY)
    ledger.record_pulls([PullTally(host, repo, digest_of["pulled"], "ci-bot", NOW - DAY, 12)])
    early = plan(oci, ledger, repo, host)
    found = decisions(early, names)
    assert found["pulled"] == ("keep", "kept: pulled within 30d (pulled 1d ago)")
    for name in ("unpulled", "also-unpulled"):
        action, reason = found[name]
        assert action == "keep", (name, reason)
        assert "cannot be judged: pull tracking began" in reason and "less than 30d ago" in reason
    assert early.deletions == 0 and early.work == ()

    # tracking has covered the window (its start is 40 days back: the earliest start wins)
    ledger.start_pull_tracking(host, repo, now=NOW - 40 * DAY)
    covered = plan(oci, ledger, repo, host)
    found = decisions(covered, names)
    assert found["pulled"][0] == "keep"
    assert found["unpulled"] == ("delete", "deleted: tagged older than 60d (pushed 200d ago)")
    assert found["also-unpulled"][0] == "delete"
    result = apply(covered, oci, ledger)
    assert (result.status, result.deleted) == ("done", 2)
    assert client.head_manifest(repo, digest_of["pulled"]) is not None
    assert client.head_manifest(repo, digest_of["unpulled"]) is None
    assert client.head_manifest(repo, digest_of["also-unpulled"]) is None
