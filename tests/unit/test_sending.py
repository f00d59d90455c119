"""Settling a fan-out's failures, with no network: what is re-queued (to whom, with which
counts and delay) and what is dead-lettered (with which reasons)."""

from __future__ import annotations

import io
import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from tests.conftest import Emitted, logged
from wspush.clock import Deadline
from wspush.contract.messages import parse_message
from wspush.fanout import idempotency, queues, sending
from wspush.fanout.delivery import Failure
from wspush.fanout.idempotency import AlreadyInProgress
from wspush.fanout.queues import Outgoing, QueuedAttributes
from wspush.settings import Settings

NOW = 1_795_867_200_000
SETTINGS = Settings(
    table_name="t",
    region="us-east-1",
    queue_url="queue",
    dead_letter_queue_url="dlq",
    management_endpoint="http://127.0.0.1:9",
    allowed_platforms=frozenset(),
    max_requeues=3,
    requeue_delay_seconds=5,
)
MESSAGE = parse_message(
    {"id": "m-1", "userId": "u", "payload": {"type": "t", "data": 1}}, now_ms=NOW, ts=NOW - 9
)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[Outgoing]]:
    """What is sent to each queue (by URL)."""
    queued: dict[str, list[Outgoing]] = defaultdict(list)

    def send_all(queue_url: str, messages: list[Outgoing], *, region: str) -> None:
        assert region == "us-east-1"
        queued[queue_url].extend(messages)

    monkeypatch.setattr(queues, "send_all", send_all)
    return queued


def settle(failed: list[Failure], *, attempt: int = 0, round_number: int = 0) -> None:
    sending._settle_failures(
        MESSAGE, failed, QueuedAttributes(attempt=attempt, round=round_number), SETTINGS
    )


def requeue(outgoing: Outgoing) -> tuple[list[str], dict[str, str], int]:
    body: dict[str, Any] = json.loads(outgoing.body)
    assert body["id"] == "m-1"
    return body["connectionIds"], dict(outgoing.attributes), outgoing.delay_seconds


def test_untried_recipients_come_back_at_once_with_their_attempt_count(
    sent: dict[str, list[Outgoing]],
) -> None:
    settle([Failure("a", "deadline", retryable=True, attempted=False)], attempt=2, round_number=4)
    assert [requeue(m) for m in sent["queue"]] == [
        (["a"], {"wspush-attempt": "2", "wspush-round": "5", "wspush-ts": str(NOW - 9)}, 0)
    ]
    assert sent["dlq"] == []


@pytest.mark.parametrize(("attempt", "delay"), [(0, 5), (1, 10), (2, 20)])
def test_recipients_to_retry_come_back_later_each_round_with_one_more_attempt(
    sent: dict[str, list[Outgoing]], attempt: int, delay: int
) -> None:
    settle([Failure("b", "429", retryable=True)], attempt=attempt, round_number=attempt)
    assert [requeue(m) for m in sent["queue"]] == [
        (
            ["b"],
            {
                "wspush-attempt": str(attempt + 1),
                "wspush-round": str(attempt + 1),
                "wspush-ts": str(NOW - 9),
            },
            delay,
        )
    ]


def test_the_retry_delay_stays_within_sqs_s_limit(sent: dict[str, list[Outgoing]]) -> None:
    settings = replace(SETTINGS, max_requeues=1_000)
    for attempt in (7, 8, 999):
        sending._settle_failures(
            MESSAGE, [Failure("b", "500", retryable=True)], QueuedAttributes(attempt), settings
        )
    # 5 s x 2^7, then 5 s x 2^8 and more: SQS delays a message 900 s at most
    assert [m.delay_seconds for m in sent["queue"]] == [640, 900, 900]


