"""The retention planner: records + rules + protections + now → a plan. Pure.

Per repository, in one pass each:

1. Sort once: newest first by age anchor (push or ledger first-seen time; with
   `ageFrom: created`, the config's `created` first; unknown last), ties by digest.
   Every ranking and the decision order reuse this order, so plans do not depend on
   input order.
2. Classify each manifest: a referrer (it has a `subject`, or only cosign
   `sha256-<hex>.sig|.att|.sbom` tags) whose subject is here follows that subject; one
   whose subject is gone is an orphan; an untagged manifest listed by an index here
   follows its index; everything else is an image, judged by the rules. A superseded
   verdict attestation (regwarden wrote a newer one for the same image; the caller names
   them from the ledger) is an orphan too, while untagged: only the latest follows its
   subject.
3. Protections (in use, locked, quarantined), then keep rules, then delete rules, decide
   each image. KEEP always wins; an image no delete rule selects is kept. An image of
   unknown age is never selected by an age rule, and its decision says so.
4. Closure from everything kept: children of a kept index, referrers of a kept manifest
   and the subject of a kept referrer are kept too, even if a delete rule selected them.
5. Whatever is not kept is deleted: selected images and orphans, and the children and
   referrers of deleted manifests (named as such).
6. The guard: too many deletions, or too large a share, and the plan deletes nothing.

Because kept manifests never depend on deleted ones, applying a plan and planning again
with the same rules and `now` deletes nothing more.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime

from ...errors import UsageError
from ._plan import Decision, GuardTrip, RegistryPlan, RepositoryPlan, Role
from ._protections import NO_PROTECTIONS, Protections
from ._records import ImageRecord, cosign_subject
from ._rules import DeleteOrphans, Guard, RetentionRules
from ._view import COMPLETE_PULLS, AgeFrom, PullTracking, RepoView, human_duration, record_time

__all__ = ["plan_registry", "plan_repository"]

_IMAGE: Role = "image"
_CHILD: Role = "child"
_REFERRER: Role = "referrer"
_ORPHAN: Role = "orphan"
_DEFAULT = ("default", "kept: no delete rule selected it")
_INF = float("inf")
_JUDGED = (_IMAGE, _ORPHAN)  # roles whose fate is not derived from another manifest
_COSIGN_PREFIXES = ("sha256-", "sha512-")


def _newest_pushed(r: ImageRecord) -> tuple[float, str]:
    """Sort key (`ageFrom: pushed`): newest push first, unknown last, then digest."""
    t = r.pushed
    if t is None:
        return (_INF, r.digest)
    return (-t, r.digest)


def _newest_created(r: ImageRecord) -> tuple[float, str]:
    """Sort key (`ageFrom: created`): newest config created, else push, time first."""
    t = r.created
    if t is None:
        t = r.pushed
        if t is None:
            return (_INF, r.digest)
    return (-t, r.digest)


def _unknown_age(r: ImageRecord, age_from: AgeFrom) -> tuple[str, str]:
    """Why an image no age rule could judge is kept: its age is not known."""
    why = "kept: age unknown (no push time from the registry, and the ledger never saw it pushed)"
    if age_from == "pushed" and r.created is not None:
        made = datetime.fromtimestamp(r.created, UTC).date().isoformat()
        why += f"; its config says created {made}, used only with ageFrom: created"
    return ("ageUnknown", why)


def _decision(fields: tuple[object, ...]) -> Decision:
    """Build a Decision without NamedTuple's Python-level `__new__` (what `_make` does,
    minus its length check): the planner builds one per digest, a million per run."""
    return tuple.__new__(Decision, fields)


def _epoch_now(now: datetime) -> float:
    if not isinstance(now, datetime):
        raise UsageError(f"got now={now!r}, expected a timezone-aware datetime")
    if now.tzinfo is None or now.utcoffset() is None:
        raise UsageError(
            f"got a naive datetime for now ({now.isoformat()}), expected a timezone-aware "
            "one such as datetime.now(UTC)"
        )
    return now.timestamp()


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while planning.

    Planning allocates only acyclic tuples, dicts and strings, which reference counting
    frees; but each allocation burst makes the collector rescan every live record (a
    million in a registry-wide run), which roughly doubled planning time in the benchmark.
    Results do not depend on it; the previous state is restored.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def plan_repository(
    repository: str,
    records: Iterable[ImageRecord],
    rules: RetentionRules,
    *,
    now: datetime,
    protections: Protections | None = None,
    superseded: Collection[str] = (),
    pull_tracking: PullTracking = COMPLETE_PULLS,
) -> RepositoryPlan:
    """Decide keep or delete for every digest of one repository, and why. `superseded`:
    verdict attestations a newer one replaced, judged as orphans while untagged.
    `pull_tracking`: how far back the records' pull data goes (default: complete)."""
    now_s = _epoch_now(now)
    with _collector_paused():
        return _plan(
            repository,
            records,
            rules,
            now_s,
            protections or NO_PROTECTIONS,
            frozenset(superseded),
            pull_tracking,
        )


