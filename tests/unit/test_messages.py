"""Envelope validation: every rule of the message contract, in one place."""

from __future__ import annotations

import json
from typing import Any

import pytest

from wspush.contract import messages
from wspush.contract.messages import (
    MAX_CLIENT_FRAME_BYTES,
    MAX_SQS_MESSAGE_BYTES,
    NOT_KEPT,
    Target,
    encode_frame,
    parse_json,
    parse_message,
    sqs_batches,
    sqs_body,
    to_envelope,
    with_seq,
    with_target,
)
from wspush.errors import InvalidMessage

NOW = 1_795_867_200_000
PAYLOAD = {"type": "order.updated", "data": {"orderId": 7}}
TARGETS = "connectionId | connectionIds | userId | userIds | channel | broadcast"


def invalid(envelope: Any) -> InvalidMessage:
    with pytest.raises(InvalidMessage) as caught:
        parse_message(envelope, now_ms=NOW)
    return caught.value


def test_user_envelope_becomes_a_typed_message_with_id_and_ts() -> None:
    # Given the contract's example envelope
    envelope = {"userId": "u-42", "platform": "pc", "payload": PAYLOAD}
    # When it is validated
    message = parse_message(envelope, now_ms=NOW)
    # Then the target and the client frame are set, with a generated id and the time
    assert message.target.user_ids == ("u-42",)
    assert message.target.platforms == frozenset({"pc"})
    frame = json.loads(message.frame)
    assert frame == {"type": "order.updated", "data": {"orderId": 7}, "id": message.id, "ts": NOW}
    assert len(message.id) == 32


def test_seed_form_connection_id_and_payload_is_accepted_as_is() -> None:
    message = parse_message({"connectionId": "abc=", "payload": PAYLOAD}, now_ms=NOW)
    assert message.target.connection_ids == ("abc=",)
    assert message.target.platforms is None


def test_given_id_is_kept_as_the_message_id() -> None:
    message = parse_message({"broadcast": True, "id": "order-7-v3", "payload": PAYLOAD}, now_ms=NOW)
    assert message.id == "order-7-v3"
    assert json.loads(message.frame)["id"] == "order-7-v3"


def test_a_null_optional_field_is_the_same_as_leaving_it_out() -> None:
    # Given an envelope whose optional fields are null, as many JSON serializers write an
    # unset field (Go's nil slice, Jackson's and System.Text.Json's defaults)
    envelope = {
        "userId": "u",
        "id": None,
        "platform": None,
        "excludeConnectionIds": None,
        "payload": PAYLOAD,
    }
    # When it is validated
    message = parse_message(envelope, now_ms=NOW, default_id="sqs-id")
    # Then each null is no value at all: the default id, no platform filter, nobody excluded
    assert message.id == "sqs-id"
    assert message.target.platforms is None
    assert message.target.exclude_connection_ids == frozenset()


def test_requeued_message_keeps_its_original_timestamp() -> None:
    message = parse_message({"userId": "u", "payload": PAYLOAD}, now_ms=NOW, ts=NOW - 5_000)
    assert json.loads(message.frame)["ts"] == NOW - 5_000


