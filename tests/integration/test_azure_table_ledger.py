"""Azurite itself, then the Table Storage ledger's own behaviour (the Ledger contract is in
test_ledger_contract.py): real Azurite on loopback, the Azure SDKs over the wire."""

from __future__ import annotations

import uuid

import pytest
from support.azurite import Azurite

pytestmark = pytest.mark.integration


def test_azurite_serves_a_table_entity_and_a_queue_message_with_its_own_key(
    azurite: Azurite,
) -> None:
    from azure.core.credentials import AzureNamedKeyCredential
    from azure.core.exceptions import ClientAuthenticationError, HttpResponseError
    from azure.data.tables import TableServiceClient
    from azure.storage.queue import QueueClient

    credential = AzureNamedKeyCredential(azurite.account, azurite.key)
    tables = TableServiceClient(endpoint=azurite.table_endpoint, credential=credential)
    table = tables.create_table_if_not_exists(f"smoke{uuid.uuid4().hex[:10]}")
    table.create_entity({"PartitionKey": "p", "RowKey": "r", "n": 7})
    assert table.get_entity("p", "r")["n"] == 7

    queue = QueueClient.from_connection_string(
        azurite.connection_string, f"smoke-{uuid.uuid4().hex[:10]}"
    )
    queue.create_queue()
    queue.send_message("hello")
    (message,) = queue.receive_messages(visibility_timeout=30)
    assert message.content == "hello"

    # The account's key is the random one: the emulator's well-known account is not there.
    wrong = AzureNamedKeyCredential(azurite.account, "A" * 88)
    bad = TableServiceClient(endpoint=azurite.table_endpoint, credential=wrong)
    with pytest.raises((ClientAuthenticationError, HttpResponseError)):
        bad.get_table_client(table.table_name).get_entity("p", "r")
