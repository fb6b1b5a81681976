"""The `signatures` and `attestations` sections: who must have signed an image, in which
formats, and who may sign the attestations (vulnerability reports, provenance) it carries.

Nothing is fetched here: keys, trusted roots and trust stores are locations, loaded by
`regwarden.signatures._from_policy` when a verifier is built.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StrictInt, model_validator

from ..quarantine_names import template_problem
from ._base import Loc, PolicyModel, rule_error
from ._location import DIRECTORY_SCHEMES, DOCUMENT_SCHEMES, KEY_SCHEMES, Location, Schemes
from ._values import Duration, Regex

__all__ = [
    "SIGNATURE_FORMATS",
    "Attestations",
    "CosignIdentity",
    "CosignVerifier",
    "NotationVerifier",
    "SignatureFormat",
    "Signatures",
]

SignatureFormat = Literal["cosign", "cosign-bundle", "notation"]
#: The signature formats, in the order the docs list them.
SIGNATURE_FORMATS: tuple[SignatureFormat, ...] = ("cosign", "cosign-bundle", "notation")

CosignKey = Annotated[Location, Schemes(KEY_SCHEMES, "a cosign public key")]


def _empty(value: object) -> bool:
    return value == ()


def _no_default(schema: dict[str, Any]) -> None:
    schema.pop("default", None)


_ANY_SIGNER: dict[str, Any] = {"anyOf": [{"required": ["keys"]}, {"required": ["identities"]}]}


def _optional_list() -> Any:
    """A list that may be omitted but, when given, has at least one item (omitted again
    when dumped empty, so a dumped policy reloads)."""
    return Field(default=(), min_length=1, exclude_if=_empty, json_schema_extra=_no_default)


class CosignIdentity(PolicyModel):
    """A keyless signer: the certificate's OIDC issuer and subject (SAN), each given exactly
    once, either exactly (`issuer`, `subject`) or as a regex (`issuerRegex`,
    `subjectRegex`, searched like every regex in the policy: anchor it)."""

    model_config = ConfigDict(
        json_schema_extra={
            "allOf": [
                {"oneOf": [{"required": ["issuer"]}, {"required": ["issuerRegex"]}]},
                {"oneOf": [{"required": ["subject"]}, {"required": ["subjectRegex"]}]},
            ]
        }
    )

    issuer: str | None = Field(default=None, min_length=1)
    """The OIDC issuer, exactly: `https://token.actions.githubusercontent.com`."""

    issuer_regex: Regex | None = None
    """A regex the OIDC issuer must match (searched; anchor it with ^ and $)."""

    subject: str | None = Field(default=None, min_length=1)
    """The certificate subject (SAN: an email or a workflow URI), exactly."""

    subject_regex: Regex | None = None
    """A regex the subject must match (searched; anchor it with ^ and $)."""

    @model_validator(mode="after")
    def _exactly_one_of_each(self) -> CosignIdentity:
        problems: list[tuple[Loc, str]] = []
        pairs = (
            ("issuer", "issuerRegex", self.issuer, self.issuer_regex),
            ("subject", "subjectRegex", self.subject, self.subject_regex),
        )
        for exact_key, regex_key, exact, regex in pairs:
            if exact is None and regex is None:
                problems.append(
                    ((exact_key,), f"missing required key {exact_key!r} (or {regex_key!r})")
                )
            elif exact is not None and regex is not None:
                problems.append(
                    (
                        (regex_key,),
                        f"got both {exact_key!r} and {regex_key!r}, expected exactly one of them",
                    )
                )
        if problems:
            raise rule_error(problems)
        return self


class CosignVerifier(PolicyModel):
    """Cosign signatures: by public keys, by keyless identities (Fulcio certificates), or
    both."""

    model_config = ConfigDict(json_schema_extra=_ANY_SIGNER)

    keys: tuple[CosignKey, ...] = _optional_list()
    """Public keys: file://, s3://, gs://, https://, awskms://, gcpkms://, azurekms://,
    secret:// or inline PEM."""

    identities: tuple[CosignIdentity, ...] = _optional_list()
    """Keyless signers (issuer and subject); they need `trustedRoot`."""

    trusted_root: (
        Annotated[Location, Schemes(DOCUMENT_SCHEMES, "a Sigstore trusted root")] | None
    ) = None
    """A Sigstore `trusted_root.json`: Fulcio CAs, Rekor keys, timestamp authorities."""

    rekor_key: Annotated[Location, Schemes(KEY_SCHEMES, "a Rekor public key")] | None = None
    """A Rekor public key, for transparency-log proofs (SETs) of legacy signatures when no
    trusted root is given; an alternative to `trustedRoot`."""

    require_tlog: bool = False
    """A verified transparency-log entry is mandatory (needs `trustedRoot` or `rekorKey`)."""

    require_timestamp: bool = False
    """A verified RFC 3161 timestamp is mandatory (needs `trustedRoot`)."""

    @model_validator(mode="after")
    def _check_trust(self) -> CosignVerifier:
        problems: list[tuple[Loc, str]] = []
        if not self.keys and not self.identities:
            problems.append(((), "cosign trusts nothing: expected 'keys' and/or 'identities'"))
        if self.identities and self.trusted_root is None:
            problems.append(
                (
                    ("identities",),
                    "keyless identities need 'trustedRoot' (it holds the Fulcio CA); "
                    "'rekorKey' alone is not enough",
                )
            )
        if self.trusted_root is not None and self.rekor_key is not None:
            problems.append(
                (
                    ("rekorKey",),
                    "got both 'trustedRoot' and 'rekorKey', expected one: the trusted root "
                    "already holds the Rekor keys",
                )
            )
        if self.require_tlog and self.trusted_root is None and self.rekor_key is None:
            problems.append((("requireTlog",), "requireTlog needs 'trustedRoot' or 'rekorKey'"))
        if self.require_timestamp and self.trusted_root is None:
            problems.append(
                (
                    ("requireTimestamp",),
                    "requireTimestamp needs 'trustedRoot' (it holds the timestamp authorities)",
                )
            )
        if problems:
            raise rule_error(problems)
        return self


