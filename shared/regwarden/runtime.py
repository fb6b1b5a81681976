"""Wiring: from a loaded policy to a ready pipeline (registries, evidence, alert router).

Used by `regwarden serve`, `regwarden invoke`, `regwarden check` and the platform
adapters in `functions/`. Heavy pieces are built lazily and cached for a warm process.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import wait
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .errors import (
    NotFound,
    NotImplementedYet,
    RegistryError,
    UsageError,
    VerificationError,
)
from .gate import GateRules, ProvenanceFact
from .model import ScanReport
from .notify import (
    Alert,
    Notifier,
    Router,
    SlackChannel,
    SnsChannel,
    StreamChannel,
    TeamsChannel,
    WebhookChannel,
    everything_to,
)
from .oci import in_background
from .pipeline import Evidence, Pipeline
from .policy import EffectiveRepositoryPolicy, Policy
from .providers import ProviderOptions, Registry, open_registry
from .reference import ImageRef
from .scanning import ScanFormatError
from .store import Ledger, SqliteLedger

if TYPE_CHECKING:
    from .signatures import SubjectSource

log = logging.getLogger("regwarden.runtime")

RegistryFactory = Callable[[str], Registry]
LedgerT = TypeVar("LedgerT", bound=Ledger)
VULN_PREDICATE = "https://cosign.sigstore.dev/attestation/vuln/v1"


class _Unsupported:
    """A channel this runtime cannot deliver to (e.g. SNS outside AWS): says so per alert."""

    def __init__(self, name: str, kind: str) -> None:
        self.name = name
        self._kind = kind

    def send(self, alert: Alert) -> None:
        raise NotImplementedYet(
            f"channel {self.name!r}: {self._kind} delivery is not available in this runtime"
        )


def build_channels(policy: Policy, env: Mapping[str, str]) -> dict[str, Notifier]:
    """The policy's channels as senders; `secret://` values come from `env`."""
    from . import policy as p

    def value(location: p.Location) -> str:
        if location.scheme == "secret":
            return p.resolve_secret(location.target, env)
        return location.raw

    out: dict[str, Notifier] = {}
    for name, ch in policy.notifications.channels.items():
        if isinstance(ch, p.SlackChannelConfig):
            out[name] = SlackChannel(name, value(ch.url))
        elif isinstance(ch, p.TeamsChannelConfig):
            out[name] = TeamsChannel(name, value(ch.url))
        elif isinstance(ch, p.WebhookChannelConfig):
            key = value(ch.secret).encode() if ch.secret is not None else None
            secret_url = ch.url.scheme == "secret"  # then its path is the credential too
            out[name] = WebhookChannel(name, value(ch.url), secret=key, secret_url=secret_url)
        elif isinstance(ch, p.StdoutChannelConfig):
            out[name] = StreamChannel(name, format=ch.format)
        elif isinstance(ch, p.FileChannelConfig):
            out[name] = StreamChannel(name, path=(policy.base_dir or Path.cwd()) / ch.path)
        elif isinstance(ch, p.SnsChannelConfig):
            out[name] = SnsChannel(name, ch.topic_arn)
        else:
            out[name] = _Unsupported(name, ch.type)
    return out