def test_after_the_last_round_a_retryable_failure_is_dead_lettered_with_its_reasons(
    sent: dict[str, list[Outgoing]],
) -> None:
    # Given a third round (attempt 3 of max_requeues 3) in which three recipients failed
    failed = [
        Failure("a", "500", retryable=True),
        Failure("b", "429", retryable=True),
        Failure("c", "500", retryable=True),
    ]
    settle(failed, attempt=3)
    # Then nothing is re-queued, and one dead letter names each with its reason
    assert sent["queue"] == []
    [letter] = sent["dlq"]
    assert json.loads(letter.body) == {
        "id": "m-1",
        "connectionIds": ["a", "b", "c"],
        "payload": {"type": "t", "data": 1},
    }
    assert letter.attributes[queues.ERROR_CODE] == "delivery_failed"
    assert letter.attributes[queues.ERROR_REASON] == (
        "3 recipient(s) failed after 4 delivery round(s): 429 x1, 500 x2"
    )
    assert json.loads(letter.attributes[queues.FAILURES]) == [
        {"connectionId": "a", "reason": "500"},
        {"connectionId": "b", "reason": "429"},
        {"connectionId": "c", "reason": "500"},
    ]


def test_final_failures_are_dead_lettered_at_once_and_retryable_ones_requeued(
    sent: dict[str, list[Outgoing]],
) -> None:
    settle([Failure("big", "413", retryable=False), Failure("busy", "429", retryable=True)])
    assert [requeue(m)[0] for m in sent["queue"]] == [["busy"]]
    assert [json.loads(m.body)["connectionIds"] for m in sent["dlq"]] == [["big"]]
    assert sent["dlq"][0].attributes[queues.ERROR_REASON] == (
        "1 recipient(s) failed after 1 delivery round(s): 413 x1"
    )


def test_big_remainders_are_requeued_a_thousand_and_dead_lettered_a_hundred_a_message(
    sent: dict[str, list[Outgoing]],
) -> None:
    settle(
        [Failure(f"u-{i}", "deadline", retryable=True, attempted=False) for i in range(1_001)]
        + [Failure(f"r-{i}", "500", retryable=True) for i in range(1_000)]
        + [Failure(f"f-{i}", "403", retryable=False) for i in range(101)]
    )
    assert [(len(requeue(m)[0]), m.delay_seconds) for m in sent["queue"]] == [
        (1_000, 0),
        (1, 0),
        (1_000, 5),
    ]
    assert [len(json.loads(m.body)["connectionIds"]) for m in sent["dlq"]] == [100, 1]


def test_nothing_failed_sends_nothing(sent: dict[str, list[Outgoing]]) -> None:
    settle([])
    assert (sent["queue"], sent["dlq"]) == ([], [])


def queued_record(body: dict[str, Any], **attributes: str) -> SQSRecord:
    return SQSRecord(
        {
            "messageId": "sqs-1",
            "body": json.dumps(body),
            "messageAttributes": {
                name: {"stringValue": value, "dataType": "String"}
                for name, value in attributes.items()
            },
        }
    )


