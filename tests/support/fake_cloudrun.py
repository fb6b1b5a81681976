"""A loopback stand-in for the Cloud Run Admin API v2 (`run.googleapis.com`): services,
their revisions and jobs, listed with paging, for the `cloudrun` retention inventory.

Shapes and URLs come from the installed client library, google-cloud-run (`run_v2`):

- URL templates: `services/services/transports/rest_base.py` (ListServices `GET
  /v2/{parent=projects/*/locations/*}/services`, GetService), `services/revisions/
  transports/rest_base.py` (ListRevisions `GET /v2/{parent=projects/*/locations/*/
  services/*}/revisions`, GetRevision), `services/jobs/transports/rest_base.py` (ListJobs);
- bodies: `types/service.py` (`Service`: name, uid, generation — int64, so a JSON string —,
  createTime, template, traffic, trafficStatuses, latestReadyRevision,
  latestCreatedRevision, uri, reconciling, etag; `ListServicesResponse`: services,
  nextPageToken, `unreachable` — the regions a global `locations/-` listing missed),
  `types/revision_template.py` (`RevisionTemplate`: revision, containers,
  serviceAccount, maxInstanceRequestConcurrency), `types/traffic_target.py`
  (`TrafficTarget`/`TrafficTargetStatus`: type as the enum's NAME, revision — a short
  name —, percent, tag, uri), `types/revision.py` (`Revision`: name, service, containers,
  createTime …; `ListRevisionsResponse`), `types/job.py` + `types/execution_template.py` +
  `types/task_template.py` (`Job.template.template.containers`), `types/k8s_min.py`
  (`Container`: name, image, ports[].containerPort).

What the real service does that this one imitates: each deploy makes a revision named
`SERVICE-NNNNN-xxx` and sends all traffic to the latest ready revision unless the traffic
is pinned (`route`); `latestReadyRevision` is the revision's full resource name, the
traffic statuses name revisions short. A page holds at most `page_limit` items whatever
`pageSize` asks (so a client must follow `nextPageToken`), and a token is valid only for
the listing that issued it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from support.google_fake import GoogleFake, Reply, Request, google_error

__all__ = ["FakeCloudRun", "TrafficSplit"]

_LATEST = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
_REVISION = "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION"
_LOC = r"/v2/projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"


@dataclass(frozen=True, slots=True)
class TrafficSplit:
    """One traffic target: a revision (short name; None: the latest ready one), its share
    and an optional tag (the revision is then reachable at its own URL)."""

    revision: str | None
    percent: int = 0
    tag: str = ""


def _stamp(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _container(name: str, image: str) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "ports": [{"name": "http1", "containerPort": 8080}],
        "resources": {"limits": {"cpu": "1000m", "memory": "512Mi"}, "cpuIdle": True},
    }


class FakeCloudRun(GoogleFake):
    """Cloud Run services, revisions and jobs by full resource name."""

    def __init__(self, *, page_limit: int = 2) -> None:
        super().__init__()
        self.page_limit = page_limit
        self.services: dict[str, dict[str, Any]] = {}
        self.revisions: dict[str, dict[str, Any]] = {}
        self.jobs: dict[str, dict[str, Any]] = {}
        self.unreachable: list[str] = []
        """Regions a global (`locations/-`) services listing reports it could not reach."""
        self.route("GET", _LOC + r"/services", self._list_services)
        self.route("GET", _LOC + r"/services/(?P<service>[^/]+)", self._get_service)
        self.route("GET", _LOC + r"/services/(?P<service>[^/]+)/revisions", self._list_revisions)
        self.route(
            "GET",
            _LOC + r"/services/(?P<service>[^/]+)/revisions/(?P<revision>[^/]+)",
            self._get_revision,
        )
        self.route("GET", _LOC + r"/jobs", self._list_jobs)

    # -- what is deployed ------------------------------------------------------------------

    def deploy(
        self,
        project: str,
        location: str,
        service: str,
        image: str,
        *,
        revision_image: str | None = None,
        sidecar: str | None = None,
        now: datetime | None = None,
    ) -> str:
        """Deploy `image` to `service` (made on first deploy): a new revision, which becomes
        the latest ready one. `revision_image`: what the revision records (default
        `image`). Returns the revision's short name."""
        when = now or datetime.now(UTC)
        with self.lock:
            name = f"projects/{project}/locations/{location}/services/{service}"
            current = self.services.get(name)
            generation = int(current["generation"]) + 1 if current else 1
            suffix = hashlib.sha256(f"{name}/{generation}".encode()).hexdigest()[:3]
            short = f"{service}-{generation:05d}-{suffix}"
            containers = [_container(service, image)]
            if sidecar:
                containers.append(_container("sidecar", sidecar))
            revision_containers = [dict(c) for c in containers]
            revision_containers[0]["image"] = revision_image or image
            self.revisions[f"{name}/revisions/{short}"] = {
                "name": f"{name}/revisions/{short}",
                "uid": hashlib.sha256(short.encode()).hexdigest()[:32],
                "generation": "1",
                "createTime": _stamp(when),
                "updateTime": _stamp(when),
                "launchStage": "GA",
                "service": service,
                "scaling": {"maxInstanceCount": 100},
                "maxInstanceRequestConcurrency": 80,
                "timeout": "300s",
                "serviceAccount": f"{project}-compute@developer.gserviceaccount.com",
                "containers": revision_containers,
                "executionEnvironment": "EXECUTION_ENVIRONMENT_GEN2",
                "conditions": [
                    {
                        "type": "Ready",
                        "state": "CONDITION_SUCCEEDED",
                        "lastTransitionTime": _stamp(when),
                    }
                ],
                "observedGeneration": "1",
                "logUri": f"https://console.cloud.google.com/logs/viewer?project={project}",
                "etag": f'"{suffix}"',
            }
            traffic = current["traffic"] if current else [{"type": _LATEST, "percent": 100}]
            self.services[name] = {
                "name": name,
                "uid": hashlib.sha256(name.encode()).hexdigest()[:32],
                "generation": str(generation),
                "createTime": current["createTime"] if current else _stamp(when),
                "updateTime": _stamp(when),
                "creator": "deployer@example.com",
                "lastModifier": "deployer@example.com",
                "ingress": "INGRESS_TRAFFIC_ALL",
                "launchStage": "GA",
                "template": {
                    "containers": containers,
                    "serviceAccount": f"{project}-compute@developer.gserviceaccount.com",
                    "maxInstanceRequestConcurrency": 80,
                    "timeout": "300s",
                },
                "traffic": traffic,
                "observedGeneration": str(generation),
                "terminalCondition": {
                    "type": "Ready",
                    "state": "CONDITION_SUCCEEDED",
                    "lastTransitionTime": _stamp(when),
                },
                "latestReadyRevision": f"{name}/revisions/{short}",
                "latestCreatedRevision": f"{name}/revisions/{short}",
                "uri": f"https://{service}-abc123-uc.a.run.app",
                "urls": [f"https://{service}-abc123-uc.a.run.app"],
                "reconciling": False,
                "etag": f'"{suffix}"',
            }
            self._statuses(name)
        return short

    def route_traffic(
        self, project: str, location: str, service: str, *splits: TrafficSplit
    ) -> None:
        """Pin the service's traffic (`gcloud run services update-traffic`)."""
        name = f"projects/{project}/locations/{location}/services/{service}"
        with self.lock:
            doc = self.services[name]
            doc["traffic"] = [
                {
                    "type": _LATEST if s.revision is None else _REVISION,
                    **({"revision": s.revision} if s.revision else {}),
                    **({"percent": s.percent} if s.percent else {}),
                    **({"tag": s.tag} if s.tag else {}),
                }
                for s in splits
            ]
            self._statuses(name)

    def _statuses(self, name: str) -> None:
        """`trafficStatuses` as reconciled: each target with its revision resolved."""
        doc = self.services[name]
        latest = doc["latestReadyRevision"].rsplit("/", 1)[-1]
        statuses = []
        for target in doc["traffic"]:
            status = dict(target)
            status["revision"] = target.get("revision") or latest
            if target.get("tag"):
                status["uri"] = f"https://{target['tag']}---{doc['uri'][8:]}"
            statuses.append(status)
        doc["trafficStatuses"] = statuses

    def add_job(self, project: str, location: str, job: str, image: str) -> None:
        name = f"projects/{project}/locations/{location}/jobs/{job}"
        with self.lock:
            self.jobs[name] = {
                "name": name,
                "uid": hashlib.sha256(name.encode()).hexdigest()[:32],
                "generation": "1",
                "createTime": _stamp(datetime.now(UTC)),
                "launchStage": "GA",
                "template": {
                    "taskCount": 1,
                    "parallelism": 1,
                    "template": {
                        "containers": [
                            {
                                "name": job,
                                "image": image,
                                "resources": {"limits": {"cpu": "1000m", "memory": "512Mi"}},
                            }
                        ],
                        "maxRetries": 3,
                        "timeout": "600s",
                        "serviceAccount": f"{project}-compute@developer.gserviceaccount.com",
                        "executionEnvironment": "EXECUTION_ENVIRONMENT_GEN2",
                    },
                },
                "observedGeneration": "1",
                "terminalCondition": {"type": "Ready", "state": "CONDITION_SUCCEEDED"},
                "executionCount": 0,
                "reconciling": False,
                "etag": '"1"',
            }

    # -- routes ------------------------------------------------------------------------------

    def _page(self, request: Request, key: str, items: list[dict[str, Any]]) -> Reply:
        """One page of `items` in name order; the token names the listing it belongs to."""
        listing = request.raw_path
        token = request.arg("pageToken") or ""
        start = 0
        if token:
            where, _, offset = token.rpartition("@")
            if where != listing or not offset.isdigit():
                return google_error(400, f"invalid page token {token!r}")
            start = int(offset)
        asked = int(request.arg("pageSize") or 0) or self.page_limit
        size = min(asked, self.page_limit)
        ordered = sorted(items, key=lambda d: d["name"])
        body: dict[str, Any] = {key: ordered[start : start + size]}
        if start + size < len(ordered):
            body["nextPageToken"] = f"{listing}@{start + size}"
        return 200, body

    @staticmethod
    def _in(doc: dict[str, Any], project: str, location: str) -> bool:
        parts = doc["name"].split("/")
        return parts[1] == project and (location == "-" or parts[3] == location)

    def _list_services(self, request: Request) -> Reply:
        project, location = request.params["project"], request.params["location"]
        found = [d for d in self.services.values() if self._in(d, project, location)]
        status, body = self._page(request, "services", found)
        if status == 200 and location == "-" and self.unreachable:
            body["unreachable"] = list(self.unreachable)
        return status, body

    def _get_service(self, request: Request) -> Reply:
        p = request.params
        name = f"projects/{p['project']}/locations/{p['location']}/services/{p['service']}"
        doc = self.services.get(name)
        return (200, doc) if doc else google_error(404, f"Resource '{name}' was not found")

    def _list_revisions(self, request: Request) -> Reply:
        p = request.params
        prefix = f"projects/{p['project']}/locations/{p['location']}/services/"
        found = [
            d
            for n, d in self.revisions.items()
            if n.startswith(prefix) and (p["service"] == "-" or d["service"] == p["service"])
        ]
        return self._page(request, "revisions", found)

    def _get_revision(self, request: Request) -> Reply:
        p = request.params
        name = (
            f"projects/{p['project']}/locations/{p['location']}/services/{p['service']}"
            f"/revisions/{p['revision']}"
        )
        doc = self.revisions.get(name)
        return (200, doc) if doc else google_error(404, f"Resource '{name}' was not found")

    def _list_jobs(self, request: Request) -> Reply:
        project, location = request.params["project"], request.params["location"]
        found = [d for d in self.jobs.values() if self._in(d, project, location)]
        return self._page(request, "jobs", found)
