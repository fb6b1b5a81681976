"""What a deployed function can import, for the cold-start bench.

In Lambda, `on_push` finds only the shared layer (`layers/shared/requirements.txt` and
what those pull in, plus regwarden's source) and what the python3.12 runtime ships (boto3
and its dependencies). This venv holds more: the CLI's typer and rich (with click and
pygments), moto, pytest. Some libraries import optional companions when they are present
(httpx imports its command-line client, `httpx._main`, which loads rich, click and
pygments: ~65 ms that Lambda never pays), so the bench's children hide every installed
package the function would not find, and both sides import what a deployed function would.
"""

from __future__ import annotations

import importlib.metadata as metadata
import re
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
LAYER_REQUIREMENTS = ROOT / "layers" / "shared" / "requirements.txt"
RUNTIME_PROVIDED = ("boto3",)
"""The Lambda python runtime's own packages (with their dependencies)."""
COPIED = ("regwarden",)
"""Copied into the layer as source, without its distribution's dependencies (the CLI's)."""


def _layer_requirements() -> list[str]:
    lines = LAYER_REQUIREMENTS.read_text(encoding="utf-8").splitlines()
    found = [re.sub(r"\s+#.*$", "", line).strip() for line in lines]
    return [line for line in found if line and not line.startswith("#")]


def shipped() -> set[str]:
    """Canonical names of the distributions a deployed function can import: the layer's
    requirements and the runtime's packages, with their dependencies (extras left out,
    as pip installs them), and regwarden."""
    todo = [Requirement(text) for text in [*_layer_requirements(), *RUNTIME_PROVIDED]]
    found: set[str] = {canonicalize_name(name) for name in COPIED}
    while todo:
        requirement = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in found:
            continue
        found.add(name)
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue  # not installed here: nothing of it to hide either
        for text in requires:
            needed = Requirement(text)
            if needed.marker is None or needed.marker.evaluate({"extra": ""}):
                todo.append(needed)
    return found


def hidden() -> list[str]:
    """Top-level import names installed in this environment that only distributions a
    deployed function would not have provide."""
    keep = shipped()
    return sorted(
        module
        for module, dists in metadata.packages_distributions().items()
        if not any(canonicalize_name(d) in keep for d in dists)
    )
