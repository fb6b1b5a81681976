"""The scheduled registry report: timer `%REGWARDEN_REPORT_SCHEDULE%` → `report` → a Blob
container of the deployment's storage account.

    timer → the ACR registry's repositories under REGWARDEN_REPORT_PREFIXES and the Table
    Storage ledger → `regwarden.report` (collect, summarise, render) → two blobs,
    `PREFIX/YYYY/MM/DD/report.html` and `report.json`, in REGWARDEN_REPORT_CONTAINER; the
    summary is kept in the ledger (a `report` action record) so the next report draws trends.

The account's lifecycle management policy deletes old reports (infra/azure/reports.tf).
Blobs go up by the Blob service's Put Blob over httpx — one request each, no storage SDK
in the bundle — with the app's managed identity (a bearer token for storage), or, for
Azurite and local runs, signed with `REGWARDEN_AZURE_STORAGE_KEY` (Shared Key).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from email.utils import formatdate
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlsplit

from regwarden.report_scope import ReportScope
from regwarden.warm import ColdStart, env_required

from . import COLLECTOR, _app

if TYPE_CHECKING:
    import azure.functions as func

    from regwarden.report import Report

__all__ = ["REPORT", "ReportSettings", "put_blob", "report", "reset", "shared_key"]

REPORT = "report"
API_VERSION = "2021-08-06"
STORAGE_SCOPE = "https://storage.azure.com/.default"


@dataclass(frozen=True, slots=True, kw_only=True)
class ReportSettings(ReportScope):
    registry: str
    """The ACR login server reported on."""
    account: str
    """The storage account holding the container (REGWARDEN_STORAGE_ACCOUNT)."""
    container: str

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ReportSettings:
        env = os.environ if env is None else env
        return cls(
            registry=env_required(env, "REGWARDEN_REPORT_REGISTRY", "the ACR login server"),
            account=env_required(env, "REGWARDEN_STORAGE_ACCOUNT", "the storage account's name"),
            container=env_required(env, "REGWARDEN_REPORT_CONTAINER", "the reports container"),
            **asdict(ReportScope.from_env(env)),
        )


def _build(function: str) -> _app.State:
    return _app.build_state(function, extra_hosts=(ReportSettings.from_env().registry,))


_STATES: ColdStart[_app.State] = COLLECTOR.cold_start(_build, _app.close_state)


def reset() -> None:
    """Forget the cold-start state (tests change the environment between cases)."""
    _STATES.reset()


def shared_key(account: str, key: str, method: str, url: str, headers: Mapping[str, str]) -> str:
    """The `Authorization` value of a Blob request signed with the account key (Shared Key:
    the standard headers in their fixed order, then the x-ms- headers sorted, then the
    canonical resource `/ACCOUNT/PATH`; a path-style emulator URL keeps its own account
    segment in PATH), each query parameter on a line of its own (`\nname:value`, names
    lower-cased and sorted)."""
    parts = urlsplit(url)
    query = sorted((k.lower(), v) for k, v in parse_qsl(parts.query, keep_blank_values=True))
    lower = {k.lower(): v for k, v in headers.items()}
    length = lower.get("content-length", "")
    standard = [
        method,
        lower.get("content-encoding", ""),
        lower.get("content-language", ""),
        "" if length == "0" else length,
        lower.get("content-md5", ""),
        lower.get("content-type", ""),
        "",  # Date: x-ms-date is sent instead
        lower.get("if-modified-since", ""),
        lower.get("if-match", ""),
        lower.get("if-none-match", ""),
        lower.get("if-unmodified-since", ""),
        lower.get("range", ""),
    ]
    ms = "".join(f"{k}:{lower[k].strip()}\n" for k in sorted(lower) if k.startswith("x-ms-"))
    resource = f"/{account}{parts.path}" + "".join(f"\n{k}:{v}" for k, v in query)
    text = "\n".join(standard) + "\n" + ms + resource
    digest = hmac.new(base64.b64decode(key), text.encode("utf-8"), hashlib.sha256).digest()
    return f"SharedKey {account}:{base64.b64encode(digest).decode()}"


def put_blob(
    account: str,
    container: str,
    name: str,
    data: bytes,
    content_type: str,
    env: Mapping[str, str],
) -> None:
    """Put Blob (a block blob, replacing any of that name)."""
    import httpx

    from regwarden.azure_clients import STORAGE_KEY_ENV, default_credential, storage_endpoint
    from regwarden.errors import RegistryError

    base = storage_endpoint("blob", account, env).rstrip("/")
    url = f"{base}/{quote(container)}/{quote(name)}"
    headers = {
        "Content-Type": content_type,
        "Content-Length": str(len(data)),
        "x-ms-blob-type": "BlockBlob",
        "x-ms-date": formatdate(usegmt=True),
        "x-ms-version": API_VERSION,
    }
    key = env.get(STORAGE_KEY_ENV, "").strip()
    if key:
        headers["Authorization"] = shared_key(account, key, "PUT", url, headers)
    elif url.startswith("https://"):
        token = default_credential().get_token(STORAGE_SCOPE).token
        headers["Authorization"] = f"Bearer {token}"
    where = f"blob {container}/{name} in {account}"
    try:
        answer = httpx.put(url, content=data, headers=headers, timeout=60.0)
    except httpx.HTTPError as exc:
        raise RegistryError(f"{where}: cannot write the report: {exc}") from exc
    if answer.status_code != 201:
        raise RegistryError(
            f"{where}: cannot write the report: HTTP {answer.status_code} "
            f"{answer.headers.get('x-ms-error-code', '')} {answer.text[:300]}".rstrip()
        )


def _write(settings: ReportSettings, report: Report, html: str) -> tuple[str, str]:
    from regwarden.report import report_json, report_keys

    html_key, json_key = report_keys(settings.prefix, report.generated_at)
    for key, data, content_type in (
        (json_key, report_json(report).encode(), "application/json"),
        (html_key, html.encode(), "text/html; charset=utf-8"),
    ):
        put_blob(settings.account, settings.container, key, data, content_type, os.environ)
    return html_key, json_key


def report(timer: func.TimerRequest) -> dict[str, Any]:
    """The scheduled report. Raises (the host logs the failed run; the next occurrence runs
    again) when anything could not be read or written."""

    def work(st: _app.State) -> dict[str, Any]:
        from regwarden.report import make_report, render_html

        settings = ReportSettings.from_env()
        made = make_report(
            st.runtime.registry(settings.registry),
            st.runtime.ledger,
            registry=settings.registry,
            policy=st.runtime.policy,
            globs=settings.globs,
            now=_app.now(),
            top=settings.top,
            stale_days=settings.stale_days,
        )
        html_key, json_key = _write(settings, made, render_html(made))
        return {
            "registry": settings.registry,
            "images": made.images,
            "repositories": made.repositories,
            "html": f"{settings.container}/{html_key}",
            "json": f"{settings.container}/{json_key}",
        }

    try:
        result = work(_STATES.refresh(REPORT))
    except Exception as exc:
        from regwarden.errors import RegwardenError
        from regwarden.redact import redact_text

        _app.log.error(
            "%s failed: %s",
            REPORT,
            redact_text(f"{type(exc).__name__}: {exc}"),
            exc_info=not isinstance(exc, RegwardenError),
        )
        raise
    _app.log.info("%s handled: %s", REPORT, result)
    return result
