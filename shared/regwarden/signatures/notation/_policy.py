"""Notation trust policy documents (version 1.0), OCI and blob kinds, as Notation defines them.

OCI (`trustpolicy.oci.json`, formerly `trustpolicy.json`): every statement has
`registryScopes`; an artifact uses the statement whose scopes contain its repository
(`registry/repository`), else the one global (`*`) statement, else none applies.
Blob (`trustpolicy.blob.json`): statements have no scopes; one may be `globalPolicy`;
a blob is verified with a statement chosen by name, or the global one.

Validation reproduces notation-go's rules and messages in spirit; every problem raises
PolicyError naming the statement and listing the valid values.
"""

from __future__ import annotations

import enum
import functools
import json
import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ...errors import PolicyError
from ._x509 import DNError, is_subset, parse_dn


class ValidationType(enum.StrEnum):
    INTEGRITY = "integrity"
    AUTHENTICITY = "authenticity"
    AUTHENTIC_TIMESTAMP = "authenticTimestamp"
    EXPIRY = "expiry"
    REVOCATION = "revocation"


class ValidationAction(enum.StrEnum):
    ENFORCE = "enforce"
    LOG = "log"
    SKIP = "skip"


_E, _L, _S = ValidationAction.ENFORCE, ValidationAction.LOG, ValidationAction.SKIP
_T = ValidationType
LEVELS: dict[str, dict[ValidationType, ValidationAction]] = {
    "strict": {_T.INTEGRITY: _E, _T.AUTHENTICITY: _E, _T.AUTHENTIC_TIMESTAMP: _E, _T.EXPIRY: _E,
               _T.REVOCATION: _E},
    "permissive": {_T.INTEGRITY: _E, _T.AUTHENTICITY: _E, _T.AUTHENTIC_TIMESTAMP: _L,
                   _T.EXPIRY: _L, _T.REVOCATION: _L},
    "audit": {_T.INTEGRITY: _E, _T.AUTHENTICITY: _L, _T.AUTHENTIC_TIMESTAMP: _L, _T.EXPIRY: _L,
              _T.REVOCATION: _L},
    "skip": dict.fromkeys(ValidationType, _S),
}  # fmt: skip
TRUST_STORE_TYPES = ("ca", "signingAuthority", "tsa")
WILDCARD = "*"
_WRAPPERS = ("trustPolicyDoc", "trustPolicyDocument")
X509_SUBJECT = "x509.subject"
_STORE_NAME = re.compile(r"[a-zA-Z0-9_.-]+")
_DOMAIN = re.compile(
    r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
    r"(?:(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))+)?(?::[0-9]+)?"
)
_REPOSITORY = re.compile(
    r"[a-z0-9]+(?:(?:(?:[._]|__|[-]*)[a-z0-9]+)+)?(?:(?:/[a-z0-9]+(?:(?:(?:[._]|__|[-]*)[a-z0-9]+)+)?)+)?"
)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class SignatureVerification(_Model):
    """How strictly a statement verifies: a level plus optional per-validation overrides."""

    level: Literal["strict", "permissive", "audit", "skip"]
    override: dict[ValidationType, ValidationAction] = Field(default_factory=dict)
    verify_timestamp: Literal["always", "afterCertExpiry"] = Field(
        default="always",
        alias="verifyTimestamp",
        description="verify the RFC 3161 timestamp always, or only once the chain has expired",
    )
    skip_timestamp_revocation_check: bool = Field(
        default=False,
        alias="skipTimestampRevocationCheck",
        description="do not fail the timestamp when the TSA chain's revocation is unknown",
    )

    def actions(self) -> dict[ValidationType, ValidationAction]:
        """The resolved action of each validation (level, then overrides)."""
        out = dict(LEVELS[self.level])
        out.update(self.override)
        return out

    @property
    def level_name(self) -> str:
        return "custom" if self.override else self.level


class TrustPolicyStatement(_Model):
    """One statement of a trust policy document."""

    name: str
    registry_scopes: tuple[str, ...] | None = Field(default=None, alias="registryScopes")
    signature_verification: SignatureVerification = Field(alias="signatureVerification")
    trust_stores: tuple[str, ...] = Field(default=(), alias="trustStores")
    trusted_identities: tuple[str, ...] = Field(default=(), alias="trustedIdentities")
    global_policy: bool = Field(default=False, alias="globalPolicy")

    def stores(self, store_type: str) -> tuple[str, ...]:
        """Names of the named stores of `store_type` this statement uses."""
        return _stores_by_type(self.trust_stores).get(store_type, ())

    def identity_matches(self, subject_attrs: Mapping[str, str]) -> bool:
        wanted = _subject_identities(self.trusted_identities)
        if wanted is None:
            return True
        for dn in wanted:  # noqa: SIM110  (verification hot path: no generator)
            if is_subset(dn, subject_attrs):
                return True
        return False


