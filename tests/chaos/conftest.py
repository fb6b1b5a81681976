"""Every test here is a chaos test (`-m chaos` selects them, `-m "not chaos"` skips them).

The distribution path's rig (a real registry, the kill proxy, serve as a subprocess) is
module-scoped: its trials run one after another against one serve, each in fresh
repositories, so a kill point costs one restart, not a new registry.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from regwarden.devtools import DEFAULT_BINARY

CHAOS_DIR = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if CHAOS_DIR in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.chaos)


@pytest.fixture(scope="module")
def chaos_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which(DEFAULT_BINARY) is None:
        pytest.skip(f"{DEFAULT_BINARY} is not installed (apt-get install docker-registry)")
    if shutil.which("skopeo") is None:
        pytest.skip("skopeo is not installed")
    return tmp_path_factory.mktemp("chaos")
