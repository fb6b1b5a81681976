"""`infra/gcp` (Terraform) against the code it deploys.

`terraform validate` needs the google provider from the Terraform registry, which this
machine and CI cannot reach, so every `infra/gcp/*.tf` is parsed with python-hcl2 and the
wiring is checked here: each function of design13 with the entry point `functions/gcp/main.py`
defines, its trigger (a push subscription with OIDC, a retry policy and its own dead-letter
topic, or Cloud Scheduler / Cloud Tasks), the settings each one needs (read back through the
functions' own `Settings.from_env`), the grants (no primitive role, no public member, writes
only where quarantine and promotion write), and variables, locals and secrets all declared
and used. HCL expressions are not evaluated: the few the settings hold are named exactly
below, and the grant tables are expanded the way iam.tf expands them.
"""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hcl2
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra" / "gcp"
OPTIONS = hcl2.SerializationOptions(
    with_comments=False, explicit_blocks=False, strip_string_quotes=True
)

# design13: each function and what feeds it
PUSHED = {
    "on_push": "gcr",
    "on_scan": "container-analysis-occurrences-v1",
    "notify": "regwarden-alerts",
    "recovery": "regwarden-recovery-tick",
    "retention_fanout": "regwarden-retention-tick",
    "retention_worker": "regwarden-retention-work",
    "report": "regwarden-report-tick",
}
FUNCTIONS = {*PUSHED, "recheck"}  # recheck: Cloud Tasks
GATE = {"on_push", "on_scan", "recheck"}
SCHEDULED = {"retention": "retention_fanout", "recovery": "recovery", "report": "report"}
PRIMITIVE = {"roles/owner", "roles/editor", "roles/viewer"}
PUBLIC = {"allUsers", "allAuthenticatedUsers"}


@dataclass
class Config:
    """The merged blocks of every file of a Terraform directory."""

    resources: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    data: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    variables: dict[str, dict[str, Any]] = field(default_factory=dict)
    locals: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    terraform: list[dict[str, Any]] = field(default_factory=list)
    text: str = ""

    def resource(self, kind: str, name: str) -> dict[str, Any]:
        assert (kind, name) in self.resources, f"no resource {kind}.{name}"
        return self.resources[(kind, name)]

    def of_type(self, kind: str) -> dict[str, dict[str, Any]]:
        return {n: body for (k, n), body in self.resources.items() if k == kind}


def _unique(into: dict[Any, Any], key: Any, value: Any, what: str) -> None:
    assert key not in into, f"{what} {key} declared twice"
    into[key] = value


def load(directory: Path = INFRA) -> Config:
    files = sorted(directory.glob("*.tf"))
    assert files, f"no .tf files in {directory}"
    config = Config()
    for path in files:
        text = path.read_text()
        config.text += text
        doc = hcl2.loads(text, serialization_options=OPTIONS)
        for block in doc.get("resource", []):
            for kind, named in block.items():
                for name, body in named.items():
                    _unique(config.resources, (kind, name), body, "resource")
        for block in doc.get("data", []):
            for kind, named in block.items():
                for name, body in named.items():
                    _unique(config.data, (kind, name), body, "data source")
        for block in doc.get("variable", []):
            for name, body in block.items():
                _unique(config.variables, name, body, "variable")
        for block in doc.get("output", []):
            for name, body in block.items():
                _unique(config.outputs, name, body, "output")
        for block in doc.get("locals", []):
            for name, value in block.items():
                _unique(config.locals, name, value, "local")
        config.terraform += doc.get("terraform", [])
    return config


CONFIG = load()