@functools.lru_cache(maxsize=256)
def _stores_by_type(refs: tuple[str, ...]) -> Mapping[str, tuple[str, ...]]:
    """`type:name` references grouped by type, in order (built once per distinct list)."""
    out: dict[str, list[str]] = {}
    for ref in refs:
        kind, _, name = ref.partition(":")
        out.setdefault(kind, []).append(name)
    return MappingProxyType({kind: tuple(names) for kind, names in out.items()})


@functools.lru_cache(maxsize=256)
def _subject_identities(identities: tuple[str, ...]) -> tuple[Mapping[str, str], ...] | None:
    """The x509.subject identities parsed (built once per distinct list); None for `*`."""
    if WILDCARD in identities:
        return None
    out: list[Mapping[str, str]] = []
    for ident in identities:
        prefix, _, value = ident.partition(":")
        if prefix.strip() == X509_SUBJECT:
            out.append(MappingProxyType(parse_dn(value)))
    return tuple(out)


class TrustPolicyDocument(_Model):
    """A validated Notation trust policy document (`kind` says OCI or blob)."""

    version: str
    trust_policies: tuple[TrustPolicyStatement, ...] = Field(alias="trustPolicies")
    kind: Literal["oci", "blob"] = "oci"

    def for_scope(self, scope: str) -> TrustPolicyStatement | None:
        """OCI: the statement for `registry/repository` (exact scope first, then `*`)."""
        wildcard = None
        for st in self.trust_policies:
            scopes = st.registry_scopes or ()
            if scope in scopes:
                return st
            if WILDCARD in scopes:
                wildcard = st
        return wildcard

    def by_name(self, name: str | None) -> TrustPolicyStatement | None:
        """Blob: the statement named `name`, or the global statement when `name` is None."""
        for st in self.trust_policies:
            if (name is None and st.global_policy) or (name is not None and st.name == name):
                return st
        return None


def _fail(message: str, where: str = "trust policy") -> PolicyError:
    return PolicyError(message, problems=[(where, message)])


def validate_scope(scope: str) -> None:
    msg = (
        f"registry scope {scope!r} is not valid; use a fully qualified repository without "
        "scheme or tag, e.g. registry.example.com/team/app"
    )
    if scope != WILDCARD and WILDCARD in scope:
        raise _fail(f"registry scope {scope!r} has a wildcard; only '*' alone is allowed")
    domain, sep, repo = scope.partition("/")
    if not sep or not _DOMAIN.fullmatch(domain) or not _REPOSITORY.fullmatch(repo):
        raise _fail(msg)


def _check_statement(st: TrustPolicyStatement) -> None:
    where = f"trustPolicies[{st.name!r}]"
    if not st.name:
        raise _fail("a trust policy statement has an empty name; every statement needs one")
    sv = st.signature_verification
    if sv.override and sv.level == "skip":
        raise _fail(
            f"statement {st.name!r}: level 'skip' cannot be customised with 'override'", where
        )
    for vtype, action in sv.override.items():
        if vtype is ValidationType.INTEGRITY:
            raise _fail(f"statement {st.name!r}: 'integrity' cannot be overridden", where)
        if action is ValidationAction.SKIP and vtype is not ValidationType.REVOCATION:
            raise _fail(
                f"statement {st.name!r}: {vtype.value!r} cannot be skipped; only 'revocation' "
                "takes 'skip'",
                where,
            )
    if sv.level == "skip":
        if st.trust_stores or st.trusted_identities:
            raise _fail(
                f"statement {st.name!r} skips verification but lists trust stores or trusted "
                "identities; remove them",
                where,
            )
        return
    if not st.trust_stores or not st.trusted_identities:
        raise _fail(f"statement {st.name!r} needs both trustStores and trustedIdentities", where)
    for ref in st.trust_stores:
        kind, sep, name = ref.partition(":")
        if not sep:
            raise _fail(
                f"statement {st.name!r}: trust store {ref!r} is malformed; expected <type>:<name>",
                where,
            )
        if kind not in TRUST_STORE_TYPES:
            raise _fail(
                f"statement {st.name!r}: trust store type {kind!r} in {ref!r} is not "
                f"supported; valid: {', '.join(TRUST_STORE_TYPES)}",
                where,
            )
        if not _STORE_NAME.fullmatch(name):
            raise _fail(
                f"statement {st.name!r}: trust store name {name!r} in {ref!r} must match "
                "[a-zA-Z0-9_.-]+",
                where,
            )
    _check_identities(st, where)


