"""`AccessMonitor`: the stateful shell over the pure evaluation — used by `regwarden serve`
(one monitor thread) and by every cloud function (one per warm instance).

    monitor = AccessMonitor.from_policy(policy, ledger, router, actor="regwarden-bot")
    result = monitor.handle(events, now=now)   # AccessResult(handled, ignored, alerts, findings)
    keys = monitor.sweep(now=now)              # due windows closed: summary outbox keys
    writes = monitor.flush(now=now)            # coalesced pull tallies and window counts
    monitor.flush(now=now, force=True)         # at stop / at the end of a Lambda batch

`handle`, `sweep` and `flush` must be called from one thread at a time. The monitor only
commits outbox rows (`Ledger.commit_outcome`); the caller's outbox delivery sends them
(`Pipeline.deliver(keys)` in serve, the function's own delivery on AWS), so `alerts` and
`sweep`'s answer are the outbox keys to deliver.

Per event (`handle`):
1. regwarden's own accesses are ignored: a User-Agent starting with `regwarden/` (and, when
   `actor` is given, that principal) — nothing else is: the quarantine repository and
   `quarantined-*` tags are exactly what is watched. A redelivered event id (the last
   `dedupe_ids` seen) is ignored too.
2. A pull from a quarantine location (`quarantine/<repo>` under the policy's `move`
   templates) is mapped back to the quarantined image and is a blocked pull by itself.
3. A pull by tag without a digest (CloudTrail) is resolved from the ledger's tag history
   (`tag_digests(...)[-1]`, cached like the state), never from the registry.
4. The digest's state — `quarantined()` and `last_verdict()`, two key reads — is cached per
   digest for `state_ttl` (5 s): a quarantine or verdict is seen within that.
5. `evaluate` against the repository's `access` section (merged per repository, cached).
6. Per finding, the window key `sha256(kind|principal|registry/repo@digest)`: the first
   access opens a window (`open_access_window`, a conditional write: one process wins) and
   commits the alert at once; later ones until the window closes are counted in memory and
   added with `count_access` at the next flush. `sweep` closes due windows: a summary when
   accesses were counted after the first (`count` of them), then the window is dropped.
   The window opens before its alert is committed (the other order would alert twice when
   two processes race); closing the window commits the opening alert again, which its
   outbox key makes a no-op unless a crash between the two lost it: then it is sent late.
7. Pull tallies `(registry, repository, digest, principal) → (last, count)` in memory,
   written by `flush` at most once per digest per `flush_every` (1 minute) unless forced;
   `start_pull_tracking` the first time this process sees a repository's pulls.

The pull rate (`alertOn.pullRate`) is counted per principal in a one-minute window the
ledger holds, shared by every process (receiver replicas, function instances): the first
pull opens it (`rate_key(principal)`, a window like the alerts' ones, with the pull and
its repository's threshold in place of an alert), later pulls are counted into it and
written at each flush as the alerts' windows are. A process alerts at once when the pulls
it knows of (the window's count when it joined, plus its own since) go over the
threshold; the sweep that closes the window checks the total every process wrote and
raises the finding then if no process could see it. Either way the finding goes through
its de-duplication window like any other.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from ..notify import Alert, Notifier
from ..policy import Policy
from ..quarantine_names import is_destination, sources_of
from ..reference import ImageRef
from ..store import OUTBOX_TTL, AccessWindow, Ledger, OutboxItem, Outcome, PullTally
from ._evaluate import AccessRules, access_alert, evaluate, rate_finding, summary_alert
from ._model import AccessEvent, AccessFinding, DigestState

__all__ = ["AccessMonitor", "AccessResult", "ChannelRouter", "rate_key", "window_key"]

USER_AGENT_PREFIX = "regwarden/"
STATE_TTL = timedelta(seconds=5)
FLUSH_EVERY = timedelta(minutes=1)
DEDUPE_IDS = 10_000
SWEEP_LIMIT = 100
RATE_WINDOW = timedelta(minutes=1)
RATE_PREFIX = "ar-"


class ChannelRouter(Protocol):
    """What the monitor needs of `regwarden.notify.Router`: the channels an alert goes to."""

    def channels_for(self, alert: Alert) -> Sequence[Notifier]: ...


@dataclass(slots=True)
class AccessResult:
    """What one `handle` call did: events taken (`handled`), skipped (`ignored`: regwarden's
    own, redeliveries), findings, and the outbox keys of the alerts it committed."""

    handled: int = 0
    ignored: int = 0
    alerts: list[str] = field(default_factory=list)
    findings: int = 0


def window_key(
    kind: str, principal: str | None, registry: str, repository: str, digest: str
) -> str:
    """The de-duplication window of one kind of finding by one principal on one image."""
    text = f"{kind}|{principal or ''}|{registry}/{repository}@{digest}"
    return "aw-" + hashlib.sha256(text.encode()).hexdigest()


def rate_key(principal: str | None) -> str:
    """The shared one-minute window counting one principal's pulls (`pullRate`)."""
    return RATE_PREFIX + hashlib.sha256((principal or "").encode()).hexdigest()


