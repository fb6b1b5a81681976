"""The Azure bundle carries no AWS or Google SDK, and the AWS and GCP bundles carry no Azure
SDK: each extra's requirement closure names none of the others' distributions; the built
Azure bundle, with exactly its requirements installed beside it (what Oryx's `pip install
-r requirements.txt` puts in `.python_packages`), imports every function and handles a
first delivery; importing `function_app` loads no Azure client library but
azure-functions (the worker has it loaded before the app)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from support.bundles import closure, not_deployed

ROOT = Path(__file__).resolve().parents[2]
AWS_DISTRIBUTIONS = r"boto3|botocore|s3transfer|aws-lambda-powertools|aws-xray-sdk"
GOOGLE_DISTRIBUTIONS = r"google-.*|googleapis-.*|grafeas|grpcio.*|grpc-.*|proto-plus|protobuf"
GOOGLE_DISTRIBUTIONS += r"|functions-framework|flask"
AZURE_DISTRIBUTIONS = r"azure-.*|msal.*|msrest.*"
FOREIGN_TO = {
    "azure": re.compile(f"{AWS_DISTRIBUTIONS}|{GOOGLE_DISTRIBUTIONS}"),
    "aws": re.compile(AZURE_DISTRIBUTIONS),
    "gcp": re.compile(AZURE_DISTRIBUTIONS),
}
#: a distribution each extra's closure must hold (the walk really went through the extra)
EXPECTED_IN = {
    "azure": ("azure-functions", "azure-data-tables", "azure-storage-queue", "azure-core", "msal"),
    "aws": ("boto3", "botocore", "aws-lambda-powertools"),
    "gcp": ("google-cloud-tasks", "functions-framework", "grpcio"),
}


@pytest.mark.parametrize("extra", ["azure", "aws", "gcp"])
def test_each_extra_s_requirement_closure_has_no_other_cloud_s_sdk(extra: str) -> None:
    found = closure(extra)

    foreign = {n: why for n, why in found.items() if FOREIGN_TO[extra].fullmatch(n)}
    assert foreign == {}
    for needed in EXPECTED_IN[extra]:
        assert needed in found  # the closure really was walked
    assert len(found) > 25


def test_what_the_azure_bundle_lacks_is_every_other_cloud_s_sdk_and_the_dev_tools() -> None:
    missing = set(not_deployed("azure"))

    assert {"boto3", "botocore", "google", "grpc", "functions_framework", "pytest"} <= missing
    assert "aiohttp" in missing  # the k8s extra's, which azure-storage-queue would import
    assert not {"azure", "yaml", "pydantic", "httpx", "msal", "regwarden"} & missing


def test_the_function_bundle_installs_regwarden_with_the_azure_and_report_extras_only() -> None:
    lines = (ROOT / "functions" / "azure" / "requirements.txt").read_text().splitlines()
    wanted = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert wanted == [".[azure,report]"]


def installed_site(target: Path, distributions: list[str]) -> Path:
    """A `pip install --target` directory holding exactly `distributions` (their RECORDed
    files, linked from this venv): what the Functions host's `.python_packages` would hold,
    and nothing else of the venv."""
    for name in distributions:
        dist = metadata.distribution(name)
        for file in dist.files or ():
            if file.parts[0] == ".." or file.suffix == ".pyc":
                continue  # console scripts; bytecode is rebuilt
            source = Path(str(dist.locate_file(file)))
            if not source.is_file():
                continue
            link = target / file
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(source)
    return target


PROBE = """
import datetime, json, logging, sys
root, site, event_file = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path[:0] = [root, site]  # the app's root, then .python_packages (regwarden included)
import azure.functions as func  # the worker loads it before the app
before = set(sys.modules)
import function_app
heavy = sorted(m for m in set(sys.modules) - before if m.startswith(HEAVY))
functions = {f.get_function_name(): f for f in function_app.app.get_functions()}

class Keep(logging.Handler):
    records = []
    def emit(self, record):
        self.records.append((record.levelname, record.getMessage()))

