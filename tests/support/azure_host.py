"""A stand-in for the Azure Functions host, run as a process of its own (the chaos tests
SIGKILL it):

    python tests/support/azure_host.py functions/azure/function_app.py [--host-json FILE]

It imports the v2-model `function_app.py` (`app = func.FunctionApp()`), reads every
function and its trigger binding from `app.get_functions()` (the bindings' JSON as the
worker indexes them: `eventGridTrigger`, `queueTrigger`, `timerTrigger`, `httpTrigger`),
listens on 127.0.0.1 (a free port) and prints one line `{"port": N, "functions": {...}}`
on stdout once it serves. What it serves is what the real host serves:

- `POST /runtime/webhooks/eventgrid?functionName=NAME` — Event Grid's delivery to an
  Event Grid trigger. `aeg-event-type: SubscriptionValidation` with the validation event
  is answered `{"validationResponse": code}`; a CloudEvents `OPTIONS` with
  `WebHook-Request-Origin` is answered `WebHook-Allowed-Origin`; a notification (the Event
  Grid schema's array, or CloudEvents 1.0 structured, one or a batch) calls the function
  once per event with a `func.EventGridEvent`, or a `func.CloudEvent` for CloudEvents, as
  the Python worker decodes them. 200 when every call returned, 500 when one
  raised: Event Grid then retries the delivery.
- `POST /admin/functions/NAME` — the admin API's "run now" of a timer function (body
  `{"input": ""}`), called with a `func.TimerRequest`. The real host answers 202 at once and
  runs it after; here the answer waits for the run (202 when it returned, 500 when it
  raised) so a test needs no poll.
- `/api/ROUTE` — an HTTP trigger (its methods; `authLevel` function/admin wants `code` or
  `x-functions-key` equal to `AZURE_HOST_FUNCTION_KEY` when that is set), the function's
  `func.HttpResponse` returned as it is.
- queue triggers — each queue (`queueName`, `%SETTING%` resolved from the environment)
  polled on the storage account of the binding's `connection` setting (a connection
  string; Azurite here) through azure-storage-queue, as the host's queue listener does:
  receive with a visibility timeout, base64-decode the body (host.json
  `extensions.queues.messageEncoding`, base64 by default), call with a `func.QueueMessage`
  carrying `dequeue_count`; delete on success; on failure leave it to come back after
  host.json's `visibilityTimeout` — or, at `maxDequeueCount` (default 5), move it to
  `NAME-poison` and delete it. Polling waits at most `maxPollingInterval`
  (`AZURE_HOST_POLL_SECONDS` overrides it for tests).

Timers never fire by themselves: a test runs them through the admin API.
`GET /_host/invocations` (the stand-in's own, not the host's) lists every call so far
(`function`, `trigger`, `id`, `dequeue_count`, `ok`, `error`): a test waits on it.

The process's environment is the function app's settings. `AZURE_HOST_PRELOAD` names
modules imported before the app (comma list): a test's stand-in for what the platform
provides, such as the managed identity (`support.azure_world`'s). Standard library plus
azure-functions and (for queues) azure-storage-queue.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib.util
import inspect
import json
import os
import re
import sys
import threading
import traceback
from collections.abc import Callable
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import azure.functions as func
from azure.functions.queue import QueueMessage
from azure.functions.timer import TimerRequest

__all__ = ["Function", "Host", "load_functions", "main", "queue_settings"]

_SETTING = re.compile(r"%([^%]+)%")
_VALIDATION = "Microsoft.EventGrid.SubscriptionValidationEvent"


class Function:
    """One function of the app: its name, its trigger binding (the worker's JSON) and the
    user function."""

    def __init__(self, name: str, trigger: dict[str, Any], call: Callable[..., Any]) -> None:
        self.name = name
        self.trigger = trigger
        self.call = call

    @property
    def kind(self) -> str:
        return str(self.trigger["type"])

    def invoke(self, argument: Any) -> Any:
        """Call the user function with its trigger argument (by the binding's name)."""
        result = self.call(**{str(self.trigger["name"]): argument})
        if inspect.iscoroutine(result):
            result = asyncio.run(result)
        return result


def load_functions(app_path: Path) -> dict[str, Function]:
    """Import `function_app.py` and read its functions from the `FunctionApp` in it."""
    spec = importlib.util.spec_from_file_location("function_app", app_path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot import {app_path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules["function_app"] = module
    spec.loader.exec_module(module)
    apps = [v for v in vars(module).values() if isinstance(v, func.FunctionApp)]
    if len(apps) != 1:
        raise SystemExit(f"{app_path}: expected one func.FunctionApp, found {len(apps)}")
    found: dict[str, Function] = {}
    for fn in apps[0].get_functions():
        bindings = [
            json.loads(json.dumps(b.get_dict_repr(), default=_enum)) for b in fn.get_bindings()
        ]
        triggers = [b for b in bindings if str(b["type"]).endswith("Trigger")]
        if len(triggers) != 1:
            raise SystemExit(f"{fn.get_function_name()}: one trigger binding expected")
        others = [b for b in bindings if b is not triggers[0] and b["type"] != "http"]
        if others:
            # the stand-in binds triggers only; an input/output binding would be ignored
            raise SystemExit(f"{fn.get_function_name()}: unsupported bindings {others}")
        name = str(fn.get_function_name())
        found[name] = Function(name, triggers[0], fn.get_user_function())
    return found


def _enum(value: Any) -> Any:
    return getattr(value, "value", str(value))


def resolve(value: str, env: dict[str, str]) -> str:
    """`%SETTING%` → the app setting's value, as the host resolves binding expressions."""
    return _SETTING.sub(lambda m: env[m.group(1)], value)


def _timespan(value: Any, default: float) -> float:
    """host.json's TimeSpan ("hh:mm:ss") or milliseconds, in seconds."""
    if value is None:
        return default
    if isinstance(value, (int, float)):
        return float(value) / 1000
    hours, minutes, seconds = str(value).split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def queue_settings(host_json: dict[str, Any]) -> dict[str, Any]:
    """host.json `extensions.queues` with the host's defaults."""
    queues = (host_json.get("extensions") or {}).get("queues") or {}
    return {
        "maxDequeueCount": int(queues.get("maxDequeueCount", 5)),
        "visibilityTimeout": _timespan(queues.get("visibilityTimeout"), 0.0),
        "maxPollingInterval": _timespan(queues.get("maxPollingInterval"), 60.0),
        "messageEncoding": str(queues.get("messageEncoding", "base64")),
    }


class Host:
    def __init__(self, functions: dict[str, Function], host_json: dict[str, Any]) -> None:
        self.functions = functions
        self.queues = queue_settings(host_json)
        self.env = dict(os.environ)
        self.invocations: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.stopping = threading.Event()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True

    # -- calls -------------------------------------------------------------------------------

    def run(self, fn: Function, argument: Any, record: dict[str, Any]) -> tuple[bool, Any]:
        record = {"function": fn.name, "trigger": fn.kind, **record}
        try:
            result = fn.invoke(argument)
        except Exception as error:  # the host logs it and reports a failed invocation
            traceback.print_exc(file=sys.stderr)
            sys.stderr.flush()
            self._record({**record, "ok": False, "error": f"{type(error).__name__}: {error}"})
            return False, None
        self._record({**record, "ok": True, "error": None})
        return True, result

    def _record(self, record: dict[str, Any]) -> None:
        with self._lock:
            self.invocations.append(record)

    # -- Event Grid --------------------------------------------------------------------------

    def eventgrid(self, fn: Function, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        try:
            parsed = json.loads(body or b"null")
        except ValueError:
            return 400, {"error": "body is not JSON"}
        events = parsed if isinstance(parsed, list) else [parsed]
        if not events or not all(isinstance(e, dict) for e in events):
            return 400, {"error": "no events"}
        kind = headers.get("aeg-event-type", "")
        if kind == "SubscriptionValidation" or events[0].get("eventType") == _VALIDATION:
            code = (events[0].get("data") or {}).get("validationCode")
            if not code:
                return 400, {"error": "no validationCode"}
            return 200, {"validationResponse": code}
        for event in events:
            ok, _ = self.run(fn, _eventgrid_event(event), {"id": event.get("id")})
            if not ok:
                return 500, {"error": f"function {fn.name} failed"}
        return 200, None

    # -- queues ------------------------------------------------------------------------------

    def poll(self, fn: Function) -> None:
        """The queue listener of one queue trigger, until the host stops."""
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.queue import QueueClient

        name = resolve(str(fn.trigger["queueName"]), self.env)
        connection = self.env[str(fn.trigger.get("connection") or "AzureWebJobsStorage")]
        queue = QueueClient.from_connection_string(connection, name)
        poison = QueueClient.from_connection_string(connection, f"{name}-poison")
        for client in (queue, poison):
            with contextlib.suppress(ResourceExistsError):
                client.create_queue()
        idle = float(self.env.get("AZURE_HOST_POLL_SECONDS") or self.queues["maxPollingInterval"])
        busy_for = 600  # the host's visibility while a message runs (its lease)
        while not self.stopping.is_set():
            try:
                got = list(queue.receive_messages(max_messages=1, visibility_timeout=busy_for))
            except Exception:
                traceback.print_exc(file=sys.stderr)
                got = []
            if not got:
                self.stopping.wait(idle)
                continue
            message = got[0]
            raw = message.content
            body = raw.encode() if isinstance(raw, str) else bytes(raw or b"")
            if self.queues["messageEncoding"] == "base64":
                body = base64.b64decode(body)
            argument = QueueMessage(  # type: ignore[no-untyped-call]
                id=message.id,
                body=body,
                dequeue_count=message.dequeue_count,
                insertion_time=message.inserted_on,
                expiration_time=message.expires_on,
                time_next_visible=message.next_visible_on,
                pop_receipt=message.pop_receipt,
            )
            ok, _ = self.run(
                fn, argument, {"id": message.id, "dequeue_count": message.dequeue_count}
            )
            if ok:
                queue.delete_message(message)
            elif (message.dequeue_count or 0) >= self.queues["maxDequeueCount"]:
                poison.send_message(raw)  # as received: still in the queue's encoding
                queue.delete_message(message)
            else:
                queue.update_message(
                    message, visibility_timeout=int(self.queues["visibilityTimeout"])
                )

    # -- serving -----------------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        host = self

        class _Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _route(self) -> None:
                host._serve(self)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _route

        return _Handler

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        headers = {k.lower(): v for k, v in h.headers.items()}
        path = parts.path
        if path == "/runtime/webhooks/eventgrid":
            fn = self.functions.get(query.get("functionName", ""))
            if fn is None or fn.kind != "eventGridTrigger":
                return _reply(h, 404, {"error": "no such Event Grid function"})
            if h.command == "OPTIONS":
                origin = headers.get("webhook-request-origin")
                if not origin:
                    return _reply(h, 400, {"error": "no WebHook-Request-Origin"})
                return _reply(h, 200, None, {"WebHook-Allowed-Origin": origin})
            if h.command != "POST":
                return _reply(h, 405, None)
            return _reply(h, *self.eventgrid(fn, headers, body))
        if path.startswith("/admin/functions/") and h.command == "POST":
            fn = self.functions.get(path.removeprefix("/admin/functions/"))
            if fn is None or fn.kind != "timerTrigger":
                return _reply(h, 404, {"error": "no such timer function"})
            ok, _ = self.run(fn, TimerRequest(past_due=False), {"id": None})
            return _reply(h, 202 if ok else 500, None)
        if path == "/_host/invocations" and h.command == "GET":
            with self._lock:
                return _reply(h, 200, list(self.invocations))
        if path.startswith("/api/"):
            return self._http(h, path.removeprefix("/api/"), query, headers, body)
        return _reply(h, 404, {"error": f"no route {path}"})

    def _http(
        self,
        h: BaseHTTPRequestHandler,
        route: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes,
    ) -> None:
        for fn in self.functions.values():
            if fn.kind != "httpTrigger" or str(fn.trigger.get("route") or fn.name) != route:
                continue
            methods = [str(m).upper() for m in fn.trigger.get("methods") or []]
            if methods and h.command not in methods:
                return _reply(h, 405, None)
            key = self.env.get("AZURE_HOST_FUNCTION_KEY")
            level = str(fn.trigger.get("authLevel", "function")).lower()
            given = query.get("code") or headers.get("x-functions-key")
            if key and level != "anonymous" and given != key:
                return _reply(h, 401, None)
            request = func.HttpRequest(
                h.command,
                f"http://{headers.get('host', '127.0.0.1')}{h.path}",
                headers=headers,
                params=query,
                route_params={},
                body=body,
            )
            ok, response = self.run(fn, request, {"id": None})
            if not ok:
                return _reply(h, 500, None)
            if not isinstance(response, func.HttpResponse):
                return _reply(h, 500, {"error": "the function returned no HttpResponse"})
            extra = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
            if response.mimetype:
                extra.setdefault("Content-Type", response.mimetype)
            return _reply(h, response.status_code, response.get_body(), extra)
        return _reply(h, 404, {"error": f"no function at /api/{route}"})


def _eventgrid_event(event: dict[str, Any]) -> func.EventGridEvent | func.CloudEvent:
    """One event as the Python worker decodes it for an Event Grid trigger
    (azure-functions' `EventGridEventInConverter.decode`): a CloudEvent (it has
    `specversion`; unknown attributes as extensions) or an Event Grid schema event."""
    if "specversion" in event:
        known = {"specversion", "id", "source", "type", "time", "subject"}
        known |= {"datacontenttype", "dataschema", "data"}
        when = event.get("time")
        return func.CloudEvent(
            id=str(event.get("id") or ""),
            source=str(event.get("source") or ""),
            type=str(event.get("type") or ""),
            specversion=str(event.get("specversion") or ""),
            time=_parse_time(when) if isinstance(when, str) else None,
            subject=event.get("subject"),
            datacontenttype=event.get("datacontenttype"),
            dataschema=event.get("dataschema"),
            data=event.get("data"),
            **{k: v for k, v in event.items() if k not in known},
        )
    when = event.get("eventTime")
    return func.EventGridEvent(
        id=str(event.get("id") or ""),
        data=event.get("data") or {},
        topic=str(event.get("topic") or ""),
        subject=str(event.get("subject") or ""),
        event_type=str(event.get("eventType") or ""),
        event_time=_parse_time(when) if isinstance(when, str) else None,
        data_version=str(event.get("dataVersion") or ""),
    )


def _parse_time(value: str) -> datetime | None:
    text = value.replace("Z", "+00:00")
    # Event Grid writes 7 fractional digits; fromisoformat takes at most 6
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _reply(
    h: BaseHTTPRequestHandler, status: int, body: Any, headers: dict[str, str] | None = None
) -> None:
    raw = body if isinstance(body, bytes) else b"" if body is None else json.dumps(body).encode()
    h.send_response(status)
    sent = {k.lower() for k in (headers or {})}
    if body is not None and not isinstance(body, bytes) and "content-type" not in sent:
        h.send_header("Content-Type", "application/json; charset=utf-8")
    for key, value in (headers or {}).items():
        h.send_header(key, value)
    h.send_header("Content-Length", str(len(raw)))
    h.end_headers()
    if raw:
        h.wfile.write(raw)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("app", type=Path, help="the v2-model function_app.py")
    parser.add_argument("--host-json", type=Path, help="default: host.json beside the app")
    args = parser.parse_args(argv)
    host_json_path = args.host_json or args.app.parent / "host.json"
    host_json = json.loads(host_json_path.read_text()) if host_json_path.exists() else {}
    for name in filter(None, (os.environ.get("AZURE_HOST_PRELOAD") or "").split(",")):
        importlib.import_module(name.strip())  # a test's stand-ins (e.g. its identity)
    host = Host(load_functions(args.app.resolve()), host_json)
    for fn in host.functions.values():
        if fn.kind == "queueTrigger":
            threading.Thread(target=host.poll, args=(fn,), daemon=True).start()
    listing = {name: fn.kind for name, fn in host.functions.items()}
    print(json.dumps({"port": host.server.server_address[1], "functions": listing}), flush=True)
    try:
        host.server.serve_forever(poll_interval=0.05)
    finally:
        host.stopping.set()


if __name__ == "__main__":
    main()


# -- the parent's side -------------------------------------------------------------------------


class HostProcess:
    """The stand-in as a child process (`start`), its port read from its first line."""

    def __init__(self, app: Path, env: dict[str, str], *, log: Path, deadline: float = 120.0):
        import subprocess

        self.app = app
        self.log = log
        self._err = log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), str(app)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=self._err,
            cwd=env.get("AZURE_HOST_CWD") or None,
        )
        first: list[bytes] = []
        reader = threading.Thread(
            target=lambda: first.append(self.proc.stdout.readline() if self.proc.stdout else b""),
            daemon=True,
        )
        reader.start()
        reader.join(deadline)
        if not first or not first[0]:
            self.kill()
            raise RuntimeError(f"the host did not start: {log.read_text(errors='replace')[-3000:]}")
        started = json.loads(first[0])
        self.port = int(started["port"])
        self.functions: dict[str, str] = started["functions"]
        self.url = f"http://127.0.0.1:{self.port}"

    def kill(self) -> None:
        """SIGKILL: nothing is finished, nothing flushed."""
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._err.close()

    def _post(
        self, path: str, body: bytes, headers: dict[str, str], timeout: float
    ) -> tuple[int, Any]:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            conn.request("POST", path, body=body, headers=headers)
            answer = conn.getresponse()
            raw = answer.read()
            try:
                return answer.status, json.loads(raw) if raw else None
            except ValueError:
                return answer.status, raw
        finally:
            conn.close()

    def eventgrid(
        self, name: str, events: list[dict[str, Any]] | dict[str, Any], *, timeout: float = 300.0
    ) -> tuple[int, Any]:
        """Deliver as Event Grid does: an Event Grid schema array (`aeg-event-type:
        Notification`), or one structured CloudEvent (a dict)."""
        cloud = isinstance(events, dict)
        headers = {
            "Content-Type": "application/cloudevents+json; charset=utf-8"
            if cloud
            else "application/json",
            "aeg-event-type": "Notification",
        }
        path = f"/runtime/webhooks/eventgrid?functionName={name}"
        return self._post(path, json.dumps(events).encode(), headers, timeout)

    def run_timer(self, name: str, *, timeout: float = 300.0) -> int:
        """The admin API's run-now of a timer function: 202 when it returned."""
        return self._post(
            f"/admin/functions/{name}",
            b'{"input": ""}',
            {"Content-Type": "application/json"},
            timeout,
        )[0]

    def invocations(self) -> list[dict[str, Any]]:
        import http.client

        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request("GET", "/_host/invocations")
            return list(json.loads(conn.getresponse().read()))
        finally:
            conn.close()

    def wait_for(
        self, check: Callable[[list[dict[str, Any]]], bool], *, timeout: float = 120.0
    ) -> list[dict[str, Any]]:
        """The invocations once `check` holds of them (polled: the host runs queues on its
        own threads)."""
        import time

        end = time.monotonic() + timeout
        while True:
            seen = self.invocations()
            if check(seen):
                return seen
            if time.monotonic() > end:
                raise TimeoutError(f"invocations never matched: {seen}")
            threading.Event().wait(0.1)