@pytest.mark.parametrize(
    ("envelope", "code", "field", "message"),
    [
        (
            {"payload": PAYLOAD},
            "invalid_target",
            "target",
            f"exactly one target is required ({TARGETS}); found none",
        ),
        (
            {"userId": "u", "connectionId": "c", "payload": PAYLOAD},
            "invalid_target",
            "target",
            f"exactly one target is required ({TARGETS}); found connectionId, userId",
        ),
        (
            {"broadcast": False, "payload": PAYLOAD},
            "invalid_target",
            "broadcast",
            "broadcast must be true when present",
        ),
        (
            {"userId": "", "payload": PAYLOAD},
            "invalid_field",
            "userId",
            "userId must be a non-empty string",
        ),
        (
            {"userId": 42, "payload": PAYLOAD},
            "invalid_field",
            "userId",
            "userId must be a non-empty string",
        ),
        (
            {"userId": "u" * 129, "payload": PAYLOAD},
            "invalid_field",
            "userId",
            "userId is longer than 128 characters",
        ),
        (
            {"userIds": [], "payload": PAYLOAD},
            "invalid_field",
            "userIds",
            "userIds must be a non-empty list",
        ),
        (
            {"userIds": ["a", 3], "payload": PAYLOAD},
            "invalid_field",
            "userIds[1]",
            "userIds[1] must be a non-empty string",
        ),
        (
            {"connectionIds": "abc", "payload": PAYLOAD},
            "invalid_field",
            "connectionIds",
            "connectionIds must be a non-empty list",
        ),
        (
            {"connectionId": None, "payload": PAYLOAD},
            "invalid_field",
            "connectionId",
            "connectionId must be a non-empty string",
        ),
        (
            {"userId": "u", "platform": 3, "payload": PAYLOAD},
            "invalid_field",
            "platform",
            "platform must be a non-empty list",
        ),
        (
            {"userId": "u", "platform": ["pc", ""], "payload": PAYLOAD},
            "invalid_field",
            "platform[1]",
            "platform[1] must be a non-empty string",
        ),
        (
            {"broadcast": True, "excludeConnectionIds": "c", "payload": PAYLOAD},
            "invalid_field",
            "excludeConnectionIds",
            "excludeConnectionIds must be a list",
        ),
        (
            {"userId": "u"},
            "invalid_payload",
            "payload",
            'payload must be an object {"type": ..., "data": ...}',
        ),
        (
            {"userId": "u", "payload": "hello"},
            "invalid_payload",
            "payload",
            'payload must be an object {"type": ..., "data": ...}',
        ),
        (
            {"userId": "u", "payload": {"data": 1}},
            "invalid_payload",
            "payload.type",
            "payload.type must be a non-empty string",
        ),
        (
            {"userId": "u", "payload": {"type": "  ", "data": 1}},
            "invalid_payload",
            "payload.type",
            "payload.type must be a non-empty string",
        ),
        (
            {"userId": "u", "payload": {"type": "t"}},
            "invalid_payload",
            "payload.data",
            "payload.data is required",
        ),
        (
            {"userId": "u", "payload": {"type": "t", "data": 1, "extra": 2}},
            "unknown_field",
            "payload.extra",
            "unknown field 'payload.extra'",
        ),
        ({"userID": "u", "payload": PAYLOAD}, "unknown_field", "userID", "unknown field 'userID'"),
        (
            {"userId": "u", "id": "", "payload": PAYLOAD},
            "invalid_field",
            "id",
            "id must be a non-empty string",
        ),
        (
            {"userId": "u", "id": 7, "payload": PAYLOAD},
            "invalid_field",
            "id",
            "id must be a non-empty string",
        ),
        (
            {"userIds": ["u"] * 10_001, "payload": PAYLOAD},
            "invalid_field",
            "userIds",
            "userIds holds more than 10000 entries",
        ),
        (
            {"userId": "u", "platform": "p" * 33, "payload": PAYLOAD},
            "invalid_field",
            "platform",
            "platform is longer than 32 characters",
        ),
        (
            {"userId": "u", "platform": "p" * 32, "id": "\ud800", "payload": PAYLOAD},
            "invalid_field",
            "id",
            "id holds text that is not valid Unicode",
        ),
        (
            {"connectionIds": ["c" * 129], "payload": PAYLOAD},
            "invalid_field",
            "connectionIds[0]",
            "connectionIds[0] is longer than 128 characters",
        ),
        (
            {"userId": "u", "payload": PAYLOAD, "\x00bad": 1},
            "unknown_field",
            "\\x00bad",
            "unknown field '\\x00bad'",
        ),
        (
            {"userId": "u", "payload": PAYLOAD, "k" * 65: 1},
            "unknown_field",
            "k" * 64 + "...",
            f"unknown field '{'k' * 64}...'",
        ),
        ({"userId": "u", "payload": PAYLOAD, "": 1}, "unknown_field", '""', "unknown field '\"\"'"),
        (
            {"channel": "room", "payload": PAYLOAD},
            "invalid_channel",
            "channel",
            "a channel is named namespace:name, e.g. room:42",
        ),
        (
            {"channel": 42, "payload": PAYLOAD},
            "invalid_channel",
            "channel",
            "channel must be a non-empty string",
        ),
        (
            {"userId": "u", "payload": {"type": "t", "data": float("inf")}},
            "invalid_payload",
            "payload.data",
            "payload.data is not serializable as JSON",
        ),
    ],
)
def test_invalid_envelope_names_its_code_field_and_why(
    envelope: dict[str, Any], code: str, field: str, message: str
) -> None:
    error = invalid(envelope)
    assert (error.code, error.field, error.message) == (code, field, message)
    assert error.as_dict() == {"code": code, "message": message, "field": field}


