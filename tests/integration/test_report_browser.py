"""The HTML report in headless Chromium (Debian's `chromium`): screenshots are not blank
(pixel variance), and opening the page makes no network request — Chromium is launched
with `--proxy-server` pointed at a loopback counter and `--proxy-bypass-list=<-loopback>`
(so even loopback requests go through it; only the browser's own service hosts bypass
it), and the counter must see none. A control page that does reference another host and
a loopback address proves the counter sees what a page asks for.

Skipped where `chromium` is absent (with the reason); CI installs it (`.ci/run`), and
there a missing browser fails."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from regwarden.report import (
    ImageFact,
    Inventory,
    PullFact,
    QuarantineRow,
    RetentionRun,
    render_html,
    summarise,
)

pytestmark = pytest.mark.integration

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
BROWSER_SERVICES = (
    "clients2.google.com",
    "update.googleapis.com",
    "redirector.gvt1.com",
    "accounts.google.com",
)
"""Hosts Chromium itself calls at start-up whatever the flags (Debian's build, seen here:
network time, component updates, accounts), named exactly — no wildcard — so that no other
host of those domains (fonts.googleapis.com, say) could slip past the counter."""
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def chromium() -> str:
    if CHROMIUM is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is not installed (.ci/run installs Debian's chromium)")
        pytest.skip("chromium is not installed: apt-get install chromium to run this test")
    return CHROMIUM


class ProxyCounter:
    """A loopback 'proxy' that counts the connections made to it and answers 502."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self.requests: list[bytes] = []
        self.seen = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    head = conn.recv(4096)
                except OSError:
                    head = b""
                self.requests.append(head.split(b"\r\n", 1)[0])
                self.seen.set()
                with contextlib.suppress(OSError):
                    conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def proxy() -> Iterator[ProxyCounter]:
    counter = ProxyCounter()
    yield counter
    counter.close()


def _screenshot(chromium: str, page: Path, png: Path, proxy: ProxyCounter, tmp: Path) -> None:
    args = [
        chromium,
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-client-side-phishing-detection",
        "--disable-domain-reliability",
        "--no-pings",
        f"--proxy-server=http://127.0.0.1:{proxy.port}",
        # loopback too goes through the counter; the browser's own services (network
        # time, component and extension updates, accounts) go direct, so that what the
        # counter sees is what the page asked for — the report references no host at all
        # (test_report.py checks its text), so none of these names can hide a request of it
        "--proxy-bypass-list=<-loopback>;" + ";".join(BROWSER_SERVICES),
        "--window-size=1280,3000",
        "--hide-scrollbars",
        f"--screenshot={png}",
        page.as_uri(),
    ]
    if os.geteuid() == 0:
        args.insert(1, "--no-sandbox")  # Chromium refuses to run as root with its sandbox
    proc = subprocess.run(args, capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert png.exists(), proc.stderr[-2000:]


def _report_page(tmp: Path) -> Path:
    day = timedelta(days=1)
    images = tuple(
        ImageFact(
            repository=f"team{i % 3}/svc{i % 5}",
            digest=f"sha256:{i:064x}",
            team=f"team{i % 3}",
            tags=("latest",) if i % 4 == 0 else (f"1.{i}.0",) if i % 3 else (),
            blobs={f"sha256:{(i % 7):064x}": 30_000_000, f"sha256:{1000 + i:064x}": 2_000_000 * i},
            layers=2 + i % 4,
            created=NOW - day * (i * 13),
            signed=i % 2 == 0,
            verdict=("PASSED", "WARN", "FAILED", None)[i % 4],
            verdict_at=NOW - day * i,
            # the findings plots (stacked by severity) are drawn and must ask for nothing
            findings={"critical": i % 2, "high": i % 3, "low": 1} if i % 5 else None,
            base_name="docker.io/library/debian:12" if i % 2 else None,
        )
        for i in range(40)
    )
    inventory = Inventory(
        registry="registry.example",
        images=images,
        quarantines=(
            QuarantineRow(
                repository="team1/svc1",
                digest=images[1].digest,
                team="team1",
                strategy="move",
                reason="image is not signed",
                quarantined_at=NOW - day * 2,
                released_at=NOW - day,
                released_because="alice: false positive",
            ),
        ),
        retention_runs=(
            RetentionRun(
                run_id="r1", at=NOW - day * 8, status="done", deleted=12, bytes_freed=9 << 30
            ),
            RetentionRun(run_id="r2", at=NOW - day, status="done", deleted=3, bytes_freed=1 << 30),
        ),
        previous=(
            {
                "registry": "registry.example",
                "at": (NOW - day * 7).isoformat(),
                "bytes": 2 << 30,
                "images": 30,
            },
        ),
        # the Pulls section's plot and tables are drawn too (issue #16)
        pulls=tuple(
            PullFact(
                repository=images[i].repository,
                digest=images[i].digest,
                principal=("ci", "system:serviceaccount:prod:deployer", "")[i % 3],
                count=100 - 7 * i,
                last_pulled=NOW - day * i,
            )
            for i in range(12)
        ),
        pull_tracking={f"team{i % 3}/svc{i % 5}": NOW - day * 30 for i in range(15)},
        pull_times_known=True,
    )
    page = tmp / "report.html"
    page.write_text(render_html(summarise(inventory, now=NOW)), encoding="utf-8")
    return page


def _stddev(png: Path, box: tuple[int, int, int, int] | None = None) -> float:
    from PIL import Image, ImageStat

    with Image.open(png) as img:
        gray = img.convert("L")
        if box is not None:
            gray = gray.crop(box)
        return float(ImageStat.Stat(gray).stddev[0])


def test_the_report_renders_and_asks_for_nothing(
    chromium: str, proxy: ProxyCounter, tmp_path: Path
) -> None:
    page = _report_page(tmp_path)
    png = tmp_path / "report.png"
    _screenshot(chromium, page, png, proxy, tmp_path)
    assert proxy.requests == [], [r.decode() for r in proxy.requests]
    assert _stddev(png) > 10  # a blank (all-white) page is 0
    for top in (0, 1000, 2000):  # each third of the page has content (tables and plots)
        assert _stddev(png, (0, top, 1280, top + 1000)) > 5, f"blank from y={top}"


def test_the_counter_sees_a_page_that_asks_for_another_host(
    chromium: str, proxy: ProxyCounter, tmp_path: Path
) -> None:
    """The control: without it a counter that never counts would pass the test above."""
    page = tmp_path / "control.html"
    page.write_text(
        "<!DOCTYPE html><html><body><p>control</p>"
        "<img src='http://report-control.example/pixel.png'>"
        "<img src='http://127.0.0.1:8123/loopback.png'></body></html>"
    )
    _screenshot(chromium, page, tmp_path / "control.png", proxy, tmp_path)
    assert proxy.seen.wait(10)
    wanted = (b"report-control.example", b"127.0.0.1:8123/loopback.png")
    for host in wanted:  # another host, and loopback: both through the counter
        assert any(host in r for r in proxy.requests), proxy.requests
