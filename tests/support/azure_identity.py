"""Preloaded into the Azure Functions host stand-in (`AZURE_HOST_PRELOAD`): the platform's
managed identity, played by one fixed Microsoft Entra token (`AZURE_TEST_AAD_TOKEN`) that
FakeAcr's `/oauth2/exchange` and FakeEventGrid accept. `azure_clients.default_credential`
is what every Azure client of regwarden asks, so no process of a test looks for Azure
credentials on the machine."""

from __future__ import annotations

import os
from typing import Any

from regwarden import azure_clients
from support.fake_acr import FakeCredential


def _credential() -> Any:
    return FakeCredential(os.environ["AZURE_TEST_AAD_TOKEN"])


setattr(azure_clients, "default_credential", _credential)  # noqa: B010 (a cached function)
