"""Retention after regwarden's own `sign` and `attest`, end to end on a real registry.

A real `docker-registry` 2.8 on loopback (deletes enabled); images, one of them a
multi-arch index, built as OCI layouts and pushed with `skopeo copy --all`; a key pair from
`regwarden keys generate`; signatures and attestations pushed by `regwarden sign` and
`regwarden attest`, both as cosign's `sha256-<hex>.sig|.att` tags (`--format legacy`) and
as Sigstore bundles pushed as OCI 1.1 referrers (`--format bundle`, which distribution 2.8
keeps behind the `sha256-<hex>` tag-schema index); then `regwarden retention plan|apply`
as a user runs them, each a child process.

What it proves, checked on the registry itself (HEAD by digest, the tag listing), not only
in the command output:
- the dry run (`plan`, `apply` without `--yes`) selects exactly the old images with their
  signatures, attestations, bundle referrers and index children, and changes nothing;
- the real run deletes exactly those: no `.sig`/`.att` tag, no tag-schema index, no bundle
  manifest and no platform image of a deleted index is left behind, while every kept image
  keeps its signature tag, attestation tag and bundle referrers, which still verify
  (`regwarden verify`, and `regwarden check` whose signature, cosign-vuln and provenance
  checks read them);
- an apply SIGKILLed after its first DELETE reached the registry, then resumed with
  `--resume RUN_ID --yes`, ends in exactly the planned state.

- an apply SIGKILLed between an index's DELETE and its platform manifests', followed by a
  fresh `retention apply --yes` (no `--resume`, as cron runs it again), leaves nothing
  behind: the killed run had put those untagged platform images in the ledger, so the
  fresh plan sees them (a tag listing cannot) and its `untagged` rule deletes them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.proxy import RegistryProxy
from support.streams import wait_for

from regwarden.devtools import (
    DEFAULT_BINARY,
    LocalRegistry,
    Vuln,
    build_image,
    build_index,
    skopeo_copy,
    trivy_report,
    vuln_predicate,
)
from regwarden.oci import RegistryClient, referrers_tag
from regwarden.signatures import signature_tag

pytestmark = pytest.mark.e2e

OLD = datetime(2020, 1, 1, tzinfo=UTC)  # past `olderThan: 30d`
FRESH = datetime.now(UTC) - timedelta(days=1)  # within it
BUILDER = "https://builder.example/e2e-attret@v1"
CI_AGENT = "ci-pipeline/1.0"

# `ageFrom: created`: distribution 2.8 keeps no push time and no `regwarden serve` feeds
# this ledger, so ages come from the configs' `created` (an index: its first platform's).
POLICY = """\
apiVersion: regwarden/v1
kind: Policy
defaults:
  team: platform
repositories:
  - match: "e2e/**"
    signatures:
      cosign: {keys: ["file://keys/cosign.pub"]}
      formats: [FORMATS]
      gracePeriod: 0s
    vulnerabilities:
      maxSeverity: high
      sources: [cosign-vuln]
    provenance:
      builderIds: ["BUILDER"]
    retention:
      ageFrom: created
      keep:
        - tagMatches: "^release-"
      delete:
        - olderThan: 30d
        - orphans: {}
      guard: {maxDeletes: 200, maxShare: 1}
