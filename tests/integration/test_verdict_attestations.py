"""regwarden attests its verdicts (issue #18) on the real local registry.

Through `regwarden serve` fed by distribution's notifications: a signed clean image gets
a PASSED verdict attestation that an independent check confirms (cosign-format
verification with the public key through the verifier's public API, and the statement's
subject digest); an unsigned one a FAILED one; a late signature replaces FAILED by PASSED;
the verdicts per digest stay bounded (no loop). On the pipeline: a PASSED superseded by
FAILED is removed first, as a recorded intent step that survives a crash; regwarden's own
pushes, delivered without a User-Agent (as ECR and GAR deliver them), judge nothing — by
the ledger's record and, with a ledger that never saw them, by their predicate type."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.cli import run_cli
from support.gate import TOKEN, generate_keys
from support.streams import Serve

from regwarden.attest import VERDICT_PREDICATE, attestation_key
from regwarden.attest import _push as attest_push
from regwarden.devtools import LocalRegistry, free_port, make_image, push_image
from regwarden.errors import NotFound, RegistryError
from regwarden.model import EventKind, ImageEvent, Outcome
from regwarden.oci import Descriptor, RegistryClient, referrers_tag
from regwarden.pipeline import Pipeline
from regwarden.reference import ImageRef
from regwarden.runtime import Runtime, load_runtime
from regwarden.signatures import (
    CosignPolicy,
    discover,
    load_public_key,
    publish,
    sign_legacy,
    signature_tag,
    verify_attestations,
)
from regwarden.signatures.keys import load_private_key
from regwarden.store import SqliteLedger

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
LATER = T0 + timedelta(minutes=5)  # past the grace period: an unsigned image is FAILED
CI = "ci-pipeline/1.0"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"

POLICY = """\
apiVersion: regwarden/v1
kind: Policy
repositories:
  - match: "{match}"
    team: t
    signatures: {{required: true, cosign: {{keys: ["file://keys/cosign.pub"]}}, gracePeriod: 1m}}
    attest: {{verdicts: [{verdicts}], key: "file://keys/cosign.key", format: {fmt}}}
