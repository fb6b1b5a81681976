"""`template.yaml` as data: CloudFormation short-form intrinsics (`!Ref X`, `!GetAtt …`)
read as their long forms (`{"Ref": X}`, `{"Fn::GetAtt": …}`), for tests that check rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


class _CfnLoader(yaml.SafeLoader):
    """SafeLoader plus a constructor for every `!Tag`."""


def _intrinsic(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        return {name: loader.construct_scalar(node)}
    if isinstance(node, yaml.SequenceNode):
        return {name: loader.construct_sequence(node, deep=True)}
    return {name: loader.construct_mapping(node, deep=True)}  # type: ignore[arg-type]


_CfnLoader.add_multi_constructor("!", _intrinsic)


def template_text(path: Path = ROOT / "template.yaml") -> str:
    return path.read_text()


def load_template(path: Path = ROOT / "template.yaml") -> dict[str, Any]:
    doc: dict[str, Any] = yaml.load(template_text(path), Loader=_CfnLoader)  # noqa: S506
    return doc
