"""What a cloud function keeps while its process stays warm, the same on every cloud:

- `ColdStart`: per-function state built on the first event of a cold start, looked at
  again every TTL and rebuilt when its policy changed or a secret it used was rotated;
- `PolicySource`: the policy as loaded, with the text it came from (to tell a change);
- `SecretEnv`: the environment `resolve_secret` reads, whose `REGWARDEN_SECRET_*` values
  come from the platform's secret store (a `fetch` the adapter gives), never from the
  process environment;
- `env_int`, `env_choice`: settings read from the environment with errors that name them.

The adapters (`functions/aws`, `functions/gcp`) give the platform parts: how a remote
policy is read, how a secret is fetched, what to do around the first build.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from .errors import PolicyError, UsageError

if TYPE_CHECKING:
    from .pipeline import Pipeline
    from .policy import Policy

__all__ = [
    "ColdStart",
    "GateState",
    "PolicyReader",
    "PolicySource",
    "SecretEnv",
    "SecretFetch",
    "env_choice",
    "env_int",
    "env_prefixes",
    "env_required",
]

log = logging.getLogger("regwarden.warm")


def env_int(env: Mapping[str, str], name: str, default: int, *, least: int) -> int:
    """A whole-number setting (`default` when unset); UsageError naming it otherwise."""
    text = (env.get(name) or str(default)).strip()
    if not text.isdigit() or int(text) < least:
        raise UsageError(f"{name}: got {text!r}, expected a whole number >= {least}")
    return int(text)


def env_required(env: Mapping[str, str], name: str, what: str) -> str:
    """A setting that must be given; UsageError naming it and what it should be."""
    value = (env.get(name) or "").strip()
    if not value:
        raise UsageError(f"{name} is not set; expected {what}")
    return value


def env_choice(env: Mapping[str, str], name: str, valid: tuple[str, ...]) -> str:
    """One of `valid` (the first when unset); never a guess for anything else."""
    value = (env.get(name) or valid[0]).strip().lower()
    if value not in valid:
        raise UsageError(f"{name}: got {value!r}, expected one of: " + ", ".join(valid))
    return value


def env_prefixes(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    """Comma-separated repository prefixes (unset: `("",)`, every repository; each kept
    once, in order)."""
    raw = env.get(name)
    return ("",) if raw is None else tuple(dict.fromkeys(p.strip() for p in raw.split(",")))


# -- the policy -------------------------------------------------------------------------------

PolicyReader = Callable[[str], "str | None"]
"""A policy location → its text, when the location is one the platform reads itself (S3,
SSM, Secret Manager …); None: the location is a file bundled with the function."""


def _file_text(uri: str) -> str:
    try:
        return Path(uri).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot read the policy from {uri}: {exc}") from None


@dataclass(frozen=True, slots=True)
class PolicySource:
    """The policy as loaded, with the text it came from (to tell when it changed)."""

    uri: str
    text: str
    policy: Policy
    read: PolicyReader

    @classmethod
    def load(cls, uri: str, read: PolicyReader, *, base_dir: Path) -> PolicySource:
        """Load and validate the policy at `uri`: through `read` when it reads that
        location (`file://` locations inside it resolve against `base_dir`, the function's
        code directory), else from the bundled file. A policy with settings no code would
        carry out fails the cold start (PolicyError), as `regwarden policy validate`
        reports it."""
        from .policy import ensure_supported, load_policy, load_policy_text

        text = read(uri)
        if text is not None:
            policy = load_policy_text(text, source=uri, base_dir=base_dir)
        else:
            policy = load_policy(uri)  # its own errors for a file that is missing or invalid
            text = _file_text(uri)
        ensure_supported(policy)
        return cls(uri, text, policy, read)

    def current_text(self) -> str:
        """The policy's text as it is now (read again)."""
        text = self.read(self.uri)
        return _file_text(self.uri) if text is None else text

    def changed(self) -> bool:
        """True when the policy's text differs from what was loaded (read again now)."""
        return self.current_text() != self.text


# -- secrets ----------------------------------------------------------------------------------


class SecretFetch(Protocol):
    """A secret's value by its name in the policy (`secret://NAME`); `fresh` skips any cache
    (to tell a rotation). Raises UsageError naming the secret, never a value."""

    def __call__(self, name: str, *, fresh: bool = False) -> str: ...