def strings(value: Any) -> Iterator[str]:
    """Every string in a parsed value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def block(body: dict[str, Any], name: str) -> dict[str, Any]:
    """The one nested block `name` of a resource body."""
    (inner,) = body[name]
    assert isinstance(inner, dict)
    return inner


# -- the files themselves ----------------------------------------------------------------------


def test_every_file_parses_with_the_google_provider_5_or_later() -> None:
    names = {p.name for p in INFRA.glob("*.tf")}
    assert {"versions.tf", "variables.tf", "outputs.tf", "main.tf"} <= names
    (google,) = [
        p["google"]
        for t in CONFIG.terraform
        for block_ in t.get("required_providers", [])
        for p in ([block_] if isinstance(block_, dict) else block_)
        if "google" in p
    ]
    assert google["source"] == "hashicorp/google"
    lowest = re.search(r">=\s*(\d+)\.(\d+)", google["version"])
    assert lowest is not None and int(lowest[1]) >= 5, google["version"]


def test_every_variable_is_declared_and_used_and_every_local_too() -> None:
    used_vars = set(re.findall(r"\bvar\.([A-Za-z_][A-Za-z0-9_]*)", CONFIG.text))
    assert used_vars == set(CONFIG.variables), (
        f"used, not declared: {sorted(used_vars - set(CONFIG.variables))}; "
        f"declared, not used: {sorted(set(CONFIG.variables) - used_vars)}"
    )
    used_locals = set(re.findall(r"\blocal\.([A-Za-z_][A-Za-z0-9_]*)", CONFIG.text))
    assert used_locals == set(CONFIG.locals), (
        f"used, not declared: {sorted(used_locals - set(CONFIG.locals))}; "
        f"declared, not used: {sorted(set(CONFIG.locals) - used_locals)}"
    )
    for name, body in CONFIG.variables.items():
        assert body.get("description"), f"variable {name} has no description"
        assert body.get("type"), f"variable {name} has no type"


def test_every_reference_names_a_declared_resource_or_data_source() -> None:
    kinds = {k for k, _ in CONFIG.resources} | {f"data.{k}" for k, _ in CONFIG.data}
    declared = {f"{k}.{n}" for k, n in CONFIG.resources} | {f"data.{k}.{n}" for k, n in CONFIG.data}
    pattern = r"\b((?:data\.)?google_[a-z0-9_]+)\.([a-z_][a-z0-9_]*)"
    for kind, name in set(re.findall(pattern, CONFIG.text)):
        if kind in kinds or f"{kind}.{name}" in declared:
            assert f"{kind}.{name}" in declared, f"{kind}.{name} is referenced, never declared"


# -- functions and their triggers --------------------------------------------------------------


def test_each_function_of_the_design_runs_its_entry_point_of_main_py() -> None:
    functions = CONFIG.locals["functions"]
    assert set(functions) == FUNCTIONS
    fn = CONFIG.resource("google_cloudfunctions2_function", "fn")
    assert fn["for_each"] == "${local.functions}"
    build = block(fn, "build_config")
    assert build["runtime"] == "python312"
    assert build["entry_point"] == "${each.value.entry_point}"
    source = block(block(build, "source"), "storage_source")
    assert source == {"bucket": "${var.source_bucket}", "object": "${var.source_object}"}
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    main = importlib.import_module("functions.gcp.main")
    assert set(main.__all__) == FUNCTIONS
    for name, spec in functions.items():
        assert spec["entry_point"] == name
        assert callable(getattr(main, spec["entry_point"])), name
    service = block(fn, "service_config")
    assert service["service_account_email"] == "${google_service_account.fn[each.key].email}"
    assert service["ingress_settings"] == "ALLOW_INTERNAL_ONLY"
    assert CONFIG.resource("google_service_account", "fn")["for_each"] == "${local.functions}"


def test_each_pubsub_function_has_a_push_subscription_with_oidc_retries_and_dead_letters() -> None:
    topics = CONFIG.locals["push_topics"]
    assert set(topics) == set(PUSHED)
    own = CONFIG.resource("google_pubsub_topic", "own")
    assert own["name"] == "${var.name}-${each.value}"
    name = CONFIG.variables["name"]["default"]
    for function, topic in PUSHED.items():
        ref = topics[function]
        data = re.fullmatch(r"\$\{data\.google_pubsub_topic\.([a-z_]+)\.id\}", ref)
        if data:  # Google's own topics, looked up by the name the design gives
            var = CONFIG.data[("google_pubsub_topic", data[1])]["name"]
            assert CONFIG.variables[var.removeprefix("${var.").rstrip("}")]["default"] == topic
            continue
        own_key = re.fullmatch(r"\$\{google_pubsub_topic\.own\[\"([a-z_]+)\"\]\.id\}", ref)
        assert own_key, (function, ref)
        assert f"{name}-{own['for_each'][own_key[1]]}" == topic, function

    push = CONFIG.resource("google_pubsub_subscription", "push")
    assert push["for_each"] == "${local.push_topics}"
    assert push["topic"] == "${each.value}"
    config = block(push, "push_config")
    uri = "${google_cloudfunctions2_function.fn[each.key].service_config[0].uri}"
    assert config["push_endpoint"] == uri
    oidc = block(config, "oidc_token")
    assert oidc == {
        "service_account_email": "${google_service_account.push.email}",
        "audience": uri,
    }
    dead = block(push, "dead_letter_policy")
    assert dead == {
        "dead_letter_topic": "${google_pubsub_topic.dead_letter[each.key].id}",
        "max_delivery_attempts": "${var.max_delivery_attempts}",
    }
    retry = block(push, "retry_policy")
    assert retry["minimum_backoff"] and retry["maximum_backoff"]
    # the function tells its last attempt by the same number
    assert CONFIG.locals["base_env"]["REGWARDEN_MAX_DELIVERIES"] == (
        "${tostring(var.max_delivery_attempts)}"
    )
    assert 5 <= CONFIG.variables["max_delivery_attempts"]["default"] <= 100

    # a dead-letter topic per function, a subscription keeping its letters, an alert on it
    for kind in ("google_pubsub_topic", "google_pubsub_subscription"):
        assert CONFIG.resource(kind, "dead_letter")["for_each"] == "${local.push_topics}", kind
    kept = CONFIG.resource("google_pubsub_subscription", "dead_letter")
    assert kept["topic"] == "${google_pubsub_topic.dead_letter[each.key].id}"
    assert "push_config" not in kept
    alert = CONFIG.resource("google_monitoring_alert_policy", "dead_letters")
    assert alert["for_each"] == "${local.push_topics}"
    assert "google_pubsub_subscription.dead_letter[each.key].name" in str(alert["conditions"])
    # Pub/Sub's service agent may dead-letter: publish there, acknowledge the source
    publisher = CONFIG.resource("google_pubsub_topic_iam_member", "dead_letter_publisher")
    assert publisher["for_each"] == "${local.push_topics}"
    assert publisher["topic"] == "${google_pubsub_topic.dead_letter[each.key].id}"
    assert (publisher["role"], publisher["member"]) == (
        "roles/pubsub.publisher",
        "${local.pubsub_agent}",
    )
    subscriber = CONFIG.resource("google_pubsub_subscription_iam_member", "dead_letter_subscriber")
    assert subscriber["for_each"] == "${local.push_topics}"
    assert subscriber["subscription"] == "${google_pubsub_subscription.push[each.key].id}"
    assert subscriber["role"] == "roles/pubsub.subscriber"
    assert "@gcp-sa-pubsub.iam.gserviceaccount.com" in CONFIG.locals["pubsub_agent"]
    # and the push identity may invoke exactly these functions
    invoker = CONFIG.resource("google_cloud_run_v2_service_iam_member", "push_invoker")
    assert invoker["for_each"] == "${local.push_topics}"
    assert invoker["name"] == "${google_cloudfunctions2_function.fn[each.key].name}"
    assert invoker["member"] == "serviceAccount:${google_service_account.push.email}"
    assert invoker["role"] == "roles/run.invoker"


def test_schedules_tick_their_functions_topics_and_rechecks_go_through_cloud_tasks() -> None:
    jobs = CONFIG.resource("google_cloud_scheduler_job", "tick")
    topics = CONFIG.locals["push_topics"]
    assert set(jobs["for_each"]) == set(SCHEDULED)
    target = block(jobs, "pubsub_target")
    assert target["topic_name"] == "${google_pubsub_topic.own[each.value.topic].id}"
    for job, function in SCHEDULED.items():
        topic = jobs["for_each"][job]["topic"]
        assert topics[function] == f'${{google_pubsub_topic.own["{topic}"].id}}', job

    queue = CONFIG.resource("google_cloud_tasks_queue", "rechecks")
    assert block(queue, "retry_config")["max_attempts"] > 1
    gate_env = CONFIG.locals["gate_env"]
    assert gate_env["REGWARDEN_TASKS_QUEUE"] == "${google_cloud_tasks_queue.rechecks.id}"
    assert gate_env["REGWARDEN_TASKS_SERVICE_ACCOUNT"] == "${google_service_account.tasks.email}"
    assert gate_env["REGWARDEN_RECHECK_URL"] == "${local.recheck_url}"
    # the recheck function's Cloud Run service: NAME-recheck (the functions' name template)
    fn = CONFIG.resource("google_cloudfunctions2_function", "fn")
    assert fn["name"] == '${var.name}-${replace(each.key, "_", "-")}'
    assert CONFIG.locals["recheck_url"].startswith("https://${var.name}-recheck-")
    invoker = CONFIG.resource("google_cloud_run_v2_service_iam_member", "tasks_invoker")
    assert invoker["name"] == '${google_cloudfunctions2_function.fn["recheck"].name}'
    assert invoker["member"] == "serviceAccount:${google_service_account.tasks.email}"
    # the gate creates tasks as the tasks identity (actAs on that account alone) on the queue
    for kind in ("google_cloud_tasks_queue_iam_member", "google_service_account_iam_member"):
        bodies = [b for b in CONFIG.of_type(kind).values() if b.get("for_each")]
        assert any(b["for_each"] == "${toset(local.gate_functions)}" for b in bodies), kind
    assert set(CONFIG.locals["gate_functions"]) == GATE
    act_as = CONFIG.resource("google_service_account_iam_member", "tasks_act_as")
    assert act_as["service_account_id"] == "${google_service_account.tasks.name}"
    enqueuer = CONFIG.resource("google_cloud_tasks_queue_iam_member", "enqueuer")
    assert enqueuer["role"] == "roles/cloudtasks.enqueuer"


# -- settings ----------------------------------------------------------------------------------

TEST_VARS: dict[str, Any] = {
    "project": "demo-proj",
    "repositories": ["apps", "base"],
    "source_bucket": "b",
    "source_object": "regwarden-gcp.zip",
}
PROJECT_NUMBER = "123456789012"


def variable(name: str) -> Any:
    if name in TEST_VARS:
        return TEST_VARS[name]
    assert "default" in CONFIG.variables[name], f"variable {name} needs a test value"
    return CONFIG.variables[name]["default"]


def own_topic(key: str) -> str:
    topic = CONFIG.resource("google_pubsub_topic", "own")["for_each"][key]
    return f"projects/{variable('project')}/topics/{variable('name')}-{topic}"


def reference(expr: str) -> str:
    """The value an interpolated expression of the settings takes with TEST_VARS; an
    expression not listed here fails the test (name its value below)."""
    project, name = variable("project"), variable("name")
    if m := re.fullmatch(r"var\.([a-z_]+)", expr):
        return str(variable(m[1]))
    if m := re.fullmatch(r"tostring\(var\.([a-z_]+)\)", expr):
        return str(variable(m[1]))
    if m := re.fullmatch(r"local\.([a-z_]+)", expr):
        value = CONFIG.locals[m[1]]
        assert isinstance(value, str), expr
        return interpolate(value)
    if m := re.fullmatch(r'google_pubsub_topic\.own\["([a-z_]+)"\]\.id', expr):
        return own_topic(m[1])
    repositories = variable("repositories")
    known = {
        "data.google_project.this.number": PROJECT_NUMBER,
        "google_firestore_database.ledger.name": variable("firestore_database"),
        "google_cloud_tasks_queue.rechecks.id": (
            f"projects/{project}/locations/{variable('region')}/queues/{name}-rechecks"
        ),
        "google_service_account.tasks.email": f"{name}-tasks@{project}.iam.gserviceaccount.com",
        "google_storage_bucket.reports.name": f"{project}-{name}-reports",
        'join(",", concat([local.registry_host], var.extra_registry_hosts))': ",".join(
            [interpolate(CONFIG.locals["registry_host"]), *variable("extra_registry_hosts")]
        ),
        # gated repositories and their quarantine copies (PROJECT/QUARANTINE/PROJECT/REPO/)
        'join(",", concat([for r in var.repositories : "${var.project}/${r}/"], '
        '[for r in var.repositories : "${var.project}/${var.quarantine_repository}/'
        '${var.project}/${r}/"]))': ",".join(
            [f"{project}/{r}/" for r in repositories]
            + [
                f"{project}/{variable('quarantine_repository')}/{project}/{r}/"
                for r in repositories
            ]
        ),
    }
    assert expr in known, f"no test value for the expression {expr!r}"
    return known[expr]


def _closing(text: str, start: int) -> int:
    """The index of the `}` closing the `${` at `start`."""
    depth = 0
    for i in range(start + 1, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return i
    raise AssertionError(f"unbalanced interpolation in {text!r}")


def interpolate(value: Any) -> str:
    """A template's value: literal text, and each `${...}` through `reference`."""
    text, out, at = str(value), [], 0
    while (start := text.find("${", at)) >= 0:
        end = _closing(text, start)
        out += [text[at:start], reference(text[start + 2 : end])]
        at = end + 1
    return "".join([*out, text[at:]])


