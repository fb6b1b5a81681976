"""Retention on a registry with the OCI 1.1 referrers API: referrers pushed by digest, with
no tag and no tag-schema index, follow their subject (deleted with it, kept with it, or
deleted as orphans), and a registry without the API pays at most one request more.

Distribution 2.8 has no referrers API, so the loopback proxy emulates one (the stand-in for
Harbor/zot): it answers `/referrers/` from the tag-schema index that `publish` and
`push_referrer` keep in the real registry, and hides those `sha256-<hex>` tags from the
tag listing. Everything else is the real registry: real pushes, real signatures, real
deletions, checked again on the registry itself with the proxy out of the way.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.proxy import RegistryProxy

from regwarden.devtools import Content, LocalRegistry, make_image, push_image
from regwarden.oci import (
    EMPTY_JSON,
    EMPTY_JSON_DIGEST,
    OCI_EMPTY,
    OCI_MANIFEST,
    RegistryClient,
    compute_digest,
    referrers_tag,
)
from regwarden.policy import load_policy_text
from regwarden.providers import ProviderOptions
from regwarden.providers.oci import OciRegistry
from regwarden.retention import (
    Decision,
    RunPlan,
    apply,
    collect_records,
    plan_run,
    records_from_listing,
)
from regwarden.signatures import publish, sign_bundle
from regwarden.signatures.keys import PrivateKey, generate_private_key
from regwarden.store import SqliteLedger

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)
DAY = timedelta(days=1)
SBOM_TYPE = "application/spdx+json"
SIG_ON_SBOM_TYPE = "application/vnd.example.signature+json"

POLICY = """\
apiVersion: regwarden/v1
kind: Policy
defaults:
  team: platform
  retention:
    keep:
      - mostRecent: 1
    delete:
      - olderThan: 30d
      - orphans: {}
    guard: {maxDeletes: 100, maxShare: 1}
