"""Access monitoring (issue #16): pulls and pushes as a third event stream.

Parsers (pure, one per source; each returns `list[AccessEvent]` and raises
`regwarden.errors.IntakeError` naming the path of what is malformed):

- `parse_distribution_access`: CNCF distribution notifications (manifest pulls and pushes)
- `parse_harbor_access`: Harbor `PULL_ARTIFACT` / `PUSH_ARTIFACT`, default and CloudEvents
- `parse_cloudtrail_access` / `parse_cloudtrail_access_body`: ECR `BatchGetImage` /
  `PutImage` through CloudTrail on EventBridge (the event, or the SQS body holding it)
- `parse_gcp_audit_access`: Artifact Registry Data Access audit logs (prepared: no trigger)
- `parse_acr_diagnostics_access`: ACR `ContainerRegistryRepositoryEvents` through Event
  Hubs (prepared: no trigger)

Evaluation (pure): `AccessRules.of(policy_section)` compiles a repository's `access`
section; `evaluate(event, rules, state, now)` → `AccessFinding`s; `access_alert` /
`summary_alert` build the alerts (kind `access`, routed like verdicts with `action: access`).

The shell: `AccessMonitor` (`from_policy(policy, ledger, router, actor=...)`, then
`handle(events, now=)`, `sweep(now=)`, `flush(now=, force=)`): see `_monitor`'s docstring.

Samples of every source and shape: events/access/.
"""

from ._evaluate import AccessRules, access_alert, evaluate, principal_glob, summary_alert
from ._model import SOURCES, AccessAction, AccessEvent, AccessFinding, DigestState, FindingKind
from ._monitor import AccessMonitor, AccessResult, ChannelRouter, rate_key, window_key
from ._parse_acr import parse_acr_diagnostics_access
from ._parse_cloudtrail import parse_cloudtrail_access, parse_cloudtrail_access_body
from ._parse_distribution import parse_distribution_access
from ._parse_gcp import parse_gcp_audit_access
from ._parse_harbor import parse_harbor_access

__all__ = [
    "SOURCES",
    "AccessAction",
    "AccessEvent",
    "AccessFinding",
    "AccessMonitor",
    "AccessResult",
    "AccessRules",
    "ChannelRouter",
    "DigestState",
    "FindingKind",
    "access_alert",
    "evaluate",
    "parse_acr_diagnostics_access",
    "parse_cloudtrail_access",
    "parse_cloudtrail_access_body",
    "parse_distribution_access",
    "parse_gcp_audit_access",
    "parse_harbor_access",
    "principal_glob",
    "rate_key",
    "summary_alert",
    "window_key",
]
