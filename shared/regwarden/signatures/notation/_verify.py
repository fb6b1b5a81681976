"""Verify one Notation signature against a trust policy and trust store.

Steps follow the Notary Project trust-store-trust-policy specification and notation-go:

1. pick the trust policy statement (OCI: by registry scope, exact before `*`; blob: by
   name or the global statement); `skip` returns at once without reading the envelope;
2. parse the envelope (JWS or COSE); an unusable envelope raises NotationError;
3. integrity (always enforced): algorithm matches the signing key, the signature verifies,
   the chain obeys the certificate rules, and the payload names this artifact;
4. authenticity: a chain certificate is in one of the statement's trust stores of the
   signing scheme's type, and the signing certificate matches the trusted identities;
5. expiry: `now` is before the signed expiry, if any;
6. authentic timestamp: with a TSA store in the statement (and, for `afterCertExpiry`,
   an expired chain) an RFC 3161 timestamp must be present and valid and the chain valid
   at its time; otherwise the chain must be valid `now`. Under
   `notary.x509.signingAuthority` the chain must be valid at the authentic signing time;
7. revocation: offline only; a certificate naming no OCSP responder or CRL cannot be
   revoked, any other has unknown status (no network fetches).

Each of 4–7 is enforced, logged or skipped as the statement's level and overrides say.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from datetime import datetime
from typing import Literal

from cryptography import x509
from pydantic import BaseModel, ConfigDict

from ...errors import InvalidReference, PolicyError, UsageError
from ...model import SignatureResult
from ...reference import ImageRef
from . import _algorithms, _cose, _jws
from ._envelope import (
    MEDIA_TYPE_COSE,
    MEDIA_TYPE_JWS,
    SCHEME_SIGNING_AUTHORITY,
    SignerInfo,
    Target,
)
from ._errors import NotationError
from ._policy import (
    TrustPolicyDocument,
    TrustPolicyStatement,
    ValidationAction,
    ValidationType,
    validate_scope,
)
from ._timestamp import TimestampError, verify_token
from ._truststore import TrustStore
from ._x509 import (
    CERT_ERRORS,
    LAZY_CERT_ERRORS,
    ChainError,
    DNError,
    has_revocation_info,
    subject,
    valid_at,
    validate_chain,
)

MEDIA_TYPES = (MEDIA_TYPE_JWS, MEDIA_TYPE_COSE)


class ValidationOutcome(BaseModel):
    """One validation step: what the policy asked for and what happened."""

    model_config = ConfigDict(frozen=True)

    type: ValidationType
    action: ValidationAction
    status: Literal["passed", "failed", "skipped"]
    reason: str = ""


class NotationResult(BaseModel):
    """The outcome of verifying one Notation signature."""

    model_config = ConfigDict(frozen=True)

    verified: bool
    reason: str
    policy: str | None = None
    level: str | None = None
    skipped: bool = False
    envelope_format: Literal["jws", "cose"] | None = None
    signer: str | None = None
    signing_scheme: str | None = None
    signing_time: datetime | None = None
    expiry: datetime | None = None
    timestamp: datetime | None = None
    signing_agent: str | None = None
    target: Target | None = None
    annotations: dict[str, str] = {}
    certificate_chain: tuple[str, ...] = ()
    outcomes: tuple[ValidationOutcome, ...] = ()
    warnings: tuple[str, ...] = ()

    def outcome(self, vtype: ValidationType) -> ValidationOutcome | None:
        return next((o for o in self.outcomes if o.type is vtype), None)

    def raise_if_failed(self) -> None:
        """Fail closed: raise NotationError with the reason unless verified."""
        if not self.verified:
            raise NotationError(self.reason)

    def to_signature_result(self, digest: str) -> SignatureResult:
        """This result as the gate's SignatureResult for the signature manifest `digest`."""
        fmt: Literal["notation-jws", "notation-cose"] = (
            "notation-cose" if self.envelope_format == "cose" else "notation-jws"
        )
        return SignatureResult(
            format=fmt,
            digest=digest,
            verified=self.verified,
            signer=self.signer,
            reason=self.reason,
        )


