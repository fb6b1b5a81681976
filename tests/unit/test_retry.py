"""regwarden.retry: the waits (backoff with jitter, Retry-After), the bounds (attempts, the
Retry-After cap, the overall deadline) and the replay rule, on a fake clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from regwarden.retry import Backoff, GiveUp, Retries, may_replay, tally, unsent

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@dataclass
class Clock:
    """Monotonic and wall time that move only when the caller sleeps."""

    mono: float = 1000.0
    slept: list[float] = field(default_factory=list)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.mono += seconds

    def monotonic(self) -> float:
        return self.mono

    def now(self) -> datetime:
        return T0 + timedelta(seconds=self.mono - 1000.0)


def _retries(clock: Clock, **kwargs: object) -> Retries:
    settings: dict[str, object] = {
        "attempts": 4,
        "backoff": Backoff(1.0, 8.0),
        "max_retry_after": 30.0,
    }
    settings.update(kwargs)
    return Retries(
        clock=clock.monotonic,
        sleep=clock.sleep,
        rand=lambda: 0.0,
        now=clock.now,
        **settings,  # type: ignore[arg-type]
    )


def test_equal_jitter_keeps_half_the_step_and_full_jitter_may_be_zero() -> None:
    equal, full = Backoff(0.5, 4.0), Backoff(0.5, 4.0, full_jitter=True)
    assert [equal.delay(n, rand=0.0) for n in range(5)] == [0.25, 0.5, 1.0, 2.0, 2.0]
    assert [equal.delay(n, rand=0.999) for n in range(5)] == pytest.approx(
        [0.49975, 0.9995, 1.999, 3.998, 3.998]
    )
    assert full.delay(3, rand=0.0) == 0.0
    assert full.delay(30, rand=0.5) == 2.0  # capped


def test_backoff_until_the_attempts_run_out() -> None:
    clock = Clock()
    tries = _retries(clock)
    while not isinstance(wait := tries.next_wait(), GiveUp):
        assert tries.pause(wait) is None
    assert clock.slept == [0.5, 1.0, 2.0]  # three waits between four attempts
    assert wait == GiveUp("attempts", 4)
    assert wait.reason() == "gave up after 4 attempts"
    assert tries.attempts == 4 and tries.retries == 3


def test_retry_after_is_waited_for_in_seconds_or_as_an_http_date() -> None:
    clock = Clock()
    tries = _retries(clock)
    assert tries.next_wait(tries.retry_after("7")) == 7.0
    date = "Sun, 01 Mar 2026 12:00:12 GMT"
    assert tries.next_wait(tries.retry_after(date)) == 12.0
    tries.pause(12.0)
    assert tries.next_wait(tries.retry_after(date)) == 0.0  # that time has come
    assert tries.next_wait(tries.retry_after("soon")) == 1.0  # unreadable: backoff


def test_retry_after_over_the_cap_gives_up_at_once_with_the_wait() -> None:
    clock = Clock()
    tries = _retries(clock, max_retry_after=30.0)
    stop = tries.next_wait(tries.retry_after("3600"))
    assert stop == GiveUp("retry-after", 1, 3600.0, 30.0)
    assert isinstance(stop, GiveUp) and stop.reason() == "it asked to wait 3600s, over our 30s"
    assert clock.slept == []


def test_a_wait_that_would_end_at_the_deadline_is_not_taken() -> None:
    clock = Clock()
    tries = _retries(clock, until=clock.mono + 10.0, attempts=10)
    assert tries.pause(4.0) is None
    assert tries.left() == 6.0
    stop = tries.pause(6.0)  # would end exactly at the deadline
    assert stop == GiveUp("deadline", 2, 6.0)
    assert clock.slept == [4.0]
    assert tries.retries == 1


def test_without_a_deadline_there_is_no_time_left_to_count() -> None:
    tries = _retries(Clock())
    assert tries.left() is None
    assert tries.pause(1e6) is None


def _request() -> httpx.Request:
    return httpx.Request("PUT", "https://registry.example.com/v2/a/blobs/uploads/1")


@pytest.mark.parametrize(
    ("failure", "never_left"),
    [
        (httpx.ConnectError("refused", request=_request()), True),
        (httpx.ConnectTimeout("slow connect", request=_request()), True),
        (httpx.PoolTimeout("no connection free", request=_request()), True),
        (httpx.ReadTimeout("no answer", request=_request()), False),
        (httpx.WriteError("broken pipe", request=_request()), False),
        (httpx.RemoteProtocolError("closed mid-answer", request=_request()), False),
    ],
)
def test_a_write_is_replayed_only_when_it_never_left(
    failure: httpx.TransportError, never_left: bool
) -> None:
    assert unsent(failure) is never_left
    assert may_replay(idempotent=False, failure=failure) is never_left
    assert may_replay(idempotent=True, failure=failure)


def test_an_answered_write_is_never_replayed() -> None:
    assert not may_replay(idempotent=False, failure=None)  # even a 429 or 503
    assert may_replay(idempotent=True, failure=None)


def test_tally() -> None:
    assert [tally(n) for n in (0, 1, 2)] == ["0 attempts", "1 attempt", "2 attempts"]
