"""A loopback stand-in for Azure Resource Graph's query API, holding Defender for
Containers' sub-assessments (what the `defender` scan source and `changed_since` read).

Route, from azure-mgmt-resourcegraph 8.0.1 (`operations/_resource_graph_client_operations.py`,
`build_resources_request`): `POST /providers/Microsoft.ResourceGraph/resources?api-version=
2021-03-01`, body `QueryRequest` (`models/_models_py3.py`: `subscriptions`, `query`,
`options: {"$top", "$skipToken", "resultFormat"}`), answer `QueryResponse` (`totalRecords`,
`count`, `resultTruncated` "true"/"false", `$skipToken` only while more pages remain,
`data`: the rows as objects for `resultFormat: objectArray`, `facets`). Errors in ARM's
envelope, `{"error": {"code": "BadRequest", "message": …}}` (`models.ErrorResponse`).

The query is evaluated, not pattern-matched as a whole: the fake understands the few KQL
operators regwarden sends, one a line after `securityresources` —
`where PATH (==|=~|>) "literal"|datetime(…)` (PATH dotted, optionally in `todatetime(…)`),
`extend NAME = extract(@"(?i)providers/Microsoft.Security/assessments/([^/]*)", 1, id)`,
`extend NAME = tostring(PATH)`, `distinct A, B, …` and `order by A asc, …` — and answers
400 `InvalidQuery` for anything else (an unknown operator, a literal with trailing text or
an escape other than `\\\\` and `\\"`), so a changed or injected query fails loudly instead
of silently matching everything.

Rows are in the recorded shape of MicrosoftDocs/azure-docs `articles/defender-for-cloud/
subassessment-rest-api.md` (the handbook's events reference §3.2): ARM resource fields,
`properties.{id, displayName, description, status, timeGenerated, resourceDetails,
additionalData.{assessedResourceType, vulnerabilityDetails, artifactDetails,
softwareDetails, cvssV30Score}}`.

The `resources` table holds what the `containerapps` inventory reads: Container Apps and
Container Apps jobs (`add_container_app`, `add_job`), rows in Resource Graph's resource
shape (`id`, `name`, `type` lower-cased as Resource Graph gives it, `tenantId`, `kind`,
`location`, `resourceGroup`, `subscriptionId`, `properties`, `tags`, `identity`) around
each resource's `properties` as azure-rest-api-specs `specification/app/resource-manager/
Microsoft.App/stable/2024-03-01/examples/ContainerApps_Get.json` and `Job_Get.json` give
them (`configuration`, `template.{containers, initContainers: [{image, name,
resources}]}`, `latestRevisionName`, …). On that table the fake also understands
`where PATH in~ ("a", "b")` and `project NAME, NAME = PATH, …`.
"""

from __future__ import annotations

import base64
import functools
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

from support.google_fake import GoogleFake, Reply, Request

__all__ = [
    "API_VERSION",
    "ASSESSMENT_KEY",
    "PATH",
    "SUBSCRIPTION",
    "FakeResourceGraph",
    "InvalidQuery",
    "evaluate",
]

API_VERSION = "2021-03-01"
ASSESSMENT_KEY = "c0b7cfc6-3172-465a-b378-53c7ff2cc0d5"
PATH = "/providers/Microsoft.ResourceGraph/resources"
DEFAULT_TOP = 100
MAX_TOP = 1000
SUBSCRIPTION = "00000000-0000-0000-0000-0000000000aa"

_ARM_CODES = {
    400: "BadRequest",
    401: "AuthenticationFailed",
    403: "AuthorizationFailed",
    404: "NotFound",
    429: "RateLimiting",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}
_STRING = r'"((?:[^"\\]|\\.)*)"'
_PATH = r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*"
_WHERE = re.compile(
    rf"where (?:todatetime\((?P<dpath>{_PATH})\)|(?P<path>{_PATH})) (?P<op>==|=~|>) "
    rf"(?:{_STRING}|datetime\((?P<when>[0-9T:.\-]+Z)\))"
)
_KEY_REGEX = r'@"(?i)providers/Microsoft.Security/assessments/([^/]*)"'
_EXTRACT = re.compile(rf"extend (?P<name>\w+) = extract\({re.escape(_KEY_REGEX)}, 1, id\)")
_TOSTRING = re.compile(rf"extend (?P<name>\w+) = tostring\((?P<path>{_PATH})\)")
_DISTINCT = re.compile(r"distinct (?P<names>\w+(?:, \w+)*)")
_ORDER = re.compile(r"order by (?P<keys>\w+ (?:asc|desc)(?:, \w+ (?:asc|desc))*)")
_IN = re.compile(rf"where (?P<path>{_PATH}) in~ \((?P<items>{_STRING}(?:, {_STRING})*)\)")
_PROJECT = re.compile(rf"project (?P<items>(?:\w+(?: = {_PATH})?)(?:, \w+(?: = {_PATH})?)*)")
TABLES = ("securityresources", "resources")


