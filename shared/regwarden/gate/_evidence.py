"""Gathering the evidence a verdict is built on: signatures, attestations and every scan
source of one image, each failing separately. The I/O edge of the gate package; what it
returns is judged by the pure `evaluate`.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Mapping
from concurrent.futures import wait
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import NotFound, RegistryError, VerificationError
from ._facts import ProvenanceFact, newer, newest
from ._rules import GateRules

if TYPE_CHECKING:
    from ..model import ScanReport, SignatureResult
    from ..policy import EffectiveRepositoryPolicy, Policy
    from ..providers import Registry
    from ..reference import ImageRef
    from ..signatures import SubjectSource

log = logging.getLogger("regwarden.gate")

VULN_PREDICATE = "https://cosign.sigstore.dev/attestation/vuln/v1"
#: Scan sources read from signed attestations (signature discovery), not `SCAN_SOURCES`.
_ATTESTED = frozenset({"cosign-vuln"})

__all__ = ["VULN_PREDICATE", "Evidence", "EvidenceSource", "gather_evidence", "no_evidence"]


@dataclass(frozen=True, slots=True)
class Evidence:
    """What is attached to an image: signatures, its scan, provenance. Gathered in one pass
    so discovery runs once per evaluation."""

    signatures: tuple[SignatureResult, ...] = ()
    signatures_unmet: tuple[str, ...] = ()
    scans: tuple[ScanReport, ...] = ()
    """Every report found: each scan source's, and each scanner's newest verified cosign
    vuln attestation (an older attestation by the same scanner is superseded, never
    judged). All of them are judged; the worst wins."""
    scan_error: str | None = None
    scan_waiting: str | None = None
    """Why no finished scan exists yet, where a source said (`NoScanYet`): `source: why`."""
    provenance: tuple[ProvenanceFact, ...] = ()
    signature_error: str | None = None
    """Signature discovery or verification could not run (registry error)."""
    unavailable: tuple[str, ...] = ()
    """Evidence that could not be gathered, one `source: cause` each (infrastructure
    failures of a scan source or an attestation lookup): the verdict is ERROR, never a
    FAILED/PENDING built on missing evidence."""

    @property
    def scan(self) -> ScanReport | None:
        """The newest of `scans`, for callers that show one report."""
        return newest(self.scans)


class EvidenceSource(Protocol):
    def __call__(
        self,
        registry: Registry,
        image: ImageRef,
        rules: GateRules,
        *,
        subject: SubjectSource | None = None,
    ) -> Evidence: ...


def no_evidence(
    registry: Registry, image: ImageRef, rules: GateRules, *, subject: SubjectSource | None = None
) -> Evidence:
    return Evidence()


def gather_evidence(
    policy: Policy,
    registry: Registry,
    image: ImageRef,
    rules: GateRules,
    *,
    env: Mapping[str, str],
    now: datetime,
    insecure: bool = False,
    subject: SubjectSource | None = None,
) -> Evidence:
    """Signatures, attestations and every scan source the policy names for `image` (the
    registered `scanning.SCAN_SOURCES`; `cosign-vuln` comes from the verified
    attestations), each gathered on its own: an infrastructure failure of one (a
    `RegistryError` other than NotFound) is recorded against that piece
    (`signature_error`, `unavailable`) and never hides the others. A scanner that reports
    a failed scan is a fact (`scan_error`); one that says why it has no scan yet is noted
    (`scan_waiting`) and read as no scan. Every report found is kept (`scans`): the
    vulnerability check judges each and the worst wins. NotFound (the image is gone)
    propagates once everything started has finished. `now` is when signatures are judged
    (certificate validity, timestamps)."""
    from ..oci import in_background
    from ..policy import scan_sources
    from ..scanning import NoScanYet, ScanContext, ScanFormatError, scan_readers

    assert image.digest is not None
    effective = policy.for_repository(image.repository)
    base = policy.base_dir or Path.cwd()
    cosign = notation = attest = None
    # No signature or attestation rules: no verifier, and the signatures package (the
    # cryptography stack) is not even imported.
    if effective.signatures is not None or effective.attestations is not None:
        from ..signatures import attestation_policy, cosign_policy, notation_trust

        # Configuration first (keys, trust policies): a bad one fails the evaluation as a
        # configuration error before any request is in flight.
        cosign = cosign_policy(effective, base_dir=base, env=env)
        notation = notation_trust(effective, base_dir=base)
        attest = attestation_policy(effective, base_dir=base, env=env)
    sources = scan_sources(effective, policy, registry.host)
    readers = scan_readers(
        (s for s in sources if s not in _ATTESTED),
        ScanContext(policy, registry, env, insecure),
    )
    # The scan sources need nothing from signature discovery: start them on the I/O pool
    # (each is a short chain of requests that never fans out itself) while discovery fans
    # out from this thread.
    native = [
        (name, in_background(functools.partial(read, registry, image))) for name, read in readers
    ]
    try:
        signed = _signed(
            registry,
            image,
            rules,
            effective,
            cosign=cosign,
            notation=notation,
            attest=attest,
            sources=sources,
            subject=subject,
            now=now,
        )
    finally:
        wait([future for _, future in native])
    scans, scan_errors, unavailable = list(signed.scans), [], list(signed.unavailable)
    waiting: list[str] = []
    gone: NotFound | None = None
    for name, future in native:
        try:
            report = future.result()
        except NotFound as exc:  # the image went away while we looked
            gone = gone or exc
        except NoScanYet as exc:  # None, with the source's reason
            waiting.append(f"{name}: {exc}")
        except (VerificationError, ScanFormatError) as exc:  # the scanner's own verdict
            scan_errors.append(str(exc))
        except RegistryError as exc:
            unavailable.append(f"{name}: {exc}")
        else:
            if report is not None:
                scans.append(report)
    if gone is not None:
        raise gone
    return Evidence(
        signatures=signed.signatures,
        signatures_unmet=signed.signatures_unmet,
        signature_error=signed.signature_error,
        scans=tuple(scans),
        scan_error="; ".join(scan_errors) or None,
        scan_waiting="; ".join(waiting) or None,
        provenance=signed.provenance,
        unavailable=tuple(unavailable),
    )


def _signed(
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
    now: datetime,
) -> Evidence:
    """Signatures and attestations: one discovery, then pure verification. A discovery
    failure makes the signatures an error and marks as unavailable each piece of
    attestation evidence the gate needs (a cosign vuln report, SLSA provenance)."""
    assert image.digest is not None
    verifiers = cosign is not None or notation is not None
    needed: list[str] = []  # attestation evidence the verdict depends on
    if attest is not None and "cosign-vuln" in sources:
        needed.append("cosign-vuln")
    if attest is not None and rules.provenance.required:
        needed.append("provenance")
    if not verifiers and not needed:
        return Evidence()
    from ..signatures import (
        discover,
        result_formats,
        signature_repository,
        verify_attestations,
        verify_image,
    )

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
            now=now,
            found=found,
            formats=result_formats(effective),  # e.g. bundles only: a .sig won't count
        )
        signatures, unmet = report.results, report.unmet
    attested: dict[str, ScanReport] = {}  # scanner (without its version) → newest report
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
                if report_ is None:
                    continue
                key = _scanner_key(report_.scanner)
                if key not in attested or newer(report_, attested[key]):
                    attested[key] = report_
            elif att.predicate_type and "slsa.dev/provenance" in att.predicate_type:
                provenance.append(ProvenanceFact(True, _builder_id(att.statement)))
    return Evidence(
        signatures=tuple(signatures),
        signatures_unmet=unmet,
        scans=tuple(attested.values()),
        provenance=tuple(provenance),
    )


def _vuln_report(statement: Mapping[str, Any], digest: str) -> ScanReport | None:
    from ..scanning import ScanFormatError, parse_cosign_vuln

    try:
        return parse_cosign_vuln(json.dumps(statement).encode(), digest=digest)
    except ScanFormatError as exc:
        log.warning("ignored a signed vuln attestation that does not parse: %s", exc)
        return None


def _scanner_key(scanner: str) -> str:
    """`trivy 0.50.1` → `trivy`; `trivy 0.50.1 + grype 0.74` → `trivy + grype`: a re-scan by
    a newer release of the same scanner supersedes the older attestation."""
    return " + ".join(part.split(" ", 1)[0] for part in scanner.split(" + "))


def _builder_id(statement: Mapping[str, Any]) -> str | None:
    predicate = statement.get("predicate") or {}
    builder = predicate.get("builder") or (predicate.get("runDetails") or {}).get("builder") or {}
    value = builder.get("id")
    return str(value) if value else None
