"""A loopback stand-in for the Secret Manager v1 REST API: `versions/…:access` of secrets a
test put, with versions (`latest` is the newest enabled one) so a rotation can be staged.

Shapes from Google's API definitions as the installed client states them:
`google/cloud/secretmanager_v1/services/secret_manager_service/transports/rest_base.py`
(`GET /v1/{name=projects/*/secrets/*/versions/*}:access`) and
`google/cloud/secretmanager_v1/types/service.py`, `resources.py`
(AccessSecretVersionResponse: `name` — the version's resource name with its number, never
`latest` — and `payload` {`data`: bytes, base64 in JSON}). A missing secret or version is
404 NOT_FOUND, as Secret Manager answers; `dataCrc32c` is left out (it is optional, set
only when the version was added with one).
"""

from __future__ import annotations

import base64

from support.google_fake import GoogleFake, Reply, Request, google_error

__all__ = ["FakeSecrets"]


class FakeSecrets(GoogleFake):
    """Secrets by (project, id), each a list of versions (1-based, newest last)."""

    def __init__(self) -> None:
        super().__init__()
        self.secrets: dict[tuple[str, str], list[bytes]] = {}
        self.route(
            "GET",
            r"/v1/projects/(?P<project>[^/]+)/secrets/(?P<secret>[^/]+)/versions/"
            r"(?P<version>[^/:]+):access",
            self._access,
        )

    def put(self, project: str, secret: str, value: str | bytes) -> int:
        """Add a version (the new `latest`); returns its number."""
        data = value.encode() if isinstance(value, str) else value
        with self.lock:
            versions = self.secrets.setdefault((project, secret), [])
            versions.append(data)
            return len(versions)

    def accesses(self, secret: str) -> int:
        """How many times any version of `secret` was read."""
        return len(self.calls("GET", rf"/v1/projects/[^/]+/secrets/{secret}/versions/[^/]+:access"))

    def _access(self, request: Request) -> Reply:
        project, secret = request.params["project"], request.params["secret"]
        versions = self.secrets.get((project, secret))
        if not versions:
            return google_error(404, f"Secret [projects/{project}/secrets/{secret}] not found.")
        wanted = request.params["version"]
        number = len(versions) if wanted == "latest" else int(wanted) if wanted.isdigit() else 0
        if not 1 <= number <= len(versions):
            return google_error(404, f"Secret Version [{wanted}] not found.")
        name = f"projects/{project}/secrets/{secret}/versions/{number}"
        data = base64.b64encode(versions[number - 1]).decode()
        return 200, {"name": name, "payload": {"data": data}}
