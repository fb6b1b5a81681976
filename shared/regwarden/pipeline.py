"""The push pipeline (imperative shell): event → facts → `evaluate` → actions → alerts.

Stateless and idempotent per event: verdicts are recomputed from the registry's current
state; the ledger only supplies what the registry does not keep (tag history, first-seen
times, quarantine records) and de-duplicates deliveries and alerts.

Exactly-once effects over at-least-once delivery: a delivery counts as handled only when
its outcome (verdict, the delivery marker, the alerts to send) is committed in one ledger
transaction, after its action finished. A crash or exception before that leaves the
delivery to be retried; the action it started is resumed from its ledger intent (which
carries the verdict and the alert), never judged again from a source it may already have
left. Alerts go through an outbox and are delivered at least once, with a stable id.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, wait
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from . import USER_AGENT
from .actions import (
    QuarantineOutcome,
    action_key,
    describe_state,
    mark_passed,
    promote,
    quarantine,
    recorded_outcome,
    release,
    stored_manifests,
)
from .errors import (
    ActionIncomplete,
    EvidenceUnavailable,
    HostNotAllowed,
    LimitExceeded,
    NotFound,
    RegistryError,
)
from .gate import (
    Evidence,
    EvidenceSource,
    Facts,
    GateRules,
    evaluate,
    no_evidence,
    verdict_findings,
)
from .intake import Classified, ManifestRole, classify_manifest, ignore_reason
from .model import (
    CheckOutcome,
    CheckResult,
    EventKind,
    Finding,
    ImageEvent,
    Outcome,
    Severity,
    Verdict,
)
from .notify import RETRY_BASE, RETRY_MAX, Alert, Router, send_outbox
from .oci import Descriptor, Manifest, in_background
from .providers import CAP_LOCK, ImageDetails, Lockable, Registry
from .quarantine_names import DEFAULT_TEMPLATE
from .reference import ImageRef
from .store import ActionRecord, Ledger, OutboxItem, QuarantineRecord
from .store import Outcome as Committed

if TYPE_CHECKING:
    from .attest import VerdictAttester

log = logging.getLogger("regwarden.pipeline")

DELIVERY_TTL = timedelta(days=7)
_MAX_REFERRER_DEPTH = 4
"""A signature on an SBOM on an image is two hops; more is a loop or an attack."""
ALERT_TTL = timedelta(days=30)
"""Backoff of the recovery sweep for an unfinished action that keeps failing."""


@dataclass(frozen=True, slots=True)
class Handled:
    """What happened to one event."""

    event: ImageEvent
    verdict: Verdict | None = None
    actions: tuple[str, ...] = ()
    alerts: int = 0
    ignored: str | None = None
    recheck_at: datetime | None = None
    notes: tuple[str, ...] = field(default=())
    recheck_image: ImageRef | None = None
    """What to re-evaluate at `recheck_at` when there is no verdict (a settling manifest)."""

    @property
    def recheck_target(self) -> ImageRef | None:
        """The image to bring back at `recheck_at`, if any."""
        if self.recheck_at is None:
            return None
        if self.recheck_image is not None:
            return self.recheck_image
        return self.verdict.image if self.verdict is not None else None


@dataclass
class Pipeline:
    ledger: Ledger
    rules_for: Callable[[str], GateRules | None]
    """repository name → rules, or None when no policy entry covers it."""
    registry_for: Callable[[str], Registry]
    router: Router
    evidence: EvidenceSource = no_evidence
    release_hint: str = "regwarden quarantine release"
    quarantine_templates: tuple[str, ...] = (DEFAULT_TEMPLATE,)
    """The policy's `move` quarantine templates (`Policy.quarantine_templates`): events for
    the repositories they render to are not gated."""
    _locks: dict[str, threading.Lock] = field(default_factory=dict, init=False, repr=False)
    _locks_guard: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    actor: str | None = None
    """regwarden's own registry identity; with it, a spoofed User-Agent is not enough to
    pass as one of regwarden's writes."""
    attester: VerdictAttester | None = None
    """Signs final verdicts as in-toto attestations where the policy's `attest` asks."""

    # -- entry point ------------------------------------------------------------------------

    def wants(self, event: ImageEvent) -> bool:
        """Whether `handle` would do anything with `event`: False for regwarden's own
        writes and reads, quarantine events, deletes and pulls (the access monitor's, see
        `regwarden.access`). Pure, so the receiver can drop those before they are
        persisted (a gated push causes about seven of them)."""
        return (
            event.kind not in (EventKind.DELETED, EventKind.PULLED)
            and self._ignore_reason(event) is None
        )

    def handle(self, event: ImageEvent, *, now: datetime, final_attempt: bool = True) -> Handled:
        reason = self._ignore_reason(event)
        if reason:
            log.info("ignored %s %s: %s", event.kind, event.image, reason)
            return Handled(event, ignored=reason)
        if event.kind is EventKind.PULLED:  # pull times and counts: the access monitor's
            return Handled(event, ignored="pull: the access monitor records it")
        if event.kind is EventKind.DELETED:
            return Handled(event, ignored="delete: nothing to gate")
        delivery = f"{event.source}:{event.delivery_id}"
        done = self.ledger.delivery_outcome(delivery, now=now)
        if done is not None:  # handled before; give back its recheck in case that was lost
            return Handled(
                event,
                ignored="duplicate delivery",
                recheck_at=done.recheck_at,
                recheck_image=ImageRef.parse(done.recheck_image) if done.recheck_image else None,
            )
        try:
            return self._route(event, now=now, final_attempt=final_attempt, delivery=delivery)
        except HostNotAllowed as exc:
            log.warning("ignored %s %s: %s", event.kind, event.image, exc)
            return Handled(event, ignored=str(exc))
        except _AlreadyHandled:
            return Handled(event, ignored="duplicate delivery")

    def recheck(self, image: ImageRef, *, now: datetime, final_attempt: bool = True) -> Handled:
        """Re-evaluate an image at a deadline: a PENDING verdict's grace period or scan
        timeout, or the settle window of a manifest pushed by digest."""
        event = ImageEvent(
            kind=EventKind.SIGNED,
            source="recheck",
            image=image,
            time=now,
            delivery_id=f"recheck:{image}:{now.isoformat()}",
            subject_digest=image.digest,
        )
        return self.handle(event, now=now, final_attempt=final_attempt)

    def assess(self, image: ImageRef, *, now: datetime) -> Verdict:
        """Every check on `image`, no actions, nothing recorded (`regwarden check`).

        Grace periods and scan timeouts count from the registry's push time or the first
        time regwarden saw the digest; a digest with neither is judged as if they had run
        out, so the answer is definite. A referrer is judged as the image it refers to.
        """
        registry = self.registry_for(image.registry)
        if image.digest is None:
            digest = registry.resolve(image.repository, image.reference)
            if digest is None:
                raise NotFound(f"image {image} does not exist")
            image = image.with_digest(digest)
        rules = self.rules_for(image.repository)
        if rules is None:
            raise NotFound(f"no policy entry covers {image.repository}")
        event = ImageEvent(
            kind=EventKind.SIGNED,
            source="check",
            image=image,
            time=now,
            delivery_id="check",
            subject_digest=image.digest,
        )
        for _ in range(_MAX_REFERRER_DEPTH):
            assert image.digest is not None
            details = _read_details(registry, image, self.ledger)
            if details is None:
                raise NotFound(f"image {image} does not exist")
            known = set(self.ledger.tags_for(image.registry, image.repository, image.digest))
            what = _classify(image, details, known)
            if what.role is ManifestRole.EVIDENCE and what.subject is not None:
                image = image.model_copy(update={"digest": what.subject, "tag": None})
                continue
            judged = self._facts(
                event, image, registry, rules, now=now, details=details, known=known
            )
            if judged is None:
                raise NotFound(f"image {image} does not exist")
            return evaluate(judged[0], rules, now)
        raise NotFound(f"{image}: a chain of referrers deeper than {_MAX_REFERRER_DEPTH}")

    def _image_lock(self, image: ImageRef) -> threading.Lock:
        """One evaluation per image at a time in this process: events for the same digest
        (push, .sig, .att arriving together) are judged in turn, never interleaved."""
        key = f"{image.registry}/{image.repository}@{image.digest}"
        with self._locks_guard:
            lock = self._locks.get(key)
            if lock is None:
                if len(self._locks) > 4096:  # bounded: drop idle locks
                    self._locks = {k: v for k, v in self._locks.items() if v.locked()}
                lock = self._locks[key] = threading.Lock()
            return lock

    # -- steps --------------------------------------------------------------------------------

    def _ignore_reason(self, event: ImageEvent) -> str | None:
        return ignore_reason(
            event,
            user_agent_prefix=USER_AGENT.split("/")[0] + "/",
            quarantine_templates=self.quarantine_templates,
            actor=self.actor,
        )

    def _route(
        self, event: ImageEvent, *, now: datetime, final_attempt: bool, delivery: str
    ) -> Handled:
        """Find what the event is about (the pushed manifest, or the subject of a
        signature or referrer), then judge that, following referrers to their subject."""
        img = event.image
        rules = self.rules_for(img.repository)
        if rules is None:
            return Handled(event, ignored="no policy entry for this repository")
        registry = self.registry_for(img.registry)
        target = img
        if event.kind is EventKind.SIGNED:
            subject = event.subject_digest
            if subject is None and img.digest is not None:  # e.g. ECR Referrer Action
                details = _read_details(registry, img)
                subject = details.record.subject if details is not None else None
            if subject is None:
                return Handled(event, ignored="referrer without a subject: nothing to judge")
            target = img.model_copy(update={"digest": subject, "tag": None})
        if target.digest is None and event.kind is EventKind.PUSHED and target.tag:
            # a push named by its tag alone (Artifact Registry's `gcr` INSERT may carry
            # only the tag): judge the manifest the tag names now
            resolved = registry.resolve(target.repository, target.tag)
            if resolved is None:
                return Handled(event, ignored=f"tag {target.tag} no longer exists")
            target = target.with_digest(resolved)
        if target.digest is None:
            return Handled(event, ignored="no digest in the event")
        for _ in range(_MAX_REFERRER_DEPTH):
            lock = self._image_lock(target)
            waited = not lock.acquire(blocking=False)
            if waited:
                lock.acquire()
            try:
                if waited and self.ledger.delivery_outcome(delivery, now=now):
                    # handled while this attempt waited for the image (a redelivery side
                    # by side); across processes, the commit itself refuses a second outcome
                    return Handled(event, ignored="duplicate delivery")
                own = self._own_attestation(event, target, registry)
                if own is not None:  # under the image's lock: the ledger has what we wrote
                    log.info("ignored %s %s: %s", event.kind, event.image, own)
                    return Handled(event, ignored=own)
                judged = self._gate(
                    event,
                    target,
                    rules,
                    registry,
                    now=now,
                    final_attempt=final_attempt,
                    delivery=delivery,
                )
            finally:
                lock.release()
            if isinstance(judged, Handled):
                return judged
            target = target.model_copy(update={"digest": judged, "tag": None})
        return Handled(event, ignored=f"a chain of referrers deeper than {_MAX_REFERRER_DEPTH}")

    def _settle(
        self,
        event: ImageEvent,
        image: ImageRef,
        registry: Registry,
        rules: GateRules,
        *,
        now: datetime,
    ) -> Handled | str | None:
        """An untagged image manifest pushed by digest: None when it is to be judged now
        (a stand-alone image, or one judged before); otherwise why it waits or is left to
        its index. The window runs from the last manifest push seen in the repository, so
        a slow multi-arch push is never judged child by child. A child's scan event
        gives its index's digest, to be judged instead: its scan may be the index's (Artifact
        Analysis scans one platform of an index)."""
        reg, repo, digest = image.registry, image.repository, image.digest
        assert digest is not None
        if self.ledger.last_verdict(reg, repo, digest) is not None:
            return None
        if event.kind is EventKind.PUSHED:
            self.ledger.record_push(reg, repo, digest, (), now=event.time)
        times = self.ledger.image_times(reg, repo)
        pushes = [first for first, _ in times.values()]
        if digest not in times:  # first seen through another event: the clock starts now
            self.ledger.record_push(reg, repo, digest, (), now=now)
            pushes.append(now)
        if event.kind is EventKind.PUSHED:  # a push of a digest seen before counts too
            pushes.append(event.time)
        deadline = max(pushes) + rules.settle_wait
        if now < deadline:
            return Handled(
                event,
                ignored="untagged manifest pushed by digest: settling until "
                + deadline.isoformat(),
                recheck_at=deadline,
                recheck_image=image.with_tag(None),
            )
        parent = next(
            (i for i, kids in registry.index_children(repo).items() if digest in kids), None
        )
        if parent is not None and event.kind is EventKind.SCANNED:
            return parent
        if parent is not None:
            return Handled(event, ignored=f"a child of index {parent}: judged with the index")
        return None

    def _facts(
        self,
        event: ImageEvent,
        image: ImageRef,
        registry: Registry,
        rules: GateRules,
        *,
        now: datetime,
        details: ImageDetails | None = None,
        known: Collection[str] = (),
        record: bool = False,
        tag_history: Sequence[str] = (),
        held: Callable[[], QuarantineRecord | None] | None = None,
        looked: tuple[ActionRecord | None] | None = None,
    ) -> tuple[Facts, Manifest | None, ImageDetails] | None:
        """What `evaluate` judges, the manifest as read (the actions reuse it) and the
        image's details; None when the image no longer exists. `details`: already read;
        `known`: the tags the ledger holds for the digest (read by the caller);
        `record`: write the push and first-seen time to the ledger (not for `check`);
        `tag_history`: every digest the pushed tag named, oldest first (read by the caller
        with `known`; only a recorded push reads it);
        `held`, `looked`: the ledger's quarantine record and action of the digest, as
        `_image_details` takes them."""
        assert image.digest is not None
        # The image's details (manifest, config) and its evidence (signatures, scans) need
        # different round trips: fetch the details on the I/O pool meanwhile. The details
        # are a leaf call (no fan-out of their own); the evidence fans out on this thread
        # and takes the image's descriptor from the details once they are in.
        details_call: Future[ImageDetails]
        if details is not None:
            details_call = Future()
            details_call.set_result(details)
        else:
            details_call = in_background(
                functools.partial(
                    _image_details, registry, image, self.ledger, held=held, looked=looked
                )
            )

        def subject() -> Descriptor | None:
            try:
                content = details_call.result().content
            except NotFound:
                return None
            if content is None:  # the provider did not read it over OCI: ask the registry
                return registry.data_plane().head_manifest(image.repository, str(image.digest))
            return content.descriptor()

        try:
            found: Evidence | None = self.evidence(registry, image, rules, subject=subject)
        except NotFound:
            found = None  # deleted or quarantined while we looked
        except RegistryError as exc:  # fail closed: the checks turn this into ERROR
            found = Evidence(signature_error=str(exc), unavailable=(f"evidence: {exc}",))
        finally:
            wait([details_call])
        try:
            details = details_call.result()
        except NotFound:
            return None
        if found is None:
            return None
        reg, repo = image.registry, image.repository
        moved: dict[str, str] = {}
        first_seen: datetime | None
        if record and event.kind is EventKind.PUSHED:
            tags: tuple[str, ...] = ()
            if image.tag:
                # the tag's history before this push joins it: the digest it named before
                # (the newest other one) and whether it names this one now
                prev = next((d for d in reversed(tag_history) if d != image.digest), None)
                if prev is not None and tag_history[-1] != image.digest:
                    moved[image.tag] = prev
                tags = (image.tag,)
            first_seen = self.ledger.record_push(reg, repo, image.digest, tags, now=event.time)
        elif record:  # first seen through a scan or signature: the clock starts now
            first_seen = self.ledger.record_push(reg, repo, image.digest, (), now=now)
        else:  # `check` records nothing
            seen = self.ledger.image_times(reg, repo).get(image.digest)
            first_seen = seen[0] if seen else None
        # Clocks start at facts: the registry's push time, else the ledger's first-seen;
        # never a scan event's time. Never seen and not recorded (`check`): long ago.
        pushed_at = details.record.pushed or first_seen or datetime(1970, 1, 1, tzinfo=now.tzinfo)
        tags = tuple(
            sorted(set(known) | set(details.record.tags) | ({image.tag} if image.tag else set()))
        )
        facts = Facts(
            image=image,
            tags=tags,
            pushed_at=pushed_at,
            signatures=found.signatures,
            signatures_unmet=found.signatures_unmet,
            signature_error=found.signature_error,
            unavailable=found.unavailable,
            scans=found.scans,
            scan_error=found.scan_error,
            scan_waiting=found.scan_waiting,
            moved_tags=moved,
            size=details.record.size,
            layer_count=details.layer_count,
            labels=details.labels,
            provenance=found.provenance,
        )
        return facts, details.content, details

    def _gate(
        self,
        event: ImageEvent,
        image: ImageRef,
        rules: GateRules,
        registry: Registry,
        *,
        now: datetime,
        final_attempt: bool,
        delivery: str | None,
    ) -> Handled | str:
        """Judge `image` and act on the verdict; a digest instead when `image` turns out
        to be evidence about another image (the caller judges that one)."""
        assert image.digest is not None
        started = self.ledger.action(action_key("quarantine", image.with_tag(None)))
        if started is not None and started.status == "intent":
            # An earlier attempt decided and began: finish that, whatever the source says now.
            return self._resume(
                started, event=event, delivery=delivery, now=now, final_attempt=final_attempt
            )
        try:
            return self._judge(
                event,
                image,
                rules,
                registry,
                now=now,
                final_attempt=final_attempt,
                delivery=delivery,
                looked=(started,),
            )
        except LimitExceeded as exc:
            return self._refused(event, image, rules, exc, now=now, delivery=delivery)

    def _judge(
        self,
        event: ImageEvent,
        image: ImageRef,
        rules: GateRules,
        registry: Registry,
        *,
        now: datetime,
        final_attempt: bool,
        delivery: str | None,
        looked: tuple[ActionRecord | None] | None = None,
    ) -> Handled | str:
        """`looked`: the digest's quarantine action as `_gate` read it (not read again)."""
        assert image.digest is not None
        reg, repo, digest = image.registry, image.repository, image.digest
        # The tags the ledger holds for the digest and, for a tagged push, the tag's history:
        # one read of the repository's tag rows where a ledger keeps them together.
        pushed_tag = image.tag if event.kind is EventKind.PUSHED else None
        tagged, tag_history = self.ledger.tags_for_push(reg, repo, digest, pushed_tag)
        known = set(tagged)
        # The digest's quarantine record, read once: by the details (a registry with
        # locks judges a locked image from the manifests its lock recorded) or, at the
        # latest, when the verdict's actions are chosen.
        held_record = functools.cache(lambda: self.ledger.quarantined(reg, repo, digest))
        details: ImageDetails | None = None
        what: Classified | None = None
        if not known and not image.tag:
            # Children of a multi-arch push and referrers arrive untagged: find out what
            # this is before gathering evidence for it.
            details = _read_details(registry, image, self.ledger, held=held_record, looked=looked)
            if details is None:
                return self._gone(event, image, now=now, delivery=delivery)
            what = _classify(image, details, known)
            if what.role is ManifestRole.UNTAGGED and event.kind is not EventKind.PUSHED:
                # Not pushed by digest as far as we know: we never saw its push. Ask the
                # registry which tags it holds (regwarden may have started after the push).
                on_registry = registry.tags_of(image.repository, image.digest)
                what = _classify(image, details, known | set(on_registry))
            early = self._before_judging(what, event, image, registry, rules, now=now)
            if early is not None:
                return early
        judged = self._facts(
            event,
            image,
            registry,
            rules,
            now=now,
            details=details,
            known=known,
            record=True,
            tag_history=tag_history,
            held=held_record,
            looked=looked,
        )
        if judged is None:
            return self._gone(event, image, now=now, delivery=delivery)
        facts, manifest, details = judged
        if what is None:
            what = _classify(image, details, known)
            early = self._before_judging(what, event, image, registry, rules, now=now)
            if early is not None:
                return early
        verdict = evaluate(facts, rules, now)
        actions: list[str] = []
        notes: list[str] = []
        state: str | None = None
        assert facts.image.digest == digest
        if facts.unavailable or (facts.signature_error and verdict.outcome is Outcome.ERROR):
            return self._unavailable(
                event, verdict, facts, now=now, final_attempt=final_attempt, delivery=delivery
            )
        held = held_record()
        # Whether the digest stands quarantined after this attempt (the alert's action when
        # it took none): kept up to date by the actions below, which know what they wrote,
        # so the ledger is read again only after an action failed half-way.
        held_now = held is not None and held.released_at is None
        if self.attester is not None:  # before any action: a moved image is out of reach
            notes += self._attest(registry, verdict, facts, details, now=now, final=final_attempt)
        outcome = verdict.outcome
        failed: RegistryError | None = None
        try:
            if outcome is Outcome.FAILED or (
                outcome is Outcome.PENDING and rules.quarantine_strategy != "move"
            ):
                if held is not None and held.released_at is not None:
                    # A person released this digest: their decision stands until it changes.
                    notes.append(
                        f"released on {held.released_at.isoformat()}; not quarantined again"
                    )
                else:  # new, or a half-done quarantine that this attempt resumes
                    why = "; ".join(
                        c.reason for c in verdict.checks if c.outcome.value in ("fail", "pending")
                    )
                    # The intent carries the verdict and the alert: whoever resumes it
                    # (a retry, the recovery sweep) finishes without judging again.
                    draft = self._make_alert(
                        verdict, facts, ["quarantine"], [], None, standing="quarantine", now=now
                    )
                    context: dict[str, object] = {"verdict": verdict.model_dump(mode="json")}
                    if draft is not None:
                        context["alert"] = draft.model_dump(mode="json")
                    q = quarantine(
                        registry,
                        self.ledger,
                        image=facts.image,
                        tags=facts.tags,
                        strategy=rules.quarantine_strategy,
                        repository_template=rules.quarantine_repository,
                        reason=why,
                        now=now,
                        manifest=manifest,
                        context=context,
                        hold=outcome is Outcome.PENDING,  # `lock`: FAILED escalates a hold
                        looked=looked,
                    )
                    if not q.already_done:  # its quarantine record was written, unreleased
                        actions += _quarantine_actions(q)
                        notes += q.notes
                        held_now = True
            elif outcome in (Outcome.PASSED, Outcome.WARN):
                if held is not None and held.released_at is None and held.strategy != "move":
                    r = release(
                        registry,
                        self.ledger,
                        image=facts.image,
                        reason=f"verdict {outcome.value} after hold",
                        now=now,
                    )
                    actions.append(f"release (tags {', '.join(r.restored_tags) or 'none'})")
                    held_now = False  # marked released (by this release or one before it)
                elif rules.quarantine_strategy == "lock" and CAP_LOCK in registry.capabilities:
                    # the registry's own quarantine policy waits for this verdict
                    children = details.record.children
                    summary = verdict.model_dump(mode="json")
                    if mark_passed(registry, facts.image, summary, children=children):
                        actions.append("quarantine state Passed")
                if outcome is Outcome.PASSED and rules.promotion is not None:
                    p = promote(
                        registry,
                        image=facts.image,
                        tag=rules.promotion.tag,
                        repository=rules.promotion.repository,
                    )
                    actions.append(f"promote → {p.repository}:{p.tag or digest}")
        except LimitExceeded:
            raise
        except RegistryError as exc:
            if not final_attempt:
                raise
            state = describe_state(self.ledger, facts.image)
            verdict = verdict.model_copy(update={"outcome": Outcome.ERROR})
            notes.append(f"action failed after retries: {exc}")
            log.error("action on %s failed for good: %s (state: %s)", facts.image, exc, state)
            self._schedule_resume(facts.image, now=now)
            failed = exc
        recheck_at = None
        if verdict.outcome is Outcome.PENDING:
            deadlines = [c.details.get("deadline") for c in verdict.checks]
            times = [datetime.fromisoformat(d) for d in deadlines if isinstance(d, str)]
            recheck_at = min(times) if times else None
        if failed is not None:
            again = self.ledger.quarantined(reg, repo, digest)
            held_now = again is not None and again.released_at is None
        standing = "quarantine" if held_now else "none"
        alert = self._make_alert(verdict, facts, actions, notes, state, standing=standing, now=now)
        if failed is not None:  # told and recorded, but the delivery is not done
            self._commit(None, facts.image, verdict, alert, now=now)
            raise ActionIncomplete(f"{facts.image}: {failed} (state: {state})") from failed
        sent = self._commit(
            delivery,
            facts.image,
            verdict,
            alert,
            now=now,
            recheck_at=recheck_at,
            recheck_image=verdict.image if recheck_at else None,
        )
        log.info(
            "%s %s: %s %s",
            verdict.outcome.value,
            facts.image,
            ", ".join(actions) or "no action",
            "; ".join(notes),
        )
        return Handled(
            event,
            verdict=verdict,
            actions=tuple(actions),
            alerts=sent,
            recheck_at=recheck_at,
            notes=tuple(notes),
        )

    # -- verdict attestations (issue #18) ----------------------------------------------------

    def _attest(
        self,
        registry: Registry,
        verdict: Verdict,
        facts: Facts,
        details: ImageDetails,
        *,
        now: datetime,
        final: bool,
    ) -> list[str]:
        """Attest the verdict before its actions and the commit of its outcome
        (`attest._hook` says why): a failure makes the delivery come back to finish the
        intent while the image is still where it was judged (a `move` takes it away)."""
        assert self.attester is not None
        client = registry.data_plane()
        image = verdict.image

        def subject() -> Descriptor | None:
            if details.content is not None:
                return details.content.descriptor()
            return client.head_manifest(image.repository, str(image.digest))

        try:
            return self.attester.after_verdict(
                client, self.ledger, verdict, facts, subject, now=now
            )
        except RegistryError as exc:
            if not final:
                raise
            log.error("verdict attestation of %s failed for good: %s", image, exc)
            return [f"verdict attestation failed: {exc}"]

    def _finish_attestation_removal(self, record: ActionRecord) -> None:
        """A superseded PASSED attestation whose removal ran out of retries is taken off
        by the sweep (`attest.finish_removal`): it must not outlive the verdict against it."""
        from .attest import finish_removal

        image = ImageRef(registry=record.registry, repository=record.repository)
        image = image.with_digest(record.digest)
        with self._image_lock(image):
            try:
                client = self.registry_for(image.registry).data_plane()
                if finish_removal(client, self.ledger, image=image):
                    log.info("recovery: superseded verdict attestation of %s removed", image)
            except Exception:  # one bad intent must not stop the sweep
                log.exception("recovery of the verdict attestation of %s failed", image)

    def _own_attestation(
        self, event: ImageEvent, target: ImageRef, registry: Registry
    ) -> str | None:
        """Why a signature-like push is regwarden's own verdict attestation, which never
        re-evaluates its subject (else each verdict would push the next); None otherwise.
        Told by the digests the ledger recorded as regwarden's, then by the pushed
        manifest's predicate type — not by User-Agent, which ECR and GAR events lack."""
        if event.kind is not EventKind.SIGNED or self.attester is None:
            return None
        pushed = event.manifest_digest
        if pushed is None and event.image.digest != target.digest:
            pushed = event.image.digest  # e.g. ECR's Referrer Action names the referrer
        if pushed is None:
            return None
        from .attest import is_own_push

        if is_own_push(self.ledger, target, pushed):
            return "regwarden's own verdict attestation (recorded in the ledger)"
        try:
            manifest = registry.data_plane().get_manifest(target.repository, pushed)
        except NotFound:
            return None
        what = classify_manifest(manifest=manifest.data)
        return what.why if what.regwarden_verdict else None

    # -- finishing what an earlier attempt began ---------------------------------------------

    def _resume(
        self,
        record: ActionRecord,
        *,
        event: ImageEvent | None,
        delivery: str | None,
        now: datetime,
        final_attempt: bool,
    ) -> Handled:
        """Drive an unfinished quarantine intent to its end from the ledger: the verdict and
        the alert it carries are the outcome; a write that landed unrecorded is repeated
        harmlessly (copy again; a delete answered NotFound is done)."""
        image = ImageRef(registry=record.registry, repository=record.repository).with_digest(
            record.digest
        )
        event = event or _sweep_event(image, now)
        verdict = _stored_verdict(record.state.get("verdict"), image, now)
        registry = self.registry_for(image.registry)
        try:
            q = quarantine(
                registry,
                self.ledger,
                image=image,
                tags=tuple(record.state.get("tags", ())),
                strategy=str(record.state.get("strategy", "move")),
                repository_template=str(record.state.get("location", DEFAULT_TEMPLATE)),
                reason=record.reason,
                now=now,
            )
        except RegistryError as exc:
            if not final_attempt:
                raise
            state = describe_state(self.ledger, image)
            log.error("resuming the quarantine of %s failed: %s (state: %s)", image, exc, state)
            self._schedule_resume(image, now=now)
            verdict = verdict.model_copy(update={"outcome": Outcome.ERROR})
            note = f"action failed after retries: {exc}; regwarden keeps retrying"
            alert = self._stored_alert(record, verdict, [], [note], state, now=now)
            sent = self._commit(None, image, verdict, alert, now=now)
            if delivery is not None:  # an event's last attempt: dead-lettered, not done
                raise ActionIncomplete(f"{image}: {exc} (state: {state})") from exc
            return Handled(event, verdict=verdict, alerts=sent, notes=(note,))
        actions = _quarantine_actions(q)
        alert = self._stored_alert(record, verdict, actions, list(q.notes), None, now=now)
        sent = self._commit(delivery, image, verdict, alert, now=now)
        log.info("%s %s: resumed %s", verdict.outcome.value, image, ", ".join(actions))
        return Handled(
            event, verdict=verdict, actions=tuple(actions), alerts=sent, notes=tuple(q.notes)
        )

    def resume_unfinished(
        self, *, now: datetime, settle: timedelta = timedelta(0)
    ) -> list[Handled]:
        """The recovery sweep's action part: every unfinished quarantine whose retry is due
        is driven to its end (one at a time per image, as events are). An intent younger
        than `settle` is left alone: on a platform of separate processes (cloud functions)
        the invocation that began it may still be running, beyond any lock here."""
        results: list[Handled] = []
        for record in self.ledger.actions(status="intent"):
            if record.kind == "verdict-attestation" and record.at <= now - settle:
                self._finish_attestation_removal(record)
                continue
            if record.kind != "quarantine" or record.at > now - settle:
                continue
            retry = record.state.get("retry") or {}
            due = retry.get("next")
            if isinstance(due, str) and datetime.fromisoformat(due) > now:
                continue
            image = ImageRef(registry=record.registry, repository=record.repository)
            image = image.with_digest(record.digest)
            with self._image_lock(image):
                current = self.ledger.action(record.key)  # a worker may have finished it
                if current is None or current.status != "intent":
                    continue
                try:
                    results.append(
                        self._resume(
                            current, event=None, delivery=None, now=now, final_attempt=True
                        )
                    )
                except Exception:  # one bad intent must not stop the sweep
                    log.exception("recovery of %s failed", image)
        return results

    def _schedule_resume(self, image: ImageRef, *, now: datetime) -> None:
        """An unfinished action that failed for now: the sweep retries it, backing off."""
        key = action_key("quarantine", image.with_tag(None))
        record = self.ledger.action(key)
        if record is None or record.status != "intent":
            return
        state = dict(record.state)
        attempts = int((state.get("retry") or {}).get("attempts", 0)) + 1
        delay = min(RETRY_BASE * (1 << min(attempts - 1, 16)), RETRY_MAX)
        state["retry"] = {"attempts": attempts, "next": (now + delay).isoformat()}
        self.ledger.finish_action(key, status="intent", state=state)

    def _gone(
        self, event: ImageEvent, image: ImageRef, *, now: datetime, delivery: str | None
    ) -> Handled:
        """The image is no longer where the event said. If regwarden moved it (a quarantine
        finished by another attempt or the sweep), the delivery's outcome is that verdict,
        with the alert the quarantine carries: the attempt that moved it may have died
        before committing its own outcome, and the alert's stable key makes a second commit
        of it a no-op when that attempt did commit (the outbox keeps one row per key)."""
        record = self.ledger.action(action_key("quarantine", image.with_tag(None)))
        stored = record.state.get("verdict") if record is not None else None
        if record is None or record.status != "done" or stored is None:
            return Handled(event, ignored="image no longer exists")
        verdict = _stored_verdict(stored, image.with_tag(None), now)
        done = recorded_outcome(record.state, already_done=False)
        actions = _quarantine_actions(done)
        alert = self._stored_alert(record, verdict, actions, list(done.notes), None, now=now)
        sent = self._commit(delivery, image.with_tag(None), verdict, alert, now=now)
        return Handled(event, verdict=verdict, alerts=sent, notes=("already quarantined",))

    def _refused(
        self,
        event: ImageEvent,
        image: ImageRef,
        rules: GateRules,
        exc: LimitExceeded,
        *,
        now: datetime,
        delivery: str | None,
    ) -> Handled:
        """Content past a limit (nesting, width, size): ERROR at once, alerted, no action."""
        target = image.with_tag(None)
        check = CheckResult(name="limits", outcome=CheckOutcome.ERROR, reason=str(exc))
        verdict = Verdict(
            image=target,
            outcome=Outcome.ERROR,
            mode=rules.mode,
            checks=(check,),
            evaluated_at=now,
            team=rules.team,
        )
        facts = Facts(image=target, tags=(image.tag,) if image.tag else (), pushed_at=now)
        note = "refused: the image's content goes past a limit; no action was taken"
        alert = self._make_alert(verdict, facts, [], [note], None, standing="none", now=now)
        sent = self._commit(delivery, target, verdict, alert, now=now)
        log.error("ERROR %s: %s", target, exc)
        return Handled(event, verdict=verdict, alerts=sent, notes=(note, str(exc)))

    def _before_judging(
        self,
        what: Classified,
        event: ImageEvent,
        image: ImageRef,
        registry: Registry,
        rules: GateRules,
        *,
        now: datetime,
    ) -> Handled | str | None:
        """None to judge `image` now; a subject digest to judge instead; or why not yet."""
        if what.role is ManifestRole.EVIDENCE:
            if what.regwarden_verdict:  # pushed by regwarden: judging its subject would loop
                return Handled(event, ignored=what.why)
            if what.subject is None or what.subject == image.digest:
                return Handled(event, ignored=f"{what.why}: evidence with no subject to judge")
            return what.subject
        if what.role is ManifestRole.UNTAGGED:
            return self._settle(event, image, registry, rules, now=now)
        return None

    def _unavailable(
        self,
        event: ImageEvent,
        verdict: Verdict,
        facts: Facts,
        *,
        now: datetime,
        final_attempt: bool,
        delivery: str | None,
    ) -> Handled:
        """Evidence could not be gathered: ERROR, never an action. Retried while attempts
        remain; the last attempt alerts (ops) and dead-letters the event (its delivery is not
        marked handled, so retrying the dead letter judges it again)."""
        image = facts.image
        assert image.digest is not None
        causes = "; ".join(facts.unavailable) or f"signatures: {facts.signature_error}"
        verdict = verdict.model_copy(update={"outcome": Outcome.ERROR})
        log.warning("ERROR %s: evidence unavailable (%s)", image, causes)
        if not final_attempt:  # the standing verdict; the outcome is committed at the end
            self.ledger.record_verdict(
                image.registry, image.repository, image.digest, Outcome.ERROR.value, now=now
            )
        else:
            note = "evidence could not be gathered after retries; no action was taken"
            alert = self._make_alert(verdict, facts, [], [note], None, standing="none", now=now)
            self._commit(None, image, verdict, alert, now=now)
        raise EvidenceUnavailable(f"{image}: could not gather evidence: {causes}")

    # -- outcomes and alerts ------------------------------------------------------------------

    def _commit(
        self,
        delivery: str | None,
        image: ImageRef,
        verdict: Verdict,
        alert: Alert | None,
        *,
        now: datetime,
        recheck_at: datetime | None = None,
        recheck_image: ImageRef | None = None,
    ) -> int:
        """Commit the outcome (verdict, delivery marker, outbox) in one transaction, then
        deliver the alerts it added. Returns how many were delivered now."""
        assert image.digest is not None
        items: tuple[OutboxItem, ...] = ()
        if alert is not None:
            body = alert.model_dump_json()
            items = tuple(
                OutboxItem(key=f"{alert.dedup_key}:{c.name}", channel=c.name, alert=body)
                for c in self.router.channels_for(alert)
            )
        added = self.ledger.commit_outcome(
            Committed(
                delivery_id=delivery,
                registry=image.registry,
                repository=image.repository,
                digest=image.digest,
                verdict=verdict.policy_outcome.value,
                recheck_at=recheck_at,
                recheck_image=str(recheck_image) if recheck_image else None,
                alerts=items,
                findings=verdict_findings(verdict),  # the report's findings by severity
            ),
            now=now,
            ttl=DELIVERY_TTL,
        )
        if added is None:  # a duplicate handled side by side committed first: ours is moot
            raise _AlreadyHandled(delivery or "")
        fresh = set(added)
        return self._deliver([i for i in items if i.key in fresh], now=now)

    def deliver_outbox(self, *, now: datetime, limit: int = 100) -> int:
        """Send every alert whose (next) attempt is due: the sweep's outbox part."""
        return self._deliver(self.ledger.outbox_pending(now=now, limit=limit), now=now)

    def deliver(self, keys: Collection[str], *, now: datetime, limit: int = 100) -> int:
        """Send now the alerts another part committed to the outbox under `keys` (the
        access monitor's), if due and among the `limit` soonest due; the recovery sweep
        sends what this leaves. Returns how many were sent."""
        wanted = set(keys)
        if not wanted:
            return 0
        due = self.ledger.outbox_pending(now=now, limit=limit)
        return self._deliver([i for i in due if i.key in wanted], now=now)

    def _deliver(self, items: list[OutboxItem], *, now: datetime) -> int:
        return send_outbox(items, router=self.router, ledger=self.ledger, now=now)[0]

    def _stored_alert(
        self,
        record: ActionRecord,
        verdict: Verdict,
        actions: list[str],
        notes: list[str],
        state: str | None,
        *,
        now: datetime,
    ) -> Alert | None:
        """The alert an intent carries, completed with what the resumed action did."""
        draft = record.state.get("alert")
        if draft is None:
            return None
        base = Alert.model_validate(draft)
        outcome = verdict.outcome
        return base.model_copy(
            update={
                "time": now,
                "outcome": outcome,
                "action": "quarantine",
                "summary": f"{outcome.value}: " + (", ".join(actions) or "no action"),
                "reasons": base.reasons + tuple(notes),
                "state": state,
            }
        )

    def _make_alert(
        self,
        verdict: Verdict,
        facts: Facts,
        actions: list[str],
        notes: list[str],
        state: str | None,
        *,
        standing: str,
        now: datetime,
    ) -> Alert | None:
        outcome = verdict.outcome
        if outcome in (Outcome.PASSED, Outcome.PENDING) and not actions:
            return None
        # No new action: describe the standing state, so a repeat push of a quarantined
        # digest yields the same alert key as the first and is not sent again.
        action = actions[0].split(" ", 1)[0] if actions else standing
        # Every source's findings, worst first: each report was judged, the worst decided.
        ranked: list[Finding] = sorted(
            (f for scan in facts.scans for f in scan.findings), key=lambda f: (-f.severity, f.id)
        )
        severity = ranked[0].severity if ranked else Severity.UNKNOWN
        failed = [c for c in verdict.checks if c.outcome.value in ("fail", "error", "warn")]
        top = tuple(ranked[:5])
        image = facts.image.with_tag(None)
        return Alert(
            time=now,
            image=image,
            tags=facts.tags,
            team=verdict.team,
            outcome=outcome,
            severity=severity,
            action=action,
            summary=(f"{outcome.value}: " + (", ".join(actions) if actions else "no action")),
            reasons=tuple(f"{c.name}: {c.reason}" for c in failed) + tuple(notes),
            top_findings=top if outcome is not Outcome.PASSED else (),
            state=state,
            release_command=(
                f"{self.release_hint} {image} --reason '…'" if action == "quarantine" else None
            ),
        )