"""


def policy_text(formats: str = "cosign, cosign-bundle") -> str:
    return POLICY.replace("FORMATS", formats).replace("BUILDER", BUILDER)


# -- the world: a registry, a key pair, the CLI ------------------------------------------------


@dataclass
class World:
    root: Path
    registry: LocalRegistry

    @property
    def host(self) -> str:
        return self.registry.host

    @property
    def key(self) -> Path:
        return self.root / "keys" / "cosign.key"

    @property
    def pub(self) -> Path:
        return self.root / "keys" / "cosign.pub"

    @property
    def ledger(self) -> Path:
        return self.root / "ledger.db"

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "regwarden", "--ledger", str(self.ledger), *args]

    def env(self) -> dict[str, str]:
        return {**os.environ, "COSIGN_PASSWORD": "pw"}

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`regwarden --ledger <ours> ARGS…` in a child process, as a user runs it."""
        return subprocess.run(
            self.command(*args),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env=self.env(),
            cwd=self.root,
        )

    def cli_json(self, *args: str) -> Any:
        proc = self.cli(*args, "--output", "json")
        if proc.returncode != 0:
            pytest.fail(
                f"regwarden {' '.join(args)}: exit {proc.returncode}\n"
                + (proc.stderr or proc.stdout)
            )
        return json.loads(proc.stdout)

    def client(self) -> RegistryClient:
        """Straight to the registry, never through a proxy: what the registry holds."""
        return RegistryClient(self.host, user_agent=CI_AGENT, backoff=0.05)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    for tool, package in ((DEFAULT_BINARY, "docker-registry"), ("skopeo", "skopeo")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (apt-get install {package})")
    root = tmp_path_factory.mktemp("attret")
    (root / "keys").mkdir()
    (root / "regwarden.yaml").write_text(policy_text())
    with LocalRegistry() as registry:
        w = World(root, registry)
        keys = w.cli("keys", "generate", "--output-key-prefix", str(root / "keys" / "cosign"))
        assert keys.returncode == 0, keys.stderr
        assert w.key.is_file() and w.pub.is_file()
        yield w


# -- helpers -----------------------------------------------------------------------------------


def push(world: World, layout: Path, repo: str, tag: str) -> None:
    skopeo_copy(f"oci:{layout}:{tag}", f"docker://{world.host}/{repo}:{tag}")


def sign(world: World, repo: str, digest: str, fmt: str) -> str:
    out = world.cli_json(
        "sign", f"{world.host}/{repo}@{digest}", "--key", str(world.key), "--format", fmt
    )
    assert out["signed"] is True
    return str(out["manifest"])


def attest(world: World, repo: str, digest: str, kind: str, predicate: Path, fmt: str) -> str:
    out = world.cli_json(
        "attest",
        f"{world.host}/{repo}@{digest}",
        "--key",
        str(world.key),
        "--type",
        kind,
        "--predicate",
        str(predicate),
        "--format",
        fmt,
    )
    return str(out["manifest"])


def predicates(world: World, repo: str) -> tuple[Path, Path]:
    """A cosign-vuln predicate (one LOW finding) and a SLSA v0.2 provenance predicate."""
    t = datetime.now(UTC)
    vuln = world.root / f"vuln-{repo.replace('/', '_')}.json"
    vuln.write_text(
        json.dumps(
            vuln_predicate(
                trivy_report(
                    f"{world.host}/{repo}",
                    [Vuln("CVE-2099-0001", "LOW", "zlib", "1.3", "1.3.1")],
                    created=t,
                ),
                started=t - timedelta(seconds=5),
                finished=t,
            )
        )
    )
    provenance = world.root / "provenance.json"
    provenance.write_text(json.dumps({"builder": {"id": BUILDER}, "buildType": "e2e"}))
    return vuln, provenance


def tag_map(world: World, repo: str) -> dict[str, str]:
    """tag → digest, as the registry answers now (HEAD per tag)."""
    with world.client() as c:
        out: dict[str, str] = {}
        for tag in c.list_tags(repo):
            desc = c.head_manifest(repo, tag)
            assert desc is not None, f"{repo}:{tag} listed but HEAD 404"
            out[tag] = desc.digest
        return out


def present(world: World, repo: str, digests: set[str]) -> dict[str, bool]:
    """digest → does HEAD by digest answer 200 on the registry."""
    with world.client() as c:
        return {d: c.head_manifest(repo, d) is not None for d in sorted(digests)}


def retention(
    world: World, verb: str, repo: str, *extra: str, host: str = "", policy: str = ""
) -> list[str]:
    """`retention VERB` of `repo` on `host` (default: the registry itself) under `policy`
    (default: the module's), as the CLI's arguments."""
    policy = policy or str(world.root / "regwarden.yaml")
    target = ["--repository", repo] if repo else []
    return ["retention", verb, "-p", policy, "--registry", host or world.host, *target, *extra]


def plan_json(world: World, repo: str) -> dict[str, Any]:
    return dict(world.cli_json(*retention(world, "plan", repo)))


def planned(doc: dict[str, Any], repo: str, action: str) -> set[str]:
    (plan,) = [r for r in doc["repositories"] if r["repository"] == repo]
    return {d["digest"] for d in plan["decisions"] if d["action"] == action}


def apply_killed(
    world: World, proxy: RegistryProxy, repo: str, log: Path, when: Callable[[], bool]
) -> None:
    """`retention apply --yes --concurrency 1` through `proxy`, SIGKILLed as soon as `when()`
    holds on the registry (stderr to `log`); fails if the run ended before that."""
    with open(log, "w") as err:
        proc = subprocess.Popen(
            world.command(
                *retention(world, "apply", repo, "--concurrency", "1", "--yes", host=proxy.host)
            ),
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=world.env(),
            cwd=world.root,
        )
        try:
            wait_for(
                lambda: proc.poll() is not None or when(),
                timeout=60,
                what="the apply to reach the point of the kill",
            )
            if proc.poll() is not None:
                pytest.fail(
                    f"apply ended (exit {proc.returncode}) before the kill:\n{log.read_text()}"
                )
            proc.send_signal(signal.SIGKILL)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)
    if proc.returncode != -signal.SIGKILL:
        pytest.fail(f"apply exit {proc.returncode}, not killed:\n{log.read_text()}")


