"""The floor of `bench/access.py`, run as its own process (as `regwarden serve` is):

    python bench/_access_floor.py TOKENS QUEUE PORT

The receiver app `regwarden serve` runs (`create_app`: the same routes, the same caller
authentication, the same bounded streaming body read) on the same uvicorn configuration
(`run_server`), whose only validator acknowledges every body (202) without parsing or
keeping anything: what the product's receiver costs before it does any work of its own.
"""

from __future__ import annotations

import sys
from pathlib import Path


def acknowledge(body: bytes, content_type: str | None) -> int:
    return 0  # nothing to keep: 202 {"accepted": 0}, as the product answers a pull


def main(tokens: str, queue: str, port: int) -> None:
    from regwarden.cli._listen import listen, run_server
    from regwarden.logsetup import logging_setup
    from regwarden.receiver import CallerAuthenticator, create_app
    from regwarden.store import SqliteLedger

    logging_setup(debug=False)
    app = create_app(
        ledger=SqliteLedger(Path(queue)),
        auth=CallerAuthenticator.from_file(tokens),
        validators={"distribution": acknowledge},
    )
    sock = listen("127.0.0.1", port)
    print(f"floor listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    run_server(app, sock)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
