"""The push gate driven the way registries drive it (issue #10, "Done when").

One `regwarden serve` process (4 workers) receives:
- distribution notifications from a real `docker-registry` 2.8 (`/events/distribution`),
  reached through a proxy that can fail regwarden's own requests;
- Harbor-shaped webhooks (`/events/harbor`) describing the pushes made to a second real
  registry (see `support.streams.HarborRelay`): that registry's notifications never reach
  the distribution endpoint.

Images are built as OCI layouts and pushed with `skopeo copy --all`; signatures and
attestations come from the real CLI (`regwarden sign|attest`, legacy and bundle);
releases and checks from the CLI against the same ledger. Every outcome is checked in the
registry (HEAD/GET by digest) as well as in the ledger.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.gate import TOKEN, generate_keys
from support.loopback import LoopbackServer
from support.streams import (
    FAULT_GRACE,
    SCAN_TIMEOUT,
    SETTLE,
    SIGNED_GRACE,
    AgentFaultProxy,
    HarborRelay,
    Ledger,
    Serve,
    alerts,
    start_sink,
    streams_policy,
    utcnow,
    wait_for,
)

from regwarden.devtools import (
    LocalRegistry,
    Vuln,
    build_image,
    build_index,
    free_port,
    make_image,
    push_layout,
    skopeo_copy,
    trivy_report,
    vuln_predicate,
    write_layout,
)
from regwarden.oci import RegistryClient

pytestmark = pytest.mark.e2e

NOTATION = Path(__file__).resolve().parents[2] / ".." / "shared" / "fixtures" / "notation"
NOTATION_E2E = NOTATION / "cli-e2e"
CI_AGENT = "ci-pipeline/1.0"  # what pushes and looks: never taken for regwarden
PATHS = ["distribution", "harbor"]
SLACK = timedelta(seconds=1)  # Harbor's occur_at has whole seconds
LOW = [Vuln("CVE-2099-0001", "LOW", "zlib", "1.3", "1.3.1")]


@dataclass
class Stream:
    """One way events reach the gate: which registry is pushed to, and its repo prefix."""

    name: str
    host: str
    prefix: str


@dataclass
class Env:
    root: Path
    serve: Serve
    ledger: Ledger
    proxy: AgentFaultProxy
    registry: LocalRegistry
    harbor: LocalRegistry
    relay: HarborRelay
    sink: LoopbackServer
    key: Path

    @property
    def policy(self) -> Path:
        return self.root / "regwarden.yaml"

    def stream(self, name: str) -> Stream:
        if name == "distribution":
            return Stream(name, self.proxy.host, "gs")
        return Stream(name, self.harbor.host, "hb")

    def alerts_for(self, digest: str) -> list[dict[str, Any]]:
        """The verdict alerts about `digest` (access alerts — a pull of a PENDING or
        quarantined image by the tools the tests run — are the access monitor's)."""
        return [
            a
            for a in alerts(self.sink)
            if str(a["image"]).endswith(digest) and a.get("kind", "verdict") == "verdict"
        ]

    def wait(self, cond: Any, *, timeout: float = 30.0, what: str = "") -> Any:
        return wait_for(cond, timeout=timeout, what=what, log=self.serve.log)


def layout_notation(root: Path) -> bool:
    """The fixtures' strict trust policy and e2e.crt as a trust store, beside the policy."""
    if not NOTATION_E2E.is_dir():
        return False
    store = root / "notation" / "truststore" / "x509" / "ca" / "e2e"
    store.mkdir(parents=True)
    shutil.copy(NOTATION_E2E / "certs" / "e2e.crt", store / "e2e.crt")
    shutil.copy(
        NOTATION_E2E / "trustpolicies" / "trustpolicy.json",
        root / "notation" / "trustpolicy.json",
    )
    return True


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    root = tmp_path_factory.mktemp("streams")
    key, _pub = generate_keys(root)
    notation = layout_notation(root)
    sink = start_sink()
    (root / "regwarden.yaml").write_text(streams_policy(f"{sink.url}/hook", notation=notation))
    # serve contacts only the registries it is told of: they start first, on its port
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    relay = HarborRelay(f"{url}/events/harbor", TOKEN).start()
    try:
        with (
            LocalRegistry(
                notifications=f"{url}/events/distribution",
                notification_headers={"Authorization": f"Bearer {TOKEN}"},
                notification_timeout="2s",
                notification_backoff="200ms",
                # the ignore block the README recommends (distribution 2.8 applies `actions`
                # only together with `mediatypes`)
                ignored_media_types=["application/octet-stream"],
                ignored_actions=["delete"],
            ) as registry,
            AgentFaultProxy(registry.host, page_tags=False, emulate_tag_delete=False) as proxy,
            LocalRegistry(
                notifications=relay.url,
                notification_timeout="5s",
                notification_backoff="200ms",
            ) as harbor,
        ):
            hosts = [registry.host, proxy.host, harbor.host]
            serve = Serve.start(root, root / "regwarden.yaml", port, workers=4, registries=hosts)
            try:
                yield Env(
                    root,
                    serve,
                    Ledger(serve.ledger_path),
                    proxy,
                    registry,
                    harbor,
                    relay,
                    sink,
                    key,
                )
            finally:
                serve.stop()
    finally:
        relay.stop()
        sink.stop()


# -- helpers ----------------------------------------------------------------------------------


def client(s: Stream) -> RegistryClient:
    return RegistryClient(s.host, user_agent=CI_AGENT, backoff=0.05)


def exists(s: Stream, repo: str, digest: str) -> bool:
    with client(s) as c:
        return c.head_manifest(repo, digest) is not None


def pullable(s: Stream, repo: str, digest: str) -> bool:
    """GET by digest answers the very manifest (not only a HEAD)."""
    with client(s) as c:
        return c.get_manifest(repo, digest).digest == digest


def tag_digest(s: Stream, repo: str, tag: str) -> str | None:
    with client(s) as c:
        desc = c.head_manifest(repo, tag)
    return desc.digest if desc is not None else None


def push(s: Stream, layout: Path, repo: str, tag: str, *, by_digest: str | None = None) -> None:
    """`skopeo copy --all` the layout entry `tag` to REPO:TAG, or to REPO@DIGEST only."""
    dst = f"{s.host}/{repo}@{by_digest}" if by_digest else f"{s.host}/{repo}:{tag}"
    skopeo_copy(f"oci:{layout}:{tag}", f"docker://{dst}")


def sign(env: Env, s: Stream, repo: str, digest: str, fmt: str) -> str:
    out = env.serve.cli_json(
        "sign", f"{s.host}/{repo}@{digest}", "--key", str(env.key), "--format", fmt
    )
    return str(out["manifest"])


def attest_scan(env: Env, s: Stream, repo: str, digest: str, tmp: Path) -> str:
    t = utcnow()
    predicate = vuln_predicate(
        trivy_report(f"{s.host}/{repo}", LOW, created=t),
        started=t - timedelta(seconds=5),
        finished=t,
    )
    path = tmp / "vuln.json"
    path.write_text(json.dumps(predicate))
    out = env.serve.cli_json(
        "attest",
        f"{s.host}/{repo}@{digest}",
        "--key",
        str(env.key),
        "--type",
        "vuln",
        "--predicate",
        str(path),
        "--format",
        "bundle",
    )
    return str(out["manifest"])


def verdict(env: Env, s: Stream, repo: str, digest: str) -> str | None:
    return env.ledger.verdict(s.host, repo, digest)


def windows_passed(env: Env, repo: str, since: Any, wait: timedelta) -> None:
    """Block until the settle wait after `since` is over and every recheck of `repo` due by
    then has run (later ones, such as a scan timeout, are not waited for)."""
    horizon = since + wait + SLACK
    env.wait(
        lambda: utcnow() >= horizon and env.ledger.quiet_until(repo, horizon),
        timeout=30 + wait.total_seconds(),
        what=f"the settle window of {repo} to pass and its rechecks to run",
    )
    dead = env.ledger.dead_letters(repo)
    assert not dead, f"dead-lettered: {[(r.source, r.error) for r in dead]}"


def untouched(env: Env, s: Stream, repo: str, digest: str) -> None:
    """`digest` never judged on its own, never acted on, still where it was pushed."""
    assert verdict(env, s, repo, digest) is None, f"{digest} was judged on its own"
    assert env.ledger.quarantine_actions(s.host, repo, digest) == []
    assert pullable(s, repo, digest), f"{repo}@{digest} is gone"
    assert not exists(s, f"quarantine/{repo}", digest)
    assert env.alerts_for(digest) == []


# -- 1. signed multi-arch index ---------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_signed_multiarch_index_passes_and_every_child_stays(
    env: Env, tmp_path: Path, path: str
) -> None:
    s = env.stream(path)
    repo = f"{s.prefix}/signed-index"
    index = build_index(tmp_path / "oci", tag="1.0", seed=11 if path == "harbor" else 10)
    children = [c.digest for c in index.children]
    start = utcnow()
    push(s, tmp_path / "oci", repo, "1.0")
    env.wait(lambda: verdict(env, s, repo, index.digest) == "PENDING", what="index PENDING")
    sign(env, s, repo, index.digest, "legacy")
    signed = utcnow()
    env.wait(lambda: verdict(env, s, repo, index.digest) == "PASSED", what="index PASSED")

    # the children's settle rechecks: max(settleWindow, gracePeriod) after the last push
    # (the signature's, if it counts), never earlier than that after the first
    settle = max(SETTLE, SIGNED_GRACE)
    env.wait(
        lambda: env.ledger.rechecked(repo, after=start + settle - SLACK),
        timeout=30 + settle.total_seconds(),
        what="a settle recheck of the children",
    )
    windows_passed(env, repo, signed, settle)

    assert verdict(env, s, repo, index.digest) == "PASSED"
    assert tag_digest(s, repo, "1.0") == index.digest
    assert pullable(s, repo, index.digest)
    for child in children:
        untouched(env, s, repo, child)
    assert env.ledger.quarantine_actions(s.host, repo, index.digest) == []