def parse_envelope(envelope: bytes, media_type: str) -> SignerInfo:
    """Parse a Notation envelope of `media_type`; NotationError for anything unusable."""
    if media_type == MEDIA_TYPE_JWS:
        return _jws.parse(envelope)
    if media_type == MEDIA_TYPE_COSE:
        return _cose.parse(envelope)
    raise NotationError(
        f"unsupported signature envelope media type {media_type!r}; "
        f"expected one of {', '.join(MEDIA_TYPES)}"
    )


def _scope_of(reference: ImageRef | str) -> str:
    if isinstance(reference, ImageRef):
        return reference.name
    return _scope_of_text(reference)


@functools.lru_cache(maxsize=256)
def _scope_of_text(reference: str) -> str:
    """`registry/repository` of a reference (cached: a pure function of the text)."""
    text = reference.split("@", 1)[0]
    if text.rfind(":") > text.rfind("/"):
        text = text[: text.rfind(":")]
    try:
        validate_scope(text)
    except PolicyError as exc:
        raise InvalidReference(reference, exc.message) from None
    return text


def _select(
    doc: TrustPolicyDocument, reference: ImageRef | str | None, policy_name: str | None
) -> tuple[TrustPolicyStatement | None, str]:
    if doc.kind == "oci":
        if reference is None:
            raise UsageError("an OCI trust policy needs the artifact reference to pick a statement")
        scope = _scope_of(reference)
        st = doc.for_scope(scope)
        if st is not None:
            return st, ""
        scopes = sorted({s for p in doc.trust_policies for s in p.registry_scopes or ()})
        return None, f"no trust policy statement applies to {scope!r}; scopes: {', '.join(scopes)}"
    if reference is not None:
        raise UsageError("a blob trust policy picks its statement by policy_name, not reference")
    st = doc.by_name(policy_name)
    if policy_name is None:
        return st, "the blob trust policy has no global statement and no policy_name was given"
    names = ", ".join(p.name for p in doc.trust_policies)
    return st, f"no blob trust policy statement is named {policy_name!r}; valid: {names}"


@functools.lru_cache(maxsize=256)
def _passed(vtype: ValidationType, action: ValidationAction, note: str) -> ValidationOutcome:
    """The (immutable) outcome of a validation that passed, built once per distinct value."""
    return ValidationOutcome(type=vtype, action=action, status="passed", reason=note)


class _Run:
    """Collects outcomes; `record` says whether verification must stop."""

    def __init__(self, actions: Mapping[ValidationType, ValidationAction]) -> None:
        self.actions = actions
        self.outcomes: list[ValidationOutcome] = []
        self.warnings: list[str] = []
        self.failure: str | None = None

    def record(self, vtype: ValidationType, problem: str | None, passed_note: str = "") -> bool:
        action = self.actions[vtype]
        if problem is None:
            self.outcomes.append(_passed(vtype, action, passed_note))
            return False
        self.outcomes.append(
            ValidationOutcome(type=vtype, action=action, status="failed", reason=problem)
        )
        if action is ValidationAction.ENFORCE:
            self.failure = f"{vtype.value} failed: {problem}"
            return True
        self.warnings.append(f"{vtype.value} failed (logged, not enforced): {problem}")
        return False

    def skip(self, vtype: ValidationType, why: str) -> None:
        self.outcomes.append(
            ValidationOutcome(type=vtype, action=self.actions[vtype], status="skipped", reason=why)
        )


def _integrity(info: SignerInfo, target: Target) -> str | None:
    leaf = info.certs[0]
    try:
        key = leaf.public_key
        expected = _algorithms.key_algorithm(key)
    except NotationError as exc:
        return f"the signing certificate's key is unusable: {exc}"
    except CERT_ERRORS as exc:
        return f"the signing certificate's key is unusable: {exc}"
    if expected is not info.algorithm:
        return (
            f"the envelope names algorithm {info.algorithm.jws_name} but the signing "
            f"certificate's key requires {expected.jws_name}"
        )
    assert isinstance(key, _algorithms.PublicKey)
    if not _algorithms.verify(info.algorithm, key, info.signature, info.signed_message):
        return "the signature does not verify with the signing certificate's key"
    try:
        validate_chain(info.certs, "codesigning")
    except ChainError as exc:
        return f"invalid certificate chain: {exc}"
    except CERT_ERRORS as exc:  # defensive: load_der has parsed what the checks read
        return f"invalid certificate chain: malformed certificate: {exc}"
    got = info.target
    if got == target:
        return None
    for field, want, have in (
        ("mediaType", target.media_type, got.media_type),
        ("digest", target.digest, got.digest),
        ("size", target.size, got.size),
    ):
        if want != have:
            return (
                f"the signed payload's targetArtifact {field} is {have!r}, "
                f"but the artifact being verified has {want!r}"
            )
    return None


