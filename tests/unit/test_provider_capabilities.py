"""Providers say what they can do (capabilities) and speak in neutral results; the core
branches on those, never on `kind` or a provider's type.

- each provider's declared capabilities, and `delete_many` where it has none
- ECR's batch answers (its error codes) become `deleted` / `gone` / `throttled` / `failed`
- the OCI provider's `watch_throttling` reports the client's 429/503 retries, chains the
  hook it found and puts it back
- retention batches on `batch-delete` alone (whatever `kind` says), asks the referrers API
  on `referrers-api` alone, and slows down on what `watch_throttling` reports
- `EcrScanSource` asks any registry declaring `native-scan`, and refuses one that does not
- no registry-kind switch and no provider type check outside `providers/`
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.retention import FakeBatchRegistry, FakeRegistry, record

from regwarden.errors import RegistryError, Unsupported
from regwarden.model import ScanReport
from regwarden.oci import RegistryClient
from regwarden.policy import load_policy_text
from regwarden.providers import (
    CAP_BATCH_DELETE,
    CAP_COPY_MOUNT,
    CAP_NATIVE_SCAN,
    CAP_REFERRERS_API,
    DeleteResult,
    NativeScanner,
    ProviderOptions,
)
from regwarden.providers.ecr import EcrRegistry
from regwarden.providers.oci import OciRegistry
from regwarden.reference import ImageRef
from regwarden.retention import apply, collect_records, plan_run
from regwarden.scanning.ecr import EcrScanSource
from regwarden.store import SqliteLedger

ROOT = Path(__file__).resolve().parents[2]
ECR_HOST = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
POLICY = (
    "apiVersion: regwarden/v1\nkind: Policy\ndefaults:\n  team: platform\n"
    "  retention:\n    keep: [{mostRecent: 1}]\n    delete: [{olderThan: 30d}]\n"
    "    guard: {maxDeletes: 1000, maxShare: 1}\n"
)


def dg(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[SqliteLedger]:
    store = SqliteLedger(tmp_path / "ledger.db")
    yield store
    store.close()


# -- what each provider declares -----------------------------------------------------------


def test_the_oci_provider_declares_referrers_and_mounts_but_no_batches() -> None:
    registry = OciRegistry("registry.test", ProviderOptions())
    try:
        assert {CAP_REFERRERS_API, CAP_COPY_MOUNT} <= registry.capabilities
        assert CAP_BATCH_DELETE not in registry.capabilities
        assert CAP_NATIVE_SCAN not in registry.capabilities
        with pytest.raises(Unsupported, match="batch-delete"):
            registry.delete_many("app", [dg("a")])
    finally:
        registry.close()


def test_the_ecr_provider_declares_batches_and_its_scanner_but_no_referrers_api() -> None:
    registry = EcrRegistry(ECR_HOST, ecr_client=object())
    assert {CAP_BATCH_DELETE, CAP_NATIVE_SCAN, CAP_COPY_MOUNT} <= registry.capabilities
    assert CAP_REFERRERS_API not in registry.capabilities  # it lists every manifest
    assert isinstance(registry, NativeScanner)


def test_ecr_takes_its_data_plane_host_from_the_options() -> None:
    options = ProviderOptions(data_plane_host="127.0.0.1:5000")
    assert EcrRegistry(ECR_HOST, options, ecr_client=object()).data_plane_host == "127.0.0.1:5000"
    assert EcrRegistry(ECR_HOST, ecr_client=object()).data_plane_host == ECR_HOST
    keyword = EcrRegistry(ECR_HOST, options, ecr_client=object(), data_plane_host="h:1")
    assert keyword.data_plane_host == "h:1"


# -- ECR's codes become neutral results ------------------------------------------------------


class BatchDeleteClient:
    """An ECR client whose batch_delete_image answers as the real one does: deleted ids
    and per-digest failures with ECR's codes."""

    def __init__(self, failures: dict[str, str]) -> None:
        self.failures = failures
        self.requests: list[list[str]] = []

    def batch_delete_image(self, **params: Any) -> dict[str, Any]:
        asked = [i["imageDigest"] for i in params["imageIds"]]
        self.requests.append(asked)
        return {
            "imageIds": [{"imageDigest": d} for d in asked if d not in self.failures],
            "failures": [
                {
                    "imageId": {"imageDigest": d},
                    "failureCode": self.failures[d],
                    "failureReason": f"why {d[-4:]}",
                }
                for d in asked
                if d in self.failures
            ],
        }