# -- 2. unsigned multi-arch index -------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_unsigned_multiarch_index_is_quarantined_and_released_with_its_children(
    env: Env, tmp_path: Path, path: str
) -> None:
    s = env.stream(path)
    repo = f"{s.prefix}/unsigned-index"
    quarantine = f"quarantine/{repo}"
    index = build_index(tmp_path / "oci", tag="2.0", seed=21 if path == "harbor" else 20)
    children = [c.digest for c in index.children]
    push(s, tmp_path / "oci", repo, "2.0")
    env.wait(
        lambda: exists(s, quarantine, index.digest) and not exists(s, repo, index.digest),
        what="index moved to quarantine",
    )
    env.wait(
        lambda: all(exists(s, quarantine, c) and not exists(s, repo, c) for c in children),
        what="children moved with their index",
    )
    assert verdict(env, s, repo, index.digest) == "FAILED"
    alert = env.wait(lambda: env.alerts_for(index.digest), what="alert")[0]
    assert alert["action"] == "quarantine"
    for child in children:
        assert verdict(env, s, repo, child) is None, f"child {child} judged on its own"
        assert env.alerts_for(child) == []

    out = env.serve.cli_json(
        "quarantine",
        "release",
        f"{s.host}/{repo}@{index.digest}",
        "--reason",
        "approved by security",
    )
    assert out["restoredTags"] == ["2.0"]
    released = utcnow()
    assert tag_digest(s, repo, "2.0") == index.digest
    assert pullable(s, repo, index.digest)
    for child in children:
        assert pullable(s, repo, child), f"child {child} not restored"

    # the release's own writes (and, on Harbor, their webhooks) do not quarantine it again
    windows_passed(env, repo, released, SETTLE)
    assert pullable(s, repo, index.digest)
    assert all(pullable(s, repo, c) for c in children)
    assert tag_digest(s, repo, "2.0") == index.digest


