"""Small helpers the integration tests share: queue events, stored connections, frames."""

from __future__ import annotations

import json
import uuid
from typing import Any

import boto3

from tests.conftest import REGION, load_event
from tests.fakes.management_api import FakeManagementApi
from wspush.clock import now_ms
from wspush.store import connections
from wspush.store.connections import ConnectionRecord

PAYLOAD = {"type": "order.updated", "data": {"orderId": 7}}


# How long ago a stored test connection opened by default: past the connect grace, so a 410
# for it means gone (tests of the grace store connections that opened just now).
OPENED_AGO_MS = 60_000


def add_connection(
    connection_id: str, user_id: str, platform: str = "pc", *, opened_ago_ms: int = OPENED_AGO_MS
) -> None:
    now = now_ms()
    connections.save(
        ConnectionRecord(connection_id, user_id, platform, now - opened_ago_ms, now),
        ttl_seconds=7_800,
    )


def stored_ids() -> set[str]:
    return {record.connection_id for record in connections.all_connections(now_ms=now_ms())}


def sqs_record(
    body: str | dict[str, Any], attributes: dict[str, str] | None = None
) -> dict[str, Any]:
    record = load_event("sqs_record.json")
    record["messageId"] = str(uuid.uuid4())
    record["attributes"]["SentTimestamp"] = str(now_ms())  # when SQS took it: now
    record["body"] = body if isinstance(body, str) else json.dumps(body)
    record["messageAttributes"] = {
        name: {
            "stringValue": value,
            "stringListValues": [],
            "binaryListValues": [],
            "dataType": "String",
        }
        for name, value in (attributes or {}).items()
    }
    return record


def sqs_event(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}


def drain(queue_url: str) -> list[dict[str, Any]]:
    """Every message now visible on a moto queue, as Lambda would see it (and deleted)."""
    sqs = boto3.client("sqs", region_name=REGION)
    records = []
    while True:
        answer = sqs.receive_message(
            QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"]
        )
        messages = answer.get("Messages", [])
        if not messages:
            return records
        for message in messages:
            attributes = {
                name: value["StringValue"]
                for name, value in message.get("MessageAttributes", {}).items()
            }
            records.append(sqs_record(message["Body"], attributes))
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def attributes_of(record: dict[str, Any]) -> dict[str, str]:
    return {name: value["stringValue"] for name, value in record["messageAttributes"].items()}


def frames(api: FakeManagementApi, connection_id: str) -> list[dict[str, Any]]:
    """What one connection received, parsed."""
    return [json.loads(body) for body in api.received.get(connection_id, [])]
