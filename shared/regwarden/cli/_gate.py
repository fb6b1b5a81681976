"""`regwarden serve | invoke | check | quarantine release`."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import typer

from ..errors import NotImplementedYet, UsageError
from ..model import ImageEvent
from ..pipeline import Handled
from ._render import print_json

log = logging.getLogger("regwarden.cli")


def _now() -> datetime:
    return datetime.now(UTC)


def handled_row(h: Handled) -> dict[str, object]:
    verdict = h.verdict
    return {
        "event": h.event.kind.value,
        "image": str(verdict.image if verdict else h.event.image),
        "outcome": verdict.outcome.value if verdict else None,
        "ignored": h.ignored,
        "actions": list(h.actions),
        "alerts": h.alerts,
        "notes": list(h.notes),
        "checks": [c.model_dump(mode="json") for c in verdict.checks] if verdict else [],
        "recheckAt": h.recheck_at.isoformat() if h.recheck_at else None,
    }


def print_handled(h: Handled) -> None:
    if h.verdict is None:
        print(f"  {h.event.kind.value:7} {h.event.image}: ignored ({h.ignored})", flush=True)
        return
    v = h.verdict
    print(f"  {v.outcome.value:7} {v.image}", flush=True)
    for c in v.checks:
        if c.outcome.value != "skip":
            print(f"           {c.outcome.value:7} {c.name}: {c.reason}", flush=True)
    for a in h.actions:
        print(f"           → {a}", flush=True)
    for n in h.notes:
        print(f"           note: {n}", flush=True)


def exit_code(results: Sequence[Handled]) -> int:
    codes = [h.verdict.outcome.exit_code for h in results if h.verdict is not None]
    return max(codes, default=0)


def run_invoke(
    function: str,
    event_file: Path | None,
    *,
    policy: Path,
    ledger: str,
    insecure: bool,
    output: str,
    debug: bool = False,
) -> None:
    from .. import service
    from ..logsetup import logging_setup
    from ..runtime import load_runtime

    logging_setup(debug=debug)
    if function == "retention":
        raise NotImplementedYet(f"'regwarden invoke {function}' is not implemented yet")
    if function not in ("on_push", "on_scan", "notify"):
        raise UsageError(
            f"unknown function {function!r}; valid: on_push, on_scan, retention, notify"
        )
    if event_file is None:
        raise UsageError(f"invoke {function} needs an EVENT_FILE (see events/)")
    try:
        body = event_file.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {event_file}: {exc.strerror}") from None
    if function == "notify":
        _run_notify(
            body, event_file, policy=policy, ledger=ledger, insecure=insecure, output=output
        )
        return
    if _is_occurrence(body):  # Artifact Analysis names no image: it is looked up
        source, events = "artifact-analysis", _occurrence_events(body, event_file)
    else:
        source = service.detect_source(body)
        events = service.parse_body(source, body, "application/json")
    runtime = load_runtime(policy, ledger=ledger, insecure=insecure)
    try:
        pipeline = runtime.pipeline()
        results = [pipeline.handle(e, now=_now()) for e in events]
    finally:
        runtime.close()
    if output == "json":
        print_json([handled_row(h) for h in results])
    else:
        print(f"{function}: {len(events)} event(s) from {source}")
        for h in results:
            print_handled(h)
    raise typer.Exit(exit_code(results))


def _is_occurrence(body: bytes) -> bool:
    from ..intake import is_occurrence_delivery
    from ..nesting import loads_json

    try:
        doc = loads_json(body)
    except ValueError:  # detect_source words the error
        return False
    return is_occurrence_delivery(doc)


def _occurrence_events(body: bytes, event_file: Path) -> list[ImageEvent]:
    """The SCANNED event of an Artifact Analysis occurrence notification, as `on_scan` makes
    it: the occurrence is fetched to find its image, so this needs Artifact Analysis
    (Application Default Credentials, or `REGWARDEN_GCP_ENDPOINT_CONTAINERANALYSIS`)."""
    import os

    from google.auth.exceptions import GoogleAuthError

    from ..errors import RegistryError
    from ..intake.pubsub import decode_file
    from ..scanning.artifact_analysis import occurrence_events, parse_occurrence_notification

    message = decode_file(body)
    try:
        return occurrence_events(message.data, message.message_id, env=os.environ)
    except (GoogleAuthError, RegistryError) as exc:
        name = parse_occurrence_notification(message.data).name
        raise UsageError(
            f"{event_file}: an Artifact Analysis occurrence names no image, and looking up "
            f"{name} needs Artifact Analysis access: {exc}",
            hint="gcloud auth application-default login (or set "
            "REGWARDEN_GCP_ENDPOINT_CONTAINERANALYSIS)",
        ) from None


def _run_notify(
    body: bytes, event_file: Path, *, policy: Path, ledger: str, insecure: bool, output: str
) -> None:
    """The notify function: one alert (a Pub/Sub delivery from the alerts topic, or the
    alert's JSON as SNS delivers it raw) → every channel the policy routes it to, except
    the alerts topic it came from. Exit 1 when a channel failed."""
    import os

    from pydantic import ValidationError

    from ..errors import IntakeError
    from ..intake.pubsub import is_pubsub_delivery, message_of
    from ..nesting import loads_json
    from ..notify import Alert, Notifier, build_channels, deliver, routed_to
    from ..policy import PubSubChannelConfig
    from ..runtime import load_runtime

    try:
        doc = loads_json(body)
    except ValueError as exc:
        raise IntakeError(f"{event_file}: not JSON: {exc}") from None
    came_from = os.environ.get("REGWARDEN_ALERTS_TOPIC")
    if is_pubsub_delivery(doc):
        message = message_of(doc)
        if message is None:
            from ..intake.pubsub import decode_file

            decode_file(body)  # words what is wrong with it
            raise IntakeError(f"{event_file}: not a Pub/Sub delivery")
        body = message.data
        if message.source and "/topics/" in message.source:
            came_from = message.source.split("//pubsub.googleapis.com/", 1)[-1]
    try:
        alert = Alert.model_validate_json(body)
    except ValidationError as exc:
        raise IntakeError(
            f"{event_file}: not a regwarden alert ({exc.errors()[0]['msg']})"
        ) from None
    runtime = load_runtime(policy, ledger=ledger, insecure=insecure)
    try:
        rules = runtime.policy.notifications
        names = routed_to(rules, alert)

        built = build_channels(runtime.policy, runtime.env)

        def channel(name: str) -> Notifier | None:
            config = rules.channels[name]
            if isinstance(config, PubSubChannelConfig) and config.topic == came_from:
                return None  # publishing back to the alerts topic would loop
            return built[name]

        report = deliver(
            alert, names, channel, runtime.ledger, now=_now(), unavailable="the alerts topic"
        )
    finally:
        runtime.close()
    summary = {
        "alert": report.alert,
        "sent": list(report.sent),
        "skipped": list(report.skipped),
        "failed": list(report.failed),
    }
    if output == "json":
        print_json(summary)
    else:
        print(f"notify: {alert.title}")
        for key in ("sent", "skipped", "failed"):
            for name in summary[key]:
                print(f"  {key:7} {name}")
    raise typer.Exit(1 if report.failed else 0)


def run_check(image: str, *, policy: Path, ledger: str, insecure: bool, output: str) -> None:
    from ..reference import ImageRef
    from ..runtime import load_runtime

    ref = ImageRef.parse(image)
    runtime = load_runtime(policy, ledger=ledger, insecure=insecure)
    try:  # no action, so no alert: channel secrets are not needed here
        verdict = runtime.pipeline(alerts=False).assess(ref, now=_now())
    finally:
        runtime.close()
    if output == "json":
        print_json(verdict.model_dump(mode="json"))
    else:
        print(
            f"{verdict.outcome.value}  {verdict.image}  (mode {verdict.mode}, "
            f"team {verdict.team or '-'})"
        )
        for c in verdict.checks:
            print(f"  {c.outcome.value:7} {c.name}: {c.reason}")
    raise typer.Exit(verdict.outcome.exit_code)


def run_release(
    image: str,
    *,
    reason: str,
    ledger: str,
    insecure: bool,
    output: str,
    by: str | None = None,
) -> None:
    """Release a standing quarantine; an image with none (never quarantined, or released
    already) is NotQuarantined (exit 1), and nothing is written. `by`: the operator."""
    from ..actions import release
    from ..providers import ProviderOptions, open_registry
    from ..reference import ImageRef
    from ..store import open_ledger
    from ._quarantine import ensure_quarantined

    if not reason.strip():
        raise UsageError("--reason must say why the image is released (it is audited)")
    ref = ImageRef.parse(image)
    store = open_ledger(ledger)
    registry = open_registry(ref.api_host, ProviderOptions(insecure=insecure))
    try:
        if ref.digest is None:
            digest = registry.resolve(ref.repository, ref.reference)
            if digest is None:
                raise UsageError(f"{ref} not found; give the digest from the alert (REPO@sha256:…)")
            ref = ref.with_digest(digest)
        ensure_quarantined(store, ref.with_tag(None))
        outcome = release(
            registry, store, image=ref.with_tag(None), reason=reason, now=_now(), by=by
        )
    finally:
        registry.close()
        store.close()
    if output == "json":
        print_json(
            {
                "image": str(ref),
                "restoredTags": list(outcome.restored_tags),
                "skipped": list(outcome.skipped),
                "repository": outcome.location,
            }
        )
    else:
        print(
            f"released {ref.with_tag(None)} into {outcome.location}; tags restored: "
            f"{', '.join(outcome.restored_tags) or 'none'}"
        )
        for s in outcome.skipped:
            print(f"  not restored: {s}")


def run_serve(
    *,
    policy: Path,
    host: str,
    port: int,
    auth_token_file: Path | None,
    ledger: str,
    insecure: bool,
    workers: int,
    queue: str | None = None,
    registries: Sequence[str] = (),
    body_timeout: float | None = None,
    debug: bool = False,
    instance: str | None = None,
    lease_timeout: float = 30.0,
    metrics_public: bool = False,
    metrics_token_file: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    basic_user: str = "regwarden",
    access_queue: int = 10_000,
    access_sweep: float = 5.0,
) -> None:
    import os
    import socket
    import sys
    from datetime import timedelta

    from .. import service
    from ..intake import parse_host
    from ..logsetup import logging_setup
    from ..receiver import BODY_TIMEOUT, CallerAuthenticator, ServeMetrics, WorkerPool, create_app
    from ..recovery import Sweeper
    from ..runtime import ENV_REGISTRIES, load_runtime, registries_from_env
    from ..store import open_queue
    from ._listen import bound_url, listen, run_server
    from ._serve import check_tls, metrics_access, startup_line

    if auth_token_file is None:
        raise UsageError(
            "regwarden serve needs --auth-token-file: webhook callers must authenticate",
            hint="one token per line; give the same token to "
            "the registry's notification endpoint headers",
        )
    extra = [parse_host(r, what="--registry") for r in registries]
    extra += registries_from_env(os.environ)
    if ":" in basic_user:  # RFC 7617: the user-id ends at the first colon
        raise UsageError(f"--basic-user {basic_user!r}: a Basic-auth user name has no ':'")
    auth = CallerAuthenticator.from_file(str(auth_token_file), basic_user=basic_user or None)
    tls = check_tls(tls_cert, tls_key)
    metrics_guard, metrics_auth = metrics_access(
        public=metrics_public, token_file=metrics_token_file
    )
    logging_setup(debug=debug)  # before any client exists: no request URL is ever logged
    runtime = load_runtime(policy, ledger=ledger, insecure=insecure, registries=extra)
    work = None
    try:
        work = open_queue(queue, ledger=runtime.ledger)  # the ledger's own unless --queue
        pipeline = runtime.pipeline()
        allowed = runtime.allowed_hosts or frozenset()
        if not allowed:
            raise UsageError(
                "regwarden serve has no registry to serve: it contacts only configured hosts",
                hint="list them in the policy's registries section, or pass --registry "
                f"HOST[:PORT] (repeatable) or {ENV_REGISTRIES}=HOST,HOST",
            )
        metrics = ServeMetrics(work, clock=_now)  # prometheus-client missing: exit 2 here
        # pulls (and pushes, for `access.pushers`) to the access monitor, off the work queue
        access = service.access_intake(
            runtime.policy,
            pipeline,
            allowed_hosts=allowed,
            clock=_now,
            metrics=metrics,
            capacity=access_queue,
            sweep_every=access_sweep,
        )
        sock = listen(host, port)
    except BaseException:
        runtime.close()
        runtime.ledger.close()
        if work is not None:  # the ledger itself, or --queue's (closing twice is harmless)
            work.close()
        raise

    def handled(h: Handled) -> None:
        metrics.handled(h)
        print_handled(h)

    processor = service.Processor(pipeline, work, clock=_now, on_handled=handled)
    # A stable owner id: after a restart this process takes its own leases back at once.
    pool = WorkerPool(
        work,
        processor,
        workers=workers,
        owner=instance or f"{socket.gethostname()}:{port}",
        lease_timeout=timedelta(seconds=lease_timeout),
        max_attempts=service.MAX_ATTEMPTS,
    )
    sweeper = Sweeper(pipeline, clock=_now)  # finishes what a crash left, then every 30 s
    app = create_app(
        ledger=work,
        auth=auth,
        validators=service.receiver_validators(pipeline.wants, allowed),
        pool=pool,
        body_timeout=BODY_TIMEOUT if body_timeout is None else body_timeout,
        debug=debug,
        metrics=metrics,
        metrics_auth=metrics_auth,
        metrics_public=metrics_public,
        access=access,
    )
    line = startup_line(
        url=bound_url(sock, tls=tls is not None),
        policy=runtime.policy,
        policy_path=str(policy),
        ledger=ledger,
        queue=queue,
        workers=workers,
        auth=auth.describe(),
        metrics=metrics_guard,
        registries=allowed,
        access=f"access monitor (queue {access_queue:,})",
    )
    print(line, file=sys.stderr, flush=True)  # whatever the log level: the operator's line
    metrics.watch_requests()
    pool.start()
    access.start()
    sweeper.start()
    try:
        run_server(app, sock, tls=tls)
    finally:
        access.stop()  # what was acknowledged is handled and every pull tally written
        sweeper.stop()
        pool.stop()
        metrics.close()
        runtime.close()