# -- 3. bundle-signed image -------------------------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_bundle_signed_image_passes_and_its_bundle_stays(
    env: Env, tmp_path: Path, path: str
) -> None:
    s = env.stream(path)
    repo = f"{s.prefix}/signed-bundle"
    image = build_image(tmp_path / "oci", tag="3.0", seed=31 if path == "harbor" else 30)
    push(s, tmp_path / "oci", repo, "3.0")
    env.wait(lambda: verdict(env, s, repo, image.digest) == "PENDING", what="image PENDING")
    bundle = sign(env, s, repo, image.digest, "bundle")
    signed = utcnow()
    env.wait(lambda: verdict(env, s, repo, image.digest) == "PASSED", what="image PASSED")

    windows_passed(env, repo, signed, max(SETTLE, SIGNED_GRACE))
    untouched(env, s, repo, bundle)
    with client(s) as c:  # still listed for the image (tag schema on distribution 2.8)
        assert bundle in [d.digest for d in c.referrers(repo, image.digest)]
    assert verdict(env, s, repo, image.digest) == "PASSED"
    assert pullable(s, repo, image.digest)

    check = env.serve.cli(
        "check", f"{s.host}/{repo}:3.0", "--policy", str(env.policy), "--output", "json"
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert json.loads(check.stdout)["outcome"] == "PASSED"


# -- 4. attestation referrer pushed later -----------------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_attestation_pushed_later_re_evaluates_its_subject(
    env: Env, tmp_path: Path, path: str
) -> None:
    s = env.stream(path)
    repo = f"{s.prefix}/attest-later"
    image = build_image(tmp_path / "oci", tag="4.0", seed=41 if path == "harbor" else 40)
    pushed = utcnow()
    push(s, tmp_path / "oci", repo, "4.0")
    signature = sign(env, s, repo, image.digest, "legacy")
    # signed, but the scan (a signed cosign-vuln attestation) is not there yet
    env.wait(lambda: env.ledger.delivered(repo, signature), what="signature event processed")
    assert verdict(env, s, repo, image.digest) == "PENDING"

    attestation = attest_scan(env, s, repo, image.digest, tmp_path)
    attested = utcnow()
    # long before the scan timeout: only the attestation's event can pass it now
    env.wait(
        lambda: verdict(env, s, repo, image.digest) == "PASSED",
        timeout=(pushed + SCAN_TIMEOUT - utcnow()).total_seconds() - 5,
        what="subject re-evaluated to PASSED",
    )

    windows_passed(env, repo, attested, max(SETTLE, SIGNED_GRACE))
    untouched(env, s, repo, attestation)
    with client(s) as c:
        assert attestation in [d.digest for d in c.referrers(repo, image.digest)]
    assert verdict(env, s, repo, image.digest) == "PASSED"
    assert pullable(s, repo, image.digest)


