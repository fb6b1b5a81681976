"""What Azure runs, for retention's in-use inventory: the `containerapps` and `aks` sources.

- **Container Apps** (`inventory.containerapps`): one Azure Resource Graph query over the
  subscriptions (`resources | where type in~ ("microsoft.app/containerapps",
  "microsoft.app/jobs")`), every page, read with the Defender source's client
  (`scanning.defender.resourcegraph_client`, `REGWARDEN_AZURE_ENDPOINT_RESOURCEGRAPH`);
  the images of each app's and job's `properties.template` (containers and init
  containers). An app in multiple-revision mode may still serve older revisions whose
  images its template no longer names: Resource Graph does not list revisions, so such
  images are protected only while a `files` or `kubernetes` source names them.
- **AKS** (`inventory.aks`): the clusters the policy names by ARM id, or every
  `Microsoft.ContainerService/managedClusters` in the subscriptions (ARM list, all pages);
  for each, `listClusterUserCredential` gives a kubeconfig whose cluster entry (server and
  CA) is read with the `kubernetes` source's reader (`refs_from_kube_clients`: pods, their
  resolved digests, workload templates). The kubeconfig's user entry is not run (it names
  kubelogin's exec plugin): the request carries a Microsoft Entra token for the AKS server
  application (`AKS_SERVER_SCOPE`) from the same credential; a cluster with local
  accounts, whose user entry holds a token, is read with that token.

ARM is `https://management.azure.com`, or `REGWARDEN_AZURE_ENDPOINT_ARM` (https, or http on
loopback, then called without a token); `REGWARDEN_AZURE_CA_BUNDLE` adds trusted CAs.
Subscriptions: the section's, else `REGWARDEN_AZURE_SUBSCRIPTION`'s (Container Apps:
empty means every subscription the identity can read; AKS needs at least one when no
cluster is named). Credentials: `DefaultAzureCredential` unless the caller passes one;
Reader on the subscriptions, and "Azure Kubernetes Service Cluster User Role" plus read
access to pods and workloads in every namespace on each cluster.

Fail closed, as every inventory source: a listing that cannot be read, a cluster that is
not running (its workloads come back when it starts) or a reference that does not parse
raises, and retention plans nothing.

Azure libraries and the Kubernetes client are imported on first use, never with this
module.
"""

from __future__ import annotations

import base64
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...cloud_endpoints import endpoint_override, is_loopback
from ...errors import AuthError, NotImplementedYet, RegistryError, UsageError
from ...reference import ImageRef
from ._inventory import INVENTORIES, InUse, InventoryContext, _parse, refs_from_kube_clients

if TYPE_CHECKING:
    from ...policy import AksInventory, ContainerAppsInventory

__all__ = [
    "AKS_API_VERSION",
    "AKS_SERVER_SCOPE",
    "ARM_ENDPOINT_ENV",
    "ARM_SCOPE",
    "CONTAINERAPPS_QUERY",
    "AksCluster",
    "images_from_template",
    "refs_from_aks",
    "refs_from_containerapps",
]

ARM_ENDPOINT_ENV = "REGWARDEN_AZURE_ENDPOINT_ARM"
ARM_DEFAULT = "https://management.azure.com"
ARM_SCOPE = "https://management.azure.com/.default"
AKS_SERVER_SCOPE = "6dae42f8-4368-4678-94ff-3960e28e3630/.default"
"""The AKS server application every AKS-managed Entra cluster accepts tokens for (what
kubelogin asks for)."""
AKS_API_VERSION = "2024-09-01"
CONTAINERAPPS_QUERY = "\n".join(
    [
        "resources",
        '| where type in~ ("microsoft.app/containerapps", "microsoft.app/jobs")',
        "| project id, type, template = properties.template",
    ]
)
_APP = "microsoft.app/containerapps"
_JOB = "microsoft.app/jobs"
_MAX_PAGES = 1000
_TIMEOUT = 30.0


# -- Container Apps ------------------------------------------------------------------------------


