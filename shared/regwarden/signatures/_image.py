"""Verify an image: discover its signatures, verify each, and judge the requirement.

`require="all"`: every configured key, keyless identity and Notation trust policy must
have at least one valid signature. `require="any"`: at least one must. Signatures by
unknown keys are reported, never fatal on their own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from ..errors import UsageError
from ..model import SignatureResult
from ..reference import ImageRef
from ._discover import ContentSource, Discovered, discover, notation_format
from ._model import CosignPolicy, KeylessIdentity
from ._verify import verify_candidates


@dataclass(frozen=True, slots=True)
class NotationTrust:
    """A Notation trust policy document and its trust store."""

    policy: object  # notation.TrustPolicyDocument (imported lazily: it pulls in cbor2)
    store: object  # notation.TrustStore


@dataclass(frozen=True, slots=True)
class VerifyReport:
    image: ImageRef
    results: tuple[SignatureResult, ...]
    require: Literal["all", "any"]
    met: bool
    unmet: tuple[str, ...]
    """Which configured verifiers found no valid signature."""

    @property
    def reason(self) -> str:
        if self.met:
            good = sum(1 for r in self.results if r.verified)
            return f"{good} valid signature(s); requirement '{self.require}' met"
        if not self.results:
            return "no signatures found"
        return f"requirement '{self.require}' not met: no valid signature from " + ", ".join(
            self.unmet
        )


def _identity_label(identity: KeylessIdentity) -> str:
    subject = identity.subject or f"/{identity.subject_regex}/"
    issuer = identity.issuer or f"/{identity.issuer_regex}/"
    return f"identity {subject} ({issuer})"


def _identity_signed(identity: KeylessIdentity, signer: str | None) -> bool:
    m = re.fullmatch(r"(.*) \((.*)\)", signer or "")
    if m is None:
        return False
    san, issuer = m.groups()
    subject_ok = (
        san == identity.subject
        if identity.subject is not None
        else re.fullmatch(identity.subject_regex or "", san) is not None
    )
    issuer_ok = (
        issuer == identity.issuer
        if identity.issuer is not None
        else re.fullmatch(identity.issuer_regex or "", issuer) is not None
    )
    return subject_ok and issuer_ok


def _notation_results(
    found: Discovered, image: ImageRef, trust: NotationTrust, now: datetime
) -> list[SignatureResult]:
    from .notation import NotationError, TrustPolicyDocument, TrustStore, verify_notation

    assert isinstance(trust.policy, TrustPolicyDocument)
    assert isinstance(trust.store, TrustStore)
    target = (found.subject.media_type, found.subject.digest, found.subject.size)
    out = []
    for env in found.notation:
        fmt = notation_format(env.media_type)
        try:
            res = verify_notation(
                env.blob,
                env.media_type,
                target=target,
                reference=image,
                trust_policy=trust.policy,
                trust_store=trust.store,
                now=now,
            )
            out.append(
                SignatureResult(
                    format=fmt,
                    digest=env.manifest_digest,
                    verified=res.verified and not res.skipped,
                    signer=res.signer,
                    reason=res.reason,
                )
            )
        except NotationError as exc:
            out.append(
                SignatureResult(
                    format=fmt,
                    digest=env.manifest_digest,
                    verified=False,
                    reason=str(exc),
                )
            )
    return out


def verify_image(
    source: ContentSource,
    image: ImageRef,
    *,
    cosign: CosignPolicy | None,
    notation: NotationTrust | None,
    require: Literal["all", "any"] = "all",
    now: datetime,
    signature_repo: str | None = None,
    found: Discovered | None = None,
    formats: frozenset[str] | None = None,
) -> VerifyReport:
    """Discover and verify; never raises for a bad signature (registry errors do raise)."""
    if image.digest is None:
        raise UsageError(
            f"verify needs the image digest, got {image}",
            hint="resolve the tag first; regwarden verifies by digest only",
        )
    if cosign is None and notation is None:
        raise UsageError(
            "nothing to verify against: give --key, a keyless identity "
            "(--certificate-identity/--certificate-oidc-issuer) or a Notation "
            "trust policy and store"
        )
    if found is None:
        found = discover(source, image.repository, image.digest, signature_repo=signature_repo)
    results: list[SignatureResult] = list(found.broken)
    if cosign is not None:
        results += verify_candidates(found.cosign, image_digest=image.digest, policy=cosign)
    if notation is not None:
        results += _notation_results(found, image, notation, now)
    if formats is not None:  # only these formats count (policy `signatures.formats`)
        results = [r for r in results if r.format in formats]
    good = [r for r in results if r.verified]
    verifiers: list[tuple[str, bool]] = []
    if cosign is not None:
        for key in cosign.keys:
            verifiers.append((f"key {key.key_id[:16]}", any(r.signer == key.key_id for r in good)))
        for identity in cosign.identities:
            verifiers.append(
                (_identity_label(identity), any(_identity_signed(identity, r.signer) for r in good))
            )
    if notation is not None:
        verifiers.append(
            ("notation trust policy", any(r.format.startswith("notation") for r in good))
        )
    unmet = tuple(label for label, ok in verifiers if not ok)
    met = (not unmet) if require == "all" else len(unmet) < len(verifiers)
    return VerifyReport(image=image, results=tuple(results), require=require, met=met, unmet=unmet)
