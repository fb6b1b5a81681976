"""The Azure Functions host stand-in (`support.azure_host`) as a process, on a tiny v2-model
function app of this test's own: every trigger kind it reads from `app.get_functions()`,
Event Grid's handshakes and deliveries (a raise is a 500, so Event Grid retries), the admin
API's run of a timer, an HTTP trigger behind its function key, and queue triggers on
Azurite — `dequeue_count` climbing on each retry, the message moved to `NAME-poison` at
host.json's `maxDequeueCount`, deleted once the function returns.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.azure_host import HostProcess
from support.azurite import Azurite

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOPIC = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/r"

APP = """\
import json, os
from pathlib import Path
from typing import Any
import azure.functions as func

app = func.FunctionApp()
OUT = Path(os.environ["OUT"])


def note(name, value):
    with (OUT / name).open("a") as f:
        f.write(json.dumps(value) + "\\n")


@app.event_grid_trigger(arg_name="event")
def on_push(event: func.EventGridEvent) -> None:
    cloud = isinstance(event, func.CloudEvent)
    when = event.time if cloud else event.event_time
    note("on_push", {"id": event.id, "type": event.type if cloud else event.event_type,
                     "topic": event.source if cloud else event.topic, "cloud": cloud,
                     "subject": event.subject, "data": event.get_json(),
                     "time": when.isoformat() if when else None})
    if event.get_json().get("fail"):
        raise RuntimeError("told to fail")


@app.timer_trigger(schedule="%TICK%", arg_name="timer", run_on_startup=False)
def tick(timer: func.TimerRequest) -> None:
    note("tick", {"past_due": timer.past_due})


