"""The policy file (`regwarden.yaml`): models, loading with located errors, the per-repository
merge, and the JSON Schema.

    policy = load_policy("regwarden.yaml")
    effective = policy.for_repository("payments/api")
    if effective.vulnerabilities is not None: ...

See docs/policy.md for every key.
"""

from ._glob import Glob
from ._load import load_policy, load_policy_text, validate_file, validate_text
from ._location import Location, LocationScheme, resolve_file, resolve_secret, secret_env_var
from ._model import (
    API_VERSION,
    SECTIONS,
    Defaults,
    EffectiveRepositoryPolicy,
    Inventory,
    KubernetesInventory,
    Policy,
    RepositoryEntry,
)
from ._notify import (
    ActionKind,
    Channel,
    EventGridChannel,
    FileChannel,
    Notifications,
    PubSubChannel,
    Route,
    RouteMatch,
    SlackChannel,
    SnsChannel,
    StdoutChannel,
    TeamsChannel,
    WebhookChannel,
)
from ._problems import Problem
from ._schema import policy_json_schema
from ._sections import (
    Allowance,
    CosignVerifier,
    DeleteOlderThan,
    DeleteRule,
    DeleteUntagged,
    Guard,
    KeepMostRecent,
    KeepPulledWithin,
    KeepRule,
    KeepSemver,
    KeepTagMatches,
    Mode,
    NotationVerifier,
    Quarantine,
    QuarantineStrategy,
    Retention,
    SemverKeep,
    Signatures,
    Tags,
    UntaggedAge,
    Vulnerabilities,
)
from ._values import TagPattern, format_duration, is_semver_tag, parse_duration, parse_severity

__all__ = [
    "API_VERSION",
    "SECTIONS",
    "ActionKind",
    "Allowance",
    "Channel",
    "CosignVerifier",
    "Defaults",
    "DeleteOlderThan",
    "DeleteRule",
    "DeleteUntagged",
    "EffectiveRepositoryPolicy",
    "EventGridChannel",
    "FileChannel",
    "Glob",
    "Guard",
    "Inventory",
    "KeepMostRecent",
    "KeepPulledWithin",
    "KeepRule",
    "KeepSemver",
    "KeepTagMatches",
    "KubernetesInventory",
    "Location",
    "LocationScheme",
    "Mode",
    "NotationVerifier",
    "Notifications",
    "Policy",
    "Problem",
    "PubSubChannel",
    "Quarantine",
    "QuarantineStrategy",
    "RepositoryEntry",
    "Retention",
    "Route",
    "RouteMatch",
    "SemverKeep",
    "Signatures",
    "SlackChannel",
    "SnsChannel",
    "StdoutChannel",
    "TagPattern",
    "Tags",
    "TeamsChannel",
    "UntaggedAge",
    "Vulnerabilities",
    "WebhookChannel",
    "format_duration",
    "is_semver_tag",
    "load_policy",
    "load_policy_text",
    "parse_duration",
    "parse_severity",
    "policy_json_schema",
    "resolve_file",
    "resolve_secret",
    "secret_env_var",
    "validate_file",
    "validate_text",
]