class NotationVerifier(PolicyModel):
    """Notary Project signatures checked with a trust policy and a trust store."""

    trust_policy: Annotated[Location, Schemes(DOCUMENT_SCHEMES, "a notation trust policy")]
    """The trust policy JSON document (notation's `trustpolicy.json` format)."""

    trust_store: Annotated[Location, Schemes(DIRECTORY_SCHEMES, "a notation trust store")]
    """The trust store directory: `x509/{ca,signingAuthority,tsa}/<name>/*.pem|crt|cer`."""


class Signatures(PolicyModel):
    """Which signatures an image needs before it may pass."""

    required: bool = True
    """Fail images without a valid signature. `false` records signatures but never fails."""

    cosign: CosignVerifier | None = None
    notation: NotationVerifier | None = None

    formats: tuple[SignatureFormat, ...] | None = Field(default=None, min_length=1)
    """Which formats count: `cosign` (legacy `.sig`), `cosign-bundle` (Sigstore bundles),
    `notation`. Default: every format whose verifier is configured."""

    require: Literal["all", "any"] = "any"
    """`any`: a valid signature from at least one configured key, identity or Notation
    trust policy. `all`: from every one of them."""

    threshold: StrictInt = Field(default=1, ge=1)
    """How many distinct valid signers are needed."""

    repository: str | None = Field(default=None, min_length=1)
    """Where signatures are stored when not next to the image (cosign's
    `COSIGN_REPOSITORY`): a repository on the same registry; may contain `{repository}`."""

    grace_period: Duration = Field(
        default=timedelta(minutes=5), json_schema_extra={"default": "5m"}
    )
    """How long after the push a missing signature leaves the image PENDING (the signer
    usually pushes it moments later); after that it fails. `0s` fails at once."""

    @model_validator(mode="after")
    def _check_verifier(self) -> Signatures:
        if self.required and self.cosign is None and self.notation is None:
            raise rule_error(
                [
                    (
                        (),
                        "signatures are required but no verifier is configured; expected "
                        "'cosign' and/or 'notation' (or 'required: false')",
                    )
                ]
            )
        problems: list[tuple[Loc, str]] = []
        problems += self._format_problems()
        problems += self._threshold_problems()
        if self.repository is not None:
            problem = template_problem(self.repository, own_repository=None)
            if problem is not None:
                problems.append((("repository",), problem))
        if problems:
            raise rule_error(problems)
        return self

    def configured_formats(self) -> tuple[SignatureFormat, ...]:
        """The formats that have a verifier, in documentation order."""
        out: list[SignatureFormat] = []
        if self.cosign is not None:
            out += ["cosign", "cosign-bundle"]
        if self.notation is not None:
            out.append("notation")
        return tuple(out)

    def effective_formats(self) -> tuple[SignatureFormat, ...]:
        """`formats` if set, else every configured format."""
        return self.formats if self.formats is not None else self.configured_formats()

    def _format_problems(self) -> list[tuple[Loc, str]]:
        problems: list[tuple[Loc, str]] = []
        configured = self.configured_formats()
        seen: dict[str, int] = {}
        for i, fmt in enumerate(self.formats or ()):
            if fmt in seen:
                problems.append(
                    (("formats", i), f"duplicate format {fmt!r} (first at formats[{seen[fmt]}])")
                )
                continue
            seen[fmt] = i
            if fmt not in configured:
                verifier = "notation" if fmt == "notation" else "cosign"
                valid = ", ".join(configured) or "none"
                problems.append(
                    (
                        ("formats", i),
                        f"got {fmt!r}, but no '{verifier}' verifier is configured; "
                        f"configured formats: {valid}",
                    )
                )
        return problems

    def _threshold_problems(self) -> list[tuple[Loc, str]]:
        # Only keys bound the number of distinct signers: an identity regex or a Notation
        # trust policy can admit any number of them.
        if self.notation is not None or self.cosign is None or self.cosign.identities:
            return []
        keys = len(self.cosign.keys)
        if self.threshold > keys:
            return [
                (
                    ("threshold",),
                    f"got {self.threshold}, but only {keys} key(s) are configured, so the "
                    f"threshold can never be met; expected at most {keys}",
                )
            ]
        return []


class Attestations(PolicyModel):
    """Who may sign the in-toto attestations regwarden reads (cosign vulnerability reports,
    SLSA provenance). Without this section, the `signatures.cosign` keys and identities."""

    model_config = ConfigDict(json_schema_extra=_ANY_SIGNER)

    keys: tuple[CosignKey, ...] = _optional_list()
    """Public keys, in the same forms as `signatures.cosign.keys`."""

    identities: tuple[CosignIdentity, ...] = _optional_list()
    """Keyless signers; they use `signatures.cosign.trustedRoot`."""

    @model_validator(mode="after")
    def _check_trust(self) -> Attestations:
        if not self.keys and not self.identities:
            raise rule_error(
                [((), "attestations trust nothing: expected 'keys' and/or 'identities'")]
            )
        return self
