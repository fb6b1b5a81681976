"""`regwarden verify IMAGE --verdict --key K [--max-age 7d]`: did this digest pass the gate?

What a CI/CD deploy step runs before `kubectl apply` where no admission controller is
installed. Reads regwarden's verdict attestations on the image's digest (legacy `.att`
and bundle referrers, found as the gate finds signatures), and exits 0 only when the
newest valid one says PASSED and is no older than --max-age (`attest.verdicts`
judges it: `regwarden.attest.verdicts`); 1 with the reason otherwise (none, none valid:
unsigned or another key, FAILED, WARN, stale); 2 for bad input; 3 when the registry
cannot be reached.

K is the public key (PEM file, `file://`, inline PEM, `awskms://`) or the signing key's
KMS URL (`gcpkms://`, `azurekms://`: its public half is read from the KMS).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import typer

from ..errors import UsageError
from ._render import print_json
from ._signing import _public_keys, open_target

__all__ = ["run_verify_verdict"]


def _verdict_key(key: str) -> Any:
    scheme = key.partition("://")[0] if "://" in key else ""
    if scheme in ("gcpkms", "azurekms"):
        from ..attest import signer_for

        return signer_for(key).public_key()
    return _public_keys([key])[0]


def _max_age(text: str | None) -> timedelta | None:
    if text is None:
        return None
    from ..policy import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"--max-age: {exc}") from None


def run_verify_verdict(
    image: str,
    *,
    keys: list[str],
    max_age: str | None,
    signature_repository: str | None,
    output: str,
    insecure: bool,
) -> None:
    from ..attest.verdicts import judge_verdicts
    from ..signatures import discover

    if len(keys) != 1:
        raise UsageError("--verdict needs exactly one --key: the key regwarden signs verdicts with")
    age = _max_age(max_age)
    public = _verdict_key(keys[0])
    with open_target(image, insecure=insecure) as target:
        digest = target.image.digest
        assert digest is not None
        found = discover(
            target.source,
            target.image.repository,
            digest,
            signature_repo=signature_repository,
        )
        check = judge_verdicts(
            found.cosign, image_digest=digest, key=public, now=datetime.now(UTC), max_age=age
        )
    newest = check.newest
    if output == "json":
        print_json(
            {
                "image": str(target.image),
                "digest": digest,
                "ok": check.ok,
                "reason": check.reason,
                "maxAge": max_age,
                "verdict": newest.verdict if newest else None,
                "decidedAt": newest.decided_at.isoformat()
                if newest and newest.decided_at
                else None,
                "attestations": [
                    {
                        "manifest": s.attestation,
                        "format": s.format,
                        "valid": s.valid,
                        "verdict": s.verdict,
                        "decidedAt": s.decided_at.isoformat() if s.decided_at else None,
                        "policy": s.policy,
                        "reason": s.reason,
                    }
                    for s in check.seen
                ],
            }
        )
    else:
        from rich.console import Console
        from rich.markup import escape

        console = Console(highlight=False)
        for s in check.seen:
            when = s.decided_at.isoformat() if s.decided_at else "-"
            state = f"{s.verdict} {when}" if s.valid else f"invalid: {s.reason}"
            console.print(f"{s.format} {s.attestation[:19]} {escape(state)}")
        style = "green" if check.ok else "red"
        console.print(f"[{style}]{escape(str(target.image))}: {escape(check.reason)}[/]")
    if not check.ok:
        raise typer.Exit(1)