def test_ecr_delete_many_speaks_neutral_results() -> None:
    ok, gone, slow, broken = dg("ok"), dg("gone"), dg("slow"), dg("broken")
    client = BatchDeleteClient(
        {gone: "ImageNotFound", slow: "ThrottlingException", broken: "KmsError"}
    )
    registry = EcrRegistry(ECR_HOST, ecr_client=client)
    results = registry.delete_many("app", [ok, gone, slow, broken, ok, "not-a-digest"])
    assert client.requests == [[ok, gone, slow, broken]]  # repeat dropped, invalid local
    assert results == [
        DeleteResult(ok, "deleted"),
        DeleteResult("not-a-digest", "failed", results[1].reason),
        DeleteResult(gone, "gone", f"ImageNotFound: why {gone[-4:]}"),
        DeleteResult(slow, "throttled", f"ThrottlingException: why {slow[-4:]}"),
        DeleteResult(broken, "failed", f"KmsError: why {broken[-4:]}"),
    ]
    assert results[1].reason.startswith("InvalidImageDigest: ")


# -- the OCI provider's throttling watch -----------------------------------------------------


def test_oci_watch_throttling_reports_429_and_503_retries_and_undoes() -> None:
    answers = [
        httpx.Response(429, headers={"Retry-After": "3"}),
        httpx.Response(500),
        httpx.Response(503),
        httpx.Response(202),
    ]
    client = RegistryClient(
        "registry.test",
        transport=httpx.MockTransport(lambda _: answers.pop(0)),
        sleep=lambda _: None,
        max_retries=5,
    )
    earlier: list[int | None] = []
    client.on_retry = lambda status, _delay: earlier.append(status)
    previous = client.on_retry
    registry = OciRegistry("registry.test", ProviderOptions(), client=client)
    seen: list[float | None] = []
    undo = registry.watch_throttling(seen.append)
    try:
        registry.delete("app", dg("x"))
    finally:
        undo()
        registry.close()
    assert len(seen) == 2 and seen[0] == 3.0  # the 429's Retry-After; the 500 is not throttling
    assert seen[1] is not None  # the client's own backoff
    assert earlier == [429, 500, 503]  # the hook that was there still hears every retry
    assert client.on_retry is previous


# -- retention branches on capabilities --------------------------------------------------------


class BatchesWhateverItsKind(FakeBatchRegistry):
    kind = "oci"


class NoBatchesWhateverItsKind(FakeBatchRegistry):
    kind = "ecr"
    capabilities: frozenset[str] = frozenset()

    def delete_many(self, repository: str, digests: Iterable[str]) -> list[DeleteResult]:
        raise AssertionError("asked to batch without batch-delete")


def _listing(n: int) -> dict[str, list[Any]]:
    old = datetime(2026, 1, 1, tzinfo=UTC)
    return {
        "team/api": [
            record("team/api", dg(f"i{i}"), f"v{i}", pushed=old - timedelta(days=i))
            for i in range(n)
        ]
    }


def _apply(registry: FakeRegistry, ledger: SqliteLedger) -> Any:
    policy = load_policy_text(POLICY, source="p.yaml", base_dir="/tmp")
    run = plan_run(registry, policy, ledger=ledger, now=datetime(2026, 6, 1, tzinfo=UTC))
    assert run.deletions == 4
    return apply(run, registry, ledger, concurrency=2)


def test_retention_batches_on_the_capability_not_the_kind(ledger: SqliteLedger) -> None:
    batching = BatchesWhateverItsKind(_listing(5))
    result = _apply(batching, ledger)
    assert result.status == "done" and result.deleted == 4
    assert sum(c.op == "batch" for c in batching.calls) == 1
    assert result.requests == 1


def test_retention_deletes_one_by_one_without_the_capability(ledger: SqliteLedger) -> None:
    single = NoBatchesWhateverItsKind(_listing(5))
    result = _apply(single, ledger)
    assert result.status == "done" and result.deleted == 4
    assert not [c for c in single.calls if c.op == "batch"]
    assert result.requests == 4


