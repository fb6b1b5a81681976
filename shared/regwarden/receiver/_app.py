"""ASGI webhook receiver for registry notifications (distribution, Harbor).

Order of work for each request: authenticate → read the body, bounded → validate it
(cheap, pure parse; events for unconfigured registry hosts are refused) → persist it in
the durable queue → 202. A source whose sender proves the endpoint first (Event Grid:
`EventParser.handshake`) has its handshake answered (200) even without credentials, as
the sender's handshake may carry none: such a caller's body is read only up to
`HANDSHAKE_BODY`, and anything but a handshake from it is a 401. Processing happens on
the worker pool, so the caller's timeout (distribution often 1 s, Harbor 3 s) is never
spent on registry I/O.

The body is read as a stream against `MAX_BODY` and one overall deadline: a body
announced larger is refused from its Content-Length before a byte is read, one that grows
past the cap is refused as soon as it does, and a client that stalls is answered 408 and
dropped. Nothing is buffered past the cap.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import HostNotAllowed, IntakeError
from ..redact import redact_text
from ..store import EventQueue
from ._auth import CallerAuthenticator
from ._worker import Clock, WorkerPool, utcnow

if TYPE_CHECKING:
    from ..intake import HandshakeCheck
    from ._access import AccessIntake
    from ._metrics import ServeMetrics

log = logging.getLogger("regwarden.receiver")

# source name → validator returning how many events the body holds (raises IntakeError)
Validator = Callable[[bytes, str | None], int]

MAX_BODY = 1 << 20  # distribution batches events; a megabyte is far above any real batch
# what a caller without credentials may send a source that handshakes (Event Grid's
# validation event is under 1 KiB): enough for the handshake, little to read for nothing
HANDSHAKE_BODY = 64 << 10
# /readyz waits this long for the queue's write lock: a busy queue answers well within it
READY_TIMEOUT = 2.0
BODY_TIMEOUT = 10.0  # seconds for a whole body: senders post small bodies on a fast network


class _BodyRefused(Exception):
    """The body cannot be read: the response to send instead (and why, for the log)."""

    def __init__(self, status: int, error: str) -> None:
        super().__init__(error)
        self.status = status
        self.error = error


class _Disconnected(Exception):
    def __init__(self, received: int) -> None:
        super().__init__(f"client disconnected after {received} bytes of the body")
        self.received = received


async def _read_body(request: Any, *, limit: int, timeout: float) -> bytes:
    """The request body, read as a stream: never more than `limit` bytes held, never
    longer than `timeout` seconds in all."""
    from starlette.requests import ClientDisconnect

    announced = request.headers.get("content-length")
    if announced is not None and announced.strip().isdigit() and int(announced) > limit:
        raise _BodyRefused(413, f"body of {int(announced)} bytes is larger than {limit} bytes")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise _BodyRefused(413, f"body larger than {limit} bytes")
    except TimeoutError:
        raise _BodyRefused(
            408, f"body not received within {timeout:g} s ({len(body)} bytes arrived)"
        ) from None
    except ClientDisconnect:
        raise _Disconnected(len(body)) from None
    return bytes(body)


def create_app(
    *,
    ledger: EventQueue,
    auth: CallerAuthenticator,
    validators: dict[str, Validator],
    pool: WorkerPool | None = None,
    clock: Clock = utcnow,
    run_pool: bool = False,
    max_body: int = MAX_BODY,
    body_timeout: float = BODY_TIMEOUT,
    debug: bool = False,
    metrics: ServeMetrics | None = None,
    metrics_auth: CallerAuthenticator | None = None,
    metrics_public: bool = False,
    ready_timeout: float = READY_TIMEOUT,
    access: AccessIntake | None = None,
) -> Any:
    """A Starlette app with `POST /events/<source>` for each validator and `GET /healthz`.
    Each accepted body is enqueued on `ledger`: the work queue (an SQLite ledger's own, or
    the one `--queue` names).

    With `run_pool`, the app starts the worker pool at start-up and stops it at shutdown
    (for ASGI servers that own the process: `uvicorn functions.http.app:app`).
    `max_body` and `body_timeout` bound each request body; `debug` logs the traceback of
    an unexpected error (else one line).

    With `metrics`, `GET /metrics` serves them in the Prometheus text format, to callers
    holding a token of `metrics_auth` (default: the webhook's `auth`), or to anyone with
    `metrics_public`. `GET /readyz` answers 200 while the queue can be worked on — a
    writer's lock on it within `ready_timeout` seconds and every worker of `pool` alive —
    and 503 naming what is wrong otherwise; `/healthz` stays liveness (the process
    answers). Both probes are open: kubelets and load balancers carry no credentials.

    With `access`, the access events of a body from a source it parses (manifest pulls and
    pushes) go to the access monitor's in-memory queue: a body of pulls only is parsed once
    and never stored in the work queue; a body with pushes is also validated and stored as
    before. A full access queue answers 503 (Retry-After) for the whole body, before
    anything of it is stored, so the sender's retry counts nothing twice. `run_pool`
    starts and stops `access` with the pool."""
    import contextlib
    from collections.abc import AsyncIterator

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    from ..intake import PARSERS

    # sources that prove the endpoint before delivering (Event Grid): answered here
    handshakes = {
        s: check
        for s in validators
        if s in PARSERS and (check := PARSERS.get(s).handshake) is not None
    }

    async def receive(request: Request) -> Response:
        try:
            return await _receive(request)
        except Exception as exc:  # a bug: one line (and a 500), not an ASGI traceback
            log.error(
                "internal error on %s: %s: %s",
                request.url.path,
                type(exc).__name__,
                exc,
                exc_info=debug,
            )
            return JSONResponse({"error": "internal error"}, 500)

    async def _receive(request: Request) -> Response:
        source = request.path_params["source"]
        validate = validators.get(source)
        if validate is None:
            valid = ", ".join(sorted(validators))
            return JSONResponse({"error": f"unknown source {source!r}; valid: {valid}"}, 404)
        peer = request.client.host if request.client else "?"
        handshake = handshakes.get(source)
        if request.method == "OPTIONS":
            return _options(handshake, request)
        authorized = auth.check(request.headers.get("authorization"))
        unauthorized = JSONResponse(
            {"error": "unauthorized"},
            401,
            headers={"WWW-Authenticate": 'Bearer realm="regwarden"'},
        )
        if not authorized and handshake is None:
            log.warning("rejected %s webhook from %s: bad credentials", source, peer)
            return unauthorized
        try:
            limit = max_body if authorized else HANDSHAKE_BODY
            body = await _read_body(request, limit=limit, timeout=body_timeout)
        except _BodyRefused as exc:
            if not authorized:  # too big for a handshake: a delivery without credentials
                log.warning("rejected %s webhook from %s: bad credentials", source, peer)
                unauthorized.headers["Connection"] = "close"
                return unauthorized
            log.warning("rejected %s webhook from %s: %s", source, peer, exc.error)
            # the rest of the body is never read: the connection cannot be reused
            return JSONResponse({"error": exc.error}, exc.status, headers={"Connection": "close"})
        except _Disconnected as exc:
            log.warning("%s webhook from %s: %s; nothing stored", source, peer, exc)
            return Response(status_code=400)  # nobody is left to read it
        if handshake is not None:
            try:
                reply = handshake("POST", body, request.headers)
            except IntakeError as exc:
                log.warning("rejected %s handshake from %s: %s", source, peer, exc)
                return JSONResponse({"error": str(exc)}, 400)
            if reply is not None:
                log.info("answered a %s subscription handshake from %s", source, peer)
                return JSONResponse(reply.body or {}, 200, headers=reply.headers)
            if not authorized:
                log.warning("rejected %s webhook from %s: bad credentials", source, peer)
                return unauthorized
        content_type = request.headers.get("content-type")
        taken: list[Any] = []
        if access is not None and access.handles(source):
            try:
                taken = access.parse(source, body, content_type)
            except HostNotAllowed as exc:
                log.warning("rejected %s webhook from %s: %s", source, peer, exc)
                return JSONResponse({"error": str(exc)}, 400)
            except IntakeError as exc:  # the gate's parser judges the body: no push is lost
                log.warning("%s webhook from %s: access events not read: %s", source, peer, exc)
        # The gate acts on manifest pushes only, each of which is also an access event:
        # a body whose access events are all pulls holds nothing for the work queue.
        pulls_only = bool(taken) and all(e.action == "pull" for e in taken)
        count = 0
        if not pulls_only:
            try:
                count = validate(body, content_type)
            except IntakeError as exc:
                log.warning("rejected %s webhook from %s: %s", source, peer, exc)
                return JSONResponse({"error": str(exc)}, 400)
        if taken:
            assert access is not None
            if not access.offer(taken):  # before anything is stored: the retry is whole
                if metrics is not None:
                    metrics.access_full()
                log.warning(
                    "refused %s webhook from %s: the access queue is full (503, retried)",
                    source,
                    peer,
                )
                return JSONResponse(
                    {"error": "access queue full; retry later"}, 503, headers={"Retry-After": "1"}
                )
            if metrics is not None:
                metrics.access_received(source, [e.action for e in taken])
        if count == 0:  # e.g. only blob events or pulls: nothing to store
            if taken:
                return JSONResponse({"accepted": 0, "access": len(taken)}, 202)
            return JSONResponse({"accepted": 0}, 202)
        event_id = ledger.enqueue(source, body, content_type, now=clock())
        if metrics is not None:
            metrics.received(source, count)
        if pool is not None:
            pool.notify()
        if taken:
            return JSONResponse({"accepted": count, "id": event_id, "access": len(taken)}, 202)
        return JSONResponse({"accepted": count, "id": event_id}, 202)

    def _options(handshake: HandshakeCheck | None, request: Request) -> Response:
        """CloudEvents' abuse protection (an OPTIONS naming the sender's origin), for a
        source that handshakes; nothing else is served on OPTIONS."""
        try:
            reply = handshake("OPTIONS", b"", request.headers) if handshake else None
        except IntakeError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        if reply is None:
            return Response(status_code=405, headers={"Allow": "POST"})
        return Response(status_code=200, headers={"Allow": "POST, OPTIONS", **reply.headers})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True, "pending": ledger.pending_count()})

    async def readyz(request: Request) -> Response:
        problems = []
        try:
            await asyncio.to_thread(ledger.probe, timeout=ready_timeout)
        except Exception as exc:  # sqlite3.Error, OSError, a cloud store's own
            problems.append(f"work queue: {redact_text(str(exc)) or type(exc).__name__}")
        if pool is not None:
            running, wanted = pool.alive()
            if running < wanted:
                problems.append(f"workers: {running} of {wanted} running")
        if access is not None and not access.alive():
            problems.append("access monitor: not running")
        if problems:
            log.warning("not ready: %s", "; ".join(problems))
            return JSONResponse({"ready": False, "reasons": problems}, 503)
        return JSONResponse({"ready": True})

    watch = metrics_auth or auth

    async def metrics_endpoint(request: Request) -> Response:
        assert metrics is not None
        if not metrics_public and not watch.check(request.headers.get("authorization")):
            return JSONResponse(
                {"error": "unauthorized"},
                401,
                headers={"WWW-Authenticate": 'Bearer realm="regwarden-metrics"'},
            )
        body, content_type = await asyncio.to_thread(metrics.exposition)
        return Response(body, 200, headers={"Content-Type": content_type})

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if run_pool and pool is not None:
            pool.start()
        if run_pool and access is not None:
            access.start()
        try:
            yield
        finally:
            if run_pool and access is not None:
                access.stop()
            if run_pool and pool is not None:
                pool.stop()

    return Starlette(
        lifespan=lifespan,
        routes=[
            Route("/events/{source}", receive, methods=["POST", "OPTIONS"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            *([Route("/metrics", metrics_endpoint, methods=["GET"])] if metrics else []),
        ],
    )
