"""Test doubles for retention's shell: an in-memory registry that records what it is asked
to do (and can throttle, fail or vanish on cue), and a runtime around it.

They satisfy the real protocols (`regwarden.providers.Registry`, the retention runtime),
so the executor and planner run unchanged against them.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from regwarden.errors import NotFound, RegistryError, Unsupported
from regwarden.notify import Alert, Router
from regwarden.policy import Policy
from regwarden.providers import CAP_BATCH_DELETE, DeleteResult, ImageDetails, ListedImage
from regwarden.retention import Guard
from regwarden.store import SqliteLedger


@dataclass
class Call:
    op: str
    repository: str
    digests: tuple[str, ...]
    at: float


class FakeRegistry:
    """`Registry` over a dict of repository → listing. Deletions remove from the listing.

    `throttle(n)` makes the next n deletions raise HTTP 429 (as the OCI client does after
    its own retries); `fail(digest)` makes one digest fail for good; `gone(digest)`
    removes it behind the executor's back; `delay` slows every deletion.
    """

    kind = "oci"
    capabilities: frozenset[str] = frozenset()
    """No tag delete, no manifest listing, no data plane (so no referrers API), one
    digest per delete."""

    def __init__(
        self,
        repositories: dict[str, list[ListedImage]] | None = None,
        *,
        host: str = "registry.test",
        delay: float = 0.0,
    ) -> None:
        self.host = host
        self.repos: dict[str, dict[str, ListedImage]] = {
            name: {r.digest: r for r in records} for name, records in (repositories or {}).items()
        }
        self.calls: list[Call] = []
        self.delay = delay
        self._throttle = 0
        self._failing: set[str] = set()
        self._lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.subjects: dict[str, str] = {}
        """digest → subject its manifest names (what `image_details` reads)."""
        self.tags: dict[tuple[str, str], str] = {}
        for name, records in self.repos.items():
            for r in records.values():
                for t in r.tags:
                    self.tags[(name, t)] = r.digest

    # -- cues ---------------------------------------------------------------------------------

    def throttle(self, n: int) -> None:
        with self._lock:
            self._throttle += n

    def fail(self, digest: str) -> None:
        self._failing.add(digest)

    def gone(self, repository: str, digest: str) -> None:
        self.repos[repository].pop(digest, None)

    def deleted(self) -> list[tuple[str, str]]:
        return [(c.repository, d) for c in self.calls if c.op == "delete" for d in c.digests]

    # -- Registry protocol ----------------------------------------------------------------------

    def list_repositories(self) -> Iterator[str]:
        return iter(sorted(self.repos))

    def list_images(self, repository: str) -> list[ListedImage]:
        return list(self.repos.get(repository, {}).values())

    def image_details(self, repository: str, reference: str) -> ImageDetails:
        """What the manifest says: the listed record with its subject (see `subjects`)."""
        self.calls.append(Call("details", repository, (reference,), time.monotonic()))
        found = self.repos.get(repository, {}).get(reference)
        if found is None:
            raise NotFound(f"manifest {repository}@{reference} not found")
        subject = self.subjects.get(reference, found.subject)
        return ImageDetails(record=replace(found, subject=subject), manifest={})

    def resolve(self, repository: str, reference: str) -> str | None:
        if ":" in reference:
            return reference if reference in self.repos.get(repository, {}) else None
        self.calls.append(Call("resolve", repository, (reference,), time.monotonic()))
        digest = self.tags.get((repository, reference))
        return digest if digest in self.repos.get(repository, {}) else None

    def add_tag(self, repository: str, digest: str, tag: str) -> None:
        raise NotImplementedError

    def remove_tag(self, repository: str, tag: str) -> None:
        raise NotImplementedError

    def _enter(self) -> None:
        with self._lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def delete(self, repository: str, digest: str) -> None:
        self._enter()
        try:
            if self.delay:
                time.sleep(self.delay)
            with self._lock:
                if self._throttle > 0:
                    self._throttle -= 1
                    self.calls.append(Call("throttled", repository, (digest,), time.monotonic()))
                    raise RegistryError("DELETE: got HTTP 429; gave up", status=429)
            if digest in self._failing:
                raise RegistryError("DELETE: got HTTP 500", status=500)
            with self._lock:
                present = self.repos.get(repository, {}).pop(digest, None)
                self.calls.append(Call("delete", repository, (digest,), time.monotonic()))
            if present is None:
                raise NotFound(f"manifest {repository}@{digest} not found")
        finally:
            self._leave()

    def delete_many(self, repository: str, digests: Iterable[str]) -> list[DeleteResult]:
        raise Unsupported("the fake deletes one digest at a time")

    def watch_throttling(self, callback: Callable[[float | None], None]) -> Callable[[], None]:
        return lambda: None  # no client retrying by itself: throttling shows as HTTP 429

    def copy(self, src: str, reference: str, dst: str, tag: str | None = None) -> str:
        raise NotImplementedError

    def data_plane(self) -> Any:
        raise NotImplementedError("the fake has no data plane")

    def close(self) -> None:
        return None


class FakeBatchRegistry(FakeRegistry):
    """A FakeRegistry that also deletes in batches, as ECR does (at most 100 per call)."""

    kind = "ecr"
    capabilities: frozenset[str] = frozenset({CAP_BATCH_DELETE})

    def __init__(self, *args: Any, throttle_codes: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batch_throttles = throttle_codes

    def delete_many(self, repository: str, digests: Iterable[str]) -> list[DeleteResult]:
        wanted = list(digests)
        assert len(wanted) <= 100, f"batch of {len(wanted)} digests, ECR allows 100"
        self._enter()
        try:
            with self._lock:
                self.calls.append(Call("batch", repository, tuple(wanted), time.monotonic()))
                if self._batch_throttles > 0:
                    self._batch_throttles -= 1
                    return [
                        DeleteResult(d, "throttled", "ThrottlingException: Rate exceeded")
                        for d in wanted
                    ]
            deleted: list[DeleteResult] = []
            failures: list[DeleteResult] = []
            for d in wanted:
                if d in self._failing:
                    failures.append(DeleteResult(d, "failed", "InternalError: nope"))
                    continue
                with self._lock:
                    present = self.repos.get(repository, {}).pop(d, None)
                    if present is not None:
                        self.calls.append(Call("delete", repository, (d,), time.monotonic()))
                if present is None:
                    failures.append(
                        DeleteResult(d, "gone", "ImageNotFound: Requested image not found")
                    )
                else:
                    deleted.append(DeleteResult(d, "deleted"))
            return deleted + failures
        finally:
            self._leave()


@dataclass
class RecordingChannel:
    """A notifier that keeps what it is sent."""

    name: str = "recorder"
    alerts: list[Alert] = field(default_factory=list)

    def send(self, alert: Alert) -> None:
        self.alerts.append(alert)


class FakeRuntime:
    """What retention needs of a Runtime: policy, ledger, registry by host, router."""

    def __init__(
        self,
        policy: Policy,
        ledger: SqliteLedger,
        registries: dict[str, Any],
        channel: RecordingChannel | None = None,
    ) -> None:
        self.policy = policy
        self.ledger = ledger
        self._registries = registries
        self.channel = channel or RecordingChannel()

    def registry(self, host: str) -> Any:
        return self._registries[host]

    def router(self) -> Router:
        ch = self.channel
        return Router(lambda _alert: [ch.name], {ch.name: ch})


NO_GUARD = Guard(max_deletes=None, max_share=None)
"""Rules with no guard rail, for tests about what is planned rather than how much."""


def dg(name: str) -> str:
    """A stable digest for a readable name."""
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


def record(
    repository: str,
    digest: str,
    *tags: str,
    pushed: datetime | None = None,
    created: datetime | None = None,
    pulled: datetime | None = None,
    size: int = 1000,
    media_type: str = "application/vnd.oci.image.manifest.v1+json",
    children: tuple[str, ...] = (),
    subject: str | None = None,
    artifact_type: str | None = None,
) -> ListedImage:
    """A provider record, as `Registry.list_images` returns it."""
    return ListedImage(
        repository=repository,
        digest=digest,
        media_type=media_type,
        tags=tuple(tags),
        size=size,
        created=created,
        pushed=pushed,
        last_pulled=pulled,
        children=children,
        subject=subject,
        artifact_type=artifact_type,
    )


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()
