"""Cold start of the GCP `on_push` Cloud Run function against its floor, end to end.

    .venv/bin/python bench/cold_start_gcp.py [--runs 5]

Product: a fresh interpreter (process start → the first Pub/Sub push handled) imports
functions-framework, has it load `functions/gcp/main.py` (`create_app`, as the server does)
and posts one push of the `gcr` topic's INSERT for a freshly pushed image, in the
environment Cloud Run gives the function (`K_SERVICE`, the Terraform's variables). The
path: the image's Artifact Analysis scan has not finished, so it is held PENDING (retag
through the AR tags API), alerted to the Pub/Sub alerts topic and rechecked through Cloud
Tasks; the ledger is Firestore. The Google APIs are the loopback stand-ins the tests use
(real client libraries, REST transport); `/v2/` is a real `docker-registry` behind
FakeGar's front.

Floor, in the same run, as the provider-seam issue defines it: a fresh interpreter that
imports the runtime (functions-framework, loaded before `main` on Cloud Run, so both pay
it), imports and creates one client of every Google service the product called (and
httpx, the data plane's library), then sends the product's requests again raw, byte for
byte, to the same servers. What is left between the two is what the product adds: the
core, its imports, its work between requests. A recording proxy in front of every server
tells which requests the product made and checks the floor made as many. The floor's
writes land in the state the product left (a tag or a Firestore document that now
exists), so some are answered with a refusal instead; `answers_unlike_product` counts
them.

Both children see only what a deployed function has: the AWS and Azure SDKs and the dev
tools are hidden. Prints JSON; target: product <= 1.5x floor.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the Google stand-ins and the recording proxy
sys.path.insert(0, str(ROOT / "bench"))

from _cold_proxy import Exchange, RecordingProxy  # noqa: E402
from _cold_runs import Run, importtime_ms, replay, summary  # noqa: E402
from support.fake_firestore import FakeFirestore  # noqa: E402
from support.fake_gar import FakeGar  # noqa: E402
from support.fake_grafeas import FakeGrafeas  # noqa: E402
from support.fake_pubsub import FakePubSub, push_delivery  # noqa: E402
from support.fake_tasks import FakeTasks  # noqa: E402

from regwarden.devtools import LocalRegistry, make_image, skopeo_copy, write_layout  # noqa: E402

CHILD = Path(__file__).with_name("_cold_gcp_child.py")
MAIN = ROOT / "functions" / "gcp" / "main.py"
TARGET_RATIO = 1.5
PROJECT = "demo-proj"
HIDDEN = (
    "boto3",
    "botocore",
    "s3transfer",
    "aws_lambda_powertools",
    "aws_xray_sdk",
    "moto",
    "azure",
    "pytest",
    "_pytest",
    "hypothesis",
)
"""Installed here, absent from the deployed function (its requirements are regwarden[gcp])."""
PATH = (
    "on_push, first delivery: a push whose Artifact Analysis scan has not finished "
    "(PENDING): held by retag (AR tags API), alert to the Pub/Sub alerts topic, recheck "
    "to Cloud Tasks, ledger in Firestore"
)
POLICY = f"""\
apiVersion: regwarden/v1
kind: Policy
registries:
  - {{host: us-docker.pkg.dev, kind: gar}}
defaults:
  mode: enforce
  quarantine: {{strategy: retag}}
repositories:
  - match: "{PROJECT}/scanned/**"
    team: bravo
    vulnerabilities: {{maxSeverity: high, scanTimeout: 30m}}
notifications:
  channels:
    alerts: {{type: pubsub, topic: "projects/{PROJECT}/topics/regwarden-alerts"}}
  routes:
    - {{to: [alerts]}}
