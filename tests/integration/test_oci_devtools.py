"""regwarden.devtools: the local registry's lifecycle and notifications, and the image builder."""

from __future__ import annotations

import gc
import gzip
import hashlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest
from support.loopback import LoopbackServer

from regwarden.devtools import (
    LocalRegistry,
    RegistryStartError,
    bcrypt_hash,
    build_image,
    build_index,
    make_image,
    open_layout,
    push_image,
)
from regwarden.errors import UsageError
from regwarden.oci import OCI_CONFIG, OCI_LAYER_GZIP, RegistryClient

pytestmark = pytest.mark.integration


# -- LocalRegistry -----------------------------------------------------------------------------


def test_registry_lifecycle_cleans_up() -> None:
    reg = LocalRegistry().start()
    proc = reg._proc
    assert proc is not None
    workdir = reg.workdir
    assert workdir is not None
    assert workdir.is_dir()
    assert reg.url == f"http://{reg.host}"
    with RegistryClient(reg.host) as client:
        client.ping()
    reg.stop()
    assert proc.poll() is not None  # reaped
    assert not workdir.exists()
    with pytest.raises(UsageError, match="not running"):
        _ = reg.host


def test_registry_keep_leaves_storage_and_log(tmp_path: Path) -> None:
    with LocalRegistry(workdir=tmp_path / "reg", debug=True) as reg, RegistryClient(reg.host) as c:
        push_image(c, "kept/repo", make_image(seed=2), tag="v1")
    assert (tmp_path / "reg" / "storage" / "docker" / "registry" / "v2" / "repositories").is_dir()
    assert "kept/repo" in (tmp_path / "reg" / "registry.log").read_text()


def test_forgotten_registry_is_stopped_by_gc() -> None:
    reg = LocalRegistry().start()
    proc = reg._proc
    assert proc is not None
    workdir = reg.workdir
    del reg
    gc.collect()
    assert proc.wait(timeout=5) is not None
    assert workdir is not None
    assert not workdir.exists()


def test_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RegistryStartError, match="not found or not executable"):
        LocalRegistry(binary=str(tmp_path / "no-registry")).start()


def test_registry_env_overrides_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    # distribution would read this as `auth: file:` and refuse to start
    monkeypatch.setenv("REGISTRY_AUTH_FILE", "/nonexistent/auth.json")
    monkeypatch.setenv("REGISTRY_HTTP_ADDR", "127.0.0.1:1")
    with LocalRegistry() as reg, RegistryClient(reg.host) as client:
        client.ping()


def test_bcrypt_hash_is_accepted_by_distribution() -> None:
    hashed = bcrypt_hash("pw", cost=4)
    assert hashed.startswith("$2")
    assert hashed != bcrypt_hash("pw", cost=4)  # salted
    with pytest.raises(UsageError, match=r"expected 4\.\.31"):
        bcrypt_hash("pw", cost=3)


