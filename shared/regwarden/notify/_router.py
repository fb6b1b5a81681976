"""Routing: which channels an alert goes to. The selection rule comes from the policy
(`notifications.routes`); the router only resolves names to channels and fans out."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from ._alert import Alert
from ._channels import Notifier

Selector = Callable[[Alert], Sequence[str]]


class Router:
    """Sends an alert to each selected channel once; unselected alerts go to `fallback`."""

    def __init__(
        self,
        select: Selector,
        channels: Mapping[str, Notifier],
        *,
        fallback: Sequence[Notifier] = (),
    ) -> None:
        self._select = select
        self._channels = dict(channels)
        self._fallback = tuple(fallback)

    def channel(self, name: str) -> Notifier | None:
        """A channel by name: the outbox delivers to the channel its row names."""
        if name in self._channels:
            return self._channels[name]
        return next((c for c in self._fallback if c.name == name), None)

    def channels_for(self, alert: Alert) -> list[Notifier]:
        names = list(dict.fromkeys(self._select(alert)))
        unknown = [n for n in names if n not in self._channels]
        if unknown:
            raise ValueError(
                f"routes name unknown channels: {', '.join(unknown)}; "
                f"defined: {', '.join(sorted(self._channels)) or 'none'}"
            )
        if not names:
            return list(self._fallback)
        return [self._channels[n] for n in names]


def everything_to(*channels: Notifier) -> Router:
    """A router that sends every alert to `channels` (local runs, tests)."""
    return Router(lambda _alert: [c.name for c in channels], {c.name: c for c in channels})