# -- the scene ---------------------------------------------------------------------------------


@dataclass
class Scene:
    """One repository: what retention must delete and what it must keep, by digest."""

    repo: str
    deleted: set[str] = field(default_factory=set)
    kept: set[str] = field(default_factory=set)
    kept_tags: dict[str, str] = field(default_factory=dict)
    """tag → digest the registry must still answer after retention: exactly these."""
    gone_tags: set[str] = field(default_factory=set)


def build_scene(world: World, repo: str) -> tuple[Scene, dict[str, Any]]:
    """Push and sign the four images of the scenario; return the expectations and facts.

    - `1.0.0`  old single image, legacy signature + legacy vuln attestation → deleted
    - `1.1.0`  old multi-arch index, bundle signature + bundle provenance → deleted
    - `release-2.0` old index kept by `tagMatches`, every kind of both formats → kept
    - `2.1.0`  fresh unsigned image (no delete rule selects it) → kept
    """
    layout = world.root / f"oci-{repo.replace('/', '_')}"
    dead_image = build_image(layout, tag="1.0.0", seed=11, created=OLD)
    dead_index = build_index(layout, tag="1.1.0", seed=12, created=OLD)
    kept_index = build_index(layout, tag="release-2.0", seed=13, created=OLD)
    fresh = build_image(layout, tag="2.1.0", seed=14, created=FRESH)
    for tag in ("1.0.0", "1.1.0", "release-2.0", "2.1.0"):
        push(world, layout, repo, tag)
    vuln, provenance = predicates(world, repo)

    a, b, c = dead_image.digest, dead_index.digest, kept_index.digest
    sign(world, repo, a, "legacy")
    attest(world, repo, a, "vuln", vuln, "legacy")
    b_sig = sign(world, repo, b, "bundle")
    b_att = attest(world, repo, b, "slsaprovenance", provenance, "bundle")
    sign(world, repo, c, "legacy")
    c_sig = sign(world, repo, c, "bundle")
    attest(world, repo, c, "vuln", vuln, "legacy")
    c_att = attest(world, repo, c, "slsaprovenance", provenance, "bundle")

    tags = tag_map(world, repo)
    scene = Scene(repo)
    # what `sign`/`attest` put on the registry: the tags and the tag-schema indexes
    a_tags = {signature_tag(a, "sig"), signature_tag(a, "att")}
    b_tags = {referrers_tag(b)}
    c_tags = {signature_tag(c, "sig"), signature_tag(c, "att"), referrers_tag(c)}
    assert set(tags) == {"1.0.0", "1.1.0", "release-2.0", "2.1.0"} | a_tags | b_tags | c_tags
    with world.client() as cl:
        assert {d.digest for d in cl.referrers(repo, b)} == {b_sig, b_att}
        assert {d.digest for d in cl.referrers(repo, c)} == {c_sig, c_att}

    scene.deleted = (
        {a, b, b_sig, b_att}
        | {tags[t] for t in a_tags | b_tags}
        | {ch.digest for ch in dead_index.children}
    )
    scene.kept = (
        {c, fresh.digest, c_sig, c_att}
        | {tags[t] for t in c_tags}
        | {ch.digest for ch in kept_index.children}
    )
    assert not scene.deleted & scene.kept
    assert len(scene.deleted) == 9 and len(scene.kept) == 9
    scene.gone_tags = {"1.0.0", "1.1.0"} | a_tags | b_tags
    scene.kept_tags = {t: d for t, d in tags.items() if t not in scene.gone_tags}
    facts = {
        "kept_index": c,
        "bundle_referrers": {c_sig, c_att},
        "dead_index": b,
        "dead_children": {ch.digest for ch in dead_index.children},
    }
    return scene, facts


# -- 1. dry run, real run, what is left verifies ----------------------------------------------