@pytest.fixture
def put_back(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []

    def record(
        queue_url: str,
        body: str,
        attributes: dict[str, str],
        *,
        message_id: str,
        region: str,
        delay_seconds: int,
    ) -> None:
        calls.append((queue_url, body, attributes, message_id, region, delay_seconds))

    monkeypatch.setattr(queues, "put_back", record)
    return calls


def test_a_message_another_invocation_holds_is_put_back_after_the_busy_delay(
    put_back: list[tuple[Any, ...]], monkeypatch: pytest.MonkeyPatch, log_output: io.StringIO
) -> None:
    # Given a queued message that another invocation is handling
    def busy(*args: Any, **kwargs: Any) -> Any:
        raise AlreadyInProgress("busy")

    monkeypatch.setattr(idempotency, "run_once", busy)
    record = queued_record(
        {"userId": "u", "payload": {"type": "t", "data": 1}}, **{"wspush-attempt": "1"}
    )
    # When the sender takes it
    sending.process_queued(record, SETTINGS, deadline=Deadline.never())
    # Then a copy goes back on the queue, untouched, to be looked at again in 30 s
    assert put_back == [("queue", record.body, {"wspush-attempt": "1"}, "sqs-1", "us-east-1", 30)]
    assert {
        "level": "INFO",
        "message": "message put back on the queue",
        "message_id": "sqs-1",  # the message's id: it has none of its own
        "sqs_message_id": "sqs-1",
        "reason": "in_progress",
    } in logged(log_output)


def test_a_message_not_started_before_the_deadline_is_put_back_at_once(
    put_back: list[tuple[Any, ...]],
) -> None:
    record = queued_record({"userId": "u", "payload": {"type": "t", "data": 1}})
    sending.process_queued(record, SETTINGS, deadline=Deadline(-1.0, lambda: 0.0))
    assert [call[-1] for call in put_back] == [0]


def test_settling_counts_and_logs_what_was_requeued_and_dead_lettered(
    sent: dict[str, list[Outgoing]],
    emitted_metrics: Callable[[], Emitted],
    log_output: io.StringIO,
) -> None:
    # Given one recipient not reached, two to retry and one refused for good
    settle(
        [
            Failure("a", "deadline", retryable=True, attempted=False),
            Failure("b", "429", retryable=True),
            Failure("c", "500", retryable=True),
            Failure("d", "403", retryable=False),
        ]
    )
    # Then each kind of re-queued recipient is counted on its own, and the dead-lettered one
    assert emitted_metrics() == {
        "Requeued": ("Count", [1.0, 2.0]),
        "DeadLettered": ("Count", [1.0]),
    }
    assert logged(log_output) == [
        {"level": "INFO", "message": "requeued recipients", "untried": 1, "retried": 2},
        {"level": "WARNING", "message": "dead-lettered failed recipients", "recipients": 1},
    ]


def test_recipients_of_a_user_list_are_requeued_stream_by_stream_with_their_seq(
    sent: dict[str, list[Outgoing]],
) -> None:
    # Given a message of seq 3, kept in two user streams too (seq 4 in one, 7 in the other),
    # that failed for a connection of each user and for one with no user's seq (the message's)
    failed = [
        Failure("a", "429", retryable=True),
        Failure("b", "429", retryable=True),
        Failure("c", "429", retryable=True),
        Failure("a2", "429", retryable=True),
    ]
    # When the failures are settled
    sending._settle_failures(
        replace(MESSAGE, seq=3), failed, QueuedAttributes(), SETTINGS, {"a": 4, "a2": 4, "b": 7}
    )
    # Then each seq's recipients come back together, carrying it, in their order
    assert [(requeue(m)[0], requeue(m)[1].get(queues.SEQ)) for m in sent["queue"]] == [
        (["a", "a2"], "4"),
        (["b"], "7"),
        (["c"], "3"),
    ]


def test_a_split_hands_its_shares_the_attempt_round_and_timestamp_it_came_with(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given the queue, recording what it is given
    queued: list[tuple[Any, ...]] = []

    def queue_shares(queue_url: str, shares: list[queues.Share], **kwargs: Any) -> None:
        queued.append((queue_url, [share.envelope["userIds"] for share in shares], kwargs))

    monkeypatch.setattr(queues, "queue_shares", queue_shares)
    # When a message to three users, in its second attempt and third round, is split two
    # users to a share
    record = queued_record(
        {"userIds": ["u1", "u2", "u3"], "payload": {"type": "t", "data": 1}},
        **{"wspush-attempt": "2", "wspush-round": "3", "wspush-ts": str(NOW - 9)},
    )
    settings = replace(SETTINGS, users_per_chunk=2)
    sending.process_queued(record, settings, deadline=Deadline.never())
    # Then both shares carry them, to the queue, in the configured region
    assert queued == [
        (
            "queue",
            [["u1", "u2"], ["u3"]],
            {"region": "us-east-1", "attempt": 2, "round_number": 3, "ts": NOW - 9},
        )
    ]


def test_an_invalid_queued_message_is_dead_lettered_as_it_came_with_why(
    sent: dict[str, list[Outgoing]],
) -> None:
    # When the sender takes a message whose payload has no type
    record = queued_record({"userId": "u", "payload": {"type": "", "data": 1}})
    sending.process_queued(record, SETTINGS, deadline=Deadline.never())
    # Then its body is dead-lettered unchanged (in the configured region), saying why
    [letter] = sent["dlq"]
    assert letter.body == record.body
    assert dict(letter.attributes) == {
        queues.ERROR_CODE: "invalid_payload",
        queues.ERROR_REASON: "payload.type must be a non-empty string",
        queues.ERROR_FIELD: "payload.type",
    }
    assert sent["queue"] == []
