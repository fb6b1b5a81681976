"""Cold start of the Azure `on_push` function against its floor, end to end.

    .venv/bin/python bench/cold_start_azure.py [--runs 5]

Product: a fresh interpreter (process start → the first Event Grid event handled) imports
azure-functions (the Python worker has it loaded before it indexes the app), imports
`functions/azure/function_app.py` as the worker does and calls the `on_push` function of
`app.get_functions()` with one `func.EventGridEvent`: ACR's ImagePushed for an image just
pushed, in the environment a Function App gives the function (`WEBSITE_INSTANCE_ID`, the
managed identity's `IDENTITY_ENDPOINT`/`IDENTITY_HEADER`, the Terraform's settings). The
path: the image's Defender scan has not reported (Resource Graph has no sub-assessment), so
it is held PENDING (quarantined), alerted to the Event Grid alerts topic and rechecked
through the Storage queue; the ledger is Table Storage. Table Storage and the queue are
Azurite; ACR is FakeAcr (HTTPS, its `/v2/` a real `docker-registry`), Resource Graph,
the Event Grid topic and the managed identity endpoint are the tests' stand-ins; the real
Azure client libraries call them.

Floor, in the same run, as the provider-seam issue defines it: a fresh interpreter that
imports the runtime (azure-functions, which both pay), imports and creates one client of
every Azure service the product called (azure-identity's credential for the managed
identity, the ACR, Table, Queue, Resource Graph and Event Grid clients) and httpx (the data
plane's library), then sends the product's requests again raw, byte for byte, to the same
servers. What is left between the two is what the product adds: the core, its imports,
its work between requests. A recording proxy in front of every server tells which
requests the product made and checks the floor made as many; the HTTPS stand-ins get an
HTTPS front of the bench's own test CA (the product trusts it through
`REGWARDEN_AZURE_CA_BUNDLE`, the floor replays through TLS too), whose bridge to the
stand-in rewrites its Bearer realm to the front (ACR's token service is where the
challenge says). The floor's writes land in the state the product left, so some are
answered with a refusal instead; `answers_unlike_product` counts them.

Both children see only what a deployed function has: every package installed here outside
the azure extra's requirement closure (the AWS and Google SDKs, the dev tools, aiohttp)
is hidden. Prints JSON; target: product <= 1.5x floor. Besides the wall-clock medians it
prints each run's pair and both sides' CPU (every thread's, interpreter start included),
which other jobs on a shared machine move less. `--profile FILE` also runs the product
once under cProfile (`python -m pstats FILE` reads it).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import secrets
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the Azure stand-ins and the recording proxy
sys.path.insert(0, str(ROOT / "bench"))

from _cold_proxy import Exchange, RecordingProxy  # noqa: E402
from _cold_runs import Run, importtime_ms, ratio_interval, replay, summary  # noqa: E402
from support.azurite import Azurite  # noqa: E402
from support.bundles import not_deployed  # noqa: E402
from support.fake_acr import TOKEN_USER, FakeAcr, _make_tls  # noqa: E402
from support.fake_eventgrid import FakeEventGrid  # noqa: E402
from support.fake_resourcegraph import FakeResourceGraph  # noqa: E402
from support.loopback import LoopbackServer  # noqa: E402

from regwarden.devtools import LocalRegistry, make_image, skopeo_copy, write_layout  # noqa: E402

CHILD = Path(__file__).with_name("_cold_azure_child.py")
APP = ROOT / "functions" / "azure" / "function_app.py"
TARGET_RATIO = 1.5
LOGIN_SERVER = "regwardendemo.azurecr.io"
SUBSCRIPTION = "00000000-0000-0000-0000-000000000000"
RECHECK_QUEUE = "regwarden-rechecks"
ALERTS_TOPIC = "https://regwarden-alerts.westeurope-1.eventgrid.azure.net/api/events"
HIDDEN = not_deployed("azure")
"""Installed here, absent from the deployed function (its requirements are regwarden[azure]):
the AWS and Google SDKs, the dev tools, and the other extras' packages (aiohttp, which
azure-storage-queue imports when it can)."""
PATH = (
    "on_push, first event: ACR's ImagePushed for an image whose Defender scan has not "
    "reported (PENDING): quarantined on ACR, alert to the Event Grid alerts topic, recheck "
    "on the Storage queue, ledger in Table Storage; credentials from the managed identity"
)
POLICY = f"""\
apiVersion: regwarden/v1
kind: Policy
registries:
  - {{host: {LOGIN_SERVER}, kind: acr}}