def images_from_template(template: Mapping[str, Any] | None, where: str) -> list[ImageRef]:
    """A Container App's or job's `properties.template` → the images of its init containers
    and containers. An image with neither tag nor digest runs `:latest`."""
    out: list[ImageRef] = []
    for key in ("initContainers", "containers"):
        for container in (template or {}).get(key) or ():
            image = container.get("image") if isinstance(container, Mapping) else None
            if not isinstance(image, str) or not image:
                continue
            ref = _parse(image, f"{where} {key}[{container.get('name') or '?'}]")
            out.append(ref if ref.tag or ref.digest else ref.with_tag("latest"))
    return out


def _subscriptions(section_subscriptions: Sequence[str], env: Mapping[str, str]) -> tuple[str, ...]:
    from ...scanning.defender import subscriptions_of

    return tuple(section_subscriptions) or subscriptions_of(env)


def refs_from_containerapps(
    section: ContainerAppsInventory,
    *,
    env: Mapping[str, str] | None = None,
    client: Any = None,
    credential: Any = None,
) -> InUse:
    """Images the Container Apps and Container Apps jobs of the subscriptions run.

    Raises RegistryError (AuthError when refused) when Resource Graph cannot be read."""
    from ...scanning.defender import PAGE_SIZE, query_rows, resourcegraph_client

    env = os.environ if env is None else env
    subscriptions = _subscriptions(section.subscriptions, env)
    where = "inventory.containerapps"
    try:
        graph = client if client is not None else resourcegraph_client(env, credential)
    except ImportError:
        raise NotImplementedYet(
            "inventory.containerapps needs azure-mgmt-resourcegraph from the 'azure' extra",
            hint="pip install 'regwarden[azure]'",
        ) from None
    rows = query_rows(graph, subscriptions, CONTAINERAPPS_QUERY, page_size=PAGE_SIZE, what=where)
    apps: list[ImageRef] = []
    jobs: list[ImageRef] = []
    for row in rows:
        kind = str(row.get("type") or "").lower()
        resource = str(row.get("id") or "?")
        if kind == _APP and section.apps:
            apps += images_from_template(row.get("template"), f"container app {resource}")
        elif kind == _JOB and section.jobs:
            jobs += images_from_template(row.get("template"), f"container apps job {resource}")
    label = ",".join(subscriptions) or "*"
    sources: dict[str, int] = {}
    if section.apps:
        sources[f"containerapps:{label}"] = len(apps)
    if section.jobs:
        sources[f"containerapps-jobs:{label}"] = len(jobs)
    return InUse(refs=tuple(dict.fromkeys(apps + jobs)), sources=sources)


# -- AKS -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AksCluster:
    """One cluster's API server, as its user kubeconfig gives it."""

    name: str
    server: str
    ca_pem: bytes | None
    token: str | None
    """The kubeconfig user's own token (local accounts); None: an Entra token is used."""