def _rate_note(event: AccessEvent, threshold: int) -> str:
    """What a rate window holds in place of an alert: the pull that opened it (the finding
    the sweep may raise names it) and its repository's threshold."""
    fields = {f: getattr(event, f) for f in AccessEvent.__dataclass_fields__}
    fields["time"] = event.time.isoformat()
    return json.dumps({"threshold": threshold, "event": fields}, sort_keys=True)


def _read_rate_note(text: str) -> tuple[int, AccessEvent]:
    note = json.loads(text)
    fields = dict(note["event"])
    fields["time"] = datetime.fromisoformat(fields["time"])
    return int(note["threshold"]), AccessEvent(**fields)


@dataclass(slots=True)
class _Open:
    """A window this process knows is open, with the accesses it counted since the last
    flush."""

    opened_at: datetime
    closes_at: datetime
    pending: int = 0
    last_seen: datetime | None = None


@dataclass(slots=True)
class _Rate:
    """A principal's rate window as this process knows it: `counted` is the window's count
    when this process joined (every process's, the opening pull included) plus its own
    pulls since."""

    key: str
    closes_at: datetime
    counted: int


@dataclass(slots=True)
class _Tally:
    last: datetime
    count: int


@dataclass(frozen=True, slots=True)
class _Repo:
    rules: AccessRules
    team: str | None


