"""The publisher API without AWS: building, validating, batching and reporting."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from wspush.contract.messages import MAX_SQS_MESSAGE_BYTES, parse_message
from wspush.errors import InvalidMessage
from wspush.fanout import sending
from wspush.publisher import (
    MAX_SEND_MESSAGES,
    EndpointUnreachable,
    LambdaSender,
    Publisher,
    PublishError,
    PublishFailure,
    PublishResult,
    envelope,
    validate,
)

QUEUE_URL = "https://sqs.us-east-1.amazonaws.com/123456789012/wspush-test-messages"
PAYLOAD = {"type": "order.updated", "data": {"orderId": 7}}


class FakeSqs:
    """Records calls; answers every entry as sent unless told to fail some, or every call."""

    def __init__(
        self,
        *,
        refuse: dict[str, dict[str, Any]] | None = None,
        forget: frozenset[str] = frozenset(),
        raise_on_call: dict[int, Exception] | None = None,
    ) -> None:
        self.single: list[dict[str, Any]] = []
        self.batches: list[list[dict[str, Any]]] = []
        self._refuse = refuse or {}
        self._forget = forget
        self._raise_on_call = raise_on_call or {}

    def send_message(self, *, QueueUrl: str, MessageBody: str) -> dict[str, Any]:
        assert QueueUrl == QUEUE_URL
        if 0 in self._raise_on_call:
            raise self._raise_on_call[0]
        self.single.append({"MessageBody": MessageBody})
        return {"MessageId": f"sqs-{len(self.single)}"}

    def send_message_batch(self, *, QueueUrl: str, Entries: list[dict[str, Any]]) -> Any:
        assert QueueUrl == QUEUE_URL
        call = len(self.batches)
        self.batches.append(Entries)
        if call in self._raise_on_call:
            raise self._raise_on_call[call]
        answer: dict[str, Any] = {"Successful": [], "Failed": []}
        for entry in Entries:
            if entry["Id"] in self._forget:
                continue
            if entry["Id"] in self._refuse:
                answer["Failed"].append({"Id": entry["Id"], **self._refuse[entry["Id"]]})
            else:
                answer["Successful"].append({"Id": entry["Id"], "MessageId": f"sqs-{entry['Id']}"})
        return answer

    @property
    def bodies(self) -> list[dict[str, Any]]:
        sent = [e["MessageBody"] for batch in self.batches for e in batch]
        return [json.loads(body) for body in [*(s["MessageBody"] for s in self.single), *sent]]


def for_user(user: str, **extra: Any) -> dict[str, Any]:
    return {"userId": user, "payload": PAYLOAD, **extra}


def client_error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": "nope"}}, "SendMessageBatch")


# --- envelope() ---------------------------------------------------------------------------


def test_envelope_builds_the_contract_shape_from_keywords() -> None:
    # When an envelope is built for several users on two platforms, minus one connection
    built = envelope(
        "order.updated",
        {"orderId": 7},
        users=("u-1", "u-2"),
        platform=["pc", "web"],
        exclude=["c-9"],
        id="order-7",
    )
    # Then it is the contract's envelope, and it validates
    assert built == {
        "id": "order-7",
        "userIds": ["u-1", "u-2"],
        "platform": ["pc", "web"],
        "excludeConnectionIds": ["c-9"],
        "payload": {"type": "order.updated", "data": {"orderId": 7}},
    }
    assert parse_message(built, now_ms=0).target.user_ids == ("u-1", "u-2")


@pytest.mark.parametrize(
    ("keywords", "expected"),
    [
        ({"user": "u-1"}, {"userId": "u-1"}),
        ({"connection": "c-1"}, {"connectionId": "c-1"}),
        ({"connections": ["c-1", "c-2"]}, {"connectionIds": ["c-1", "c-2"]}),
        ({"channel": "room:42"}, {"channel": "room:42"}),
        ({"broadcast": True, "platform": "pc"}, {"broadcast": True, "platform": "pc"}),
    ],
)
def test_envelope_targets(keywords: dict[str, Any], expected: dict[str, Any]) -> None:
    assert envelope("t", None, **keywords) == {**expected, "payload": {"type": "t", "data": None}}


def test_envelope_to_a_channel_keeps_its_filters_and_validates() -> None:
    # When an envelope is built for a channel, on one platform, minus the sender's connection
    built = envelope(
        "chat.message", {"text": "hi"}, channel="room:42", platform="pc", exclude=["c-1"]
    )
    # Then the channel is its one target and the filters still apply
    assert built == {
        "channel": "room:42",
        "platform": "pc",
        "excludeConnectionIds": ["c-1"],
        "payload": {"type": "chat.message", "data": {"text": "hi"}},
    }
    target = parse_message(built, now_ms=0).target
    assert (target.channel, target.platforms, target.exclude_connection_ids) == (
        "room:42",
        frozenset({"pc"}),
        frozenset({"c-1"}),
    )


@pytest.mark.parametrize(
    ("keywords", "code", "field"),
    [
        ({"channel": "room"}, "invalid_channel", "channel"),
        ({"channel": "Room:42"}, "invalid_channel", "channel"),
        ({"channel": "room:42", "user": "u-1"}, "invalid_target", None),
    ],
)
def test_a_bad_channel_target_is_refused_before_anything_is_sent(
    keywords: dict[str, Any], code: str, field: str | None
) -> None:
    # Given a channel that is no namespace:name, or a channel and a user at once
    sqs = FakeSqs()
    # When it is published
    with pytest.raises(InvalidMessage) as caught:
        Publisher(QUEUE_URL, sqs_client=sqs).publish(envelope("t", {}, **keywords))
    # Then validation says why, and nothing reached the queue
    assert caught.value.code == code
    if field:
        assert caught.value.field == field
    assert sqs.bodies == []


def test_envelope_keeps_a_lone_string_for_validation_to_name() -> None:
    # Given users passed as one string by mistake
    built = envelope("t", {}, users="u-1")
    # Then it is not split into characters: validation names the field
    with pytest.raises(InvalidMessage) as caught:
        validate(built)
    assert caught.value.field == "userIds"


# --- validate() / publish() ---------------------------------------------------------------


def test_validate_sets_a_new_id_without_touching_the_callers_envelope() -> None:
    original = for_user("u-1")
    valid = validate(original)
    assert len(valid["id"]) == 32
    assert "id" not in original
    assert validate(for_user("u-1", id="mine"))["id"] == "mine"


def test_publish_sends_the_envelope_as_compact_json_with_its_id() -> None:
    # Given a publisher on a fake queue
    sqs = FakeSqs()
    publisher = Publisher(QUEUE_URL, sqs_client=sqs)
    # When one envelope without an id is published
    result = publisher.publish(for_user("u-1", platform="pc"))
    # Then the body is the envelope plus the id the result reports, in compact JSON
    assert result == PublishResult("sqs-1", result.id)
    body = sqs.single[0]["MessageBody"]
    assert json.loads(body) == for_user("u-1", platform="pc", id=result.id)
    assert ", " not in body
    assert ": " not in body


def test_body_is_ascii_so_sqs_never_refuses_a_character() -> None:
    # Given text SQS does not accept raw in a body (U+FFFF) and some non-ASCII
    sqs = FakeSqs()
    Publisher(QUEUE_URL, sqs_client=sqs).publish(
        {"userId": "u", "payload": {"type": "t", "data": "\uffff é 漢"}}
    )
    # Then it travels escaped and comes back the same
    body = sqs.single[0]["MessageBody"]
    assert body.isascii()
    assert json.loads(body)["payload"]["data"] == "\uffff é 漢"


def with_data(data: Any) -> dict[str, Any]:
    return {"userId": "u", "payload": {"type": "t", "data": data}}


@pytest.mark.parametrize(
    ("bad", "code", "field"),
    [
        ({"payload": PAYLOAD}, "invalid_target", "target"),
        ({"userID": "u", "payload": PAYLOAD}, "unknown_field", "userID"),
        ({"userId": "u", "payload": {"type": ""}}, "invalid_payload", "payload.type"),
        (with_data("x" * 140_000), "payload_too_large", "payload"),
        (with_data("\ud800"), "invalid_payload", "payload"),  # a lone surrogate
        (with_data(float("nan")), "invalid_payload", "payload.data"),
        ("not an object", "invalid_envelope", None),
    ],
)
def test_an_invalid_envelope_is_refused_before_anything_is_sent(
    bad: Any, code: str, field: str | None
) -> None:
    # Given a publisher on a fake queue
    sqs = FakeSqs()
    # When an invalid envelope is published
    with pytest.raises(InvalidMessage) as caught:
        Publisher(QUEUE_URL, sqs_client=sqs).publish(bad)
    # Then the error names the problem and the field, and nothing reached SQS
    assert (caught.value.code, caught.value.field) == (code, field)
    assert sqs.single == []


def test_a_body_over_sqs_limit_is_refused_even_when_the_frame_fits() -> None:
    # Given 10,000 long connection ids: a small client frame, but a body over 1 MiB
    ids = [f"{n:0120d}" for n in range(10_000)]
    sqs = FakeSqs()
    # When it is published
    with pytest.raises(InvalidMessage) as caught:
        Publisher(QUEUE_URL, sqs_client=sqs).publish({"connectionIds": ids, "payload": PAYLOAD})
    # Then SQS's limit is named and nothing was sent
    assert caught.value.code == "message_too_large"
    assert str(MAX_SQS_MESSAGE_BYTES) in caught.value.message
    assert sqs.single == []


def test_transport_failures_become_publish_errors() -> None:
    # Given SQS that cannot be reached, then SQS that refuses the call
    unreachable = FakeSqs(raise_on_call={0: EndpointConnectionError(endpoint_url="http://h:1")})
    refused = FakeSqs(raise_on_call={0: client_error("AccessDenied")})
    # Then each becomes a PublishError that says which
    with pytest.raises(EndpointUnreachable) as caught:
        Publisher(QUEUE_URL, sqs_client=unreachable).publish(for_user("u"))
    assert caught.value.endpoint == "http://h:1"
    with pytest.raises(PublishError) as refusal:
        Publisher(QUEUE_URL, sqs_client=refused).publish(for_user("u"))
    assert refusal.value.code == "AccessDenied"
    assert not isinstance(refusal.value, EndpointUnreachable)


# --- publish_batch() ----------------------------------------------------------------------


def test_a_batch_goes_in_calls_of_ten_with_ids_unique_per_call() -> None:
    # Given 25 envelopes
    sqs = FakeSqs()
    envelopes = [for_user(f"u-{n}", id=f"m-{n}") for n in range(25)]
    # When they are published as a batch
    result = Publisher(QUEUE_URL, sqs_client=sqs).publish_batch(envelopes)
    # Then three calls carried 10, 10 and 5, in order, and every message is queued
    assert [len(batch) for batch in sqs.batches] == [10, 10, 5]
    for batch in sqs.batches:
        assert len({entry["Id"] for entry in batch}) == len(batch)
    assert [body["id"] for body in sqs.bodies] == [f"m-{n}" for n in range(25)]
    assert result.ok
    assert [r.id for r in result.results if isinstance(r, PublishResult)] == [
        f"m-{n}" for n in range(25)
    ]


def test_a_batch_also_splits_at_one_mib_per_call() -> None:
    # Given 12 messages of about 120 KB each (eight fit in 1 MiB)
    sqs = FakeSqs()
    big = [for_user("u", payload={"type": "t", "data": "x" * 120_000}) for _ in range(12)]
    # When they are published as a batch
    result = Publisher(QUEUE_URL, sqs_client=sqs).publish_batch(big)
    # Then no call carries more than 1 MiB of bodies
    assert [len(batch) for batch in sqs.batches] == [8, 4]
    for batch in sqs.batches:
        assert sum(len(e["MessageBody"]) for e in batch) <= MAX_SQS_MESSAGE_BYTES
    assert result.ok


def test_partial_failures_are_reported_per_input_index() -> None:
    # Given SQS refusing the entry of input 2 and an invalid envelope at input 1
    sqs = FakeSqs(refuse={"2": {"SenderFault": False, "Code": "InternalError", "Message": "boom"}})
    envelopes = [for_user("u-0"), {"userId": "u-1", "payload": {"type": ""}}, for_user("u-2")]
    # When the batch is published
    result = Publisher(QUEUE_URL, sqs_client=sqs).publish_batch(envelopes)
    # Then each input index says what happened to it
    assert not result.ok
    assert list(result.queued) == [0]
    assert result.failed[1] == PublishFailure(
        "invalid_payload", "payload.type must be a non-empty string", field="payload.type"
    )
    refused = result.failed[2]
    assert (refused.code, refused.message, refused.sender_fault) == ("InternalError", "boom", False)
    assert refused.id == json.loads(sqs.batches[0][1]["MessageBody"])["id"]
    # And the invalid envelope never reached SQS
    assert [entry["Id"] for entry in sqs.batches[0]] == ["0", "2"]


def test_an_entry_missing_from_sqs_answer_is_reported_not_assumed_sent() -> None:
    sqs = FakeSqs(forget=frozenset({"1"}))
    result = Publisher(QUEUE_URL, sqs_client=sqs).publish_batch([for_user("a"), for_user("b")])
    assert list(result.queued) == [0]
    assert result.failed[1].code == "no_answer"


def test_a_batch_raises_when_its_first_call_fails_as_a_whole() -> None:
    # Given a queue that does not exist
    sqs = FakeSqs(raise_on_call={0: client_error("AWS.SimpleQueueService.NonExistentQueue")})
    # When a batch is published, Then nothing is queued and the error is raised
    with pytest.raises(PublishError) as caught:
        Publisher(QUEUE_URL, sqs_client=sqs).publish_batch([for_user("u")] * 15)
    assert caught.value.code == "AWS.SimpleQueueService.NonExistentQueue"
    assert len(sqs.batches) == 1


def test_a_later_call_failing_as_a_whole_keeps_what_was_queued() -> None:
    # Given SQS that stops answering at the second call
    timeout = ReadTimeoutError(endpoint_url="https://sqs")
    sqs = FakeSqs(raise_on_call={1: timeout})
    # When 25 messages are published
    result = Publisher(QUEUE_URL, sqs_client=sqs).publish_batch(
        [for_user(f"u-{n}") for n in range(25)]
    )
    # Then the first ten are queued, the next ten carry the error, the rest were not sent
    assert list(result.queued) == list(range(10))
    assert {result.failed[n].code for n in range(10, 20)} == {"no_answer"}
    assert {result.failed[n].code for n in range(20, 25)} == {"not_sent"}
    assert all(result.failed[n].id for n in range(10, 25))
    assert len(sqs.batches) == 2


def test_an_empty_batch_calls_nothing() -> None:
    sqs = FakeSqs()
    result = Publisher(QUEUE_URL, sqs_client=sqs).publish_batch([])
    assert result.results == ()
    assert result.ok
    assert sqs.batches == []


# --- LambdaSender (validation side; the invoke itself is in tests/integration) -------------


class NoLambda:
    def invoke(self, **kwargs: Any) -> Any:
        raise AssertionError("nothing may be invoked")


@pytest.mark.parametrize(
    ("event", "code"),
    [
        ({"userId": "u", "payload": {"type": ""}}, "invalid_payload"),
        ([], "invalid_envelope"),
        ([for_user("u")] * (MAX_SEND_MESSAGES + 1), "invalid_envelope"),
        ([for_user("u"), {"payload": PAYLOAD}], "invalid_target"),
    ],
)
def test_lambda_sender_validates_before_invoking(event: Any, code: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        LambdaSender("wspush-test-send", lambda_client=NoLambda()).send(event)
    assert caught.value.code == code


def test_lambda_sender_names_the_bad_message_of_a_list() -> None:
    with pytest.raises(InvalidMessage) as caught:
        LambdaSender("f", lambda_client=NoLambda()).send([for_user("u"), {"payload": PAYLOAD}])
    assert caught.value.message.startswith("message 1: ")
    assert caught.value.field == "target"


def test_lambda_sender_limit_is_the_send_lambdas_own() -> None:
    assert MAX_SEND_MESSAGES == sending.MAX_MESSAGES_PER_INVOCATION