class _Arm:
    """Just the two ARM calls the AKS source makes, over httpx with a bearer token for
    ARM (none for a loopback http stand-in)."""

    def __init__(self, env: Mapping[str, str], credential: Any) -> None:
        import httpx

        from ... import azure_clients

        self.base = endpoint_override(ARM_ENDPOINT_ENV, env) or ARM_DEFAULT
        self.anonymous = self.base.startswith("http://")
        self.credential = credential
        ca = azure_clients.ca_bundle(env)
        verify: Any = True
        if ca is not None:
            import ssl

            verify = ssl.create_default_context()
            verify.load_verify_locations(ca)
        self.ca_file = ca
        self.http = httpx.Client(timeout=_TIMEOUT, verify=verify, follow_redirects=False)

    def close(self) -> None:
        self.http.close()

    def token(self, scope: str) -> str:
        try:
            return str(self.credential.get_token(scope).token)
        except Exception as exc:  # azure-identity's CredentialUnavailableError, …
            raise AuthError(
                f"inventory.aks: no Microsoft Entra token for {scope}: {exc}",
                hint="run with a managed identity, or az login, that may read the clusters",
            ) from exc

    def call(self, method: str, url: str, what: str) -> Any:
        import httpx

        headers = {"Accept": "application/json"}
        if not self.anonymous:
            headers["Authorization"] = f"Bearer {self.token(ARM_SCOPE)}"
        try:
            response = self.http.request(method, url, headers=headers)
        except httpx.HTTPError as exc:
            raise RegistryError(f"inventory.aks: {what}: {exc}") from exc
        if response.status_code >= 400:
            error = _arm_error(response)
            text = f"inventory.aks: {what}: HTTP {response.status_code} {error}"
            if response.status_code in (401, 403):
                raise AuthError(
                    text,
                    status=response.status_code,
                    hint="the identity needs Reader on the subscription and the Azure "
                    "Kubernetes Service Cluster User Role on each cluster",
                )
            raise RegistryError(text, status=response.status_code)
        try:
            return response.json()
        except ValueError as exc:
            raise RegistryError(f"inventory.aks: {what}: the answer is not JSON") from exc

    def url(self, path: str, **query: str) -> str:
        from urllib.parse import urlencode

        return f"{self.base}{path}?{urlencode({'api-version': AKS_API_VERSION, **query})}"

    def same_origin(self, link: str) -> bool:
        """A `nextLink` must stay on ARM's host: the token goes with it."""
        return link.startswith(self.base + "/")


def _arm_error(response: Any) -> str:
    try:
        error = response.json().get("error") or {}
    except (ValueError, AttributeError):
        return str(response.text)[:200]
    return f"{error.get('code', '')}: {error.get('message', '')}".strip(": ")


def _cluster_ids(arm: _Arm, subscriptions: Sequence[str]) -> Iterator[dict[str, Any]]:
    """Every managed cluster of the subscriptions (`value`, following `nextLink`)."""
    for subscription in subscriptions:
        url: str | None = arm.url(
            f"/subscriptions/{subscription}/providers/Microsoft.ContainerService/managedClusters"
        )
        for _ in range(_MAX_PAGES):
            if url is None:
                break
            page = arm.call("GET", url, f"list the clusters of subscription {subscription}")
            yield from page.get("value") or ()
            link = page.get("nextLink") or None
            if link is not None and not arm.same_origin(str(link)):
                raise RegistryError(f"inventory.aks: nextLink {link!r} leaves {arm.base}")
            url = str(link) if link else None
        else:
            raise RegistryError("inventory.aks: ARM kept answering more pages")


def _cluster(arm: _Arm, resource_id: str) -> AksCluster:
    """The cluster's API server from its user kubeconfig (`listClusterUserCredential`)."""
    import yaml

    doc = arm.call(
        "POST",
        arm.url(f"{resource_id}/listClusterUserCredential", format="exec"),
        f"user credential of {resource_id}",
    )
    configs = doc.get("kubeconfigs") or []
    if not configs or not isinstance(configs[0], Mapping) or not configs[0].get("value"):
        raise RegistryError(f"inventory.aks: {resource_id}: no kubeconfig in the answer")
    try:
        config = yaml.safe_load(base64.b64decode(str(configs[0]["value"])))
    except (ValueError, yaml.YAMLError) as exc:
        raise RegistryError(f"inventory.aks: {resource_id}: unreadable kubeconfig: {exc}") from exc
    contexts = {c.get("name"): c.get("context") or {} for c in config.get("contexts") or ()}
    context = contexts.get(config.get("current-context")) or next(iter(contexts.values()), {})
    clusters = {c.get("name"): c.get("cluster") or {} for c in config.get("clusters") or ()}
    users = {u.get("name"): u.get("user") or {} for u in config.get("users") or ()}
    cluster = clusters.get(context.get("cluster")) or next(iter(clusters.values()), None)
    if not cluster or not cluster.get("server"):
        raise RegistryError(f"inventory.aks: {resource_id}: the kubeconfig names no server")
    user = users.get(context.get("user")) or {}
    ca = cluster.get("certificate-authority-data")
    own = user.get("token") if not (user.get("exec") or user.get("auth-provider")) else None
    return AksCluster(
        name=resource_id.rsplit("/", 1)[1],
        server=str(cluster["server"]).rstrip("/"),
        ca_pem=base64.b64decode(ca) if ca else None,
        token=str(own) if own else None,
    )