@app.route(route="hook", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def on_webhook(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps({"got": req.get_json()}), status_code=201,
                             mimetype="application/json")


@app.queue_trigger(arg_name="msg", queue_name="%WORK_QUEUE%", connection="AzureWebJobsStorage")
def worker(msg: func.QueueMessage) -> None:
    body = msg.get_body().decode()
    note("worker", {"body": body, "dequeue_count": msg.dequeue_count})
    if body.startswith("fail"):
        raise RuntimeError("told to fail")
"""

HOST_JSON = {
    "version": "2.0",
    "extensions": {"queues": {"maxDequeueCount": 3, "visibilityTimeout": "00:00:00"}},
}


def child_env(out: Path, extra: dict[str, str]) -> dict[str, str]:
    paths = [str(ROOT), str(ROOT / "shared"), str(ROOT / "tests")]
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": os.pathsep.join(paths),
        "OUT": str(out),
        "TICK": "0 */5 * * * *",
        "WORK_QUEUE": "work",
        "AZURE_HOST_FUNCTION_KEY": "fn-key",
        "AZURE_HOST_POLL_SECONDS": "0.2",
        **extra,
    }


def until(probe: Callable[[], list[Any]], timeout: float = 60.0) -> list[Any]:
    """`probe()` once it is not empty (the host moves messages on its own thread)."""
    end = time.monotonic() + timeout
    while not (found := probe()):
        if time.monotonic() > end:
            raise TimeoutError("nothing arrived")
        threading.Event().wait(0.1)
    return found


def notes(out: Path, name: str) -> list[dict[str, object]]:
    path = out / name
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "function_app.py").write_text(APP)
    (tmp_path / "app" / "host.json").write_text(json.dumps(HOST_JSON))
    (tmp_path / "out").mkdir()
    return tmp_path


@pytest.fixture
def host(app_dir: Path) -> Iterator[HostProcess]:
    """The host without a storage account: its queue listener fails to connect and keeps
    trying (logged), the other triggers serve."""
    env = child_env(app_dir / "out", {"AzureWebJobsStorage": "UseDevelopmentStorage=false"})
    process = HostProcess(app_dir / "app" / "function_app.py", env, log=app_dir / "host.log")
    yield process
    process.kill()


def test_the_host_reads_every_function_and_its_trigger(host: HostProcess) -> None:
    assert host.functions == {
        "on_push": "eventGridTrigger",
        "tick": "timerTrigger",
        "on_webhook": "httpTrigger",
        "worker": "queueTrigger",
    }


def test_event_grid_handshakes_are_answered_and_never_call_the_function(
    host: HostProcess, app_dir: Path
) -> None:
    validation = [
        {
            "id": "2d1781af-3a4c-4d7c-bd0c-e34b19da4e66",
            "topic": TOPIC,
            "subject": "",
            "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"},
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "eventTime": "2026-01-01T00:00:00.0000000Z",
            "metadataVersion": "1",
            "dataVersion": "2",
        }
    ]
    status, answer = host._post(
        "/runtime/webhooks/eventgrid?functionName=on_push",
        json.dumps(validation).encode(),
        {"aeg-event-type": "SubscriptionValidation", "Content-Type": "application/json"},
        30,
    )
    assert (status, answer) == (200, {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"})
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", host.port, timeout=30)
    conn.request(
        "OPTIONS",
        "/runtime/webhooks/eventgrid?functionName=on_push",
        headers={"WebHook-Request-Origin": "eventgrid.azure.net"},
    )
    answer_options = conn.getresponse()
    answer_options.read()
    conn.close()
    assert answer_options.status == 200
    assert answer_options.getheader("WebHook-Allowed-Origin") == "eventgrid.azure.net"
    assert notes(app_dir / "out", "on_push") == [] and host.invocations() == []
    # no such function, or one that is not an Event Grid trigger
    assert host.eventgrid("nope", [])[0] == 404 and host.eventgrid("tick", [])[0] == 404


def test_each_event_of_a_delivery_is_one_call_and_a_raise_is_a_500(
    host: HostProcess, app_dir: Path
) -> None:
    def event(n: int, **data: object) -> dict[str, object]:
        return {
            "id": f"ev-{n}",
            "topic": TOPIC,
            "subject": "app:1.0",
            "eventType": "Microsoft.ContainerRegistry.ImagePushed",
            "eventTime": "2026-01-01T10:00:00.1234567Z",
            "data": {"n": n, **data},
            "dataVersion": "1.0",
            "metadataVersion": "1",
        }

    assert host.eventgrid("on_push", [event(1), event(2)]) == (200, None)
    cloud = {
        "specversion": "1.0",
        "id": "ce-3",
        "source": TOPIC,
        "subject": "app:2.0",
        "type": "Microsoft.ContainerRegistry.ImagePushed",
        "time": "2026-01-01T10:00:01Z",
        "data": {"n": 3},
    }
    assert host.eventgrid("on_push", cloud) == (200, None)
    status, _ = host.eventgrid("on_push", [event(4, fail=True)])
    assert status == 500

    seen = notes(app_dir / "out", "on_push")
    assert [s["id"] for s in seen] == ["ev-1", "ev-2", "ce-3", "ev-4"]
    assert seen[0]["type"] == "Microsoft.ContainerRegistry.ImagePushed"
    assert seen[0]["subject"] == "app:1.0" and seen[0]["data"] == {"n": 1}
    assert seen[0]["time"] == "2026-01-01T10:00:00.123456+00:00"
    assert seen[2]["topic"] == cloud["source"] and seen[2]["subject"] == "app:2.0"
    assert [s["cloud"] for s in seen] == [False, False, True, False]
    assert seen[2]["time"] == "2026-01-01T10:00:01+00:00"
    assert [(i["id"], i["ok"]) for i in host.invocations()] == [
        ("ev-1", True),
        ("ev-2", True),
        ("ce-3", True),
        ("ev-4", False),
    ]
    assert "told to fail" in (app_dir / "host.log").read_text()


def test_the_admin_api_runs_a_timer_and_http_triggers_want_their_key(
    host: HostProcess, app_dir: Path
) -> None:
    assert host.run_timer("tick") == 202
    assert notes(app_dir / "out", "tick") == [{"past_due": False}]
    assert host._post("/admin/functions/on_push", b"{}", {}, 30)[0] == 404

    body = json.dumps({"a": 1}).encode()
    assert host._post("/api/hook", body, {"Content-Type": "application/json"}, 30)[0] == 401
    status, answer = host._post("/api/hook?code=fn-key", body, {}, 30)
    assert (status, answer) == (201, {"got": {"a": 1}})
    status, answer = host._post("/api/hook", body, {"x-functions-key": "fn-key"}, 30)
    assert status == 201


# -- queues on Azurite ---------------------------------------------------------------------


@pytest.fixture
def storage(azurite: Azurite) -> str:
    """A connection string to the session's Azurite (its queues: `support.azurite`)."""
    return azurite.connection_string


def test_a_queue_message_is_retried_with_its_dequeue_count_then_poisoned(
    app_dir: Path, storage: str
) -> None:
    from azure.storage.queue import QueueClient

    queue = f"work-{uuid.uuid4().hex[:8]}"
    env = child_env(app_dir / "out", {"AzureWebJobsStorage": storage, "WORK_QUEUE": queue})
    process = HostProcess(app_dir / "app" / "function_app.py", env, log=app_dir / "host.log")
    try:
        work = QueueClient.from_connection_string(storage, queue)
        work.create_queue()  # as the Terraform makes it (the host makes it too, later)
        for text in ("ok-1", "fail-1"):
            work.send_message(base64.b64encode(text.encode()).decode())

        process.wait_for(
            lambda calls: len([c for c in calls if c["function"] == "worker"]) == 4,
            timeout=120,
        )
        poison = QueueClient.from_connection_string(storage, f"{queue}-poison")
        moved = until(lambda: poison.peek_messages(max_messages=5))
    finally:
        process.kill()
    seen = notes(app_dir / "out", "worker")
    assert {"body": "ok-1", "dequeue_count": 1} in seen
    failing = [s["dequeue_count"] for s in seen if s["body"] == "fail-1"]
    assert failing == [1, 2, 3]  # maxDequeueCount 3, then no more calls
    assert [base64.b64decode(m.content).decode() for m in moved] == ["fail-1"]
    assert work.peek_messages(max_messages=5) == []
