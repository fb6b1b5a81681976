"""The cold start's garbage-collector pause, shared by the platform adapters.

A cold start makes ~120,000 long-lived objects (modules, classes, pydantic schemas, the
SDKs' models) and next to no cyclic garbage; every collection during it walks the
survivors again for next to nothing (~100 ms of a cold start, on Lambda and on Cloud Run
alike). On its platform (the environment variable the platform sets: Lambda's
`AWS_LAMBDA_FUNCTION_NAME`, Cloud Run's `K_SERVICE`) an adapter pauses the collector when
its package is imported and resumes it after its first state is built (or failed to
build): what the cold start made is frozen, so later collections skip it; a rebuilt state
unfreezes it so the old one can be collected. Elsewhere (tests, `invoke`) the collector is
left alone. Standard library only at import: the AWS handler modules import this before
the core.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from regwarden.warm import ColdStart, Warm

__all__ = ["ColdStartPause"]

_S = TypeVar("_S", bound="Warm")


class ColdStartPause:
    """The collector paused from construction (on the platform only) to `resume()`."""

    def __init__(self, platform_env: str) -> None:
        self.paused = bool(os.environ.get(platform_env)) and gc.isenabled()
        if self.paused:
            gc.disable()

    def resume(self) -> None:
        """End the pause (once): freeze what the cold start made, collect again."""
        if self.paused:
            self.paused = False
            gc.freeze()
            gc.enable()

    def cold_start(
        self,
        build: Callable[[str], _S],
        close: Callable[[_S], None],
        *,
        resume_when_built: bool = True,
    ) -> ColdStart[_S]:
        """`regwarden.warm.ColdStart` that resumes the collector after its first build
        (without `resume_when_built`: the adapter calls `resume()` itself, later) and
        unfreezes the frozen cold start when a state is rebuilt. The core is imported
        here, when the adapter first needs its state."""
        from regwarden.warm import ColdStart

        first_built = self.resume if resume_when_built else _nothing
        return ColdStart(build, close, first_built=first_built, rebuilt=gc.unfreeze)


def _nothing() -> None:
    return None