def plan_registry(
    repositories: Mapping[str, Iterable[ImageRecord]],
    rules: RetentionRules | Callable[[str], RetentionRules | None],
    *,
    now: datetime,
    protections: Protections | Mapping[str, Protections] | None = None,
    max_deletes: int | None = None,
    superseded: Mapping[str, Collection[str]] | None = None,
    pull_tracking: Mapping[str, PullTracking] | None = None,
) -> RegistryPlan:
    """Plan every repository independently (a cloud run may fan them out instead).

    `rules` is one rule set for all, or a function of the repository name returning the
    rules that apply (None: the repository is skipped). `protections` is one set for all
    or a map by repository. `max_deletes` caps the whole run: over it, nothing is deleted.
    `superseded`: by repository, the verdict attestations a newer one replaced.
    `pull_tracking`: by repository, how far back its pull data goes (absent: complete).
    """
    now_s = _epoch_now(now)
    if max_deletes is not None and (type(max_deletes) is not int or max_deletes < 0):
        raise UsageError(f"got max_deletes={max_deletes!r}, expected an integer >= 0 or None")
    with _collector_paused():
        return _plan_all(
            repositories,
            rules,
            now_s,
            protections,
            max_deletes,
            superseded or {},
            pull_tracking or {},
        )


def _plan_all(
    repositories: Mapping[str, Iterable[ImageRecord]],
    rules: RetentionRules | Callable[[str], RetentionRules | None],
    now_s: float,
    protections: Protections | Mapping[str, Protections] | None,
    max_deletes: int | None,
    superseded: Mapping[str, Collection[str]],
    pull_tracking: Mapping[str, PullTracking],
) -> RegistryPlan:
    plans: list[RepositoryPlan] = []
    skipped: list[str] = []
    for name in sorted(repositories):
        repo_rules = rules if isinstance(rules, RetentionRules) else rules(name)
        if repo_rules is None:
            skipped.append(name)
            continue
        if protections is None:
            prot = NO_PROTECTIONS
        elif isinstance(protections, Protections):
            prot = protections
        else:
            prot = protections.get(name, NO_PROTECTIONS)
        old = frozenset(superseded.get(name, ()))
        tracking = pull_tracking.get(name, COMPLETE_PULLS)
        plans.append(_plan(name, repositories[name], repo_rules, now_s, prot, old, tracking))
    total = sum(p.images_deleted for p in plans)
    if max_deletes is not None and total > max_deletes:
        population = sum(len(p.decisions) for p in plans)
        trip = GuardTrip(
            scope="run",
            selected=total,
            population=population,
            limit=max_deletes,
            guard=f"run maxDeletes {max_deletes}",
            bytes=sum(p.bytes_freed for p in plans),
        )
        plans = [_tripped(p, trip) for p in plans]
        return RegistryPlan(plans=tuple(plans), skipped=tuple(skipped), trip=trip)
    return RegistryPlan(plans=tuple(plans), skipped=tuple(skipped))


def _dedupe(records: list[ImageRecord]) -> tuple[dict[str, ImageRecord], int]:
    """Merge records listed more than once (ListImages lists a digest once per tag). The
    merge leans towards keeping: the newest push and pull times, all tags, all children."""
    merged: dict[str, ImageRecord] = {}
    dupes = 0
    for r in records:
        prev = merged.get(r.digest)
        if prev is None:
            merged[r.digest] = r
            continue
        dupes += 1
        merged[r.digest] = ImageRecord(
            r.digest,
            tuple(sorted(set(prev.tags) | set(r.tags))),
            _newest(prev.pushed, r.pushed),
            _newest(prev.last_pulled, r.last_pulled),
            max(prev.size, r.size),
            prev.media_type or r.media_type,
            tuple(sorted(set(prev.children) | set(r.children))),
            prev.subject or r.subject,
            _newest(prev.created, r.created),
            None if prev.pulls is None and r.pulls is None else max(prev.pulls or 0, r.pulls or 0),
        )
    return merged, dupes