def registry_options(
    policy: Policy, host: str, *, insecure: bool = False
) -> tuple[str | None, ProviderOptions]:
    """How to open `host`: the kind its `registries` entry gives (None: from the host
    name) and the options to reach it (plain HTTP when the flag or the entry allows it)."""
    listed = policy.registry(host)
    if listed is None:
        return None, ProviderOptions(insecure=insecure)
    return listed.kind, ProviderOptions(insecure=insecure or listed.insecure)


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
    ) -> None:
        self.policy = policy
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

    # -- pieces ---------------------------------------------------------------------------

    def _insecure_for(self, host: str) -> bool:
        return registry_options(self.policy, host, insecure=self._insecure)[1].insecure

    def _open(self, host: str) -> Registry:
        """The provider for `host`: its kind as the policy lists it, else from its name."""
        kind, options = registry_options(self.policy, host, insecure=self._insecure)
        return open_registry(host, options, kind=kind)

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
        from .gate._from_policy import gate_rules

        with self._lock:
            rules = self._rules.get(repository)
        if rules is None:
            rules = gate_rules(self.policy.for_repository(repository))
            with self._lock:
                self._rules[repository] = rules
        return rules

    def router(self) -> Router:
        channels = build_channels(self.policy, self.env)
        for extra in self._extra:
            channels[extra.name] = extra
        notifications = self.policy.notifications

        def select(alert: Alert) -> list[str]:
            names = list(
                notifications.channels_for(
                    team=alert.team,
                    severity=alert.severity,
                    action=alert.action,
                    repository=alert.repository,
                )
            )
            return names + [c.name for c in self._extra]

        return Router(select, channels)

    def quarantine_templates(self) -> tuple[str, ...]:
        sections = [self.policy.defaults.quarantine]
        sections += [entry.quarantine for entry in self.policy.repositories]
        templates = {q.repository for q in sections if q is not None}
        templates.add("quarantine/{repository}")
        return tuple(sorted(templates))

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
        )

    def close(self) -> None:
        with self._lock:
            for reg in self._registries.values():
                reg.close()
            self._registries.clear()

    # -- evidence: signatures, attestations, scans -------------------------------------------

    def evidence(
        self,
        registry: Registry,
        image: ImageRef,
        rules: GateRules,
        *,
        subject: SubjectSource | None = None,
    ) -> Evidence:
        """Signatures, attestations and every scan source of `image`, each gathered on its
        own: an infrastructure failure of one (a `RegistryError` other than NotFound) is
        recorded against that piece (`signature_error`, `unavailable`) and never hides the
        others. A scanner that reports a failed scan is a fact (`scan_error`). NotFound (the
        image is gone) propagates once everything started has finished."""
        from .policy import scan_sources
        from .signatures._from_policy import (
            attestation_policy,
            cosign_policy,
            notation_trust,
        )

        assert image.digest is not None
        effective = self.policy.for_repository(image.repository)
        base = self.policy.base_dir or Path.cwd()
        # Configuration first (keys, trust policies): a bad one fails the evaluation as a
        # configuration error before any request is in flight.
        cosign = cosign_policy(effective, base_dir=base, env=self.env)
        notation = notation_trust(effective, base_dir=base)
        attest = attestation_policy(effective, base_dir=base, env=self.env)
        sources = scan_sources(effective, self.policy, registry.host)
        # The registry's own scanners need nothing from signature discovery: start them on
        # the I/O pool (each is a short chain of requests that never fans out itself) while
        # discovery fans out from this thread.
        native = [
            (name, in_background(call)) for name, call in self._scans(registry, image, sources)
        ]
        try:
            signed = self._signed(
                registry,
                image,
                rules,
                effective,
                cosign=cosign,
                notation=notation,
                attest=attest,
                sources=sources,
                subject=subject,
            )
        finally:
            wait([future for _, future in native])
        scan, scan_errors, unavailable = signed.scan, [], list(signed.unavailable)
        gone: NotFound | None = None
        for name, future in native:
            try:
                report = future.result()
            except NotFound as exc:  # the image went away while we looked
                gone = gone or exc
            except (VerificationError, ScanFormatError) as exc:  # the scanner's own verdict
                scan_errors.append(str(exc))
            except RegistryError as exc:
                unavailable.append(f"{name}: {exc}")
            else:
                if report is not None and (scan is None or _newer(report, scan)):
                    scan = report
        if gone is not None:
            raise gone
        return Evidence(
            signatures=signed.signatures,
            signatures_unmet=signed.signatures_unmet,
            signature_error=signed.signature_error,
            scan=scan,
            scan_error="; ".join(scan_errors) or None,
            provenance=signed.provenance,
            unavailable=tuple(unavailable),
        )

    def _signed(
        self,
        registry: Registry,
        image: ImageRef,
        rules: GateRules,
        effective: EffectiveRepositoryPolicy,
        *,
        cosign: Any,
        notation: Any,
        attest: Any,
        sources: tuple[str, ...],
        subject: SubjectSource | None,
    ) -> Evidence:
        """Signatures and attestations: one discovery, then pure verification. A discovery
        failure makes the signatures an error and marks as unavailable each piece of
        attestation evidence the gate needs (a cosign vuln report, SLSA provenance)."""
        from .signatures import discover, verify_attestations, verify_image
        from .signatures._from_policy import result_formats, signature_repository

        assert image.digest is not None
        verifiers = cosign is not None or notation is not None
        needed: list[str] = []  # attestation evidence the verdict depends on
        if attest is not None and "cosign-vuln" in sources:
            needed.append("cosign-vuln")
        if attest is not None and rules.provenance.required:
            needed.append("provenance")
        if not verifiers and not needed:
            return Evidence()
        client = registry.data_plane()
        try:
            found = discover(
                client,
                image.repository,
                image.digest,
                signature_repo=signature_repository(effective),
                subject=subject,
            )
        except NotFound:
            raise
        except RegistryError as exc:
            return Evidence(
                signature_error=f"signature discovery failed: {exc}" if verifiers else None,
                unavailable=tuple(f"{name}: signature discovery failed: {exc}" for name in needed),
            )
        signatures: tuple[Any, ...] = ()
        unmet: tuple[str, ...] = ()
        if verifiers:
            report = verify_image(
                client,
                image,
                cosign=cosign,
                notation=notation,
                require="all",
                now=_now(),
                found=found,
                formats=result_formats(effective),  # e.g. bundles only: a .sig won't count
            )
            signatures, unmet = report.results, report.unmet
        scan: ScanReport | None = None
        provenance: list[ProvenanceFact] = []
        if needed and found.cosign:
            for att in verify_attestations(found.cosign, image_digest=image.digest, policy=attest):
                if not att.result.verified or att.statement is None:
                    if att.predicate_type and "slsa" in att.predicate_type:
                        provenance.append(ProvenanceFact(False, None, att.result.reason))
                    continue
                if att.predicate_type == VULN_PREDICATE:
                    if "cosign-vuln" not in needed:
                        continue
                    report_ = _vuln_report(att.statement, image.digest)
                    if report_ is not None and (scan is None or _newer(report_, scan)):
                        scan = report_
                elif att.predicate_type and "slsa.dev/provenance" in att.predicate_type:
                    provenance.append(ProvenanceFact(True, _builder_id(att.statement)))
        return Evidence(
            signatures=tuple(signatures),
            signatures_unmet=unmet,
            scan=scan,
            provenance=tuple(provenance),
        )

    def _scans(
        self, registry: Registry, image: ImageRef, sources: tuple[str, ...]
    ) -> list[tuple[str, Callable[[], ScanReport | None]]]:
        """The registry's own scan sources among `sources`, as calls to make."""
        calls: list[tuple[str, Callable[[], ScanReport | None]]] = []
        wanted = [s for s in ("ecr", "inspector") if s in sources]
        if wanted:  # one read: ECR's findings API carries Inspector's under enhanced scanning
            from .scanning.ecr import EcrScanSource

            ecr = EcrScanSource()
            calls.append(("+".join(wanted), functools.partial(ecr, registry, image)))
        if "harbor" in sources:
            from .scanning.harbor_api import ENV_API_BASE, HarborScanSource

            listed = self.policy.registry(registry.host)
            api = (listed.api if listed is not None else None) or self.env.get(ENV_API_BASE)
            harbor = HarborScanSource(
                api_base=api or None, env=self.env, insecure=self._insecure_for(registry.host)
            )
            calls.append(("harbor", functools.partial(harbor, registry, image)))
        return calls


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def _vuln_report(statement: Mapping[str, Any], digest: str) -> ScanReport | None:
    from .scanning import ScanFormatError, parse_cosign_vuln

    try:
        return parse_cosign_vuln(json.dumps(statement).encode(), digest=digest)
    except ScanFormatError as exc:
        log.warning("ignored a signed vuln attestation that does not parse: %s", exc)
        return None