# -- 5. unsigned single image (distribution: tests/e2e/test_push_gate.py) ---------------------


def test_unsigned_image_is_quarantined_through_harbor_webhooks(env: Env, tmp_path: Path) -> None:
    s = env.stream("harbor")
    repo = f"{s.prefix}/unsigned-image"
    image = build_image(tmp_path / "oci", tag="5.0", seed=51)
    push(s, tmp_path / "oci", repo, "5.0")
    env.wait(lambda: verdict(env, s, repo, image.digest) == "FAILED", what="FAILED after grace")
    env.wait(lambda: not exists(s, repo, image.digest), what="moved out of the repository")
    assert pullable(s, f"quarantine/{repo}", image.digest)
    alert = env.wait(lambda: env.alerts_for(image.digest), what="alert")[0]
    assert alert["action"] == "quarantine"
    assert any("signatures" in r for r in alert["reasons"])


# -- 6. stand-alone image pushed by digest only -----------------------------------------------


@pytest.mark.parametrize("path", PATHS)
def test_image_pushed_by_digest_only_is_judged_after_the_settle_window(
    env: Env, tmp_path: Path, path: str
) -> None:
    s = env.stream(path)
    repo = f"{s.prefix}/standalone"
    image = make_image(seed=61 if path == "harbor" else 60)
    write_layout(tmp_path / "oci", image, tag="src")
    start = utcnow()
    push(s, tmp_path / "oci", repo, "src", by_digest=image.digest)
    env.wait(lambda: env.ledger.delivered(repo, image.digest), what="push event processed")
    assert verdict(env, s, repo, image.digest) is None, "judged on arrival"
    assert pullable(s, repo, image.digest)

    env.wait(lambda: verdict(env, s, repo, image.digest) == "FAILED", what="judged after settle")
    judged = env.ledger.verdict_at(s.host, repo, image.digest)
    assert judged is not None and judged >= start + SETTLE - SLACK
    env.wait(
        lambda: exists(s, f"quarantine/{repo}", image.digest) and not exists(s, repo, image.digest),
        what="quarantined",
    )
    alert = env.wait(lambda: env.alerts_for(image.digest), what="alert")[0]
    assert alert["action"] == "quarantine"


# -- 7. registry 503 during signature discovery -----------------------------------------------


def test_registry_503_during_signature_discovery_is_an_error_retried_without_action(
    env: Env, tmp_path: Path
) -> None:
    s = env.stream("distribution")
    repo = f"{s.prefix}/fault-sigs"
    image = build_image(tmp_path / "oci", tag="7.0", seed=70)
    push(s, tmp_path / "oci", repo, "7.0")
    env.wait(lambda: verdict(env, s, repo, image.digest) == "PENDING", what="image PENDING")

    # regwarden's signature lookups in this repository only (.sig/.att/.sbom tags, the
    # referrers API and its tag schema) fail for a while; the signer gets through
    lookups = rf"^/v2/{repo}/(manifests/sha256-[0-9a-f]{{64}}(\.(sig|att|sbom))?$|referrers/)"
    fault = env.proxy.inject_for("regwarden/", 503, count=25, path=lookups)
    sign(env, s, repo, image.digest, "legacy")

    def errored() -> bool:
        if verdict(env, s, repo, image.digest) == "ERROR":
            return True
        log = env.serve.log.read_text(errors="replace")
        return any("ERROR" in line and image.digest in line for line in log.splitlines())

    env.wait(errored, timeout=20, what="ERROR verdict while signature lookups fail")
    assert exists(s, repo, image.digest)
    assert env.ledger.quarantine_actions(s.host, repo, image.digest) == []

    # judged again by the retry, long before the 60 s grace period could recheck it
    env.wait(
        lambda: verdict(env, s, repo, image.digest) == "PASSED",
        timeout=(FAULT_GRACE / 2).total_seconds(),
        what="PASSED once the fault cleared",
    )
    assert env.proxy.count(path=lookups, status=503) > 0
    assert fault.remaining is not None and fault.remaining < 25
    assert pullable(s, repo, image.digest)
    assert tag_digest(s, repo, "7.0") == image.digest
    assert not exists(s, f"quarantine/{repo}", image.digest)
    assert env.ledger.quarantine_actions(s.host, repo, image.digest) == []
    assert env.ledger.dead_letters(repo) == []