def resolve_env(value: str) -> dict[str, Any]:
    """`${local.X}` or `${merge(local.A, local.B, ...)}` of literal maps."""
    if m := re.fullmatch(r"\$\{local\.([a-z_]+)\}", value):
        found = CONFIG.locals[m[1]]
        assert isinstance(found, dict), value
        return found
    m = re.fullmatch(r"\$\{merge\(((?:local\.[a-z_]+(?:, )?)+)\)\}", value)
    assert m, f"environment {value!r}: write it as local.X or merge(local.A, local.B)"
    merged: dict[str, Any] = {}
    for part in m[1].split(", "):
        merged |= resolve_env("${" + part + "}")
    return merged


def function_env(function: str) -> dict[str, Any]:
    fn = CONFIG.resource("google_cloudfunctions2_function", "fn")
    expr = block(fn, "service_config")["environment_variables"]
    assert expr == "${merge(local.base_env, local.function_env[each.key])}"
    per_function = CONFIG.locals["function_env"]
    assert set(per_function) == FUNCTIONS
    return CONFIG.locals["base_env"] | resolve_env(per_function[function])


NEEDS = {
    "on_push": {"REGWARDEN_ALERTS_TOPIC", "REGWARDEN_TASKS_QUEUE", "REGWARDEN_RECHECK_URL"},
    "on_scan": {"REGWARDEN_ALERTS_TOPIC", "REGWARDEN_TASKS_QUEUE", "REGWARDEN_RECHECK_URL"},
    "recheck": {"REGWARDEN_ALERTS_TOPIC", "REGWARDEN_TASKS_QUEUE", "REGWARDEN_RECHECK_URL"},
    "notify": {"REGWARDEN_ALERTS_TOPIC"},  # to skip the loop back to it
    "recovery": {"REGWARDEN_ALERTS_TOPIC", "REGWARDEN_RECOVERY_SETTLE"},
    "retention_fanout": {"REGWARDEN_RETENTION_TOPIC", "REGWARDEN_RETENTION_REGISTRY"},
    "retention_worker": {"REGWARDEN_ALERTS_TOPIC", "REGWARDEN_RETENTION_REGISTRY"},
    "report": {"REGWARDEN_REPORT_REGISTRY", "REGWARDEN_REPORT_BUCKET", "REGWARDEN_REPORT_PREFIXES"},
}
EVERYONE = {
    "GOOGLE_CLOUD_PROJECT",
    "REGWARDEN_POLICY",
    "REGWARDEN_LEDGER",
    "REGWARDEN_ALLOWED_HOSTS",
    "REGWARDEN_MAX_DELIVERIES",
}


