"""`oci.gather`: independent round trips together, every call finished before returning."""

from __future__ import annotations

import threading
import time

import pytest

from regwarden.errors import NotFound, RegistryError
from regwarden.oci import gather, in_background


def test_results_keep_call_order() -> None:
    def slow(value: int, delay: float) -> int:
        time.sleep(delay)
        return value

    out = gather([lambda: slow(1, 0.03), lambda: slow(2, 0.0), lambda: slow(3, 0.01)])
    assert out == [1, 2, 3]


def test_calls_really_overlap() -> None:
    # Three calls that each wait for the other two: run one after another they could only
    # break the barrier (its timeout), so a pass proves they ran at the same time.
    barrier = threading.Barrier(3, timeout=5)
    threads: set[str] = set()

    def meet() -> int:
        threads.add(threading.current_thread().name)
        return barrier.wait()

    indexes = gather([meet, meet, meet])
    assert sorted(indexes) == [0, 1, 2]
    assert threading.current_thread().name in threads  # the first ran on the caller


def test_waits_for_every_call_before_raising_the_first_failure() -> None:
    finished: list[str] = []

    def fail_fast() -> str:
        raise NotFound("first")

    def fail_later() -> str:
        time.sleep(0.02)
        finished.append("later")
        raise RegistryError("second")

    def slow_ok() -> str:
        time.sleep(0.05)
        finished.append("slow")
        return "ok"

    with pytest.raises(NotFound, match="first"):
        gather([fail_fast, fail_later, slow_ok])
    assert sorted(finished) == ["later", "slow"]  # nothing still running afterwards


def test_a_later_failure_is_raised_when_the_first_call_succeeds() -> None:
    def boom() -> int:
        raise RegistryError("boom")

    with pytest.raises(RegistryError, match="boom"):
        gather([lambda: 1, boom])


def test_trivial_inputs() -> None:
    assert gather([]) == []
    caller = threading.current_thread().name
    assert gather([lambda: threading.current_thread().name]) == [caller]


def test_in_background_runs_off_the_caller() -> None:
    future = in_background(lambda: threading.current_thread().name)
    assert future.result(timeout=5).startswith("regwarden-io")
