"""The report's I/O shell: read the registry (over the OCI data plane) and the ledger
into an `Inventory`. No aggregation here (`_summarise` does that, purely).

Images are found by tag (the Distribution API lists tags only) and by the digests the
ledger saw pushed (untagged ones the tag listing cannot show). cosign's
`sha256-HEX.sig|att|sbom` tags, and the referrers tag `sha256-HEX`, are artifacts of
`sha256:HEX`: a `.sig` tag marks the image signed; an artifact whose subject is gone is
orphaned."""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..errors import NotFound
from ..store import VerdictReader, VerdictRecord
from ._history import report_summaries
from ._model import (
    ImageFact,
    Inventory,
    PullFact,
    QuarantineRow,
    RetentionPlanSummary,
    RetentionRun,
)

if TYPE_CHECKING:
    from ..oci import Manifest, RegistryClient
    from ..policy import Policy

__all__ = [
    "ANNOTATION_BASE_NAME",
    "ANNOTATION_CREATED",
    "collect",
    "read_quarantines",
    "read_retention_runs",
    "registry_pull_times",
]

ANNOTATION_BASE_NAME = "org.opencontainers.image.base.name"
ANNOTATION_CREATED = "org.opencontainers.image.created"
_COSIGN_TAG = re.compile(r"^sha256-([0-9a-f]{64})(?:\.(sig|att|sbom))?$")
"""cosign's `.sig|.att|.sbom` tags, and the OCI referrers tag schema's bare `sha256-HEX`
(the index of an image's referrers where the registry has no referrers API): artifacts
of `sha256:HEX`, not images."""
_RUN_KIND = "retention-run"  # retention.running's RUN_KIND: one record per applied run


