"""Azure adapter: an Azure Functions app (Python v2 programming model) in
`function_app.py` — `on_push`, `on_webhook`, `on_scan`, `recheck`, `recovery`,
`retention_fanout`, `retention_worker`, `notify` — over the shared core, with ACR's events
from Event Grid, the ledger in Table Storage, rechecks and retention work on Storage
queues, alerts to an Event Grid custom topic and secrets in Key Vault. Importing this
package imports nothing of Azure's, AWS's or Google's SDKs."""

import os

from functions._collector import ColdStartPause

__all__: list[str] = ["COLLECTOR"]

# Paused on Azure until the first state is built (functions/_collector.py says why):
# WEBSITE_INSTANCE_ID is set on every instance of a Function App, never by Core Tools.
COLLECTOR = ColdStartPause("WEBSITE_INSTANCE_ID")

# pydantic looks for plugins (every installed distribution's `pydantic` entry points) when
# the first model is made, a scan of all their metadata on the cold start; the bundle
# installs none. An app setting of its own (say, "" to load them) is kept.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
