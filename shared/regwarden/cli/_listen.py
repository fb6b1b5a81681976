"""The listening socket and HTTP server of `regwarden serve`.

The socket is bound here, before uvicorn starts, so a port in use, a port the process may
not bind or an address that is not local is a usage error (exit 2) naming the cause,
instead of uvicorn's log line and exit 1 after the workers have started.
"""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING, Any

from ..errors import UsageError

if TYPE_CHECKING:
    from ._serve import Tls

#: Connections served at once; more are answered 503 (memory stays under this × MAX_BODY).
MAX_CONNECTIONS = 128
#: Seconds an idle keep-alive connection is kept open.
KEEP_ALIVE = 5
#: Largest request line plus headers (h11): webhook headers are a few hundred bytes.
MAX_HEADERS = 16 * 1024

_CAUSES = {
    errno.EADDRINUSE: "address already in use",
    errno.EACCES: "permission denied",
    errno.EADDRNOTAVAIL: "not an address of this machine",
}


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on `host:port` (port 0: any free port); UsageError (exit 2)
    with the cause when it cannot be had."""
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise UsageError(
            f"cannot listen on {where}: unknown address ({exc})",
            hint="--host takes an address or name of this machine, e.g. 127.0.0.1 or 0.0.0.0",
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart in TIME_WAIT
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        cause = _CAUSES.get(exc.errno or 0, exc.strerror or str(exc))
        hint = "choose another --port" if exc.errno in _CAUSES else None
        raise UsageError(f"cannot listen on {where}: {cause}", hint=hint) from None
    return sock


def bound_url(sock: socket.socket, *, tls: bool = False) -> str:
    host, port = sock.getsockname()[:2]
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def run_server(app: Any, sock: socket.socket, *, tls: Tls | None = None) -> None:
    """Serve `app` on `sock` until SIGINT/SIGTERM, over HTTPS with `tls` (uvicorn's
    ssl_certfile/ssl_keyfile, checked beforehand by `_serve.check_tls`). uvicorn's own
    logs: warnings only.

    After its graceful shutdown uvicorn raises the signal it caught again, for the
    handler that was there before it. For SIGTERM that was the default — the process
    ended at once, and the caller's `finally` (stopping the workers, draining the access
    monitor's queue and writing its pull tallies) never ran. So SIGTERM's handler here is
    one that raises SystemExit(143): the caller cleans up, and the exit status is the
    shell's for SIGTERM."""
    import signal
    import threading

    import uvicorn

    config = uvicorn.Config(
        app,
        log_config=None,  # its loggers propagate to the root handler, which redacts
        log_level="warning",
        timeout_keep_alive=KEEP_ALIVE,
        limit_concurrency=MAX_CONNECTIONS,
        h11_max_incomplete_event_size=MAX_HEADERS,
        server_header=False,
        date_header=False,
        ssl_certfile=str(tls.cert) if tls else None,
        ssl_keyfile=str(tls.key) if tls else None,
    )
    server = uvicorn.Server(config)
    if threading.current_thread() is not threading.main_thread():  # no signals here
        server.run(sockets=[sock])
        return
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