defaults:
  mode: enforce
  quarantine: {{strategy: QUARANTINE}}
repositories:
  - match: "scanned/**"
    team: bravo
    vulnerabilities: {{maxSeverity: high, scanTimeout: 30m}}
notifications:
  channels:
    alerts: {{type: eventgrid, endpoint: "{ALERTS_TOPIC}"}}
  routes:
    - {{to: [alerts]}}
"""
#: the services the floor can make a client for (the child's CLIENTS), in proxy order
SERVICES = ("identity", "acr", "resourcegraph", "table", "queue", "eventgrid")


class ManagedIdentity:
    """App Service's managed identity endpoint, as a Function App has it (`IDENTITY_ENDPOINT`
    and `IDENTITY_HEADER`; azure-identity's `AppServiceCredential` →
    `GET {endpoint}?api-version=2019-08-01&resource=…` with `X-IDENTITY-HEADER`, answered
    `{access_token, expires_on (epoch seconds, a string), resource, token_type}`, the shape
    azure-identity `_internal/msal_managed_identity_client.py` reads): it hands out the one
    AAD token the stand-ins accept, for any resource."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.secret = secrets.token_urlsafe(16)
        self.server = LoopbackServer(self._handler_class())

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        identity = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_GET(self) -> None:
                query = parse_qs(urlsplit(self.path).query)
                if self.headers.get("X-IDENTITY-HEADER") != identity.secret:
                    status, body = 401, {"error": "invalid_request", "error_description": "?"}
                else:
                    status, body = (
                        200,
                        {
                            "access_token": identity.token,
                            "expires_on": str(int(time.time()) + 86_400),
                            "resource": query.get("resource", [""])[0],
                            "token_type": "Bearer",
                        },
                    )
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        return Handler


class TlsFront:
    """An HTTPS stand-in behind a recording proxy: the client speaks TLS (the bench's CA) to
    the proxy, which records the request and hands it to a bridge that sends it on to the
    stand-in over TLS (its own CA). The bridge rewrites the stand-in's own URL to the
    front's in `WWW-Authenticate` and `Location`, so a Bearer realm stays on the host the
    client was told to use (ACR's provider refuses one elsewhere)."""

    def __init__(self, upstream: str, upstream_ca: str, context: ssl.SSLContext) -> None:
        self.upstream = upstream
        self._client_context = ssl.create_default_context(cafile=upstream_ca)
        self.bridge = LoopbackServer(self._bridge_class()).start()
        self.proxy = RecordingProxy(self.bridge.host)
        # the proxy's listening socket serves TLS, as the stand-ins' own do
        server = self.proxy._server.server
        server.socket = context.wrap_socket(server.socket, server_side=True)
        self.proxy.start()

    @property
    def host(self) -> str:
        return self.proxy.host

    @property
    def url(self) -> str:
        return f"https://{self.proxy.host}"

    def take(self) -> list[Exchange]:
        return self.proxy.take()

    def stop(self) -> None:
        self.proxy.stop()
        self.bridge.stop()

    def _bridge_class(self) -> type[BaseHTTPRequestHandler]:
        front = self

        class Bridge(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: object) -> None:
                return

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                upstream = http.client.HTTPSConnection(
                    front.upstream, timeout=60, context=front._client_context
                )
                try:
                    upstream.putrequest(
                        self.command, self.path, skip_host=True, skip_accept_encoding=True
                    )
                    for name, value in self.headers.items():
                        if name.lower() not in ("connection", "keep-alive"):
                            upstream.putheader(name, value)
                    upstream.endheaders(body or None)
                    answer = upstream.getresponse()
                    payload = answer.read()
                finally:
                    upstream.close()
                own = f"https://{front.upstream}"
                self.send_response(answer.status, answer.reason)
                for name, value in answer.getheaders():
                    low = name.lower()
                    if low in ("connection", "keep-alive", "transfer-encoding", "content-length"):
                        continue
                    if low in ("www-authenticate", "location"):
                        value = value.replace(own, front.url)
                    self.send_header(name, value)
                if self.command == "HEAD":
                    self.send_header("Content-Length", answer.getheader("Content-Length") or "0")
                    self.end_headers()
                    return
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        return Bridge


