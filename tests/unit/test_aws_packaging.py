"""The AWS bundle: the packaging check (`scripts/package_report.py`) on build trees it
must accept or refuse, and the handlers' import graph without the CLI-only packages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

from package_report import main, report  # noqa: E402

TEMPLATE = """\
Globals:
  Function:
    Layers: [!Ref SharedLayer]
Resources:
  SharedLayer:
    Type: AWS::Serverless::LayerVersion
    Properties: {ContentUri: SharedLayer}
  OnPushFunction:
    Type: AWS::Serverless::Function
    Properties: {CodeUri: OnPushFunction, Handler: functions.aws.on_push.handler}
"""


def build_tree(root: Path, files: dict[str, int]) -> Path:
    """A fake `.aws-sam/build`: template plus files of the given sizes."""
    build = root / "build"
    build.mkdir()
    (build / "template.yaml").write_text(TEMPLATE)
    for name, size in files.items():
        path = build / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
    return build


def test_sizes_exclude_runtime_boto3_and_add_the_layer_to_each_function(tmp_path: Path) -> None:
    build = build_tree(
        tmp_path,
        {
            "OnPushFunction/functions/aws/on_push.py": 1_000,
            "SharedLayer/python/pydantic/main.py": 2_000_000,
            "SharedLayer/python/regwarden/pipeline.py": 30_000,
            "SharedLayer/python/boto3/session.py": 5_000_000,
            "SharedLayer/python/botocore-1.0.dist-info/METADATA": 10,
            "SharedLayer/python/lib/python3.12/site-packages/yaml/x.so": 500_000,
        },
    )
    result = report(build, 40.0)
    layer = result["layers"]["SharedLayer"]
    assert layer["bytes"] == 2_000_000 + 30_000 + 500_000
    assert layer["excluded_runtime_bytes"] == 5_000_010
    function = result["functions"]["OnPushFunction"]
    assert function["layers"] == ["SharedLayer"]
    assert function["total_bytes"] == 1_000 + layer["bytes"]
    assert result["ok"] and result["problems"] == []


@pytest.mark.parametrize(
    "path",
    [
        "SharedLayer/python/google/cloud/artifactregistry/__init__.py",
        "SharedLayer/python/azure/containerregistry/__init__.py",
        "SharedLayer/python/grpc/__init__.py",
        "SharedLayer/python/grpcio-1.60.0.dist-info/METADATA",
        "OnPushFunction/azure/__init__.py",
    ],
)
def test_a_gcp_or_azure_sdk_fails_the_check(tmp_path: Path, path: str) -> None:
    build = build_tree(tmp_path, {"OnPushFunction/functions/aws/on_push.py": 10, path: 10})
    result = report(build, 40.0)
    assert not result["ok"]
    assert any("GCP/Azure SDK in the AWS bundle" in p for p in result["problems"])


def test_over_the_limit_fails_and_main_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    build = build_tree(
        tmp_path,
        {"OnPushFunction/functions/aws/on_push.py": 10, "SharedLayer/python/big.bin": 1_500_000},
    )
    assert main(["--build-dir", str(build), "--limit-mb", "1"]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["problems"] == ["OnPushFunction: code + layers 1.50 MB > 1.0 MB"]
    assert main(["--build-dir", str(build), "--limit-mb", "2"]) == 0


def test_handlers_and_their_first_call_import_without_cli_packages() -> None:
    """The layer ships no typer, rich, click or pygments: the handlers and everything their
    first invocation imports must load without them (httpx imports rich only if present)."""
    code = """
import sys
startup = set(sys.modules)  # .pth files of other extras may load namespace packages
for name in ("typer", "rich", "click", "pygments", "starlette", "uvicorn"):
    sys.modules[name] = None  # any import of them raises ImportError
import functions.aws.on_push, functions.aws.on_scan, functions.aws.notify
import functions.aws._settings, functions.aws._ecr
import regwarden.pipeline, regwarden.runtime, regwarden.intake.eventbridge
import regwarden.providers.ecr, regwarden.scanning.ecr, regwarden.signatures
import regwarden.signatures._from_policy, regwarden.gate._from_policy, regwarden.store
import aws_lambda_powertools.utilities.idempotency, aws_lambda_powertools.utilities.parameters
loaded = [m for m in set(sys.modules) - startup if m.split(".")[0] in ("google", "azure", "grpc")]
print(",".join(loaded) or "clean")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "clean"


def test_handler_modules_defer_the_core_and_boto3() -> None:
    """Importing a handler loads Powertools' Logger/Metrics and the batch utility only: the
    core, boto3's client machinery and the X-Ray SDK wait for the first invocation."""
    code = """
import sys
import functions.aws.on_push
heavy = ("boto3", "botocore.session", "botocore.client", "regwarden", "pydantic",
         "aws_xray_sdk", "httpx")
print(sorted(m for m in heavy if m in sys.modules))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"