@pytest.mark.parametrize("function", sorted(FUNCTIONS))
def test_each_function_gets_the_settings_it_reads(function: str) -> None:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from functions.gcp._settings import RetentionSettings, Settings
    from regwarden.store import open_ledger

    raw = function_env(function)
    assert EVERYONE | NEEDS[function] <= set(raw), sorted(EVERYONE | NEEDS[function] - set(raw))
    env = {k: interpolate(v) for k, v in raw.items()}
    settings = Settings.from_env(env)
    project = variable("project")
    assert settings.project == project
    assert settings.policy == variable("policy")
    assert settings.max_deliveries == variable("max_delivery_attempts")
    assert "us-docker.pkg.dev" in settings.allowed_hosts
    ledger = open_ledger(settings.ledger)  # contacts nothing
    assert (ledger.project, ledger.database) == (project, variable("firestore_database"))
    if function in GATE:
        assert settings.rechecks, "rechecks need queue, URL and service account together"
        assert settings.alerts_topic == own_topic("alerts")
        assert settings.recheck_url == (
            f"https://{variable('name')}-recheck-{PROJECT_NUMBER}.{variable('region')}.run.app"
        )
    else:
        assert not settings.rechecks
    if function in {"recovery", "retention_worker", "notify"}:
        assert settings.alerts_topic == own_topic("alerts")
    if function == "recovery":
        gate_timeout = CONFIG.locals["functions"]["on_push"]["timeout"]
        assert settings.recovery_settle > gate_timeout
    if function == "report":
        from functions.gcp._report import ReportSettings

        report = ReportSettings.from_env(env)
        assert report.registry == "us-docker.pkg.dev"
        bucket = CONFIG.resource("google_storage_bucket", "reports")
        assert report.bucket == interpolate(bucket["name"])
        assert report.prefix == CONFIG.locals["report_prefix"] == "reports/"
        project = variable("project")
        assert f"{project}/apps/" in report.repositories
        assert f"{project}/{variable('quarantine_repository')}/{project}/apps/" in (
            report.repositories
        )
    if function.startswith("retention_"):
        retention = RetentionSettings.from_env(env)
        assert retention.registry == "us-docker.pkg.dev"
        assert retention.mode == "plan" == variable("retention_mode")
        timeout = CONFIG.locals["functions"][function]["timeout"]
        if function == "retention_worker":
            assert retention.budget + 30 <= timeout
        else:
            assert settings.retention_topic == own_topic("retention_work")


