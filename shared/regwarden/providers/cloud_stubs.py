"""Placeholders for cloud registries whose provider has not landed (none today: ACR's
landed with #14; the mechanism stays for the next cloud).

They fail cleanly, saying what to install and that the provider is not built yet, so a
user pointing regwarden at a cloud registry gets an answer, not a traceback.
"""

from __future__ import annotations

from importlib.util import find_spec

from ..errors import NotImplementedYet
from . import ProviderOptions, Registry, register

_CLOUD: dict[str, tuple[str, str, str]] = {}
"""kind → (label, the extra to install, a module of that extra)."""


def _unavailable(kind: str, host: str) -> NotImplementedYet:
    label, extra, module = _CLOUD[kind]
    try:
        installed = find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        installed = False
    if not installed:
        return NotImplementedYet(
            f"{host} is {label}; its provider needs the '{extra}' extra",
            hint=f"pip install 'regwarden[{extra}]'",
        )
    return NotImplementedYet(f"{host} is {label}; that provider is not supported yet")


def _make(kind: str) -> None:
    @register(kind)
    def factory(host: str, options: ProviderOptions) -> Registry:
        raise _unavailable(kind, host)


for _kind in _CLOUD:
    _make(_kind)
