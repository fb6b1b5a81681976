"""Quarantine on ACR through the gate: the real pipeline (`Runtime`) with the ACR provider on
FakeAcr (a real docker-registry behind it, images pushed with skopeo) and Defender for
Containers' findings from FakeResourceGraph. `lock` holds an image while its scan is
awaited, escalates the hold when the scan fails, judges the read-locked image again from the
manifest the ledger stored (never pulling it), and releases it exactly when it passes;
under ACR's quarantine policy a PASSED verdict marks it Passed. `move` and `retag` work on
ACR too."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.fake_acr import TOKEN_USER, FakeAcr
from support.fake_resourcegraph import SUBSCRIPTION, FakeResourceGraph

from regwarden.actions import describe_state, quarantine, release
from regwarden.devtools import LocalRegistry, make_image, make_multiarch, skopeo_copy, write_layout
from regwarden.errors import AuthError
from regwarden.model import EventKind, ImageEvent, Outcome
from regwarden.oci import Credentials, DeadlineTransport, RegistryClient
from regwarden.pipeline import Handled
from regwarden.policy import load_policy_text
from regwarden.providers import ProviderOptions
from regwarden.providers.acr import AcrRegistry
from regwarden.quarantine_names import quarantine_tag
from regwarden.reference import ImageRef
from regwarden.runtime import Runtime
from regwarden.store import SqliteLedger

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, 0, 0, tzinfo=UTC)
OPEN = {"deleteEnabled": True, "writeEnabled": True, "readEnabled": True, "listEnabled": True}
HELD = {**OPEN, "deleteEnabled": False, "writeEnabled": False}
LOCKED = {**HELD, "readEnabled": False}
POLICY = """\
apiVersion: regwarden/v1
kind: Policy
defaults:
  mode: enforce
  quarantine: {strategy: lock}
  vulnerabilities: {maxSeverity: high, scanTimeout: 30m}
