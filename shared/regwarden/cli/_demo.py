"""`regwarden demo`: the push gate end to end against a real local registry.

A local distribution registry sends its notifications to regwarden's webhook receiver
(running in this process, as `regwarden serve` would). Four pushes follow — a signed clean
image, an unsigned one, one with a critical finding in its signed scan, and an overwrite
of an immutable tag — each verdict and action printed as it happens. Then the quarantine
repository is listed, someone pulls a quarantined image (the registry notifies the pull
too, and the access monitor alerts on it, as under `regwarden serve`) and one image is
released. Everything started is stopped.

`--state DIR` keeps what the demo made in DIR (the ledger, the policy and its key, the
alerts, the registry's storage) and prints the `regwarden report` command to run on it;
`regwarden demo --state DIR` again brings that registry back on the same address (the
ledger names images by it) and serves it until Ctrl-C. `--keep` keeps the demo's registry
serving at the end, the same way.
"""

from __future__ import annotations

import json
import logging
import shlex
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.console import Console

from ..devtools import (
    LocalRegistry,
    Vuln,
    gated_registry,
    make_image,
    push_image,
    trivy_report,
    vuln_predicate,
)
from ..errors import UsageError
from ..oci import RegistryClient
from ..signatures import attest_legacy, publish, sign_legacy
from ..signatures.keys import PrivateKey, generate_private_key

POLICY = """\
apiVersion: regwarden/v1
kind: Policy
defaults:
  mode: enforce
  quarantine: {{strategy: move, repository: "quarantine/{{repository}}"}}
repositories:
  - match: "payments/**"
    team: payments
    signatures:
      required: true
      cosign: {{keys: ["file://cosign.pub"]}}
      gracePeriod: 2s
    vulnerabilities:
      maxSeverity: high
      scanTimeout: 2s
    tags: {{immutable: true, forbidden: [latest]}}
notifications:
  channels:
    console: {{type: file, path: "{alerts}"}}
  routes:
    - {{match: {{team: payments}}, to: [console]}}
"""
CI = "demo-ci/1.0"  # the demo pushes as a CI system would
PULLER = "containerd/1.7.13 (demo)"  # a node pulling what it should not
REPO = "payments/api"
CLEAN = [Vuln("CVE-2099-0101", "LOW", "zlib", "1.3", "1.3.1")]
CRITICAL = [Vuln("CVE-2099-0102", "CRITICAL", "openssl", "3.0.1", "3.0.15", 9.8)]


STATE_FILE = "demo.json"
"""In a `--state` directory: the registry's address, so it comes back on the same one."""


def report_command(state: Path, host: str) -> str:
    """The `regwarden report` command line for a demo's state (`--state DIR`)."""
    words = ["regwarden", "--ledger", str(state / "ledger.db"), "report", "--registry", host]
    words += ["--policy", str(state / "regwarden.yaml"), "--out", str(state / "report.html")]
    return shlex.join(words)


def _serve_until_interrupted() -> None:
    """Block until Ctrl-C (or SIGTERM, handled the same: whatever started stops)."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def _state_dir(state: Path | None) -> Iterator[Path]:
    """The demo's directory: `state` (new or empty), else a temporary one removed after."""
    if state is None:
        with tempfile.TemporaryDirectory(prefix="regwarden-demo-") as tmp:
            yield Path(tmp)
        return
    if state.exists() and (not state.is_dir() or any(state.iterdir())):
        raise UsageError(
            f"--state {state}: not an empty directory, nor one a demo kept",
            hint="name a new directory (the demo creates it)",
        )
    state.mkdir(parents=True, exist_ok=True)
    yield state.resolve()


def _serve_kept(console: Console, state: Path) -> None:
    """Bring back the registry of a demo kept in `state`, on its address, until Ctrl-C."""
    host = str(json.loads((state / STATE_FILE).read_text())["registry"])
    port = int(host.rpartition(":")[2])
    with LocalRegistry(workdir=state / "registry", port=port) as registry:
        console.print(f"[bold]regwarden demo[/]: the registry kept in {state} on {registry.url}")
        console.print("report on what the demo did:")
        console.print(f"  {report_command(state, host)}", soft_wrap=True)
        console.print("Ctrl-C stops the registry (its storage stays)")
        _serve_until_interrupted()


