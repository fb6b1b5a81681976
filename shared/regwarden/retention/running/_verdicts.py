"""Which manifests are superseded verdict attestations, from the ledger's action records.

regwarden records each image's verdict attestation as one action
(`verdict-attestation:REG/REPO@DIGEST`, `regwarden.attest`): `pushed` lists what stands on
the registry now, `history` every manifest it ever wrote for that image (attestations,
`.att` manifests rewritten without its layers, referrers indexes). What it wrote and no
longer stands is superseded: retention judges those by the orphans rule instead of
keeping them beside the latest, which follows its kept image. An action still in
progress (`intent`) is left out whole: its half-done step must finish first, and nothing
of it is judged meanwhile. Pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ...store import ActionRecord

__all__ = ["VERDICT_ACTION_KIND", "superseded_verdicts"]

VERDICT_ACTION_KIND = "verdict-attestation"
"""`regwarden.attest.ACTION_KIND`, named here so retention does not import the gate."""


def superseded_verdicts(
    actions: Iterable[ActionRecord], *, registry: str
) -> dict[str, frozenset[str]]:
    """Repository → digests regwarden wrote for its verdict attestations there that no
    longer stand, from finished actions of `registry`."""
    out: dict[str, set[str]] = {}
    for action in actions:
        if (
            action.kind != VERDICT_ACTION_KIND
            or action.registry != registry
            or action.status != "done"
        ):
            continue
        state = action.state if isinstance(action.state, Mapping) else {}
        standing = {
            str(entry.get("digest"))
            for entry in state.get("pushed") or ()
            if isinstance(entry, Mapping)
        }
        written = {str(d) for d in state.get("history") or () if isinstance(d, str)}
        if written - standing:
            out.setdefault(action.repository, set()).update(written - standing)
    return {repo: frozenset(digests) for repo, digests in out.items()}