def test_a_list_that_may_be_empty_is_not_asked_to_be_non_empty() -> None:
    # Given excludeConnectionIds that is not a list (an empty list is fine there)
    error = invalid({"userId": "u", "excludeConnectionIds": "c", "payload": PAYLOAD})
    # Then the error asks for a list, not for a non-empty one
    assert error.message == "excludeConnectionIds must be a list"
    # And a target list, which must not be empty, still says so
    assert invalid({"userIds": "u", "payload": PAYLOAD}).message == (
        "userIds must be a non-empty list"
    )


@pytest.mark.parametrize("envelope", [None, [], "text", 3])
def test_non_object_envelope_is_rejected(envelope: Any) -> None:
    assert invalid(envelope).as_dict() == {
        "code": "invalid_envelope",
        "message": "message must be a JSON object",
        "field": None,
    }


def frame_size(data: str) -> int:
    return len(encode_frame("t", data, message_id="m", ts=NOW))


def test_payload_at_the_limit_passes_and_one_byte_more_is_rejected() -> None:
    # Given data padded so the serialized frame is exactly 131,072 bytes
    overhead = frame_size("")
    exact = "x" * (MAX_CLIENT_FRAME_BYTES - overhead)
    assert frame_size(exact) == MAX_CLIENT_FRAME_BYTES
    # Then it passes, and one more byte is too large, naming payload
    envelope = {"userId": "u", "id": "m", "payload": {"type": "t", "data": exact}}
    assert len(parse_message(envelope, now_ms=NOW).frame) == MAX_CLIENT_FRAME_BYTES
    envelope["payload"] = {"type": "t", "data": exact + "x"}
    error = invalid(envelope)
    assert (error.code, error.field) == ("payload_too_large", "payload")


def test_size_is_counted_in_utf8_bytes_not_characters() -> None:
    # Given 50,000 three-byte characters: under the limit in characters, over it in bytes
    envelope = {"userId": "u", "payload": {"type": "t", "data": "€" * 50_000}}
    assert invalid(envelope).code == "payload_too_large"


def test_nan_in_a_body_is_not_json() -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_json('{"userId": "u", "payload": {"type": "t", "data": NaN}}')
    assert caught.value.code == "invalid_json"


@pytest.mark.parametrize("body", ["", "not json", "{", b"\xff\xfe"])
def test_unparseable_body_is_invalid_json(body: str | bytes) -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_json(body)
    assert caught.value.code == "invalid_json"


def test_duplicate_targets_are_sent_once() -> None:
    message = parse_message({"connectionIds": ["a", "b", "a"], "payload": PAYLOAD}, now_ms=NOW)
    assert message.target.connection_ids == ("a", "b")


