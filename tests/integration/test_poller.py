"""The local stand-in for Lambda's SQS event source mapping, under moto."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import boto3
import pytest

from local.lambda_runtime import error_object
from local.poller import QueuePoller, lambda_invoker
from tests.conftest import DLQ_URL, QUEUE_URL, REGION

pytestmark = pytest.mark.usefixtures("aws")


class Sender:
    """Records each event and reports the records whose body says ``"fail": true``."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        self.events.append(event)
        return {
            "batchItemFailures": [
                {"itemIdentifier": r["messageId"]}
                for r in event["Records"]
                if json.loads(r["body"]).get("fail")
            ]
        }


def visible(queue_url: str) -> int:
    attributes = boto3.client("sqs", region_name=REGION).get_queue_attributes(
        QueueUrl=queue_url, AttributeNames=["ApproximateNumberOfMessages"]
    )["Attributes"]
    return int(attributes["ApproximateNumberOfMessages"])


def test_records_arrive_in_the_lambda_sqs_event_shape() -> None:
    # Given a queued message with an attribute
    sqs = boto3.client("sqs", region_name=REGION)
    sqs.send_message(
        QueueUrl=QUEUE_URL,
        MessageBody='{"n": 1}',
        MessageAttributes={"wspush-attempt": {"DataType": "String", "StringValue": "2"}},
    )
    sender = Sender()
    # When the poller runs once
    assert QueuePoller(sqs, QUEUE_URL, sender, wait_seconds=0).poll_once() == 1
    # Then the sender got a Lambda-shaped SQS record, and the message was deleted
    [record] = sender.events[0]["Records"]
    assert record["body"] == '{"n": 1}'
    assert record["eventSource"] == "aws:sqs"
    assert record["eventSourceARN"].endswith(":wspush-test-messages")
    assert record["attributes"]["ApproximateReceiveCount"] == "1"
    assert record["messageAttributes"]["wspush-attempt"]["stringValue"] == "2"
    assert record["messageAttributes"]["wspush-attempt"]["dataType"] == "String"
    assert visible(QUEUE_URL) == 0


def test_only_successful_records_are_deleted_and_failures_end_in_the_dlq() -> None:
    # Given a short visibility timeout, one failing and two succeeding messages
    sqs = boto3.client("sqs", region_name=REGION)
    sqs.set_queue_attributes(QueueUrl=QUEUE_URL, Attributes={"VisibilityTimeout": "1"})
    for body in ({"n": 1}, {"n": 2, "fail": True}, {"n": 3}):
        sqs.send_message(QueueUrl=QUEUE_URL, MessageBody=json.dumps(body))
    sender = Sender()
    poller = QueuePoller(sqs, QUEUE_URL, sender, wait_seconds=0)
    # When the batch is handled, then only the failed record is left, hidden for now
    assert poller.poll_once() == 3
    assert poller.poll_once() == 0
    # When it keeps failing, it comes back after each visibility timeout...
    receives = 1
    deadline = time.monotonic() + 30
    while visible(DLQ_URL) == 0 and time.monotonic() < deadline:
        time.sleep(1.05)
        receives += poller.poll_once()
    # ...until SQS moves it to the dead-letter queue after maxReceiveCount (5) receives
    assert receives == 5
    [letter] = sqs.receive_message(QueueUrl=DLQ_URL)["Messages"]
    assert json.loads(letter["Body"]) == {"n": 2, "fail": True}


def test_a_failed_invocation_leaves_the_whole_batch_for_later() -> None:
    # Given a queued message and a sender that crashes
    sqs = boto3.client("sqs", region_name=REGION)
    sqs.set_queue_attributes(QueueUrl=QUEUE_URL, Attributes={"VisibilityTimeout": "1"})
    sqs.send_message(QueueUrl=QUEUE_URL, MessageBody="{}")

    def crash(event: dict[str, Any]) -> dict[str, Any]:
        raise RuntimeError("handler crashed")

    poller = QueuePoller(sqs, QUEUE_URL, crash, wait_seconds=0)
    # When the invocation fails, the failure is noted and nothing is deleted
    assert poller.poll_once() == 1
    assert poller.errors == ["sender invocation failed: handler crashed"]
    time.sleep(1.05)
    assert visible(QUEUE_URL) == 1


class LocalLambda:
    """serverless-offline's Lambda API as boto3 sees it: a handler's error comes back as an
    ordinary payload, without Lambda's ``FunctionError``."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self.payload = payload

    def invoke(self, **request: Any) -> dict[str, Any]:
        return {"StatusCode": 200, "Payload": io.BytesIO(json.dumps(self.payload).encode())}


def test_a_handler_error_answered_by_the_local_runtime_leaves_the_whole_batch_for_later() -> None:
    # Given a queued message and a sender whose handler raised under the local runtime
    sqs = boto3.client("sqs", region_name=REGION)
    sqs.set_queue_attributes(QueueUrl=QUEUE_URL, Attributes={"VisibilityTimeout": "1"})
    sqs.send_message(QueueUrl=QUEUE_URL, MessageBody="{}")
    crashed = error_object("KeyError", "'Records'", "req-1", ['  File "h.py", line 1, in h\n'])
    invoke = lambda_invoker(LocalLambda(crashed), "wspush-test-sender")
    poller = QueuePoller(sqs, QUEUE_URL, invoke, wait_seconds=0)
    # When the batch is handled, the failure is noted and nothing is deleted
    assert poller.poll_once() == 1
    assert poller.errors == ["sender invocation failed: KeyError: 'Records'"]
    time.sleep(1.05)
    assert visible(QUEUE_URL) == 1
