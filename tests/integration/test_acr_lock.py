"""The `lock` quarantine on ACR: FakeAcr (ACR's control plane, the real azure-containerregistry
client over TLS) in front of a real docker-registry, images pushed with skopeo — a
two-platform index and a single image. A hold locks write and delete on the index and each
child, a FAILED verdict adds read, release puts back exactly the prior attributes (a
`write=false` someone set before stays), ACR's quarantine policy gets Passed/Failed, and a
fault between any two PATCHes (or after a PATCH, before the ledger heard of it) resumes to
the same end state."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.fake_acr import TOKEN_USER, FakeAcr

from regwarden.actions import describe_state, mark_passed, quarantine, release
from regwarden.devtools import LocalRegistry, make_image, make_multiarch, skopeo_copy, write_layout
from regwarden.errors import AuthError, RegistryError, UsageError
from regwarden.oci import Credentials, DeadlineTransport, RegistryClient
from regwarden.providers import Lockable, ProviderOptions
from regwarden.providers.acr import AcrRegistry
from regwarden.providers.oci import OciRegistry
from regwarden.reference import ImageRef
from regwarden.store import SqliteLedger

pytestmark = pytest.mark.integration

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
OPEN = {"deleteEnabled": True, "writeEnabled": True, "readEnabled": True, "listEnabled": True}
HELD = {**OPEN, "deleteEnabled": False, "writeEnabled": False}
LOCKED = {**HELD, "readEnabled": False}
VERDICT = {
    "outcome": "FAILED",
    "checks": [
        {"name": "vulnerabilities", "outcome": "fail", "reason": "CVE-1 critical"},
        {"name": "signatures", "outcome": "pass", "reason": "signed"},
    ],
}


@pytest.fixture
def acr(registry: LocalRegistry) -> Iterator[FakeAcr]:
    with FakeAcr(registry.host) as fake:
        fake.now = lambda: T0
        yield fake


@pytest.fixture
def ar(acr: FakeAcr) -> Iterator[AcrRegistry]:
    opts = ProviderOptions(credentials=acr.credential())
    registry = AcrRegistry(acr.login_server, opts, env=acr.env(), sleep=lambda _s: None)
    yield registry
    registry.close()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    with closing(SqliteLedger(tmp_path / "ledger.db")) as led:
        yield led


def puller(acr: FakeAcr) -> RegistryClient:
    """Someone pulling with `docker login` credentials: no quarantine-reader role."""
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


class Index:
    def __init__(self, repo: str, digest: str, children: tuple[str, ...]) -> None:
        self.repo = repo
        self.digest = digest
        self.children = children
        self.all = (digest, *children)


@pytest.fixture
def index(acr: FakeAcr, repo: str, tmp_path: Path) -> Index:
    content = make_multiarch(seed=61)
    digest = skopeo_push(acr, tmp_path, content, f"{repo}:v1")
    return Index(repo, digest, tuple(c.digest for c in content.children))


def ref(ar: AcrRegistry, repo: str, digest: str) -> ImageRef:
    return ImageRef(registry=ar.host, repository=repo, tag=None, digest=digest)


def lock(ar: Any, ledger: SqliteLedger, image: ImageRef, *, hold: bool, verdict: Any = None) -> Any:
    return quarantine(
        ar,
        ledger,
        image=image,
        tags=(),
        strategy="lock",
        repository_template="",
        reason="CVE-1 critical" if not hold else "awaiting a scan",
        now=T0,
        context={"verdict": verdict or VERDICT},
        hold=hold,
    )


def attrs(acr: FakeAcr, index: Index) -> list[dict[str, bool]]:
    return [acr.attributes(index.repo, d) for d in index.all]


# -- hold, escalate, release ---------------------------------------------------------------------


def test_the_provider_is_lockable_and_a_registry_without_locks_is_refused(
    ar: AcrRegistry, registry: LocalRegistry, ledger: SqliteLedger, repo: str
) -> None:
    assert isinstance(ar, Lockable)
    plain = OciRegistry(
        registry.host, ProviderOptions(), client=RegistryClient(registry.host, backoff=0.01)
    )
    try:
        assert not isinstance(plain, Lockable)
        with pytest.raises(UsageError, match="needs a registry with manifest locks") as raised:
            lock(plain, ledger, ref(ar, repo, "sha256:" + "a" * 64), hold=True)
        assert raised.value.hint is not None and "'move' or 'retag'" in raised.value.hint
        assert ledger.actions() == []  # refused before anything was recorded
    finally:
        plain.close()


def test_hold_escalate_and_release_restore_exactly_the_prior_attributes(
    acr: FakeAcr, ar: AcrRegistry, ledger: SqliteLedger, index: Index
) -> None:
    child = index.children[0]
    ar.set_manifest_attributes(index.repo, child, write=False)  # someone's own lock, before
    prior = attrs(acr, index)
    image = ref(ar, index.repo, index.digest)

    held = lock(ar, ledger, image, hold=True)
    assert held.strategy == "lock" and held.location == index.repo
    assert held.children == index.children
    assert held.removed_tags == ()  # the tags stay: the locks keep the image as it is
    assert attrs(acr, index) == [HELD] * 3
    assert describe_state(ledger, image) == "held (3 manifests): no write or delete; still readable"
    with puller(acr) as client:  # still readable: the gate judges it again
        assert client.get_manifest(index.repo, index.digest).digest == index.digest
        with pytest.raises(AuthError):  # nobody deletes it meanwhile
            client.delete_manifest(index.repo, child)
    assert lock(ar, ledger, image, hold=True).already_done  # a second hold: nothing new

    escalated = lock(ar, ledger, image, hold=False)
    assert not escalated.already_done
    assert "hold escalated: reads disabled" in escalated.notes
    assert attrs(acr, index) == [LOCKED] * 3
    assert describe_state(ledger, image) == "locked (3 manifests): no write, delete or read"
    with puller(acr) as client:
        for digest in index.all:
            with pytest.raises(AuthError):
                client.get_manifest(index.repo, digest)
    assert lock(ar, ledger, image, hold=False).already_done

    released = release(ar, ledger, image=image, reason="verdict PASSED", now=T0)
    assert released.notes == ()
    assert attrs(acr, index) == prior  # the child's write=false stays: it was not ours
    assert prior[1] == {**OPEN, "writeEnabled": False} and prior[0] == OPEN
    rec = ledger.quarantined(image.registry, image.repository, index.digest)
    assert rec is not None and rec.released_at == T0
    with puller(acr) as client:
        assert client.get_manifest(index.repo, index.digest).digest == index.digest


def test_a_failed_verdict_locks_reads_at_once_and_the_stored_manifests_judge_it(
    acr: FakeAcr, ar: AcrRegistry, ledger: SqliteLedger, index: Index
) -> None:
    from regwarden.actions import stored_manifests

    image = ref(ar, index.repo, index.digest)
    lock(ar, ledger, image, hold=False)
    assert attrs(acr, index) == [LOCKED] * 3
    with pytest.raises(AuthError):  # the gate cannot pull it either
        ar.image_details(index.repo, index.digest)

    stored = stored_manifests(ledger, image)
    assert sorted(stored) == sorted(index.all)
    details = ar.image_details(index.repo, index.digest, manifests=stored)
    assert details.record.digest == index.digest
    assert details.record.children == index.children
    assert details.record.tags == ("v1",)
    assert {p.digest for p in details.platforms} == set(index.children)

    # a stored manifest that does not match its digest is refused, never used
    state = ledger.action(f"quarantine:{image.registry}/{image.repository}@{index.digest}")
    assert state is not None
    tampered = json.loads(json.dumps(state.state))
    entry = tampered["lock"]["manifests"][index.digest]
    entry["raw"] = entry["raw"][:-8] + "AAAAAAA="
    ledger.finish_action(state.key, status="done", state=tampered)
    with pytest.raises(RegistryError):
        stored_manifests(ledger, image)


def test_release_leaves_a_digest_someone_changed_since_and_says_so(
    acr: FakeAcr, ar: AcrRegistry, ledger: SqliteLedger, index: Index
) -> None:
    image = ref(ar, index.repo, index.digest)
    lock(ar, ledger, image, hold=True)
    changed = index.children[1]
    ar.set_manifest_attributes(index.repo, changed, delete=True)  # an operator's decision

    released = release(ar, ledger, image=image, reason="operator", now=T0)

    assert released.notes == (f"{changed}: attributes changed since the lock; left as they are",)
    assert acr.attributes(index.repo, index.digest) == OPEN
    assert acr.attributes(index.repo, index.children[0]) == OPEN
    assert acr.attributes(index.repo, changed) == {**HELD, "deleteEnabled": True}


# -- ACR's quarantine policy --------------------------------------------------------------------


def test_quarantine_policy_failed_then_passed_with_details(
    acr: FakeAcr, ar: AcrRegistry, ledger: SqliteLedger, index: Index
) -> None:
    acr.quarantine_policy = True
    assert ar.quarantine_state(index.repo, index.digest) == "Quarantined"
    with puller(acr) as client, pytest.raises(AuthError):  # not Passed: nobody pulls it
        client.get_manifest(index.repo, index.digest)
    # the gate's identity (AcrQuarantineWriter) reads it to judge it
    assert ar.image_details(index.repo, index.digest).record.digest == index.digest

    image = ref(ar, index.repo, index.digest)
    lock(ar, ledger, image, hold=False)
    for digest in index.all:
        state, details = acr.quarantine_state(index.repo, digest)
        assert state == "Failed" and details is not None
        assert json.loads(details) == {
            "state": "quarantined by regwarden",
            "reason": "CVE-1 critical",
            "verdict": {
                "outcome": "FAILED",
                "checks": [
                    {"name": "vulnerabilities", "outcome": "fail", "reason": "CVE-1 critical"}
                ],
            },
        }
    assert ar.quarantine_state(index.repo, index.digest) == "Failed"
    assert describe_state(ledger, image).endswith(
        "marked Failed in the registry's quarantine on 3 of 3"
    )

    release(ar, ledger, image=image, reason="false positive", now=T0)
    assert [acr.quarantine_state(index.repo, d)[0] for d in index.all] == ["Passed"] * 3
    assert json.loads(acr.quarantine_state(index.repo, index.digest)[1] or "")["state"] == (
        "scan passed"
    )
    with puller(acr) as client:
        assert client.get_manifest(index.repo, index.digest).digest == index.digest


def test_a_passed_verdict_marks_a_waiting_image_passed_once(
    acr: FakeAcr, ar: AcrRegistry, repo: str, tmp_path: Path
) -> None:
    digest = skopeo_push(acr, tmp_path, make_image(seed=62), f"{repo}:v1")
    image = ref(ar, repo, digest)
    verdict = {"outcome": "PASSED", "checks": []}
    assert not mark_passed(ar, image, verdict, children=())  # the policy is off: nothing to do
    acr.quarantine_policy = True
    assert mark_passed(ar, image, verdict, children=())
    assert acr.quarantine_state(repo, digest)[0] == "Passed"
    assert not mark_passed(ar, image, verdict, children=())
    with puller(acr) as client:
        assert client.get_manifest(repo, digest).digest == digest


def test_without_the_policy_no_quarantine_state_is_read_or_written(
    acr: FakeAcr, ar: AcrRegistry, ledger: SqliteLedger, index: Index
) -> None:
    assert ar.quarantine_state(index.repo, index.digest) is None
    image = ref(ar, index.repo, index.digest)
    lock(ar, ledger, image, hold=False)
    release(ar, ledger, image=image, reason="r", now=T0)
    patches = [p for m, p in acr.acr_requests if m == "PATCH"]
    assert len(patches) == 6  # three locks, three restores: no quarantineState PATCH
    acr.quarantine_policy = True
    assert acr.quarantine_state(index.repo, index.digest)[0] == "Quarantined"


# -- resumable at every step --------------------------------------------------------------------


class FlakyLedger(SqliteLedger):
    """Fails the n-th write of an action's state: the PATCH before it landed, unrecorded
    (a process killed between the registry's answer and the ledger's write)."""

    def __init__(self, path: Path, fail_at: int) -> None:
        super().__init__(path)
        self.fail_at = fail_at
        self.calls = 0

    def finish_action(self, key: str, *, status: str, state: dict[str, Any] | None = None) -> None:
        self.calls += 1
        if self.calls == self.fail_at:
            raise RegistryError("ledger write lost (injected)")
        super().finish_action(key, status=status, state=state)


def run_step(ar: AcrRegistry, led: SqliteLedger, image: ImageRef, step: str) -> None:
    if step == "release":
        release(ar, led, image=image, reason="r", now=T0)
    else:
        lock(ar, led, image, hold=step == "hold")


def _run_to_the_end(
    acr: FakeAcr, ar: AcrRegistry, led: SqliteLedger, index: Index, image: ImageRef
) -> list[list[dict[str, bool]]]:
    """Hold, escalate, release; each step retried until it goes through (at most twice)."""
    seen = []
    for step in ("hold", "escalate", "release"):
        for attempt in range(3):
            try:
                run_step(ar, led, image, step)
                break
            except RegistryError:
                assert attempt == 0, "a second attempt must finish"
        seen.append(attrs(acr, index))
    return seen


EXPECTED = [[HELD] * 3, [LOCKED] * 3, [OPEN, {**OPEN, "writeEnabled": False}, OPEN]]


#: the action-state writes of hold, escalate and release of a two-platform index, each lost
#: once below: the writes between PATCHes, and each step's last (its finish)
WRITES = 16


def test_the_whole_sequence_makes_the_writes_the_next_test_loses_one_by_one(
    acr: FakeAcr, ar: AcrRegistry, index: Index, tmp_path: Path
) -> None:
    acr.quarantine_policy = True
    image = ref(ar, index.repo, index.digest)
    with closing(FlakyLedger(tmp_path / "clean.db", fail_at=0)) as led:
        _run_to_the_end(acr, ar, led, index, image)
        assert led.calls == WRITES


@pytest.mark.parametrize("fail_at", range(1, WRITES + 1))
def test_a_lost_ledger_write_after_any_patch_resumes_to_the_same_end(
    acr: FakeAcr, ar: AcrRegistry, index: Index, tmp_path: Path, fail_at: int
) -> None:
    ar.set_manifest_attributes(index.repo, index.children[0], write=False)
    acr.quarantine_policy = True
    image = ref(ar, index.repo, index.digest)
    with closing(FlakyLedger(tmp_path / "flaky.db", fail_at)) as led:
        assert _run_to_the_end(acr, ar, led, index, image) == EXPECTED
        assert led.calls >= fail_at  # the fault was met
        assert [acr.quarantine_state(index.repo, d)[0] for d in index.all] == ["Passed"] * 3
        assert all(a.status == "done" for a in led.actions())
        (released,) = [a for a in led.actions() if a.kind == "release"]
        assert released.state["left"] == []  # a restore already made is not "changed since"


@pytest.mark.parametrize("which", range(3))
@pytest.mark.parametrize("step", ["hold", "escalate", "release", "mark"])
def test_a_failed_patch_between_patches_resumes_to_the_same_end(
    acr: FakeAcr, ar: AcrRegistry, index: Index, tmp_path: Path, step: str, which: int
) -> None:
    ar.set_manifest_attributes(index.repo, index.children[0], write=False)
    acr.quarantine_policy = True
    image = ref(ar, index.repo, index.digest)
    target = f"/acr/v1/{index.repo}/_manifests/{index.all[which]}"
    with closing(SqliteLedger(tmp_path / "l.db")) as led:
        if step in ("escalate", "release", "mark"):
            lock(ar, led, image, hold=True)
        if step in ("release", "mark"):
            lock(ar, led, image, hold=False)
            done = led.action(f"quarantine:{image.registry}/{image.repository}@{image.digest}")
            assert done is not None and done.state["lock"]["marked"] == list(index.all)
        seen = {"n": 0}
        if step == "mark":  # release's restore of the digest passes, its Passed fails
            seen = _fail_nth_patch(acr, target, nth=2)
        else:
            acr.fail_next("PATCH", target, 500)
        with pytest.raises(RegistryError):
            run_step(ar, led, image, "release" if step == "mark" else step)
        assert acr._faults == [] and seen["n"] in (0, 2)  # the fault was met
        # stopped half-way: the step's own end not reached
        if step == "mark":
            states = [acr.quarantine_state(index.repo, d)[0] for d in index.all]
            assert states[which] == "Failed"
        else:
            assert attrs(acr, index) != EXPECTED[["hold", "escalate", "release"].index(step)]
        # run again: the same end state as an uninterrupted run
        rest = {"hold": 0, "escalate": 1, "release": 2, "mark": 2}[step]
        steps = ["hold", "escalate", "release"][rest:]
        for again in steps:
            run_step(ar, led, image, again)
        assert attrs(acr, index) == EXPECTED[-1]
        assert [acr.quarantine_state(index.repo, d)[0] for d in index.all] == ["Passed"] * 3


def _fail_nth_patch(acr: FakeAcr, path: str, *, nth: int) -> dict[str, int]:
    """Let the first n-1 PATCHes of `path` through, then fail one (FakeAcr's faults take
    the first match, so this counts PATCHes as the front answers them)."""
    original = acr._take_fault
    count = {"n": 0}

    def take(method: str, p: str) -> tuple[int, dict[str, str]] | None:
        if method == "PATCH" and p == path:
            count["n"] += 1
            if count["n"] == nth:
                return 500, {}
        return original(method, p)

    acr._take_fault = take  # type: ignore[method-assign]
    return count
