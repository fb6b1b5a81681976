"""The AWS bundle: the packaging check (`scripts/package_report.py`) on build trees it
must accept or refuse, the handlers' import graph without the CLI-only packages, and the
layer's trimming (`layers/shared/prune.py`): it removes nothing the handlers import and
its debug-info strip leaves native modules working."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "layers" / "shared"))

import prune  # noqa: E402
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


def test_a_function_with_its_own_layer_and_budget(tmp_path: Path) -> None:
    """A function's own layers come after the global ones (as SAM merges them), and its
    Metadata BundleLimitMb replaces the --limit-mb budget for it alone (the report)."""
    build = build_tree(
        tmp_path,
        {
            "OnPushFunction/functions/aws/on_push.py": 1_000,
            "ReportFunction/functions/aws/report.py": 1_000,
            "SharedLayer/python/pydantic/main.py": 2_000_000,
            "ReportLayer/python/matplotlib/pyplot.py": 3_000_000,
        },
    )
    (build / "template.yaml").write_text(
        TEMPLATE
        + """\
  ReportLayer:
    Type: AWS::Serverless::LayerVersion
    Properties: {ContentUri: ReportLayer}
  ReportFunction:
    Type: AWS::Serverless::Function
    Metadata: {BundleLimitMb: 6}
    Properties: {CodeUri: ReportFunction, Layers: [!Ref ReportLayer]}
"""
    )
    result = report(build, 4.0)
    function = result["functions"]["ReportFunction"]
    assert function["layers"] == ["SharedLayer", "ReportLayer"]
    assert function["total_bytes"] == 1_000 + 2_000_000 + 3_000_000
    assert function["limit_mb"] == 6.0
    assert result["functions"]["OnPushFunction"]["limit_mb"] == 4.0
    assert result["ok"]
    assert not report(build, 1.0)["ok"]  # OnPushFunction over the general budget
    (build / "template.yaml").write_text(
        (build / "template.yaml").read_text().replace("BundleLimitMb: 6", "BundleLimitMb: 4")
    )
    assert report(build, 4.0)["problems"] == ["ReportFunction: code + layers 5.00 MB > 4.0 MB"]


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
import functions.aws._settings
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
    """Importing a handler loads Powertools' Logger/Tracer/Metrics and the batch utility:
    the core, pydantic, boto3 and (tracing off) httpx wait for the first invocation.

    The X-Ray SDK (and the botocore session and client modules its sampler imports) is no
    longer in the list: issue #12 item 8 replaced the homemade lazy tracer with Powertools'
    Tracer built at module scope, whose constructor imports the SDK (Powertools has no lazy
    mode), and the cold-start bench counts X-Ray wherever it loads, so deferring it gained
    nothing."""
    code = """
import sys
import functions.aws.on_push
heavy = ("boto3", "regwarden", "pydantic", "httpx")
print(sorted(m for m in heavy if m in sys.modules))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "[]"


