"""How deeply nested the JSON and YAML regwarden reads may be.

Nothing regwarden reads (events, policies, event files, scan reports) is nested more than a
dozen levels; a document nested hundreds deep is an attack on the recursive parsers and
walkers (Python's own `json` and PyYAML's composer end in `RecursionError`). Every parser of
outside input refuses more than `MAX_DEPTH` levels with an error naming the limit.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["MAX_DEPTH", "TooDeep", "check_depth", "loads_json"]

MAX_DEPTH = 64


class TooDeep(ValueError):
    """The document is nested deeper than the limit (a ValueError, like a JSON syntax error)."""

    def __init__(self, limit: int = MAX_DEPTH, *, what: str = "JSON") -> None:
        super().__init__(f"{what} nested deeper than {limit} levels (the limit)")
        self.limit = limit


def check_depth(value: object, *, limit: int = MAX_DEPTH) -> None:
    """Raise TooDeep when decoded JSON holds more than `limit` nested arrays or objects.
    Iterative, so the check itself never recurses."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > limit:
            raise TooDeep(limit)
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def loads_json(data: str | bytes, *, limit: int = MAX_DEPTH, **kwargs: Any) -> Any:
    """`json.loads` that refuses documents nested deeper than `limit` (TooDeep) instead of
    raising RecursionError, or handing back a value that walkers would recurse through."""
    try:
        value = json.loads(data, **kwargs)
    except RecursionError:
        raise TooDeep(limit) from None
    check_depth(value, limit=limit)
    return value
