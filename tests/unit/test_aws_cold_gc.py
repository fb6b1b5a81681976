"""The AWS functions pause the garbage collector for a Lambda cold start only: from the
package import to the first state build (which succeeds or fails), then freeze what the
cold start made and resume; a rebuilt state unfreezes it. Each case runs in a fresh
interpreter (the package's import decides)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import gc
import functions.aws
from functions.aws._app import ColdStart

class Warm:
    ttl = 0.0
    def stale(self):
        return True

def failing(function):
    raise RuntimeError("policy unreadable")

print("paused", not gc.isenabled())
try:
    ColdStart(failing, lambda st: None).get("on_push")
except RuntimeError:
    pass
print("resumed", gc.isenabled(), gc.get_freeze_count() > 0)
states = ColdStart(lambda function: Warm(), lambda st: None)
states.get("on_push")
print("still frozen", gc.get_freeze_count() > 0)
states.refresh("on_push")  # ttl 0 and stale: rebuilt
print("unfrozen", gc.get_freeze_count() == 0, gc.isenabled())
"""


def probe(**env: str) -> list[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_LAMBDA_")}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PROBE)],
        cwd=ROOT,
        env={**base, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.splitlines()


def test_a_lambda_cold_start_pauses_the_collector_until_its_first_build() -> None:
    assert probe(AWS_LAMBDA_FUNCTION_NAME="regwarden-on_push") == [
        "paused True",
        "resumed True True",
        "still frozen True",
        "unfrozen True True",
    ]


def test_outside_lambda_the_collector_is_left_alone() -> None:
    assert probe() == [
        "paused False",
        "resumed True False",
        "still frozen False",
        "unfrozen True True",
    ]
