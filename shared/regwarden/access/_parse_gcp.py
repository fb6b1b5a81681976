"""Google Cloud Audit Logs (Artifact Registry Data Access logs) as access events.

PREPARED: the parser and samples (events/access/gcp-*.json) exist; no trigger is wired yet
(a log sink with the filter `protoPayload.serviceName="artifactregistry.googleapis.com"
AND protoPayload.methodName=("Docker-GetManifest" OR "Docker-PutManifest")` to a Pub/Sub
topic, whose message data is the LogEntry JSON, plugs in when the GCP access function lands;
Data Access logs of type DATA_READ must be enabled for Artifact Registry).

Shape from the docs: "Artifact Registry audit logging"
(https://cloud.google.com/artifact-registry/docs/audit-logging — Docker pulls are DATA_READ
`Docker-GetManifest` / `Docker-HeadManifest` / `Docker-ServeBlob`, pushes DATA_WRITE
`Docker-PutManifest`) and the Cloud Audit Logs `AuditLog` / `LogEntry` reference
(https://cloud.google.com/logging/docs/reference/audit/auditlog/rest/Shared.Types/AuditLog):
`protoPayload.methodName`, `authenticationInfo.principalEmail`,
`requestMetadata.callerIp` / `callerSuppliedUserAgent`, `resourceName`
(`projects/P/locations/L/repositories/R/dockerImages/IMAGE`), `request.requestUrl`
(`/v2/P/R/IMAGE/manifests/REF`), `status.code`, `insertId`, `timestamp`.

`Docker-GetManifest` is a pull (a HEAD is a client checking whether it has the image, not
a pull), `Docker-PutManifest` a push; a failed call (`status.code` ≠ 0) and every other
method are dropped. The registry is `<location>-docker.pkg.dev`, the repository
`<project>/<repository>/<image>` as Docker clients name it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..errors import IntakeError, InvalidReference
from ..intake import REPOSITORY_EXPECTED, valid_repository
from ..jsondoc import Node, load_json
from ..reference import validate_digest
from ._common import is_ip
from ._model import AccessAction, AccessEvent

__all__ = ["parse_gcp_audit_access"]

LABEL = "Cloud Audit Logs entry"
SOURCE = "gcp.auditlog"
SERVICE = "artifactregistry.googleapis.com"
_METHODS: dict[str, AccessAction] = {"Docker-GetManifest": "pull", "Docker-PutManifest": "push"}
_URL = re.compile(r"/v2/(?P<name>.+)/manifests/(?P<ref>[^/?#]+)(?:[?#].*)?")
_LOCATION = re.compile(r"projects/[^/]+/locations/(?P<location>[^/]+)/")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


def parse_gcp_audit_access(entry: bytes | str | Mapping[str, Any]) -> list[AccessEvent]:
    """One LogEntry (the JSON a log sink publishes, or its decoded object) as access
    events: [] for a method that is no manifest pull or push. Raises IntakeError naming
    the path for an entry that is not an Artifact Registry audit log."""
    if isinstance(entry, Mapping):
        root = Node(entry, "", label=LABEL, error=IntakeError)
    else:
        root = load_json(entry, label=LABEL, error=IntakeError)
    root.mapping()
    payload = root.field("protoPayload")
    payload.mapping()
    service = payload.field("serviceName")
    if service.text() != SERVICE:
        service.fail(repr(SERVICE))
    action = _METHODS.get(payload.field("methodName").text())
    if action is None:
        return []
    status = payload.field("status")
    if status.present and status.field("code").present and status.field("code").integer() != 0:
        return []
    url_node = payload.field("request").field("requestUrl")
    match = _URL.fullmatch(url_node.text())
    if match is None:
        url_node.fail("/v2/<project>/<repository>/<image>/manifests/<tag or digest>")
    repository = match.group("name")
    if not valid_repository(repository):
        url_node.fail(REPOSITORY_EXPECTED, got=repr(repository))
    ref = match.group("ref")
    digest: str | None = None
    tag: str | None = None
    if ref.startswith("sha256:") or ":" in ref:
        try:
            digest = validate_digest(ref)
        except InvalidReference:
            url_node.fail("a manifest reference that is a tag or a digest", got=repr(ref))
    elif _TAG.fullmatch(ref):
        tag = ref
    else:
        url_node.fail("a manifest reference that is a tag or a digest", got=repr(ref))
    auth = payload.field("authenticationInfo")
    principal = auth.field("principalEmail").opt_text() if auth.present else None
    meta = payload.field("requestMetadata")
    caller_ip = meta.field("callerIp").opt_text() if meta.present else None
    return [
        AccessEvent(
            source=SOURCE,
            event_id=root.field("insertId").text(),
            action=action,
            registry=f"{_location(payload)}-docker.pkg.dev",
            repository=repository,
            digest=digest,
            tag=tag,
            principal=principal,
            principal_type=_principal_type(principal),
            source_ip=caller_ip if caller_ip is not None and is_ip(caller_ip) else None,
            user_agent=meta.field("callerSuppliedUserAgent").opt_text() if meta.present else None,
            time=root.field("timestamp").timestamp(),
        )
    ]


def _principal_type(principal: str | None) -> str | None:
    if principal is None:
        return None
    return "serviceAccount" if principal.endswith(".gserviceaccount.com") else "user"


def _location(payload: Node) -> str:
    resource = payload.field("resourceName")
    text = resource.opt_text()
    if text is not None:
        m = _LOCATION.match(text)
        if m is not None:
            return m.group("location")
    where = payload.field("resourceLocation")
    if where.present:
        locations = where.field("currentLocations").opt_array()
        if locations:
            return locations[0].text()
    raise resource.error("no location (projects/P/locations/L/... or resourceLocation)")