class AccessMonitor:
    """See the module docstring."""

    def __init__(
        self,
        policy: Policy,
        ledger: Ledger,
        router: ChannelRouter,
        *,
        actor: str | None = None,
        user_agent_prefix: str = USER_AGENT_PREFIX,
        state_ttl: timedelta = STATE_TTL,
        flush_every: timedelta = FLUSH_EVERY,
        dedupe_ids: int = DEDUPE_IDS,
    ) -> None:
        self._policy = policy
        self._ledger = ledger
        self._router = router
        self._actor = actor
        self._ua_prefix = user_agent_prefix
        self._state_ttl = state_ttl
        self._flush_every = flush_every
        self._dedupe_ids = dedupe_ids
        self._templates = policy.quarantine_templates()
        self._repos: dict[str, _Repo] = {}
        self._states: dict[tuple[str, str, str], tuple[datetime, DigestState]] = {}
        self._tags: dict[tuple[str, str, str], tuple[datetime, str | None]] = {}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._tracked: set[tuple[str, str]] = set()
        self._tallies: dict[tuple[str, str, str, str], _Tally] = {}
        self._flushed: dict[tuple[str, str, str], datetime] = {}
        self._probes: dict[tuple[str, str, str], datetime] = {}
        """(registry, repository, digest) → its latest HEAD not yet written."""
        self._windows: dict[str, _Open] = {}
        self._rate: dict[str, _Rate] = {}

    @classmethod
    def from_policy(
        cls,
        policy: Policy,
        ledger: Ledger,
        router: ChannelRouter,
        *,
        actor: str | None = None,
    ) -> AccessMonitor:
        """A monitor over the policy's `access` sections and quarantine templates, the
        ledger it reads and writes, and the router that picks each alert's channels."""
        return cls(policy, ledger, router, actor=actor)

    # -- handling ---------------------------------------------------------------------------

    def handle(self, events: Sequence[AccessEvent], *, now: datetime) -> AccessResult:
        """Evaluate and record `events` (see the module docstring)."""
        result = AccessResult()
        for event in events:
            if self._ignored(event):
                result.ignored += 1
                continue
            result.handled += 1
            try:
                self._one(event, now, result)
            except BaseException:
                # not handled: its redelivery (SQS, a sender's retry) is no duplicate
                self._seen.pop(f"{event.source}|{event.event_id}", None)
                raise
        return result

    def _ignored(self, event: AccessEvent) -> bool:
        if self._is_self(event):
            return True
        seen = self._seen
        key = f"{event.source}|{event.event_id}"
        if key in seen:
            return True
        seen[key] = None
        if len(seen) > self._dedupe_ids:
            seen.popitem(last=False)
        return False

    def _is_self(self, event: AccessEvent) -> bool:
        if self._actor is not None and event.principal != self._actor:
            return False
        if event.user_agent is None:
            return self._actor is not None
        return event.user_agent.startswith(self._ua_prefix)

    def _one(self, event: AccessEvent, now: datetime, result: AccessResult) -> None:
        registry, repository = event.registry, event.repository
        from_quarantine = False
        if self._templates and is_destination(repository, self._templates):
            from_quarantine = True
            repository = self._source_repository(event)
        digest = event.digest
        if digest is None and event.tag is not None:
            digest = self._resolve_tag(registry, repository, event.tag, now)
        if event.action == "pull" and digest is not None:
            self._tally(registry, repository, digest, event, now)
        if event.probe:  # asked whether it is there: a use, not a pull to alert on
            return
        state = DigestState()
        if digest is not None:
            state = self._state(registry, repository, digest, now)
        if from_quarantine:
            state = DigestState(
                verdict=state.verdict, quarantined=True, quarantine_location=event.repository
            )
        repo = self._repo(repository)
        rate = 0
        if repo.rules.pull_rate is not None and event.action == "pull":
            rate = self._count_rate(event, repo.rules.pull_rate, digest, now, result)
        findings = evaluate(event, repo.rules, state, now, pulls_last_minute=rate)
        if not findings:
            return
        result.findings += len(findings)
        image = ImageRef(
            registry=registry,
            repository=repository,
            digest=digest,
            tag=None if digest is not None else event.tag,
        )
        for finding in findings:
            keys = self._window(event, finding, image, state, repo, now)
            result.alerts.extend(keys)

    def _source_repository(self, event: AccessEvent) -> str:
        sources = sources_of(event.repository, self._templates)
        if len(sources) > 1 and event.digest is not None:
            for source in sources:  # the one the ledger holds this digest in quarantine for
                if self._ledger.quarantined(event.registry, source, event.digest) is not None:
                    return source
        return sources[0] if sources else event.repository  # a fixed template names none

    def _resolve_tag(self, registry: str, repository: str, tag: str, now: datetime) -> str | None:
        key = (registry, repository, tag)
        cached = self._tags.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        digests = self._ledger.tag_digests(registry, repository, tag)
        digest = digests[-1] if digests else None
        self._tags[key] = (now + self._state_ttl, digest)
        return digest

    def _state(self, registry: str, repository: str, digest: str, now: datetime) -> DigestState:
        key = (registry, repository, digest)
        cached = self._states.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        record = self._ledger.quarantined(registry, repository, digest)
        held = record is not None and record.released_at is None
        state = DigestState(
            verdict=self._ledger.last_verdict(registry, repository, digest),
            quarantined=held,
            quarantine_location=record.location if held and record is not None else None,
        )
        if len(self._states) > 50_000:
            self._states.clear()
        self._states[key] = (now + self._state_ttl, state)
        return state

    def _repo(self, repository: str) -> _Repo:
        repo = self._repos.get(repository)
        if repo is None:
            effective = self._policy.for_repository(repository)
            repo = _Repo(rules=AccessRules.of(effective.access), team=effective.team)
            if len(self._repos) > 10_000:
                self._repos.clear()
            self._repos[repository] = repo
        return repo

    def _count_rate(
        self,
        event: AccessEvent,
        threshold: int,
        digest: str | None,
        now: datetime,
        result: AccessResult,
    ) -> int:
        """Count the pull into its principal's shared rate window (joining or opening it):
        the principal's pulls in the window as far as this process knows."""
        who = event.principal or ""
        rate = self._rate.get(who)
        opened = self._windows.get(rate.key) if rate is not None else None
        if rate is None or opened is None or now >= rate.closes_at:
            rate, opened = self._join_rate(event, threshold, digest, now, result)
            if len(self._rate) > 10_000:  # bounded: drop the minutes that are over
                self._rate = {p: r for p, r in self._rate.items() if r.closes_at > now}
            self._rate[who] = rate
            if opened is None:  # this pull opened the window: it is the window's first
                return rate.counted
        self._count(opened, event)
        rate.counted += 1
        return rate.counted

    def _join_rate(
        self,
        event: AccessEvent,
        threshold: int,
        digest: str | None,
        now: datetime,
        result: AccessResult,
    ) -> tuple[_Rate, _Open | None]:
        """Open the principal's rate window with this pull (then no `_Open` to count it
        into: it is the opening one), or join the one another process opened."""
        key = rate_key(event.principal)
        window = AccessWindow(
            key=key,
            registry=event.registry,
            repository=event.repository,
            digest=digest or "",
            opened_at=now,
            closes_at=now + RATE_WINDOW,
            count=0,
            last_seen=event.time,
            alert=_rate_note(event, threshold),
        )
        opened, theirs, closed = self._open_or_join(window, now)
        result.alerts.extend(closed)
        if opened:
            return _Rate(key, window.closes_at, counted=1), None
        if theirs is not None:
            return _Rate(key, theirs.closes_at, counted=theirs.count + 1), self._windows[key]
        # still racing: this pull counts here alone; the next one tries to join again
        return _Rate(key, now, counted=1), None

    def _tally(
        self, registry: str, repository: str, digest: str, event: AccessEvent, now: datetime
    ) -> None:
        if (registry, repository) not in self._tracked:
            self._ledger.start_pull_tracking(registry, repository, now=now)
            self._tracked.add((registry, repository))
        if event.probe:  # a HEAD marks the image used (its last-pulled time), no pull
            image = (registry, repository, digest)
            latest = self._probes.get(image)
            if latest is None or event.time > latest:
                self._probes[image] = event.time
            return
        key = (registry, repository, digest, event.principal or "")
        tally = self._tallies.get(key)
        if tally is None:
            self._tallies[key] = _Tally(event.time, 1)
        else:
            tally.count += 1
            if event.time > tally.last:
                tally.last = event.time

    # -- windows and alerts -----------------------------------------------------------------

    def _window(
        self,
        event: AccessEvent,
        finding: AccessFinding,
        image: ImageRef,
        state: DigestState,
        repo: _Repo,
        now: datetime,
    ) -> list[str]:
        digest = image.digest or ""
        key = window_key(finding.kind, event.principal, image.registry, image.repository, digest)
        known = self._windows.get(key)
        if known is not None and now < known.closes_at:
            self._count(known, event)
            return []
        alert = access_alert(
            event, finding, image=image, state=state, team=repo.team, window_start=now
        )
        window = AccessWindow(
            key=key,
            registry=image.registry,
            repository=image.repository,
            digest=digest,
            opened_at=now,
            closes_at=now + repo.rules.dedupe_window,
            count=0,
            last_seen=event.time,
            alert=alert.model_dump_json(),
        )
        opened, theirs, closed = self._open_or_join(window, now)
        if opened:
            return closed + self._commit(alert, image.registry, image.repository, digest, now)
        if theirs is not None:  # another process opened it: count into theirs
            self._count(self._windows[key], event)
        return closed

    def _open_or_join(
        self, window: AccessWindow, now: datetime
    ) -> tuple[bool, AccessWindow | None, list[str]]:
        """Open `window` in the ledger (True, None) or join the one another process has open
        under its key (False, that one), either way known in `_windows`; (False, None):
        still racing after three rounds. A due window not swept yet is closed first: the
        list is its outbox keys."""
        key = window.key
        closed: list[str] = []
        for _ in range(3):  # lost races re-read; three rounds settle any interleaving
            if self._ledger.open_access_window(window):
                self._windows[key] = _Open(opened_at=window.opened_at, closes_at=window.closes_at)
                return True, None, closed
            existing = self._ledger.access_window(key)
            if existing is None:
                self._windows.pop(key, None)  # dropped meanwhile: open it again
                continue
            if now < existing.closes_at:
                opened = self._windows.get(key)
                if opened is None or opened.opened_at != existing.opened_at:
                    self._windows[key] = _Open(
                        opened_at=existing.opened_at, closes_at=existing.closes_at
                    )
                return False, existing, closed
            # due but not swept yet: close it (with what this process counted) and reopen
            closed += self._close(existing, now)
        return False, None, closed

    @staticmethod
    def _count(window: _Open, event: AccessEvent) -> None:
        window.pending += 1
        if window.last_seen is None or event.time > window.last_seen:
            window.last_seen = event.time

    def _commit(
        self, alert: Alert, registry: str, repository: str, digest: str, now: datetime
    ) -> list[str]:
        body = alert.model_dump_json()
        items = tuple(
            OutboxItem(key=f"{alert.dedup_key}:{c.name}", channel=c.name, alert=body)
            for c in self._router.channels_for(alert)
        )
        if not items:
            return []
        added = self._ledger.commit_outcome(
            Outcome(
                delivery_id=None,
                registry=registry,
                repository=repository,
                digest=digest,
                verdict=None,
                alerts=items,
            ),
            now=now,
            ttl=OUTBOX_TTL,
        )
        return list(added or [])

    def _close(self, window: AccessWindow, now: datetime) -> list[str]:
        """Summarise (when anything was counted after the first access) and drop a window;
        the outbox keys added. A summary committed before a crash is not added again (its
        dedup key is the window's), so closing twice is harmless."""
        known = self._windows.pop(window.key, None)
        count = window.count
        last_seen = window.last_seen
        if known is not None and known.opened_at == window.opened_at:
            count += known.pending
            if known.last_seen is not None and (last_seen is None or known.last_seen > last_seen):
                last_seen = known.last_seen
        keys: list[str] = []
        if window.key.startswith(RATE_PREFIX):
            keys = self._close_rate(window, count + 1, now)  # the opening pull, then the rest
        elif window.alert:
            opening = Alert.model_validate_json(window.alert)
            where = (window.registry, window.repository, window.digest)
            # The opening alert once more: its outbox key is the window's, so one committed
            # before is not added again, and one lost to a crash between opening the window
            # and committing its alert is sent now — late, but never lost and never twice.
            keys = self._commit(opening, *where, now)
            if count > 0:
                summary = summary_alert(
                    opening, count=count, closed_at=window.closes_at, last_seen=last_seen
                )
                keys += self._commit(summary, *where, now)
        self._ledger.drop_access_window(window.key, opened_at=window.opened_at)
        return keys

    def _close_rate(self, window: AccessWindow, pulls: int, now: datetime) -> list[str]:
        """A closed rate window over its threshold: the pull-rate finding on the pull that
        opened it, through the finding's de-duplication window (one a process opened when
        it saw the rate itself counts this in)."""
        threshold, event = _read_rate_note(window.alert)
        finding = rate_finding(event, pulls, threshold)
        if finding is None:
            return []
        digest = window.digest or None
        image = ImageRef(
            registry=window.registry,
            repository=window.repository,
            digest=digest,
            tag=None if digest is not None else event.tag,
        )
        state = DigestState()
        if digest is not None:
            state = self._state(window.registry, window.repository, digest, now)
        return self._window(event, finding, image, state, self._repo(window.repository), now)

    def sweep(self, *, now: datetime) -> list[str]:
        """Close every window due at `now`: the outbox keys of the summaries committed."""
        keys: list[str] = []
        while True:
            due = self._ledger.access_windows_due(now=now, limit=SWEEP_LIMIT)
            for window in due:
                keys += self._close(window, now)
            if len(due) < SWEEP_LIMIT:
                return keys

    # -- flushing ---------------------------------------------------------------------------

    def flush(self, *, now: datetime, force: bool = False) -> int:
        """Write what is due: pull tallies of digests last written `flush_every` ago or more
        (all of them when `force`), as one `record_pulls`, and the accesses counted into
        open windows. Returns the ledger writes made (tally rows plus window counts)."""
        writes = 0
        due: list[PullTally] = []
        for key, tally in self._tallies.items():
            flushed = self._flushed.get(key[:3])
            if not force and flushed is not None and now - flushed < self._flush_every:
                continue
            due.append(PullTally(*key, last_pulled=tally.last, count=tally.count))
        if due:
            self._ledger.record_pulls(due)
            for done in due:
                self._tallies.pop((done.registry, done.repository, done.digest, done.principal))
                self._flushed[(done.registry, done.repository, done.digest)] = now
            writes += len(due)
        for image, at in list(self._probes.items()):
            flushed = self._flushed.get(image)
            if not force and flushed is not None and now - flushed < self._flush_every:
                continue
            self._ledger.record_pull(*image, now=at)  # the image's last use; no count
            del self._probes[image]
            self._flushed[image] = now
            writes += 1
        if writes and len(self._flushed) > 50_000:
            cutoff = now - self._flush_every
            self._flushed = {k: t for k, t in self._flushed.items() if t > cutoff}
        for wkey, window in list(self._windows.items()):
            if window.pending:
                ok = self._ledger.count_access(
                    wkey,
                    opened_at=window.opened_at,
                    add=window.pending,
                    last_seen=window.last_seen or now,
                )
                writes += 1
                if ok:
                    window.pending = 0
                else:  # gone or reopened by another process: forget it
                    del self._windows[wkey]
            elif window.closes_at <= now:
                del self._windows[wkey]  # the sweep closes it
        return writes

    @property
    def pending_tallies(self) -> int:
        """Pull tallies (and HEADs' last-use times) held in memory, not yet written."""
        return len(self._tallies) + len(self._probes)