def _wait(cond: Callable[[], object], timeout: float = 30.0, what: str = "a verdict") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise TimeoutError(f"the demo waited too long for {what}")


def _access_alerts(alerts: Path) -> list[dict[str, Any]]:
    """The access alerts in the demo's alert file (one JSON alert a line)."""
    if not alerts.exists():
        return []
    found = [json.loads(line) for line in alerts.read_text().splitlines() if line.strip()]
    return [a for a in found if a.get("kind") == "access"]


class _Demo:
    def __init__(
        self, console: Console, client: RegistryClient, key: PrivateKey, ledger: Any, host: str
    ) -> None:
        self.console, self.client, self.key, self.ledger, self.host = (
            console,
            client,
            key,
            ledger,
            host,
        )

    def step(self, text: str) -> None:
        self.console.print(f"\n[bold cyan]▶ {text}[/]")

    def push(self, tag: str, seed: int) -> str:
        digest = push_image(
            self.client,
            REPO,
            make_image(seed=seed, layers=2, layer_size=2048, created=datetime.now(UTC)),
            tag=tag,
        )
        self.console.print(f"  pushed {REPO}:{tag} ({digest[:19]}…)")
        return digest

    def sign(self, digest: str) -> None:
        publish(
            self.client,
            REPO,
            sign_legacy(image_digest=digest, docker_reference=f"{self.host}/{REPO}", key=self.key),
        )
        self.console.print("  signed it (cosign .sig)")

    def attest(self, digest: str, vulns: list[Vuln]) -> None:
        t = datetime.now(UTC)
        report = trivy_report(f"{self.host}/{REPO}", vulns, created=t)
        pred = vuln_predicate(report, started=t - timedelta(seconds=3), finished=t)
        publish(
            self.client,
            REPO,
            attest_legacy(
                image_digest=digest,
                repository=f"{self.host}/{REPO}",
                key=self.key,
                predicate_type="vuln",
                predicate=pred,
            ),
        )
        worst = max((v.severity for v in vulns), default="none")
        self.console.print(
            f"  attached its Trivy scan as a signed cosign vuln attestation "
            f"(worst: {worst.lower()})"
        )

    def until(self, digest: str, *outcomes: str, idle: Callable[[], bool]) -> None:
        _wait(lambda: self.ledger.last_verdict(self.host, REPO, digest) in outcomes)
        _wait(idle)  # let every queued event for this step finish before the next one


