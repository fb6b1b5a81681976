"""The push gate as deployed: `regwarden serve` (a real process) receiving notifications
from a real distribution registry over loopback, alerts delivered to a real HTTP sink."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.gate import POLICY, TOKEN, Gate, Sink, generate_keys
from support.loopback import LoopbackServer
from support.proxy import RegistryProxy
from support.streams import Serve

from regwarden.devtools import LocalRegistry, free_port


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gate]:
    root = tmp_path_factory.mktemp("gate")
    priv, pub = generate_keys(root)
    sink_server = LoopbackServer(Sink).start()
    sink = sink_server.server
    sink.received = []  # type: ignore[attr-defined]
    hook = f"{sink_server.url}/hook"
    (root / "regwarden.yaml").write_text(POLICY.format(grace="3s", hook=hook))
    # serve contacts only the registries it is told of: they start first, on its port
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        with (
            LocalRegistry(
                notifications=f"{url}/events/distribution",
                notification_headers={"Authorization": f"Bearer {TOKEN}"},
                notification_timeout="2s",
                notification_backoff="200ms",
            ) as reg,
            RegistryProxy(reg.host, page_tags=False, emulate_tag_delete=False) as proxy,
        ):
            serve = Serve.start(
                root, root / "regwarden.yaml", port, registries=[reg.host, proxy.host]
            )
            try:
                gate = Gate(
                    root,
                    reg,
                    proxy,
                    url,
                    serve.ledger_path,
                    priv,
                    pub,
                    alerts_raw=sink.received,  # type: ignore[attr-defined]
                    log=serve.log,
                )
                yield gate
            finally:
                serve.stop()
    finally:
        sink_server.stop()
