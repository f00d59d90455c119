"""Handlers under `make dev` get what Lambda gives them: a request id per invocation, and
the timeout and memory serverless.yml configures (send: 10 s, 256 MB; sender: 30 s, 512 MB)."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from tests.e2e.clients import PAYLOAD, connected, eventually, queue_message, unique
from tests.e2e.conftest import RunningStack

# serverless-offline's line after each invocation: the request id it made for it.
INVOCATION_LINE = re.compile(r"\(λ: (\w+)\) RequestId: (\S+) ")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def invoke_send(stack: RunningStack, envelope: dict[str, Any]) -> dict[str, Any]:
    answer = stack.client("lambda").invoke(
        FunctionName=stack.local.send_function_name, Payload=json.dumps(envelope)
    )
    assert "FunctionError" not in answer
    result: dict[str, Any] = json.loads(answer["Payload"].read())
    return result


def handler_log(stack: RunningStack, message_id: str) -> dict[str, Any]:
    """The structured log line a handler wrote when it delivered ``message_id``."""

    def find() -> dict[str, Any] | None:
        for line in stack.log().splitlines():
            if line.startswith("{") and f'"message_id":"{message_id}"' in line:
                entry: dict[str, Any] = json.loads(line)
                return entry
        return None

    found: dict[str, Any] = eventually(find)
    return found


def invoked_function(stack: RunningStack, request_id: str) -> str:
    """The function serverless-offline reports it ran under ``request_id``."""

    def find() -> str | None:
        for function, logged_id in INVOCATION_LINE.findall(stack.log()):
            if logged_id == request_id:
                return str(function)
        return None

    found: str = eventually(find)
    return found


def processed_record(stack: RunningStack, message_id: str) -> dict[str, Any]:
    """The record a handler kept of ``message_id`` in the processed-messages table."""
    pages = (
        stack.client("dynamodb")
        .get_paginator("scan")
        .paginate(TableName=stack.local.processed_table_name)
    )
    for page in pages:
        for item in page["Items"]:
            # (a record still in progress, such as a rotation tick's, has no data yet)
            if json.loads(item.get("data", {}).get("S", "{}")).get("id") == message_id:
                return item
    raise AssertionError(f"no processed record for {message_id}")


def test_direct_invokes_without_an_id_each_deliver_their_own_message(
    local_stack: RunningStack,
) -> None:
    user = unique("gina")
    with connected(local_stack, user) as app:
        # When a service invokes the send function three times, never giving an id
        answers = [invoke_send(local_stack, {"userId": user, "payload": PAYLOAD}) for _ in range(3)]
        # Then each answer reports its own delivery, under its own id
        ids = [answer["id"] for answer in answers]
        assert len(set(ids)) == 3
        for answer in answers:
            assert answer == {**answer, "targets": 1, "delivered": 1, "gone": 0, "failed": 0}
        # And the app received each message once
        assert [app.receive()["id"] for _ in range(3)] == ids
        assert app.nothing_within(0.5)


def test_handlers_see_their_own_request_id_and_their_configured_memory_and_timeout(
    local_stack: RunningStack,
) -> None:
    user = unique("hank")
    with connected(local_stack, user) as app:
        # When a service invokes the send function
        invoked_at = now_ms()
        sent = invoke_send(local_stack, {"userId": user, "payload": PAYLOAD})
        answered_at = now_ms()
        # and queues a message for the sender
        queued_at = now_ms()
        queue_message(local_stack, {"userId": user, "id": f"q-{user}", "payload": PAYLOAD})
        assert [app.receive()["id"] for _ in range(2)] == [sent["id"], f"q-{user}"]
        received_at = now_ms()

    # Then each handler logged the request id serverless-offline made for its invocation
    send_log = handler_log(local_stack, sent["id"])
    sender_log = handler_log(local_stack, f"q-{user}")
    assert send_log["function_request_id"] == sent["id"]
    assert invoked_function(local_stack, send_log["function_request_id"]) == "send"
    assert invoked_function(local_stack, sender_log["function_request_id"]) == "sender"
    # And its function's configuration: name, ARN, memory (a string, as on Lambda)
    for entry, name, memory in ((send_log, "send", "256"), (sender_log, "sender", "512")):
        function_name = f"wspush-local-{name}"
        assert entry["function_name"] == function_name
        assert (
            entry["function_arn"]
            == f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}"
        )
        assert entry["function_memory_size"] == memory

    # And its timeout: a claim on a message lasts as long as the invocation has left
    # (Powertools' idempotency records the remaining time when it starts)
    send_expiry = int(processed_record(local_stack, sent["id"])["in_progress_expiration"]["N"])
    assert 10_000 - 5 <= send_expiry - invoked_at <= 10_000 + answered_at - invoked_at
    sender_expiry = int(processed_record(local_stack, f"q-{user}")["in_progress_expiration"]["N"])
    assert 30_000 - 5 <= sender_expiry - queued_at <= 30_000 + received_at - queued_at