"""


@pytest.fixture
def acr(registry: LocalRegistry) -> Iterator[FakeAcr]:
    with FakeAcr(registry.host) as fake:
        fake.now = lambda: T0
        yield fake


@pytest.fixture
def graph() -> Iterator[FakeResourceGraph]:
    with FakeResourceGraph(now=T0) as fake:
        yield fake


@pytest.fixture
def ar(acr: FakeAcr) -> Iterator[AcrRegistry]:
    opts = ProviderOptions(credentials=acr.credential())
    registry = AcrRegistry(acr.login_server, opts, env=acr.env(), sleep=lambda _s: None)
    yield registry
    registry.close()


@pytest.fixture
def runtime(
    tmp_path: Path, ar: AcrRegistry, graph: FakeResourceGraph
) -> Iterator[Runtime[SqliteLedger]]:
    policy = load_policy_text(POLICY, source="acr.yaml", base_dir=tmp_path)
    ledger = SqliteLedger(tmp_path / "ledger.db")
    env = {
        "REGWARDEN_AZURE_ENDPOINT_RESOURCEGRAPH": graph.url,
        "REGWARDEN_AZURE_SUBSCRIPTION": SUBSCRIPTION,
    }
    rt = Runtime(policy, ledger=ledger, env=env, registry_factory=lambda _host: ar)
    yield rt
    ledger.close()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    with closing(SqliteLedger(tmp_path / "actions.db")) as led:
        yield led


def puller(acr: FakeAcr) -> RegistryClient:
    transport = DeadlineTransport(limits=httpx.Limits(), ca_file=acr.ca_file)
    creds = Credentials(username=TOKEN_USER, password=acr.mint_refresh_token())
    return RegistryClient(f"https://{acr.host}", credentials=creds, transport=transport)


def skopeo_push(acr: FakeAcr, tmp_path: Path, content: Any, target: str) -> str:
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    layout = tmp_path / uuid.uuid4().hex[:8]
    write_layout(layout, content, tag="t")
    skopeo_copy(
        f"oci:{layout}:t",
        f"docker://{acr.host}/{target}",
        creds=(TOKEN_USER, acr.mint_refresh_token()),
    )
    return str(content.manifest_digest)


def pushed(runtime: Runtime[SqliteLedger], image: ImageRef, now: datetime) -> Handled:
    event = ImageEvent(
        kind=EventKind.PUSHED,
        source="eventgrid",
        image=image,
        time=T0,
        delivery_id=uuid.uuid4().hex,
        user_agent="ci-pipeline/1.0",
    )
    return runtime.pipeline().handle(event, now=now)


def recheck(runtime: Runtime[SqliteLedger], image: ImageRef, now: datetime) -> Handled:
    return runtime.pipeline().recheck(image.with_tag(None), now=now)


def manifest_reads(acr: FakeAcr, repo: str, digest: str) -> list[int]:
    return [
        r.status
        for r in acr.v2_requests
        if r.method in ("GET", "HEAD") and r.path == f"/v2/{repo}/manifests/{digest}"
    ]


# -- lock through the gate -------------------------------------------------------------------------


def test_lock_holds_escalates_judges_the_stored_manifest_and_releases_exactly(
    runtime: Runtime[SqliteLedger],
    acr: FakeAcr,
    ar: AcrRegistry,
    graph: FakeResourceGraph,
    repo: str,
    tmp_path: Path,
) -> None:
    digest = skopeo_push(acr, tmp_path, make_image(seed=71), f"{repo}:1.0")
    ar.set_manifest_attributes(repo, digest, list=False)  # someone's own setting, kept
    prior = acr.attributes(repo, digest)
    image = ImageRef.parse(f"{acr.login_server}/{repo}:1.0@{digest}")
    ledger = runtime.ledger

    held = pushed(runtime, image, T0 + timedelta(minutes=5))  # no scan yet: PENDING
    assert held.verdict is not None and held.verdict.outcome is Outcome.PENDING
    assert held.actions == (f"quarantine (lock → {repo})",)
    assert acr.attributes(repo, digest) == {**HELD, "listEnabled": False}
    with puller(acr) as client:  # readable while held
        assert client.get_manifest(repo, digest).digest == digest

    finding = graph.add_finding(acr.login_server, repo, digest, "CVE-2026-1", "Critical")
    failed = recheck(runtime, image, T0 + timedelta(minutes=10))
    assert failed.verdict is not None and failed.verdict.outcome is Outcome.FAILED
    assert failed.actions == (f"quarantine (lock → {repo})",)
    assert "hold escalated: reads disabled" in failed.notes
    assert acr.attributes(repo, digest) == {**LOCKED, "listEnabled": False}
    with puller(acr) as client, pytest.raises(AuthError):
        client.get_manifest(repo, digest)
    assert describe_state(ledger, image.with_tag(None)).startswith("locked (1 manifest)")

    # judged again while read-locked: from the stored manifest, no pull of it at all
    reads = len(manifest_reads(acr, repo, digest))
    again = recheck(runtime, image, T0 + timedelta(minutes=15))
    assert again.verdict is not None and again.verdict.outcome is Outcome.FAILED
    assert again.actions == ()
    assert manifest_reads(acr, repo, digest)[reads:] == []

    graph.rows.remove(finding)
    graph.add_finding(acr.login_server, repo, digest, "CVE-2026-1", "Critical", status="Healthy")
    passed = recheck(runtime, image, T0 + timedelta(minutes=20))
    assert passed.verdict is not None and passed.verdict.outcome is Outcome.PASSED
    assert passed.actions == ("release (tags none)",)
    assert acr.attributes(repo, digest) == prior
    rec = ledger.quarantined(image.registry, repo, digest)
    assert rec is not None and rec.released_at is not None
    with puller(acr) as client:
        assert client.get_manifest(repo, digest).digest == digest


class CountingLedger(SqliteLedger):
    """Counts the pipeline's reads of a digest's quarantine record and of an action's
    record (not the ledger's own, inside its writes)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.reads: dict[str, int] = {"quarantined": 0, "action": 0}
        self._writing = False

    def quarantined(self, registry: str, repository: str, digest: str) -> Any:
        self.reads["quarantined"] += 1
        return super().quarantined(registry, repository, digest)

    def action(self, key: str) -> Any:
        self.reads["action"] += 0 if self._writing else 1
        return super().action(key)

    def begin_action(self, key: str, **kwargs: Any) -> Any:
        self._writing = True
        try:
            return super().begin_action(key, **kwargs)
        finally:
            self._writing = False


def test_a_lock_judgement_reads_the_quarantine_record_and_its_action_once(
    tmp_path: Path, acr: FakeAcr, ar: AcrRegistry, graph: FakeResourceGraph, repo: str
) -> None:
    """The held image's details (from the lock's stored manifests) and the verdict's
    actions share one read of each record: a cold start pays each round trip once."""
    policy = load_policy_text(POLICY, source="acr.yaml", base_dir=tmp_path)
    ledger = CountingLedger(tmp_path / "ledger.db")
    env = {
        "REGWARDEN_AZURE_ENDPOINT_RESOURCEGRAPH": graph.url,
        "REGWARDEN_AZURE_SUBSCRIPTION": SUBSCRIPTION,
    }
    runtime = Runtime(policy, ledger=ledger, env=env, registry_factory=lambda _host: ar)
    try:
        digest = skopeo_push(acr, tmp_path, make_image(seed=74), f"{repo}:1.0")
        image = ImageRef.parse(f"{acr.login_server}/{repo}:1.0@{digest}")

        held = pushed(runtime, image, T0 + timedelta(minutes=5))  # no scan yet: a hold
        assert held.verdict is not None and held.verdict.outcome is Outcome.PENDING
        assert ledger.reads == {"quarantined": 1, "action": 1}

        graph.add_finding(acr.login_server, repo, digest, "CVE-2026-1", "Critical")
        ledger.reads = {"quarantined": 0, "action": 0}
        reads = len(manifest_reads(acr, repo, digest))
        failed = recheck(runtime, image, T0 + timedelta(minutes=10))  # escalated
        assert failed.verdict is not None and failed.verdict.outcome is Outcome.FAILED
        assert "hold escalated: reads disabled" in failed.notes
        assert manifest_reads(acr, repo, digest)[reads:] == []  # the lock's stored manifest
        assert ledger.reads == {"quarantined": 1, "action": 1}
    finally:
        ledger.close()


def test_under_acr_quarantine_policy_a_pass_marks_the_image_passed(
    runtime: Runtime[SqliteLedger],
    acr: FakeAcr,
    graph: FakeResourceGraph,
    repo: str,
    tmp_path: Path,
) -> None:
    acr.quarantine_policy = True
    held_digest = skopeo_push(acr, tmp_path, make_image(seed=72), f"{repo}:1.0")
    clean_digest = skopeo_push(acr, tmp_path, make_image(seed=73), f"{repo}:2.0")
    held = ImageRef.parse(f"{acr.login_server}/{repo}:1.0@{held_digest}")
    clean = ImageRef.parse(f"{acr.login_server}/{repo}:2.0@{clean_digest}")
    with puller(acr) as client:
        for digest in (held_digest, clean_digest):
            with pytest.raises(AuthError):  # ACR holds every push until it is Passed
                client.get_manifest(repo, digest)

    # scanned clean before the gate saw it: PASSED, and marked Passed, no lock at all
    graph.add_finding(acr.login_server, repo, clean_digest, "CVE-1", "Low", status="Healthy")
    out = pushed(runtime, clean, T0 + timedelta(minutes=5))
    assert out.verdict is not None and out.verdict.outcome is Outcome.PASSED
    assert out.actions == ("quarantine state Passed",)
    assert acr.quarantine_state(repo, clean_digest)[0] == "Passed"
    assert acr.attributes(repo, clean_digest) == OPEN

    # held while the scan is awaited (ACR's state untouched), released Passed once clean
    first = pushed(runtime, held, T0 + timedelta(minutes=5))
    assert first.verdict is not None and first.verdict.outcome is Outcome.PENDING
    assert acr.quarantine_state(repo, held_digest)[0] == "Quarantined"
    graph.add_finding(acr.login_server, repo, held_digest, "CVE-1", "Low", status="Healthy")
    done = recheck(runtime, held, T0 + timedelta(minutes=10))
    assert done.verdict is not None and done.verdict.outcome is Outcome.PASSED
    assert done.actions == ("release (tags none)",)
    assert acr.quarantine_state(repo, held_digest)[0] == "Passed"
    assert acr.attributes(repo, held_digest) == OPEN
    with puller(acr) as client:
        for digest in (held_digest, clean_digest):
            assert client.get_manifest(repo, digest).digest == digest


# -- move and retag on ACR -------------------------------------------------------------------------


def test_move_takes_an_index_with_its_children_and_release_brings_it_back(
    acr: FakeAcr, ar: AcrRegistry, ledger: SqliteLedger, repo: str, tmp_path: Path
) -> None:
    index = make_multiarch(seed=74)
    digest = skopeo_push(acr, tmp_path, index, f"{repo}:v1")
    children = {c.manifest_digest for c in index.children}
    image = ImageRef(registry=ar.host, repository=repo, tag=None, digest=digest)

    out = quarantine(
        ar,
        ledger,
        image=image,
        tags=(),
        strategy="move",
        repository_template="quarantine/{repository}",
        reason="CRITICAL",
        now=T0,
    )

    held = f"quarantine/{repo}"
    assert out.location == held and out.removed_tags == ("v1",)
    assert set(out.children) == children
    assert ar.list_images(repo) == []  # ACR lists every manifest: none left
    moved = {r.digest: r.tags for r in ar.list_images(held)}
    assert moved == {digest: (quarantine_tag(digest),), **{c: () for c in children}}

    back = release(ar, ledger, image=image, reason="false positive", now=T0)

    assert back.restored_tags == ("v1",)
    assert ar.resolve(repo, "v1") == digest
    assert {r.digest for r in ar.list_images(repo)} == {digest, *children}
    assert ar.list_images(held) == []


def test_retag_removes_the_tags_through_acr_and_release_puts_them_back(
    acr: FakeAcr, ar: AcrRegistry, ledger: SqliteLedger, repo: str, tmp_path: Path
) -> None:
    digest = skopeo_push(acr, tmp_path, make_image(seed=75), f"{repo}:1.0")
    with puller(acr) as client:
        found = client.get_manifest(repo, digest)
        client.put_manifest(repo, "latest", found.raw, found.media_type)
    image = ImageRef(registry=ar.host, repository=repo, tag=None, digest=digest)

    out = quarantine(
        ar,
        ledger,
        image=image,
        tags=(),
        strategy="retag",
        repository_template="",
        reason="unsigned",
        now=T0,
    )

    qtag = quarantine_tag(digest)
    assert out.removed_tags == ("1.0", "latest")  # read from ACR: the ledger never saw them
    assert ar.tags_of(repo, digest) == (qtag,)
    assert ar.resolve(repo, "latest") is None
    assert ar.resolve(repo, digest) == digest
    deletes = [p for m, p in acr.acr_requests if m == "DELETE" and "/_tags/" in p]
    assert len(deletes) == 2

    back = release(ar, ledger, image=image, reason="signed now", now=T0)

    assert back.restored_tags == ("1.0", "latest")
    assert ar.tags_of(repo, digest) == ("1.0", "latest")
    assert ar.resolve(repo, "latest") == digest
