#!/usr/bin/env python3
"""Trim the shared Lambda layer after `pip install --target`, without changing what runs.

    python3 layers/shared/prune.py LAYER/python        (the Makefile runs it)

Two kinds of cut, each one safe for a reason stated beside it:
- files nothing at run time reads (`REMOVE`): type stubs, pip's install records, a C
  source, Powertools' Swagger UI assets, and PyYAML's optional C loader, which regwarden
  never uses (its importers fall back when it is absent: `OPTIONAL_MODULES`);
- debug information (DWARF) in native libraries, removed with `strip --strip-debug`:
  code, data and every symbol stay, only what a debugger reads goes.

The AWS budget is 40 MB unzipped per function (scripts/package_report.py);
tests/unit/test_aws_packaging.py proves the handlers import nothing removed here.
Standard library only: `sam build` runs this with whatever python3 the machine has.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

REMOVE: tuple[tuple[str, str], ...] = (
    (
        "yaml/_yaml.*.so",
        "PyYAML's libyaml bindings (2.85 MB): only yaml.CSafeLoader/CLoader use them; "
        "regwarden's loaders subclass the pure yaml.SafeLoader, and yaml/__init__.py "
        "imports them in a try (yaml.__with_libyaml__ becomes False)",
    ),
    ("_yaml/*", "the top-level `_yaml` shim re-exporting those bindings"),
    (
        "aws_lambda_powertools/event_handler/openapi/swagger_ui/*.js",
        "Swagger UI assets, read only by the API Gateway resolvers' enable_swagger route",
    ),
    ("aws_lambda_powertools/event_handler/openapi/swagger_ui/*.css", "the same"),
    ("*.pyi", "type stubs: the import system never loads them"),
    ("*.dist-info/RECORD", "pip's file list, read by pip uninstall, not by importlib.metadata"),
    ("*.dist-info/INSTALLER", "which installer wrote the files (pip)"),
    ("*.dist-info/REQUESTED", "whether the package was asked for by name"),
    ("wrapt/_wrappers.c", "the C source of wrapt's compiled extension"),
)
"""(glob on the path relative to the layer's `python/`, why nothing needs it). `*` also
matches `/`. METADATA, entry_points.txt, top_level.txt and licences stay: importlib.metadata
reads the first three (pydantic and wrapt look up entry points), and the licences go
wherever the code goes."""

OPTIONAL_MODULES = frozenset({"yaml._yaml", "_yaml"})
"""Modules REMOVE deletes although something imports them: each import is guarded
(`except ImportError`) and the fallback is what regwarden uses anyway."""

STRIP_TOOLS = ("llvm-strip", *(f"llvm-strip-{v}" for v in range(22, 13, -1)))
STRIP_TOOLS += ("aarch64-linux-gnu-strip",)
"""Strip tools that read arm64 ELF on any host (LLVM's is multi-target; GNU binutils'
host `strip` is not). `STRIP=...` overrides."""


def removed(relative: str) -> str | None:
    """Why `relative` (a POSIX path under the layer's `python/`) is cut, or None."""
    for pattern, why in REMOVE:
        if fnmatch.fnmatchcase(relative, pattern):
            return why
    return None


def find_strip() -> str:
    """The strip tool to use; SystemExit naming what to install when there is none."""
    if chosen := os.environ.get("STRIP"):
        return chosen
    for tool in STRIP_TOOLS:
        if found := shutil.which(tool):
            return found
    raise SystemExit(
        "prune: no strip tool that reads arm64 ELF (tried llvm-strip, "
        "aarch64-linux-gnu-strip): apt-get install llvm"
    )


def _is_elf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"\x7fELF"


@dataclass
class Pruned:
    removed_files: int = 0
    removed_bytes: int = 0
    stripped_files: int = 0
    stripped_bytes: int = 0


def prune(root: Path, *, strip: str | None) -> Pruned:
    """Cut `REMOVE` under `root`, then (with a `strip` tool) strip debug info from every
    ELF file left. Empty directories go too."""
    result = Pruned()
    files = sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink())
    for path in files:
        if removed(path.relative_to(root).as_posix()):
            result.removed_files += 1
            result.removed_bytes += path.stat().st_size
            path.unlink()
        elif strip and _is_elf(path):
            before = path.stat().st_size
            subprocess.run([strip, "--strip-debug", str(path)], check=True)
            saved = before - path.stat().st_size
            if saved > 0:
                result.stripped_files += 1
                result.stripped_bytes += saved
    for directory in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
        if not any(directory.iterdir()):
            directory.rmdir()
    return result


def main(argv: list[str]) -> int:
    if len(argv) != 1 or not Path(argv[0]).is_dir():
        print("usage: prune.py LAYER_PYTHON_DIR", file=sys.stderr)
        return 2
    done = prune(Path(argv[0]), strip=find_strip())
    print(
        f"prune: removed {done.removed_files} files ({done.removed_bytes / 1e6:.2f} MB), "
        f"stripped debug info from {done.stripped_files} libraries "
        f"({done.stripped_bytes / 1e6:.2f} MB)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