def test_the_access_handler_loads_no_other_clouds_sdk_and_defers_the_core() -> None:
    """on_access (issue #16): its import loads no core; what its first record and its
    state load (the access package, the ledger, the runtime's host list, the SNS channel)
    takes no CLI package and no GCP or Azure SDK."""
    code = """
import sys
startup = set(sys.modules)
for name in ("typer", "rich", "click", "pygments", "starlette", "uvicorn"):
    sys.modules[name] = None
import functions.aws.on_access
deferred = sorted(m for m in ("boto3", "regwarden", "pydantic", "httpx") if m in sys.modules)
import functions.aws._access, functions.aws._settings
import regwarden.access, regwarden.runtime, regwarden.intake.eventbridge, regwarden.notify
import regwarden.store
loaded = [m for m in set(sys.modules) - startup if m.split(".")[0] in ("google", "azure", "grpc")]
print(deferred, ",".join(loaded) or "clean")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[] clean"


# -- the layer's trimming (layers/shared/prune.py) ------------------------------------------


def test_prune_cuts_only_what_its_rules_name() -> None:
    for cut in (
        "yaml/_yaml.cpython-312-aarch64-linux-gnu.so",
        "_yaml/__init__.py",
        "cryptography/hazmat/bindings/_rust/x509.pyi",
        "httpx-0.28.1.dist-info/RECORD",
        "aws_lambda_powertools/event_handler/openapi/swagger_ui/swagger-ui-bundle.min.js",
        "wrapt/_wrappers.c",
    ):
        assert prune.removed(cut), cut
    for kept in (
        "yaml/cyaml.py",
        "yaml/__init__.py",
        "regwarden/policy/_yaml.py",  # not PyYAML's: only top-level `_yaml/` goes
        "httpx-0.28.1.dist-info/METADATA",
        "pydantic-2.11.0.dist-info/entry_points.txt",
        "pydantic-2.11.0.dist-info/licenses/LICENSE",
        "aws_lambda_powertools/event_handler/openapi/swagger_ui/html.py",
        "cbor2/_cbor2.cpython-312-aarch64-linux-gnu.so",  # cbor2 >= 6 has no pure fallback
    ):
        assert prune.removed(kept) is None, kept


def test_the_handlers_import_nothing_the_layer_build_removes(tmp_path: Path) -> None:
    """The import graph of every module in functions/aws (lazy imports in regwarden
    included), computed on the venv with only the layer's packages importable, laid out as
    files in a stand-in layer, pruned: every file is still there except the optional C
    loader, whose import is guarded."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "support" / "layer_imports.py")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    graph = json.loads(done.stdout)
    assert {"functions.aws.on_push", "functions.aws.recovery", "functions.aws.notify"} <= set(
        graph["handlers"]
    )
    modules: dict[str, str] = graph["modules"]
    for needed in (
        "aws_lambda_powertools.utilities.idempotency",
        "aws_lambda_powertools.utilities.batch",
        "rfc3161_client.verify",
        "cryptography.x509.verification",
        "pydantic_core._pydantic_core",
        "yaml.constructor",
        "cbor2",
        "httpx",
    ):
        assert needed in modules, needed
    assert not [m for m in modules if m.partition(".")[0] in ("typer", "rich", "starlette")]
    layer = tmp_path / "python"
    for relative in set(modules.values()):
        (layer / relative).parent.mkdir(parents=True, exist_ok=True)
        (layer / relative).write_bytes(b"")
    prune.prune(layer, strip=None)
    missing = {name for name, relative in modules.items() if not (layer / relative).exists()}
    # the venv has PyYAML's C loader, so its removal must show here, and be the only one
    assert missing == {"yaml._yaml"}
    assert missing <= prune.OPTIONAL_MODULES


def test_yaml_without_its_c_loader_reads_policies_the_same() -> None:
    code = """
import json, sys
if sys.argv[1] == "pure":
    sys.modules["yaml._yaml"] = None  # as in the layer: the C loader is gone
    sys.modules["_yaml"] = None
import yaml
from regwarden.policy import load_policy
assert yaml.__with_libyaml__ == (sys.argv[1] == "c"), yaml.__with_libyaml__
print(load_policy("examples/regwarden.yaml").model_dump_json())
"""
    outputs = [
        subprocess.run(
            [sys.executable, "-c", code, mode],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for mode in ("c", "pure")
    ]
    assert outputs[0] == outputs[1]
    assert json.loads(outputs[0])["kind"] == "Policy"


def test_stripping_debug_info_keeps_a_native_module_working(tmp_path: Path) -> None:
    """The same strip the layer gets, on this machine's build of PyNaCl (whose library
    carries debug info, as the arm64 one does): smaller, and it still signs and verifies."""
    import nacl

    source = Path(nacl.__file__).parent
    copy = tmp_path / "site" / "nacl"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
    [library] = copy.glob("_sodium*.so")
    before = library.stat().st_size
    done = prune.prune(tmp_path / "site", strip=prune.find_strip())
    assert done.stripped_files == 1 and done.removed_files == 0
    assert library.stat().st_size < before / 2
    code = """
import sys, nacl, nacl.signing
assert nacl.__file__.startswith(sys.argv[1]), nacl.__file__
key = nacl.signing.SigningKey.generate()
signed = key.sign(b"layer")
assert key.verify_key.verify(signed) == b"layer"
print("ok")
"""
    ran = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "site")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "ok"