def _authenticity(info: SignerInfo, st: TrustPolicyStatement, store: TrustStore) -> str | None:
    kind = "signingAuthority" if info.signing_scheme == SCHEME_SIGNING_AUTHORITY else "ca"
    names = st.stores(kind)
    if not names:
        return (
            f"trust policy statement {st.name!r} lists no {kind} trust store, which signing "
            f"scheme {info.signing_scheme} needs"
        )
    for name in names:
        try:
            store.get(kind, name)
        except LookupError as exc:
            return str(exc)
    for der in info.chain_der:
        if store.contains_der(kind, names, der):
            break
    else:
        refs = ", ".join(f"{kind}:{n}" for n in names)
        return (
            f"the signature is not from a trusted signer: no certificate of the chain of "
            f"{subject(info.certs[0])!r} is in trust store {refs}"
        )
    if "*" in st.trusted_identities:
        return None
    leaf = info.certs[0]
    try:
        if st.identity_matches(leaf.attributes):
            return None
    except DNError as exc:
        return f"the signing certificate subject cannot be matched: {exc}"
    return (
        f"signing certificate subject {subject(leaf)!r} matches none of the trusted "
        f"identities {list(st.trusted_identities)} of statement {st.name!r}"
    )


def _authentic_time(
    info: SignerInfo, st: TrustPolicyStatement, store: TrustStore, now: datetime
) -> tuple[str | None, datetime | None, str]:
    """(problem, verified timestamp time, note)."""
    chain = info.certs
    if info.signing_scheme == SCHEME_SIGNING_AUTHORITY:
        t = info.authentic_signing_time
        assert t is not None
        problem = valid_at(chain, t, t)
        if problem is not None:
            return f"at the authentic signing time {t.isoformat()}: {problem}", None, ""
        return None, None, "chain valid at the authentic signing time"
    sv = st.signature_verification
    tsa_names = st.stores("tsa")
    perform = bool(tsa_names)
    if perform and sv.verify_timestamp == "afterCertExpiry":
        perform = any(now > c.not_after for c in chain)
    if not perform:
        problem = valid_at(chain, now, now)
        if problem is not None:
            return (
                f"no trusted timestamp is used, so the chain must be valid now: {problem}",
                None,
                "",
            )
        return None, None, "no timestamp required; chain valid at verification time"
    if info.timestamp_token is None:
        return (
            "the trust policy requires a timestamp countersignature (tsa store "
            f"{', '.join(tsa_names)}), but the signature has none",
            None,
            "",
        )
    roots: list[x509.Certificate] = []
    for name in tsa_names:
        try:
            roots.extend(store.get("tsa", name))
        except LookupError as exc:
            return str(exc), None, ""
    try:
        ts = verify_token(info.timestamp_token, info.signature, roots)
    except TimestampError as exc:
        return f"timestamp countersignature: {exc}", None, ""
    problem = valid_at(chain, ts.lower, ts.upper)
    if problem is not None:
        return f"at the timestamp {ts.gen_time.isoformat()} (±{ts.accuracy}): {problem}", None, ""
    if not sv.skip_timestamp_revocation_check:
        for cert in ts.tsa_chain:
            if has_revocation_info(cert):
                return (
                    f"revocation status of timestamping certificate {subject(cert)!r} is "
                    "unknown: it names OCSP/CRL endpoints, which regwarden does not query "
                    "(set skipTimestampRevocationCheck to accept)",
                    None,
                    "",
                )
    return None, ts.gen_time, f"timestamped at {ts.gen_time.isoformat()}"


def _revocation(info: SignerInfo) -> str | None:
    for cert in info.certs:
        if cert.revocable:
            return (
                f"revocation status of {subject(cert)!r} is unknown: it names OCSP/CRL "
                "endpoints, which regwarden does not query"
            )
    return None