"""
#: proxy name → the service the floor creates a client for (None: the OCI data plane)
SERVICES = ("artifactregistry", "containeranalysis", "firestore", "pubsub", "cloudtasks")


class Stack:
    """The registry, the Google stand-ins and a recording proxy in front of each."""

    def __init__(self, root: Path, registry: LocalRegistry, fakes: dict[str, Any]) -> None:
        self.root = root
        self.registry = registry
        self.fakes = fakes
        self.proxies = {name: RecordingProxy(fake.host).start() for name, fake in fakes.items()}
        self.pushed = 0

    def service_of(self, exchange: Exchange) -> str:
        for name, proxy in self.proxies.items():
            if proxy.host == exchange.server:
                if name == "artifactregistry" and exchange.target.startswith("/v2/"):
                    return "registry"
                return name
        return "unknown"

    def environment(self) -> dict[str, str]:
        """What Cloud Run and the Terraform give the function, with the stand-ins'
        endpoints; nothing GCP- or regwarden-related inherited from this process."""
        dropped = (
            "PYTHONDONTWRITEBYTECODE",
            "PYTHONPYCACHEPREFIX",
            "GOOGLE_APPLICATION_CREDENTIALS",
        )
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("REGWARDEN_", "GOOGLE_", "K_", "AWS_")) and k not in dropped
        }
        proxies = self.proxies
        env.update(
            PYTHONPATH=str(ROOT),
            K_SERVICE="regwarden-on-push",
            K_REVISION="regwarden-on-push-00001-abc",
            GOOGLE_CLOUD_PROJECT=PROJECT,
            REGWARDEN_POLICY=str(self.root / "policy.yaml"),
            REGWARDEN_LEDGER=f"firestore://{PROJECT}",
            REGWARDEN_ALERTS_TOPIC=f"projects/{PROJECT}/topics/regwarden-alerts",
            REGWARDEN_TASKS_QUEUE=f"projects/{PROJECT}/locations/us-central1/queues/rechecks",
            REGWARDEN_RECHECK_URL="https://regwarden-recheck-abc-uc.a.run.app/",
            REGWARDEN_TASKS_SERVICE_ACCOUNT=f"regwarden-tasks@{PROJECT}.iam.gserviceaccount.com",
            REGWARDEN_GAR_DATA_PLANE=proxies["artifactregistry"].host,
            **{f"REGWARDEN_GCP_ENDPOINT_{name.upper()}": p.url for name, p in proxies.items()},
        )
        return env

    def delivery(self) -> tuple[bytes, dict[str, str]]:
        """Push a fresh image (straight to FakeGar, not through the proxy) and return the
        Pub/Sub push its `gcr` INSERT makes."""
        gar: FakeGar = self.fakes["artifactregistry"]
        self.pushed += 1
        repository = f"{PROJECT}/scanned/app-{self.pushed}"
        layout = self.root / f"layout-{self.pushed}"
        write_layout(layout, make_image(seed=9000 + self.pushed), tag="t")
        since = len(gar.gcr)
        skopeo_copy(f"oci:{layout}:t", f"docker://{gar.host}/{repository}:1.0.0")
        wanted = gar.reference(repository, tag="1.0.0")
        (message,) = [m for m in gar.gcr[since:] if json.loads(m["data"]).get("tag") == wanted]
        return push_delivery(
            {**message, "topic": f"projects/{PROJECT}/topics/gcr"},
            subscription=f"projects/{PROJECT}/subscriptions/regwarden-on-push",
        )

    def take(self) -> list[Exchange]:
        return sorted(
            (ex for proxy in self.proxies.values() for ex in proxy.take()), key=lambda e: e.at
        )

    def spawn(self, mode: str, spec: Mapping[str, Any], *, importtime: bool = False) -> Run:
        flags = ["-X", "importtime"] if importtime else []
        with tempfile.TemporaryDirectory(prefix="regwarden-cold-gcp-") as tmp:
            spec_path, out_path = Path(tmp, "spec.json"), Path(tmp, "marks.json")
            spec_path.write_text(json.dumps({**spec, "hidden": HIDDEN}))
            args = [sys.executable, *flags, str(CHILD), mode, str(spec_path), str(out_path)]
            spawned = time.monotonic()
            done = subprocess.run(
                args,
                cwd=ROOT,
                env=self.environment(),
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            if done.returncode != 0:
                raise SystemExit(f"{mode} run failed ({done.returncode}):\n{done.stderr[-4000:]}")
            marks = json.loads(out_path.read_text())
        return Run(spawned, marks, self.take(), done.stderr)

    def product(self, *, importtime: bool = False) -> Run:
        body, headers = self.delivery()
        self.take()  # the push itself went around the proxies; nothing to keep
        spec = {"main": str(MAIN), "body": body.decode(), "headers": headers, "expect": "PENDING"}
        return self.spawn("product", spec, importtime=importtime)

    def floor(self, product: Run) -> Run:
        used = {self.service_of(ex) for ex in product.exchanges}
        spec = {
            "services": {s: self.proxies[s].url for s in SERVICES if s in used},
            "data_plane": "registry" in used,
            "requests": replay(product.exchanges),
        }
        return self.spawn("floor", spec)


@contextmanager
def stack() -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="regwarden-cold-gcp-") as tmp, ExitStack() as stop:
        root = Path(tmp)
        (root / "policy.yaml").write_text(POLICY)
        registry = stop.enter_context(LocalRegistry())
        fakes: dict[str, Any] = {
            "artifactregistry": stop.enter_context(
                FakeGar(registry.host, project=PROJECT, repositories=("scanned",))
            ),
            "containeranalysis": stop.enter_context(FakeGrafeas()),
            "firestore": stop.enter_context(FakeFirestore()),
            "pubsub": stop.enter_context(FakePubSub()),
            "cloudtasks": stop.enter_context(FakeTasks()),
        }
        built = Stack(root, registry, fakes)
        try:
            yield built
        finally:
            for proxy in built.proxies.values():
                proxy.stop()


def by_service(st: Stack, exchanges: Iterable[Exchange]) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = {}
    for ex in exchanges:
        entry = found.setdefault(st.service_of(ex), {"requests": 0, "upstream_ms": 0.0})
        entry["requests"] += 1
        entry["upstream_ms"] = round(entry["upstream_ms"] + ex.upstream_ms, 1)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description="GCP on_push cold start against its floor (JSON)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs: expected at least 1")
    with stack() as st:
        warm = st.product()  # discarded: bytecode and page caches, the stand-ins' first calls
        st.floor(warm)
        products: list[Run] = []
        floors: list[Run] = []
        for _ in range(args.runs):
            products.append(st.product())
            floors.append(st.floor(products[-1]))
        detail = st.product(importtime=True)
        phases = {
            "interpreter_start": ("spawned", "started"),
            "runtime_import": ("started", "runtime"),
        }
        product = summary(
            products,
            {
                **phases,
                "load_main": ("runtime", "imported"),
                "first_delivery": ("imported", "handled"),
            },
        )
        product["by_service"] = by_service(st, products[-1].exchanges)
        floor = summary(
            floors,
            {**phases, "sdk_clients": ("runtime", "imported"), "requests": ("imported", "handled")},
        )
        floor["services"] = sorted({st.service_of(ex) for ex in products[-1].exchanges})
        floor["answers_unlike_product"] = sum(
            a.status != b.status
            for p, f in zip(products, floors, strict=True)
            for a, b in zip(p.exchanges, f.exchanges, strict=True)
        )
        mismatched = [
            (len(p.exchanges), len(f.exchanges))
            for p, f in zip(products, floors, strict=True)
            if len(p.exchanges) != len(f.exchanges)
        ]
        if mismatched:
            raise SystemExit(f"the floor sent another number of requests: {mismatched}")
    ratio = product["median_ms"] / floor["median_ms"]
    out = {
        "python": sys.version.split()[0],
        "path": PATH,
        "runs": args.runs,
        "hidden_packages": list(HIDDEN),
        "floor": floor,
        "product": product,
        "ratio": round(ratio, 2),
        "target_ratio": TARGET_RATIO,
        "meets_target": ratio <= TARGET_RATIO,
        "breakdown": {
            "note": "one more product run under -X importtime (which slows imports a little)",
            "total_ms": round(detail.total_ms, 1),
            "imports": importtime_ms(detail.stderr),
        },
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
