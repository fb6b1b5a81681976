"""What a cloud's function bundle installs, computed from this venv's metadata: the
requirement closure of regwarden with one extra (what `pip install .[EXTRA]` brings), and
the top-level modules installed here that such a bundle would not have (the bundle tests
and the cold-start benches make them unimportable)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

__all__ = ["canonical", "closure", "not_deployed"]

ROOT = Path(__file__).resolve().parents[2]


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(extra: str) -> dict[str, str]:
    """Every installed distribution regwarden's dependencies and `extra` pull in (name →
    who asked for it first), markers evaluated for this interpreter with no extra of the
    dependencies. regwarden itself is not in it (the bundle carries its source)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    roots = [*project["dependencies"], *project["optional-dependencies"][extra]]
    env: dict[str, str] = {**default_environment(), "extra": ""}  # type: ignore[dict-item]
    found: dict[str, str] = {}
    todo = [(Requirement(r), f"regwarden[{extra}]") for r in roots]
    while todo:
        req, parent = todo.pop()
        name = canonical(req.name)
        if name in found:
            continue
        found[name] = parent
        for text in metadata.requires(req.name) or []:
            child = Requirement(text)
            if child.marker is None or child.marker.evaluate(env):
                todo.append((child, name))
    return found


def not_deployed(extra: str) -> list[str]:
    """The top-level modules of the distributions installed here that `extra`'s bundle
    lacks (a namespace such as `azure` stays while one distribution of the bundle
    provides it). An optional import of one (azure-storage-queue tries aiohttp, which
    the k8s extra brings here) must fail as it would on the platform."""
    kept = set(closure(extra)) | {"regwarden"}
    return sorted(
        top
        for top, owners in metadata.packages_distributions().items()
        if not kept & {canonical(owner) for owner in owners}
    )