class SecretEnv(Mapping[str, str]):
    """The environment `resolve_secret` reads, with `REGWARDEN_SECRET_*` values fetched
    from the platform's secret store on first use, never from the process environment.
    Other variables come from `base`."""

    def __init__(self, base: Mapping[str, str], names: Mapping[str, str], fetch: SecretFetch):
        self._base = {k: v for k, v in base.items() if not k.startswith("REGWARDEN_SECRET_")}
        self._names = dict(names)
        self._fetch = fetch
        self._served: dict[str, str] = {}
        """Secret name → the value last handed out (what was built from it)."""

    def rotated(self) -> bool:
        """True when a secret handed out so far has another value now (fetched afresh)."""
        return any(self._fetch(name, fresh=True) != v for name, v in list(self._served.items()))

    def __getitem__(self, key: str) -> str:
        if key in self._names:
            name = self._names[key]
            value = self._served[name] = self._fetch(name)
            return value
        return self._base[key]

    def __iter__(self) -> Iterator[str]:
        yield from self._base
        yield from (k for k in self._names if k not in self._base)

    def __len__(self) -> int:
        return len(set(self._base) | set(self._names))


class GateState:
    """What a function's state derives from its fields, on every cloud (a mixin for the
    adapter's dataclass, which declares these fields)."""

    function: str
    source: PolicySource
    keys: SecretEnv
    """The secrets the gate itself needs (keys), fetched at cold start (fail closed)."""
    secrets: SecretEnv
    """Channel secrets (webhook URLs, HMAC keys), fetched on first use."""
    pipeline: Pipeline | None

    @property
    def policy(self) -> Policy:
        return self.source.policy

    @property
    def gate(self) -> Pipeline:
        assert self.pipeline is not None, f"{self.function} is not a gate function"
        return self.pipeline

    def stale(self) -> bool:
        """The policy changed, or a secret built into this state was rotated."""
        return self.source.changed() or self.keys.rotated() or self.secrets.rotated()


# -- per-process state ------------------------------------------------------------------------


class Warm(Protocol):
    """What `ColdStart` asks of a state."""

    @property
    def ttl(self) -> float: ...

    def stale(self) -> bool: ...


S = TypeVar("S", bound=Warm)


def _nothing() -> None:
    pass


class ColdStart(Generic[S]):
    """Per-function state built on the first event of a cold start and kept while the
    process stays warm; `refresh` (once per invocation) looks again after the state's TTL
    and rebuilds it when it is stale; `reset` closes and forgets it (tests change the
    environment).

    `first_built` runs once, after the first build returned or failed; `rebuilt` after a
    state was replaced (the AWS functions pause and resume the garbage collector there)."""

    def __init__(
        self,
        build: Callable[[str], S],
        close: Callable[[S], None],
        *,
        first_built: Callable[[], None] = _nothing,
        rebuilt: Callable[[], None] = _nothing,
    ) -> None:
        self._build = build
        self._close = close
        self._first_built = first_built
        self._rebuilt = rebuilt
        self._states: dict[str, S] = {}
        self._checked: dict[str, float] = {}
        self._lock = threading.Lock()

    def get(self, function: str) -> S:
        with self._lock:
            found = self._states.get(function)
            if found is None:
                try:
                    found = self._states[function] = self._build(function)
                    self._checked[function] = time.monotonic()
                finally:
                    self._first_built()
            return found

    def refresh(self, function: str) -> S:
        """The state, rebuilt first when its TTL has passed and it is stale. A policy or
        secret that cannot be read or a new policy that fails to load keeps the last good
        state (logged; looked at again after the next TTL)."""
        with self._lock:
            found = self._states.get(function)
            due = found is not None and time.monotonic() - self._checked[function] >= found.ttl
            if found is not None and due:
                self._checked[function] = time.monotonic()
                try:
                    fresh = self._build(function) if found.stale() else None
                except Exception as exc:
                    log.error("cannot reload the policy; keeping the last one: %s", exc)
                    fresh = None
                if fresh is not None:
                    log.info("policy or secrets changed: %s rebuilt", function)
                    self._close(found)
                    self._states[function] = fresh
                    self._rebuilt()
        return self.get(function)

    def reset(self) -> None:
        with self._lock:
            for st in self._states.values():
                self._close(st)
            self._states.clear()
            self._checked.clear()
