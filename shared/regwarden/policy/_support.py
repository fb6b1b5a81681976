"""What regwarden can actually do with a valid policy: the scan sources each registry serves
(and reads by default), and the check that refuses what no code would read.

`check_support` is the one check behind `regwarden policy validate`, and the start-up of
`serve`, `invoke` and the cloud functions (`ensure_supported`): a policy is never "valid"
and then ignored at run time. It is pure: the policy and, optionally, the registry host the
policy will run against.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import PolicyError
from ._base import Loc, render_path
from ._model import EffectiveRepositoryPolicy, Policy, _origin_loc
from ._problems import Problem
from ._registries import KIND_SOURCES, UNLISTED_GENERIC_SOURCES, native_sources

__all__ = [
    "NOT_READ_YET",
    "attestation_signers",
    "check_support",
    "ensure_supported",
    "scan_sources",
    "servable_sources",
    "support_locs",
]

#: Scan sources the policy accepts but no code reads yet, and why.
NOT_READ_YET: dict[str, str] = {}
#: Registry kinds whose provider locks single manifests (the `lock` quarantine).
_LOCK_KINDS = frozenset({"acr"})
#: Registry kinds whose provider has not landed.
_PROVIDERS_NOT_YET: dict[str, str] = {}
_READ = (
    "artifact-analysis",
    "clair",
    "cosign-vuln",
    "defender",
    "ecr",
    "grype-referrer",
    "harbor",
    "inspector",
    "trivy-referrer",
)
#: Scan sources that read reports attached as OCI referrers (`vulnerabilities.referrers`).
_REFERRER_SOURCES = frozenset({"trivy-referrer", "grype-referrer"})


def attestation_signers(effective: EffectiveRepositoryPolicy) -> bool:
    """Whether signed attestations can be verified: an `attestations` section, or the
    `signatures.cosign` signers it falls back to."""
    if effective.attestations is not None:
        return True
    signatures = effective.signatures
    return signatures is not None and signatures.cosign is not None


def _referrer_signers(effective: EffectiveRepositoryPolicy) -> bool:
    """Whether a report referrer's signature can be verified: the repository's own
    signature verifiers (the image's keys, identities or Notation trust policy)."""
    signatures = effective.signatures
    return signatures is not None and (
        signatures.cosign is not None or signatures.notation is not None
    )


def servable_sources(policy: Policy, host: str) -> frozenset[str]:
    """The scan sources the registry at `host` can serve, from its kind."""
    listed = policy.registry(host)
    if listed is not None:
        return listed.sources()  # its kind's, and `clair` when the entry names a Clair
    if policy.registry_kind(host) == "distribution":
        return UNLISTED_GENERIC_SOURCES
    return KIND_SOURCES[policy.registry_kind(host)]


def scan_sources(
    effective: EffectiveRepositoryPolicy, policy: Policy, host: str
) -> tuple[str, ...]:
    """The scan sources the push gate reads for a repository on `host`.

    `vulnerabilities.sources` when set (only what the registry can serve; `check_support`
    refuses the rest at start-up). Unset: the registry's own scanner (`ecr` on ECR, `harbor`
    on Harbor) plus `cosign-vuln` whenever attestation signers are configured. No
    `vulnerabilities` section: none.
    """
    vulnerabilities = effective.vulnerabilities
    if vulnerabilities is None:
        return ()
    signers = attestation_signers(effective)
    if vulnerabilities.sources is not None:
        servable = servable_sources(policy, host)
        return tuple(
            s
            for s in vulnerabilities.sources
            if s in servable and s not in NOT_READ_YET and (s != "cosign-vuln" or signers)
        )
    own = native_sources(policy.registry_kind(host))
    return own + (("cosign-vuln",) if signers else ())


@dataclass(frozen=True, slots=True)
class _Target:
    label: str
    kind: str
    sources: frozenset[str]


def _targets(policy: Policy, registry: str | None) -> list[_Target] | None:
    """The registries the policy will run against: the named one, else the listed ones;
    None when neither is known (any kind is possible)."""
    if registry is not None:
        host = registry.lower()
        listed = policy.registry(host)
        kind = policy.registry_kind(host)
        how = (
            f"registries[{policy.registries.index(listed)}]"
            if listed is not None
            else "not in registries: kind from its name"
        )
        return [_Target(f"{host} ({kind}, {how})", kind, servable_sources(policy, host))]
    if not policy.registries:
        return None
    return [
        _Target(f"{r.host} ({r.kind}, registries[{i}])", r.kind, r.sources())
        for i, r in enumerate(policy.registries)
    ]


def _loc(effective: EffectiveRepositoryPolicy, section: str, *rest: str | int) -> Loc:
    origin = effective.origins.get(section, effective.source)
    return (*_origin_loc(origin), section, *rest)


def support_locs(policy: Policy, *, registry: str | None = None) -> list[tuple[Loc, str]]:
    """Every setting the policy has that regwarden would not carry out, with its document
    location; empty when everything it says will be read and done."""
    targets = _targets(policy, registry)
    found: dict[Loc, str] = {}

    def add(loc: Loc, message: str) -> None:
        found.setdefault(loc, message)  # the first combination that shows it says it

    for i, entry in enumerate(policy.registries):
        why = _PROVIDERS_NOT_YET.get(entry.kind)
        if why is not None:
            add(("registries", i, "kind"), f"kind {entry.kind!r} cannot be used yet: {why}")
    combos: list[int | None] = [None, *range(len(policy.repositories))]
    for index in combos:
        effective = policy.effective_entry(index)
        strategy = effective.quarantine.strategy
        lockers = targets is not None and any(t.kind in _LOCK_KINDS for t in targets)
        if strategy == "lock" and "quarantine" in effective.origins and not lockers:
            # the provider refuses `lock` on a registry without manifest locks: say so now
            on = (
                "no registry is listed or named"
                if targets is None
                else "; ".join(f"{t.label} cannot" for t in targets)
            )
            add(
                _loc(effective, "quarantine", "strategy"),
                "quarantine strategy 'lock' needs a registry that locks manifests (acr): "
                f"{on}; expected 'move' or 'retag', or the acr registry in 'registries'",
            )
        vulnerabilities = effective.vulnerabilities
        if vulnerabilities is None:
            continue
        signers = attestation_signers(effective)
        where = _applies(effective, "vulnerabilities")
        for s, source in enumerate(vulnerabilities.sources or ()):
            loc = _loc(effective, "vulnerabilities", "sources", s)
            if source in NOT_READ_YET:
                add(
                    loc,
                    f"scan source {source!r} is not read yet: {NOT_READ_YET[source]}; "
                    f"expected one of: {', '.join(_READ)}",
                )
                continue
            if source == "cosign-vuln" and not signers:
                add(
                    loc,
                    "scan source 'cosign-vuln' reads signed vulnerability attestations, but no "
                    f"attestation signer is configured{where}; expected 'attestations' or "
                    "'signatures.cosign' keys or identities",
                )
            if targets is not None and not any(source in t.sources for t in targets):
                add(loc, _cannot_serve(source, targets))
            if (
                source in _REFERRER_SOURCES
                and vulnerabilities.referrers.require_signed
                and not _referrer_signers(effective)
            ):
                add(
                    loc,
                    f"scan source {source!r} counts only signed report referrers "
                    "(vulnerabilities.referrers.requireSigned), but no signature key, "
                    f"identity or Notation trust policy is configured{where}, so no report "
                    "would ever count; expected 'signatures.cosign' or 'signatures.notation', "
                    "or referrers: {requireSigned: false}",
                )
        if (
            vulnerabilities.sources is None
            and targets is not None
            and not signers
            and not any(native_sources(t.kind) for t in targets)
        ):
            add(
                _loc(effective, "vulnerabilities"),
                "no scan source: 'sources' is unset, "
                + _no_scanner(targets)
                + f" and no attestation signer is configured for 'cosign-vuln'{where}, "
                "so every image would fail for 'no scan'; expected 'sources' or "
                "attestation signers",
            )
    return sorted(found.items(), key=lambda item: render_path(item[0]))


def _applies(effective: EffectiveRepositoryPolicy, section: str) -> str:
    """` (as it applies to repositories[N])` when `section` comes from the defaults but
    the problem shows only with entry N's other sections."""
    if effective.entry is None or effective.origins.get(section) != "defaults":
        return ""
    return f" (as it applies to {effective.source})"


def _cannot_serve(source: str, targets: list[_Target]) -> str:
    if len(targets) == 1:
        t = targets[0]
        return f"registry {t.label} cannot serve scan source {source!r}; it serves: " + ", ".join(
            sorted(t.sources)
        )
    serves = "; ".join(f"{t.label}: {', '.join(sorted(t.sources))}" for t in targets)
    return f"no listed registry can serve scan source {source!r} ({serves})"


def _no_scanner(targets: list[_Target]) -> str:
    if len(targets) == 1:
        return f"registry {targets[0].label} has no scanner of its own that regwarden reads,"
    return "no listed registry has a scanner of its own that regwarden reads,"


def check_support(policy: Policy, *, registry: str | None = None) -> list[Problem]:
    """`support_locs` as problems (no line numbers: the policy is already parsed)."""
    found = support_locs(policy, registry=registry)
    return [Problem(render_path(loc), None, message) for loc, message in found]


def ensure_supported(policy: Policy, *, registry: str | None = None) -> None:
    """Refuse to run a policy with settings no code would carry out (PolicyError, exit 2)."""
    problems = check_support(policy, registry=registry)
    if not problems:
        return
    source = policy.source or "the policy"
    count = f"{len(problems)} setting" + ("" if len(problems) == 1 else "s")
    lines = "\n".join(f"  {p.path}: {p.message}" for p in problems)
    raise PolicyError(
        f"{source}: {count} regwarden would not carry out; refusing to start\n{lines}",
        problems=[(p.path, p.message) for p in problems],
    )
