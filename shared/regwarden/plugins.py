"""Name → factory registries: how every plug-in point is extended (Cloud Custodian style).

Each plug-in point owns one `PluginRegistry` (providers, scan sources, alert channels,
intake parsers, in-use inventories, ledgers, queues, recheck schedulers). An
implementation registers itself where it is defined:

    SCAN_SOURCES = PluginRegistry[ScanSourceFactory]("scan source")

    @SCAN_SOURCES.register("harbor")
    def _harbor(context: ScanContext) -> ScanSource: ...

and the core looks it up by the name the policy or a URL gives (`SCAN_SOURCES.get(name)`).
A factory that needs a heavy SDK imports it inside its body, so registering costs nothing
at import. The package that owns a registry imports its built-in implementations by name
(no discovery by side effect), so what is registered is what the code says.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from .errors import UsageError

T = TypeVar("T")

__all__ = ["PluginRegistry"]


class PluginRegistry(Generic[T]):
    """Factories of one kind of plug-in, by name. Looking up an unknown name is a usage
    error (exit 2) that lists the valid ones."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._entries: dict[str, T] = {}

    def register(self, name: str, *aliases: str) -> Callable[[T], T]:
        """Decorator: register `factory` under `name` (and `aliases`)."""

        def wrap(factory: T) -> T:
            self.add(name, factory, *aliases)
            return factory

        return wrap

    def add(self, name: str, factory: T, *aliases: str) -> None:
        for key in (name, *aliases):
            if key in self._entries and self._entries[key] is not factory:
                raise ValueError(f"{self.what} {key!r} is registered twice")
            self._entries[key] = factory

    def unregister(self, name: str) -> T:
        """Remove `name` (not its aliases) and return its factory: a test's stand-in is
        registered for the test and removed after."""
        try:
            return self._entries.pop(name)
        except KeyError:
            raise ValueError(f"{self.what} {name!r} is not registered") from None

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(sorted(self._entries)) or "none"
            raise UsageError(f"unknown {self.what} {name!r}; valid: {valid}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._entries))
