"""The report bench's smoke test at a tiny size: it seeds a real registry with its own OCI
client (shared base layers mounted, one unique layer each), the floor reads every tag,
and the report counts every seeded image; the JSON has the figures the bench promises.
The 10,000-image figure itself is not CI's (`bench/report.py`, issue #15)."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from regwarden.devtools import LocalRegistry
from regwarden.oci import RegistryClient

ROOT = Path(__file__).resolve().parents[2]
# bench/ is not a package: load the script under a name of its own
_spec = importlib.util.spec_from_file_location("bench_report", ROOT / "bench" / "report.py")
assert _spec is not None and _spec.loader is not None
bench = importlib.util.module_from_spec(_spec)
sys.modules["bench_report"] = bench
_spec.loader.exec_module(bench)

pytestmark = pytest.mark.integration


@pytest.fixture
def registry() -> Iterator[LocalRegistry]:
    """A registry of this test's own: the seed's repository names (bench/rNNN) are the
    same in every run, and the session's registry would hold an earlier run's images."""
    with LocalRegistry() as reg:
        yield reg


def test_seed_shares_base_layers_and_pushes_each_image(registry: LocalRegistry) -> None:
    with RegistryClient(registry.host, insecure=True) as client:
        seeded = bench.seed(client, images=7, repositories=3, base_layers=2, concurrency=4)
        assert seeded.images == 7
        assert seeded.repositories == ["bench/r000", "bench/r001", "bench/r002"]
        per_repo = [len(client.list_tags(r)) for r in seeded.repositories]
        # 3 + 2 + 2 images, each with one tag, and `latest` on each repository's newest
        assert per_repo == [4, 3, 3]
        assert seeded.tags == sum(per_repo)
        bases = {bench._digest(blob) for blob, _ in seeded.base}
        seen: dict[str, set[str]] = {}
        for repo in seeded.repositories:
            for tag in client.list_tags(repo):
                layers = [d.digest for d in client.get_manifest(repo, tag).layers]
                assert set(layers[:2]) == bases  # every image on the same base
                seen.setdefault(layers[2], set()).add(tag)
        assert len(seen) == 7  # and one layer of its own


def test_bench_prints_the_figures(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench.main(["--images", "6", "--repositories", "2"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 6 and result["repositories"] == 2
    assert result["concurrency"] == 8  # collect's pool, which the floor matches
    assert result["seed"]["tags"] == 8
    assert result["report"]["images_counted"] == 6
    assert set(result["report"]["phases_s"]) == {"collect", "summarise", "render_html"}
    assert result["report"]["html_bytes"] > 0
    for key in ("seconds", "images_per_s"):
        assert result["floor"][key] > 0 and result["report"][key] > 0
    floor_s = result["floor"]["seconds"]  # rounded to the ms: milliseconds at this size
    assert result["ratio_to_floor"] == pytest.approx(
        result["report"]["seconds"] / floor_s, rel=0.01 + 0.0006 / floor_s
    )
    assert result["floor_with_configs"]["seconds"] > 0 and result["created_annotation"]
    assert result["target_s"] == 30.0
    assert isinstance(result["within_target"], bool)


@pytest.mark.parametrize("annotate", [True, False], ids=["created-annotation", "no-annotation"])
def test_collect_reports_its_progress_over_repositories_and_reads_each_image_once(
    registry: LocalRegistry, tmp_path: Path, annotate: bool
) -> None:
    """collect calls progress(0, total) first, then once per repository read, in order;
    it GETs each tag's manifest once (no HEAD first), and each config once only where the
    manifest has no `org.opencontainers.image.created` annotation to date the image by."""
    from regwarden.report import collect
    from regwarden.store import SqliteLedger

    with RegistryClient(registry.host, insecure=True) as client:
        seeded = bench.seed(
            client, images=6, repositories=3, base_layers=1, concurrency=2, annotate=annotate
        )
    seen: list[tuple[int, int]] = []
    requests: list[tuple[str, str]] = []

    class Recording(httpx.HTTPTransport):
        def handle_request(self, request: httpx.Request) -> httpx.Response:
            requests.append((request.method, request.url.path))
            return super().handle_request(request)

    with (
        RegistryClient(registry.host, insecure=True, transport=Recording()) as client,
        closing(SqliteLedger(tmp_path / "ledger.db")) as ledger,
    ):
        inventory = collect(
            client,
            ledger,
            registry=registry.host,
            repositories=seeded.repositories,
            progress=lambda done, total: seen.append((done, total)),
        )
    assert len(inventory.images) == 6
    assert seen == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert not [r for r in requests if r[0] == "HEAD"]
    manifests = [p for m, p in requests if m == "GET" and "/manifests/" in p]
    assert len(manifests) == seeded.tags  # one GET per tag, none again by digest
    configs = [p for m, p in requests if m == "GET" and "/blobs/" in p]
    assert len(configs) == (0 if annotate else 6)
    # dated the same either way: the seed writes one time to the annotation and the config
    created = {(i.repository, i.created) for i in inventory.images}
    expected = {
        (repo, bench.NOW - timedelta(days=(n * 7 + r) % 400, minutes=n))
        for r, repo in enumerate(seeded.repositories)
        for n in range(2)
    }
    assert created == expected
