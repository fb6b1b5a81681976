"""`regwarden policy validate|schema`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from ._render import print_json


def run_validate(file: Path, *, output: str, registry: str | None = None) -> None:
    """Structure and rules, then what regwarden would not carry out (scan sources the
    registry cannot serve or nobody reads yet, …) against `registry` or the listed ones."""
    from ..policy import validate_file

    problems = validate_file(file, support=True, registry=registry)
    if output == "json":
        print_json(
            {
                "file": str(file),
                "registry": registry,
                "valid": not problems,
                "problems": [
                    {"path": p.path, "line": p.line, "message": p.message} for p in problems
                ],
            }
        )
    elif problems:
        for p in problems:
            where = f"{file}:{p.line}" if p.line else str(file)
            print(f"{where}: {p.path}: {p.message}", file=sys.stderr)
        print(f"{file}: {len(problems)} problem(s)", file=sys.stderr)
    else:
        print(f"{file}: valid")
    if problems:
        raise typer.Exit(2)


def run_schema() -> None:
    from ..policy import policy_json_schema

    sys.stdout.write(json.dumps(policy_json_schema(), indent=2) + "\n")