def image_pushed(
    repository: str, tag: str, digest: str, media_type: str, size: int
) -> dict[str, Any]:
    """ACR's ImagePushed in the Event Grid schema (events/azure/eventgrid-image-pushed.json,
    the recorded shape), as the worker hands it over (the child builds the EventGridEvent)."""
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    registry = f"/subscriptions/{SUBSCRIPTION}/resourceGroups/regwarden/providers/"
    return {
        "id": str(uuid.uuid4()),
        "topic": registry + "Microsoft.ContainerRegistry/registries/regwardendemo",
        "subject": f"{repository}:{tag}",
        "eventType": "Microsoft.ContainerRegistry.ImagePushed",
        "eventTime": now,
        "data": {
            "id": str(uuid.uuid4()),
            "timestamp": now,
            "action": "push",
            "target": {
                "mediaType": media_type,
                "size": size,
                "digest": digest,
                "length": size,
                "repository": repository,
                "tag": tag,
            },
            "request": {
                "id": str(uuid.uuid4()),
                "host": LOGIN_SERVER,
                "method": "PUT",
                "useragent": "skopeo",
            },
        },
        "dataVersion": "1.0",
        "metadataVersion": "1",
    }


class Stack:
    """The registry, the Azure stand-ins and Azurite, a recording proxy in front of each."""

    def __init__(self, root: Path, stop: ExitStack, quarantine: str) -> None:
        self.root = root
        self.quarantine = quarantine
        (root / "policy.yaml").write_text(POLICY.replace("QUARANTINE", quarantine))
        self.registry = stop.enter_context(LocalRegistry())
        self.acr = stop.enter_context(FakeAcr(self.registry.host, login_server=LOGIN_SERVER))
        self.graph = stop.enter_context(FakeResourceGraph())
        # no topic key: the function publishes with its managed identity's token
        self.topic = stop.enter_context(FakeEventGrid(token=self.acr.aad_token))
        self.azurite = stop.enter_context(Azurite())
        from azure.storage.queue import QueueClient

        # the queue the Terraform creates (infra/azure/storage.tf)
        QueueClient.from_connection_string(
            self.azurite.connection_string, RECHECK_QUEUE
        ).create_queue()
        self.identity = ManagedIdentity(self.acr.aad_token)
        self.identity.server.start()
        stop.callback(self.identity.server.stop)
        self.ca_file, context = _make_tls(root)  # the fronts' CA: what the product trusts
        self.fronts: dict[str, RecordingProxy | TlsFront] = {
            "identity": RecordingProxy(self.identity.server.host).start(),
            "acr": TlsFront(self.acr.host, self.acr.ca_file, context),
            "resourcegraph": RecordingProxy(self.graph.host).start(),
            "table": RecordingProxy(_host(self.azurite.table_endpoint)).start(),
            "queue": RecordingProxy(_host(self.azurite.queue_endpoint)).start(),
            "eventgrid": TlsFront(_host(self.topic.url), self.topic.ca_file, context),
        }
        for front in self.fronts.values():
            stop.callback(front.stop)
        self.pushed = 0

    def service_of(self, exchange: Exchange) -> str:
        for name, front in self.fronts.items():
            if front.host == exchange.server:
                if name == "acr" and exchange.target.startswith("/v2/"):
                    return "registry"
                return name
        return "unknown"

    def url(self, name: str) -> str:
        front = self.fronts[name]
        return front.url if isinstance(front, TlsFront) else f"http://{front.host}"

    def environment(self) -> dict[str, str]:
        """What a Function App and the Terraform give the function, with the stand-ins'
        endpoints; nothing Azure- or regwarden-related inherited from this process."""
        dropped = ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("REGWARDEN_", "AZURE_", "IDENTITY_", "MSI_", "AWS_", "GOOGLE_"))
            and k not in dropped
        }
        account = self.azurite.account
        env.update(
            # this tree's regwarden before the venv's editable install, which may be another
            # tree's (a git worktree shares the venv)
            PYTHONPATH=os.pathsep.join([str(ROOT / "shared"), str(ROOT)]),
            WEBSITE_INSTANCE_ID=uuid.uuid4().hex,
            WEBSITE_SITE_NAME="regwarden-func",
            FUNCTIONS_WORKER_RUNTIME="python",
            IDENTITY_ENDPOINT=self.url("identity") + "/msi/token",
            IDENTITY_HEADER=self.identity.secret,
            AZURE_CLIENT_ID=str(uuid.uuid4()),  # the user-assigned identity
            REGWARDEN_POLICY=str(self.root / "policy.yaml"),
            REGWARDEN_LEDGER=f"azuretable://{account}",
            REGWARDEN_STORAGE_ACCOUNT=account,
            REGWARDEN_ALERTS_TOPIC=ALERTS_TOPIC,
            REGWARDEN_AZURE_SUBSCRIPTION=SUBSCRIPTION,
            REGWARDEN_AZURE_CA_BUNDLE=self.ca_file,
            REGWARDEN_AZURE_STORAGE_KEY=self.azurite.key,
            REGWARDEN_AZURE_ENDPOINT_ACR=self.url("acr"),
            REGWARDEN_AZURE_ENDPOINT_RESOURCEGRAPH=self.url("resourcegraph"),
            REGWARDEN_AZURE_ENDPOINT_TABLE=f"{self.url('table')}/{account}",
            REGWARDEN_AZURE_ENDPOINT_QUEUE=f"{self.url('queue')}/{account}",
            REGWARDEN_AZURE_ENDPOINT_EVENTGRID=self.url("eventgrid"),
        )
        return env

    def event(self) -> dict[str, Any]:
        """Push a fresh image (straight to FakeAcr, not through a front) and return ACR's
        ImagePushed event of it."""
        self.pushed += 1
        repository = f"scanned/app-{self.pushed}"
        layout = self.root / f"layout-{self.pushed}"
        image = make_image(seed=9100 + self.pushed)
        write_layout(layout, image, tag="t")
        skopeo_copy(
            f"oci:{layout}:t",
            f"docker://{self.acr.host}/{repository}:1.0.0",
            creds=(TOKEN_USER, self.acr.mint_refresh_token()),
        )
        return image_pushed(
            repository,
            "1.0.0",
            str(image.manifest_digest),
            image.media_type,
            len(image.manifest),
        )

    def take(self) -> list[Exchange]:
        return sorted((ex for f in self.fronts.values() for ex in f.take()), key=lambda e: e.at)

    def spawn(
        self,
        mode: str,
        spec: Mapping[str, Any],
        *,
        importtime: bool = False,
        profile: Path | None = None,
    ) -> Run:
        flags = ["-X", "importtime"] if importtime else []
        if profile is not None:
            flags += ["-m", "cProfile", "-o", str(profile)]
        with tempfile.TemporaryDirectory(prefix="regwarden-cold-azure-") as tmp:
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

    def product(self, *, importtime: bool = False, profile: Path | None = None) -> Run:
        event = self.event()
        self.take()  # the push itself went around the fronts; nothing to keep
        spec = {
            "app": str(APP),
            "event": event,
            "expect": "PENDING",
            "shared": str((ROOT / "shared").resolve()),  # the regwarden it must import
        }
        return self.spawn("product", spec, importtime=importtime, profile=profile)

    def floor(self, product: Run) -> Run:
        used = {self.service_of(ex) for ex in product.exchanges}
        spec = {
            "services": {s: self.url(s) for s in SERVICES if s in used},
            "account": self.azurite.account,
            "data_plane": "registry" in used,
            "ca_file": self.ca_file,
            "tls_hosts": [f.host for f in self.fronts.values() if isinstance(f, TlsFront)],
            "requests": replay(product.exchanges),
        }
        return self.spawn("floor", spec)