def test_retention_deletes_signed_and_attested_images_with_everything_that_refers_to_them(
    world: World,
) -> None:
    repo = "e2e/attret-app"
    scene, facts = build_scene(world, repo)
    everything = scene.deleted | scene.kept
    before_tags = tag_map(world, repo)
    assert all(present(world, repo, everything).values())

    # the plan selects exactly the old images and what belongs to them
    doc = plan_json(world, repo)
    assert planned(doc, repo, "delete") == scene.deleted
    assert planned(doc, repo, "keep") == scene.kept
    assert doc["totals"]["images_deleted"] == len(scene.deleted)

    # apply without --yes: a dry run that says so, exits 1 and deletes nothing
    dry = world.cli(*retention(world, "apply", repo))
    assert dry.returncode == 1, dry.stdout + dry.stderr
    assert f"dry run: {len(scene.deleted)} images" in dry.stderr, dry.stderr
    assert tag_map(world, repo) == before_tags
    assert all(present(world, repo, everything).values())

    # the real run
    done = world.cli_json(*retention(world, "apply", repo, "--yes"))
    result = done["result"]
    assert result["status"] == "done", result
    assert result["deleted"] == len(scene.deleted), result

    # on the registry: every deleted manifest is gone (index children and bundle referrers
    # included), no .sig/.att tag or tag-schema index is left, every kept one is there
    after = present(world, repo, everything)
    assert [d for d in scene.deleted if after[d]] == [], "left behind after retention"
    assert [d for d in scene.kept if not after[d]] == [], "kept images deleted"
    assert tag_map(world, repo) == scene.kept_tags
    with world.client() as cl:
        assert cl.referrers(repo, facts["dead_index"]) == []
        assert {d.digest for d in cl.referrers(repo, facts["kept_index"])} == (
            facts["bundle_referrers"]
        )

    # the kept index's signatures (legacy and bundle) still verify …
    c = facts["kept_index"]
    verified = world.cli_json("verify", f"{world.host}/{repo}@{c}", "--key", str(world.pub))
    assert verified["met"] is True, verified
    formats = {s["format"] for s in verified["signatures"] if s["verified"]}
    assert formats == {"cosign-legacy", "cosign-bundle"}, verified
    # … and `check` passes on each signature format alone, reading the legacy vuln
    # attestation (`.att`) and the bundle provenance attestation (a referrer)
    for fmt in ("cosign", "cosign-bundle"):
        policy = world.root / f"check-{fmt}.yaml"
        policy.write_text(policy_text(fmt))
        check = world.cli("check", f"{world.host}/{repo}@{c}", "-p", str(policy), "-o", "json")
        assert check.returncode == 0, check.stdout + check.stderr
        report = json.loads(check.stdout)
        assert report["outcome"] == "PASSED", report
        outcomes = {ch["name"]: ch["outcome"] for ch in report["checks"]}
        assert outcomes["signatures"] == "pass", report
        assert outcomes["vulnerabilities"] == "pass", report
        assert outcomes["provenance"] == "pass", report

    # and nothing more to delete
    assert plan_json(world, repo)["totals"]["images_deleted"] == 0


# -- 2. SIGKILL in the middle of a real run, then resume --------------------------------------

RUN_ID = re.compile(r"resume with --resume (\S+) --yes")


def test_an_apply_killed_after_its_first_delete_resumes_to_exactly_the_planned_state(
    world: World,
) -> None:
    repo = "e2e/attret-crash"
    layout = world.root / "oci-crash"
    vuln, provenance = predicates(world, repo)
    old: list[str] = []
    for n in range(6):  # 6 old images, each signed and attested in both formats → deleted
        tag = f"0.{n}.0"
        image = build_image(layout, tag=tag, seed=100 + n, created=OLD)
        push(world, layout, repo, tag)
        old.append(image.digest)
    index = build_index(layout, tag="0.9.0", seed=120, created=OLD)  # an old index → deleted
    push(world, layout, repo, "0.9.0")
    kept = build_index(layout, tag="release-1.0", seed=121, created=OLD)
    push(world, layout, repo, "release-1.0")
    for digest in [*old[:3], kept.digest]:
        sign(world, repo, digest, "legacy")
        attest(world, repo, digest, "vuln", vuln, "legacy")
    for digest in [*old[3:], index.digest, kept.digest]:
        sign(world, repo, digest, "bundle")
        attest(world, repo, digest, "slsaprovenance", provenance, "bundle")

    doc = plan_json(world, repo)
    deleted, keep = planned(doc, repo, "delete"), planned(doc, repo, "keep")
    # 6 images + 2 children + the index, 2 referrers each (+ a tag-schema index for 4)
    assert len(deleted) == 6 + 3 + 7 * 2 + 4, sorted(deleted)
    assert {*old, index.digest, *(c.digest for c in index.children)} <= deleted
    assert {kept.digest, *(c.digest for c in kept.children)} <= keep
    kept_tags = {
        t: d
        for t, d in tag_map(world, repo).items()
        if d in keep  # the release tag and the kept index's .sig/.att/tag-schema tags
    }
    assert len(kept_tags) == 4, kept_tags

    # the run goes through a loopback proxy that holds each DELETE a moment, one at a time,
    # so the kill lands with deletions still to do; the registry itself is watched
    log = world.root / "crash-apply.log"
    with RegistryProxy(world.host, page_tags=False, emulate_tag_delete=False) as proxy:
        proxy.delay(0.15, method="DELETE")
        apply_killed(
            world, proxy, repo, log, lambda: not all(present(world, repo, deleted).values())
        )

        midway = present(world, repo, deleted | keep)
        assert 0 < sum(not midway[d] for d in deleted) < len(deleted), "not killed mid-run"
        assert all(midway[d] for d in keep), "a kept manifest was deleted"
        found = RUN_ID.search(log.read_text())
        assert found is not None, log.read_text()

        # the documented recovery: the recorded run, resumed (a DELETE the proxy still
        # held when the process died may land meanwhile: the resumed run finds it gone)
        proxy.clear()
        resumed = world.cli_json(
            *retention(world, "apply", "", "--resume", found.group(1), "--yes", host=proxy.host)
        )
    assert resumed["result"]["status"] == "done", resumed
    final = present(world, repo, deleted | keep)
    assert [d for d in deleted if final[d]] == [], "left behind after the resumed run"
    assert [d for d in keep if not final[d]] == [], "kept manifests deleted"
    assert tag_map(world, repo) == kept_tags
    # and a fresh plan finds nothing more to delete
    assert plan_json(world, repo)["totals"]["images_deleted"] == 0


