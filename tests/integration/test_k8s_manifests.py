"""infra/k8s for HA serve on PostgreSQL: every object validates against the Kubernetes
JSON schemas (kubernetes-validate, strict: an unknown field is an error) of the oldest
and newest Kubernetes versions the CloudNativePG release used here supports (1.30 and
1.36), the CloudNativePG Cluster against the CRD's openAPIV3Schema vendored in
tests/schemas/cloudnative-pg, and the wiring holds: readiness on /readyz at serve's own
port, 2+ replicas behind a PodDisruptionBudget of minAvailable 1, the database password
only as a Secret file named by password_file in a URL both workloads load from one
ConfigMap, the Cluster making the Service and Secrets the URL and mounts name, hardened
containers with resources, and the image set in one place (kustomize images:)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import jsonschema
import kubernetes_validate
import pytest
import yaml

from regwarden.store import parse_store_url

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "infra" / "k8s"
CNPG = K8S / "cloudnative-pg"
CRD = ROOT / "tests" / "schemas" / "cloudnative-pg" / "postgresql.cnpg.io_clusters.yaml"
KUBERNETES_VERSIONS = ["1.30.0", "1.36.0"]
DIGEST = "sha256:" + "ab" * 32


def load(directory: Path) -> list[dict[str, Any]]:
    """The objects a kustomization lists, in its order, with its images: applied."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    images = {i["name"]: i for i in kustomization.get("images", [])}
    docs: list[dict[str, Any]] = []
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((directory / resource).read_text()):
            assert isinstance(doc, dict), resource
            for container in containers(doc):
                entry = images.get(container["image"])
                if entry is not None:
                    name = entry.get("newName", container["image"])
                    tag = f"@{entry['digest']}" if "digest" in entry else ""
                    container["image"] = name + tag
            docs.append(doc)
    return docs


def pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    if doc["kind"] == "Deployment":
        spec: dict[str, Any] = doc["spec"]["template"]["spec"]
        return spec
    if doc["kind"] == "CronJob":
        spec = doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        return spec
    return None


def containers(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = pod_spec(doc)
    if spec is not None:
        yield from spec.get("initContainers", [])
        yield from spec["containers"]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and name in (None, d["metadata"]["name"])]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return load(K8S)


# -- schemas ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_object_validates_against_the_kubernetes_schemas(
    docs: list[dict[str, Any]], version: str
) -> None:
    kinds = set()
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)
        kinds.add(doc["kind"])
    assert {"Deployment", "Service", "PodDisruptionBudget", "CronJob", "ConfigMap"} <= kinds


