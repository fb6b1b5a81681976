"""Which images are in use: gathered from the policy's `inventory` sources, turned into
protections per repository. Anything in use is never deleted.

Sources:
- **files and objects** listing references one per line (`#` starts a comment):
  `file://` (relative to the policy file), `s3://` (boto3), `https://`;
- **Kubernetes**: pods (their images, and the digests the kubelet resolved in
  `status.containerStatuses[].imageID`) and the pod templates of Deployments, ReplicaSets
  (a Deployment's rollback targets), StatefulSets, DaemonSets, Jobs and CronJobs, in every
  namespace, for each kubeconfig context (or the in-cluster service account);
- **AWS**: running ECS tasks (their resolved `imageDigest`s and images), the task
  definitions of ECS services, and Lambda functions packaged as images (`ImageUri` and the
  `ResolvedImageUri` Lambda pinned at deploy time);
- **Google Cloud Run**: each service's template and every revision that serves traffic
  (by percentage or by a traffic tag) or is the latest ready one, and each job's template,
  in the listed projects and regions (all regions: one global listing). GKE is the
  `kubernetes` source: a GKE cluster is a kubeconfig context (`gcloud container clusters
  get-credentials`) or, for regwarden running in the cluster, its service account.

Fail closed: a source that cannot be read, or a reference that does not parse, is an
error, never a silently missing protection. Tag references are resolved to the digest the
tag names now (`Registry.resolve`), and the tag itself is protected too.

Each source is an `INVENTORIES` reader keyed by its section's name under `inventory`
(`files`, `kubernetes`, `aws`, `cloudrun`; `aks` and `containerapps` in
`_inventory_azure`); another registers itself there and `gather_in_use` reads it.

The parsers (`parse_ref_lines`, `images_from_pod`, `images_from_workload`,
`images_from_ecs_task`, `images_from_run_containers`, `serving_revisions`) are pure; the
readers do the I/O. The `kubernetes` client (extra `k8s`), boto3 (extra `aws`) and
google-cloud-run (extra `gcp`) are imported only when their source is configured.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import InvalidReference, NotFound, NotImplementedYet, RegistryError, UsageError
from ...plugins import PluginRegistry
from ...reference import ImageRef
from ..planning import Protections, protections_from_refs

if TYPE_CHECKING:
    from ...policy import (
        AwsInventory,
        CloudRunInventory,
        Inventory,
        KubernetesInventory,
        Location,
    )
    from ...providers import Registry

__all__ = [
    "INVENTORIES",
    "KUBERNETES_KINDS",
    "InUse",
    "InventoryContext",
    "InventoryReader",
    "gather_in_use",
    "images_from_ecs_task",
    "images_from_pod",
    "images_from_run_containers",
    "images_from_workload",
    "in_use_protections",
    "parse_ref_lines",
    "read_location",
    "refs_from_aws",
    "refs_from_cloudrun",
    "refs_from_ecs",
    "refs_from_kube_clients",
    "refs_from_kubernetes",
    "refs_from_lambda",
    "serving_revisions",
]

#: What is listed in each cluster: (API group path, resource), all namespaces.
KUBERNETES_KINDS: tuple[tuple[str, str], ...] = (
    ("api/v1", "pods"),
    ("apis/apps/v1", "deployments"),
    ("apis/apps/v1", "replicasets"),
    ("apis/apps/v1", "statefulsets"),
    ("apis/apps/v1", "daemonsets"),
    ("apis/batch/v1", "jobs"),
    ("apis/batch/v1", "cronjobs"),
)
_PAGE = 500
_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")
_STATUS_LISTS = ("initContainerStatuses", "containerStatuses", "ephemeralContainerStatuses")
_IMAGE_ID_PREFIXES = ("docker-pullable://", "docker://", "containerd://", "cri-o://")


@dataclass(frozen=True, slots=True)
class InUse:
    """Image references in use, with where each count came from."""

    refs: tuple[ImageRef, ...] = ()
    sources: Mapping[str, int] = field(default_factory=dict)
    """Source (`file://in-use.txt`, `kubernetes:prod`, `ecs:eu-west-1`, …) → references."""

    def __bool__(self) -> bool:
        return bool(self.refs)

    def merge(self, other: InUse) -> InUse:
        return InUse(refs=self.refs + other.refs, sources={**self.sources, **other.sources})


def _parse(text: str, where: str) -> ImageRef:
    try:
        return ImageRef.parse(text)
    except InvalidReference as exc:
        raise UsageError(
            f"{where}: {exc.reason}: got {text!r}, expected an image reference such as "
            "'registry.example.com/team/api:1.2' or '…/team/api@sha256:…'"
        ) from None


# -- plain listings --------------------------------------------------------------------------


def parse_ref_lines(text: str, *, source: str) -> list[ImageRef]:
    """One reference per line; blank lines and `#` comments (whole-line or trailing) are
    skipped. A line that does not parse raises UsageError naming `source:line`."""
    out: list[ImageRef] = []
    for number, line in enumerate(text.splitlines(), start=1):
        item = line.split("#", 1)[0].strip()
        if item:
            out.append(_parse(item, f"{source}:{number}"))
    return out


def read_location(
    location: Location,
    *,
    base_dir: Path | None,
    s3_client: Callable[[], Any] | None = None,
) -> str:
    """The text of an inventory file or object (`file://`, `s3://`, `https://`)."""
    from ...policy import LocationScheme, resolve_file

    scheme = location.scheme
    if scheme is LocationScheme.FILE:
        if base_dir is None and not Path(location.target).is_absolute():
            raise UsageError(
                f"inventory file {location.raw!r}: relative, but the policy was not loaded "
                "from a file; expected an absolute file:// path"
            )
        path = resolve_file(location, base_dir or Path("/"))
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise UsageError(
                f"inventory file {location.raw!r} ({path}): {exc.strerror or exc}"
            ) from None
    if scheme is LocationScheme.S3:
        bucket, _, key = location.target.partition("/")
        if not bucket or not key:
            raise UsageError(f"inventory object {location.raw!r}: expected s3://BUCKET/KEY")
        client = s3_client() if s3_client is not None else _boto3_client("s3", None)
        try:
            body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except Exception as exc:  # botocore's errors: the object must be readable
            raise RegistryError(f"inventory object {location.raw!r}: {exc}") from exc
        return bytes(body).decode("utf-8")
    if scheme in (LocationScheme.HTTPS, LocationScheme.HTTP):
        import httpx

        try:
            response = httpx.get(location.raw, timeout=30.0, follow_redirects=True)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            raise RegistryError(f"inventory URL {location.raw!r}: {exc}") from exc
        return response.text
    raise NotImplementedYet(
        f"inventory location {location.raw!r}: {scheme}:// is not readable here; "
        "valid: file://, s3://, https://"
    )


# -- Kubernetes --------------------------------------------------------------------------------


def _image_id_ref(image_id: str, spec_image: ImageRef | None, where: str) -> list[ImageRef]:
    """`status.containerStatuses[].imageID` → references by digest.

    Runtimes write `docker-pullable://repo@sha256:…` (dockershim), `repo@sha256:…`
    (containerd, CRI-O) or a bare image id `sha256:…` (not a registry digest: skipped).
    The digest protects both the repository it names and the repository of the spec
    image (a runtime may record another name for the same content).
    """
    text = image_id
    for prefix in _IMAGE_ID_PREFIXES:
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    if "@" not in text:
        return []
    ref = _parse(text, where)
    out = [ref]
    if spec_image is not None and ref.digest is not None:
        out.append(spec_image.with_tag(None).with_digest(ref.digest))
    return out


def _pod_spec_images(spec: Mapping[str, Any], where: str) -> Iterator[tuple[str, ImageRef]]:
    for key in _CONTAINER_LISTS:
        for container in spec.get(key) or ():
            image = container.get("image") if isinstance(container, Mapping) else None
            if isinstance(image, str) and image:
                name = str(container.get("name") or "?")
                yield name, _parse(image, f"{where} {key}[{name}]")


def images_from_pod(pod: Mapping[str, Any]) -> list[ImageRef]:
    """A Pod (Kubernetes API JSON) → every image it runs: spec images (init, regular,
    ephemeral containers) and the digests its container statuses report."""
    meta = pod.get("metadata") or {}
    where = f"pod {meta.get('namespace', '?')}/{meta.get('name', '?')}"
    spec = pod.get("spec") or {}
    out: list[ImageRef] = []
    by_name: dict[str, ImageRef] = {}
    for name, ref in _pod_spec_images(spec, where):
        out.append(ref)
        by_name[name] = ref
    status = pod.get("status") or {}
    for key in _STATUS_LISTS:
        for st in status.get(key) or ():
            if not isinstance(st, Mapping):
                continue
            image_id = st.get("imageID")
            if isinstance(image_id, str) and image_id:
                spec_ref = by_name.get(str(st.get("name")))
                out += _image_id_ref(image_id, spec_ref, f"{where} {key}[{st.get('name')}]")
    return list(dict.fromkeys(out))


def images_from_workload(obj: Mapping[str, Any], kind: str | None = None) -> list[ImageRef]:
    """A Deployment, ReplicaSet, StatefulSet, DaemonSet, Job or CronJob → the images of
    its pod template (a CronJob's is under `spec.jobTemplate`)."""
    kind = kind or str(obj.get("kind") or "")
    meta = obj.get("metadata") or {}
    where = f"{kind.lower() or 'workload'} {meta.get('namespace', '?')}/{meta.get('name', '?')}"
    spec = obj.get("spec") or {}
    if kind == "CronJob" or "jobTemplate" in spec:
        spec = (spec.get("jobTemplate") or {}).get("spec") or {}
    template = (spec.get("template") or {}).get("spec") or {}
    return [ref for _, ref in _pod_spec_images(template, where)]


_KIND_OF = {
    "deployments": "Deployment",
    "replicasets": "ReplicaSet",
    "statefulsets": "StatefulSet",
    "daemonsets": "DaemonSet",
    "jobs": "Job",
    "cronjobs": "CronJob",
}


def _kube_clients(
    contexts: Sequence[str], kubeconfig: str | None, in_cluster: bool | None
) -> list[tuple[str, Any]]:
    try:
        from kubernetes import client as k8s_client  # type: ignore[import-untyped]
        from kubernetes import config as k8s_config
    except ImportError:
        raise NotImplementedYet(
            "inventory.kubernetes needs the kubernetes client from the 'k8s' extra",
            hint="pip install 'regwarden[k8s]'",
        ) from None
    if in_cluster is None:
        in_cluster = not contexts and bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
    try:
        if in_cluster:
            configuration = k8s_client.Configuration()
            k8s_config.load_incluster_config(client_configuration=configuration)
            return [("in-cluster", k8s_client.ApiClient(configuration))]
        if not contexts:
            return [("current", k8s_config.new_client_from_config(config_file=kubeconfig))]
        return [
            (ctx, k8s_config.new_client_from_config(config_file=kubeconfig, context=ctx))
            for ctx in contexts
        ]
    except k8s_config.ConfigException as exc:
        raise UsageError(
            f"inventory.kubernetes: cannot load the Kubernetes configuration: {exc}",
            hint="set KUBECONFIG, or list contexts that exist in it",
        ) from None


def _kube_list(api: Any, group: str, resource: str) -> Iterator[Mapping[str, Any]]:
    """Every object of one resource in all namespaces, following `continue` tokens."""
    token: str | None = None
    seen: set[str] = set()
    while True:
        query: list[tuple[str, Any]] = [("limit", _PAGE)]
        if token:
            query.append(("continue", token))
        response = api.call_api(
            f"/{group}/{resource}",
            "GET",
            query_params=query,
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
            _preload_content=False,
            _return_http_data_only=True,
        )
        doc = json.loads(response.data)
        yield from doc.get("items") or ()
        token = (doc.get("metadata") or {}).get("continue") or None
        if not token:
            return
        if token in seen:
            raise RegistryError(f"kubernetes list {resource}: the continue token repeats")
        seen.add(token)


def refs_from_kubernetes(
    contexts: Sequence[str] = (),
    *,
    kubeconfig: str | None = None,
    in_cluster: bool | None = None,
) -> InUse:
    """Images in use in each context's cluster (or in-cluster, or the current context).

    Raises RegistryError when a cluster cannot be read: retention must not run on a
    partial inventory.
    """
    return refs_from_kube_clients(_kube_clients(contexts, kubeconfig, in_cluster))


def refs_from_kube_clients(
    clients: Iterable[tuple[str, Any]], *, source: str = "kubernetes", noun: str = "context"
) -> InUse:
    """Images in use in each cluster of `clients`, (name, a `kubernetes.client.ApiClient`)
    pairs (each closed once read); counted under `SOURCE:NAME`. Raises RegistryError
    naming `inventory.SOURCE NOUN 'NAME'` when a cluster cannot be read."""
    out: list[ImageRef] = []
    sources: dict[str, int] = {}
    for name, api in clients:
        found: list[ImageRef] = []
        try:
            for group, resource in KUBERNETES_KINDS:
                for obj in _kube_list(api, group, resource):
                    if resource == "pods":
                        found += images_from_pod(obj)
                    else:
                        found += images_from_workload(obj, _KIND_OF[resource])
        except (RegistryError, UsageError):
            raise
        except Exception as exc:  # the client's ApiException, urllib3's connection errors
            status = getattr(exc, "status", None)
            reason = getattr(exc, "reason", None) or exc
            raise RegistryError(
                f"inventory.{source} {noun} {name!r}: cannot list workloads: "
                f"{f'HTTP {status} ' if status else ''}{reason}",
                status=status if isinstance(status, int) else None,
                hint="retention needs read access to pods and workloads in every namespace "
                "(see infra/k8s/rbac.yaml)",
            ) from exc
        finally:
            close = getattr(api, "close", None)
            if callable(close):
                close()
        sources[f"{source}:{name}"] = len(found)
        out += found
    return InUse(refs=tuple(out), sources=sources)


# -- AWS: ECS and Lambda -------------------------------------------------------------------------


def images_from_ecs_task(task: Mapping[str, Any]) -> list[ImageRef]:
    """A DescribeTasks task → its containers' images, pinned to `imageDigest` where ECS
    resolved one (it does at launch for ECR images)."""
    out: list[ImageRef] = []
    where = f"ecs task {task.get('taskArn', '?')}"
    for container in task.get("containers") or ():
        image = container.get("image")
        if not isinstance(image, str) or not image:
            continue
        ref = _parse(image, f"{where} container {container.get('name', '?')}")
        out.append(ref)
        digest = container.get("imageDigest")
        if isinstance(digest, str) and digest.startswith("sha"):
            out.append(ref.with_tag(None).with_digest(digest))
    return out


def _chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def refs_from_ecs(ecs: Any, *, clusters: Sequence[str] = ()) -> list[ImageRef]:
    """Running tasks (describe_tasks, 100 per call) and every ECS service's task
    definitions (the primary and any deployment still rolling)."""
    out: list[ImageRef] = []
    names = list(clusters)
    if not names:
        for page in ecs.get_paginator("list_clusters").paginate():
            names += page.get("clusterArns") or []
    definitions: set[str] = set()
    for cluster in names:
        arns: list[str] = []
        for page in ecs.get_paginator("list_tasks").paginate(cluster=cluster):
            arns += page.get("taskArns") or []
        for batch in _chunks(arns, 100):
            for task in ecs.describe_tasks(cluster=cluster, tasks=list(batch)).get("tasks") or ():
                out += images_from_ecs_task(task)
                if task.get("taskDefinitionArn"):
                    definitions.add(str(task["taskDefinitionArn"]))
        services: list[str] = []
        for page in ecs.get_paginator("list_services").paginate(cluster=cluster):
            services += page.get("serviceArns") or []
        for batch in _chunks(services, 10):
            described = ecs.describe_services(cluster=cluster, services=list(batch))
            for service in described.get("services") or ():
                if service.get("taskDefinition"):
                    definitions.add(str(service["taskDefinition"]))
                for deployment in service.get("deployments") or ():
                    if deployment.get("taskDefinition"):
                        definitions.add(str(deployment["taskDefinition"]))
    for arn in sorted(definitions):
        definition = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
        for container in definition.get("containerDefinitions") or ():
            image = container.get("image")
            if isinstance(image, str) and image:
                out.append(_parse(image, f"ecs task definition {arn}"))
    return out


def refs_from_lambda(lam: Any) -> list[ImageRef]:
    """Lambda functions with `PackageType: Image`: the image URI and the digest Lambda
    resolved it to at deploy time (what it runs)."""
    out: list[ImageRef] = []
    for page in lam.get_paginator("list_functions").paginate():
        for fn in page.get("Functions") or ():
            if fn.get("PackageType") != "Image":
                continue
            name = str(fn.get("FunctionName"))
            code = lam.get_function(FunctionName=name).get("Code") or {}
            for key in ("ImageUri", "ResolvedImageUri"):
                uri = code.get(key)
                if isinstance(uri, str) and uri:
                    out.append(_parse(uri, f"lambda function {name} {key}"))
    return out


def _boto3_client(service: str, region: str | None) -> Any:
    try:
        import boto3  # noqa: F401  # only to say which extra is missing
    except ImportError:
        raise NotImplementedYet(
            f"inventory needs boto3 (the 'aws' extra) to read {service}",
            hint="pip install 'regwarden[aws]'",
        ) from None
    from ... import botocore_config

    return botocore_config.client(service, region=region)


def refs_from_aws(
    aws: AwsInventory, *, client: Callable[[str, str | None], Any] | None = None
) -> InUse:
    """ECS and Lambda in each configured region (default region when none is listed)."""
    make = client or _boto3_client
    out: list[ImageRef] = []
    sources: dict[str, int] = {}
    for region in aws.regions or (None,):
        label = region or "default"
        try:
            if aws.ecs:
                found = refs_from_ecs(make("ecs", region), clusters=aws.clusters)
                sources[f"ecs:{label}"] = len(found)
                out += found
            if aws.lambda_:
                found = refs_from_lambda(make("lambda", region))
                sources[f"lambda:{label}"] = len(found)
                out += found
        except (RegistryError, UsageError):
            raise
        except Exception as exc:  # botocore ClientError / BotoCoreError
            raise RegistryError(
                f"inventory.aws region {label}: cannot list running images: {exc}",
                hint="retention needs ecs:List*/Describe* and lambda:ListFunctions/GetFunction",
            ) from exc
    return InUse(refs=tuple(out), sources=sources)


# -- Google Cloud Run ----------------------------------------------------------------------------

_ALL_REGIONS = "-"
"""Cloud Run's location wildcard: one listing across every region (ListServices answers the
regions it could not reach in `unreachable`)."""
_RUN_PAGE = 500


def images_from_run_containers(containers: Iterable[Any], where: str) -> list[ImageRef]:
    """Cloud Run containers (`google.cloud.run_v2.Container`) → their images. An image with
    neither tag nor digest runs `:latest`, as Cloud Run pulls it."""
    out: list[ImageRef] = []
    for container in containers:
        image = getattr(container, "image", "")
        if not isinstance(image, str) or not image:
            continue
        ref = _parse(image, f"{where} container {getattr(container, 'name', '') or '?'}")
        out.append(ref if ref.tag or ref.digest else ref.with_tag("latest"))
    return out


def serving_revisions(service: Any) -> list[str]:
    """A Cloud Run service (`run_v2.Service`) → the full names of its revisions that may
    receive requests: each traffic status with a share of the traffic or a traffic tag
    (its own URL), and the latest ready revision (what a `LATEST` target follows, and the
    rollback a deploy that fails falls back to). Statuses name revisions short
    (`api-00002-xyz`); they live under the service's name."""
    name = str(getattr(service, "name", ""))
    latest = str(getattr(service, "latest_ready_revision", "") or "")
    wanted: list[str] = []
    for status in getattr(service, "traffic_statuses", None) or ():
        if not (getattr(status, "percent", 0) or getattr(status, "tag", "")):
            continue
        revision = str(getattr(status, "revision", "") or "") or latest
        if revision:
            wanted.append(revision)
    if latest:
        wanted.append(latest)
    return list(dict.fromkeys(r if "/" in r else f"{name}/revisions/{r}" for r in wanted))


def _run_clients(env: Mapping[str, str]) -> tuple[Any, Any, Any]:
    try:
        from google.cloud import run_v2
    except ImportError:
        raise NotImplementedYet(
            "inventory.cloudrun needs google-cloud-run from the 'gcp' extra",
            hint="pip install 'regwarden[gcp]'",
        ) from None
    from ... import gcp_clients

    kwargs = gcp_clients.client_kwargs("run", env)
    return (
        run_v2.ServicesClient(**kwargs),
        run_v2.RevisionsClient(**kwargs),
        run_v2.JobsClient(**kwargs),
    )


def _run_services(services: Any, revisions: Any, parent: str) -> list[ImageRef]:
    out: list[ImageRef] = []
    pager = services.list_services(request={"parent": parent, "page_size": _RUN_PAGE})
    for page in pager.pages:
        unreachable = list(getattr(page, "unreachable", None) or ())
        if unreachable:
            # a global listing that missed regions is a partial inventory
            raise RegistryError(
                f"inventory.cloudrun {parent}: regions not reached: {', '.join(unreachable)}",
                hint="retry, or list the regions under inventory.cloudrun.regions",
            )
        for service in page.services:
            out += images_from_run_containers(
                service.template.containers, f"cloud run service {service.name}"
            )
            for name in serving_revisions(service):
                revision = revisions.get_revision(name=name)
                out += images_from_run_containers(revision.containers, f"revision {name}")
    return list(dict.fromkeys(out))


def _run_jobs(jobs: Any, parent: str) -> list[ImageRef]:
    out: list[ImageRef] = []
    for job in jobs.list_jobs(request={"parent": parent, "page_size": _RUN_PAGE}):
        out += images_from_run_containers(
            job.template.template.containers, f"cloud run job {job.name}"
        )
    return list(dict.fromkeys(out))


def refs_from_cloudrun(
    section: CloudRunInventory,
    *,
    env: Mapping[str, str] | None = None,
    clients: Callable[[Mapping[str, str]], tuple[Any, Any, Any]] | None = None,
) -> InUse:
    """Images Cloud Run services and jobs run in each configured project and region.

    Raises RegistryError when any listing cannot be read (or a global one missed a
    region): retention must not run on a partial inventory."""
    from ... import gcp_clients

    env = os.environ if env is None else env
    projects = section.projects
    if not projects:
        own = gcp_clients.project_of(env)
        if own is None:
            raise UsageError(
                "inventory.cloudrun: no projects listed and GOOGLE_CLOUD_PROJECT is not set",
                hint="list them: inventory: {cloudrun: {projects: [my-project]}}",
            )
        projects = (own,)
    try:
        services, revisions, jobs = (clients or _run_clients)(env)
    except (NotImplementedYet, UsageError):
        raise
    except Exception as exc:  # google.auth's DefaultCredentialsError
        raise RegistryError(
            f"inventory.cloudrun: cannot make the Cloud Run clients: {exc}"
        ) from exc
    out: list[ImageRef] = []
    sources: dict[str, int] = {}
    try:
        for project in projects:
            for region in section.regions or (_ALL_REGIONS,):
                parent = f"projects/{project}/locations/{region}"
                if section.services:
                    found = _run_services(services, revisions, parent)
                    sources[f"cloudrun:{project}/{region}"] = len(found)
                    out += found
                if section.jobs:
                    found = _run_jobs(jobs, parent)
                    sources[f"cloudrun-jobs:{project}/{region}"] = len(found)
                    out += found
    except (RegistryError, UsageError):
        raise
    except Exception as exc:  # google.api_core's GoogleAPICallError, google.auth's errors
        code = getattr(exc, "code", None)
        raise RegistryError(
            f"inventory.cloudrun: cannot list what Cloud Run runs: {exc}",
            status=code if isinstance(code, int) else None,
            hint="retention needs run.services.list, run.revisions.get and run.jobs.list "
            "(roles/run.viewer) in every listed project",
        ) from exc
    finally:
        for client in (services, revisions, jobs):
            close = getattr(getattr(client, "transport", None), "close", None)
            if callable(close):
                close()
    return InUse(refs=tuple(out), sources=sources)


# -- everything the policy names --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InventoryContext:
    """What an inventory reader may use besides its policy section (tests and adapters pass
    their own clients; None: the default credentials)."""

    base_dir: Path | None
    """The policy file's directory: where `file://` paths start."""
    kubeconfig: str | None = None
    aws_client: Callable[[str, str | None], Any] | None = None
    s3_client: Callable[[], Any] | None = None
    env: Mapping[str, str] | None = None
    """Where Google and Azure clients find their endpoints and project (None: the
    process's)."""
    azure_credential: Any = None
    """An azure-core TokenCredential for the Azure sources (None: DefaultAzureCredential)."""


InventoryReader = Callable[[Any, InventoryContext], InUse]
"""(the policy's `inventory.<name>` section, context) → what it says is in use; raises
when it cannot be read."""

INVENTORIES = PluginRegistry[InventoryReader]("inventory source")
"""Keyed by the name of the section under the policy's `inventory`."""


@INVENTORIES.register("files")
def _files(locations: Sequence[Location], context: InventoryContext) -> InUse:
    result = InUse()
    for location in locations:
        text = read_location(location, base_dir=context.base_dir, s3_client=context.s3_client)
        refs = parse_ref_lines(text, source=location.raw)
        result = result.merge(InUse(refs=tuple(refs), sources={location.raw: len(refs)}))
    return result


@INVENTORIES.register("kubernetes")
def _kubernetes(section: KubernetesInventory, context: InventoryContext) -> InUse:
    return refs_from_kubernetes(section.contexts, kubeconfig=context.kubeconfig)


@INVENTORIES.register("aws")
def _aws(section: AwsInventory, context: InventoryContext) -> InUse:
    return refs_from_aws(section, client=context.aws_client)


@INVENTORIES.register("cloudrun")
def _cloudrun(section: CloudRunInventory, context: InventoryContext) -> InUse:
    return refs_from_cloudrun(section, env=context.env)


def _configured(inventory: Inventory) -> list[str]:
    """The sections the policy sets, plain files first and then the others in the policy
    model's order: the order `plan` lists where in-use references came from."""
    names = [n for n in type(inventory).model_fields if getattr(inventory, n)]
    return sorted(names, key=lambda n: n != "files")


def gather_in_use(
    inventory: Inventory,
    *,
    base_dir: Path | None,
    kubeconfig: str | None = None,
    aws_client: Callable[[str, str | None], Any] | None = None,
    s3_client: Callable[[], Any] | None = None,
    env: Mapping[str, str] | None = None,
    azure_credential: Any = None,
) -> InUse:
    """Every in-use reference the policy's `inventory` names, each section read by its
    `INVENTORIES` reader. Raises on any source that cannot be read."""
    context = InventoryContext(
        base_dir=base_dir,
        kubeconfig=kubeconfig,
        aws_client=aws_client,
        s3_client=s3_client,
        env=env,
        azure_credential=azure_credential,
    )
    result = InUse()
    for name in _configured(inventory):
        result = result.merge(INVENTORIES.get(name)(getattr(inventory, name), context))
    return result


def in_use_protections(
    refs: Iterable[ImageRef],
    registry: Registry,
    *,
    repositories: Collection[str],
    registry_name: str | None = None,
) -> dict[str, Protections]:
    """Protections for the planned `repositories` of `registry` from in-use references.

    References to other registries are ignored. A tag reference protects the tag and the
    digest it resolves to now (one `resolve` per distinct tag); a tag that no longer
    exists protects nothing more. A registry error while resolving propagates: planning
    without knowing what a running tag points at would guess.
    """
    name = registry_name or registry.host
    wanted = set(repositories)
    mine = [r for r in refs if r.registry == name and r.repository in wanted]
    resolved: list[ImageRef] = list(mine)
    tags = sorted({(r.repository, r.tag) for r in mine if r.digest is None and r.tag})
    for repository, tag in tags:
        assert tag is not None
        try:
            digest = registry.resolve(repository, tag)
        except NotFound:
            digest = None
        if digest is not None:
            resolved.append(ImageRef(registry=name, repository=repository, digest=digest))
    return protections_from_refs(resolved, registry=name)