def test_message_repr_never_shows_the_payload() -> None:
    message = parse_message({"userId": "u", "payload": {"type": "t", "data": "secret"}}, now_ms=NOW)
    assert "secret" not in repr(message)


def test_a_lone_surrogate_is_rejected_not_crashed_on() -> None:
    # Given JSON text escaping half of a surrogate pair (valid JSON, not valid Unicode)
    envelope = parse_json('{"userId": "u", "payload": {"type": "t", "data": "\\ud800"}}')
    # When it is validated, then it is an invalid payload
    assert invalid(envelope).as_dict() == {
        "code": "invalid_payload",
        "message": "payload holds text that is not valid Unicode",
        "field": "payload",
    }


def test_sqs_batches_hold_at_most_ten_messages() -> None:
    assert [len(batch) for batch in sqs_batches(range(25), lambda _: 1)] == [10, 10, 5]


def test_sqs_batches_hold_at_most_one_mebibyte_in_all() -> None:
    # Given messages of a third of the limit, then one of exactly the limit
    third = MAX_SQS_MESSAGE_BYTES // 3
    sizes = [third, third, third, third, MAX_SQS_MESSAGE_BYTES]
    # Then three fit in one batch (3 x third <= limit), the fourth starts the next, and the
    # message of the full limit goes alone
    batches = list(sqs_batches(sizes, lambda size: size))
    assert batches == [[third] * 3, [third], [MAX_SQS_MESSAGE_BYTES]]
    assert list(sqs_batches([], lambda size: size)) == []


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ('{"userId": "u",}', "Illegal trailing comma before end of object at character 14"),
        ('{"userId": "u"', "Expecting ',' delimiter at character 14"),
        ("", "Expecting value at character 0"),
        ('{"data": NaN}', "NaN is not a JSON number"),
        ('{"data": -Infinity}', "-Infinity is not a JSON number"),
        (b'{"data": "\xff"}', "it is not UTF-8 text"),
        ('{"data": ' + "7" * 5_000 + "}", "a number has too many digits"),
        ("[" * 100_000, "it is nested too deeply"),
    ],
)
def test_a_body_that_is_not_json_says_where_without_quoting_it(body: str | bytes, why: str) -> None:
    with pytest.raises(InvalidMessage) as caught:
        parse_json(body)
    assert caught.value.as_dict() == {
        "code": "invalid_json",
        "message": f"message body is not valid JSON: {why}",
        "field": None,
    }


def test_a_json_body_is_read_from_text_or_utf8_bytes() -> None:
    assert parse_json(b'{"a": [1, 2.5, "\\u00e9", "\xc3\xa9"]}') == {"a": [1, 2.5, "é", "é"]}
    assert parse_json('{"a": null}') == {"a": None}


def test_the_frame_is_compact_json_in_utf8_with_its_fields_in_order() -> None:
    frame = encode_frame("chat", {"text": "héllo", "n": [1, 2]}, message_id="m-1", ts=NOW)
    assert (
        frame
        == (f'{{"type":"chat","data":{{"text":"héllo","n":[1,2]}},"id":"m-1","ts":{NOW}}}').encode()
    )


def test_a_frame_too_large_names_its_size_and_the_limit() -> None:
    error = invalid(
        {"userId": "u", "id": "m", "payload": {"type": "t", "data": "x" * MAX_CLIENT_FRAME_BYTES}}
    )
    size = frame_size("x" * MAX_CLIENT_FRAME_BYTES)
    assert error.as_dict() == {
        "code": "payload_too_large",
        "message": f"payload is {size} bytes once serialized; the limit is 131072 bytes",
        "field": "payload",
    }


