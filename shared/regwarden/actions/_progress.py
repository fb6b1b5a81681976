"""An action's progress, recorded in the ledger before the registry write it leads to.

`note` marks the state changed (and sets its step); `before_write` writes it, if changed,
and is called before each write to the registry. So a write never goes out before the
progress that led to it is recorded, while the progress after a write waits for the next
write or for the action's own finishing record: an attempt killed in between repeats that
write, which is harmless (as one killed between a write and its record always did), and
two records in a row are one. `recorded_on_error` writes what was noted when an error
(not a kill) stops the action, for `quarantine show` and the retry.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any


class Progress:
    """See the module docstring. `state` is the action's state; `write(state)` records it
    as an unfinished intent."""

    def __init__(self, state: dict[str, Any], write: Callable[[dict[str, Any]], None]) -> None:
        self.state = state
        self._write = write
        self._unsaved = False

    def note(self, step: str | None = None) -> None:
        if step is not None:
            self.state["step"] = step
        self._unsaved = True

    def before_write(self) -> None:
        if self._unsaved:
            self._write(self.state)
            self._unsaved = False

    @contextlib.contextmanager
    def recorded_on_error(self) -> Iterator[None]:
        try:
            yield
        except BaseException:
            with contextlib.suppress(Exception):  # the error that stopped it is the one raised
                self.before_write()
            raise
