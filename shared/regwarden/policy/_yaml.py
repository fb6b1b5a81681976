"""YAML to Python data, keeping the node tree so any error can name its line.

Only `yaml.SafeLoader` is used. On top of PyYAML this module refuses duplicate keys (PyYAML
keeps the last one silently), recursive aliases and alias bombs, documents nested deeper
than `MAX_DEPTH` (PyYAML's composer recurses once per level), and keeps timestamps as
strings so pydantic parses dates with a located error.
"""

from __future__ import annotations

from dataclasses import dataclass

import yaml
from yaml.error import Mark
from yaml.events import MappingStartEvent, SequenceStartEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..nesting import MAX_DEPTH
from ._base import Loc

__all__ = ["Document", "YamlProblem", "parse_yaml"]

#: Upper bound on the size of the document once aliases are expanded.
MAX_NODES = 100_000
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """SafeLoader that leaves timestamps as strings (pydantic parses and locates them) and
    stops composing past `MAX_DEPTH` nested collections, before Python's stack runs out."""

    _depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if not self.check_event(SequenceStartEvent, MappingStartEvent):
            return super().compose_node(parent, index)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                event = self.peek_event()  # type: ignore[no-untyped-call]
                raise _TooDeep((), event.start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _timestamp_as_text(loader: _Loader, node: Node) -> str:
    return str(loader.construct_scalar(node))  # type: ignore[arg-type]


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


@dataclass(frozen=True)
class YamlProblem:
    """A problem found while reading YAML: a document location, a line and a message."""

    loc: Loc
    line: int | None
    column: int | None
    message: str


@dataclass(frozen=True)
class Document:
    """Parsed data plus the node tree it came from."""

    data: object
    root: Node | None

    def locate(self, loc: Loc) -> tuple[Loc, int | None, int | None]:
        """Map a validation location onto the document.

        Returns the part of `loc` that exists in the document (plus a trailing missing key),
        and the 1-based line and column of the deepest matched key or item. Elements that do
        not name anything in the document (pydantic's union tags, `[key]`) are skipped.
        """
        node = self.root
        if node is None:
            return loc, None, None
        mark = node.start_mark
        found: list[str | int] = []
        for position, part in enumerate(loc):
            last = position == len(loc) - 1
            if isinstance(node, MappingNode) and isinstance(part, str):
                pair = _find_key(node, part)
                if pair is not None:
                    found.append(part)
                    mark = pair[0].start_mark
                    node = pair[1]
                elif last:
                    found.append(part)  # a missing key: point at its parent
                continue
            if isinstance(node, SequenceNode) and isinstance(part, int):
                if 0 <= part < len(node.value):
                    found.append(part)
                    node = node.value[part]
                    mark = node.start_mark
                continue
        return tuple(found), mark.line + 1, mark.column + 1


def parse_yaml(text: str) -> tuple[Document | None, list[YamlProblem]]:
    """Parse one YAML document with the safe loader.

    Returns the document, or None and the problems: syntax errors, several documents,
    duplicate keys, recursive aliases, too large an expansion.
    """
    loader = _Loader(text)
    try:
        try:
            root = loader.get_single_node()
        except _TooDeep as exc:
            return None, [_too_deep(exc)]
        except yaml.MarkedYAMLError as exc:
            return None, [_from_marked(exc)]
        except yaml.YAMLError as exc:
            return None, [YamlProblem((), None, None, f"YAML error: {exc}")]
        if root is None:
            return Document(data=None, root=None), []
        problems = _check_nodes(root)
        if problems:
            return None, problems
        try:
            data = loader.construct_document(root)
        except yaml.MarkedYAMLError as exc:
            return None, [_from_marked(exc)]
        except (yaml.YAMLError, ValueError, TypeError) as exc:
            return None, [YamlProblem((), None, None, f"YAML error: {exc}")]
        return Document(data=data, root=root), []
    finally:
        loader.dispose()


def _from_marked(exc: yaml.MarkedYAMLError) -> YamlProblem:
    mark = exc.problem_mark or exc.context_mark
    parts = [p for p in (exc.context, exc.problem) if p]
    message = "YAML syntax error: " + ("; ".join(parts) if parts else str(exc))
    if mark is None:
        return YamlProblem((), None, None, message)
    return YamlProblem((), mark.line + 1, mark.column + 1, message)


def _key_text(node: Node) -> str | None:
    return node.value if isinstance(node, ScalarNode) else None


def _find_key(mapping: MappingNode, key: str) -> tuple[Node, Node] | None:
    """The (key node, value node) for `key`, looking through `<<` merges like PyYAML."""
    merged: list[MappingNode] = []
    for key_node, value_node in mapping.value:
        if key_node.tag == _MERGE_TAG:
            if isinstance(value_node, MappingNode):
                merged.append(value_node)
            elif isinstance(value_node, SequenceNode):
                merged.extend(n for n in value_node.value if isinstance(n, MappingNode))
        elif _key_text(key_node) == key:
            return key_node, value_node
    for source in merged:
        pair = _find_key(source, key)
        if pair is not None:
            return pair
    return None


def _too_deep(exc: _TooDeep) -> YamlProblem:
    return YamlProblem(
        exc.loc,
        exc.mark.line + 1,
        exc.mark.column + 1,
        f"document nested deeper than {MAX_DEPTH} levels (the limit); "
        "expected a policy file of ordinary shape",
    )


def _check_nodes(root: Node) -> list[YamlProblem]:
    """Duplicate keys, recursive aliases, expansion size and depth (aliases may nest a
    deep node in another one); each unique node visited once."""
    problems: list[YamlProblem] = []
    sizes: dict[int, int] = {}
    heights: dict[int, int] = {}  # nested collections from a node down, aliases expanded
    active: set[int] = set()

    def size(node: Node, loc: Loc, depth: int = 0) -> int:
        ident = id(node)
        collection = isinstance(node, SequenceNode | MappingNode)
        if collection and depth + heights.get(ident, 1) > MAX_DEPTH:
            raise _TooDeep(loc, node.start_mark)
        if ident in sizes:
            return sizes[ident]
        if ident in active:
            raise _Recursive(loc, node)
        active.add(ident)
        total = 1
        below = depth + 1 if collection else depth
        if isinstance(node, SequenceNode):
            for index, item in enumerate(node.value):
                total += size(item, (*loc, index), below)
        elif isinstance(node, MappingNode):
            first: dict[tuple[str, str], Node] = {}
            for key_node, value_node in node.value:
                text = _key_text(key_node)
                if text is not None and key_node.tag != _MERGE_TAG:
                    previous = first.setdefault((key_node.tag, text), key_node)
                    if previous is not key_node:
                        problems.append(
                            YamlProblem(
                                (*loc, text),
                                key_node.start_mark.line + 1,
                                key_node.start_mark.column + 1,
                                f"duplicate key {text!r} (first on line "
                                f"{previous.start_mark.line + 1}); each key may appear once",
                            )
                        )
                child_loc: Loc = (*loc, text) if text is not None else loc
                total += size(key_node, loc, below) + size(value_node, child_loc, below)
        active.discard(ident)
        sizes[ident] = total
        if collection:
            children = [*node.value] if isinstance(node, SequenceNode) else []
            if isinstance(node, MappingNode):
                children = [n for pair in node.value for n in pair]
            heights[ident] = 1 + max((heights.get(id(c), 0) for c in children), default=0)
        if total > MAX_NODES:
            raise _TooLarge(loc, node)
        return total

    try:
        size(root, ())
    except _Recursive as exc:
        mark = exc.node.start_mark
        return [
            YamlProblem(
                exc.loc,
                mark.line + 1,
                mark.column + 1,
                "recursive alias: a node contains itself; expected a tree",
            )
        ]
    except _TooDeep as exc:
        return [_too_deep(exc)]
    except _TooLarge as exc:
        mark = exc.node.start_mark
        return [
            YamlProblem(
                exc.loc,
                mark.line + 1,
                mark.column + 1,
                f"document expands to more than {MAX_NODES} nodes (aliases); "
                "expected a policy file of ordinary size",
            )
        ]
    except RecursionError:
        return [YamlProblem((), None, None, "document nested too deeply")]
    return problems


class _Recursive(Exception):
    def __init__(self, loc: Loc, node: Node) -> None:
        self.loc = loc
        self.node = node


class _TooDeep(Exception):
    def __init__(self, loc: Loc, mark: Mark) -> None:
        self.loc = loc
        self.mark = mark


class _TooLarge(Exception):
    def __init__(self, loc: Loc, node: Node) -> None:
        self.loc = loc
        self.node = node