def test_each_selector_becomes_its_target() -> None:
    def target_of(**selector: Any) -> Target:
        return parse_message({**selector, "payload": PAYLOAD}, now_ms=NOW).target

    assert target_of(connectionId="c") == Target(connection_ids=("c",))
    assert target_of(connectionIds=["c", "d", "c"]) == Target(connection_ids=("c", "d"))
    assert target_of(userId="u") == Target(user_ids=("u",))
    assert target_of(userIds=["u", "v"]) == Target(user_ids=("u", "v"))
    assert target_of(broadcast=True) == Target(broadcast=True)
    assert target_of(userId="u", platform="pc", excludeConnectionIds=[]) == Target(
        user_ids=("u",), platforms=frozenset({"pc"})
    )
    assert target_of(broadcast=True, platform=["pc", "web"], excludeConnectionIds=["c"]) == (
        Target(
            broadcast=True,
            platforms=frozenset({"pc", "web"}),
            exclude_connection_ids=frozenset({"c"}),
        )
    )


@pytest.mark.parametrize(
    "envelope",
    [
        {"userId": "u" * 128},
        {"connectionIds": ["c" * 128]},
        {"userId": "u", "platform": "p" * 32},
        {"userId": "u", "id": "i" * 128},
        {"userIds": [str(i) for i in range(10_000)]},
    ],
)
def test_values_at_their_limits_are_accepted(envelope: dict[str, Any]) -> None:
    parse_message({**envelope, "payload": PAYLOAD}, now_ms=NOW)


def test_the_id_is_the_given_one_else_the_default_else_a_fresh_one() -> None:
    def id_of(envelope: dict[str, Any], default: str | None) -> str:
        return parse_message(
            {"userId": "u", **envelope, "payload": PAYLOAD}, now_ms=NOW, default_id=default
        ).id

    assert id_of({"id": "given"}, "default") == "given"
    assert id_of({}, "default") == "default"
    fresh = {id_of({}, None), id_of({}, "")}
    assert len(fresh) == 2
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in fresh)


def test_a_message_sent_again_keeps_its_id_payload_and_filters() -> None:
    message = parse_message(
        {
            "id": "m-1",
            "broadcast": True,
            "platform": ["web", "pc"],
            "excludeConnectionIds": ["c-2", "c-1"],
            "payload": PAYLOAD,
        },
        now_ms=NOW,
    )
    assert with_target(message, userIds=["u"]) == {
        "id": "m-1",
        "userIds": ["u"],
        "platform": ["pc", "web"],
        "excludeConnectionIds": ["c-1", "c-2"],
        "payload": PAYLOAD,
    }
    plain = parse_message({"id": "m-2", "userId": "u", "payload": PAYLOAD}, now_ms=NOW)
    assert with_target(plain, broadcast=True) == {
        "id": "m-2",
        "broadcast": True,
        "payload": PAYLOAD,
    }
    assert to_envelope(message, ["c-9"]) == {
        "id": "m-1",
        "connectionIds": ["c-9"],
        "payload": PAYLOAD,
    }


def test_an_sqs_body_is_compact_ascii_json() -> None:
    assert sqs_body({"a": "é\x00", "b": [1, 2]}) == '{"a":"\\u00e9\\u0000","b":[1,2]}'
    with pytest.raises(ValueError, match="JSON compliant"):
        sqs_body({"a": float("nan")})


def test_sqs_batches_take_exactly_ten_and_exactly_one_mebibyte() -> None:
    assert [len(b) for b in sqs_batches(range(10), lambda _: 1)] == [10]
    half = MAX_SQS_MESSAGE_BYTES // 2
    assert list(sqs_batches([half, half, 1], lambda size: size)) == [[half, half], [1]]


def test_of_several_unknown_fields_the_first_in_order_is_named_whole_up_to_64_characters() -> None:
    assert invalid({"userId": "u", "zeta": 1, "alpha": 2, "payload": PAYLOAD}).field == "alpha"
    assert invalid({"userId": "u", "payload": {**PAYLOAD, "z": 1, "b": 2}}).field == "payload.b"
    assert invalid({"userId": "u", "k" * 64: 1, "payload": PAYLOAD}).field == "k" * 64
    assert invalid({"userId": "u", "\u00e9\t": 1, "payload": PAYLOAD}).field == "\u00e9\\t"


