"""Every module the AWS handlers can import, computed on the venv as the Lambda layer sees it.

    python tests/support/layer_imports.py      prints {module: path under site-packages}

The layer holds arm64/CPython 3.12 wheels, so its native modules do not load here. Instead
this runs on the venv with every third-party package the layer does not ship made
unimportable (the layer's requirements and their dependencies, plus boto3's, which the
runtime provides, are the ones left), imports each module of `functions/aws`, and then,
until nothing new loads, every module named by any import statement (top level or inside
a function: lazy imports too) in the regwarden and handler modules loaded so far. An
import that fails is a path the layer cannot take either. What it prints is the file of
every third-party module that got loaded, relative to its site-packages; the packaging
test checks the layer build keeps each of them.
"""

from __future__ import annotations

import ast
import importlib
import importlib.abc
import importlib.machinery
import importlib.metadata as metadata
import json
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
OURS = ("regwarden", "functions")
RUNTIME_PROVIDED = ("boto3",)
"""Distributions the python3.12 Lambda runtime has (with their dependencies)."""


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def shipped_distributions() -> set[str]:
    """The layer's requirements, the runtime's boto3, and what they depend on."""
    lines = (ROOT / "layers" / "shared" / "requirements.txt").read_text().splitlines()
    todo = [Requirement(line).name for line in lines if line.strip() and line[0] != "#"]
    todo += RUNTIME_PROVIDED
    found: set[str] = set()
    while todo:
        name = _canonical(todo.pop())
        if name in found:
            continue
        found.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue  # a dependency for another platform or Python
        for line in requires:
            req = Requirement(line)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return found


class _NotInLayer(importlib.abc.MetaPathFinder):
    """Makes installed packages the layer does not ship unimportable."""

    def __init__(self, blocked: set[str]) -> None:
        self.blocked = blocked

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] in self.blocked:
            raise ModuleNotFoundError(f"{fullname} is not in the layer", name=fullname)
        return None


def _imported_names(module: ModuleType) -> Iterator[str]:
    """Absolute module names of every import statement in `module`'s source, including
    `from x import y` as both x and x.y (y may be a submodule)."""
    source = Path(module.__file__ or "").read_text()
    package = module.__name__ if hasattr(module, "__path__") else module.__package__ or ""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names if alias.name != "*")


def _try_import(name: str) -> None:
    try:
        importlib.import_module(name)
    except ImportError:
        pass  # not in the layer, or not a module (`from x import function`)
    except Exception as exc:  # an import that breaks is the layer's problem too
        print(f"layer_imports: importing {name} raised {exc!r}", file=sys.stderr)


def main() -> int:
    sys.path.insert(0, str(ROOT))
    shipped = shipped_distributions()
    owners = metadata.packages_distributions()
    blocked = {
        top
        for top, dists in owners.items()
        if top not in OURS and not any(_canonical(d) in shipped for d in dists)
    }
    sys.meta_path.insert(0, _NotInLayer(blocked))
    before = set(sys.modules)  # site's and this script's own (packaging)
    handlers = sorted(
        f"functions.aws.{p.stem}"
        for p in (ROOT / "functions" / "aws").glob("*.py")
        if p.stem != "__init__"
    )
    for handler in handlers:
        importlib.import_module(handler)  # a handler that cannot load fails the run
    scanned: set[str] = set()
    while pending := [
        m
        for name, m in list(sys.modules.items())
        if m is not None
        and name.partition(".")[0] in OURS
        and getattr(m, "__file__", None)
        and name not in scanned
    ]:
        for module in pending:
            scanned.add(module.__name__)
            for name in _imported_names(module):
                _try_import(name)
    roots = sorted({Path(p) for p in sys.path if p.endswith("site-packages")}, key=str)
    found: dict[str, str] = {}
    for name, module in sorted(sys.modules.items()):
        file = getattr(module, "__file__", None) if module is not None else None
        if not file or name in before or name.partition(".")[0] in OURS:
            continue
        for root in roots:
            if Path(file).is_relative_to(root):
                found[name] = Path(file).relative_to(root).as_posix()
    print(json.dumps({"handlers": handlers, "modules": found}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