logging.getLogger().addHandler(Keep())
logging.getLogger().setLevel(logging.INFO)
(grid,) = json.loads(open(event_file).read())
when = datetime.datetime.fromisoformat(grid["eventTime"][:26])
event = func.EventGridEvent(id=grid["id"], data=grid["data"], topic=grid["topic"],
    subject=grid["subject"], event_type=grid["eventType"], event_time=when,
    data_version=grid["dataVersion"])
functions["on_push"].get_user_function()(event)  # as the worker calls it
import functions as package, regwarden
print(json.dumps({
    "heavy_at_import": heavy,
    "functions": sorted(functions),
    "foreign": sorted(m for m in sys.modules if m.split(".")[0] in FOREIGN),
    "logs": Keep.records,
    "regwarden_from": regwarden.__file__,
    "functions_from": package.__file__,
}))
"""
HEAVY = (
    "azure.core",
    "azure.identity",
    "azure.data",
    "azure.storage",
    "azure.containerregistry",
    "azure.mgmt",
    "azure.keyvault",
    "azure.eventgrid",
    "msal",
    "cryptography",
    "httpx",
    "pydantic",
)
"""Loaded on the first delivery, never with the module: the Azure clients, their auth, the
core's heavy imports."""
FOREIGN = ("boto3", "botocore", "aws_lambda_powertools", "google", "grpc", "functions_framework")
FUNCTIONS = [
    "notify",
    "on_push",
    "on_scan",
    "on_webhook",
    "recheck",
    "recovery",
    "report",
    "retention_fanout",
    "retention_worker",
]


def test_the_built_bundle_with_only_its_requirements_loads_every_function(
    tmp_path: Path,
) -> None:
    built = subprocess.run(
        ["make", "-s", "azure-bundle", f"BUILD={tmp_path}", f"PY={sys.executable}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    with zipfile.ZipFile(tmp_path / "regwarden-azure.zip") as bundle:
        names = bundle.namelist()
        root = tmp_path / "unpacked"
        bundle.extractall(root)
    for at_root in ("function_app.py", "host.json", "requirements.txt", "pyproject.toml"):
        assert at_root in names
    assert not any(n.startswith(("functions/aws/", "functions/gcp/")) for n in names)
    assert not any("__pycache__" in n for n in names)
    host = json.loads((root / "host.json").read_text())
    assert host["version"] == "2.0"
    # regwarden itself comes from the bundle (pip builds it from its pyproject), its
    # dependencies and the azure extra from the index
    site = installed_site(tmp_path / "site", [n for n in closure("azure") if n != "regwarden"])
    (site / "regwarden").symlink_to(root / "shared" / "regwarden")
    probe = f"HEAVY = {HEAVY!r}\nFOREIGN = {FOREIGN!r}\n" + textwrap.dedent(PROBE)
    (tmp_path / "policy.yaml").write_text(
        "apiVersion: regwarden/v1\nkind: Policy\n"
        "registries: [{host: other.azurecr.io, kind: acr}]\n"
        'repositories: [{match: "apps/**", team: alpha}]\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGWARDEN_", "PYTHON"))}
    env.update(
        REGWARDEN_POLICY=str(tmp_path / "policy.yaml"),
        REGWARDEN_LEDGER=str(tmp_path / "ledger.db"),
        REGWARDEN_AZURE_SUBSCRIPTION="00000000-0000-0000-0000-000000000000",
    )
    # a push to a registry the policy does not list: the whole cold start and the
    # delivery run, and it is rejected without contacting anything
    event = ROOT / "events" / "azure" / "eventgrid-image-pushed.json"
    loaded = subprocess.run(
        # -I -S: no site-packages of this venv, no PYTHONPATH: the bundle and its packages
        [sys.executable, "-I", "-S", "-c", probe, str(root), str(site), str(event)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr
    report = json.loads(loaded.stdout.strip().splitlines()[-1])
    assert report["functions"] == FUNCTIONS
    assert report["heavy_at_import"] == []
    assert report["foreign"] == []
    rejected = [m for level, m in report["logs"] if level == "WARNING" and "rejected" in m]
    assert rejected and "demo.azurecr.io/apps/api" in rejected[0]
    assert any(m.startswith("on_push handled") for _, m in report["logs"])
    assert report["regwarden_from"].startswith(str(site / "regwarden"))
    assert report["functions_from"] == str(root / "functions" / "__init__.py")