def test_ledger_ttl_policies_cover_every_expiring_collection() -> None:
    from regwarden.store._firestore import EXPIRING, TTL_FIELD, collection_names

    prefix = variable("ledger_prefix")
    names = collection_names(prefix)
    fields: dict[str, dict[str, Any]] = {}
    for key in ("ttl_listed", "ttl_unlisted"):
        body = CONFIG.resource("google_firestore_field", key)
        assert body["field"] == TTL_FIELD
        assert body["ttl_config"] == [{}]
        assert body["database"] == "${google_firestore_database.ledger.name}"
        collection = body["collection"].replace("${var.ledger_prefix}", prefix)
        for kind in re.findall(r'"([a-z_]+)"', body["for_each"]):
            fields[collection.replace("${each.key}", kind)] = block(body, "index_config")
    assert set(fields) == {names[k] for k in EXPIRING}
    # expire_deliveries lists deliveries and outcomes by `expireAt <= now`: keep that index
    for kind in ("deliveries", "outcomes"):
        assert {"order": "ASCENDING", "query_scope": "COLLECTION"} in fields[names[kind]]["indexes"]


# -- IAM -----------------------------------------------------------------------------------------

IAM_TYPES = re.compile(r"google_\w+_iam_(member|binding|policy)")


def test_no_primitive_role_no_public_member_no_authoritative_binding() -> None:
    everything = list(strings([CONFIG.resources, CONFIG.locals]))
    assert not [s for s in everything if s in PRIMITIVE]
    assert not [s for s in everything if any(p in s for p in PUBLIC)]
    for (kind, name), body in CONFIG.resources.items():
        if not IAM_TYPES.fullmatch(kind):
            continue
        # _binding and _policy would replace the resource's other members
        assert kind.endswith("_iam_member"), f"{kind}.{name} is authoritative"
        role = body["role"]
        literal = role.startswith("roles/")
        looked_up = re.fullmatch(r"\$\{local\.(\w+_roles)\[each\.value\.grant\]\}", role)
        assert literal or looked_up, f"{kind}.{name}: role {role!r}"
        if looked_up:
            for granted in CONFIG.locals[looked_up[1]].values():
                assert granted.startswith(("roles/", "${google_project_iam_custom_role.")), granted
        member = body["member"].replace("${local.pubsub_agent}", CONFIG.locals["pubsub_agent"])
        assert member.startswith("serviceAccount:"), f"{kind}.{name}: {member}"
    for name, role in CONFIG.of_type("google_project_iam_custom_role").items():
        assert not any("*" in p for p in role["permissions"]), name
    deleter = CONFIG.resource("google_project_iam_custom_role", "artifact_deleter")
    assert set(deleter["permissions"]) == {
        "artifactregistry.tags.delete",
        "artifactregistry.versions.delete",
    }
    lister = CONFIG.resource("google_project_iam_custom_role", "repository_lister")
    assert set(lister["permissions"]) == {
        "artifactregistry.packages.list",
        "artifactregistry.repositories.list",
    }