def verify_notation(
    envelope: bytes,
    media_type: str,
    *,
    target: Target | tuple[str, str, int],
    reference: ImageRef | str | None = None,
    trust_policy: TrustPolicyDocument,
    trust_store: TrustStore,
    now: datetime,
    policy_name: str | None = None,
    user_metadata: Mapping[str, str] | None = None,
) -> NotationResult:
    """Verify one Notation signature envelope (see module doc).

    `target` is the (media type, digest, size) of the artifact the signature must name;
    `reference` (an ImageRef or "registry/repository[:tag][@digest]") picks the statement
    of an OCI trust policy, `policy_name` that of a blob trust policy (None: the global
    one). `now` must be timezone-aware. Raises NotationError for an unusable envelope;
    every other failure is a result with `verified=False` and the precise reason.
    """
    if now.tzinfo is None:
        raise UsageError("now must be timezone-aware")
    target = Target(*target)
    st, why = _select(trust_policy, reference, policy_name)
    if st is None:
        return NotationResult(verified=False, reason=why)
    sv = st.signature_verification
    run = _Run(sv.actions())
    base = {"policy": st.name, "level": sv.level_name}
    if sv.level == "skip":
        return NotationResult(
            verified=True,
            skipped=True,
            reason=f"trust policy statement {st.name!r} skips verification",
            **base,
        )

    info = parse_envelope(envelope, media_type)
    try:
        _ = info.certs[0].name  # a malformed subject makes the envelope unusable
    except CERT_ERRORS as exc:
        raise NotationError(f"the signing certificate's subject is malformed: {exc}") from None
    signer = subject(info.certs[0])
    try:
        return _verify_parsed(info, signer, st, trust_store, target, now, user_metadata, run, base)
    except LAZY_CERT_ERRORS as exc:  # cryptography parses extensions and keys lazily
        raise NotationError(f"the envelope holds a malformed certificate: {exc}") from None


def _verify_parsed(
    info: SignerInfo,
    signer: str,
    st: TrustPolicyStatement,
    trust_store: TrustStore,
    target: Target,
    now: datetime,
    user_metadata: Mapping[str, str] | None,
    run: _Run,
    base: dict[str, str],
) -> NotationResult:
    sv = st.signature_verification
    details = {
        **base,
        "envelope_format": info.format,
        "signer": signer,
        "signing_scheme": info.signing_scheme,
        "signing_time": info.signing_time or info.authentic_signing_time,
        "expiry": info.expiry,
        "signing_agent": info.signing_agent,
        "target": info.target,
        "annotations": dict(info.annotations),
        "certificate_chain": tuple(c.fingerprint for c in info.certs),
    }
    timestamp: datetime | None = None

    def done() -> NotationResult:
        verified = run.failure is None
        reason = run.failure or f"verified by trust policy statement {st.name!r} ({sv.level_name})"
        if verified and run.warnings:
            reason += f" with {len(run.warnings)} logged failure(s)"
        return NotationResult(
            verified=verified,
            reason=reason,
            timestamp=timestamp,
            outcomes=tuple(run.outcomes),
            warnings=tuple(run.warnings),
            **details,
        )

    if run.record(ValidationType.INTEGRITY, _integrity(info, target)):
        return done()
    if run.record(ValidationType.AUTHENTICITY, _authenticity(info, st, trust_store)):
        return done()
    expired = info.expiry is not None and now >= info.expiry
    problem = (
        f"the signature expired at {info.expiry.isoformat()}" if expired and info.expiry else None
    )
    if run.record(ValidationType.EXPIRY, problem):
        return done()
    problem, timestamp, note = _authentic_time(info, st, trust_store, now)
    if run.record(ValidationType.AUTHENTIC_TIMESTAMP, problem, note):
        return done()
    if run.actions[ValidationType.REVOCATION] is ValidationAction.SKIP:
        run.skip(ValidationType.REVOCATION, "skipped by the trust policy")
    elif run.record(ValidationType.REVOCATION, _revocation(info), "no certificate is revocable"):
        return done()
    for key, value in (user_metadata or {}).items():
        if info.annotations.get(key) != value:
            run.failure = (
                f"user metadata {key}={value!r} is not in the signature "
                f"(signed annotations: {dict(info.annotations)})"
            )
            break
    return done()
