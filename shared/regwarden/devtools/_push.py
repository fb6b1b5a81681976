"""Putting built images into a registry: with regwarden's own client, or with skopeo."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ..errors import RegistryError, UsageError
from ..oci import RegistryClient
from ._layout import Content, open_layout, walk_layout

SKOPEO_TIMEOUT = 180.0


def push_image(client: RegistryClient, repo: str, content: Content, tag: str | None = None) -> str:
    """Push an in-memory image or index (blobs, children, then the top manifest); return
    its digest. Stored under `tag`, or by digest only when `tag` is None."""
    for digest, data in content.blobs.items():
        client.push_blob(repo, data, digest)
    for digest, (raw, media_type) in content.manifests.items():
        if digest != content.manifest_digest:
            client.put_manifest(repo, digest, raw, media_type)
    return client.put_manifest(
        repo, tag or content.manifest_digest, content.manifest, content.media_type
    )


def push_layout(
    client: RegistryClient, directory: Path | str, repo: str, tag: str | None = None
) -> str:
    """Push the layout entry tagged `tag` (children and blobs first); return its digest.

    The registry tag is `tag`, or for tag None the layout's only entry goes by digest.
    """
    entry = open_layout(directory, tag)
    top = entry.descriptor.digest
    for digest, data, media_type in walk_layout(entry):
        if media_type is None:
            client.push_blob(repo, data, digest)
        elif digest != top:
            client.put_manifest(repo, digest, data, media_type)
        else:
            return client.put_manifest(repo, tag or digest, data, media_type)
    raise UsageError(f"OCI layout {directory}: entry {top} was never reached")  # pragma: no cover


def skopeo_copy(
    src: str,
    dst: str,
    *,
    dest_tls_verify: bool = False,
    src_tls_verify: bool = True,
    creds: tuple[str, str] | None = None,
    src_creds: tuple[str, str] | None = None,
    all_platforms: bool = True,
    preserve_digests: bool = True,
    binary: str = "skopeo",
    timeout: float = SKOPEO_TIMEOUT,
) -> str:
    """`skopeo copy SRC DST` (e.g. `oci:DIR:TAG` → `docker://HOST/REPO:TAG`); return stdout.

    Copies every platform of an index (`--multi-arch all`) and refuses to change digests
    (`--preserve-digests`) unless told otherwise. Uses `--insecure-policy`, so no
    `/etc/containers/policy.json` is needed; this is for test and demo registries.
    """
    exe = shutil.which(binary)
    if exe is None:
        raise UsageError(f"{binary} is not installed", hint="apt-get install skopeo")
    args = [exe, "--insecure-policy", "copy", "--quiet"]
    if all_platforms:
        args += ["--multi-arch", "all"]
    if preserve_digests:
        args.append("--preserve-digests")
    if dst.startswith("docker://"):
        args.append(f"--dest-tls-verify={'true' if dest_tls_verify else 'false'}")
    if src.startswith("docker://"):
        args.append(f"--src-tls-verify={'true' if src_tls_verify else 'false'}")
    if creds is not None:
        args += ["--dest-creds", f"{creds[0]}:{creds[1]}"]
    if src_creds is not None:
        args += ["--src-creds", f"{src_creds[0]}:{src_creds[1]}"]
    args += [src, dst]
    try:
        proc = subprocess.run(args, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise RegistryError(f"skopeo copy {src} {dst}: timed out after {timeout:.0f}s") from None
    if proc.returncode != 0:
        stderr = proc.stderr.decode(errors="replace").strip()
        raise RegistryError(
            f"skopeo copy {src} {dst}: exit {proc.returncode}: {stderr[-2000:]}",
        )
    return proc.stdout.decode(errors="replace")