def _newer(a: ScanReport, b: ScanReport) -> bool:
    if a.scanned_at is None:
        return False
    return b.scanned_at is None or a.scanned_at > b.scanned_at


def _builder_id(statement: Mapping[str, Any]) -> str | None:
    predicate = statement.get("predicate") or {}
    builder = predicate.get("builder") or (predicate.get("runDetails") or {}).get("builder") or {}
    value = builder.get("id")
    return str(value) if value else None


def open_ledger(path: Path) -> SqliteLedger:
    """The SQLite ledger at `path`, or UsageError (exit 2) saying why it cannot be used:
    a directory, a file that is not an SQLite database, no permission, no parent."""
    if path.is_dir():
        raise UsageError(f"cannot use the ledger {path}: it is a directory", hint=_LEDGER_HINT)
    try:
        return SqliteLedger(path)
    except OSError as exc:  # its directory cannot be made
        cause = exc.strerror or str(exc)
        if exc.filename and str(exc.filename) != str(path):
            cause = f"cannot create {exc.filename}: {cause}"
        raise UsageError(f"cannot use the ledger {path}: {cause}", hint=_LEDGER_HINT) from None
    except sqlite3.Error as exc:
        cause = str(exc)
        if path.exists() and not os.access(path, os.R_OK | os.W_OK):
            cause = "permission denied"
        elif isinstance(exc, sqlite3.DatabaseError) and "not a database" in cause:
            cause = "the file is not an SQLite database (corrupt, or not a ledger)"
        raise UsageError(f"cannot use the ledger {path}: {cause}", hint=_LEDGER_HINT) from None


_LEDGER_HINT = "--ledger PATH (or REGWARDEN_LEDGER) must name a writable SQLite file"


def load_runtime(
    policy_path: str | Path,
    *,
    ledger_path: Path,
    insecure: bool = False,
    extra_channels: tuple[Notifier, ...] = (),
    supported: bool = True,
    registries: Iterable[str] | None = None,
) -> Runtime[SqliteLedger]:
    """A runtime for a policy file. With `supported` (the default), a policy with settings
    no code would carry out is refused (`policy.ensure_supported`, PolicyError: exit 2).
    `registries` None: any host may be contacted (one-shot commands); else the runtime
    contacts only the policy's `registries` hosts and these (`serve`)."""
    from .policy import ensure_supported, load_policy

    policy = load_policy(policy_path)
    if supported:
        ensure_supported(policy)
    allowed = None if registries is None else configured_hosts(policy, registries)
    ledger = open_ledger(ledger_path)
    return Runtime(
        policy,
        ledger=ledger,
        insecure=insecure,
        actor=os.environ.get("REGWARDEN_ACTOR") or None,
        extra_channels=extra_channels,
        allowed_hosts=allowed,
    )
