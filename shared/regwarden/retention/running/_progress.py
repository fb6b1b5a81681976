"""Progress of an apply: a rich bar on a terminal, a plain periodic line otherwise (logs of
a CronJob or a CI job), nothing in tests."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TextIO

__all__ = ["LineProgress", "NoProgress", "Progress", "RichProgress", "progress_for"]


class Progress(Protocol):
    """What the executor reports to. Called from worker threads: implementations lock."""

    def start(self, total: int, description: str) -> None: ...

    def advance(self, n: int = 1, *, throttled: int = 0, concurrency: int = 0) -> None: ...

    def finish(self) -> None: ...


class NoProgress:
    def start(self, total: int, description: str) -> None:
        return None

    def advance(self, n: int = 1, *, throttled: int = 0, concurrency: int = 0) -> None:
        return None

    def finish(self) -> None:
        return None


class LineProgress:
    """`retention: 500/2000 (25%) · 3 throttled · concurrency 4` every `interval` seconds,
    and once at the end."""

    def __init__(
        self,
        stream: TextIO,
        *,
        interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stream = stream
        self._interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._done = 0
        self._total = 0
        self._throttled = 0
        self._concurrency = 0
        self._description = ""
        self._last = 0.0

    def start(self, total: int, description: str) -> None:
        with self._lock:
            self._total, self._description, self._done = total, description, 0
            self._last = self._clock()

    def _line(self) -> str:
        pct = 100 * self._done // self._total if self._total else 100
        text = f"{self._description}: {self._done}/{self._total} ({pct}%)"
        if self._throttled:
            text += f" · {self._throttled} throttled"
        if self._concurrency:
            text += f" · concurrency {self._concurrency}"
        return text

    def advance(self, n: int = 1, *, throttled: int = 0, concurrency: int = 0) -> None:
        with self._lock:
            self._done += n
            self._throttled = max(self._throttled, throttled)
            self._concurrency = concurrency or self._concurrency
            now = self._clock()
            if now - self._last < self._interval:
                return
            self._last = now
            line = self._line()
        print(line, file=self._stream, flush=True)

    def finish(self) -> None:
        with self._lock:
            line = self._line()
        print(line, file=self._stream, flush=True)


class RichProgress:
    """A rich progress bar (on stderr by default), with throttling shown in the text."""

    def __init__(self, stream: TextIO | None = None) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as Bar

        self._bar = Bar(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(file=stream or sys.stderr),
            transient=False,
        )
        self._task: Any = None
        self._lock = threading.Lock()

    def start(self, total: int, description: str) -> None:
        with self._lock:
            self._bar.start()
            self._task = self._bar.add_task(description, total=total, note="")

    def advance(self, n: int = 1, *, throttled: int = 0, concurrency: int = 0) -> None:
        with self._lock:
            note = f"{throttled} throttled, concurrency {concurrency}" if throttled else ""
            self._bar.update(self._task, advance=n, note=note)

    def finish(self) -> None:
        with self._lock:
            self._bar.stop()


def progress_for(stream: TextIO | None = None, *, interval: float = 5.0) -> Progress:
    """A bar when `stream` (default stderr) is a terminal, else periodic lines."""
    stream = stream or sys.stderr
    isatty = getattr(stream, "isatty", None)
    if callable(isatty) and isatty():
        return RichProgress(stream)
    return LineProgress(stream, interval=interval)