def run_demo(*, keep: bool, state: Path | None = None) -> None:

    from ..actions import release
    from ..pipeline import Handled
    from ..runtime import load_runtime
    from ..service import Processor, access_intake
    from ..store import open_queue
    from ._gate import print_handled
    from ._images import run_images

    logging.basicConfig(level=logging.ERROR)
    console = Console(highlight=False)
    if state is not None and (state / STATE_FILE).is_file():
        _serve_kept(console, state.resolve())
        return
    host = ""
    with _state_dir(state) as root:
        key = generate_private_key("ecdsa-p256")
        pem = key.public_key.pem
        (root / "cosign.pub").write_bytes(pem if isinstance(pem, bytes) else pem.encode())
        alerts = root / "alerts.jsonl"
        (root / "regwarden.yaml").write_text(POLICY.format(alerts=alerts))
        runtime = load_runtime(root / "regwarden.yaml", ledger=root / "ledger.db")
        queue = open_queue(ledger=runtime.ledger)  # an SQLite ledger is its own queue
        pipeline = runtime.pipeline()
        lock = threading.Lock()
        shown: dict[str, str] = {}

        def show(h: Handled) -> None:
            """Print a verdict when it changes (each .sig/.att push re-evaluates)."""
            if h.verdict is None:
                return
            key = str(h.verdict.image.with_tag(None))
            with lock:
                if shown.get(key) != h.verdict.outcome.value or h.actions:
                    shown[key] = h.verdict.outcome.value
                    print_handled(h)

        processor = Processor(pipeline, queue, clock=lambda: datetime.now(UTC), on_handled=show)
        access = access_intake(
            runtime.policy, pipeline, allowed_hosts=None, clock=lambda: datetime.now(UTC)
        )
        try:
            with (
                gated_registry(
                    queue,
                    processor,
                    poll=0.1,
                    keep=pipeline.wants,
                    registry_dir=None if state is None else root / "registry",
                    access=access,
                ) as gated,
                RegistryClient(gated.registry.host, user_agent=CI) as client,
            ):
                registry, pool, port = gated.registry, gated.pool, gated.receiver_port
                console.print(
                    f"[bold]regwarden demo[/]: docker-registry on {registry.url} "
                    f"notifies regwarden's receiver on 127.0.0.1:{port}"
                )
                console.print(
                    f"policy: {REPO} must be signed by the demo key, have no "
                    "finding above high, and keep its tags immutable"
                )
                demo = _Demo(console, client, key, runtime.ledger, registry.host)

                demo.step("1. a signed image with a clean scan")
                good = demo.push("1.0.0", seed=1)
                demo.sign(good)
                demo.attest(good, CLEAN)
                demo.until(good, "PASSED", idle=pool.idle)

                demo.step("2. an unsigned image (PENDING during the 2s grace, then FAILED)")
                unsigned = demo.push("1.1.0", seed=2)
                demo.until(unsigned, "FAILED", idle=pool.idle)

                demo.step("3. a signed image whose scan has a critical finding")
                vulnerable = demo.push("1.2.0", seed=3)
                demo.sign(vulnerable)
                demo.attest(vulnerable, CRITICAL)
                demo.until(vulnerable, "FAILED", idle=pool.idle)

                demo.step("4. overwriting the immutable tag 1.0.0 with another image")
                overwrite = demo.push("1.0.0", seed=4)
                demo.sign(overwrite)
                demo.attest(overwrite, CLEAN)
                demo.until(overwrite, "FAILED", idle=pool.idle)

                demo.step("the source repository and the quarantine repository")
                run_images(
                    f"{registry.host}/{REPO}",
                    output="table",
                    include_artifacts=False,
                    insecure=False,
                )
                run_images(
                    f"{registry.host}/quarantine/{REPO}",
                    output="table",
                    include_artifacts=False,
                    insecure=False,
                )
                count = len(alerts.read_text().splitlines()) if alerts.exists() else 0
                console.print(f"{count} alert(s) routed to team payments ({alerts.name})")

                demo.step("5. a node pulls the quarantined 1.1.0 (the registry notifies pulls too)")
                with RegistryClient(registry.host, user_agent=PULLER) as node:
                    node.get_manifest(f"quarantine/{REPO}", unsigned)
                _wait(lambda: _access_alerts(alerts), what="the access monitor's alert")
                (pulled,) = _access_alerts(alerts)
                console.print(
                    f"  access alert ({pulled['access']['finding']}, {pulled['severity']}) "
                    f"to team {pulled['team']}: {pulled['summary']}"
                )

                demo.step(
                    f"6. security reviews 1.2.0 and releases it: regwarden quarantine "
                    f"release {registry.host}/{REPO}@{vulnerable[:19]}…"
                )
                registry_api = runtime.registry(registry.host)
                out = release(
                    registry_api,
                    runtime.ledger,
                    image=client_ref(registry.host, vulnerable),
                    reason="risk accepted by security (demo)",
                    now=datetime.now(UTC),
                )
                console.print(f"  released; tags restored: {', '.join(out.restored_tags)}")
                run_images(
                    f"{registry.host}/{REPO}",
                    output="table",
                    include_artifacts=False,
                    insecure=False,
                )
                host = registry.host
                if state is not None:
                    (root / STATE_FILE).write_text(json.dumps({"registry": host}) + "\n")
                if keep:
                    console.print(
                        f"\nregistry {registry.url} and receiver :{port} stay up; Ctrl-C to "
                        "stop. Report on what the demo did (in another terminal):"
                    )
                    console.print(f"  {report_command(root, host)}", soft_wrap=True)
                    _serve_until_interrupted()
        finally:
            runtime.close()
    console.print("\n[green]demo finished[/]; the registry and the receiver were stopped")
    if state is not None:
        console.print(
            f"its state is kept in {root}: `regwarden demo --state {shlex.quote(str(state))}` "
            f"serves its registry again on {host}, for"
        )
        console.print(f"  {report_command(root, host)}", soft_wrap=True)
    else:
        console.print("(`regwarden demo --state DIR` keeps it, to run `regwarden report` on)")


def client_ref(host: str, digest: str) -> Any:
    from ..reference import ImageRef

    return ImageRef(registry=host, repository=REPO, digest=digest)
