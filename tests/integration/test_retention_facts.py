"""Retention on the real registry (distribution 2.8 on loopback), driven through the CLI as
a user would, then checked on the registry with HEAD requests:

- ages are facts: an image pushed a minute ago (the ledger's first-seen time, as the
  receiver records pushes) whose config says 1970 is not deleted by `olderThan: 30d`; an
  image with no push time at all is kept and the plan says why; with `ageFrom: created`
  (the documented risk) both are deleted;
- distribution lists tags only: untagged manifests known only from the ledger (pushed by
  digest, or left behind when a tag was overwritten) are planned and deleted by
  `untagged: {olderThan: 7d}`; a signature pushed by digest for a kept image stays.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.cli import run_cli

from regwarden.devtools import LocalRegistry, make_image, push_image
from regwarden.oci import (
    EMPTY_JSON,
    EMPTY_JSON_DIGEST,
    OCI_EMPTY,
    OCI_MANIFEST,
    RegistryClient,
    compute_digest,
)
from regwarden.store import SqliteLedger

pytestmark = pytest.mark.integration

DAY = timedelta(days=1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
POLICY = """\
apiVersion: regwarden/v1
kind: Policy
defaults:
  team: platform
  retention:%(age_from)s
    delete:
      - olderThan: 30d
      - untagged: {olderThan: 7d}
    guard: {maxDeletes: 100, maxShare: 1}
notifications:
  channels:
    alerts: {type: file, path: alerts.jsonl}
  routes:
    - {to: [alerts]}
