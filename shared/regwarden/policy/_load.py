"""Loading and validating policy files: YAML (safe loader) -> structure (pydantic) -> rules.

Every problem carries the document path and line. `load_*` raise `PolicyError`;
`validate_*` return the problems (an empty list means valid).
"""

from __future__ import annotations

import os
from pathlib import Path, PurePath

from pydantic import ValidationError

from ..errors import NotImplementedYet, PolicyError
from ._base import YAML_CONTEXT, render_path
from ._model import API_VERSION, Policy
from ._problems import Problem, problems_from_validation, problems_from_yaml
from ._yaml import parse_yaml

__all__ = ["load_policy", "load_policy_text", "validate_file", "validate_text"]

#: Policy files larger than this are refused before parsing.
MAX_BYTES = 1024 * 1024
_REMOTE = ("s3://", "gs://", "https://", "http://", "azblob://")


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Load and validate a policy file. `file://` paths work; remote sources (`s3://`,
    `gs://`, blob or `https://` URLs) raise NotImplementedYet for now."""
    local = _local_path(path)
    text = _read(local)
    return load_policy_text(text, source=str(local), base_dir=local.absolute().parent)


def load_policy_text(text: str, *, source: str, base_dir: str | PurePath) -> Policy:
    """Validate policy YAML; `base_dir` is where `file://` locations are relative to.

    Raises PolicyError whose `problems` are `(path (line N), message)` pairs.
    """
    policy, problems = _validate(text, source=source, base_dir=Path(base_dir))
    if policy is None:
        raise _policy_error(source, problems)
    return policy


def validate_text(
    text: str, *, source: str = "<text>", support: bool = False, registry: str | None = None
) -> list[Problem]:
    """Every problem in policy YAML, in line order; empty when valid.

    With `support`, a valid document is also checked for settings no code would carry out
    (`check_support`: scan sources a registry cannot serve or nobody reads yet, …), against
    `registry` when given, else the listed registries.
    """
    return _validate(text, source=source, base_dir=None, support=support, registry=registry)[1]


def validate_file(
    path: str | os.PathLike[str], *, support: bool = False, registry: str | None = None
) -> list[Problem]:
    """Every problem in a policy file, in line order; empty when valid. An unreadable file
    is one problem at `(file)`. `support` and `registry` as for `validate_text`."""
    try:
        local = _local_path(path)
        text = _read(local)
    except PolicyError as exc:
        return [Problem("(file)", None, exc.message)]
    return validate_text(text, source=str(local), support=support, registry=registry)


def _validate(
    text: str,
    *,
    source: str,
    base_dir: Path | None,
    support: bool = False,
    registry: str | None = None,
) -> tuple[Policy | None, list[Problem]]:
    document, yaml_problems = parse_yaml(text)
    if document is None:
        return None, problems_from_yaml(yaml_problems)
    if document.data is None:
        return None, [
            Problem(
                "(root)",
                None,
                f"the policy is empty; expected a mapping starting with "
                f"'apiVersion: {API_VERSION}' and 'kind: Policy'",
            )
        ]
    if not isinstance(document.data, dict):
        line = document.root.start_mark.line + 1 if document.root is not None else None
        return None, [
            Problem(
                "(root)",
                line,
                f"got a {_kind(document.data)}, expected a mapping with "
                f"'apiVersion: {API_VERSION}' and 'kind: Policy'",
            )
        ]
    try:
        policy = Policy.model_validate(
            document.data, by_alias=True, by_name=False, context=YAML_CONTEXT
        )
    except ValidationError as exc:
        return None, problems_from_validation(exc, document, Policy)
    policy.bind(source=source, base_dir=base_dir)
    if not support:
        return policy, []
    from ._support import support_locs

    problems = []
    for loc, message in support_locs(policy, registry=registry):
        found, line, column = document.locate(loc)
        problems.append(Problem(render_path(found), line, message, column))
    problems.sort(key=lambda p: (p.line is None, p.line or 0, p.column or 0, p.path))
    return (None if problems else policy), problems


def _kind(value: object) -> str:
    return "list" if isinstance(value, list) else f"{type(value).__name__} value"


def _local_path(path: str | os.PathLike[str]) -> Path:
    text = os.fspath(path)
    if text.startswith("file://"):
        return Path(text.removeprefix("file://"))
    for prefix in _REMOTE:
        if text.startswith(prefix):
            raise NotImplementedYet(
                f"loading the policy from {prefix} is not implemented yet (got {text!r}); "
                "expected a local path or file:// — download the file first"
            )
    return Path(text)


def _read(path: Path) -> str:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_BYTES + 1)
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {str(path)!r}: {exc.strerror or exc}") from None
    if len(data) > MAX_BYTES:
        raise PolicyError(
            f"policy file {str(path)!r} is larger than {MAX_BYTES} bytes; expected a small "
            "YAML file"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PolicyError(f"policy file {str(path)!r} is not UTF-8: {exc}") from None


def _policy_error(source: str, problems: list[Problem]) -> PolicyError:
    pairs = [
        (f"{p.path} (line {p.line})" if p.line is not None else p.path, p.message) for p in problems
    ]
    count = f"{len(problems)} problem" + ("" if len(problems) == 1 else "s")
    lines = "\n".join(f"  {source}:{p.line or '?'}: {p.path}: {p.message}" for p in problems)
    return PolicyError(f"invalid policy {source}: {count}\n{lines}", problems=pairs)
