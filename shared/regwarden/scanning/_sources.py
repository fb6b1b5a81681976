"""The push gate's scan sources, by the names the policy gives them (`vulnerabilities.sources`).

A source is a factory registered in `SCAN_SOURCES`: it gets a `ScanContext` and returns a
`ScanReader`, `(registry, image) -> ScanReport | None` (None: no finished scan yet), or
None when it does not apply to that registry. Adding a scanner (Azure Defender, Trivy,
Grype) is one registered function:

    @SCAN_SOURCES.register("defender")
    def _defender(context: ScanContext) -> ScanReader | None:
        from .defender import DefenderScanSource  # the SDK loads on first use

        return DefenderScanSource(env=context.env)

A reader raises `RegistryError` when it cannot read (the evidence is unavailable),
`VerificationError` or `ScanFormatError` when the scanner's own verdict is a failed scan,
and `NotFound` when the image is gone. `NoScanYet` is None with a reason: no finished scan
yet, and the source knows why (the verdict's pending and timeout reasons show it).
`cosign-vuln` is not here: it is a signed attestation, found by signature discovery.

Names registered to one factory share one read: ECR's findings API carries Inspector's
under enhanced scanning, so `ecr` and `inspector` together are one call (`ecr+inspector`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeAlias

from ..plugins import PluginRegistry

if TYPE_CHECKING:
    from ..model import ScanReport
    from ..policy import Policy
    from ..providers import Registry
    from ..reference import ImageRef

__all__ = [
    "SCAN_SOURCES",
    "NoScanYet",
    "ScanContext",
    "ScanReader",
    "ScanSourceFactory",
    "scan_readers",
]


@dataclass(frozen=True, slots=True)
class ScanContext:
    """What a scan source may need to set itself up for one evaluation."""

    policy: Policy
    registry: Registry
    env: Mapping[str, str]
    insecure: bool = False


class NoScanYet(Exception):
    """What a reader raises instead of returning None when it can say why there is no
    finished scan yet: the image stays PENDING until `scanTimeout` exactly as with None,
    and the reason (the exception's message) is shown in the verdict."""


class ScanReader(Protocol):
    """Reads the scan of one image: its report, or None when no finished scan exists yet."""

    def __call__(self, registry: Registry, image: ImageRef, /) -> ScanReport | None: ...


ScanSourceFactory: TypeAlias = Callable[[ScanContext], ScanReader | None]

SCAN_SOURCES: PluginRegistry[ScanSourceFactory] = PluginRegistry("scan source")


def scan_readers(names: Iterable[str], context: ScanContext) -> list[tuple[str, ScanReader]]:
    """The readers for the scan sources `names`, each labelled with the names it serves
    (`ecr+inspector`), in name order. A name with no registered source is a usage error
    naming the registered ones; a source that does not apply is left out."""
    served_by: dict[ScanSourceFactory, list[str]] = {}
    for name in sorted(set(names)):
        served_by.setdefault(SCAN_SOURCES.get(name), []).append(name)
    readers: list[tuple[str, ScanReader]] = []
    for factory, served in served_by.items():
        reader = factory(context)
        if reader is not None:
            readers.append(("+".join(served), reader))
    return readers


@SCAN_SOURCES.register("ecr", "inspector")
def _ecr(context: ScanContext) -> ScanReader | None:
    from .ecr import EcrScanSource

    return EcrScanSource()


@SCAN_SOURCES.register("harbor")
def _harbor(context: ScanContext) -> ScanReader | None:
    from .harbor_api import ENV_API_BASE, HarborScanSource

    # The registries section says where Harbor's API is; the environment is the fallback.
    listed = context.policy.registry(context.registry.host)
    api = (listed.api if listed is not None else None) or context.env.get(ENV_API_BASE)
    return HarborScanSource(api_base=api or None, env=context.env, insecure=context.insecure)


@SCAN_SOURCES.register("artifact-analysis")
def _artifact_analysis(context: ScanContext) -> ScanReader | None:
    from .artifact_analysis import ArtifactAnalysisScanSource  # google-cloud loads on first use

    return ArtifactAnalysisScanSource(env=context.env)


@SCAN_SOURCES.register("defender")
def _defender(context: ScanContext) -> ScanReader | None:
    from .defender import DefenderScanSource  # the Azure SDK loads on first use

    return DefenderScanSource(env=context.env)


@SCAN_SOURCES.register("trivy-referrer")
def _trivy_referrer(context: ScanContext) -> ScanReader | None:
    from .referrer_reports import KINDS, ReferrerReportSource

    return ReferrerReportSource(KINDS["trivy"], context.policy, env=context.env)


@SCAN_SOURCES.register("grype-referrer")
def _grype_referrer(context: ScanContext) -> ScanReader | None:
    from .referrer_reports import KINDS, ReferrerReportSource

    return ReferrerReportSource(KINDS["grype"], context.policy, env=context.env)


@SCAN_SOURCES.register("clair")
def _clair(context: ScanContext) -> ScanReader | None:
    # Clair is configured per registry (`registries[].clair`); without it, nothing to read.
    listed = context.policy.registry(context.registry.host)
    if listed is None or listed.clair is None:
        return None
    from .clair import ClairScanSource

    return ClairScanSource.from_config(listed.clair, env=context.env)
