"""The GCP bundle carries no AWS or Azure SDK: the functions never import one (a cold start
and a first delivery, with those packages made unimportable), and the `gcp` extra's
requirement closure names none. On Cloud Run the functions log Cloud Logging's JSON."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
FOREIGN = ("boto3", "botocore", "aws_lambda_powertools", "aws_xray_sdk", "s3transfer", "azure")
FOREIGN_DISTRIBUTIONS = re.compile(
    r"(boto3|botocore|s3transfer|aws-lambda-powertools|aws-xray-sdk|azure-.*|msal.*)"
)

PROBE = """
import importlib.abc, json, sys

FOREIGN = {foreign!r}

class Refuse(importlib.abc.MetaPathFinder):
    # a deployed GCP function has none of these: importing one must fail here as there
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FOREIGN:
            raise ImportError(f"{{name}} is not in the GCP bundle")
        return None

sys.meta_path.insert(0, Refuse())
import functions_framework

app = functions_framework.create_app("on_push", {main!r})
after_import = sorted(m for m in sys.modules if m.split(".")[0] in FOREIGN)
answer = app.test_client().post("/", data={body!r}, headers={{"content-type": "application/json"}})
print(json.dumps({{
    "after_import": after_import,
    "after_delivery": sorted(m for m in sys.modules if m.split(".")[0] in FOREIGN),
    "status": answer.status_code,
    "answer": answer.get_json(silent=True),
}}))
"""


def _foreign_delivery() -> bytes:
    """A `gcr` push for a host no policy lists: the whole cold start and the delivery run,
    and the answer (200, rejected) needs no network."""
    import base64

    data = {"action": "INSERT", "digest": "elsewhere.example/p/r/i@sha256:" + "1" * 64}
    message = {
        "data": base64.b64encode(json.dumps(data).encode()).decode(),
        "messageId": "1",
        "publishTime": "2026-01-01T00:00:00Z",
    }
    return json.dumps({"message": message, "subscription": "projects/p/subscriptions/s"}).encode()


def test_the_functions_cold_start_and_first_delivery_import_no_aws_or_azure_sdk(
    tmp_path: Path,
) -> None:
    (tmp_path / "policy.yaml").write_text(
        "apiVersion: regwarden/v1\nkind: Policy\n"
        "registries: [{host: us-docker.pkg.dev, kind: gar}]\n"
        'repositories: [{match: "demo-proj/**", team: alpha}]\n'
    )
    code = PROBE.format(
        foreign=FOREIGN, main=str(ROOT / "functions" / "gcp" / "main.py"), body=_foreign_delivery()
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REGWARDEN_", "AWS_", "K_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        REGWARDEN_POLICY=str(tmp_path / "policy.yaml"),
        REGWARDEN_LEDGER=str(tmp_path / "ledger.db"),
        GOOGLE_CLOUD_PROJECT="demo-proj",
        REGWARDEN_ALERTS_TOPIC="projects/demo-proj/topics/regwarden-alerts",
        K_SERVICE="regwarden-on-push",  # on Cloud Run: logs are Cloud Logging's JSON lines
    )
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["status"] == 200, report["answer"]
    assert "rejected" in report["answer"]["results"][0]  # the delivery ran to its end
    assert report["after_import"] == [] and report["after_delivery"] == []
    logs = [json.loads(line) for line in done.stdout.strip().splitlines()[:-1]]
    (rejected,) = [e for e in logs if e["message"] == "event rejected"]
    assert rejected["severity"] == "WARNING" and rejected["function"] == "on_push"
    assert rejected["image"].startswith("elsewhere.example/p/r/i@sha256:")
    assert any(e["severity"] == "INFO" and e["message"] == "delivery handled" for e in logs)


def _closure(roots: list[Requirement]) -> dict[str, str]:
    """Every installed distribution `roots` pull in (name → who asked for it first), the
    markers evaluated for this interpreter with no extra of the dependencies."""
    env: dict[str, str] = {**default_environment(), "extra": ""}  # type: ignore[dict-item]
    found: dict[str, str] = {}
    todo = [(r, "regwarden[gcp]") for r in roots]
    while todo:
        req, parent = todo.pop()
        name = re.sub(r"[-_.]+", "-", req.name).lower()
        if name in found:
            continue
        found[name] = parent
        requires = metadata.requires(req.name) or []
        for text in requires:
            child = Requirement(text)
            if child.marker is None or child.marker.evaluate(env):
                todo.append((child, name))
    return found


def test_the_gcp_extra_s_requirement_closure_has_no_aws_or_azure_sdk() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    roots = [
        Requirement(r)
        for r in [
            *project["dependencies"],
            *project["optional-dependencies"]["gcp"],
            *project["optional-dependencies"]["report"],  # the report function's plots
        ]
    ]

    closure = _closure(roots)

    foreign = {n: why for n, why in closure.items() if FOREIGN_DISTRIBUTIONS.fullmatch(n)}
    assert foreign == {}
    for needed in (
        "google-cloud-tasks",
        "google-cloud-pubsub",
        "functions-framework",
        "grafeas",
        "matplotlib",
    ):
        assert needed in closure  # the closure really was walked
    assert len(closure) > 30


def test_the_function_bundle_installs_regwarden_with_the_gcp_and_report_extras_only() -> None:
    lines = (ROOT / "functions" / "gcp" / "requirements.txt").read_text().splitlines()
    wanted = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert wanted == [".[gcp,report]"]


LOAD_FROM_BUNDLE = """
import sys, zipfile
root = sys.argv[1]
sys.path[:0] = [root, root + "/shared"]  # as Cloud Run: the bundle's root, regwarden from it
import functions_framework
for target in ("on_push", "on_scan", "retention_fanout", "retention_worker", "notify",
               "recovery", "recheck", "report"):
    functions_framework.create_app(target, root + "/main.py")
import functions, regwarden
print(functions.__file__.startswith(root), regwarden.__file__.startswith(root + "/shared"))
"""


def test_every_entry_point_loads_from_the_built_source_bundle_alone(tmp_path: Path) -> None:
    built = subprocess.run(
        ["make", "-s", "gcp-bundle", f"BUILD={tmp_path}", f"PY={sys.executable}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert built.returncode == 0, built.stderr
    root = tmp_path / "unpacked"
    subprocess.run(
        [sys.executable, "-m", "zipfile", "-e", str(tmp_path / "regwarden-gcp.zip"), str(root)],
        check=True,
        timeout=120,
    )
    assert not (root / "functions" / "aws").exists()  # no other platform's adapter ships
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "K_SERVICE")}
    loaded = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(LOAD_FROM_BUNDLE), str(root)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split() == ["True", "True"]  # the bundle's code, not the checkout's
