"""Registry events in, `regwarden.model.ImageEvent` out: one parser per event source.

Pure functions over the request body (no I/O, no clock). Malformed or unknown input
raises `regwarden.errors.IntakeError` naming the field and where; nothing else escapes.

- `parse_distribution` / `parse_distribution_batch`: CNCF distribution notifications
- `parse_harbor` / `parse_harbor_results`: Harbor webhooks (default JSON and CloudEvents)
- `PARSERS`: event source name → `EventParser` (parse a delivery, detect a document, whether
  the webhook receiver takes it, its handshake): `distribution`, `harbor`, `eventbridge`, `gcr`,
  `eventgrid` (ACR via Event Grid: `intake._eventgrid`)
- `gcr_events` / `parse_gcr`: Artifact Registry's `gcr` Pub/Sub messages; the delivery
  (push body, binary or structured CloudEvent) is decoded by `intake.pubsub.decode_pubsub`
- `signature_subject`, `manifest_subject`: tell signature/attestation/referrer pushes apart
- `host_allowed`, `check_event_hosts`, `normalize_host`: the registry hosts an event may name
- `check_content_type`, `registry_host`, `repository_name`, `digest_at`, `tag_at`,
  `valid_host`, `valid_repository`, `MANIFEST_TYPES`: the field readers the parsers share
  (also `regwarden.access`'s access-event parsers)
- `is_self_write`, `ignore_reason`: which events regwarden ignores (its own writes, the
  quarantine repository, `quarantined-*` tags: `regwarden.quarantine_names` says which)
"""

from ._classify import Classified, ManifestRole, classify_manifest
from ._common import (
    REPOSITORY_EXPECTED,
    check_content_type,
    check_registry,
    digest_at,
    registry_host,
    repository_name,
    tag_at,
    valid_host,
    valid_repository,
)
from ._distribution import CONTENT_TYPES as DISTRIBUTION_CONTENT_TYPES
from ._distribution import (
    DISTRIBUTION_ACTIONS,
    MANIFEST_TYPES,
    distribution_events,
    parse_distribution,
    parse_distribution_batch,
)
from ._filters import ignore_reason, is_self_write
from ._gcr import gcr_events, is_occurrence_delivery, parse_gcr
from ._harbor import CONTENT_TYPES as HARBOR_CONTENT_TYPES
from ._harbor import (
    harbor_delivery_id,
    harbor_host,
    harbor_repository,
    parse_harbor,
    parse_harbor_results,
)
from ._hosts import (
    allowed_host_set,
    check_event_hosts,
    host_allowed,
    host_not_allowed,
    normalize_host,
    parse_host,
)
from ._parsers import PARSERS, EventParser, Handshake, HandshakeCheck
from ._result import IntakeBatch, IntakeResult
from ._signatures import manifest_subject, signature_subject

__all__ = [
    "DISTRIBUTION_ACTIONS",
    "DISTRIBUTION_CONTENT_TYPES",
    "HARBOR_CONTENT_TYPES",
    "MANIFEST_TYPES",
    "PARSERS",
    "REPOSITORY_EXPECTED",
    "Classified",
    "EventParser",
    "Handshake",
    "HandshakeCheck",
    "IntakeBatch",
    "IntakeResult",
    "ManifestRole",
    "allowed_host_set",
    "check_content_type",
    "check_event_hosts",
    "check_registry",
    "classify_manifest",
    "digest_at",
    "distribution_events",
    "gcr_events",
    "harbor_delivery_id",
    "harbor_host",
    "harbor_repository",
    "host_allowed",
    "host_not_allowed",
    "ignore_reason",
    "is_occurrence_delivery",
    "is_self_write",
    "manifest_subject",
    "normalize_host",
    "parse_distribution",
    "parse_distribution_batch",
    "parse_gcr",
    "parse_harbor",
    "parse_harbor_results",
    "parse_host",
    "registry_host",
    "repository_name",
    "signature_subject",
    "tag_at",
    "valid_host",
    "valid_repository",
]