class _Receiver:
    """A loopback webhook receiver recording each delivery's headers and JSON body."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], dict[str, object]]] = []
        self.arrived = threading.Condition()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with owner.arrived:
                    owner.deliveries.append((dict(self.headers), json.loads(body)))
                    owner.arrived.notify_all()
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = LoopbackServer(Handler)

    @property
    def url(self) -> str:
        return f"{self.server.url}/events"

    def wait_for(self, predicate: object, timeout: float = 10.0) -> list[dict[str, object]]:
        deadline = time.monotonic() + timeout
        with self.arrived:
            while True:
                events = [e for _, body in self.deliveries for e in body["events"]]  # type: ignore[attr-defined]
                found = [e for e in events if predicate(e)]  # type: ignore[operator]
                if found or time.monotonic() > deadline:
                    return found
                self.arrived.wait(timeout=0.1)


@pytest.fixture
def receiver() -> Iterator[_Receiver]:
    rec = _Receiver()
    with rec.server:
        yield rec


def test_notifications_reach_the_endpoint_with_headers(receiver: _Receiver) -> None:
    with (
        LocalRegistry(
            notifications=receiver.url,
            notification_headers={"Authorization": "Bearer hook-secret"},
            ignored_actions=["pull"],
        ) as reg,
        RegistryClient(reg.host) as client,
    ):
        image = make_image(seed=8)
        push_image(client, "hooked/app", image, tag="v1")
        pushes = receiver.wait_for(
            lambda e: e["action"] == "push" and e["target"].get("tag") == "v1"
        )
    assert pushes, "no push event arrived"
    target = pushes[0]["target"]
    assert target["digest"] == image.manifest_digest  # type: ignore[index]
    assert target["repository"] == "hooked/app"  # type: ignore[index]
    assert pushes[0]["request"]["useragent"].startswith("regwarden/")  # type: ignore[index]
    headers = receiver.deliveries[0][0]
    assert headers["Authorization"] == "Bearer hook-secret"
    assert headers["Content-Type"].startswith("application/vnd.docker.distribution.events.v1+json")


# -- image builder -------------------------------------------------------------------------------


def test_images_are_reproducible_and_seeded() -> None:
    when = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    a = make_image(layers=2, labels={"x": "1"}, created=when, seed=1)
    b = make_image(layers=2, labels={"x": "1"}, created=when, seed=1)
    c = make_image(layers=2, labels={"x": "1"}, created=when, seed=2)
    assert a.manifest_digest == b.manifest_digest
    assert a.manifest_digest != c.manifest_digest
    assert set(a.layer_digests).isdisjoint(c.layer_digests)
    with pytest.raises(UsageError, match="expected a timezone"):
        make_image(created=datetime(2025, 1, 1))


def test_built_image_is_internally_consistent(tmp_path: Path) -> None:
    when = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    image = build_image(
        tmp_path, tag="v1", layers=3, layer_size=4096, labels={"team": "payments"}, created=when
    )
    manifest = json.loads(image.manifest)
    assert manifest["config"]["mediaType"] == OCI_CONFIG
    assert [layer["mediaType"] for layer in manifest["layers"]] == [OCI_LAYER_GZIP] * 3
    assert manifest["annotations"]["org.opencontainers.image.created"] == "2025-06-01T12:00:00Z"
    config = json.loads(image.config)
    assert config["config"]["Labels"] == {"team": "payments"}
    assert config["created"] == "2025-06-01T12:00:00Z"
    diff_ids = ["sha256:" + hashlib.sha256(gzip.decompress(b)).hexdigest() for b in image.layers]
    assert config["rootfs"]["diff_ids"] == diff_ids
    for digest, data in image.blobs.items():
        assert (tmp_path / "blobs" / "sha256" / digest.split(":")[1]).read_bytes() == data
    assert json.loads((tmp_path / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}


def test_skopeo_reads_our_layout(tmp_path: Path) -> None:
    image = build_image(tmp_path, tag="v1", layers=1, seed=4)
    index = build_index(tmp_path, tag="multi", seed=5)
    raw = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci:{tmp_path}:v1"], capture_output=True, check=True
    ).stdout
    assert raw == image.manifest
    raw_index = subprocess.run(
        ["skopeo", "inspect", "--raw", f"oci:{tmp_path}:multi"], capture_output=True, check=True
    ).stdout
    assert raw_index == index.index
    plats = [m["platform"]["architecture"] for m in json.loads(raw_index)["manifests"]]
    assert plats == ["amd64", "arm64"]


def test_open_layout_lists_valid_tags(tmp_path: Path) -> None:
    build_image(tmp_path, tag="a")
    build_image(tmp_path, tag="b", seed=1)
    build_image(tmp_path, tag="a", seed=2)  # replaces a
    assert open_layout(tmp_path, "a").descriptor.digest == make_image(seed=2).manifest_digest
    with pytest.raises(UsageError, match="no tag 'c'; valid: b, a"):
        open_layout(tmp_path, "c")
    with pytest.raises(UsageError, match="got 2 entries and no tag"):
        open_layout(tmp_path)
