"""Azure Storage queues, as the Azure function app uses them: rechecks
(`regwarden-rechecks`) and retention work (`regwarden-retention-work`).

    send("regwarden-rechecks", body, env=os.environ, visibility_timeout=3600)

A message is the body base64-encoded as text: what a Functions queue trigger decodes by
default (host.json `messageEncoding: base64`), so the function receives the bytes sent.
`visibility_timeout` holds it back that many seconds (at most `MAX_VISIBILITY`, 7 days:
Storage's limit); it never expires on its own (`time_to_live=-1`), since a recheck due in
7 days must not lapse on the way.

The account is `REGWARDEN_STORAGE_ACCOUNT`; the endpoint `REGWARDEN_AZURE_ENDPOINT_QUEUE`
(Azurite: `http://127.0.0.1:PORT/ACCOUNT`), else `https://ACCOUNT.queue.core.windows.net`;
the credential `azure_clients.storage_credential` (the account key only where
`REGWARDEN_AZURE_STORAGE_KEY` is set; the managed identity otherwise). A client is made
per (queue, endpoint) once per process. azure-storage-queue is imported on first use.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from .errors import RegistryError, UsageError

__all__ = ["ACCOUNT_ENV", "MAX_VISIBILITY", "queue_client", "send"]

ACCOUNT_ENV = "REGWARDEN_STORAGE_ACCOUNT"
MAX_VISIBILITY = 7 * 24 * 3600
"""Storage's longest visibility timeout (seconds)."""

_clients: dict[tuple[str, str], Any] = {}
_lock = threading.Lock()


def queue_client(name: str, env: Mapping[str, str]) -> Any:
    """The `azure.storage.queue.QueueClient` of queue `name` in the account `env` names,
    encoding what is sent as base64 text (made once per process per queue and endpoint)."""
    from . import azure_clients

    account = (env.get(ACCOUNT_ENV) or "").strip()
    if not account:
        raise UsageError(f"{ACCOUNT_ENV} is not set; expected the storage account of the queues")
    url = azure_clients.storage_endpoint("queue", account, env)
    with _lock:
        found = _clients.get((name, url))
        if found is None:
            from azure.storage.queue import BinaryBase64EncodePolicy, QueueClient

            found = _clients[(name, url)] = QueueClient(
                url,
                name,
                credential=azure_clients.storage_credential(account, env),
                message_encode_policy=BinaryBase64EncodePolicy(),
                **azure_clients.transport_options(azure_clients.ca_bundle(env) or True),
            )
        return found


def send(queue: str, body: bytes, *, env: Mapping[str, str], visibility_timeout: int = 0) -> None:
    """Put `body` on `queue`, invisible for `visibility_timeout` seconds (0 to
    `MAX_VISIBILITY`). RegistryError naming the queue when Storage refuses it or cannot be
    reached (the caller fails, and its own trigger retries)."""
    from azure.core.exceptions import AzureError

    if not 0 <= visibility_timeout <= MAX_VISIBILITY:
        raise ValueError(f"visibility_timeout {visibility_timeout}: expected 0..{MAX_VISIBILITY}")
    client = queue_client(queue, env)
    try:
        client.send_message(body, visibility_timeout=visibility_timeout, time_to_live=-1)
    except AzureError as exc:
        status = getattr(exc, "status_code", None)
        raise RegistryError(f"storage queue {queue}: send failed: {exc}", status=status) from None
