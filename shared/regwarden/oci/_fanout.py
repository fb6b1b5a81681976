"""Independent registry round trips issued together instead of one after another.

A push-gate decision needs several lookups that do not depend on each other (the `.sig`
and `.att` tags, the referrers, the image config) and a move mounts every blob of the
image; on a registry with a 1-2 ms round trip, doing them in turn is most of the latency.
These helpers run such calls on one process-wide pool of I/O threads.

Only leaf calls (single requests, or short chains that never submit work themselves) go on
the pool, so a task never waits for another task queued behind it: no deadlock however
busy the pool is. The first call runs on the caller's thread; every call is waited for
before returning, so nothing is still talking to the registry once the caller moves on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")

MAX_IO_THREADS = 16
"""Upper bound on concurrent background requests in this process (all clients together)."""

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()

__all__ = ["MAX_IO_THREADS", "gather", "in_background", "on_own_thread"]


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(
                    max_workers=MAX_IO_THREADS, thread_name_prefix="regwarden-io"
                )
    return _pool


def in_background(call: Callable[[], T]) -> Future[T]:
    """Start a leaf call on the I/O pool; `.result()` returns its value or raises its error."""
    return _executor().submit(call)


def on_own_thread(call: Callable[[], T]) -> Future[T]:
    """Start `call` on a thread of its own, not the pool: for a leaf call that a task
    already on the pool makes beside its own request. Queued on the pool, it could wait
    behind the very tasks that wait for it; a thread of its own never does."""
    future: Future[T] = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(call())
        except BaseException as exc:  # handed to whoever reads the result
            future.set_exception(exc)

    threading.Thread(target=run, name="regwarden-io-aside", daemon=True).start()
    return future


def gather(calls: Sequence[Callable[[], T]]) -> list[T]:
    """Run `calls` concurrently and return their results in order. Every call finishes
    before this returns; then the first failure (in call order) is raised."""
    if not calls:
        return []
    if len(calls) == 1:
        return [calls[0]()]
    futures = [in_background(c) for c in calls[1:]]
    results: list[T] = []
    error: BaseException | None = None
    try:
        results.append(calls[0]())
    except BaseException as exc:  # re-raised below, once the others are done
        error = exc
    for future in futures:
        try:
            results.append(future.result())
        except BaseException as exc:
            if error is None:
                error = exc
    if error is not None:
        raise error
    return results
