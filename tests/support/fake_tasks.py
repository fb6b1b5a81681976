"""A loopback stand-in for the Cloud Tasks v2 REST API: create, get, list and delete tasks
of HTTP target queues; `due(now)` hands a test the tasks Cloud Tasks would dispatch by then.

Shapes from Google's API definitions as the installed client states them:
`google/cloud/tasks_v2/services/cloud_tasks/transports/rest_base.py` (URL templates:
`POST /v2/{parent=projects/*/locations/*/queues/*}/tasks` with body `{"task": …,
"responseView": …}`, `GET /v2/{name=…/tasks/*}`, `GET /v2/{parent=…/queues/*}/tasks`,
`DELETE /v2/{name=…/tasks/*}`) and `google/cloud/tasks_v2/types/task.py`, `target.py`
(Task: `name`, `scheduleTime`, `createTime`, `dispatchCount`, `responseCount`, `view`,
`httpRequest` {`url`, `httpMethod`, `headers`, `body` (bytes: base64 in JSON),
`oidcToken` {`serviceAccountEmail`, `audience`}}; ListTasksResponse: `tasks`,
`nextPageToken`). A task name that exists, or ran within the queue's de-duplication window,
is refused with 409 ALREADY_EXISTS, as Cloud Tasks does; names of tasks that ran are kept
for the fake's life (the window is about an hour, longer than any test). Enums are
answered by name, as Google's documentation shows them.
"""

from __future__ import annotations

import base64
import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from support.google_fake import GoogleFake, Reply, Request, google_error

__all__ = ["FakeTasks", "FiredTask"]

_QUEUE = r"projects/[^/]+/locations/[^/]+/queues/[^/:]+"
_METHODS = {0: "HTTP_METHOD_UNSPECIFIED", 1: "POST", 2: "GET", 3: "HEAD", 4: "PUT", 5: "DELETE"}
_METHODS.update({6: "PATCH", 7: "OPTIONS"})


@dataclass(frozen=True, slots=True)
class FiredTask:
    """A task as Cloud Tasks would dispatch it: the HTTP request it makes."""

    name: str
    url: str
    method: str
    headers: dict[str, str]
    body: bytes
    oidc: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


class FakeTasks(GoogleFake):
    """Cloud Tasks queues (created on first use) holding HTTP tasks."""

    def __init__(self, *, now: datetime | None = None) -> None:
        super().__init__()
        self.tasks: dict[str, dict[str, Any]] = {}
        """Task name → the Task as stored (JSON shape)."""
        self.fired: set[str] = set()
        """Names of tasks that were dispatched (still taken: de-duplication)."""
        self._ids = itertools.count(1)
        self._now = now
        self.route("POST", rf"/v2/(?P<queue>{_QUEUE})/tasks", self._create)
        self.route("GET", rf"/v2/(?P<queue>{_QUEUE})/tasks", self._list)
        self.route("GET", rf"/v2/(?P<name>{_QUEUE}/tasks/[^/:]+)", self._get)
        self.route("DELETE", rf"/v2/(?P<name>{_QUEUE}/tasks/[^/:]+)", self._delete)

    # -- API ---------------------------------------------------------------------------------

    def _create(self, request: Request) -> Reply:
        queue = request.params["queue"]
        task = dict((request.body or {}).get("task") or {})
        name = task.get("name") or f"{queue}/tasks/{next(self._ids):020d}"
        if not name.startswith(f"{queue}/tasks/"):
            return google_error(400, f"task name {name} is not in queue {queue}")
        if name in self.tasks or name in self.fired:
            return google_error(409, "Requested entity already exists")
        http = dict(task.get("httpRequest") or {})
        if not http.get("url"):
            return google_error(400, "task has no httpRequest.url")
        method = http.get("httpMethod", "POST")
        http["httpMethod"] = _METHODS.get(method, method) if isinstance(method, int) else method
        created = self._now or datetime.now(UTC)
        stored = {
            "name": name,
            "httpRequest": http,
            "scheduleTime": task.get("scheduleTime") or _rfc3339(created),
            "createTime": _rfc3339(created.replace(microsecond=0)),
            "dispatchCount": 0,
            "responseCount": 0,
            "view": "BASIC",
        }
        self.tasks[name] = stored
        return 200, self._view(stored)

    def _get(self, request: Request) -> Reply:
        task = self.tasks.get(request.params["name"])
        if task is None:
            return google_error(404, "Requested entity was not found.")
        return 200, self._view(task)

    def _list(self, request: Request) -> Reply:
        prefix = request.params["queue"] + "/tasks/"
        found = [self._view(t) for n, t in sorted(self.tasks.items()) if n.startswith(prefix)]
        return 200, {"tasks": found} if found else {}

    def _delete(self, request: Request) -> Reply:
        if self.tasks.pop(request.params["name"], None) is None:
            return google_error(404, "Requested entity was not found.")
        return 200, {}

    @staticmethod
    def _view(task: dict[str, Any]) -> dict[str, Any]:
        """The BASIC view (what Cloud Tasks answers by default): no request body."""
        http = {k: v for k, v in task["httpRequest"].items() if k != "body"}
        return {**task, "httpRequest": http}

    # -- for tests -----------------------------------------------------------------------------

    def due(self, now: datetime) -> list[FiredTask]:
        """The tasks whose schedule time has come by `now`, taken off the queue (as Cloud
        Tasks dispatches them; their names stay taken), earliest first."""
        with self.lock:
            ready = sorted(
                (t for t in self.tasks.values() if _parse_time(t["scheduleTime"]) <= now),
                key=lambda t: _parse_time(t["scheduleTime"]),
            )
            for task in ready:
                del self.tasks[task["name"]]
                self.fired.add(task["name"])
        return [self._fired(t) for t in ready]

    def pending(self) -> list[dict[str, Any]]:
        """Every task still queued (full view), earliest first."""
        with self.lock:
            return sorted(self.tasks.values(), key=lambda t: _parse_time(t["scheduleTime"]))

    @staticmethod
    def _fired(task: dict[str, Any]) -> FiredTask:
        http = task["httpRequest"]
        return FiredTask(
            name=task["name"],
            url=http["url"],
            method=http["httpMethod"],
            headers=dict(http.get("headers") or {}),
            body=base64.b64decode(http.get("body") or ""),
            oidc=dict(http.get("oidcToken") or {}),
        )
