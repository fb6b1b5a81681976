"""The policy document: defaults, repository entries, notifications, inventory, and the
first-match, per-section merge that gives one repository its effective policy."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from .. import quarantine_names
from ..errors import UsageError
from ._access import Access
from ._attest import Attest
from ._base import Loc, PolicyModel, render_path, rule_error
from ._glob import Glob
from ._location import DOCUMENT_SCHEMES, Location, Schemes, resolve_file
from ._notify import Notifications
from ._push import Hygiene, Promotion, Provenance
from ._registries import RegistryEntry, check_registries, host_kind
from ._sections import Mode, Quarantine, Retention, Tags, Vulnerabilities
from ._signing import Attestations, Signatures
from ._values import PositiveDuration

__all__ = [
    "API_VERSION",
    "SECTIONS",
    "AksInventory",
    "AwsInventory",
    "CloudRunInventory",
    "ContainerAppsInventory",
    "Defaults",
    "EffectiveRepositoryPolicy",
    "Inventory",
    "KubernetesInventory",
    "Policy",
    "RepositoryEntry",
]

API_VERSION = "regwarden/v1"
DEFAULT_SETTLE_WINDOW = timedelta(minutes=5)


class _Sections(PolicyModel):
    """The sections a repository entry can set and `defaults` can provide.

    To add a section: add a field here (default None) and the same field, resolved, to
    `EffectiveRepositoryPolicy`; the merge picks it up by name.
    """

    mode: Mode | None = None
    """`enforce`: failed images are quarantined. `audit`: alert only. Default: enforce."""

    team: str | None = Field(default=None, min_length=1)
    """The owning team; used to route alerts."""

    settle_window: PositiveDuration | None = Field(
        default=None, json_schema_extra={"default": "5m"}
    )
    """How long an untagged manifest pushed by digest waits before it is judged as a
    stand-alone image (unless an index lists it by then: a child of a multi-arch push).
    The wait is max(`settleWindow`, `signatures.gracePeriod`) after the last manifest push
    seen in the repository. Default: 5m."""

    quarantine: Quarantine | None = None
    """How failed images are held. Default: move to `quarantine/{repository}`."""

    signatures: Signatures | None = None
    vulnerabilities: Vulnerabilities | None = None
    tags: Tags | None = None
    retention: Retention | None = None
    attestations: Attestations | None = None
    hygiene: Hygiene | None = None
    provenance: Provenance | None = None
    promotion: Promotion | None = None
    attest: Attest | None = None
    """Sign the verdicts as in-toto attestations on the image. Default: off."""

    access: Access | None = None
    """Access monitoring: who may pull and push, from where, and which pulls and pushes
    alert (a pull of a blocked digest alerts even without this section). Default: only
    blocked pulls alert, with a 10m dedupe window."""


#: Section names, in document order; each is merged as a whole.
SECTIONS: tuple[str, ...] = tuple(_Sections.model_fields)


class Defaults(_Sections):
    """Sections that apply to every repository unless its entry sets the same section."""


class RepositoryEntry(_Sections):
    """Sections for the repositories whose name matches `match`."""

    match: Glob
    """Repository glob (no registry host): `*` one segment, `**` any depth, `?` one char."""


class KubernetesInventory(PolicyModel):
    """Images running in Kubernetes clusters are in use: pods (their images and the digests
    the kubelet resolved) and the pod templates of Deployments, StatefulSets, DaemonSets,
    Jobs and CronJobs, in every namespace."""

    contexts: tuple[str, ...] = ()
    """kubeconfig contexts to read (kubeconfig from `KUBECONFIG` or `~/.kube/config`).
    Empty: the in-cluster service account when running in a pod, else the current
    context."""


class AwsInventory(PolicyModel):
    """Images that AWS ECS and Lambda run are in use (read with the default AWS
    credentials)."""

    regions: tuple[str, ...] = ()
    """Regions to read; empty: the default region of the AWS configuration."""

    ecs: bool = True
    """Running ECS tasks (their resolved image digests) and the task definitions of ECS
    services."""

    clusters: tuple[str, ...] = ()
    """ECS clusters to read (names or ARNs); empty: every cluster in the region."""

    lambda_: bool = Field(default=True, alias="lambda")
    """Lambda functions packaged as container images (their resolved image URIs)."""


class CloudRunInventory(PolicyModel):
    """Images that Google Cloud Run services and jobs run are in use (read with the default
    Google credentials). GKE clusters are read by the `kubernetes` section."""

    projects: tuple[str, ...] = ()
    """Projects to read (ids or numbers); empty: the project regwarden runs in
    (`GOOGLE_CLOUD_PROJECT`)."""

    regions: tuple[str, ...] = ()
    """Regions to read; empty: every region (one global listing, `locations/-`)."""

    services: bool = True
    """Services: the images of their template and of every revision that serves traffic
    (by percentage or by a traffic tag)."""

    jobs: bool = True
    """Jobs: the images of their template."""


_AKS_CLUSTER_ID = re.compile(
    r"/subscriptions/[^/]+/resourceGroups/[^/]+/providers/"
    r"Microsoft\.ContainerService/managedClusters/[^/]+",
    re.IGNORECASE,  # ARM ids are case-insensitive
)


class ContainerAppsInventory(PolicyModel):
    """Images that Azure Container Apps and Container Apps jobs run are in use: the
    containers and init containers of each one's template, read from Azure Resource Graph
    (with the default Azure credentials; Reader on the subscriptions)."""

    subscriptions: tuple[str, ...] = ()
    """Subscription ids to read; empty: those `REGWARDEN_AZURE_SUBSCRIPTION` lists, else
    every subscription the identity can read."""

    apps: bool = True
    """Container Apps (`Microsoft.App/containerApps`)."""

    jobs: bool = True
    """Container Apps jobs (`Microsoft.App/jobs`)."""


class AksInventory(PolicyModel):
    """Images running in AKS clusters are in use: read as the `kubernetes` section reads a
    cluster (pods, their resolved digests, and workload templates), through each cluster's
    user credential (`listClusterUserCredential`) and a Microsoft Entra token for the AKS
    server application (clusters with AKS-managed Entra integration)."""

    subscriptions: tuple[str, ...] = ()
    """Subscriptions whose clusters are listed; empty: those `REGWARDEN_AZURE_SUBSCRIPTION`
    lists. Ignored when `clusters` names them."""

    clusters: tuple[str, ...] = ()
    """Clusters to read, by ARM resource id (`/subscriptions/S/resourceGroups/RG/providers/
    Microsoft.ContainerService/managedClusters/NAME`); empty: every cluster in the
    subscriptions."""

    @field_validator("clusters")
    @classmethod
    def _resource_ids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for item in value:
            if not _AKS_CLUSTER_ID.fullmatch(item):
                raise ValueError(
                    f"got {item!r}, expected an AKS cluster's resource id: /subscriptions/S/"
                    "resourceGroups/RG/providers/Microsoft.ContainerService/managedClusters/NAME"
                )
        return value


class Inventory(PolicyModel):
    """Where regwarden learns which images are in use (never deleted by retention)."""

    kubernetes: KubernetesInventory | None = None
    aws: AwsInventory | None = None
    cloudrun: CloudRunInventory | None = None
    aks: AksInventory | None = None
    containerapps: ContainerAppsInventory | None = None
    files: tuple[Annotated[Location, Schemes(DOCUMENT_SCHEMES, "an inventory file")], ...] = ()
    """Text files or objects (`file://`, `s3://`, …) listing image references in use, one
    per line; `#` starts a comment."""


class EffectiveRepositoryPolicy(BaseModel):
    """The policy for one repository after the merge: the first matching entry's sections,
    and `defaults` for every section the entry does not set. Unset sections are None."""

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=False)

    repository: str
    entry: int | None
    """Index of the matching entry in `repositories`; None when only defaults apply."""

    match: Glob | None
    mode: Mode
    team: str | None
    settle_window: timedelta
    quarantine: Quarantine
    signatures: Signatures | None
    vulnerabilities: Vulnerabilities | None
    tags: Tags | None
    retention: Retention | None
    attestations: Attestations | None
    hygiene: Hygiene | None
    provenance: Provenance | None
    promotion: Promotion | None
    attest: Attest | None = None
    access: Access | None = None

    origins: dict[str, str] = {}
    """Section name -> where it came from: `repositories[N]` or `defaults`; sections that
    are unset or built-in are absent."""

    @property
    def source(self) -> str:
        """Where the entry sections came from: `repositories[2]` or `defaults`."""
        return "defaults" if self.entry is None else f"repositories[{self.entry}]"

    def path(self, section: str, *rest: str | int) -> str:
        """The policy document path of a key in an effective section, for messages:
        `path("signatures", "cosign", "keys", 0)` -> `repositories[0].signatures.cosign.keys[0]`
        (or `defaults.…` when the section came from the defaults)."""
        origin = self.origins.get(section, self.source)
        return render_path((*_origin_loc(origin), section, *rest))


class Policy(PolicyModel):
    """A whole `regwarden.yaml`."""

    api_version: Literal["regwarden/v1"]
    kind: Literal["Policy"]
    defaults: Defaults = Defaults()
    repositories: tuple[RepositoryEntry, ...] = ()
    """Tried in order; the first whose `match` matches the repository name applies."""

    notifications: Notifications = Notifications()
    inventory: Inventory = Inventory()
    registries: tuple[RegistryEntry, ...] = ()
    """The registries regwarden works with: each one's kind decides its provider and its
    default scan sources. A host not listed: ECR, GAR or ACR by its name, otherwise a
    distribution registry."""

    _base_dir: Path | None = PrivateAttr(default=None)
    _source: str | None = PrivateAttr(default=None)

    @property
    def base_dir(self) -> Path | None:
        """The directory `file://` locations are relative to (set by the loader)."""
        return self._base_dir

    @property
    def source(self) -> str | None:
        """Where the policy was loaded from (a path), for messages."""
        return self._source

    def bind(self, *, source: str | None, base_dir: Path | None) -> Policy:
        """Record where the policy came from; returns `self` (used by the loader)."""
        self._source = source
        self._base_dir = base_dir
        return self

    def registry(self, host: str) -> RegistryEntry | None:
        """The `registries` entry for `host` (case-insensitive), or None when not listed."""
        name = host.lower()
        return next((r for r in self.registries if r.host == name), None)

    def registry_kind(self, host: str) -> str:
        """The kind of registry `host` is: as listed, else by its name (`ecr`, `gar`,
        `acr`), else `distribution`."""
        listed = self.registry(host)
        if listed is not None:
            return listed.kind
        return host_kind(host) or "distribution"

    def entry_for(self, repository: str) -> int | None:
        """Index of the first entry whose glob matches `repository`, or None."""
        for index, entry in enumerate(self.repositories):
            if entry.match.matches(repository):
                return index
        return None

    def for_repository(self, repository: str) -> EffectiveRepositoryPolicy:
        """The effective policy for a repository name (no registry host).

        Defaults apply to every repository, so this never returns None: a repository that
        matches no entry gets the defaults alone. A section the entry sets replaces the
        defaults' section as a whole.
        """
        return self.effective_entry(self.entry_for(repository), repository)

    def effective_entry(
        self, index: int | None, repository: str = "*"
    ) -> EffectiveRepositoryPolicy:
        """The effective policy of entry `index` (None: the defaults alone), as it applies
        to `repository`; used to check every combination a repository can get."""
        entry = self.repositories[index] if index is not None else None
        merged: dict[str, object] = {}
        origins: dict[str, str] = {}
        for name in SECTIONS:
            value = getattr(entry, name) if entry is not None else None
            if value is not None:
                origins[name] = f"repositories[{index}]"
            elif getattr(self.defaults, name) is not None:
                value = getattr(self.defaults, name)
                origins[name] = "defaults"
            merged[name] = value
        if merged["mode"] is None:
            merged["mode"] = "enforce"
        if merged["settle_window"] is None:
            merged["settle_window"] = DEFAULT_SETTLE_WINDOW
        if merged["quarantine"] is None:
            merged["quarantine"] = Quarantine()
        return EffectiveRepositoryPolicy.model_validate(
            {
                "repository": repository,
                "entry": index,
                "match": entry.match if entry is not None else None,
                **merged,
                "origins": origins,
            }
        )

    def quarantine_templates(self) -> tuple[str, ...]:
        """The templates of every `move` quarantine section (the defaults', built in or set,
        and each entry's): the repositories they render to are quarantine repositories."""
        default = self.defaults.quarantine or Quarantine()
        sections = [default, *(e.quarantine or default for e in self.repositories)]
        return quarantine_names.destination_templates(sections)

    def is_quarantine_repository(self, repository: str) -> bool:
        """Whether `repository` is where some `move` quarantine puts images (events for it
        are ignored)."""
        return quarantine_names.is_destination(repository, self.quarantine_templates())

    def resolve_file(self, location: Location) -> Path:
        """The path of a `file://` location, relative to the policy file's directory."""
        if self._base_dir is None and not Path(location.target).is_absolute():
            raise UsageError(
                f"cannot resolve {location.raw!r}: the policy was not loaded from a file; "
                "expected an absolute file:// path or a policy loaded with a base directory"
            )
        return resolve_file(location, self._base_dir or Path("/"))

    @model_validator(mode="after")
    def _check_document(self) -> Policy:
        problems: list[tuple[Loc, str]] = []
        problems += _check_entries(self.repositories)
        problems += _check_attestation_roots(self.defaults, self.repositories)
        problems += _check_routes(self.notifications)
        problems += check_registries(self.registries)
        if problems:
            raise rule_error(problems)
        return self


def _check_entries(entries: tuple[RepositoryEntry, ...]) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    first: dict[str, int] = {}
    catch_all: int | None = None
    for index, entry in enumerate(entries):
        pattern = entry.match.pattern
        loc: Loc = ("repositories", index, "match")
        if catch_all is not None:
            problems.append(
                (
                    loc,
                    f"entry can never apply: repositories[{catch_all}] matches every "
                    "repository ('**') and comes first; move '**' to the end",
                )
            )
        elif pattern in first:
            problems.append(
                (
                    loc,
                    f"duplicate match {pattern!r}: repositories[{first[pattern]}] has the "
                    "same glob and comes first, so this entry can never apply",
                )
            )
        first.setdefault(pattern, index)
        if pattern == "**" and catch_all is None:
            catch_all = index
    return problems


def _check_attestation_roots(
    defaults: Defaults, entries: tuple[RepositoryEntry, ...]
) -> list[tuple[Loc, str]]:
    """Keyless attestation signers need a trusted root from `signatures.cosign`; sections
    merge per repository, so check every combination an effective policy can have."""
    problems: list[tuple[Loc, str]] = []
    reported: set[Loc] = set()
    combos: list[tuple[Loc, _Sections]] = [(("defaults",), defaults)]
    combos += [(("repositories", i), entry) for i, entry in enumerate(entries)]
    for where, sections in combos:
        attestations = sections.attestations
        loc: Loc = (*where, "attestations", "identities")
        if attestations is None:
            attestations, loc = defaults.attestations, ("defaults", "attestations", "identities")
        signatures = sections.signatures or defaults.signatures
        if attestations is None or not attestations.identities or loc in reported:
            continue
        cosign = signatures.cosign if signatures is not None else None
        if cosign is None or cosign.trusted_root is None:
            reported.add(loc)
            applies = (
                "" if where == loc[: len(where)] else f" (as it applies to {render_path(where)})"
            )
            problems.append(
                (
                    loc,
                    "keyless attestation identities need 'signatures.cosign.trustedRoot'"
                    f"{applies}; expected a trusted root in the signatures section, or "
                    "attestation keys instead",
                )
            )
    return problems


def _origin_loc(origin: str) -> Loc:
    if origin.startswith("repositories["):
        return ("repositories", int(origin.removeprefix("repositories[").rstrip("]")))
    return (origin,)


def _check_routes(notifications: Notifications) -> list[tuple[Loc, str]]:
    problems: list[tuple[Loc, str]] = []
    defined = sorted(notifications.channels)
    for r, route in enumerate(notifications.routes):
        for t, name in enumerate(route.to):
            if name not in notifications.channels:
                valid = ", ".join(defined) if defined else "none are defined"
                problems.append(
                    (
                        ("notifications", "routes", r, "to", t),
                        f"unknown channel {name!r}; defined channels: {valid}",
                    )
                )
    return problems