def _kube_api(cluster: AksCluster, token: str, directory: Path) -> Any:
    """A Kubernetes ApiClient for the cluster: its CA, the bearer token, no exec plugin."""
    from urllib.parse import urlsplit

    try:
        from kubernetes import client as k8s_client  # type: ignore[import-untyped]
    except ImportError:
        raise NotImplementedYet(
            "inventory.aks needs the kubernetes client from the 'k8s' extra",
            hint="pip install 'regwarden[k8s]'",
        ) from None
    parts = urlsplit(cluster.server)
    if parts.scheme != "https" and not is_loopback(parts.hostname or ""):
        raise RegistryError(
            f"inventory.aks: cluster {cluster.name}: server {cluster.server!r} is not https; "
            "no token is sent in the clear"
        )
    configuration = k8s_client.Configuration()
    configuration.host = cluster.server
    if cluster.ca_pem is not None:
        ca_file = directory / f"{cluster.name}-ca.pem"
        ca_file.write_bytes(cluster.ca_pem)
        configuration.ssl_ca_cert = str(ca_file)
    configuration.api_key = {"BearerToken": token}
    configuration.api_key_prefix = {"BearerToken": "Bearer"}
    return k8s_client.ApiClient(configuration)


def refs_from_aks(
    section: AksInventory,
    *,
    env: Mapping[str, str] | None = None,
    credential: Any = None,
) -> InUse:
    """Images running in the named AKS clusters (or every cluster of the subscriptions).

    Raises RegistryError (AuthError when refused) when a cluster cannot be listed, is not
    running, or its workloads cannot be read."""
    from ... import azure_clients

    env = os.environ if env is None else env
    ids = list(section.clusters)
    subscriptions = _subscriptions(section.subscriptions, env)
    if not ids and not subscriptions:
        raise UsageError(
            "inventory.aks: no clusters or subscriptions listed and "
            "REGWARDEN_AZURE_SUBSCRIPTION is not set",
            hint="list them: inventory: {aks: {subscriptions: [SUBSCRIPTION_ID]}}",
        )
    credential = credential if credential is not None else azure_clients.default_credential()
    arm = _Arm(env, credential)
    try:
        if not ids:
            ids = [_running(found) for found in _cluster_ids(arm, subscriptions)]
        clusters = [_cluster(arm, resource_id) for resource_id in ids]
        with tempfile.TemporaryDirectory(prefix="aks-ca-") as directory:
            clients = [
                (c.name, _kube_api(c, c.token or arm.token(AKS_SERVER_SCOPE), Path(directory)))
                for c in clusters
            ]
            return refs_from_kube_clients(clients, source="aks", noun="cluster")
    finally:
        arm.close()


def _running(cluster: Mapping[str, Any]) -> str:
    """The id of a listed cluster that is running; a stopped one raises (fail closed)."""
    state = ((cluster.get("properties") or {}).get("powerState") or {}).get("code")
    if state is not None and state != "Running":
        raise RegistryError(
            f"inventory.aks: cluster {cluster.get('id')} is {state}: its workloads come back "
            "when it starts, and cannot be read now",
            hint="start it, or name the clusters to read under inventory.aks.clusters",
        )
    return str(cluster["id"])


# -- registration --------------------------------------------------------------------------------


@INVENTORIES.register("containerapps")
def _containerapps(section: ContainerAppsInventory, context: InventoryContext) -> InUse:
    return refs_from_containerapps(section, env=context.env, credential=context.azure_credential)


@INVENTORIES.register("aks")
def _aks(section: AksInventory, context: InventoryContext) -> InUse:
    return refs_from_aks(section, env=context.env, credential=context.azure_credential)