def repository_grants(actions: list[str]) -> set[tuple[str, str, str]]:
    """iam.tf's repository_access expanded for `actions` (function, repository set, grant)."""
    rows = CONFIG.locals["repository_access"]
    expansion = CONFIG.locals["repository_grants"]
    assert "local.repository_access" in expansion and "var.quarantine_actions" in expansion
    return {
        (who, row["where"], row["grant"])
        for row in rows
        if not row["when"] or set(row["when"]) & set(actions)
        for who in row["who"]
    }


@pytest.mark.parametrize("actions", [[], ["retag"], ["move"], ["retag", "move"]])
def test_images_are_written_only_where_quarantine_and_promotion_write(actions: list[str]) -> None:
    grants = repository_grants(actions)
    sets = CONFIG.locals["repository_sets"]
    assert sets == {
        "gated": "${var.repositories}",
        "quarantine": ["${var.quarantine_repository}"],
        "promotion": "${var.promotion_repositories}",
    }
    writers = {(f, where) for f, where, g in grants if g == "writer"}
    deleters = {(f, where) for f, where, g in grants if g == "deleter"}
    quarantiners = GATE | {"recovery"}
    expected_writers = {(f, "promotion") for f in GATE}
    if actions:  # retag tags, and either action rolls a moved tag back
        expected_writers |= {(f, "gated") for f in quarantiners}
    if "move" in actions:
        expected_writers |= {(f, "quarantine") for f in quarantiners}
    assert writers == expected_writers
    expected_deleters = {("retention_worker", "gated"), ("retention_worker", "quarantine")}
    if actions:
        expected_deleters |= {(f, "gated") for f in quarantiners}
    assert deleters == expected_deleters
    readers = {f for f, _, g in grants if g == "reader"}
    assert readers == quarantiners | {"retention_worker", "report"}
    # the report reads the gated repositories and their quarantine copies, and writes none
    assert {(w, g) for f, w, g in grants if f == "report"} == {
        ("gated", "reader"),
        ("quarantine", "reader"),
    }
    # notify and the fan-out touch no image; the fan-out lists names (project_access below)
    assert not {f for f, _, _ in grants} & {"notify", "retention_fanout"}


