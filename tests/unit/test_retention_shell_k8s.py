"""infra/k8s: every manifest parses, and the pieces fit together (selectors, mounts,
service accounts, the policy in the ConfigMap, read-only RBAC covering what the inventory
lists, the CronJob invoking retention the way the CLI accepts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from regwarden.cli._app import app
from regwarden.policy import load_policy_text
from regwarden.retention import KUBERNETES_KINDS

K8S = Path(__file__).resolve().parents[2] / "infra" / "k8s"


def documents() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            assert isinstance(doc, dict), path
            docs.append(doc)
    return docs


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in documents() if d["kind"] == kind]


def one(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in by_kind(kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, (kind, name)
    return found[0]


def test_every_manifest_is_listed_by_kustomize_and_well_formed() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    kinds = set()
    for doc in documents():
        assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name")
        if doc["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
            assert doc["metadata"]["namespace"] == "regwarden", doc["metadata"]["name"]
        kinds.add(doc["kind"])
    assert kinds >= {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",
        "PodDisruptionBudget",
        "Deployment",
        "Service",
        "CronJob",
    }


def pod_specs() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for d in by_kind("Deployment"):
        out.append((d["metadata"]["name"], d["spec"]["template"]["spec"]))
    for c in by_kind("CronJob"):
        out.append((c["metadata"]["name"], c["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
    return out


@pytest.mark.parametrize("name", ["regwarden-receiver", "regwarden-retention"])
def test_pods_mount_what_they_declare_and_reference_existing_objects(name: str) -> None:
    spec = dict(pod_specs())[name]
    volumes = {v["name"]: v for v in spec["volumes"]}
    accounts = {sa["metadata"]["name"] for sa in by_kind("ServiceAccount")}
    assert spec["serviceAccountName"] in accounts
    for container in spec["containers"]:
        mounts = {m["name"] for m in container["volumeMounts"]}
        assert mounts == set(volumes), container["name"]
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        # the ledger (PostgreSQL) URL from its ConfigMap, never an env literal
        assert "REGWARDEN_LEDGER" not in {e["name"] for e in container.get("env", [])}
        refs = [e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e]
        assert [one("ConfigMap", r)["data"]["REGWARDEN_LEDGER"] for r in refs]
    config_maps = {c["metadata"]["name"] for c in by_kind("ConfigMap")}
    assert volumes["policy"]["configMap"]["name"] in config_maps
    assert volumes["db-password"]["secret"]["secretName"]  # password_file's Secret


def test_the_service_selects_the_receiver_and_the_cronjob_shares_its_ledger() -> None:
    deployment = one("Deployment", "regwarden-receiver")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = one("Service", "regwarden-receiver")
    assert service["spec"]["selector"].items() <= labels.items()
    port = deployment["spec"]["template"]["spec"]["containers"][0]["ports"][0]
    assert service["spec"]["ports"][0]["targetPort"] == port["name"]
    cron = one("CronJob", "regwarden-retention")
    specs = dict(pod_specs())
    env_from = [specs[n]["containers"][0]["envFrom"] for n in specs]
    assert env_from[0] == env_from[1]  # one ledger ConfigMap (and secret:// Secret) for both
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"


def test_the_policy_in_the_config_map_is_valid_and_reads_the_cluster() -> None:
    text = one("ConfigMap", "regwarden-policy")["data"]["regwarden.yaml"]
    policy = load_policy_text(text, source="policy-configmap.yaml", base_dir="/etc/regwarden")
    assert policy.inventory.kubernetes is not None
    assert policy.inventory.kubernetes.contexts == ()  # in-cluster
    assert policy.for_repository("team/api").retention is not None


def test_rbac_is_read_only_and_covers_every_kind_the_inventory_lists() -> None:
    role = one("ClusterRole", "regwarden-inventory-reader")
    granted: set[tuple[str, str]] = set()
    for rule in role["rules"]:
        assert set(rule["verbs"]) <= {"get", "list", "watch"}
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.add((group, resource))
    needed = set()
    for path, resource in KUBERNETES_KINDS:
        group = "" if path == "api/v1" else path.split("/")[1]
        needed.add((group, resource))
    assert needed == granted
    binding = one("ClusterRoleBinding", "regwarden-retention-inventory")
    assert binding["roleRef"]["name"] == "regwarden-inventory-reader"
    cron_spec = dict(pod_specs())["regwarden-retention"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": cron_spec["serviceAccountName"],
            "namespace": "regwarden",
        }
    ]
    receiver = one("ServiceAccount", "regwarden")
    assert receiver["automountServiceAccountToken"] is False


def test_container_args_are_commands_the_cli_accepts() -> None:
    import typer.main

    command: Any = typer.main.get_command(app)
    for name, spec in pod_specs():
        args = spec["containers"][0]["args"]
        ctx = command.make_context("regwarden", list(args), resilient_parsing=True)
        sub = command.get_command(ctx, args[0])
        assert sub is not None, name
        sub.make_context(args[0], list(args[1:]))  # raises on an unknown or malformed flag
    cron = dict(pod_specs())["regwarden-retention"]["containers"][0]["args"]
    assert cron[:2] == ["invoke", "retention"]
    assert "--yes" not in cron  # shipped as a dry run
