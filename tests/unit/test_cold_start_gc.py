"""The AWS and GCP functions pause the garbage collector for a cold start on their
platform only (Lambda; Cloud Run): from the package import to the first state build (which
succeeds or fails), then freeze what the cold start made and resume; a rebuilt state
unfreezes it. The Azure gate functions (on a Function App) resume at the end of the first
invocation instead: their clients are made during the first event. Each case runs in a
fresh interpreter (the package's import decides)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import gc
from functions.{adapter} import COLLECTOR
ColdStart = COLLECTOR.cold_start

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


PLATFORMS = {"aws": "AWS_LAMBDA_FUNCTION_NAME", "gcp": "K_SERVICE"}


def probe(adapter: str, **env: str) -> list[str]:
    base = {k: v for k, v in os.environ.items() if k not in PLATFORMS.values()}
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(PROBE).format(adapter=adapter)],
        cwd=ROOT,
        env={**base, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout.splitlines()


@pytest.mark.parametrize("adapter", sorted(PLATFORMS))
def test_a_cold_start_on_the_platform_pauses_the_collector_until_its_first_build(
    adapter: str,
) -> None:
    assert probe(adapter, **{PLATFORMS[adapter]: "regwarden-on-push"}) == [
        "paused True",
        "resumed True True",
        "still frozen True",
        "unfrozen True True",
    ]


@pytest.mark.parametrize("adapter", sorted(PLATFORMS))
def test_off_the_platform_the_collector_is_left_alone(adapter: str) -> None:
    assert probe(adapter) == [
        "paused False",
        "resumed True False",
        "still frozen False",
        "unfrozen True True",
    ]


AZURE_PROBE = """
import gc
from functions.azure import COLLECTOR, _app

class Warm:
    ttl = 0.0
    def stale(self):
        return False

def failing(function):
    raise RuntimeError("policy unreadable")

print("paused", not gc.isenabled())
_app._STATES = COLLECTOR.cold_start({build}, lambda st: None, resume_when_built=False)
_app.state("on_push")  if {built} else None
print("built", not gc.isenabled())
try:
    _app.run("on_push", lambda st: "ok")
except RuntimeError:
    pass
print("resumed", gc.isenabled(), gc.get_freeze_count() > 0)
"""


@pytest.mark.parametrize(("build", "built"), [("lambda f: Warm()", True), ("failing", False)])
def test_on_a_function_app_the_collector_waits_for_the_first_invocation_s_end(
    build: str, built: bool
) -> None:
    """Paused from the import through the first state build to the end of the first
    invocation (handled or failed), then frozen and resumed."""
    base = {k: v for k, v in os.environ.items() if k != "WEBSITE_INSTANCE_ID"}
    code = textwrap.dedent(AZURE_PROBE).format(build=build, built=built)
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**base, "PYTHONPATH": os.pathsep.join([str(ROOT / "shared"), str(ROOT)])}
        | {"WEBSITE_INSTANCE_ID": "0123abcd"},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.splitlines() == ["paused True", "built True", "resumed True True"]


@pytest.mark.parametrize(("given", "expected"), [(None, "__all__"), ("", "")])
def test_the_azure_functions_skip_pydantic_s_plugin_scan_unless_the_app_sets_it(
    given: str | None, expected: str
) -> None:
    """No plugin is installed in the bundle: the first model's scan of every distribution's
    entry points is skipped, unless an app setting says otherwise."""
    base = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    code = (
        "import os, functions.azure\n"
        "from pydantic.plugin import _loader\n"
        "print(repr(os.environ['PYDANTIC_DISABLE_PLUGINS']), list(_loader.get_plugins()) == [])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={**base, "PYTHONPATH": os.pathsep.join([str(ROOT / "shared"), str(ROOT)])}
        | ({} if given is None else {"PYDANTIC_DISABLE_PLUGINS": given}),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert done.stdout.split() == [repr(expected), "True"]
