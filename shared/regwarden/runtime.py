"""Wiring: from a loaded policy to a ready pipeline (registries, evidence, alert router).

Used by `regwarden serve`, `regwarden invoke`, `regwarden check` and the platform
adapters in `functions/`. Heavy pieces are built lazily and cached for a warm process.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from .errors import NotImplementedYet
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
)
from .pipeline import Evidence, Pipeline
from .policy import Policy
from .providers import ProviderOptions, Registry, open_registry
from .reference import ImageRef
from .store import Ledger, SqliteLedger

if TYPE_CHECKING:
    from .signatures import SubjectSource

log = logging.getLogger("regwarden.runtime")

RegistryFactory = Callable[[str], Registry]
LedgerT = TypeVar("LedgerT", bound=Ledger)


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
        if isinstance(ch, p.SlackChannel):
            out[name] = SlackChannel(name, value(ch.url))
        elif isinstance(ch, p.TeamsChannel):
            out[name] = TeamsChannel(name, value(ch.url))
        elif isinstance(ch, p.WebhookChannel):
            key = value(ch.secret).encode() if ch.secret is not None else None
            out[name] = WebhookChannel(name, value(ch.url), secret=key)
        elif isinstance(ch, p.StdoutChannel):
            out[name] = StreamChannel(name, format=ch.format)
        elif isinstance(ch, p.FileChannel):
            out[name] = StreamChannel(name, path=(policy.base_dir or Path.cwd()) / ch.path)
        elif isinstance(ch, p.SnsChannel):
            out[name] = SnsChannel(name, ch.topic_arn)
        else:
            out[name] = _Unsupported(name, ch.type)
    return out


class Runtime(Generic[LedgerT]):
    """Everything one process needs to gate images under one policy."""

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
    ) -> None:
        self.policy = policy
        self.ledger = ledger
        self.env = dict(os.environ if env is None else env)
        self._insecure = insecure
        self._actor = actor
        self._factory = registry_factory or (
            lambda host: open_registry(host, ProviderOptions(insecure=insecure))
        )
        self._registries: dict[str, Registry] = {}
        self._rules: dict[str, GateRules] = {}
        self._lock = threading.Lock()
        self._extra = extra_channels

    # -- pieces ---------------------------------------------------------------------------

    def registry(self, host: str) -> Registry:
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

    def pipeline(self) -> Pipeline:
        return Pipeline(
            ledger=self.ledger,
            rules_for=self.rules_for,
            registry_for=self.registry,
            router=self.router(),
            evidence=self.evidence,
            quarantine_templates=self.quarantine_templates(),
            actor=self._actor,
        )

    def close(self) -> None:
        with self._lock:
            for reg in self._registries.values():
                reg.close()
            self._registries.clear()

    # -- evidence: signatures, attestations (vuln scan, provenance) --------------------------

    def evidence(
        self,
        registry: Registry,
        image: ImageRef,
        rules: GateRules,
        *,
        subject: SubjectSource | None = None,
    ) -> Evidence:
        from .signatures import discover, verify_attestations, verify_image
        from .signatures._from_policy import (
            attestation_policy,
            cosign_policy,
            notation_trust,
            result_formats,
            signature_repository,
        )

        assert image.digest is not None
        client = registry.data_plane()
        effective = self.policy.for_repository(image.repository)
        base = self.policy.base_dir or Path.cwd()
        sig_repo = signature_repository(effective)
        found = discover(
            client, image.repository, image.digest, signature_repo=sig_repo, subject=subject
        )
        signatures: tuple[Any, ...] = ()
        unmet: tuple[str, ...] = ()
        cosign = cosign_policy(effective, base_dir=base, env=self.env)
        notation = notation_trust(effective, base_dir=base)
        if cosign is not None or notation is not None:
            allowed = result_formats(effective)  # e.g. bundles only: a legacy .sig won't count
            report = verify_image(
                client,
                image,
                cosign=cosign,
                notation=notation,
                require="all",
                now=_now(),
                found=found,
                formats=allowed,
            )
            signatures, unmet = report.results, report.unmet
        scan: ScanReport | None = None
        provenance: list[ProvenanceFact] = []
        attest = attestation_policy(effective, base_dir=base, env=self.env)
        if attest is not None and found.cosign:
            for att in verify_attestations(found.cosign, image_digest=image.digest, policy=attest):
                if not att.result.verified or att.statement is None:
                    if att.predicate_type and "slsa" in att.predicate_type:
                        provenance.append(ProvenanceFact(False, None, att.result.reason))
                    continue
                if att.predicate_type == "https://cosign.sigstore.dev/attestation/vuln/v1":
                    report_ = _vuln_report(att.statement, image.digest)
                    if report_ is not None and (scan is None or _newer(report_, scan)):
                        scan = report_
                elif att.predicate_type and "slsa.dev/provenance" in att.predicate_type:
                    provenance.append(ProvenanceFact(True, _builder_id(att.statement)))
        scan_error = None
        vuln = effective.vulnerabilities
        sources = set(vuln.sources or ()) if vuln is not None else set()
        if registry.kind == "ecr" and {"ecr", "inspector"} & sources:
            from .scanning.ecr import EcrScanFailed, EcrScanSource

            try:
                native = EcrScanSource()(registry, image)
            except EcrScanFailed as exc:
                scan_error = str(exc)
            else:
                if native is not None and (scan is None or _newer(native, scan)):
                    scan = native
        if "harbor" in sources and registry.kind == "oci":
            from .scanning import ScanFormatError
            from .scanning.harbor_api import ENV_API_BASE, HarborScanFailed, HarborScanSource

            harbor = HarborScanSource(
                api_base=self.env.get(ENV_API_BASE) or None, env=self.env, insecure=self._insecure
            )
            try:
                harbor_scan = harbor(registry, image)
            except (HarborScanFailed, ScanFormatError) as exc:  # fail closed: never "no scan"
                scan_error = str(exc)
            else:
                if harbor_scan is not None and (scan is None or _newer(harbor_scan, scan)):
                    scan = harbor_scan
        return Evidence(
            signatures=tuple(signatures),
            signatures_unmet=unmet,
            scan=scan,
            scan_error=scan_error,
            provenance=tuple(provenance),
        )


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


def load_runtime(
    policy_path: str | Path,
    *,
    ledger_path: Path,
    insecure: bool = False,
    extra_channels: tuple[Notifier, ...] = (),
) -> Runtime[SqliteLedger]:
    from .policy import load_policy

    policy = load_policy(policy_path)
    ledger = SqliteLedger(ledger_path)
    return Runtime(
        policy,
        ledger=ledger,
        insecure=insecure,
        actor=os.environ.get("REGWARDEN_ACTOR") or None,
        extra_channels=extra_channels,
    )