"""


def verified(client: RegistryClient, repo: str, digest: str, pub: Path) -> list[dict[str, Any]]:
    """Every verdict attestation on `repo@digest` that verifies with `pub`, checked as an
    outsider would: cosign's formats, our verifier's public API, the subject's digest.
    (A quarantined image has moved away: its attestations stay where it was pushed.)"""
    subject = Descriptor(media_type=OCI_MANIFEST, digest=digest, size=0)
    found = discover(client, repo, digest, subject=lambda: subject)
    policy = CosignPolicy(
        keys=(load_public_key(pub.read_bytes()),), predicate_types=frozenset({VERDICT_PREDICATE})
    )
    out = []
    for r in verify_attestations(found.cosign, image_digest=digest, policy=policy):
        if not r.result.verified:
            continue
        assert r.statement is not None
        algo, _, hexpart = digest.partition(":")
        assert [s["digest"] for s in r.statement["subject"]] == [{algo: hexpart}]
        out.append({"format": r.result.format, **r.statement["predicate"]})
    return out


def sign(client: RegistryClient, host: str, repo: str, digest: str, priv: Path) -> str:
    key = load_private_key(priv.read_bytes(), "pw")
    art = sign_legacy(image_digest=digest, docker_reference=f"{host}/{repo}", key=key)
    return publish(client, repo, art)


# -- the scenario through `regwarden serve` ----------------------------------------------------


def test_serve_attests_passed_failed_and_replaces_failed_after_a_late_signature(
    tmp_path: Path,
) -> None:
    priv, pub = generate_keys(tmp_path)
    (tmp_path / "regwarden.yaml").write_text(
        POLICY.format(match="att/**", verdicts="PASSED, FAILED", fmt="both").replace(
            "gracePeriod: 1m", "gracePeriod: 2s"
        )
    )
    port = free_port()
    with LocalRegistry(
        notifications=f"http://127.0.0.1:{port}/events/distribution",
        notification_headers={"Authorization": f"Bearer {TOKEN}"},
        notification_timeout="2s",
        notification_backoff="200ms",
    ) as reg:
        serve = Serve.start(tmp_path, tmp_path / "regwarden.yaml", port, registries=[reg.host])
        ledger = SqliteLedger(serve.ledger_path)
        try:
            repo = "att/app"
            with RegistryClient(reg.host, user_agent=CI) as client:

                def outcome(digest: str) -> str | None:
                    return ledger.last_verdict(reg.host, repo, digest)

                def attested(digest: str) -> list[str]:
                    return sorted(
                        f"{a['format']}:{a['verdict']}" for a in verified(client, repo, digest, pub)
                    )

                # a signed clean image: PASSED, attested in both formats
                signed = push_image(client, repo, make_image(seed=1801), tag="1.0.0")
                sign(client, reg.host, repo, signed, priv)
                wait(
                    lambda: attested(signed) == ["cosign-bundle:PASSED", "cosign-legacy:PASSED"],
                    serve,
                )
                assert outcome(signed) == "PASSED"
                statement = verified(client, repo, signed, pub)[0]
                assert statement["image"] == {
                    "registry": reg.host,
                    "repository": repo,
                    "digest": signed,
                }
                assert {c["name"]: c["outcome"] for c in statement["checks"]}["signatures"] == (
                    "pass"
                )
                assert statement["evidence"]["signatures"][0]["format"] == "cosign-legacy"
                assert statement["policy"]["name"] == "regwarden.yaml"
                assert statement["policy"]["digest"].startswith("sha256:")
                env = {"COSIGN_PASSWORD": "pw", "PATH": "/usr/bin:/bin"}

                def verify_verdict(digest: str) -> int:
                    done = run_cli(
                        "verify", f"{reg.host}/{repo}@{digest}", "--verdict", "--key", str(pub),
                        "--max-age", "7d", env=env,
                    )  # fmt: skip
                    return done.returncode

                assert verify_verdict(signed) == 0

                # an unsigned image: FAILED once its grace period ran out (a recheck), then
                # quarantined (moved away): its FAILED attestation stays where it was pushed
                unsigned = push_image(client, repo, make_image(seed=1802), tag="2.0.0")
                wait(
                    lambda: attested(unsigned) == ["cosign-bundle:FAILED", "cosign-legacy:FAILED"],
                    serve,
                )
                wait(lambda: outcome(unsigned) == "FAILED", serve)
                image = ImageRef.parse(f"{reg.host}/{repo}@{unsigned}")
                record = ledger.action(attestation_key(image))
                assert record is not None and record.status == "done"
                failed_att = {e["format"]: e["digest"] for e in record.state["pushed"]}

                # a person releases it and signs it late: judged again, PASSED replaces FAILED
                ledger_arg = ("--ledger", str(serve.ledger_path))
                released = run_cli(
                    *ledger_arg, "quarantine", "release", str(image), "--reason", "ok", env=env
                )
                assert released.returncode == 0, released.stderr
                assert verify_verdict(unsigned) == 1  # back in place, its verdict FAILED
                late = run_cli("sign", str(image), "--key", str(priv), env=env)
                assert late.returncode == 0, late.stderr
                wait(
                    lambda: attested(unsigned) == ["cosign-bundle:PASSED", "cosign-legacy:PASSED"],
                    serve,
                )
                assert outcome(unsigned) == "PASSED"
                assert verify_verdict(unsigned) == 0
                for old in (failed_att["legacy"], failed_att["bundle"]):  # gone by digest too
                    with pytest.raises(NotFound):
                        client.get_manifest(repo, old)
                index = client.get_manifest(repo, referrers_tag(unsigned)).manifests
                assert failed_att["bundle"] not in {d.digest for d in index}

                # no loop: the attestation pushes judged nothing. Distribution notifies in
                # order, so once a later push is judged every notification before it was
                # handled: the verdicts are those of the events people caused — push,
                # recheck at the grace period, signature (and release) — and no more
                counts = {d: len(ledger.verdict_log(reg.host, repo, d)) for d in (signed, unsigned)}
                sentinel = push_image(client, repo, make_image(seed=1803), tag="3.0.0")
                wait(lambda: outcome(sentinel) is not None and serve_idle(serve), serve)
                after = {d: len(ledger.verdict_log(reg.host, repo, d)) for d in (signed, unsigned)}
                assert after == counts, (counts, after)
                assert all(1 <= n <= 4 for n in after.values()), {
                    d: ledger.verdict_log(reg.host, repo, d) for d in after
                }
        finally:
            ledger.close()
            serve.stop()


def serve_idle(serve: Serve) -> bool:
    """Nothing due in serve's queue (read through the same ledger file)."""
    ledger = SqliteLedger(serve.ledger_path)
    try:
        return ledger.pending_count() == 0
    finally:
        ledger.close()