class _AlreadyHandled(Exception):
    """The delivery's outcome was committed by another attempt while this one worked."""


def _quarantine_actions(q: QuarantineOutcome) -> list[str]:
    if q.already_done:
        return []
    return [f"quarantine ({q.strategy} → {q.location})"] + [
        f"rollback {t} → {d}" for t, d in q.rolled_back.items()
    ]


def _stored_verdict(stored: object, image: ImageRef, now: datetime) -> Verdict:
    """The verdict an intent recorded; an intent from before verdicts were recorded is
    told as FAILED (only a failing verdict starts a quarantine that is not a hold)."""
    if isinstance(stored, dict):
        return Verdict.model_validate(stored)
    return Verdict(image=image, outcome=Outcome.FAILED, evaluated_at=now)


def _sweep_event(image: ImageRef, now: datetime) -> ImageEvent:
    return ImageEvent(
        kind=EventKind.SIGNED,
        source="recovery",
        image=image,
        time=now,
        delivery_id=f"recovery:{image}:{now.isoformat()}",
        subject_digest=image.digest,
    )


def _image_details(
    registry: Registry,
    image: ImageRef,
    ledger: Ledger | None,
    *,
    held: Callable[[], QuarantineRecord | None] | None = None,
    looked: tuple[ActionRecord | None] | None = None,
) -> ImageDetails:
    """The image's details; for an image under a standing `lock` quarantine, built from the
    manifests the lock recorded (verified against their digests): a read-locked manifest
    cannot be pulled, even by the gate. `held`: the digest's quarantine record (read once
    for the caller, who decides on it too); `looked`: its quarantine action's record as
    the caller read it."""
    assert image.digest is not None
    # only a registry with locks costs the extra ledger read
    if ledger is not None and CAP_LOCK in registry.capabilities and isinstance(registry, Lockable):
        record = (held(),) if held is not None else None
        stored = stored_manifests(ledger, image, held=record, looked=looked)
        if stored:
            return registry.image_details(image.repository, image.digest, manifests=stored)
    return registry.image_details(image.repository, image.digest)


def _read_details(
    registry: Registry,
    image: ImageRef,
    ledger: Ledger | None = None,
    *,
    held: Callable[[], QuarantineRecord | None] | None = None,
    looked: tuple[ActionRecord | None] | None = None,
) -> ImageDetails | None:
    try:
        return _image_details(registry, image, ledger, held=held, looked=looked)
    except NotFound:
        return None


def _classify(image: ImageRef, details: ImageDetails, known: Collection[str]) -> Classified:
    """What `image` is, from its manifest and every tag known to name it: `known` (the
    ledger's, the registry's), the provider's listing and the event's own tag."""
    tags = set(known) | set(details.record.tags) | ({image.tag} if image.tag else set())
    return classify_manifest(
        tags=tags, media_type=details.record.media_type, manifest=details.manifest
    )
