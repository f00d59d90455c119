"""Queueing a split's shares: SendMessageBatch answers as SQS gives them (botocore's Stubber),
partial failures included."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from botocore.stub import Stubber

from wspush import queues
from wspush.errors import QueueUnavailable

REGION = "us-east-1"
QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/wspush-test-messages"
TS = 1_795_867_200_000
SHARES = [
    queues.Share({"broadcast": True, "id": "m-1", "payload": {"type": "t", "data": {}}}, (s, 3))
    for s in range(3)
]


@pytest.fixture
def sqs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Stubber]:
    monkeypatch.setattr(queues, "_BATCH_RETRY_BASE_SECONDS", 0)
    with Stubber(queues._client(REGION)) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def entry(position: int, segment: int) -> dict[str, Any]:
    """A share as it must reach SQS: its own message, segment attribute, no delay."""
    attributes = {"wspush-attempt": "0", "wspush-round": "0", "wspush-ts": str(TS)}
    attributes["wspush-segment"] = f"{segment}/3"
    return {
        "Id": str(position),
        "MessageBody": queues.sqs_body(SHARES[segment].envelope),
        "DelaySeconds": 0,
        "MessageAttributes": {
            name: {"DataType": "String", "StringValue": value} for name, value in attributes.items()
        },
    }


def sent(*ids: str) -> list[dict[str, str]]:
    return [{"Id": i, "MessageId": f"sqs-{i}", "MD5OfMessageBody": "0" * 32} for i in ids]


def failed(*ids: str, sender_fault: bool = False) -> list[dict[str, Any]]:
    code = "InvalidParameterValue" if sender_fault else "InternalError"
    return [{"Id": i, "SenderFault": sender_fault, "Code": code} for i in ids]


def queue_shares() -> None:
    queues.queue_shares(QUEUE_URL, SHARES, region=REGION, attempt=0, round_number=0, ts=TS)


def test_shares_sqs_failed_on_its_side_are_sent_again_alone(sqs: Stubber) -> None:
    # Given SQS takes shares 0 and 2 and fails share 1 on its side, then takes it
    sqs.add_response(
        "send_message_batch",
        {"Successful": sent("0", "2"), "Failed": failed("1")},
        {"QueueUrl": QUEUE_URL, "Entries": [entry(0, 0), entry(1, 1), entry(2, 2)]},
    )
    sqs.add_response(
        "send_message_batch",
        {"Successful": sent("0"), "Failed": []},
        {"QueueUrl": QUEUE_URL, "Entries": [entry(0, 1)]},
    )
    # When the shares are queued, then only share 1 is sent again, and nothing is raised
    queue_shares()


def test_a_share_sqs_refuses_as_malformed_is_not_sent_again(sqs: Stubber) -> None:
    sqs.add_response(
        "send_message_batch",
        {"Successful": sent("0", "2"), "Failed": failed("1", sender_fault=True)},
    )

    with pytest.raises(QueueUnavailable) as caught:
        queue_shares()

    assert "1 of 3 messages were not queued (InvalidParameterValue)" in str(caught.value)


def test_a_share_still_failing_after_the_last_attempt_fails_the_split(sqs: Stubber) -> None:
    sqs.add_response("send_message_batch", {"Successful": sent("0", "2"), "Failed": failed("1")})
    for _ in range(queues.BATCH_ENTRY_ATTEMPTS - 1):
        sqs.add_response("send_message_batch", {"Successful": [], "Failed": failed("0")})

    with pytest.raises(QueueUnavailable) as caught:
        queue_shares()

    assert "1 of 3 messages were not queued (InternalError)" in str(caught.value)


def test_a_refused_call_fails_the_split(sqs: Stubber) -> None:
    sqs.add_client_error("send_message_batch", "AccessDenied", http_status_code=403)

    with pytest.raises(QueueUnavailable):
        queue_shares()
