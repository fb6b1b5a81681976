"""One cold start in a fresh interpreter, for `bench/cold_start.py` (run as a script).

    python bench/_cold_child.py product SPEC OUT    # import the handler, handle one record
    python bench/_cold_child.py floor SPEC OUT      # SDK clients (+ X-Ray) + the same requests
                                                    # (+ SPEC's `libraries`, imported first)

SPEC is the JSON the bench wrote (the Lambda SQS event, or the services and requests to
replay); OUT receives this process's monotonic marks (`time.monotonic` is system-wide on
Linux, so the bench compares them with the moment it spawned this process). Both modes
run this same file and import only the standard library before their own work, so they
pay the same interpreter start. A line `cold-bench: first-record` on stderr separates the
handler's module import from its first record in `-X importtime` output. The packages a
deployed function would not find (SPEC's `hidden`, from `_cold_layer.py`) cannot be
imported, in either mode.
"""

from __future__ import annotations

import time

STARTED = time.monotonic()

import json  # noqa: E402  # after the first mark: the interpreter start is measured alone
import sys  # noqa: E402
from typing import Any  # noqa: E402

MARKER = "cold-bench: first-record"


class Context:
    """What the Lambda runtime passes as `context` (the attributes Powertools reads)."""

    def __init__(self, function_name: str, arn: str) -> None:
        self.function_name = function_name
        self.invoked_function_arn = arn
        self.memory_limit_in_mb = 512
        self.aws_request_id = "00000000-0000-4000-8000-000000000001"
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "cold-bench"

    def get_remaining_time_in_millis(self) -> int:
        return 120_000


def count_clients(tally: dict[str, float]) -> None:
    """Time every botocore client the product creates, and count its botocore sessions
    (each parses the service models again). Imports botocore first: for the breakdown run
    that asks for it only, never for a timed one."""
    from botocore.session import Session

    create, init = Session.create_client, Session.__init__

    def timed(self: Session, *args: Any, **kwargs: Any) -> Any:
        began = time.monotonic()
        try:
            return create(self, *args, **kwargs)
        finally:
            tally["clients"] += 1
            tally["client_ms"] += (time.monotonic() - began) * 1000

    def counted(self: Session, *args: Any, **kwargs: Any) -> None:
        tally["sessions"] += 1
        init(self, *args, **kwargs)

    Session.create_client = timed
    Session.__init__ = counted


def product(spec: dict[str, Any]) -> dict[str, Any]:
    """The handler's public entry, as Lambda calls it on a cold start."""
    tally = {"clients": 0, "client_ms": 0.0, "sessions": 0}
    if spec.get("count_clients"):
        count_clients(tally)
    from functions.aws.on_push import handler

    imported = time.monotonic()
    sys.stderr.write(MARKER + "\n")
    sys.stderr.flush()
    result = handler(spec["event"], Context(spec["function_name"], spec["function_arn"]))
    handled = time.monotonic()
    if result != {"batchItemFailures": []}:
        raise SystemExit(f"the record was not handled: {result!r}")
    marks: dict[str, Any] = {"started": STARTED, "imported": imported, "handled": handled}
    return {**marks, **tally} if spec.get("count_clients") else marks


def floor(spec: dict[str, Any]) -> dict[str, Any]:
    """The least a handler doing the same work must pay: boto3, one client per service the
    product called, the X-Ray recorder when tracing is on, and the product's requests sent
    again raw (one keep-alive connection per server, one after another). With `libraries`
    (module, attribute) pairs, those are imported first (the informational second floor)."""
    import importlib

    for module, name in spec.get("libraries", ()):
        getattr(importlib.import_module(module), name)
    import boto3
    from _cold_raw import send_raw
    from botocore.config import Config

    config = Config(connect_timeout=5, read_timeout=20, retries={"max_attempts": 3})
    session = boto3.session.Session()
    clients = [session.client(name, config=config) for name in spec["services"]]
    if spec["xray"]:
        from aws_xray_sdk.core import xray_recorder  # type: ignore[import-untyped]

        clients.append(xray_recorder)
    imported = time.monotonic()
    close = send_raw(spec["requests"])
    handled = time.monotonic()
    close()
    return {"started": STARTED, "imported": imported, "handled": handled, "clients": len(clients)}


def main() -> None:
    mode, spec_path, out_path = sys.argv[1:4]
    with open(spec_path, encoding="utf-8") as file:
        spec = json.load(file)
    from _cold_raw import Hidden

    sys.meta_path.insert(0, Hidden(spec.get("hidden", ())))
    marks = product(spec) if mode == "product" else floor(spec)
    with open(out_path, "w", encoding="utf-8") as file:
        json.dump(marks, file)


if __name__ == "__main__":
    main()
