#!/usr/bin/env python3
"""Set the image infra/k8s deploys: `make k8s-image IMAGE=REGISTRY/regwarden@sha256:HEX`.

Rewrites the `images:` entry named `regwarden` at the end of a kustomization.yaml (what
`kustomize edit set image` does, without needing kustomize), keeping the file's comments.
Only a digest is accepted: a tag can be moved to other bytes after the manifests are
reviewed, a digest cannot.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

_IMAGE = re.compile(
    r"^(?P<name>[a-z0-9][a-z0-9._-]*(?::[0-9]+)?(?:/[a-z0-9][a-z0-9._-]*)+)"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?"  # a tag beside the digest is dropped
    r"@(?P<digest>sha256:[0-9a-f]{64})$"
)
_ENTRY = "regwarden"


def images_block(image: str) -> str:
    """The `images:` block naming `image`; ValueError when it is not REPOSITORY@sha256:HEX."""
    match = _IMAGE.match(image)
    if match is None:
        raise ValueError(
            f"{image!r} is not REGISTRY/REPOSITORY@sha256:<64 hex digits> (pin by digest)"
        )
    return (
        "images:\n"
        f"  - name: {_ENTRY}\n"
        f"    newName: {match['name']}\n"
        f"    digest: {match['digest']}\n"
    )


def set_image(kustomization: Path, image: str) -> None:
    text = kustomization.read_text()
    head, found, _ = text.partition("\nimages:\n")
    if not found:
        raise ValueError(f"{kustomization}: no images: block to rewrite")
    kustomization.write_text(head + "\n" + images_block(image))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: k8s_image.py KUSTOMIZATION IMAGE@sha256:HEX", file=sys.stderr)
        return 2
    try:
        set_image(Path(argv[0]), argv[1])
    except ValueError as exc:
        print(f"k8s-image: {exc}", file=sys.stderr)
        return 2
    print(f"{argv[0]}: {_ENTRY} -> {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