def test_project_wide_grants_are_only_what_no_resource_narrows() -> None:
    rows = CONFIG.locals["project_access"]
    granted = {(who, row["grant"]) for row in rows for who in row["who"]}
    assert granted == {
        *((f, "occurrences") for f in GATE),
        *((f, "ledger") for f in GATE | {"notify", "recovery", "retention_worker", "report"}),
        ("retention_worker", "cloudrun"),
        ("retention_fanout", "lister"),
        ("report", "lister"),  # the report lists the repositories it reports on
    }
    assert CONFIG.locals["project_roles"]["ledger"] == "roles/datastore.user"
    member = CONFIG.resource("google_project_iam_member", "fn")
    condition = member["dynamic"][0]["condition"]
    assert 'each.value.grant == \\"ledger\\"' in condition["for_each"] or (
        'each.value.grant == "ledger"' in condition["for_each"]
    )
    assert "databases/" in condition["content"][0]["expression"]
    publishers = CONFIG.locals["topic_publishers"]
    assert publishers == {
        "alerts": ["on_push", "on_scan", "recheck", "recovery", "retention_worker"],
        "retention_work": ["retention_fanout"],
    }
    readers = CONFIG.locals["secret_access"]
    assert set(readers["policy"]) == FUNCTIONS
    assert set(readers["gate"]) == GATE
    assert readers["channel"] == ["notify"]


