"""The scheduled report on Azure: the `report` timer function of the app, as the host
calls it, over the harness's stand-ins (ACR's `/v2/` and token exchange in front of a real
distribution, the Table Storage ledger on Azurite) with the report written to a real Blob
container on Azurite by Put Blob, signed with the account's key (Shared Key) as a local
run is. It must leave `reports/YYYY/MM/DD/report.html` and `report.json` in the container,
read only the repositories under its prefixes, and keep its summary in the ledger."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta

import httpx
import pytest
from support import azure_harness
from support.azure_harness import HOST, T0, Azure, image

from functions.azure import _report
from regwarden.errors import RegistryError
from regwarden.report import report_summaries

azure = azure_harness.azure

pytestmark = pytest.mark.integration

POLICY = f"""\
apiVersion: regwarden/v1
kind: Policy
registries:
  - {{host: {HOST}, kind: acr}}
defaults:
  mode: audit
repositories:
  - match: "signed/**"
    team: alpha
  - match: "scanned/**"
    team: bravo
"""


@pytest.fixture
def azure_policy() -> str:
    return POLICY


def _signed(azure: Azure, method: str, url: str, **headers: str) -> dict[str, str]:
    from email.utils import formatdate

    account, key = azure.storage.account, azure.storage.key
    headers = {"x-ms-date": formatdate(usegmt=True), "x-ms-version": _report.API_VERSION, **headers}
    headers["Authorization"] = _report.shared_key(account, key, method, url, headers)
    return headers


@pytest.fixture
def container(azure: Azure) -> Iterator[str]:
    """A container of this test's own on the session's Azurite, and the report settings."""
    name = "reports-" + uuid.uuid4().hex[:12]
    url = f"{azure.storage.blob_endpoint}/{name}?restype=container"
    made = httpx.put(url, headers=_signed(azure, "PUT", url, **{"Content-Length": "0"}))
    assert made.status_code == 201, made.text
    azure.setenv("REGWARDEN_AZURE_ENDPOINT_BLOB", azure.storage.blob_endpoint)
    azure.setenv("REGWARDEN_STORAGE_ACCOUNT", azure.storage.account)
    azure.setenv("REGWARDEN_REPORT_CONTAINER", name)
    azure.setenv("REGWARDEN_REPORT_REGISTRY", HOST)
    _report.reset()
    yield name
    _report.reset()


def _blob(azure: Azure, container: str, name: str) -> httpx.Response:
    url = f"{azure.storage.blob_endpoint}/{container}/{name}"
    return httpx.get(url, headers=_signed(azure, "GET", url))


def test_the_report_timer_writes_the_days_report_to_the_container(
    azure: Azure, container: str
) -> None:
    alpha, bravo, outside = image("signed"), image("scanned"), image("signed")
    azure.push(alpha, "1.0.0", seed=901)
    azure.push(alpha, "1.0.1", seed=902)
    azure.push(bravo, "2.0.0", seed=903)
    azure.push(outside, "9.9.9", seed=904)
    azure.setenv("REGWARDEN_REPORT_PREFIXES", f"{alpha},{bravo}")
    at = T0 + timedelta(days=1, hours=6)
    azure.at(at)

    done = _report.report(azure.timer())
    azure.function("report")(azure.timer())  # as the host calls it: the same day's blobs again

    assert (done["images"], done["repositories"]) == (3, 2)
    html_key, json_key = "reports/2026/01/02/report.html", "reports/2026/01/02/report.json"
    assert done["html"] == f"{container}/{html_key}"
    page = _blob(azure, container, html_key)
    assert page.status_code == 200, page.text
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["x-ms-blob-type"] == "BlockBlob"
    assert page.text.lstrip().lower().startswith("<!doctype html") and "<svg" in page.text
    data = _blob(azure, container, json_key)
    assert data.status_code == 200 and data.headers["content-type"] == "application/json"
    body = json.loads(data.content)
    assert body["registry"] == HOST and body["images"] == 3
    assert {g["name"] for g in body["storage"]["by_team"]} == {"alpha", "bravo"}
    assert outside not in data.text and outside not in page.text
    with closing(azure.ledger()) as ledger:
        # one summary: the second run at the same moment is the same report record
        assert [s["images"] for s in report_summaries(ledger, HOST)] == [3]


def test_a_report_that_cannot_be_written_raises(azure: Azure, container: str) -> None:
    azure.setenv("REGWARDEN_REPORT_PREFIXES", image("signed"))
    azure.setenv("REGWARDEN_REPORT_CONTAINER", "no-such-container")
    _report.reset()
    with pytest.raises(RegistryError, match=r"no-such-container.*ContainerNotFound"):
        _report.report(azure.timer())


def test_a_wrong_key_is_refused_by_the_storage_service(azure: Azure, container: str) -> None:
    """The signature is checked: Azurite refuses a request signed with another key."""
    import base64

    url = f"{azure.storage.blob_endpoint}/{container}/x"
    headers = {"x-ms-date": "Mon, 07 Dec 2026 06:00:00 GMT", "x-ms-version": _report.API_VERSION}
    wrong = base64.b64encode(b"k" * 64).decode()
    headers["Authorization"] = _report.shared_key(azure.storage.account, wrong, "GET", url, headers)
    assert httpx.get(url, headers=headers).status_code == 403


def test_settings() -> None:
    from regwarden.errors import UsageError

    env = {
        "REGWARDEN_REPORT_REGISTRY": HOST,
        "REGWARDEN_STORAGE_ACCOUNT": "acct",
        "REGWARDEN_REPORT_CONTAINER": "c",
    }
    for missing in env:
        with pytest.raises(UsageError, match=missing):
            _report.ReportSettings.from_env({k: v for k, v in env.items() if k != missing})
    s = _report.ReportSettings.from_env({**env, "REGWARDEN_REPORT_PREFIXES": "apps/"})
    assert (s.prefix, s.repositories, s.container) == ("reports/", ("apps/",), "c")
