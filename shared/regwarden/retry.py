"""The one retry helper: the OCI client, Harbor's API and the HTTP alert channels use it.

    tries = Retries(attempts=4, backoff=Backoff(0.2, 10.0), max_retry_after=60, until=...)
    while True:
        ... send; on a failure worth another try:
        wait = tries.next_wait(tries.retry_after(response.headers.get("retry-after")))
        if isinstance(wait, GiveUp): raise ...(wait.reason())
        if tries.pause(wait) is not None: raise ...(deadline)

It decides; callers send and word their own errors:

- the wait: exponential backoff with jitter (`Backoff`), or the server's `Retry-After`
  (delta-seconds or HTTP-date); a `Retry-After` over `max_retry_after` ends the operation
  at once, so the caller can hand the wait back to whoever schedules the next try;
- the bounds: `attempts` requests in all (the first included) and an overall deadline
  (`until`, on `clock`): a wait that would end at or past it is not taken;
- replays (`may_replay`): an idempotent request may be sent again after any failure; a
  write that is not idempotent only when it provably never reached the server (no
  connection was made), since a lost answer may hide a write that happened.

`clock` (monotonic seconds), `sleep`, `rand` (in [0, 1)) and `now` (wall time, for
HTTP-date `Retry-After`) are injectable, so tests neither sleep nor guess.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Literal

import httpx

__all__ = [
    "RETRYABLE_STATUS",
    "Backoff",
    "GiveUp",
    "Retries",
    "explained",
    "may_replay",
    "parse_retry_after",
    "tally",
    "unsent",
]

#: Statuses worth retrying at a registry or Harbor: throttling and transient server or
#: gateway failures. (The alert channels keep their own wider set.)
RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})


def unsent(failure: BaseException) -> bool:
    """Whether a transport failure provably sent nothing: no connection was made (refused,
    timed out connecting, or no pooled connection free), so the server cannot have acted."""
    return isinstance(failure, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)


def may_replay(*, idempotent: bool, failure: BaseException | None) -> bool:
    """Whether a request may be sent again after `failure` (None: the server answered).

    A write that is not idempotent (a PUT of a streamed body, a blob's final PUT) is sent
    again only when it never left; an answer, even a 429 or 503, says it reached the
    server, so the caller decides by other means (did the blob land?) instead."""
    return idempotent or (failure is not None and unsent(failure))


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
    """Seconds to wait from a `Retry-After` value (delta-seconds or HTTP-date), or None.

    A date in the past means "now" (0.0); anything unparseable is ignored (None).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def tally(attempts: int) -> str:
    """`1 attempt`, `3 attempts`."""
    return f"{attempts} attempt{'' if attempts == 1 else 's'}"


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff: the n-th retry (from 0) waits up to `min(cap, base * 2**n)`.

    Equal jitter (the default) scales that step into [½, 1), so a wait is never zero
    unless `base` is; `full_jitter` takes it uniformly from [0, step)."""

    base: float
    cap: float
    full_jitter: bool = False

    def delay(self, retry: int, rand: float) -> float:
        """The wait before retry number `retry` (from 0), for `rand` in [0, 1)."""
        step = min(self.cap, self.base * 2.0**retry)
        return rand * step if self.full_jitter else step * (0.5 + rand / 2)


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Why not to try again: attempts used up, a `Retry-After` over the cap (`wait` is what
    the server asked), or a wait that would pass the deadline (`wait` is that wait)."""

    why: Literal["attempts", "retry-after", "deadline"]
    attempts: int
    wait: float | None = None
    max_retry_after: float = 0.0

    def reason(self) -> str:
        if self.why == "retry-after" and self.wait is not None:
            return f"it asked to wait {self.wait:.0f}s, over our {self.max_retry_after:.0f}s"
        if self.why == "deadline":
            return f"out of time after {tally(self.attempts)}"
        return f"gave up after {tally(self.attempts)}"


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Retries:
    """One operation's retries: how many were taken, and whether to take another."""

    def __init__(
        self,
        *,
        attempts: int,
        backoff: Backoff,
        max_retry_after: float = float("inf"),
        until: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rand: Callable[[], float] = random.random,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.limit = attempts
        self.backoff = backoff
        self.max_retry_after = max_retry_after
        self.until = until
        self._clock = clock
        self._sleep = sleep
        self._rand = rand
        self._now = now
        self.retries = 0
        """Waits taken so far: the attempts finished before the current one."""

    @property
    def attempts(self) -> int:
        """Attempts made, the current one included."""
        return self.retries + 1

    def left(self) -> float | None:
        """Seconds to the deadline (negative once passed); None without one."""
        return None if self.until is None else self.until - self._clock()

    def retry_after(self, header: str | None) -> float | None:
        """A `Retry-After` header's wait in seconds, read against `now`."""
        return parse_retry_after(header, now=self._now())

    def next_wait(self, retry_after: float | None = None) -> float | GiveUp:
        """The wait before the next attempt, or why there is none (the deadline is checked
        by `pause`, so a caller can report the wait first)."""
        if retry_after is not None and retry_after > self.max_retry_after:
            return GiveUp("retry-after", self.attempts, retry_after, self.max_retry_after)
        if self.attempts >= self.limit:
            return GiveUp("attempts", self.attempts)
        if retry_after is not None:
            return retry_after
        return self.backoff.delay(self.retries, self._rand())

    def wait_or_give_up(self, retry_after: float | None = None) -> GiveUp | None:
        """`next_wait` then `pause`: None once the wait is over (try again), else why not."""
        wait = self.next_wait(retry_after)
        return wait if isinstance(wait, GiveUp) else self.pause(wait)

    def pause(self, wait: float) -> GiveUp | None:
        """Sleep `wait` and count the retry; a GiveUp instead if it would end at or past the
        deadline (no point waiting to be late)."""
        if self.until is not None and self._clock() + wait >= self.until:
            return GiveUp("deadline", self.attempts, wait)
        self._sleep(wait)
        self.retries += 1
        return None


def explained(last: str, stop: GiveUp, budget: float) -> str:
    """The last failure, with why no further attempt was made when that was not simply the
    attempts running out (a delivery's error message)."""
    if stop.why == "retry-after" and stop.wait is not None:
        return f"{last}, asked to wait {stop.wait:.0f}s"
    if stop.why == "deadline":
        return f"{last}, out of its {budget:.0f}s budget"
    return last