def test_every_secret_granted_or_read_is_declared() -> None:
    secrets = CONFIG.resource("google_secret_manager_secret", "secret")
    assert secrets["for_each"] == (
        "${toset(concat(local.policy_secret, var.gate_secrets, var.channel_secrets))}"
    )
    assert set(CONFIG.locals["secret_sets"].values()) == {
        "${local.policy_secret}",
        "${var.gate_secrets}",
        "${var.channel_secrets}",
    }
    reader = CONFIG.resource("google_secret_manager_secret_iam_member", "reader")
    assert reader["secret_id"] == "${google_secret_manager_secret.secret[each.value.secret].id}"
    assert reader["role"] == "roles/secretmanager.secretAccessor"
    # secret://NAME in REGWARDEN_POLICY is one of them, and no secret has a value here
    assert variable("policy").startswith("secret://")
    assert "trimprefix(var.policy" in CONFIG.locals["policy_secret"]
    assert not CONFIG.of_type("google_secret_manager_secret_version")
    for text in strings(CONFIG.resources):
        assert "secret_data" not in text


def test_outputs_name_the_functions_topics_and_dead_letters() -> None:
    assert {"function_urls", "alerts_topic", "topics", "dead_letter_subscriptions"} <= set(
        CONFIG.outputs
    )
    assert CONFIG.outputs["alerts_topic"]["value"] == '${google_pubsub_topic.own["alerts"].id}'


def test_reports_bucket_is_private_encrypted_and_expires_old_reports() -> None:
    bucket = CONFIG.resource("google_storage_bucket", "reports")
    assert bucket["uniform_bucket_level_access"] is True
    assert bucket["public_access_prevention"] == "enforced"
    assert block(bucket, "encryption")["default_kms_key_name"] == "${local.kms_key}"
    assert block(bucket, "versioning")["enabled"] is True
    rules = bucket["lifecycle_rule"]
    (expire,) = [r for r in rules if "age" in block(r, "condition")]
    condition = block(expire, "condition")
    assert condition["age"] == "${var.report_retention_days}"
    assert condition["matches_prefix"] == ["${local.report_prefix}"]
    assert block(expire, "action")["type"] == "Delete"
    assert CONFIG.variables["report_retention_days"]["type"] == "number"
    # the report function: objects under the prefix only, on this bucket only
    writer = CONFIG.resource("google_storage_bucket_iam_member", "report_writer")
    assert writer["bucket"] == "${google_storage_bucket.reports.name}"
    assert writer["member"] == 'serviceAccount:${google_service_account.fn["report"].email}'
    assert writer["role"] == "roles/storage.objectUser"  # replacing a day's report deletes
    expression = block(writer, "condition")["expression"]
    assert "/objects/${local.report_prefix}" in expression and "startsWith" in expression
    assert not [
        b for b in CONFIG.of_type("google_storage_bucket_iam_member").values() if b is not writer
    ]
    # the function's settings name this bucket and prefix (test_each_function_gets_...)
    env = CONFIG.locals["report_env"]
    assert env["REGWARDEN_REPORT_BUCKET"] == "${google_storage_bucket.reports.name}"
    assert env["REGWARDEN_REPORT_PREFIX"] == "${local.report_prefix}"
    assert "report" in CONFIG.outputs["reports_bucket"]["value"]
