"""The `attest` section: which verdicts regwarden signs as in-toto attestations on the
image, with which key and in which cosign format (issue #18). Off when absent."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from ._base import PolicyModel
from ._location import Location, LocationScheme, Schemes

__all__ = ["ATTEST_KEY_SCHEMES", "Attest", "AttestedVerdict"]

ATTEST_KEY_SCHEMES = frozenset(
    {
        LocationScheme.FILE,
        LocationScheme.AWSKMS,
        LocationScheme.GCPKMS,
        LocationScheme.AZUREKMS,
    }
)
AttestedVerdict = Literal["PASSED", "FAILED", "WARN"]
SigningKey = Annotated[Location, Schemes(ATTEST_KEY_SCHEMES, "a signing key")]


class Attest(PolicyModel):
    """Sign every final verdict listed in `verdicts` as an in-toto attestation (predicate
    type `https://regwarden.dev/attestations/verdict/v1`) attached to the image digest, so
    admission controllers (Kyverno, sigstore policy-controller) can admit only images that
    passed. A newer verdict replaces the older attestation; a PASSED one superseded by
    another verdict is deleted first."""

    verdicts: tuple[AttestedVerdict, ...] = Field(
        default=("PASSED",), min_length=1, json_schema_extra={"uniqueItems": True}
    )
    """The verdicts to attest. Default: PASSED. With FAILED listed too, a cluster sees
    a failed image's attestation say so (and why)."""

    key: SigningKey
    """The private key to sign with: `file://PATH` (a cosign key, its password in
    `COSIGN_PASSWORD`; relative to the policy file), `awskms://[ENDPOINT]/KEY`,
    `gcpkms://projects/…/cryptoKeys/KEY[/cryptoKeyVersions/V]` or `azurekms://VAULT/KEY`."""

    format: Literal["legacy", "bundle", "both"] = "legacy"
    """`legacy`: a cosign `.att` attestation (what every admission controller verifies with a
    key today); `bundle`: a Sigstore v0.3 bundle referrer; `both`. Default: legacy."""
