"""ASGI webhook receiver for registry notifications (distribution, Harbor).

Order of work for each request: authenticate → validate the body (cheap, pure parse) →
persist it in the durable queue → 202. Processing happens on the worker pool, so the
caller's timeout (distribution often 1 s, Harbor 3 s) is never spent on registry I/O.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from ..errors import IntakeError
from ..store import SqliteLedger
from ._auth import Authenticator
from ._worker import Clock, WorkerPool, utcnow

log = logging.getLogger("regwarden.receiver")

# source name → validator returning how many events the body holds (raises IntakeError)
Validator = Callable[[bytes, str | None], int]

MAX_BODY = 1 << 20  # distribution batches events; a megabyte is far above any real batch


def create_app(
    *,
    ledger: SqliteLedger,
    auth: Authenticator,
    validators: dict[str, Validator],
    pool: WorkerPool | None = None,
    clock: Clock = utcnow,
    run_pool: bool = False,
) -> Any:
    """A Starlette app with `POST /events/<source>` for each validator and `GET /healthz`.

    With `run_pool`, the app starts the worker pool at start-up and stops it at shutdown
    (for ASGI servers that own the process: `uvicorn functions.http.app:app`)."""
    import contextlib
    from collections.abc import AsyncIterator

    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    async def receive(request: Request) -> Response:
        source = request.path_params["source"]
        validate = validators.get(source)
        if validate is None:
            valid = ", ".join(sorted(validators))
            return JSONResponse({"error": f"unknown source {source!r}; valid: {valid}"}, 404)
        if not auth.check(request.headers.get("authorization")):
            log.warning(
                "rejected %s webhook from %s: bad credentials",
                source,
                request.client.host if request.client else "?",
            )
            return JSONResponse(
                {"error": "unauthorized"},
                401,
                headers={"WWW-Authenticate": 'Bearer realm="regwarden"'},
            )
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"error": f"body larger than {MAX_BODY} bytes"}, 413)
        content_type = request.headers.get("content-type")
        try:
            count = validate(body, content_type)
        except IntakeError as exc:
            log.warning("rejected malformed %s webhook: %s", source, exc)
            return JSONResponse({"error": str(exc)}, 400)
        if count == 0:  # e.g. only blob events: nothing to do, nothing to store
            return JSONResponse({"accepted": 0}, 202)
        event_id = ledger.enqueue(source, body, content_type, now=clock())
        if pool is not None:
            pool.notify()
        return JSONResponse({"accepted": count, "id": event_id}, 202)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"ok": True, "pending": ledger.pending_count()})

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if run_pool and pool is not None:
            pool.start()
        try:
            yield
        finally:
            if run_pool and pool is not None:
                pool.stop()

    return Starlette(
        lifespan=lifespan,
        routes=[
            Route("/events/{source}", receive, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ],
    )