# -- 8. Notation signatures from the Notation fixtures ----------------------------------------


@pytest.mark.interop
@pytest.mark.skipif(not NOTATION_E2E.is_dir(), reason=f"interop fixtures absent at {NOTATION}")
@pytest.mark.parametrize(
    ("layout", "expected"), [("e2e-valid-signature", "PASSED"), ("e2e-invalid-signature", "FAILED")]
)
def test_notation_signed_image_is_judged_by_the_trust_policy(
    env: Env, layout: str, expected: str
) -> None:
    s = env.stream("distribution")
    source = NOTATION_E2E / "oci-layouts" / layout
    repo = f"{s.prefix}/notation-{layout.removeprefix('e2e-')}"
    index = json.loads((source / "index.json").read_text())
    refs = {
        m["annotations"]["org.opencontainers.image.ref.name"]: m["digest"]
        for m in index["manifests"]
        if "annotations" in m
    }
    digest = refs["v1"]
    schema_tag = digest.replace(":", "-")
    push(s, source, repo, "v1")
    env.wait(lambda: verdict(env, s, repo, digest) == "PENDING", what="image PENDING")
    # what `notation sign` writes on a registry without the referrers API: the signature
    # manifest by digest, then the tag-schema index (skopeo cannot copy that index as is)
    with client(s) as c:
        push_layout(c, source, repo, schema_tag)
        signed = utcnow()
        signatures = [d.digest for d in c.referrers(repo, digest)]
    assert len(signatures) == 1
    env.wait(lambda: verdict(env, s, repo, digest) == expected, what=f"image {expected}")
    if expected == "FAILED":
        env.wait(lambda: exists(s, f"quarantine/{repo}", digest), what="quarantined")
    else:
        assert pullable(s, repo, digest)
    windows_passed(env, repo, signed, max(SETTLE, SIGNED_GRACE))
    untouched(env, s, repo, signatures[0])


# -- 9. retention on what the notifications taught the ledger ---------------------------------


def test_retention_deletes_an_untagged_digest_known_from_events_and_never_a_fresh_1970_image(
    env: Env, tmp_path: Path
) -> None:
    """distribution 2.8 lists tags only: the digest an overwritten tag left behind is known
    from the push events alone. Both images say `created: 1970` (a reproducible build) but
    were pushed a moment ago: `olderThan: 30d` deletes neither; `untagged` deletes the old one."""
    s = env.stream("distribution")
    repo = f"{s.prefix}/retain-app"
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    old = build_image(tmp_path / "old", tag="1.0", seed=91, created=epoch)
    new = build_image(tmp_path / "new", tag="1.0", seed=92, created=epoch)
    push(s, tmp_path / "old", repo, "1.0")
    env.wait(lambda: verdict(env, s, repo, old.manifest_digest) == "PASSED", what="old PASSED")
    push(s, tmp_path / "new", repo, "1.0")  # the tag moves on: `old` is now untagged
    env.wait(lambda: verdict(env, s, repo, new.manifest_digest) == "PASSED", what="new PASSED")
    assert tag_digest(s, repo, "1.0") == new.manifest_digest
    assert exists(s, repo, old.manifest_digest)  # untagged, still pullable by digest
    seen = env.ledger.first_seen(s.host, repo, old.manifest_digest)
    assert seen is not None
    env.wait(lambda: utcnow() - seen > timedelta(seconds=1), what="untagged for over 1s")

    out = env.serve.cli_json(
        "retention",
        "apply",
        "--policy",
        str(env.policy),
        "--registry",
        s.host,
        "--repository",
        repo,
        "--yes",
    )
    assert not exists(s, repo, old.manifest_digest), out
    assert pullable(s, repo, new.manifest_digest)
    assert tag_digest(s, repo, "1.0") == new.manifest_digest
