"""`scanning.SCAN_SOURCES`: the gate runs every registered source the policy names, each on
its own. The sources here are stand-ins registered under `ecr` and `inspector` for the test
(the built-in ones are put back after), so two separate sources can fail, answer or hold
independently; `gather_evidence` is the real one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from regwarden.errors import NotFound, RegistryError, UsageError, VerificationError
from regwarden.gate import Evidence, gate_rules, gather_evidence
from regwarden.model import ScanReport
from regwarden.policy import NOT_READ_YET, load_policy_text
from regwarden.policy import SCAN_SOURCES as POLICY_SCAN_SOURCES
from regwarden.reference import ImageRef
from regwarden.scanning import SCAN_SOURCES, ScanContext, ScanFormatError, ScanReader

ECR = "123456789012.dkr.ecr.eu-west-1.amazonaws.com"
DIGEST = "sha256:" + "cd" * 32
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
BOTH = "defaults:\n  vulnerabilities: {maxSeverity: high, sources: [ecr, inspector]}\n"

Register = Callable[[str, Callable[[ScanContext], ScanReader | None]], None]


@dataclass
class StandInRegistry:
    """Only what `gather_evidence` reads without signature discovery: the host."""

    host: str = ECR
    kind: str = "ecr"

    def data_plane(self) -> Any:
        raise AssertionError("no signature lookup is configured")


def report(scanner: str, scanned_at: datetime | None) -> ScanReport:
    return ScanReport(digest=DIGEST, scanner=scanner, source=scanner, scanned_at=scanned_at)


def reader(answer: Callable[[], ScanReport | None]) -> Callable[[ScanContext], ScanReader]:
    """A factory whose reader answers `answer()` (or raises what it raises)."""

    def factory(context: ScanContext) -> ScanReader:
        return lambda registry, image: answer()

    return factory


def failing(error: Exception) -> Callable[[], ScanReport | None]:
    def answer() -> ScanReport | None:
        raise error

    return answer


@pytest.fixture
def register() -> Iterator[Register]:
    """Registers stand-ins in place of the built-in `ecr`/`inspector` source for one test;
    afterwards the registry holds exactly what it held before."""
    saved = {name: SCAN_SOURCES.get(name) for name in SCAN_SOURCES.names()}
    for name in ("ecr", "inspector"):
        SCAN_SOURCES.unregister(name)
    yield lambda name, factory: SCAN_SOURCES.add(name, factory)
    for name in SCAN_SOURCES.names():
        SCAN_SOURCES.unregister(name)
    for name, factory in saved.items():
        SCAN_SOURCES.add(name, factory)


def gather(body: str = BOTH, *, env: dict[str, str] | None = None) -> Evidence:
    text = "apiVersion: regwarden/v1\nkind: Policy\n" + body
    policy = load_policy_text(text, source="t.yaml", base_dir=".")  # no files referenced
    image = ImageRef(registry=ECR, repository="app", digest=DIGEST)
    rules = gate_rules(policy.for_repository("app"))
    return gather_evidence(
        policy,
        StandInRegistry(),  # type: ignore[arg-type]
        image,
        rules,
        env=env or {},
        now=NOW,
    )


# -- one source's failure never hides another's ----------------------------------------------


@pytest.mark.parametrize("failing_name", ["ecr", "inspector"])
def test_an_unreadable_source_is_unavailable_and_the_other_is_still_read(
    register: Register, failing_name: str
) -> None:
    other = "inspector" if failing_name == "ecr" else "ecr"
    register(failing_name, reader(failing(RegistryError("ThrottlingException", status=400))))
    register(other, reader(lambda: report(other, NOW)))

    found = gather()

    assert found.unavailable == (f"{failing_name}: ThrottlingException",)
    assert found.scan == report(other, NOW) and found.scan_error is None


@pytest.mark.parametrize(
    "verdict",
    [VerificationError("scan FAILED: unsupported image"), ScanFormatError("findings: not a list")],
)
def test_a_scanners_verdict_is_a_scan_error_and_the_other_is_still_read(
    register: Register, verdict: Exception
) -> None:
    register("ecr", reader(failing(verdict)))
    register("inspector", reader(lambda: report("inspector", NOW)))

    found = gather()

    assert found.scan_error == str(verdict) and found.unavailable == ()
    assert found.scan == report("inspector", NOW)


def test_every_failure_is_recorded_against_its_own_source(register: Register) -> None:
    register("ecr", reader(failing(RegistryError("connection reset"))))
    register("inspector", reader(failing(RegistryError("AccessDenied", status=403))))

    found = gather()

    assert found.unavailable == ("ecr: connection reset", "inspector: AccessDenied")
    assert found.scan is None and found.scan_error is None


# -- the newest report wins ----------------------------------------------------------------------


@pytest.mark.parametrize("newer", ["ecr", "inspector"])
def test_the_newest_report_wins_whichever_source_has_it(register: Register, newer: str) -> None:
    older = "inspector" if newer == "ecr" else "ecr"
    register(newer, reader(lambda: report(newer, NOW)))
    register(older, reader(lambda: report(older, NOW - timedelta(hours=1))))

    assert gather().scan == report(newer, NOW)


@pytest.mark.parametrize("undated", ["ecr", "inspector"])
def test_a_dated_report_beats_an_undated_one(register: Register, undated: str) -> None:
    dated = "inspector" if undated == "ecr" else "ecr"
    register(undated, reader(lambda: report(undated, None)))
    register(dated, reader(lambda: report(dated, NOW - timedelta(days=3))))

    assert gather().scan == report(dated, NOW - timedelta(days=3))


def test_a_source_with_no_scan_yet_leaves_the_others_report(register: Register) -> None:
    register("ecr", reader(lambda: None))
    register("inspector", reader(lambda: report("inspector", NOW)))

    assert gather().scan == report("inspector", NOW)


# -- NotFound waits for the others -----------------------------------------------------------


def test_not_found_propagates_only_once_every_other_source_has_finished(
    register: Register,
) -> None:
    """The vanished image is reported only after the slower source has returned: nothing
    is still talking to the registry once the gate moves on."""
    gone = threading.Event()
    finished = threading.Event()

    def vanished() -> ScanReport | None:
        gone.set()
        raise NotFound(f"{ECR}/app@{DIGEST}: manifest unknown")

    def slower() -> ScanReport | None:
        assert gone.wait(10), "the sources did not run side by side"
        finished.set()
        return report("inspector", NOW)

    register("ecr", reader(vanished))
    register("inspector", reader(slower))

    with pytest.raises(NotFound, match="manifest unknown"):
        gather()
    assert finished.is_set()


# -- how names map to sources ------------------------------------------------------------------


def test_names_registered_to_one_source_share_one_read(register: Register) -> None:
    calls: list[str] = []

    def both(context: ScanContext) -> ScanReader:
        def read(registry: Any, image: ImageRef) -> ScanReport | None:
            calls.append(image.digest or "")
            raise RegistryError("ThrottlingException")

        return read

    register("ecr", both)
    register("inspector", both)

    found = gather()

    assert calls == [DIGEST]
    assert found.unavailable == ("ecr+inspector: ThrottlingException",)


def test_a_source_that_does_not_apply_is_not_run(register: Register) -> None:
    register("ecr", lambda context: None)
    register("inspector", reader(lambda: report("inspector", NOW)))

    found = gather()

    assert found.scan == report("inspector", NOW) and found.unavailable == ()


def test_the_factory_gets_the_policy_registry_and_environment(register: Register) -> None:
    seen: list[ScanContext] = []

    def factory(context: ScanContext) -> ScanReader | None:
        seen.append(context)
        return None

    register("ecr", factory)
    body = "defaults:\n  vulnerabilities: {maxSeverity: high, sources: [ecr]}\n"

    gather(body, env={"REGWARDEN_X": "1"})

    (context,) = seen
    assert context.registry.host == ECR and context.env == {"REGWARDEN_X": "1"}
    assert context.insecure is False
    assert context.policy.for_repository("app").vulnerabilities is not None


def test_a_name_with_no_registered_source_is_a_usage_error_before_any_source_runs(
    register: Register,
) -> None:
    built: list[str] = []

    def factory(context: ScanContext) -> ScanReader | None:
        built.append("ecr")
        return None

    register("ecr", factory)  # `inspector` stays unregistered

    with pytest.raises(
        UsageError,
        match=r"unknown scan source 'inspector'; valid: artifact-analysis, clair, defender, ecr, "
        r"grype-referrer, harbor, trivy-referrer",
    ):
        gather()
    assert built == []


def test_unregistering_an_unknown_name_is_refused() -> None:
    with pytest.raises(ValueError, match="'trivy' is not registered"):
        SCAN_SOURCES.unregister("trivy")


# -- the built-in sources ------------------------------------------------------------------------


def test_every_source_the_policy_reads_is_registered_except_attestations() -> None:
    """What the policy accepts and reads (not `NOT_READ_YET`) has a source; `cosign-vuln`
    comes from signed attestations, not from this registry."""
    read = set(POLICY_SCAN_SOURCES) - set(NOT_READ_YET) - {"cosign-vuln"}
    assert set(SCAN_SOURCES.names()) == read
    assert read == {
        "artifact-analysis",
        "clair",
        "defender",
        "ecr",
        "grype-referrer",
        "harbor",
        "inspector",
        "trivy-referrer",
    }


def test_ecr_and_inspector_share_one_built_in_read() -> None:
    assert SCAN_SOURCES.get("ecr") is SCAN_SOURCES.get("inspector")
    assert SCAN_SOURCES.get("harbor") is not SCAN_SOURCES.get("ecr")