"""


@dataclass(frozen=True)
class Signed:
    """An image and what refers to it: a cosign bundle signature, an SBOM, and a
    signature on the SBOM (a referrer of a referrer)."""

    image: str
    signature: str
    sbom: str
    sbom_signature: str

    @property
    def referrers(self) -> set[str]:
        return {self.signature, self.sbom, self.sbom_signature}

    @property
    def all(self) -> set[str]:
        return {self.image, *self.referrers}


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return generate_private_key("ecdsa-p256")


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    store = SqliteLedger(tmp_path / "ledger.db")
    yield store
    store.close()


@pytest.fixture
def api_proxy(registry: LocalRegistry) -> Iterator[RegistryProxy]:
    """The proxy as a registry with the referrers API and no tag schema."""
    with RegistryProxy(registry.host, emulate_referrers=True) as p:
        yield p


def _artifact(subject: str, size: int, artifact_type: str, payload: bytes) -> bytes:
    """An OCI 1.1 artifact manifest referring to `subject` (an SBOM, a signature on one)."""
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": OCI_EMPTY, "digest": EMPTY_JSON_DIGEST, "size": 2},
            "layers": [
                {
                    "mediaType": "application/json",
                    "digest": compute_digest(payload),
                    "size": len(payload),
                }
            ],
            "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": size},
            "annotations": {"org.opencontainers.image.created": NOW.isoformat()},
        }
    ).encode()


def _refer(client: RegistryClient, repo: str, subject: str, size: int, kind: str) -> str:
    payload = json.dumps({"about": subject, "kind": kind}).encode()
    client.push_blob(repo, EMPTY_JSON)
    client.push_blob(repo, payload)
    return client.push_referrer(repo, _artifact(subject, size, kind, payload), OCI_MANIFEST)


def push_signed(
    client: RegistryClient,
    ledger: SqliteLedger,
    host: str,
    repo: str,
    tag: str,
    *,
    age_days: int,
    key: PrivateKey,
    seed: int,
) -> Signed:
    """Push an image `age_days` old (by the ledger, as the receiver records pushes) with a
    bundle signature, an SBOM and a signature on the SBOM, all pushed as referrers."""
    image: Content = make_image(layers=1, layer_size=128, seed=seed, annotations={"t": tag})
    digest = push_image(client, repo, image, tag=tag)
    ledger.record_push(host, repo, digest, (tag,), now=NOW - age_days * DAY)
    subject = {"mediaType": image.media_type, "digest": digest, "size": len(image.manifest)}
    signature = publish(client, repo, sign_bundle(subject=subject, key=key, created=NOW))
    sbom = _refer(client, repo, digest, len(image.manifest), SBOM_TYPE)
    sbom_size = len(client.get_manifest(repo, sbom).raw)
    sbom_signature = _refer(client, repo, sbom, sbom_size, SIG_ON_SBOM_TYPE)
    return Signed(digest, signature, sbom, sbom_signature)


def plan(host: str, ledger: SqliteLedger | None, repos: list[str], direct: str) -> RunPlan:
    policy = load_policy_text(POLICY, source="p.yaml", base_dir="/tmp")
    registry = OciRegistry(host, ProviderOptions(concurrency=4))
    try:
        return plan_run(
            registry, policy, ledger=ledger, now=NOW, repositories=repos, registry_name=direct
        )
    finally:
        registry.close()


def decisions(run: RunPlan) -> dict[str, Decision]:
    assert run.plan is not None
    return {d.digest: d for p in run.plan.plans for d in p.decisions}


def present(client: RegistryClient, repo: str, digest: str) -> bool:
    return client.head_manifest(repo, digest) is not None


def test_referrers_found_through_the_api_go_with_their_subject_and_stay_with_kept_ones(
    registry: LocalRegistry,
    client: RegistryClient,
    api_proxy: RegistryProxy,
    ledger: SqliteLedger,
    repo: str,
    key: PrivateKey,
) -> None:
    old = push_signed(client, ledger, registry.host, repo, "1.0", age_days=90, key=key, seed=1)
    new = push_signed(client, ledger, registry.host, repo, "2.0", age_days=1, key=key, seed=2)
    # the emulated registry shows no referrer by tag: only the API can find them
    with RegistryClient(api_proxy.host) as seen:
        assert sorted(seen.list_tags(repo)) == ["1.0", "2.0"]

    run = plan(api_proxy.host, ledger, [repo], registry.host)
    by_digest = decisions(run)
    assert set(by_digest) == old.all | new.all  # no tag-schema index: the API's view
    assert (by_digest[old.image].action, by_digest[old.image].rule) == ("delete", "olderThan")
    for digest, subject in (
        (old.signature, old.image),
        (old.sbom, old.image),
        (old.sbom_signature, old.sbom),
    ):
        d = by_digest[digest]
        assert (d.action, d.rule, d.role) == ("delete", "referrerOfDeleted", "referrer")
        assert d.reason == f"deleted: referrer of deleted {subject}"
    # the referrers of the kept image are kept, and say why
    assert by_digest[new.image].rule == "mostRecent"
    for digest, subject in (
        (new.signature, new.image),
        (new.sbom, new.image),
        (new.sbom_signature, new.sbom),
    ):
        d = by_digest[digest]
        assert (d.action, d.rule) == ("keep", "referrerOfKept")
        assert d.reason == f"kept: referrer of kept {subject}"
    assert run.plan is not None
    notes = run.plan.plans[0].warnings
    assert any(
        "referrers of 6 manifests through the referrers API" in w and ": 6 found" in w
        for w in notes
    ), notes

    # the same repository planned as distribution 2.8 shows it (the tag schema) deletes the
    # same manifests, plus the tag-schema indexes that only exist there
    with RegistryProxy(registry.host) as plain:
        tag_schema = decisions(plan(plain.host, ledger, [repo], registry.host))
    heads = [client.head_manifest(repo, referrers_tag(d)) for d in (old.image, old.sbom)]
    indexes = {h.digest for h in heads if h is not None}
    assert len(indexes) == 2
    deleted = {d for d, x in by_digest.items() if x.action == "delete"}
    assert {d for d, x in tag_schema.items() if x.action == "delete"} - indexes == deleted

    api_proxy.clear()
    reg = OciRegistry(api_proxy.host, ProviderOptions(concurrency=4))
    try:
        result = apply(run, reg, ledger, concurrency=4)
    finally:
        reg.close()
    assert result.status == "done", result.to_dict()
    assert result.deleted == len(deleted) == 4
    # referrers before their subject: each DELETE came after those of what points at it
    order = [r.path.rsplit("/", 1)[1] for r in api_proxy.matching(method="DELETE", status=202)]
    assert set(order) == deleted
    assert order.index(old.sbom_signature) < order.index(old.sbom) < order.index(old.image)
    assert order.index(old.signature) < order.index(old.image)
    # checked on the registry itself, without the proxy
    for digest in old.all:
        assert not present(client, repo, digest), digest
    for digest in new.all:
        assert present(client, repo, digest), digest
    assert plan(api_proxy.host, ledger, [repo], registry.host).deletions == 0


def test_an_orphaned_referrer_is_deleted_by_the_orphans_rule(
    registry: LocalRegistry,
    client: RegistryClient,
    api_proxy: RegistryProxy,
    ledger: SqliteLedger,
    repo: str,
    key: PrivateKey,
) -> None:
    kept = push_signed(client, ledger, registry.host, repo, "2.0", age_days=1, key=key, seed=3)
    gone = push_signed(client, ledger, registry.host, repo, "1.0", age_days=2, key=key, seed=4)
    # an image whose tag moved on: it still exists, untagged and unlisted, signed
    moved = push_signed(client, ledger, registry.host, repo, "dev", age_days=3, key=key, seed=5)
    retag = client.get_manifest(repo, kept.image)
    client.put_manifest(repo, "dev", retag.raw, retag.media_type)
    client.delete_manifest(repo, gone.image)  # by hand, leaving its referrers behind

    # without a ledger there is no digest to ask about: the orphans stay invisible
    blind = decisions(plan(api_proxy.host, None, [repo], registry.host))
    assert not gone.referrers & set(blind)

    run = plan(api_proxy.host, ledger, [repo], registry.host)
    by_digest = decisions(run)
    for digest in (gone.signature, gone.sbom):
        d = by_digest[digest]
        assert (d.action, d.rule, d.role) == ("delete", "orphans", "orphan")
        assert f"subject {gone.image} is not in the repository" in d.reason
    d = by_digest[gone.sbom_signature]  # its subject, the orphaned SBOM, goes with it
    assert (d.action, d.rule) == ("delete", "referrerOfDeleted")
    # the image whose tag moved on is known from the ledger (distribution lists tags only),
    # so it is planned, untagged, and its referrers follow it: not orphans, kept with it
    assert by_digest[moved.image].action == "keep" and by_digest[moved.image].tags == ()
    for digest in moved.referrers:
        assert (by_digest[digest].action, by_digest[digest].role) == ("keep", "referrer")
    assert all(by_digest[d].action == "keep" for d in kept.all)
    assert run.plan is not None
    assert any("2 orphaned referrers" in w for w in run.plan.plans[0].warnings)

    reg = OciRegistry(api_proxy.host, ProviderOptions(concurrency=4))
    try:
        result = apply(run, reg, ledger, concurrency=4)
    finally:
        reg.close()
    assert result.status == "done" and result.deleted == 3, result.to_dict()
    for digest in gone.referrers:
        assert not present(client, repo, digest)
    for digest in kept.all | moved.all:
        assert present(client, repo, digest)


def test_without_the_api_collection_costs_one_request_more_and_sees_the_same(
    registry: LocalRegistry,
    client: RegistryClient,
    proxy: RegistryProxy,
    ledger: SqliteLedger,
    repo: str,
    key: PrivateKey,
) -> None:
    repos = [f"{repo}/a", f"{repo}/b"]
    for i, name in enumerate(repos):
        push_signed(client, ledger, registry.host, name, "1.0", age_days=90, key=key, seed=10 + i)
        push_signed(client, ledger, registry.host, name, "2.0", age_days=1, key=key, seed=20 + i)

    # the floor: the listing alone (what collection did before)
    base = OciRegistry(proxy.host, ProviderOptions(concurrency=4))
    proxy.clear()
    try:
        listings = {name: base.list_images(name) for name in repos}
    finally:
        base.close()
    floor = proxy.count()

    reg = OciRegistry(proxy.host, ProviderOptions(concurrency=4))
    proxy.clear()
    try:
        collected = [
            collect_records(reg, name, ledger=ledger, registry_name=registry.host) for name in repos
        ]
    finally:
        reg.close()
    assert proxy.count(path=r"/referrers/") == 1  # the probe, once per client
    assert proxy.count(path=r"/referrers/", status=404) == 1
    assert proxy.count() - floor <= len(repos)
    assert proxy.count() == floor + 1

    for name, got in zip(repos, collected, strict=True):
        expected, notes = records_from_listing(
            listings[name], times=ledger.image_times(registry.host, name)
        )
        assert sorted(got.records) == sorted(expected)
        assert list(got.warnings) == notes
        assert not any("referrers API" in w for w in got.warnings)
        # the tag schema still makes every referrer follow its subject
        assert sum(1 for r in got.records if r.subject is not None) == 2 * (3 + 2)
