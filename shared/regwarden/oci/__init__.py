"""A focused, synchronous OCI Distribution client on httpx.

    with RegistryClient("127.0.0.1:5000") as client:
        manifest = client.get_manifest("team/app", "v1")      # digest-verified
        client.copy_image("team/app", "v1", "quarantine/team/app")

Auth follows the registry's challenge (anonymous, Basic, Bearer token service); reads retry
with backoff on 429/5xx honouring `Retry-After`; plain HTTP only for loopback hosts or
`insecure=True`. Every call has an overall deadline, every body a cap, every index tree
limits (see `RegistryClient`). Errors are the `regwarden.errors` registry family
(AuthError, NotFound, DigestMismatch, Unsupported, LimitExceeded, DeadlineExceeded,
RegistryError).
"""

from ._client import (
    DEFAULT_BLOB_DEADLINE,
    DEFAULT_DEADLINE,
    MAX_BLOB_BYTES,
    MAX_CONFIG_BYTES,
    MAX_JSON_BYTES,
    MAX_MANIFEST_BYTES,
    RegistryClient,
    is_loopback_host,
)
from ._credentials import Credentials
from ._fanout import gather, in_background, on_own_thread
from ._http import Challenge, error_summary, parse_challenges, parse_next_link
from ._media import (
    ALL_MANIFEST_TYPES,
    ANNOTATION_CREATED,
    ANNOTATION_REF_NAME,
    DOCKER_CONFIG,
    DOCKER_FOREIGN_LAYER,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    EMPTY_JSON,
    EMPTY_JSON_DIGEST,
    IMAGE_MANIFEST_TYPES,
    INDEX_TYPES,
    OCI_CONFIG,
    OCI_EMPTY,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
)
from ._models import Descriptor, Manifest, compute_digest, index_of, referrers_tag, verify_digest
from ._transport import DeadlineTransport, deadline_within
from ._tree import (
    MAX_INDEX_CHILDREN,
    MAX_INDEX_DEPTH,
    MAX_TREE_BYTES,
    IndexLimits,
    distinct_children,
    walk_index,
)

__all__ = [
    "ALL_MANIFEST_TYPES",
    "ANNOTATION_CREATED",
    "ANNOTATION_REF_NAME",
    "DEFAULT_BLOB_DEADLINE",
    "DEFAULT_DEADLINE",
    "DOCKER_CONFIG",
    "DOCKER_FOREIGN_LAYER",
    "DOCKER_LAYER_GZIP",
    "DOCKER_MANIFEST",
    "DOCKER_MANIFEST_LIST",
    "EMPTY_JSON",
    "EMPTY_JSON_DIGEST",
    "IMAGE_MANIFEST_TYPES",
    "INDEX_TYPES",
    "MAX_BLOB_BYTES",
    "MAX_CONFIG_BYTES",
    "MAX_INDEX_CHILDREN",
    "MAX_INDEX_DEPTH",
    "MAX_JSON_BYTES",
    "MAX_MANIFEST_BYTES",
    "MAX_TREE_BYTES",
    "OCI_CONFIG",
    "OCI_EMPTY",
    "OCI_INDEX",
    "OCI_LAYER",
    "OCI_LAYER_GZIP",
    "OCI_LAYER_ZSTD",
    "OCI_MANIFEST",
    "Challenge",
    "Credentials",
    "DeadlineTransport",
    "Descriptor",
    "IndexLimits",
    "Manifest",
    "RegistryClient",
    "compute_digest",
    "deadline_within",
    "distinct_children",
    "error_summary",
    "gather",
    "in_background",
    "index_of",
    "is_loopback_host",
    "on_own_thread",
    "parse_challenges",
    "parse_next_link",
    "referrers_tag",
    "verify_digest",
    "walk_index",
]