"""


def write_policy(tmp_path: Path, *, age_from: str | None = None) -> Path:
    path = tmp_path / f"policy-{age_from or 'default'}.yaml"
    line = f"\n    ageFrom: {age_from}" if age_from else ""
    path.write_text(POLICY % {"age_from": line})
    return path


def regwarden(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(*args, cwd=cwd, timeout=180)


def present(client: RegistryClient, repo: str, digest: str) -> bool:
    return client.head_manifest(repo, digest) is not None


class Cli:
    """`regwarden retention …` for one repository of the session registry."""

    def __init__(self, registry: LocalRegistry, repo: str, ledger: Path, cwd: Path) -> None:
        self.select = ["--registry", registry.host, "--repository", repo]
        self.ledger = ledger
        self.cwd = cwd

    def run(self, command: str, policy: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        return regwarden(
            "--ledger",
            str(self.ledger),
            "retention",
            command,
            "-p",
            str(policy),
            *self.select,
            *extra,
            cwd=self.cwd,
        )

    def plan(self, policy: Path) -> dict[str, Any]:
        done = self.run("plan", policy, "-o", "json")
        assert done.returncode == 0, done.stderr
        (repository,) = json.loads(done.stdout)["repositories"]
        return dict(repository)

    def apply(self, policy: Path) -> dict[str, Any]:
        done = self.run("apply", policy, "--yes", "-o", "json")
        assert done.returncode == 0, done.stderr
        return dict(json.loads(done.stdout)["result"])


def by_digest(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {d["digest"]: d for d in plan["decisions"]}


def test_a_fresh_image_with_a_1970_config_date_is_not_deleted_by_older_than(
    registry: LocalRegistry, client: RegistryClient, repo: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    ledger_path = tmp_path / "ledger.db"
    # reproducible builds: the config says 1970-01-01 for both
    fresh = push_image(client, repo, make_image(layer_size=64, seed=11, created=EPOCH), "1.0")
    unseen = push_image(client, repo, make_image(layer_size=64, seed=12, created=EPOCH), "2.0")
    ledger = SqliteLedger(ledger_path)  # the receiver saw `fresh` pushed a minute ago
    ledger.record_push(registry.host, repo, fresh, ("1.0",), now=now - timedelta(minutes=1))
    ledger.close()
    cli = Cli(registry, repo, ledger_path, tmp_path)
    default = write_policy(tmp_path)

    plan = cli.plan(default)
    decisions = by_digest(plan)
    assert plan["totals"]["images_deleted"] == 0
    assert (decisions[fresh]["action"], decisions[fresh]["rule"]) == ("keep", "default")
    pushed = datetime.fromisoformat(decisions[fresh]["pushed"])
    assert timedelta(0) < now - pushed < timedelta(minutes=5)  # the ledger's time, not 1970
    # no push time and never seen pushed: no age, and the plan says so for that image
    assert decisions[unseen]["rule"] == "ageUnknown" and decisions[unseen]["pushed"] is None
    assert decisions[unseen]["reason"] == (
        "kept: age unknown (no push time from the registry, and the ledger never saw it "
        "pushed); its config says created 1970-01-01, used only with ageFrom: created"
    )
    assert any(w.startswith("no push time for 1 of 2 manifests") for w in plan["warnings"])
    text = cli.run("plan", default)
    assert text.returncode == 0, text.stderr
    assert "ageUnknown" in text.stdout and "kept: age unknown" in text.stdout

    applied = cli.apply(default)
    assert (applied["status"], applied["deleted"]) == ("done", 0)
    assert present(client, repo, fresh) and present(client, repo, unseen)

    # opting in to the config's date: both are 56 years old at once (the documented risk)
    created = write_policy(tmp_path, age_from="created")
    plan = cli.plan(created)
    decisions = by_digest(plan)
    for digest in (fresh, unseen):
        assert decisions[digest]["rule"] == "olderThan"
        assert decisions[digest]["reason"].startswith("deleted: tagged older than 30d (created ")
        assert decisions[digest]["pushed"].startswith("1970-01-01")
    assert any("ageFrom: created: aged 2 of 2 manifests" in w for w in plan["warnings"])
    applied = cli.apply(created)
    assert (applied["status"], applied["deleted"]) == ("done", 2)
    assert not present(client, repo, fresh) and not present(client, repo, unseen)


def _signature(client: RegistryClient, repo: str, subject: str, size: int) -> str:
    """An OCI 1.1 signature artifact for `subject`, pushed by digest only: no tag and no
    tag-schema index, so nothing but the ledger knows it is there."""
    payload = json.dumps({"signed": subject}).encode()
    client.push_blob(repo, EMPTY_JSON)
    client.push_blob(repo, payload)
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "config": {"mediaType": OCI_EMPTY, "digest": EMPTY_JSON_DIGEST, "size": 2},
            "layers": [
                {
                    "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
                    "digest": compute_digest(payload),
                    "size": len(payload),
                }
            ],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": size},
        }
    ).encode()
    return client.put_manifest(repo, compute_digest(raw), raw, OCI_MANIFEST)


def test_untagged_manifests_known_only_from_the_ledger_are_deleted_by_untagged(
    registry: LocalRegistry, client: RegistryClient, repo: str, tmp_path: Path
) -> None:
    now = datetime.now(UTC)
    ledger_path = tmp_path / "ledger.db"
    host = registry.host
    old_image = make_image(layer_size=64, seed=21)
    new_image = make_image(layer_size=64, seed=22)
    old = push_image(client, repo, old_image, "1.0")
    new = push_image(client, repo, new_image, "1.0")  # `1.0` moves on: `old` is untagged
    by_digest_only = push_image(client, repo, make_image(layer_size=64, seed=23))
    recent = push_image(client, repo, make_image(layer_size=64, seed=24))
    signature = _signature(client, repo, new, len(new_image.manifest))
    gone = push_image(client, repo, make_image(layer_size=64, seed=25))
    client.delete_manifest(repo, gone)
    ledger = SqliteLedger(ledger_path)  # what the receiver recorded from the events
    ledger.record_push(host, repo, old, ("1.0",), now=now - 20 * DAY)
    ledger.record_push(host, repo, new, ("1.0",), now=now - 1 * DAY)
    ledger.record_push(host, repo, by_digest_only, (), now=now - 9 * DAY)
    ledger.record_push(host, repo, recent, (), now=now - timedelta(hours=1))
    ledger.record_push(host, repo, signature, (), now=now - 9 * DAY)
    ledger.record_push(host, repo, gone, (), now=now - 9 * DAY)
    ledger.close()
    assert client.list_tags(repo) == ["1.0"]  # all the registry itself can list
    cli = Cli(registry, repo, ledger_path, tmp_path)
    policy = write_policy(tmp_path)

    # without the ledger, the registry's listing shows the tagged image only
    blind = Cli(registry, repo, tmp_path / "empty-ledger.db", tmp_path).plan(policy)
    assert set(by_digest(blind)) == {new}

    plan = cli.plan(policy)
    decisions = by_digest(plan)
    assert set(decisions) == {new, old, by_digest_only, recent, signature}  # `gone` is gone
    assert {d: x["rule"] for d, x in decisions.items() if x["action"] == "delete"} == {
        old: "untagged",
        by_digest_only: "untagged",
    }
    assert decisions[old]["reason"] == "deleted: untagged older than 7d (pushed 20d ago)"
    assert decisions[by_digest_only]["reason"] == "deleted: untagged older than 7d (pushed 9d ago)"
    assert decisions[signature]["rule"] == "referrerOfKept"  # a kept image's signature stays
    assert decisions[recent]["action"] == "keep"
    assert (
        "the registry lists tagged manifests only: read 5 digests the ledger saw pushed that "
        "the listing does not show; 4 still there were added (1 left behind by an overwritten "
        "tag, 3 pushed by digest), 1 no longer there"
    ) in plan["warnings"]
    text = cli.run("plan", policy)
    assert text.returncode == 0 and "untagged" in text.stdout

    applied = cli.apply(policy)
    assert (applied["status"], applied["deleted"]) == ("done", 2), applied
    assert not present(client, repo, old) and not present(client, repo, by_digest_only)
    for kept in (new, recent, signature):
        assert present(client, repo, kept)
    assert cli.plan(policy)["totals"]["images_deleted"] == 0  # nothing more to do