def _newest(a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def _plan(
    repository: str,
    records: Iterable[ImageRecord],
    rules: RetentionRules,
    now: float,
    protections: Protections,
    superseded: frozenset[str] = frozenset(),
    pull_tracking: PullTracking = COMPLETE_PULLS,
) -> RepositoryPlan:
    warnings: list[str] = []
    recs = records if isinstance(records, list) else list(records)
    by_digest = {r.digest: r for r in recs}
    if len(by_digest) != len(recs):
        by_digest, dupes = _dedupe(recs)
        warnings.append(f"{dupes} duplicate listings merged (same digest listed again)")

    # 1. sort once: newest first, ties by digest
    age_from = rules.age_from
    order = sorted(
        by_digest.values(), key=_newest_created if age_from == "created" else _newest_pushed
    )

    # 2. classify
    parents: dict[str, list[str]] = {}  # child present here → indexes listing it
    indexes: list[str] = []
    for r in order:
        if r.children:
            d = r.digest
            indexes.append(d)
            for c in r.children:
                if c in by_digest and c != d:
                    parents.setdefault(c, []).append(d)
    subject_of: dict[str, str] = {}  # referrer → subject digest (present or not)
    referrers: dict[str, list[str]] = {}  # subject present here → its referrers
    role: dict[str, Role] = {}  # absent means image
    images: list[ImageRecord] = []
    orphans: list[ImageRecord] = []
    no_push = no_time = by_created = 0
    for r in order:
        # unpacking once is cheaper than five attribute lookups on a NamedTuple
        d, tags, pushed, _, _, _, _, s, created, _ = r
        if pushed is None:
            no_push += 1
        if created is not None and age_from == "created":
            by_created += 1
        elif pushed is None:
            no_time += 1
        if s is None and tags and tags[0].startswith(_COSIGN_PREFIXES):
            s = cosign_subject(tags)
        if not tags and d in superseded:
            # a newer verdict attestation stands for the same image: this one is judged
            # by the orphans rule instead of following its subject
            if s is not None:
                subject_of[d] = s
            role[d] = _ORPHAN
            orphans.append(r)
        elif s is not None:
            subject_of[d] = s
            if s in by_digest and s != d:
                referrers.setdefault(s, []).append(d)
                role[d] = _REFERRER
            else:
                role[d] = _ORPHAN
                orphans.append(r)
        elif not tags and d in parents:
            role[d] = _CHILD
        else:
            images.append(r)
    if by_created:
        warnings.append(
            f"ageFrom: created: aged {by_created} of {len(order)} manifests by their config's "
            "created time, which the builder chose (a reproducible build says 1970, a copied "
            "image keeps its original date)"
        )
    if no_time:
        what = "push or created time" if age_from == "created" else "push time"
        warnings.append(
            f"no {what} for {no_time} of {len(order)} manifests (the registry keeps none and "
            "the ledger never saw them pushed): age rules skip them and rankings put them last"
        )

    view = RepoView(now, images, protections.quarantined, warnings, age_from, pull_tracking)

    # 3a. protections, for every manifest whatever its role
    keep: dict[str, tuple[str, str]] = {}
    if protections:
        _protect(order, protections, rules, now, keep)

    # 3b. keep rules, on images
    for keep_rule in rules.keep:
        rule_name = keep_rule.name
        for d, why in keep_rule.keeps(view):
            if d not in keep:
                keep[d] = (rule_name, why)

    # 3c. delete rules, on images no keep rule or protection covers; an image of unknown
    # age that an age rule would have judged says so instead of "no rule selected it"
    candidates: dict[str, tuple[str, str]] = {}
    unknown: dict[str, tuple[str, str]] = {}
    image_rules = [rule for rule in rules.delete if rule.scope == "image"]
    if image_rules:
        for r in images:
            d = r.digest
            if d in keep:
                continue
            for delete_rule in image_rules:
                why_delete = delete_rule.selects(r, view)
                if why_delete is not None:
                    candidates[d] = (delete_rule.name, why_delete)
                    break
            else:
                if record_time(r, age_from) is None and any(
                    rule.needs_age(r) for rule in image_rules
                ):
                    unknown[d] = _unknown_age(r, age_from)
    orphan_keep = _orphans(
        orphans, images, rules.orphans, view, keep, candidates, subject_of, unknown, superseded
    )

    # 4. closure from everything kept (`keep` grows to hold the closure too)
    def kept(x: str) -> bool:
        return x in keep or (x not in candidates and role.get(x, _IMAGE) in _JUDGED)

    # seeds: kept manifests with an edge to follow (indexes, subjects, referrers)
    stack = [d for d in indexes if kept(d)]
    stack += [d for d in referrers if kept(d)]
    stack += [d for d, s in subject_of.items() if s in by_digest and d in keep]
    stack.reverse()
    while stack:
        d = stack.pop()
        for c in by_digest[d].children:
            if c in by_digest and not kept(c):
                keep[c] = ("childOfKept", f"kept: child of kept index {d}")
                stack.append(c)
        for ref in referrers.get(d, ()):
            if not kept(ref):
                keep[ref] = ("referrerOfKept", f"kept: referrer of kept {d}")
                stack.append(ref)
        s = subject_of.get(d)
        if s is not None and s in by_digest and not kept(s):
            keep[s] = ("subjectOfKept", f"kept: subject of kept referrer {d}")
            stack.append(s)

    # 5. decisions
    decisions: list[Decision] = []
    append = decisions.append
    new = tuple.__new__  # what `_decision` does, without a call per digest
    keep_get = keep.get
    role_get = role.get
    n_del = b_del = b_all = 0
    by_config = age_from == "created"
    for d, tags, t, _, size, _, _, _, created, _ in order:
        b_all += size
        if by_config and created is not None:
            t = created
        ro = role_get(d, _IMAGE)
        why_pair = keep_get(d)
        if why_pair is not None:
            append(new(Decision, (d, "keep", why_pair[0], why_pair[1], tags, size, t, ro)))
            continue
        if d in candidates:
            why_pair = candidates[d]
        elif ro is _CHILD:
            parent = next(p for p in parents[d] if not kept(p))
            why_pair = ("childOfDeleted", f"deleted: child of deleted index {parent}")
        elif ro is _REFERRER:
            why_pair = ("referrerOfDeleted", f"deleted: referrer of deleted {subject_of[d]}")
        else:
            why_pair = unknown.get(d) or (orphan_keep if ro is _ORPHAN else _DEFAULT)
            append(new(Decision, (d, "keep", why_pair[0], why_pair[1], tags, size, t, ro)))
            continue
        n_del += 1
        b_del += size
        append(new(Decision, (d, "delete", why_pair[0], why_pair[1], tags, size, t, ro)))

    plan = RepositoryPlan(
        repository=repository,
        decisions=tuple(decisions),
        warnings=tuple(warnings),
        delete_order=_delete_order(decisions, by_digest, subject_of) if n_del else (),
        images_kept=len(order) - n_del,
        images_deleted=n_del,
        bytes_kept=b_all - b_del,
        bytes_freed=b_del,
    )
    trip = _guard(rules.guard, n_del, len(order), b_del)
    return plan if trip is None else _tripped(plan, trip)


def _protect(
    order: list[ImageRecord],
    protections: Protections,
    rules: RetentionRules,
    now: float,
    keep: dict[str, tuple[str, str]],
) -> None:
    in_use = protections.in_use
    in_use_tags = protections.in_use_tags
    locked = protections.locked
    quarantined = protections.quarantined
    expiry = rules.quarantine_expiry
    for r in order:
        d = r.digest
        if d in in_use:
            keep[d] = ("inUse", "kept: in use")
            continue
        if in_use_tags:
            tag = next((t for t in r.tags if t in in_use_tags), None)
            if tag is not None:
                keep[d] = ("inUse", f"kept: in use as tag {tag!r}")
                continue
        if d in locked:
            keep[d] = ("locked", "kept: locked on the registry")
        elif d in quarantined:
            if expiry is None:
                keep[d] = ("quarantined", "kept: quarantined until released")
            elif not expiry.expired(quarantined[d], now):
                keep[d] = ("quarantined", "kept: quarantined until released or expired")


def _orphans(
    orphans: list[ImageRecord],
    images: list[ImageRecord],
    rule: DeleteOrphans | None,
    view: RepoView,
    keep: dict[str, tuple[str, str]],
    candidates: dict[str, tuple[str, str]],
    subject_of: dict[str, str],
    unknown: dict[str, tuple[str, str]],
    superseded: frozenset[str] = frozenset(),
) -> tuple[str, str]:
    """Select orphans for the `orphans` rule; return the reason for the ones it keeps
    (those of unknown age and superseded verdict attestations get theirs in `unknown`)."""
    if rule is None:
        for r in orphans:
            if r.digest in superseded:
                unknown[r.digest] = (
                    "default",
                    "kept: superseded verdict attestation (no orphans rule)",
                )
        return ("default", "kept: its subject is not in the repository (no orphans rule)")
    if not images:
        if orphans:
            view.warnings.append(
                f"orphans: all {len(orphans)} referrers here point at subjects elsewhere and "
                "the repository holds no images (a signature repository?); rule skipped"
            )
        return ("default", "kept: its subject is elsewhere (repository holds no images)")
    for r in orphans:
        if r.digest in keep:
            continue
        why = rule.selects(r, view)
        if why is not None and r.digest in superseded:
            of = f" of {subject_of[r.digest]}" if r.digest in subject_of else ""
            why = f"deleted: superseded verdict attestation{of} (a newer one stands; orphans rule)"
        if why is not None:
            candidates[r.digest] = (rule.name, why)
        elif rule.needs_age(r) and view.time(r) is None:
            unknown[r.digest] = _unknown_age(r, view.age_from)
        elif r.digest in superseded:
            unknown[r.digest] = (
                "default",
                f"kept: superseded verdict attestation not older than "
                f"{human_duration(rule.older_than)} (orphans rule)",
            )
    return (
        "default",
        f"kept: orphan not older than {human_duration(rule.older_than)} (orphans rule)",
    )


def _guard(guard: Guard, selected: int, population: int, freed: int) -> GuardTrip | None:
    if not selected:
        return None
    limits: list[tuple[int, str]] = []
    if guard.max_deletes is not None and selected > guard.max_deletes:
        limits.append((guard.max_deletes, f"maxDeletes {guard.max_deletes}"))
    if guard.max_share is not None and selected > guard.max_share * population:
        limits.append((int(guard.max_share * population), f"maxShare {guard.max_share:g}"))
    if not limits:
        return None
    limit, label = min(limits)
    return GuardTrip(
        scope="repository",
        selected=selected,
        population=population,
        limit=limit,
        guard=label,
        bytes=freed,
    )


def _tripped(plan: RepositoryPlan, trip: GuardTrip) -> RepositoryPlan:
    """The same plan, deleting nothing: each would-be deletion says so."""
    if not plan.images_deleted:
        return plan
    prefix = f"kept: {trip.guard} tripped; would have been "
    decisions = tuple(
        d
        if d.action == "keep"
        else _decision(
            (d.digest, "keep", "guard", prefix + d.reason, d.tags, d.size, d.time, d.role)
        )
        for d in plan.decisions
    )
    return RepositoryPlan(
        repository=plan.repository,
        decisions=decisions,
        warnings=(*plan.warnings, trip.message),
        trip=trip,
        delete_order=(),
        images_kept=plan.images_kept + plan.images_deleted,
        images_deleted=0,
        bytes_kept=plan.bytes_kept + plan.bytes_freed,
        bytes_freed=0,
    )


def _delete_order(
    decisions: list[Decision],
    by_digest: dict[str, ImageRecord],
    subject_of: dict[str, str],
) -> tuple[str, ...]:
    """Deleted digests ordered so each comes after every deleted manifest pointing at it
    (Kahn's algorithm; plan order among manifests that are free to go)."""
    doomed = [d.digest for d in decisions if d.action == "delete"]
    doomed_set: set[str] | None = None
    pointers: dict[str, list[str]] = {}  # digest → deleted manifests it points at
    waiting: dict[str, int] = {}  # digest → deleted manifests pointing at it
    for d in doomed:
        kids = by_digest[d].children
        s = subject_of.get(d)
        if not kids and s is None:
            continue
        if doomed_set is None:
            doomed_set = set(doomed)
        targets = [c for c in kids if c in doomed_set and c != d]
        if s is not None and s in doomed_set and s != d:
            targets.append(s)
        if targets:
            pointers[d] = targets
            for t in targets:
                waiting[t] = waiting.get(t, 0) + 1
    if not pointers:
        return tuple(doomed)
    out: list[str] = []
    ready = [d for d in reversed(doomed) if d not in waiting]
    while ready:
        d = ready.pop()
        out.append(d)
        for t in pointers.get(d, ()):
            waiting[t] -= 1
            if waiting[t] == 0:
                ready.append(t)
    if len(out) != len(doomed):  # a reference cycle (malformed data): append the rest
        placed = set(out)
        out.extend(d for d in doomed if d not in placed)
    return tuple(out)
