"""The handlers' Tracer is Powertools' own, built at module import (issue #12 item 8); with
tracing on (in Lambda) X-Ray patches only what the handlers call through: botocore and
httpx, not requests, sqlite3 and the dozen others Powertools' default would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CODE = """
import json, sys
import functions.aws.on_push as on_push
from aws_lambda_powertools import Tracer
from aws_xray_sdk.core import patcher
print(json.dumps({
    "tracer": type(on_push.tracer) is Tracer,
    "disabled": on_push.tracer.disabled,
    "patched": sorted(patcher._PATCHED_MODULES),
    "requests": "requests" in sys.modules,
}))
"""


def _run(**env: str) -> dict[str, object]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("POWERTOOLS_", "LAMBDA_"))}
    done = subprocess.run(
        [sys.executable, "-c", CODE],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_in_lambda_the_tracer_patches_botocore_and_httpx_only() -> None:
    traced = _run(
        LAMBDA_TASK_ROOT=str(ROOT),
        AWS_LAMBDA_FUNCTION_NAME="regwarden-on_push",
        AWS_XRAY_DAEMON_ADDRESS="127.0.0.1:2000",
        AWS_XRAY_CONTEXT_MISSING="LOG_ERROR",
    )
    assert traced == {
        "tracer": True,
        "disabled": False,
        "patched": ["botocore", "httpx"],
        "requests": False,
    }


def test_outside_lambda_or_disabled_the_tracer_patches_nothing() -> None:
    assert _run()["patched"] == [] and _run()["disabled"] is True
    off = _run(LAMBDA_TASK_ROOT=str(ROOT), POWERTOOLS_TRACE_DISABLED="true")
    assert off["patched"] == [] and off["disabled"] is True