class ThrottledBehindItsBack(FakeRegistry):
    """Its client retries throttled requests by itself and tells `watch_throttling`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.watchers: list[Callable[[float | None], None]] = []

    def watch_throttling(self, callback: Callable[[float | None], None]) -> Callable[[], None]:
        self.watchers.append(callback)
        return lambda: self.watchers.remove(callback)

    def delete(self, repository: str, digest: str) -> None:
        for watcher in list(self.watchers):
            watcher(None)  # one throttled answer, retried inside the "client"
        super().delete(repository, digest)


def test_retention_slows_down_on_what_watch_throttling_reports(ledger: SqliteLedger) -> None:
    registry = ThrottledBehindItsBack(_listing(5))
    result = _apply(registry, ledger)
    assert result.status == "done"
    assert result.throttles == 4  # one per deletion, none of them an error
    assert result.lowest_concurrency == 1
    assert registry.watchers == []  # undone when the apply ended


class ReferrersBehindTheApi(FakeRegistry):
    """Declares the referrers API; its data plane lists one signature for the image."""

    def __init__(self, *args: Any, declared: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.capabilities = frozenset({CAP_REFERRERS_API} if declared else ())
        self.asked = 0

    def data_plane(self) -> Any:
        self.asked += 1
        raise RegistryError("no data plane in this test: asked anyway")


def test_collect_asks_the_referrers_api_only_where_declared() -> None:
    listing = _listing(1)
    quiet = ReferrersBehindTheApi(listing, declared=False)
    assert [r.digest for r in collect_records(quiet, "team/api").records] == [dg("i0")]
    assert quiet.asked == 0
    asking = ReferrersBehindTheApi(listing, declared=True)
    with pytest.raises(RegistryError, match="asked anyway"):
        collect_records(asking, "team/api")
    assert asking.asked == 1


# -- the native scanner ------------------------------------------------------------------------


class OwnScanner(FakeRegistry):
    capabilities: frozenset[str] = frozenset({CAP_NATIVE_SCAN})

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, str, bool, Any, str | None]] = []

    def native_scan(
        self,
        repository: str,
        digest: str,
        *,
        start: bool = True,
        inspector: Any = None,
        name: str | None = None,
    ) -> ScanReport | None:
        self.asked.append((repository, digest, start, inspector, name))
        return None


def test_ecr_scan_source_asks_any_registry_declaring_native_scan() -> None:
    image = ImageRef.parse(f"registry.test/team/api:1@{dg('x')}")
    registry = OwnScanner()
    inspector = object()
    assert EcrScanSource(inspector_client=inspector, start_scans=False)(registry, image) is None
    assert registry.asked == [("team/api", dg("x"), False, inspector, str(image))]


def test_ecr_scan_source_refuses_a_registry_without_native_scan() -> None:
    image = ImageRef.parse(f"registry.test/team/api@{dg('x')}")
    with pytest.raises(RegistryError, match=r"got FakeRegistry for registry\.test.*native-scan"):
        EcrScanSource()(FakeRegistry(), image)


# -- no kind switches outside providers/ -------------------------------------------------------

_SWITCHES = re.compile(
    r"isinstance\([^)]*\b(?:EcrRegistry|OciRegistry|BatchDeleter|QuarantineEcr)\b"
    r"|\bregistr\w*\.kind\s*(?:==|!=|\bin\b|\bnot in\b)"
)


def test_no_provider_kind_switch_outside_providers() -> None:
    found = []
    for top in ("shared", "functions"):
        for path in sorted((ROOT / top).rglob("*.py")):
            if "providers" in path.relative_to(ROOT).parts:
                continue
            for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if _SWITCHES.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert found == []


def test_the_switch_pattern_sees_what_it_forbids() -> None:
    forbidden = [
        'if registry.kind != "oci":',
        'if self.registry.kind == "ecr":',
        "isinstance(registry, EcrRegistry)",
        "batch = isinstance(self.registry, BatchDeleter)",
        'if registry.kind in ("ecr", "gar"):',
    ]
    allowed = ['if doc.kind == "oci":', 'print(registry.kind, "registry")', 'kind == "semver"']
    assert all(_SWITCHES.search(line) for line in forbidden)
    assert not any(_SWITCHES.search(line) for line in allowed)
