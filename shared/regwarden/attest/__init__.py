"""regwarden attests its verdicts: a signed in-toto statement (predicate
`VERDICT_PREDICATE`) on every final verdict a repository's `attest` policy asks for, so
admission controllers can admit only images that passed the gate.

- `_predicate`: the predicate (pure) and the policy's identity;
- `_signer`: the `Signer` protocol and `SIGNERS` by key URL scheme (`file` here);
- `_push`: push and replace with a resumable ledger intent (`verdict-attestation:…`);
- `_hook`: what the pipeline calls after a final verdict.
"""

# The KMS signers register their schemes (awskms, gcpkms, azurekms) in SIGNERS; each
# imports its SDK only when a key of its scheme is used.
from . import _signer_aws, _signer_azure, _signer_gcp  # noqa: F401
from ._hook import FINAL_OUTCOMES, VerdictAttester
from ._predicate import VERDICT_PREDICATE, PolicyIdentity, build_predicate, policy_identity
from ._push import (
    ACTION_KIND,
    AttestFormat,
    Recorded,
    attest_verdict,
    attestation_key,
    finish_removal,
    is_own_push,
    recorded_attestation,
    retire_attestation,
)
from ._signer import SIGNERS, FileSigner, Signer, SignerFactory, signer_for

__all__ = [
    "ACTION_KIND",
    "FINAL_OUTCOMES",
    "SIGNERS",
    "VERDICT_PREDICATE",
    "AttestFormat",
    "FileSigner",
    "PolicyIdentity",
    "Recorded",
    "Signer",
    "SignerFactory",
    "VerdictAttester",
    "attest_verdict",
    "attestation_key",
    "build_predicate",
    "finish_removal",
    "is_own_push",
    "policy_identity",
    "recorded_attestation",
    "retire_attestation",
    "signer_for",
]