def _check_identities(st: TrustPolicyStatement, where: str) -> None:
    ids = st.trusted_identities
    if WILDCARD in ids and len(ids) > 1:
        raise _fail(
            f"statement {st.name!r}: the wildcard identity '*' cannot be combined with others",
            where,
        )
    parsed: list[tuple[str, dict[str, str]]] = []
    for ident in ids:
        if ident == WILDCARD:
            continue
        if not ident:
            raise _fail(f"statement {st.name!r} has an empty trusted identity", where)
        prefix, sep, value = ident.partition(":")
        if not sep:
            raise _fail(
                f"statement {st.name!r}: trusted identity {ident!r} lacks a 'type:' prefix; "
                f"expected {X509_SUBJECT}: C=..., ST=..., O=...",
                where,
            )
        if prefix.strip() != X509_SUBJECT:
            raise _fail(
                f"statement {st.name!r}: trusted identity type {prefix!r} is not supported; "
                f"valid: {X509_SUBJECT}, *",
                where,
            )
        try:
            parsed.append((ident, parse_dn(value)))
        except DNError as exc:
            raise _fail(
                f"statement {st.name!r}: trusted identity {ident!r}: {exc}", where
            ) from None
    for i, (raw_a, a) in enumerate(parsed):
        for j, (raw_b, b) in enumerate(parsed):
            if i != j and is_subset(a, b):
                raise _fail(
                    f"statement {st.name!r}: trusted identities {raw_a!r} and {raw_b!r} overlap",
                    where,
                )


def validate_document(doc: TrustPolicyDocument) -> None:
    """Cross-field rules of a trust policy document; PolicyError on the first problem."""
    if doc.version != "1.0":
        raise _fail(f"trust policy version {doc.version!r} is not supported; valid: 1.0")
    if not doc.trust_policies:
        raise _fail("the trust policy document has no statements")
    names: set[str] = set()
    scopes: set[str] = set()
    global_seen = False
    for st in doc.trust_policies:
        if st.name in names:
            raise _fail(f"two trust policy statements are named {st.name!r}; names must be unique")
        names.add(st.name)
        _check_statement(st)
        if doc.kind == "oci":
            if st.global_policy:
                raise _fail(f"statement {st.name!r}: 'globalPolicy' belongs to blob trust policies")
            if not st.registry_scopes:
                raise _fail(f"statement {st.name!r} has no registryScopes; it needs at least one")
            if WILDCARD in st.registry_scopes and len(st.registry_scopes) > 1:
                raise _fail(
                    f"statement {st.name!r}: the wildcard scope '*' cannot be combined with "
                    "other scopes"
                )
            for scope in st.registry_scopes:
                if scope != WILDCARD:
                    validate_scope(scope)
                if scope in scopes:
                    raise _fail(
                        f"registry scope {scope!r} appears in more than one statement; a scope "
                        "belongs to one statement only"
                    )
                scopes.add(scope)
        else:
            if st.registry_scopes is not None:
                raise _fail(
                    f"statement {st.name!r}: 'registryScopes' belongs to OCI trust policies"
                )
            if st.global_policy:
                if global_seen:
                    raise _fail("more than one blob trust policy statement sets globalPolicy")
                global_seen = True


def parse_trust_policy(
    data: bytes | str | Mapping[str, Any], *, kind: Literal["oci", "blob", "auto"] = "auto"
) -> TrustPolicyDocument:
    """Parse and validate a trust policy document; PolicyError on any problem."""
    if isinstance(data, bytes | str):
        try:
            raw = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise _fail(f"malformed trust policy: not valid JSON ({exc})") from None
    else:
        raw = data
    if not isinstance(raw, dict):
        raise _fail("malformed trust policy: expected a JSON object")
    for wrapper in _WRAPPERS:  # Ratify embeds the document under one of these keys
        if set(raw) == {wrapper} and isinstance(raw[wrapper], dict):
            raw = raw[wrapper]
    statements = raw.get("trustPolicies")
    if kind == "auto":
        has_scopes = isinstance(statements, list) and any(
            isinstance(s, dict) and "registryScopes" in s for s in statements
        )
        kind = "oci" if has_scopes or not isinstance(statements, list) else "blob"
    try:
        doc = TrustPolicyDocument.model_validate({**raw, "kind": kind})
    except ValidationError as exc:
        problems = [(".".join(str(p) for p in e["loc"]), e["msg"]) for e in exc.errors()]
        detail = "; ".join(f"{loc}: {msg}" for loc, msg in problems)
        raise PolicyError(f"invalid trust policy: {detail}", problems=problems) from None
    validate_document(doc)
    return doc


def load_trust_policy(
    path: str | Path, *, kind: Literal["oci", "blob", "auto"] = "auto"
) -> TrustPolicyDocument:
    """Read a trust policy file (symlinks refused, as Notation does)."""
    p = Path(path)
    if p.is_symlink():
        raise _fail(f"trust policy {p} is a symlink; symlinks are not supported", str(p))
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise _fail(f"cannot read trust policy {p}: {exc.strerror or exc}", str(p)) from None
    return parse_trust_policy(data, kind=kind)
