"""Developer tooling that ships with regwarden: a real local registry and image builders.

Used by the test-suite, the benchmarks and `regwarden demo`:

    with LocalRegistry() as reg, RegistryClient(reg.host) as client:
        image = make_image(layers=2, labels={"team": "payments"})
        digest = push_image(client, "payments/api", image, tag="v1")
"""

from ._gated import GatedRegistry, gated_registry, serve_in_thread
from ._layout import (
    DEFAULT_PLATFORMS,
    Content,
    ImageBlobs,
    IndexBlobs,
    LayoutEntry,
    build_image,
    build_index,
    make_image,
    make_index,
    make_multiarch,
    open_layout,
    parse_platform,
    walk_layout,
    write_layout,
)
from ._push import push_image, push_layout, skopeo_copy
from ._registry import DEFAULT_BINARY, LocalRegistry, RegistryStartError, bcrypt_hash, free_port
from ._reports import Vuln, trivy_report, vuln_predicate

__all__ = [
    "DEFAULT_BINARY",
    "DEFAULT_PLATFORMS",
    "Content",
    "GatedRegistry",
    "ImageBlobs",
    "IndexBlobs",
    "LayoutEntry",
    "LocalRegistry",
    "RegistryStartError",
    "Vuln",
    "bcrypt_hash",
    "build_image",
    "build_index",
    "free_port",
    "gated_registry",
    "make_image",
    "make_index",
    "make_multiarch",
    "open_layout",
    "parse_platform",
    "push_image",
    "push_layout",
    "serve_in_thread",
    "skopeo_copy",
    "trivy_report",
    "vuln_predicate",
    "walk_layout",
    "write_layout",
]