def _created(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo is not None else None


def _annotation(manifest: Manifest, key: str) -> str | None:
    annotations = manifest.data.get("annotations")
    value = annotations.get(key) if isinstance(annotations, dict) else None
    return value if isinstance(value, str) else None


class _Reader:
    """Reads one image's facts; one instance per report (its caches are per registry).

    An image's creation time is its manifest's `org.opencontainers.image.created`
    annotation where it has one (the manifest is read anyway), else its config's `created`:
    a config GET per image is as many requests again as the manifests, and on distribution
    a blob GET costs more than a manifest GET (bench/report.py: the report's reads halve)."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client

    def facts(
        self, repo: str, digest: str, manifest: Manifest | None = None
    ) -> tuple[dict[str, int], int, datetime | None, Manifest]:
        """(blobs → size, layer count, created, the manifest) of one manifest or index;
        `manifest`: already fetched (by tag), so it is not asked for again."""
        if manifest is None:
            manifest = self.client.get_manifest(repo, digest)
        images = [manifest]
        if manifest.is_index:
            images = [m for m in self.client.index_tree(repo, manifest).values() if not m.is_index]
        blobs: dict[str, int] = {}
        layers = 0
        created: datetime | None = None
        for image in images:
            layers = max(layers, len(image.layers))
            for desc in (image.config, *image.layers):
                if desc is not None:
                    blobs[desc.digest] = desc.size
        annotated = _annotation(manifest, ANNOTATION_CREATED) or (
            _annotation(images[0], ANNOTATION_CREATED) if images else None
        )
        created = _created(annotated)
        config = images[0].config if images else None
        if created is None and config is not None and config.size <= 1 << 20:
            try:
                doc = json.loads(self.client.get_blob(repo, config.digest))
                created = _created(doc.get("created")) if isinstance(doc, dict) else None
            except (NotFound, ValueError):
                created = None  # an artifact's config may be empty or absent
        return blobs, layers, created, manifest


def _quarantine_records(ledger: Any) -> list[Any] | None:
    """`ledger.quarantines()` (every record, one audit read), None for a ledger without it."""
    listing = getattr(ledger, "quarantines", None)
    return list(listing()) if callable(listing) else None


def read_quarantines(
    ledger: Any,
    registry: str,
    records: list[Any] | None = None,
    actions: Sequence[Any] | None = None,
) -> list[QuarantineRow]:
    """Every quarantine the ledger holds for `registry`, with the release's reason.
    `records`: `ledger.quarantines()` already read; else read here where the store has
    it, else found through its quarantine actions. `actions`: `ledger.actions()` already
    read (every status)."""
    releases: dict[tuple[str, str], tuple[datetime, str]] = {}
    quarantine_keys: list[tuple[str, str]] = []
    for action in ledger.actions() if actions is None else actions:
        if action.registry != registry:
            continue
        where = (action.repository, action.digest)
        if action.kind == "release" and action.status == "done":
            if where not in releases or releases[where][0] <= action.at:
                by = action.state.get("by")  # who released it, where the release kept it
                why = f"{by}: {action.reason}" if by else action.reason
                releases[where] = (action.at, why)
        elif action.kind == "quarantine":
            quarantine_keys.append(where)
    if records is None:
        records = _quarantine_records(ledger)
    if records is not None:
        records = [q for q in records if q.registry == registry]
    else:
        records = [
            q
            for repo, digest in dict.fromkeys(quarantine_keys)
            if (q := ledger.quarantined(registry, repo, digest)) is not None
        ]
    return [
        QuarantineRow(
            repository=q.repository,
            digest=q.digest,
            strategy=q.strategy,
            reason=q.reason,
            quarantined_at=q.quarantined_at,
            released_at=q.released_at,
            released_because=(
                releases[(q.repository, q.digest)][1]
                if q.released_at is not None and (q.repository, q.digest) in releases
                else None
            ),
        )
        for q in records
    ]


def read_retention_runs(
    ledger: Any, registry: str, actions: Sequence[Any] | None = None
) -> list[RetentionRun]:
    """Applied retention runs (`retention-run` action records) and what each freed.
    `actions`: `ledger.actions()` already read (every status)."""
    runs: list[RetentionRun] = []
    for action in ledger.actions(status=None) if actions is None else actions:
        if action.kind != _RUN_KIND or action.registry != registry or action.status == "intent":
            continue
        state = action.state
        runs.append(
            RetentionRun(
                run_id=str(state.get("run_id") or action.key.split(":", 1)[-1]),
                at=action.at,
                status=str(state.get("status") or action.status),
                deleted=int(state.get("deleted") or 0) + int(state.get("already_gone") or 0),
                bytes_freed=int(state.get("bytes_freed") or 0),
            )
        )
    return runs


def _matches(repo: str, globs: Sequence[str]) -> bool:
    return not globs or any(fnmatch.fnmatchcase(repo, g) for g in globs)


def collect(
    client: RegistryClient,
    ledger: Any,
    *,
    registry: str,
    globs: Sequence[str] = (),
    repositories: Iterable[str] | None = None,
    policy: Policy | None = None,
    retention_plan: RetentionPlanSummary | None = None,
    history: int = 30,
    workers: int = 8,
    progress: Callable[[int, int], None] | None = None,
    registry_pull_times: Callable[[str], Mapping[str, datetime | None]] | None = None,
) -> Inventory:
    """Read every image of `registry` (repositories matching `globs`) and the ledger's
    verdicts, quarantines, retention runs and earlier report summaries. `repositories`:
    the provider's listing (default: the data plane's catalog). `progress(done, total)`:
    called with (0, repositories) first, then after each repository is read.

    Reads go through one pool of `workers` threads; one repository's reads are queued
    while the previous one's finish, so the pool does not idle at each repository's end.

    Pulls: each repository's pull tallies and pull-tracking start are read from the ledger
    in one call each (`Ledger.pull_tallies`, `pull_tracking_since`; none per image).
    `registry_pull_times(repository)`: digest → the registry's own last-pulled time, for a
    registry that keeps them (ECR's `lastRecordedPullTime`, `CAP_PULL_TIMES`)."""
    listed = client.catalog() if repositories is None else repositories
    repos = sorted(r for r in listed if _matches(r, globs))
    reader = _Reader(client)
    images: list[ImageFact] = []
    pulls: list[PullFact] = []
    tracking: dict[str, datetime | None] = {}
    notes: list[str] = []
    if progress is not None:
        progress(0, len(repos))
    with (
        ThreadPoolExecutor(max_workers=workers, thread_name_prefix="report") as pool,
        ThreadPoolExecutor(max_workers=2, thread_name_prefix="report-repo") as lanes,
    ):
        every_quarantine = _quarantine_records(ledger)
        moved = _moved(every_quarantine or [], registry)
        pending = []
        pulled = []
        for repo in repos:  # a repository's pulls are read beside its images, in its turn
            pending.append(
                lanes.submit(
                    _repository, client, ledger, pool, reader, registry, repo, policy, moved, notes
                )
            )
            pulled.append(lanes.submit(_pulls, ledger, registry, repo, registry_pull_times))
        for done, (repo, future, pull_future) in enumerate(
            zip(repos, pending, pulled, strict=True), start=1
        ):
            facts = future.result()
            tallies, since, registry_times = pull_future.result()
            if registry_times:
                facts = [
                    f.model_copy(update={"registry_last_pulled": registry_times.get(f.digest)})
                    for f in facts
                ]
            images.extend(facts)
            pulls.extend(tallies)
            tracking[repo] = since
            if progress is not None:
                progress(done, len(repos))
    # every action record, read once: on DynamoDB the audit read is a Scan, and the
    # quarantine log, the retention history and the earlier reports each need them
    actions = list(ledger.actions())
    rows = read_quarantines(ledger, registry, every_quarantine, actions)
    teams = {r: _team(policy, r) for r in {q.repository for q in rows}}
    rows = [
        q.model_copy(update={"team": teams[q.repository]})
        for q in rows
        if _matches(q.repository, globs)
    ]
    previous = tuple(report_summaries(ledger, registry, limit=history, actions=actions))
    return Inventory(
        registry=registry,
        images=tuple(images),
        quarantines=tuple(rows),
        retention_runs=tuple(read_retention_runs(ledger, registry, actions)),
        retention_plan=retention_plan,
        previous=previous,
        pull_times_known=registry_pull_times is not None
        or bool(pulls)
        or any(s is not None for s in tracking.values())
        or any(i.last_pulled is not None for i in images),
        pulls=tuple(pulls),
        pull_tracking=tracking,
        registry_pull_times=registry_pull_times is not None,
        notes=tuple(notes),
    )


def registry_pull_times(
    provider: Any,
) -> Callable[[str], Mapping[str, datetime | None]] | None:
    """For a registry that keeps last-pulled times itself (`CAP_PULL_TIMES`: ECR), a reader
    of one repository's (its image listing: one paginated call); None for the others."""
    from ..providers import CAP_PULL_TIMES

    if CAP_PULL_TIMES not in getattr(provider, "capabilities", frozenset()):
        return None

    def times(repo: str) -> Mapping[str, datetime | None]:
        try:
            listed = provider.list_images(repo)
        except NotFound:
            return {}
        return {i.digest: i.last_pulled for i in listed}

    return times


def _pulls(
    ledger: Any,
    registry: str,
    repo: str,
    registry_pull_times: Callable[[str], Mapping[str, datetime | None]] | None,
) -> tuple[list[PullFact], datetime | None, Mapping[str, datetime | None] | None]:
    """(the ledger's pull tallies, when it began tracking pulls, the registry's own
    last-pulled times) of one repository: one ledger read each, one registry listing."""
    tallies = getattr(ledger, "pull_tallies", None)
    began = getattr(ledger, "pull_tracking_since", None)
    facts = [
        PullFact(
            repository=repo,
            digest=t.digest,
            principal=t.principal,
            count=t.count,
            last_pulled=t.last_pulled,
        )
        for t in (tallies(registry, repo) if callable(tallies) else ())
    ]
    since = began(registry, repo) if callable(began) else None
    times = registry_pull_times(repo) if registry_pull_times is not None else None
    return facts, since, times


def _team(policy: Policy | None, repo: str) -> str | None:
    return None if policy is None else policy.for_repository(repo).team


def _max_scan_age(policy: Policy | None, repo: str) -> float | None:
    if policy is None:
        return None
    vulns = policy.for_repository(repo).vulnerabilities
    age = getattr(vulns, "max_scan_age", None) if vulns is not None else None
    return None if age is None else float(age.total_seconds())


def _verdicts(ledger: Any, registry: str, repo: str) -> dict[str, VerdictRecord] | None:
    """The repository's last verdicts in one read, where the store has it (every store
    does: `store.VerdictReader`); None for a ledger without it (read image by image)."""
    if isinstance(ledger, VerdictReader):
        return ledger.repository_verdicts(registry, repo)
    return None


def _last_verdict(
    ledger: Any,
    verdicts: dict[str, VerdictRecord] | None,
    registry: str,
    repo: str,
    digest: str,
) -> tuple[str | None, datetime | None, dict[str, int] | None]:
    """(outcome, when, findings by severity) of the image's last verdict."""
    if verdicts is not None:
        last = verdicts.get(digest)
        if last is None:
            return None, None, None
        return last.outcome, last.at, None if last.findings is None else dict(last.findings)
    log = getattr(ledger, "verdict_log", None)
    entries = log(registry, repo, digest) if callable(log) else []
    if entries:
        return entries[-1][1], entries[-1][2], None
    return ledger.last_verdict(registry, repo, digest), None, None


def _moved(records: Iterable[Any], registry: str) -> dict[tuple[str, str], str]:
    """(quarantine repository, digest) → source repository of every standing quarantine
    by `move` (the image sits in the quarantine repository, its records under the source)."""
    return {
        (q.location, q.digest): q.repository
        for q in records
        if q.registry == registry and q.released_at is None and q.location != q.repository
    }


def _signed(tags: Iterable[str]) -> set[str]:
    """The digests a cosign `.sig` tag among `tags` names."""
    return {
        "sha256:" + m.group(1)
        for t in tags
        if (m := _COSIGN_TAG.match(t)) is not None and m.group(2) == "sig"
    }


def _tags_or_empty(client: RegistryClient, repo: str) -> list[str]:
    try:
        return client.list_tags(repo)
    except NotFound:
        return []  # the source repository is gone


def _by_tag(client: RegistryClient, repo: str, tag: str) -> Manifest | None:
    try:
        return client.get_manifest(repo, tag)
    except NotFound:
        return None  # untagged between the listing and this read


def _repository(
    client: RegistryClient,
    ledger: Any,
    pool: ThreadPoolExecutor,
    reader: _Reader,
    registry: str,
    repo: str,
    policy: Policy | None,
    moved: dict[tuple[str, str], str],
    notes: list[str],
) -> list[ImageFact]:
    tags = client.list_tags(repo)
    # GET each tag's manifest (not HEAD, then GET by digest): one request per tag, and
    # the facts below read the body fetched here.
    fetched = list(pool.map(lambda t: _by_tag(client, repo, t), tags))
    by_digest: dict[str, list[str]] = {}
    manifests: dict[str, Manifest] = {}
    for tag, manifest in zip(tags, fetched, strict=True):
        if manifest is not None:
            by_digest.setdefault(manifest.digest, []).append(tag)
            manifests[manifest.digest] = manifest
    times: dict[str, tuple[datetime, datetime | None]] = ledger.image_times(registry, repo)
    verdicts = _verdicts(ledger, registry, repo)
    untagged = [d for d in times if d not in by_digest]
    present = list(pool.map(lambda d: client.head_manifest(repo, d), untagged))
    for digest, desc in zip(untagged, present, strict=True):
        if desc is not None:  # the ledger saw it pushed and the registry still holds it
            by_digest[digest] = []
    digests = sorted(by_digest)
    # an image quarantined here by `move` is its source repository's: its verdict, its team
    # and its signature (the .sig tag stays in the source) are read there
    source = {d: moved.get((repo, d), repo) for d in digests}
    verdicts_of = {repo: verdicts}
    signed_of = {repo: _signed(tags)}
    times_of = {repo: times}
    for other in set(source.values()) - {repo}:
        verdicts_of[other] = _verdicts(ledger, registry, other)
        signed_of[other] = _signed(_tags_or_empty(client, other))
        times_of[other] = ledger.image_times(registry, other)

    def one(digest: str) -> ImageFact | None:
        try:
            blobs, layers, created, manifest = reader.facts(repo, digest, manifests.get(digest))
        except NotFound:
            return None  # deleted between the listing and this read
        tag_list = tuple(sorted(by_digest[digest]))
        cosign = [m for t in tag_list if (m := _COSIGN_TAG.match(t)) is not None]
        subject = manifest.subject
        artifact = bool(cosign) or subject is not None
        base = _annotation(manifest, ANNOTATION_BASE_NAME)
        home = source[digest]
        verdict, verdict_at, findings = (
            (None, None, None)
            if artifact
            else _last_verdict(ledger, verdicts_of[home], registry, home, digest)
        )
        seen = times_of[home].get(digest) or times.get(digest)
        first_seen, last_pulled = seen if seen is not None else (None, None)
        return ImageFact(
            repository=repo,
            digest=digest,
            team=_team(policy, home),
            kind="artifact" if artifact else "image",
            tags=tag_list,
            blobs=blobs,
            layers=layers,
            created=created,
            first_seen=first_seen,
            last_pulled=last_pulled,
            subject=("sha256:" + cosign[0].group(1))
            if cosign
            else (subject.digest if subject else None),
            signed=None if artifact else digest in signed_of[home],
            verdict=verdict,
            verdict_at=verdict_at,
            findings=findings,
            base_name=base,
            max_scan_age_s=None if artifact else _max_scan_age(policy, home),
        )

    facts = [f for f in pool.map(one, digests) if f is not None]
    return facts
