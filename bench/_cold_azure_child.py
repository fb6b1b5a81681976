"""One cold start of the Azure `on_push` function in a fresh interpreter, for
`bench/cold_start_azure.py` (run as a script).

    python bench/_cold_azure_child.py product SPEC OUT   # the function's first event
    python bench/_cold_azure_child.py floor SPEC OUT     # SDK clients + the same requests

Both modes first import azure-functions (the runtime: the Python worker has it loaded
before it indexes `function_app.py`) and mark `runtime`. The product then imports
`function_app.py` as the worker does (a module of that name from the app's root), finds
`on_push` in `app.get_functions()` and calls it with the event as a `func.EventGridEvent`
(what the worker builds from an Event Grid delivery); the floor imports the Azure client
library of every service the product called, creates one client each (at the same
endpoints, with the same kind of credential) and httpx's client (the OCI data plane's
library), then sends the product's requests again raw. SPEC's `hidden` packages (the AWS
and Google SDKs and the dev tools a deployed function does not have) cannot be imported in
either mode.
"""

from __future__ import annotations

import time

STARTED = time.monotonic()

import json  # noqa: E402  # after the first mark: the interpreter start is measured alone
import sys  # noqa: E402
from typing import Any  # noqa: E402

MARKER = "cold-bench: first-delivery"  # what _cold_runs.importtime_ms splits on


def _event(doc: dict[str, Any]) -> Any:
    """The worker's `func.EventGridEvent` of one Event Grid schema event."""
    from datetime import datetime

    import azure.functions as func

    return func.EventGridEvent(
        id=doc["id"],
        data=doc["data"],
        topic=doc["topic"],
        subject=doc["subject"],
        event_type=doc["eventType"],
        event_time=datetime.fromisoformat(doc["eventTime"].replace("Z", "+00:00")),
        data_version=doc["dataVersion"],
    )


def product(spec: dict[str, Any]) -> dict[str, Any]:
    import importlib.util
    import logging
    import os

    import azure.functions  # noqa: F401  # the runtime

    runtime = time.monotonic()
    sys.path.insert(0, os.path.dirname(spec["app"]))  # the app's root, as the worker has it
    loader = importlib.util.spec_from_file_location("function_app", spec["app"])
    assert loader is not None and loader.loader is not None
    module = importlib.util.module_from_spec(loader)
    sys.modules["function_app"] = module
    loader.loader.exec_module(module)
    functions = {f.get_function_name(): f for f in module.app.get_functions()}
    imported = time.monotonic()
    sys.stderr.write(MARKER + "\n")
    sys.stderr.flush()

    outcomes: list[str] = []

    class Outcome(logging.Handler):
        """The function's own summary line (`on_push handled: {...}`): its verdict."""

        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("on_push handled"):
                outcomes.append(record.getMessage())

    logging.getLogger().addHandler(Outcome())
    logging.getLogger().setLevel(logging.INFO)
    functions["on_push"].get_user_function()(_event(spec["event"]))
    handled = time.monotonic()
    if len(outcomes) != 1 or f"'verdict': '{spec['expect']}'" not in outcomes[0]:
        raise SystemExit(f"the event was not handled as expected: {outcomes}")
    import regwarden

    if not os.path.realpath(regwarden.__file__).startswith(spec["shared"] + os.sep):
        raise SystemExit(f"regwarden imported from {regwarden.__file__}, not {spec['shared']}")
    return {
        "started": STARTED,
        "runtime": runtime,
        "imported": imported,
        "handled": handled,
        "cpu": time.process_time(),  # every thread's CPU, interpreter start included
    }


def _clients(spec: dict[str, Any]) -> list[Any]:
    """One client of each Azure service the product called, made as regwarden makes it."""
    import os

    services: dict[str, str] = spec["services"]
    clients: list[Any] = []
    from azure.identity import DefaultAzureCredential

    credential = DefaultAzureCredential()  # the managed identity, as the product's
    clients.append(credential)
    if "acr" in services:
        from azure.containerregistry import ContainerRegistryClient

        clients.append(
            ContainerRegistryClient(
                services["acr"],
                credential,
                audience="https://containerregistry.azure.net",
                connection_verify=spec["ca_file"],
            )
        )
    if "resourcegraph" in services:
        from azure.mgmt.resourcegraph import ResourceGraphClient

        clients.append(ResourceGraphClient(credential, base_url=services["resourcegraph"]))
    if "table" in services or "queue" in services:
        from azure.core.credentials import AzureNamedKeyCredential

        key = AzureNamedKeyCredential(spec["account"], os.environ["REGWARDEN_AZURE_STORAGE_KEY"])
        if "table" in services:
            from azure.data.tables import TableServiceClient

            url = f"{services['table']}/{spec['account']}"
            clients.append(TableServiceClient(endpoint=url, credential=key))
        if "queue" in services:
            from azure.storage.queue import QueueServiceClient

            url = f"{services['queue']}/{spec['account']}"
            clients.append(QueueServiceClient(account_url=url, credential=key))
    if "eventgrid" in services:
        from azure.eventgrid import EventGridPublisherClient

        clients.append(
            EventGridPublisherClient(
                services["eventgrid"] + "/api/events",
                credential,
                connection_verify=spec["ca_file"],
            )
        )
    if spec["data_plane"]:
        import httpx

        clients.append(httpx.Client(verify=spec["ca_file"]))
    return clients


def floor(spec: dict[str, Any]) -> dict[str, Any]:
    """The least a function doing the same work pays: the client library of every Azure
    service the product called, one client each, httpx for `/v2/`, and the product's
    requests sent again raw (one keep-alive connection per server, one after another;
    the HTTPS fronts over TLS)."""
    import ssl

    import azure.functions  # noqa: F401  # the runtime, as in the product
    from _cold_raw import send_raw

    runtime = time.monotonic()
    clients = _clients(spec)
    imported = time.monotonic()
    context = ssl.create_default_context(cafile=spec["ca_file"])
    close = send_raw(spec["requests"], {host: context for host in spec["tls_hosts"]})
    handled = time.monotonic()
    close()
    return {
        "started": STARTED,
        "runtime": runtime,
        "imported": imported,
        "handled": handled,
        "cpu": time.process_time(),
        "clients": len(clients),
    }


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
