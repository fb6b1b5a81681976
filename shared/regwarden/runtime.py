"""Wiring: from a loaded policy to a ready pipeline (registries, evidence, alert router).

Used by `regwarden serve`, `regwarden invoke`, `regwarden check` and the platform
adapters in `functions/`. Heavy pieces are built lazily and cached for a warm process.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from .gate import Evidence, GateRules, gate_rules
from .notify import Alert, Notifier, Router, build_channels, everything_to, routed_to
from .pipeline import Pipeline
from .policy import Policy
from .providers import ProviderOptions, Registry, open_registry
from .reference import ImageRef
from .store import Ledger, open_ledger

if TYPE_CHECKING:
    from .attest import VerdictAttester
    from .signatures import SubjectSource

log = logging.getLogger("regwarden.runtime")

RegistryFactory = Callable[[str], Registry]
LedgerT = TypeVar("LedgerT", bound=Ledger)

__all__ = [
    "ENV_REGISTRIES",
    "Runtime",
    "build_channels",
    "configured_hosts",
    "load_runtime",
    "registries_from_env",
    "registry_options",
]


def registry_options(
    policy: Policy,
    host: str,
    *,
    insecure: bool = False,
    defaults: ProviderOptions | None = None,
) -> tuple[str | None, ProviderOptions]:
    """How to open `host`: the kind its `registries` entry gives (None: from the host
    name) and the options to reach it: `defaults` (a platform's settings: account,
    credentials, data-plane host), with plain HTTP when the flag or the entry allows it."""
    base = defaults or ProviderOptions()
    listed = policy.registry(host)
    allow_http = insecure or base.insecure or (listed is not None and listed.insecure)
    return (listed.kind if listed else None), dataclasses.replace(base, insecure=allow_http)


#: Registry hosts `regwarden serve` may contact besides the policy's (comma-separated).
ENV_REGISTRIES = "REGWARDEN_REGISTRIES"


def configured_hosts(policy: Policy, extra: Iterable[str] = ()) -> frozenset[str]:
    """The registry hosts a long-running receiver may contact: the policy's `registries`
    plus `extra` (`--registry`, `REGWARDEN_REGISTRIES`), normalised for comparison."""
    from .intake import allowed_host_set

    return allowed_host_set([*(r.host for r in policy.registries), *extra])


def registries_from_env(env: Mapping[str, str]) -> list[str]:
    """`REGWARDEN_REGISTRIES`: comma-separated `host[:port]`, each validated (UsageError)."""
    from .intake import parse_host

    text = env.get(ENV_REGISTRIES, "")
    return [parse_host(part, what=ENV_REGISTRIES) for part in text.split(",") if part.strip()]


class Runtime(Generic[LedgerT]):
    """Everything one process needs to gate images under one policy.

    `allowed_hosts`: the registry hosts this process may contact (normalised, see
    `configured_hosts`); None = any host, for one-shot commands where the operator named
    it. A host outside the set is never opened: `registry()` raises HostNotAllowed."""

    def __init__(
        self,
        policy: Policy,
        *,
        ledger: LedgerT,
        insecure: bool = False,
        env: Mapping[str, str] | None = None,
        actor: str | None = None,
        registry_factory: RegistryFactory | None = None,
        extra_channels: tuple[Notifier, ...] = (),
        allowed_hosts: frozenset[str] | None = None,
        provider_defaults: ProviderOptions | None = None,
        router: Router | None = None,
    ) -> None:
        self.policy = policy
        self.provider_defaults = provider_defaults
        self.ledger = ledger
        self.allowed_hosts = allowed_hosts
        self.env = dict(os.environ if env is None else env)
        self._insecure = insecure
        self._actor = actor
        self._factory = registry_factory or self._open
        self._registries: dict[str, Registry] = {}
        self._rules: dict[str, GateRules] = {}
        self._lock = threading.Lock()
        self._extra = extra_channels
        self._router = router

    # -- pieces ---------------------------------------------------------------------------

    def _insecure_for(self, host: str) -> bool:
        return self._options(host)[1].insecure

    def _open(self, host: str) -> Registry:
        """The provider for `host`: its kind as the policy lists it, else from its name."""
        kind, options = self._options(host)
        return open_registry(host, options, kind=kind)

    def _options(self, host: str) -> tuple[str | None, ProviderOptions]:
        return registry_options(
            self.policy, host, insecure=self._insecure, defaults=self.provider_defaults
        )

    def registry(self, host: str) -> Registry:
        """The provider for `host`, opened once; HostNotAllowed (defence in depth behind
        the receiver's check) for a host outside `allowed_hosts`."""
        from .intake import host_allowed, host_not_allowed

        if not host_allowed(host, self.allowed_hosts):
            raise host_not_allowed([host])
        with self._lock:
            reg = self._registries.get(host)
            if reg is None:
                reg = self._registries[host] = self._factory(host)
            return reg

    def rules_for(self, repository: str) -> GateRules | None:
        with self._lock:
            rules = self._rules.get(repository)
        if rules is None:
            rules = gate_rules(self.policy.for_repository(repository))
            with self._lock:
                self._rules[repository] = rules
        return rules

    def router(self) -> Router:
        """Where alerts go: the policy's routes, unless the runtime was given a `router`
        (a platform that fans alerts out itself, like the AWS alerts topic)."""
        if self._router is not None:
            return self._router
        channels = build_channels(self.policy, self.env)
        for extra in self._extra:
            channels[extra.name] = extra
        notifications = self.policy.notifications

        def select(alert: Alert) -> list[str]:
            return [*routed_to(notifications, alert), *(c.name for c in self._extra)]

        return Router(select, channels)

    def quarantine_templates(self) -> tuple[str, ...]:
        """The policy's `move` quarantine templates: the pipeline ignores events under them."""
        return self.policy.quarantine_templates()

    def pipeline(self, *, alerts: bool = True) -> Pipeline:
        """The push pipeline. Building it resolves every alert channel (a missing
        `secret://` value fails here, at start). `alerts=False`: a pipeline that sends no
        alert and so needs no channel secret (`regwarden check`, which takes no action)."""
        return Pipeline(
            ledger=self.ledger,
            rules_for=self.rules_for,
            registry_for=self.registry,
            router=self.router() if alerts else everything_to(),
            evidence=self.evidence,
            quarantine_templates=self.quarantine_templates(),
            actor=self._actor,
            attester=self._attester(),
        )

    def _attester(self) -> VerdictAttester | None:
        """The verdict attester when some section of the policy asks for one (issue #18)."""
        policy = self.policy
        if policy.defaults.attest is None and all(e.attest is None for e in policy.repositories):
            return None
        from .attest import VerdictAttester

        return VerdictAttester.from_policy(policy)

    def close(self) -> None:
        with self._lock:
            for reg in self._registries.values():
                reg.close()
            self._registries.clear()

    # -- evidence ------------------------------------------------------------------------

    def evidence(
        self,
        registry: Registry,
        image: ImageRef,
        rules: GateRules,
        *,
        subject: SubjectSource | None = None,
    ) -> Evidence:
        """Everything attached to `image`, gathered under this runtime's policy (see
        `gate.gather_evidence`)."""
        from datetime import UTC, datetime

        from .gate import gather_evidence

        return gather_evidence(
            self.policy,
            registry,
            image,
            rules,
            env=self.env,
            insecure=self._insecure_for(registry.host),
            now=datetime.now(UTC),
            subject=subject,
        )


def load_runtime(
    policy_path: str | Path,
    *,
    ledger: str | os.PathLike[str],
    insecure: bool = False,
    extra_channels: tuple[Notifier, ...] = (),
    supported: bool = True,
    registries: Iterable[str] | None = None,
) -> Runtime[Ledger]:
    """A runtime for a policy file, on the ledger `ledger` names (a URL or a path, see
    `store.open_ledger`). With `supported` (the default), a policy with settings no code
    would carry out is refused (`policy.ensure_supported`, PolicyError: exit 2).
    `registries` None: any host may be contacted (one-shot commands); else the runtime
    contacts only the policy's `registries` hosts and these (`serve`)."""
    from .policy import ensure_supported, load_policy

    policy = load_policy(policy_path)
    if supported:
        ensure_supported(policy)
    allowed = None if registries is None else configured_hosts(policy, registries)
    return Runtime(
        policy,
        ledger=open_ledger(ledger),
        insecure=insecure,
        actor=os.environ.get("REGWARDEN_ACTOR") or None,
        extra_channels=extra_channels,
        allowed_hosts=allowed,
    )
