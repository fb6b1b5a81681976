"""`regwarden images REPO`."""

from __future__ import annotations

from ..providers import ListedImage, ProviderOptions, open_registry
from ._app import parse_repository
from ._render import human_size, print_json


def is_artifact(record: ListedImage) -> bool:
    """Signatures, attestations, SBOMs and referrers-tag indexes, rather than images."""
    if record.subject is not None:
        return True
    from ..intake import signature_subject  # cosign and referrers tag schemas

    return bool(record.tags) and all(signature_subject(t) for t in record.tags)


def run_images(repository: str, *, output: str, include_artifacts: bool, insecure: bool) -> None:
    host, name = parse_repository(repository)
    registry = open_registry(host, ProviderOptions(insecure=insecure))
    try:
        records = registry.list_images(name)
    finally:
        registry.close()
    if not include_artifacts:
        records = [r for r in records if not is_artifact(r)]
    if output == "json":
        print_json(
            [
                {
                    "repository": f"{host}/{r.repository}",
                    "digest": r.digest,
                    "tags": list(r.tags),
                    "size": r.size,
                    "created": r.created.isoformat() if r.created else None,
                    "mediaType": r.media_type,
                    "platforms": list(r.children),
                }
                for r in records
            ]
        )
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{host}/{name}", title_justify="left", show_edge=False)
    table.add_column("DIGEST", no_wrap=True)
    table.add_column("TAGS")
    table.add_column("SIZE", justify="right")
    table.add_column("CREATED", no_wrap=True)
    table.add_column("PLATFORMS", justify="right")
    for r in records:
        table.add_row(
            r.digest[:19],
            ", ".join(r.tags) or "<untagged>",
            human_size(r.size),
            r.created.strftime("%Y-%m-%d %H:%M:%S") if r.created else "-",
            str(len(r.children)) if r.children else "",
        )
    console = Console()
    console.print(table)
    console.print(f"{len(records)} image(s)", style="dim")