def _host(url: str) -> str:
    return urlsplit(url).netloc


@contextmanager
def stack(quarantine: str) -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="regwarden-cold-azure-") as tmp, ExitStack() as stop:
        yield Stack(Path(tmp), stop, quarantine)


def by_service(st: Stack, exchanges: Iterable[Exchange]) -> dict[str, dict[str, float]]:
    found: dict[str, dict[str, float]] = {}
    for ex in exchanges:
        entry = found.setdefault(st.service_of(ex), {"requests": 0, "upstream_ms": 0.0})
        entry["requests"] += 1
        entry["upstream_ms"] = round(entry["upstream_ms"] + ex.upstream_ms, 1)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description="Azure on_push cold start against its floor")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--quarantine", default="lock", choices=("lock", "retag"), help="the policy's strategy"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="FILE",
        help="also run the product once under cProfile and write its stats to FILE "
        "(read them with `python -m pstats FILE`)",
    )
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs: expected at least 1")
    with stack(args.quarantine) as st:
        warm = st.product()  # discarded: bytecode and page caches, the stand-ins' first calls
        st.floor(warm)
        products: list[Run] = []
        floors: list[Run] = []
        for _ in range(args.runs):
            products.append(st.product())
            floors.append(st.floor(products[-1]))
        detail = st.product(importtime=True)
        if args.profile is not None:
            st.product(profile=args.profile.resolve())
        phases = {
            "interpreter_start": ("spawned", "started"),
            "runtime_import": ("started", "runtime"),
        }
        product = summary(
            products,
            {
                **phases,
                "load_app": ("runtime", "imported"),
                "first_event": ("imported", "handled"),
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
    # each product run and the floor run right after it met the same machine load
    paired = statistics.median(
        p.total_ms / f.total_ms for p, f in zip(products, floors, strict=True)
    )
    low, high = ratio_interval(
        [(p.total_ms, f.total_ms) for p, f in zip(products, floors, strict=True)]
    )
    cpu = {
        name: round(statistics.median(r.marks["cpu"] for r in runs) * 1000, 1)
        for name, runs in (("product", products), ("floor", floors))
    }
    out = {
        "python": sys.version.split()[0],
        "path": PATH.replace("quarantined", f"quarantined ({args.quarantine})"),
        "runs": args.runs,
        "hidden_packages": HIDDEN,
        "floor": floor,
        "product": product,
        "ratio": round(ratio, 2),
        # how far the ratio of medians moves with which runs the box happened to give
        "ratio_ci95": [round(low, 2), round(high, 2)],
        "paired_ratio_median": round(paired, 2),
        "pairs_ms": [
            [round(p.total_ms, 1), round(f.total_ms, 1)]
            for p, f in zip(products, floors, strict=True)
        ],
        # CPU of every thread, interpreter start included: what the machine's load moves
        # least (a wall-clock ratio on a shared machine also carries other jobs' time)
        "cpu_median_ms": cpu,
        "cpu_ratio": round(cpu["product"] / cpu["floor"], 2),
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