def test_a_channel_s_message_names_its_channel_in_its_target_and_its_frame() -> None:
    # Given an envelope for a channel
    envelope = {"channel": "room:42", "id": "m", "payload": PAYLOAD}
    # When it is validated
    message = parse_message(envelope, now_ms=NOW)
    # Then its target is the channel, and subscribers see which channel it came through
    assert message.target == Target(channel="room:42")
    assert message.channel == "room:42"
    assert json.loads(message.frame)["channel"] == "room:42"
    # And a channel given for a re-queued copy does not replace the envelope's own
    assert parse_message(envelope, now_ms=NOW, channel="room:7").channel == "room:42"


def test_a_copy_requeued_by_connection_id_keeps_its_channel_seq_and_ts() -> None:
    # Given a channel's message kept at seq 7, sent again to some of its subscribers
    envelope = {"connectionIds": ["c-1"], "id": "m", "payload": PAYLOAD}
    # When it is validated with what the queue recorded
    message = parse_message(envelope, now_ms=NOW, ts=NOW - 5, channel="room:42", seq=7)
    # Then the message and its frame carry them all
    assert (message.ts, message.channel, message.seq) == (NOW - 5, "room:42", 7)
    assert message.frame == (
        b'{"type":"order.updated","data":{"orderId":7},"id":"m","ts":%d,'
        b'"channel":"room:42","seq":7}' % (NOW - 5)
    )


def test_a_frame_carries_its_channel_seq_and_extra_fields_after_the_four_of_every_frame() -> None:
    frame = encode_frame(
        "t", 1, message_id="m", ts=NOW, channel="room:42", seq=3, extra={"ref": "r-1"}
    )
    assert (
        frame
        == b'{"type":"t","data":1,"id":"m","ts":%d,"channel":"room:42","seq":3,"ref":"r-1"}' % (NOW)
    )
    # And a message kept in no stream has no seq
    assert encode_frame("t", 1, message_id="m", ts=NOW, seq=NOT_KEPT) == (
        b'{"type":"t","data":1,"id":"m","ts":%d}' % NOW
    )


def test_a_seq_added_to_a_frame_gives_the_frame_encoded_with_that_seq() -> None:
    # Given a frame made once for a message
    frame = encode_frame("t", {"a": "é"}, message_id="m", ts=NOW, channel="room:42")
    # When a seq is added to it, then it is the frame encode_frame makes with that seq
    assert with_seq(frame, 12) == encode_frame(
        "t", {"a": "é"}, message_id="m", ts=NOW, channel="room:42", seq=12
    )


def test_a_batch_after_a_full_one_counts_its_bytes_from_zero() -> None:
    # Given a message of the whole limit, then two halves that fill a batch exactly
    half = MAX_SQS_MESSAGE_BYTES // 2
    sizes = [MAX_SQS_MESSAGE_BYTES, half, half]
    # Then the halves go together in the second batch
    assert list(sqs_batches(sizes, lambda size: size)) == [[MAX_SQS_MESSAGE_BYTES], [half, half]]


def test_connection_ids_and_user_ids_are_each_held_to_their_own_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a user id limit shorter than the connection id limit
    monkeypatch.setattr(messages, "MAX_USER_ID_LENGTH", 4)
    # Then a connection id longer than a user id may be is accepted, as target or list
    parse_message({"connectionId": "c" * 5, "payload": PAYLOAD}, now_ms=NOW)
    parse_message({"connectionIds": ["c" * 5], "payload": PAYLOAD}, now_ms=NOW)
    # And a user id that long is refused
    assert invalid({"userId": "u" * 5, "payload": PAYLOAD}).message == (
        "userId is longer than 4 characters"
    )
    assert invalid({"userIds": ["u" * 5], "payload": PAYLOAD}).message == (
        "userIds[0] is longer than 4 characters"
    )
