"""What the pipeline calls after a final verdict: attest it, or retire a PASSED one that no
longer holds.

Why a hook inside the judging of the image, before the verdict's outcome is committed,
and not an alert-like side effect after it: a crash must never leave a valid PASSED
attestation on an image whose verdict is FAILED. The attestation intent is recorded and
the superseded PASSED removed (a recorded step) before the delivery counts as handled; a
crash anywhere before the commit makes the delivery come back, and the next evaluation of
the image finds the intent and finishes the removal before anything else. Pushing the new
attestation before the commit costs, at worst, a replaced push on redelivery.

The evaluation holds the image's lock meanwhile, so the notifications of these pushes
(handled under the same lock) find their digests in the ledger and are not judged.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import RegistryError, UsageError
from ..model import Outcome
from ..oci import Descriptor, RegistryClient
from ..policy import Attest, LocationScheme, Policy, resolve_file
from ..signatures import SignatureFormatError
from ..store import Ledger
from ._predicate import PolicyIdentity, build_predicate, policy_identity
from ._push import attest_verdict, recorded_attestation, retire_attestation
from ._signer import Signer, signer_for

if TYPE_CHECKING:
    from ..gate import Facts
    from ..model import Verdict

__all__ = ["FINAL_OUTCOMES", "VerdictAttester"]

log = logging.getLogger("regwarden.attest")

FINAL_OUTCOMES = frozenset({Outcome.PASSED, Outcome.FAILED, Outcome.WARN})


@dataclass
class VerdictAttester:
    """Attests verdicts as the policy's `attest` section of each repository asks."""

    section_for: Callable[[str], Attest | None]
    policy: PolicyIdentity
    base_dir: Path | None = None
    signer_factory: Callable[[str], Signer] = signer_for
    _signers: dict[str, Signer] = field(default_factory=dict, init=False, repr=False)
    _guard: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    @classmethod
    def from_policy(cls, policy: Policy) -> VerdictAttester:
        return cls(
            section_for=lambda repo: policy.for_repository(repo).attest,
            # the file's name, not its path: a published statement tells no host's layout
            policy=policy_identity(
                policy.model_dump(mode="json"),
                Path(policy.source).name if policy.source else "policy",
            ),
            base_dir=policy.base_dir,
        )

    def enabled(self, repository: str) -> bool:
        return self.section_for(repository) is not None

    def key_url(self, section: Attest) -> str:
        key = section.key
        if key.scheme is LocationScheme.FILE:
            return "file://" + str(resolve_file(key, self.base_dir or Path.cwd()))
        return str(key)

    def signer(self, section: Attest) -> Signer:
        """One signer per key for the process: a file key is decrypted once, a KMS
        signer keeps its client."""
        url = self.key_url(section)
        with self._guard:
            found = self._signers.get(url)
        if found is None:
            found = self.signer_factory(url)
            with self._guard:
                self._signers[url] = found
        return found

    def after_verdict(
        self,
        client: RegistryClient,
        ledger: Ledger,
        verdict: Verdict,
        facts: Facts,
        subject: Callable[[], Descriptor | None],
        *,
        now: datetime,
    ) -> list[str]:
        """Attest `verdict` when the repository asks for it; retire a standing PASSED
        attestation the verdict no longer supports. Notes for the alert. RegistryError
        propagates (the intent stays for the next attempt); a key that cannot sign is
        logged and told in a note, never failing the gate."""
        image = verdict.image.with_tag(None)
        section = self.section_for(image.repository)
        if verdict.outcome not in FINAL_OUTCOMES:
            return []
        if section is None or verdict.outcome.value not in section.verdicts:
            standing = recorded_attestation(ledger, image)
            if standing is None or not (standing.pushed or standing.status == "intent"):
                return []
            return retire_attestation(client, ledger, image=image, now=now)
        try:
            signer = self.signer(section)
        except (UsageError, SignatureFormatError) as exc:  # no such scheme, key or password
            log.error("cannot attest %s: %s", image, exc)
            return [f"verdict not attested: {exc}"]
        described = subject()
        if described is None:
            raise RegistryError(f"{image}: no descriptor for the attestation's subject")
        predicate = build_predicate(verdict, facts, self.policy, now=now)
        return attest_verdict(
            client,
            ledger,
            image=image,
            subject=described,
            predicate=predicate,
            signer=signer,
            fmt=section.format,
            now=now,
        )