def test_the_validator_refuses_a_misspelt_field(docs: list[dict[str, Any]]) -> None:
    deployment = one(docs, "Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def crd_schema() -> tuple[dict[str, Any], dict[str, Any]]:
    crd = yaml.safe_load(CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    return crd, version["schema"]["openAPIV3Schema"]


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the API server's strict field validation would refuse: keys an object schema
    does not declare (where it neither preserves unknown fields nor allows any)."""
    found: list[str] = []
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields", False)
        for key, item in value.items():
            if props is not None and key in props:
                found += unknown_fields(item, props[key], f"{path}.{key}")
            elif isinstance(extra, dict):
                found += unknown_fields(item, extra, f"{path}.{key}")
            elif props is not None and not preserve and extra is not True:
                found.append(f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for n, item in enumerate(value):
            found += unknown_fields(item, schema["items"], f"{path}[{n}]")
    return found


def test_the_cloudnative_pg_cluster_validates_against_the_vendored_crd() -> None:
    crd, schema = crd_schema()
    (cluster,) = load(CNPG)
    group, _, version = cluster["apiVersion"].partition("/")
    assert (group, version, cluster["kind"]) == (
        crd["spec"]["group"],
        "v1",
        crd["spec"]["names"]["kind"],
    )
    # structural schema: type, properties, required, enum, pattern… (CEL rules in
    # x-kubernetes-validations are the API server's, not checked here)
    jsonschema.Draft7Validator(schema).validate(cluster)
    assert unknown_fields(cluster, schema) == []


def test_the_crd_check_refuses_a_wrong_type_and_an_unknown_field() -> None:
    _, schema = crd_schema()
    (cluster,) = load(CNPG)
    wrong = yaml.safe_load(yaml.safe_dump(cluster))
    wrong["spec"]["instances"] = "three"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft7Validator(schema).validate(wrong)
    wrong = yaml.safe_load(yaml.safe_dump(cluster))
    wrong["spec"]["bootstrap"]["initdb"]["databse"] = "regwarden"
    assert unknown_fields(wrong, schema) == [".spec.bootstrap.initdb.databse"]


# -- wiring -------------------------------------------------------------------------------


def serve_port(container: dict[str, Any]) -> int:
    args = container["args"]
    assert args[0] == "serve"
    (port,) = [int(a.split("=", 1)[1]) for a in args if a.startswith("--port=")]
    return port


def named_port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == port]
    return int(number)


def test_receiver_is_replicated_probed_on_readyz_and_kept_up_by_a_pdb(
    docs: list[dict[str, Any]],
) -> None:
    deployment = one(docs, "Deployment", "regwarden-receiver")
    assert deployment["spec"]["replicas"] >= 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    port = serve_port(container)
    ready = container["readinessProbe"]["httpGet"]
    live = container["livenessProbe"]["httpGet"]
    assert ready["path"] == "/readyz" and named_port(container, ready["port"]) == port
    assert live["path"] == "/healthz" and named_port(container, live["port"]) == port
    # /readyz waits up to 2 s for the queue before answering 503
    assert container["readinessProbe"]["timeoutSeconds"] > 2
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1 < deployment["spec"]["replicas"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    service = one(docs, "Service", "regwarden-receiver")
    assert service["spec"]["selector"].items() <= labels.items()
    assert named_port(container, service["spec"]["ports"][0]["targetPort"]) == port


def ledger_wiring(docs: list[dict[str, Any]], doc: dict[str, Any]) -> tuple[str, Path]:
    """The ledger URL a workload's container gets, and the Secret-backed file its
    password_file names (as `secret name / key`)."""
    spec = pod_spec(doc)
    assert spec is not None
    (container,) = spec["containers"]
    for env in container.get("env", []):
        # never a literal: no URL, no password in the pod spec
        assert not env["name"].startswith(("REGWARDEN_LEDGER", "REGWARDEN_QUEUE", "PG"))
        assert "password" not in env["name"].lower()
    refs = [e["configMapRef"]["name"] for e in container["envFrom"] if "configMapRef" in e]
    (config_map,) = [one(docs, "ConfigMap", name) for name in refs]
    url = config_map["data"]["REGWARDEN_LEDGER"]
    parsed = parse_store_url(url, role="ledger")
    assert parsed.scheme == "postgresql"
    split = urlsplit(url)
    assert split.username and split.password is None  # the password is never in the URL
    assert "password" not in parsed.params
    password_file = PurePosixPath(parsed.params["password_file"])
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    (name,) = [
        n for n, m in mounts.items() if password_file.parent == PurePosixPath(m["mountPath"])
    ]
    assert mounts[name]["readOnly"] is True
    secret = volumes[name]["secret"]
    (item,) = [i for i in secret["items"] if i["path"] == password_file.name]
    assert secret["defaultMode"] & 0o007 == 0  # not readable by other users
    assert set(parsed.params) == {"password_file", "sslmode", "sslrootcert"}
    assert parsed.params["sslmode"] == "verify-full"  # encrypted, and the server checked
    ca = PurePosixPath(parsed.params["sslrootcert"])
    (ca_volume,) = [n for n, m in mounts.items() if ca.parent == PurePosixPath(m["mountPath"])]
    assert [i["path"] for i in volumes[ca_volume]["secret"]["items"]] == [ca.name]
    return url, Path(secret["secretName"]) / item["key"]


def test_the_receiver_and_the_cronjob_use_one_database_with_a_password_file(
    docs: list[dict[str, Any]],
) -> None:
    receiver = ledger_wiring(docs, one(docs, "Deployment", "regwarden-receiver"))
    retention = ledger_wiring(docs, one(docs, "CronJob", "regwarden-retention"))
    assert receiver == retention
    assert not [d for d in docs if d["kind"] == "PersistentVolumeClaim"]  # no SQLite file
    for doc in docs:  # no password, in any form, anywhere in the manifests
        text = yaml.safe_dump(doc)
        assert "password=" not in text and ":password@" not in text


def test_the_cloudnative_pg_cluster_provides_what_the_workloads_use(
    docs: list[dict[str, Any]],
) -> None:
    (cluster,) = load(CNPG)
    url, password = ledger_wiring(docs, one(docs, "Deployment", "regwarden-receiver"))
    split = urlsplit(url)
    name = cluster["metadata"]["name"]
    namespace = cluster["metadata"]["namespace"]
    # CloudNativePG's read-write Service for the primary, and its Secrets
    assert split.hostname == f"{name}-rw.{namespace}.svc"
    assert namespace == one(docs, "Namespace")["metadata"]["name"]
    initdb = cluster["spec"]["bootstrap"]["initdb"]
    assert split.path == "/" + initdb["database"] and split.username == initdb["owner"]
    assert password == Path(f"{name}-app") / "password"
    spec = pod_spec(one(docs, "Deployment", "regwarden-receiver"))
    assert spec is not None
    ca = [v["secret"]["secretName"] for v in spec["volumes"] if v["name"] == "db-ca"]
    assert ca == [f"{name}-ca"]
    assert cluster["spec"]["instances"] >= 2  # a standby to fail over to


@pytest.mark.parametrize("name", ["regwarden-receiver", "regwarden-retention"])
def test_containers_are_hardened_and_sized(docs: list[dict[str, Any]], name: str) -> None:
    (doc,) = [d for d in docs if pod_spec(d) is not None and d["metadata"]["name"] == name]
    spec = pod_spec(doc)
    assert spec is not None
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] != 0
    assert pod["seccompProfile"]["type"] == "RuntimeDefault"
    if name == "regwarden-receiver":  # retention reads the cluster with its token
        assert spec["automountServiceAccountToken"] is False
    for container in containers(doc):
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"]
        assert "add" not in context["capabilities"]
        resources = container["resources"]
        assert {"cpu", "memory"} <= resources["requests"].keys()
        assert "memory" in resources["limits"]


def test_every_workload_runs_the_one_image_set_in_the_kustomization(
    docs: list[dict[str, Any]],
) -> None:
    raw = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert [i["name"] for i in raw["images"]] == ["regwarden"]
    for path in K8S.glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            for container in containers(doc):
                assert container["image"] == "regwarden", path  # the kustomize name only
    images = {c["image"] for d in docs for c in containers(d)}
    # as shipped: a host that cannot resolve, never someone else's image
    assert images == {"image-not-set.invalid/regwarden"}


def test_make_k8s_image_pins_the_image_by_digest(tmp_path: Path) -> None:
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    script = ROOT / "scripts" / "k8s_image.py"
    kustomization = copy / "kustomization.yaml"
    before = kustomization.read_text()
    refused = subprocess.run(
        [sys.executable, script, kustomization, "registry.example.com/regwarden:1.0"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 2 and "digest" in refused.stderr
    assert kustomization.read_text() == before
    image = f"registry.example.com:5000/team/regwarden:1.0@{DIGEST}"
    subprocess.run([sys.executable, script, kustomization, image], check=True)
    text = kustomization.read_text()
    assert text.startswith(before.partition("\nimages:\n")[0])  # comments and resources kept
    images = {c["image"] for d in load(copy) for c in containers(d)}
    assert images == {f"registry.example.com:5000/team/regwarden@{DIGEST}"}


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (its kustomize) absent")
def test_kubectl_kustomize_renders_the_same_objects(tmp_path: Path) -> None:
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    image = f"registry.example.com/regwarden@{DIGEST}"
    script = ROOT / "scripts" / "k8s_image.py"
    subprocess.run([sys.executable, script, copy / "kustomization.yaml", image], check=True)
    out = subprocess.run(
        ["kubectl", "kustomize", str(copy)], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    rendered = [d for d in yaml.safe_load_all(out) if d]
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    assert sorted(rendered, key=key) == sorted(load(copy), key=key)
    assert {c["image"] for d in rendered for c in containers(d)} == {image}