def wait(cond: Any, serve: Serve, timeout: float = 90.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out\n--- serve log ---\n{serve.log.read_text()[-6000:]}")


# -- the pipeline on the session registry ---------------------------------------------------


@pytest.fixture
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    monkeypatch.setenv("COSIGN_PASSWORD", "pw")
    return generate_keys(tmp_path)


def runtime(tmp_path: Path, repo: str, *, verdicts: str, fmt: str, name: str = "ledger") -> Runtime:
    (tmp_path / "regwarden.yaml").write_text(POLICY.format(match=repo, verdicts=verdicts, fmt=fmt))
    return load_runtime(tmp_path / "regwarden.yaml", ledger=tmp_path / f"{name}.db")


@pytest.fixture
def gated(tmp_path: Path, repo: str, keys: tuple[Path, Path]) -> Iterator[Runtime]:
    rt = runtime(tmp_path, repo, verdicts="PASSED, FAILED", fmt="both")
    try:
        yield rt
    finally:
        rt.close()


def event(host: str, repo: str, digest: str, n: int, **kw: Any) -> ImageEvent:
    base: dict[str, Any] = {
        "kind": EventKind.PUSHED,
        "source": "distribution",
        "image": ImageRef(registry=host, repository=repo, tag="1.0.0", digest=digest),
        "time": T0,
        "delivery_id": f"d{n}-{digest}",
        "user_agent": CI,
    }
    return ImageEvent(**{**base, **kw})


def test_a_passed_superseded_by_failed_is_removed_first_even_across_a_crash(
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    gated: Runtime,
    keys: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    priv, pub = keys
    host = registry.host
    digest = push_image(client, repo, make_image(seed=1803), tag="1.0.0")
    sig = sign(client, host, repo, digest, priv)
    gate: Pipeline = gated.pipeline()
    handled = gate.handle(event(host, repo, digest, 1), now=LATER)
    assert handled.verdict is not None and handled.verdict.outcome is Outcome.PASSED
    assert sorted(a["format"] for a in verified(client, repo, digest, pub)) == [
        "cosign-bundle",
        "cosign-legacy",
    ]
    # someone else's attestation shares the `.att` tag: it must outlive ours
    image = ImageRef(registry=host, repository=repo, digest=digest)
    theirs = _their_attestation(client, repo, digest, priv)

    # the signature goes; the pushes of the FAILED verdict's attestation fail (a crash
    # after the removal step): PASSED must be gone already, and the intent says where
    client.delete_manifest(repo, sig)
    real_publish = attest_push.publish

    def broken(client: RegistryClient, repo: str, artifact: Any) -> str:
        if VERDICT_PREDICATE.encode() in artifact.manifest:  # the new attestation's push
            raise RegistryError("registry went away")
        return real_publish(client, repo, artifact)

    monkeypatch.setattr(attest_push, "publish", broken)
    with pytest.raises(RegistryError, match="registry went away"):
        gate.handle(event(host, repo, digest, 2), now=LATER, final_attempt=False)
    assert verified(client, repo, digest, pub) == []  # no PASSED left, in any format
    record = gate.ledger.action(attestation_key(image))
    assert record is not None and record.status == "intent"
    assert record.state["step"] == "push" and record.state["pushed"] == []
    att = client.get_manifest(repo, signature_tag(digest, "att"))
    assert [layer["digest"] for layer in att.data["layers"]] == [theirs]

    # the retry finishes the intent: FAILED attested, theirs kept beside it
    monkeypatch.setattr(attest_push, "publish", real_publish)
    again = gate.handle(event(host, repo, digest, 2), now=LATER)
    assert again.verdict is not None and again.verdict.outcome is Outcome.FAILED
    record = gate.ledger.action(attestation_key(image))
    assert record is not None and record.status == "done" and record.state["verdict"] == "FAILED"
    assert sorted(f"{a['format']}:{a['verdict']}" for a in verified(client, repo, digest, pub)) == [
        "cosign-bundle:FAILED",
        "cosign-legacy:FAILED",
    ]
    att = client.get_manifest(repo, signature_tag(digest, "att"))
    assert theirs in [layer["digest"] for layer in att.data["layers"]]


def test_where_only_passed_is_attested_a_failed_verdict_retires_it(
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    tmp_path: Path,
    keys: tuple[Path, Path],
) -> None:
    priv, pub = keys
    host = registry.host
    digest = push_image(client, repo, make_image(seed=1806), tag="1.0.0")
    sig = sign(client, host, repo, digest, priv)
    rt = runtime(tmp_path, repo, verdicts="PASSED", fmt="both")
    try:
        gate = rt.pipeline()
        first = gate.handle(event(host, repo, digest, 1), now=LATER)
        assert first.verdict is not None and first.verdict.outcome is Outcome.PASSED
        assert len(verified(client, repo, digest, pub)) == 2
        client.delete_manifest(repo, sig)
        again = gate.handle(event(host, repo, digest, 2), now=LATER)
        assert again.verdict is not None and again.verdict.outcome is Outcome.FAILED
        assert "superseded PASSED verdict attestation removed" in again.notes
        assert verified(client, repo, digest, pub) == []
        with pytest.raises(NotFound):  # the `.att` held only ours: it is gone
            client.get_manifest(repo, signature_tag(digest, "att"))
        assert client.get_manifest(repo, referrers_tag(digest)).manifests == []
        image = ImageRef(registry=host, repository=repo, digest=digest)
        record = gate.ledger.action(attestation_key(image))
        assert record is not None and record.status == "done"
        assert record.state["verdict"] is None and record.state["pushed"] == []
    finally:
        rt.close()


def _their_attestation(client: RegistryClient, repo: str, digest: str, priv: Path) -> str:
    """Append a SLSA attestation to the `.att` tag, as `cosign attest` does; its layer."""
    from regwarden.signatures import attest_legacy, existing_attachment

    tag = signature_tag(digest, "att")
    art = attest_legacy(
        image_digest=digest,
        repository=repo,
        key=load_private_key(priv.read_bytes(), "pw"),
        predicate_type="slsaprovenance1",
        predicate={"buildDefinition": {}},
        existing_manifest=existing_attachment(client, repo, tag),
    )
    publish(client, repo, art)
    layers = json.loads(art.manifest)["layers"]
    return str(layers[-1]["digest"])


def test_own_pushes_without_a_user_agent_judge_nothing(
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    tmp_path: Path,
    keys: tuple[Path, Path],
) -> None:
    priv, _pub = keys
    host = registry.host
    digest = push_image(client, repo, make_image(seed=1804), tag="1.0.0")
    sign(client, host, repo, digest, priv)
    rt = runtime(tmp_path, repo, verdicts="PASSED", fmt="both")
    fresh = runtime(tmp_path, repo, verdicts="PASSED", fmt="both", name="other")
    try:
        gate = rt.pipeline()
        first = gate.handle(event(host, repo, digest, 1), now=LATER)
        assert first.verdict is not None and first.verdict.outcome is Outcome.PASSED
        image = ImageRef(registry=host, repository=repo, digest=digest)
        record = gate.ledger.action(attestation_key(image))
        assert record is not None
        pushed = {e["format"]: e["digest"] for e in record.state["pushed"]}
        assert set(pushed) == {"legacy", "bundle", "referrers-index"}
        # as ECR or GAR would deliver them: no User-Agent, the manifest's digest
        att = event(
            host,
            repo,
            digest,
            10,
            kind=EventKind.SIGNED,
            image=ImageRef(registry=host, repository=repo, digest=digest),
            subject_digest=digest,
            manifest_digest=pushed["legacy"],
            user_agent=None,
        )
        index = att.model_copy(
            update={"delivery_id": "d11", "manifest_digest": pushed["referrers-index"]}
        )
        bundle = event(
            host,
            repo,
            pushed["bundle"],
            12,
            image=ImageRef(registry=host, repository=repo, digest=pushed["bundle"]),
            user_agent=None,
        )
        before = len(gate.ledger.verdict_log(host, repo, digest))
        for e in (att, index, bundle):
            handled = gate.handle(e, now=LATER)
            assert handled.verdict is None and handled.ignored, handled
            assert "verdict attestation" in handled.ignored
        assert len(gate.ledger.verdict_log(host, repo, digest)) == before
        # a ledger that never saw them: the predicate type tells the attestation manifests
        other = fresh.pipeline()
        for e in (att, bundle):
            handled = other.handle(e, now=LATER)
            assert handled.verdict is None and handled.ignored, handled
            assert VERDICT_PREDICATE in handled.ignored
        assert other.ledger.verdict_log(host, repo, digest) == []
        # while a person's signature still re-evaluates the image
        sig = sign(client, host, repo, digest, priv)
        theirs = att.model_copy(update={"delivery_id": "d13", "manifest_digest": sig})
        judged = gate.handle(theirs, now=LATER)
        assert judged.verdict is not None and judged.verdict.outcome is Outcome.PASSED
    finally:
        rt.close()
        fresh.close()


def test_the_statement_is_legacy_cosign_att_by_default(
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    tmp_path: Path,
    keys: tuple[Path, Path],
) -> None:
    priv, pub = keys
    host = registry.host
    digest = push_image(client, repo, make_image(seed=1805), tag="1.0.0")
    sign(client, host, repo, digest, priv)
    rt = runtime(tmp_path, repo, verdicts="PASSED", fmt="legacy")
    try:
        handled = rt.pipeline().handle(event(host, repo, digest, 1), now=LATER)
        assert handled.verdict is not None and handled.verdict.outcome is Outcome.PASSED
        assert any("verdict attestation PASSED (legacy)" in n for n in handled.notes)
    finally:
        rt.close()
    att = client.get_manifest(repo, signature_tag(digest, "att"))
    (layer,) = att.data["layers"]
    assert layer["annotations"]["predicateType"] == VERDICT_PREDICATE
    envelope = json.loads(client.get_blob(repo, layer["digest"]))
    statement = json.loads(base64.b64decode(envelope["payload"]))
    assert statement["_type"] == "https://in-toto.io/Statement/v0.1"  # as cosign's .att
    assert statement["subject"] == [
        {"name": f"{host}/{repo}", "digest": {"sha256": digest.removeprefix("sha256:")}}
    ]
    assert statement["predicate"]["verdict"] == "PASSED"
    with pytest.raises(NotFound):  # no bundle referrer in legacy format
        client.get_manifest(repo, referrers_tag(digest))
    assert [a["format"] for a in verified(client, repo, digest, pub)] == ["cosign-legacy"]


def test_a_removal_that_ran_out_of_retries_is_finished_by_the_recovery_sweep(
    registry: LocalRegistry,
    client: RegistryClient,
    repo: str,
    gated: Runtime,
    keys: tuple[Path, Path],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    priv, pub = keys
    host = registry.host
    digest = push_image(client, repo, make_image(seed=1807), tag="1.0.0")
    sig = sign(client, host, repo, digest, priv)
    gate = gated.pipeline()
    first = gate.handle(event(host, repo, digest, 1), now=LATER)
    assert first.verdict is not None and first.verdict.outcome is Outcome.PASSED
    client.delete_manifest(repo, sig)
    # the attestation's deletes refused on the last attempt (the quarantine's go through)
    image = ImageRef(registry=host, repository=repo, digest=digest)
    standing = gate.ledger.action(attestation_key(image))
    assert standing is not None
    ours = {e["digest"] for e in standing.state["pushed"]}
    real_delete = RegistryClient.delete_manifest

    def refused(self: RegistryClient, repo: str, digest: str) -> None:
        if digest in ours:
            raise RegistryError("delete refused for now")
        real_delete(self, repo, digest)

    monkeypatch.setattr(RegistryClient, "delete_manifest", refused)
    failed = gate.handle(event(host, repo, digest, 2), now=LATER, final_attempt=True)
    assert failed.verdict is not None and failed.verdict.outcome is Outcome.FAILED
    assert any("verdict attestation failed" in n for n in failed.notes), failed.notes
    record = gate.ledger.action(attestation_key(image))
    assert record is not None and record.status == "intent" and record.state["step"] == "remove"

    assert verified(client, repo, digest, pub) != []  # what the sweep is for
    monkeypatch.setattr(RegistryClient, "delete_manifest", real_delete)
    gate.resume_unfinished(now=LATER + timedelta(minutes=1))
    assert verified(client, repo, digest, pub) == []
    record = gate.ledger.action(attestation_key(image))
    assert record is not None and record.status == "done" and record.state["pushed"] == []