class InvalidQuery(Exception):
    pass


def _timestamp(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _unescape(text: str) -> str:
    out: list[str] = []
    chars = iter(text)
    for c in chars:
        if c != "\\":
            out.append(c)
            continue
        escaped = next(chars)
        if escaped not in '\\"':
            raise InvalidQuery(f"unsupported escape \\{escaped}")
        out.append(escaped)
    return "".join(out)


def _get(row: dict[str, Any], path: str) -> Any:
    value: Any = row
    for step in path.split("."):
        value = value.get(step) if isinstance(value, dict) else None
    return value


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def evaluate(query: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows `query` selects (raises InvalidQuery on anything outside the fake's KQL)."""
    lines = query.split("\n")
    if lines[0] not in TABLES:
        raise InvalidQuery(f"expected a table of {TABLES}, got {lines[0]!r}")
    result = [dict(r) for r in rows]
    for line in lines[1:]:
        if not line.startswith("| "):
            raise InvalidQuery(f"expected '| operator', got {line!r}")
        op = line[2:]
        if m := _WHERE.fullmatch(op):
            result = [r for r in result if _holds(r, m)]
        elif m := _EXTRACT.fullmatch(op):
            for r in result:
                found = re.search(r"(?i)providers/Microsoft.Security/assessments/([^/]*)", r["id"])
                r[m["name"]] = found.group(1) if found else ""
        elif m := _TOSTRING.fullmatch(op):
            for r in result:
                value = _get(r, m["path"])
                r[m["name"]] = "" if value is None else str(value)
        elif m := _DISTINCT.fullmatch(op):
            names = m["names"].split(", ")
            seen: dict[tuple[Any, ...], dict[str, Any]] = {}
            for r in result:
                seen.setdefault(tuple(r.get(n) for n in names), {n: r.get(n) for n in names})
            result = list(seen.values())
        elif m := _IN.fullmatch(op):
            wanted = {_unescape(w).lower() for w in re.findall(_STRING, m["items"])}
            result = [r for r in result if str(_get(r, m["path"]) or "").lower() in wanted]
        elif m := _PROJECT.fullmatch(op):
            result = [_project(r, m["items"]) for r in result]
        elif m := _ORDER.fullmatch(op):
            for key in reversed(m["keys"].split(", ")):  # stable sorts, last key first
                name, direction = key.split(" ")
                result.sort(key=functools.partial(_sort_key, name), reverse=direction == "desc")
        else:
            raise InvalidQuery(f"operator not understood by the fake: {op!r}")
    return result


def _project(row: dict[str, Any], items: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items.split(", "):
        name, _, path = item.partition(" = ")
        out[name] = _get(row, path or name)
    return out


def _sort_key(name: str, row: dict[str, Any]) -> str:
    return str(row.get(name))


def _holds(row: dict[str, Any], m: re.Match[str]) -> bool:
    if m["dpath"] is not None:
        if m["when"] is None or m["op"] != ">":
            raise InvalidQuery("todatetime(…) is compared only with > datetime(…)")
        value = _get(row, m["dpath"])
        return isinstance(value, str) and _parse_time(value) > _parse_time(m["when"])
    if m["when"] is not None:
        raise InvalidQuery("a datetime is compared only with todatetime(…)")
    literal = _unescape(m[4])
    value = _get(row, m["path"])
    if not isinstance(value, str):
        return False
    if m["op"] == "==":
        return value == literal
    if m["op"] == "=~":
        return value.lower() == literal.lower()
    raise InvalidQuery("> compares only datetimes")


def arm_error(status: int, message: str, code: str | None = None) -> Reply:
    return status, {"error": {"code": code or _ARM_CODES.get(status, "Error"), "message": message}}


class FakeResourceGraph(GoogleFake):
    """Sub-assessment rows, queried through `POST /providers/Microsoft.ResourceGraph/
    resources`; `add_finding` files one as Defender would. `queries` records each request's
    (subscriptions, query, options)."""

    def __init__(self, *, now: datetime | None = None) -> None:
        super().__init__()
        self.now = now or datetime(2026, 1, 1, tzinfo=UTC)
        self.rows: list[dict[str, Any]] = []
        """The `securityresources` table (sub-assessments)."""
        self.resources: list[dict[str, Any]] = []
        """The `resources` table (Container Apps and their jobs)."""
        self.route("POST", re.escape(PATH), self._resources)

    # -- state ----------------------------------------------------------------------------

    def add_finding(
        self,
        host: str,
        repository: str,
        digest: str,
        cve: str,
        severity: str,
        *,
        package: str = "openssl",
        version: str = "3.0.13-1",
        fixed: str = "",
        fix_status: str = "NoFixAvailable",
        status: str = "Unhealthy",
        cvss: float | None = 7.5,
        when: datetime | None = None,
        subscription: str = SUBSCRIPTION,
    ) -> dict[str, Any]:
        """One sub-assessment of the image `host/repository@digest`, in the recorded shape."""
        sub_id = str(uuid.uuid4())
        registry = host.split(".", 1)[0]
        generated = _timestamp(when or self.now)
        row: dict[str, Any] = {
            "id": f"/subscriptions/{subscription}/resourceGroups/rg/providers/"
            f"Microsoft.ContainerRegistry/registries/{registry}/providers/Microsoft.Security/"
            f"assessments/{ASSESSMENT_KEY}/subassessments/{sub_id}",
            "name": sub_id,
            "type": "microsoft.security/assessments/subassessments",
            "tenantId": "11111111-1111-1111-1111-111111111111",
            "kind": "",
            "location": "global",
            "resourceGroup": "rg",
            "subscriptionId": subscription,
            "properties": {
                "id": cve,
                "displayName": cve,
                "description": f"This vulnerability affects {package}.",
                "remediation": "Upgrade the package" if fix_status == "FixAvailable" else "",
                "timeGenerated": generated,
                "status": {"code": status, "severity": severity, "description": "", "cause": ""},
                "resourceDetails": {
                    "id": f"/repositories/{repository}/images/{digest}",
                    "source": "Azure",
                },
                "additionalData": {
                    "assessedResourceType": "AzureContainerRegistryVulnerability",
                    "vulnerabilityDetails": {
                        "severity": severity,
                        "cveId": cve,
                        "exploitabilityAssessment": {
                            "exploitStepsPublished": False,
                            "exploitStepsVerified": False,
                            "isInExploitKit": False,
                            "exploitUris": [],
                            "types": ["Remote"],
                        },
                        "references": [
                            {"title": cve, "link": f"https://nvd.nist.gov/vuln/detail/{cve}"}
                        ],
                        "cvss": {
                            "2.0": None,
                            "3.0": None
                            if cvss is None
                            else {"cvssVectorString": "CVSS:3.0/AV:N", "base": cvss},
                        },
                        "workarounds": [],
                        "weaknesses": {"cwe": []},
                        "lastModifiedDate": generated,
                        "publishedDate": "2024-01-01T00:00:00Z",
                    },
                    "artifactDetails": {
                        "lastPushedToRegistryUTC": generated,
                        "repositoryName": repository,
                        "registryHost": host,
                        "artifactType": "ContainerImage",
                        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                        "digest": digest,
                        "tags": ["1.0.0"],
                    },
                    "softwareDetails": {
                        "category": "OS",
                        "fixedVersion": fixed,
                        "version": version,
                        "vendor": "debian",
                        "packageName": package,
                        "osDetails": {"osPlatform": "linux", "osVersion": "debian_12"},
                        "fixStatus": fix_status,
                        "evidence": [],
                    },
                },
            },
        }
        if cvss is not None:
            row["properties"]["additionalData"]["cvssV30Score"] = cvss
        with self.lock:
            self.rows.append(row)
        return row

    def _resource(
        self,
        kind: str,
        name: str,
        properties: dict[str, Any],
        *,
        subscription: str,
        resource_group: str,
        location: str,
    ) -> dict[str, Any]:
        provider = {"containerapps": "containerApps", "jobs": "jobs"}[kind]
        row: dict[str, Any] = {
            "id": f"/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/"
            f"Microsoft.App/{provider}/{name}",
            "name": name,
            "type": f"microsoft.app/{kind}",
            "tenantId": "11111111-1111-1111-1111-111111111111",
            "kind": "",
            "location": location,
            "resourceGroup": resource_group,
            "subscriptionId": subscription,
            "managedBy": "",
            "sku": None,
            "plan": None,
            "properties": properties,
            "tags": {},
            "identity": {"type": "None"},
            "zones": None,
            "extendedLocation": None,
        }
        with self.lock:
            self.resources.append(row)
        return row

    @staticmethod
    def _containers(images: list[str], prefix: str) -> list[dict[str, Any]]:
        return [
            {
                "image": image,
                "name": f"{prefix}{i}",
                "resources": {"cpu": 0.5, "memory": "1Gi", "ephemeralStorage": "2Gi"},
            }
            for i, image in enumerate(images)
        ]

    def add_container_app(
        self,
        name: str,
        images: list[str],
        *,
        init_images: list[str] | None = None,
        subscription: str = SUBSCRIPTION,
        resource_group: str = "rg",
        location: str = "East US",
    ) -> dict[str, Any]:
        """A Container App whose template runs `images` (and `init_images` first)."""
        env_id = (
            f"/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/"
            "Microsoft.App/managedEnvironments/demokube"
        )
        template: dict[str, Any] = {
            "revisionSuffix": "",
            "containers": self._containers(images, "app"),
            "scale": {"minReplicas": 1, "maxReplicas": 5, "rules": []},
        }
        if init_images:
            template["initContainers"] = self._containers(init_images, "init")
        properties = {
            "provisioningState": "Succeeded",
            "runningStatus": "Running",
            "managedEnvironmentId": env_id,
            "environmentId": env_id,
            "workloadProfileName": "My-GP-01",
            "latestRevisionName": f"{name}--abcdef",
            "latestReadyRevisionName": f"{name}--abcdef",
            "latestRevisionFqdn": f"{name}--abcdef.demokube-t24clv0g.eastus.azurecontainerapps.io",
            "configuration": {
                "activeRevisionsMode": "Single",
                "ingress": {
                    "fqdn": f"{name}.demokube-t24clv0g.eastus.azurecontainerapps.io",
                    "external": True,
                    "targetPort": 3000,
                    "transport": "auto",
                    "traffic": [{"weight": 100, "latestRevision": True}],
                },
                "registries": [],
                "secrets": [],
            },
            "template": template,
            "outboundIpAddresses": ["20.1.2.3"],
        }
        return self._resource(
            "containerapps",
            name,
            properties,
            subscription=subscription,
            resource_group=resource_group,
            location=location,
        )

    def add_job(
        self,
        name: str,
        images: list[str],
        *,
        init_images: list[str] | None = None,
        subscription: str = SUBSCRIPTION,
        resource_group: str = "rg",
        location: str = "East US",
    ) -> dict[str, Any]:
        """A Container Apps job whose template runs `images` (and `init_images` first)."""
        template: dict[str, Any] = {"containers": self._containers(images, "job")}
        if init_images:
            template["initContainers"] = self._containers(init_images, "init")
        properties = {
            "provisioningState": "Succeeded",
            "environmentId": f"/subscriptions/{subscription}/resourceGroups/{resource_group}/"
            "providers/Microsoft.App/managedEnvironments/demokube",
            "workloadProfileName": "My-GP-01",
            "configuration": {
                "triggerType": "Manual",
                "replicaTimeout": 10,
                "replicaRetryLimit": 10,
                "manualTriggerConfig": {"replicaCompletionCount": 1, "parallelism": 4},
                "registries": [],
                "secrets": [],
            },
            "template": template,
            "outboundIpAddresses": ["20.1.2.3"],
            "eventStreamEndpoint": "testEndpoint",
        }
        return self._resource(
            "jobs",
            name,
            properties,
            subscription=subscription,
            resource_group=resource_group,
            location=location,
        )

    @property
    def queries(self) -> list[dict[str, Any]]:
        return [r.body for r in self.calls("POST", re.escape(PATH))]

    # -- the route ------------------------------------------------------------------------

    def dispatch(self, request: Request) -> tuple[int, Any, dict[str, str]]:
        status, body, headers = super().dispatch(request)
        if status >= 400 and isinstance(body, dict) and "status" in body.get("error", {}):
            status, body = arm_error(status, body["error"]["message"])  # injected faults
        return status, body, headers

    def _resources(self, request: Request) -> Reply:
        if request.arg("api-version") != API_VERSION:
            return arm_error(400, f"api-version {request.arg('api-version')!r} not served")
        body = request.body if isinstance(request.body, dict) else {}
        query = body.get("query")
        if not isinstance(query, str):
            return arm_error(400, "the request has no query")
        options = body.get("options") or {}
        if options.get("resultFormat") != "objectArray":
            return arm_error(400, "the fake answers resultFormat objectArray only")
        top = int(options.get("$top") or DEFAULT_TOP)
        if not 1 <= top <= MAX_TOP:
            return arm_error(400, f"$top {top} out of range")
        subscriptions = [s.lower() for s in body.get("subscriptions") or []]
        table = self.resources if query.split("\n", 1)[0] == "resources" else self.rows
        rows = [
            r for r in table if not subscriptions or r["subscriptionId"].lower() in subscriptions
        ]
        try:
            selected = evaluate(query, rows)
        except InvalidQuery as exc:
            return arm_error(400, f"Query is invalid: {exc}", code="InvalidQuery")
        start = 0
        if options.get("$skipToken"):
            token = json.loads(base64.b64decode(options["$skipToken"]))
            if token["query"] != query:
                return arm_error(400, "the skip token belongs to another query")
            start = token["offset"]
        page = selected[start : start + top]
        answer: dict[str, Any] = {
            "totalRecords": len(selected),
            "count": len(page),
            "resultTruncated": "false",
            "data": page,
            "facets": [],
        }
        if start + top < len(selected):
            token = {"query": query, "offset": start + top}
            answer["$skipToken"] = base64.b64encode(json.dumps(token).encode()).decode()
        return 200, answer