# -- 3. SIGKILL between an index and its children, then a fresh run ---------------------------


def test_a_fresh_apply_after_a_kill_between_an_index_and_its_children_deletes_the_children(
    world: World,
) -> None:
    repo = "e2e/attret-fresh"
    layout = world.root / "oci-fresh"
    _vuln, provenance = predicates(world, repo)
    index = build_index(layout, tag="0.9.0", seed=130, created=OLD)
    push(world, layout, repo, "0.9.0")
    kept = build_image(layout, tag="release-1.0", seed=131, created=OLD)
    push(world, layout, repo, "release-1.0")
    sign(world, repo, index.digest, "bundle")
    attest(world, repo, index.digest, "slsaprovenance", provenance, "bundle")
    children = {c.digest for c in index.children}

    doc = plan_json(world, repo)
    deleted, keep = planned(doc, repo, "delete"), planned(doc, repo, "keep")
    if not ({index.digest, *children} <= deleted and kept.digest in keep):
        pytest.fail(f"unexpected plan: delete {sorted(deleted)}, keep {sorted(keep)}")
    # the next run's policy also deletes untagged images: a platform image left behind
    # is one now (its index is gone), and the plan judges it as such
    untagged = world.root / "regwarden-untagged.yaml"
    untagged.write_text(
        policy_text().replace(
            "        - olderThan: 30d\n",
            "        - olderThan: 30d\n        - untagged: {olderThan: 30d}\n",
        )
    )
    if "untagged: {olderThan: 30d}" not in untagged.read_text():
        pytest.fail("the untagged rule was not added to the policy")
    policy = str(untagged)
    log = world.root / "fresh-apply.log"
    with RegistryProxy(world.host, page_tags=False, emulate_tag_delete=False) as proxy:
        proxy.delay(0.3, method="DELETE")
        apply_killed(
            world, proxy, repo, log, lambda: not present(world, repo, {index.digest})[index.digest]
        )
        midway = present(world, repo, deleted | keep)
        if midway[index.digest] or all(not midway[c] for c in children):
            pytest.fail(f"not killed between the index and its children: {midway}")

        # the next scheduled run, as cron runs it: a fresh apply of the same policy on the
        # same registry host, with the same ledger
        proxy.clear()
        again = world.cli_json(
            *retention(world, "apply", repo, "--yes", host=proxy.host, policy=policy)
        )
        if again["result"]["status"] != "done":
            pytest.fail(f"the fresh apply did not finish: {again['result']}")
    final = present(world, repo, deleted | keep)
    if not all(final[d] for d in keep):
        pytest.fail(f"kept manifests deleted: {final}")
    # the killed run put its untagged platform images in the ledger before deleting the
    # index: the fresh plan reads them, aged as the killed plan aged them, and deletes them
    assert [d for d in deleted if final[d]] == [], "left behind after the fresh run"
    leftovers = {d for d in children if midway[d]}
    assert leftovers, midway
    # one may still have been in flight through the proxy when the run was killed
    assert 1 <= again["planned_deletions"] <= len(leftovers), again
