"""Envelopes: whatever a service sends becomes a ``Message`` or an ``InvalidMessage``.

No input raises anything else; each error has a code, a message and (when a field is to
blame) that field, all safe to log and to put in SQS attributes; valid envelopes become
exactly the frame clients parse back.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.property.strategies import (
    UNICODE_ODD_CHARACTERS,
    assert_safe_error,
    broken_envelopes,
    deep_json,
    json_values,
    names_field,
    nested,
    odd_text,
    padded_data,
    valid_envelopes,
)
from wspush.contract.messages import (
    MAX_CLIENT_FRAME_BYTES,
    MAX_SQS_MESSAGE_BYTES,
    Message,
    parse_json,
    parse_message,
)
from wspush.errors import InvalidMessage

NOW = 1_795_867_200_000


def outcome(envelope: Any, **options: Any) -> Message | InvalidMessage:
    """The message, or the error; any other exception fails the test."""
    try:
        return parse_message(envelope, now_ms=NOW, **options)
    except InvalidMessage as error:
        return error


def outcome_of_body(body: str | bytes) -> Message | InvalidMessage:
    try:
        envelope = parse_json(body)
    except InvalidMessage as error:
        return error
    return outcome(envelope)


def assert_is_its_frame(message: Message, envelope: dict[str, Any]) -> None:
    """The frame is at most 128 KB and parses back to the payload, the id and the ts."""
    assert len(message.frame) <= MAX_CLIENT_FRAME_BYTES
    frame = json.loads(message.frame)
    assert frame == {
        "type": envelope["payload"]["type"],
        "data": envelope["payload"]["data"],
        "id": envelope.get("id", message.id),
        "ts": NOW,
    }


def assert_clean_refusal(error: InvalidMessage) -> None:
    assert_safe_error(error.code, error.message, error.field)
    if error.code not in ("invalid_json", "invalid_envelope"):
        assert error.field is not None, error.code  # a field is to blame: it is named


@settings(max_examples=300)
@given(json_values() | st.dictionaries(odd_text(), json_values(), max_size=6))
def test_any_json_value_is_a_message_or_a_clean_refusal(envelope: Any) -> None:
    # Given any JSON value as the envelope, when it is validated
    result = outcome(envelope)
    # Then it is refused cleanly (hardly anything random is a valid envelope)
    if isinstance(result, InvalidMessage):
        assert_clean_refusal(result)
    else:
        assert_is_its_frame(result, envelope)


@settings(max_examples=300)
@given(
    st.one_of(
        odd_text(max_size=200),
        json_values().map(lambda value: json.dumps(value, ensure_ascii=False)),
        json_values().map(json.dumps),  # lone surrogates arrive as "\ud800" escapes
        st.binary(max_size=200),
        st.integers(1, 12_000).map(deep_json),
    )
)
@example("[" * 10_000 + "]" * 10_000)
@example('{"a":' * 10_000 + "1" + "}" * 10_000)
@example("NaN")
@example("1e999")
@example('{"userId": "u", "payload": {"type": "t", "data": 1e999}}')
@example("\ufeff{}")
@example(b"\xff\xfe")
def test_any_body_is_a_message_or_a_clean_refusal(body: str | bytes) -> None:
    # Given any raw body (text, bytes, JSON with odd escapes, deep nesting)
    # When it is parsed and validated
    result = outcome_of_body(body)
    # Then the only failure is an InvalidMessage carrying a safe code, message and field
    if isinstance(result, InvalidMessage):
        assert_clean_refusal(result)
    else:
        assert len(result.frame) <= MAX_CLIENT_FRAME_BYTES
        assert set(json.loads(result.frame)) == {"type", "data", "id", "ts"}


@settings(max_examples=300)
@given(broken_envelopes())
@example(({"connectionId": "\ud800", "payload": {"type": "t", "data": 1}}, "connectionId"))
@example(({"userId": "u", "id": "\udfff", "payload": {"type": "t", "data": 1}}, "id"))
@example(({"\ud800": 1, "userId": "u", "payload": {"type": "t", "data": 1}}, None))
@example(({"\x00": 1, "userId": "u", "payload": {"type": "t", "data": 1}}, None))
@example(({"k" * 1_000_000: 1, "userId": "u", "payload": {"type": "t", "data": 1}}, None))
def test_a_broken_envelope_is_refused_naming_the_field_to_blame(
    broken: tuple[dict[str, Any], str | None],
) -> None:
    # Given a valid envelope with exactly one thing wrong
    envelope, field = broken
    # When it is validated
    result = outcome(envelope)
    # Then it is refused with a safe error that names the broken field
    assert isinstance(result, InvalidMessage)
    assert_clean_refusal(result)
    assert names_field(result.field, field), (result.field, field, result.message)


@settings(max_examples=200)
@given(valid_envelopes())
def test_a_valid_envelope_becomes_exactly_its_frame(envelope: dict[str, Any]) -> None:
    # Given an envelope the contract accepts (odd unicode in id, type and data included)
    # When it is validated
    result = outcome(envelope, default_id="sqs-message-id")
    # Then it is a message whose frame parses back to type, data, id and ts
    assert isinstance(result, Message), result
    assert_is_its_frame(result, {"id": "sqs-message-id", **envelope})


@settings(max_examples=20)
@given(st.integers(1, 20_000) | st.sampled_from((9_990, 10_000, 100_000)))
def test_deep_nesting_as_text_or_as_objects_is_refused_cleanly(depth: int) -> None:
    # Given a payload whose data is `depth` lists deep, as a body and as decoded objects
    body = '{"userId": "u", "payload": {"type": "t", "data": ' + deep_json(depth) + "}}"
    envelope = {"userId": "u", "payload": {"type": "t", "data": nested(depth)}}
    # When each is validated
    for result in (outcome_of_body(body), outcome(envelope)):
        # Then it is a message or an InvalidMessage (never a RecursionError)
        if isinstance(result, InvalidMessage):
            assert_clean_refusal(result)
            assert result.code in ("invalid_json", "invalid_payload")
        else:
            assert json.loads(result.frame)["data"] == envelope["payload"]["data"]
    # And 10,000 levels is always too deep for the body
    if depth >= 10_000:
        refused = outcome_of_body(body)
        assert isinstance(refused, InvalidMessage)
        assert refused.code == "invalid_json"


@settings(max_examples=60)
@given(
    filler=st.sampled_from(UNICODE_ODD_CHARACTERS) | st.characters(exclude_categories=["Cs"]),
    payload_type=odd_text(min_size=1, max_size=10, unicode_only=True).filter(str.strip),
    message_id=odd_text(min_size=1, max_size=128, unicode_only=True),
    delta=st.sampled_from((-1, 0, 1)),
)
def test_the_frame_limit_is_exact_in_bytes(
    filler: str, payload_type: str, message_id: str, delta: int
) -> None:
    # Given data padded with multi-byte (or escaped) characters so the frame is the limit + delta
    size = MAX_CLIENT_FRAME_BYTES + delta
    data = padded_data(filler, size, payload_type=payload_type, message_id=message_id, ts=NOW)
    envelope = {"userId": "u", "id": message_id, "payload": {"type": payload_type, "data": data}}
    # When it is validated
    result = outcome(envelope)
    # Then up to 131,072 bytes it passes with exactly that many bytes; one more is refused
    if delta <= 0:
        assert isinstance(result, Message), result
        assert len(result.frame) == size
        assert_is_its_frame(result, envelope)
    else:
        assert isinstance(result, InvalidMessage)
        assert (result.code, result.field) == ("payload_too_large", "payload")
        assert str(size) in result.message


def _mebibyte_of(unit: str) -> str:
    return unit * (MAX_SQS_MESSAGE_BYTES // len(unit.encode("utf-8")))


MEBIBYTE_BODIES = {
    # what is 1 MiB: (body builder, expected code, expected field)
    "data": (
        lambda big: json.dumps({"userId": "u", "payload": {"type": "t", "data": big}}),
        "payload_too_large",
        "payload",
    ),
    "type": (
        lambda big: json.dumps({"userId": "u", "payload": {"type": f"t{big}", "data": 1}}),
        "payload_too_large",
        "payload",
    ),
    "userId": (
        lambda big: json.dumps({"userId": big, "payload": {"type": "t", "data": 1}}),
        "invalid_field",
        "userId",
    ),
    "unknown key": (lambda big: json.dumps({big: 1}), "unknown_field", None),
    "garbage": (lambda big: big, "invalid_json", None),
    "open brackets": (lambda big: "[" * len(big), "invalid_json", None),
}


@settings(max_examples=20, deadline=None)
@given(
    what=st.sampled_from(sorted(MEBIBYTE_BODIES)),
    unit=st.sampled_from(("x", "\u00e9", "\u20ac", "\U0001f600", *UNICODE_ODD_CHARACTERS)),
)
def test_a_one_mebibyte_body_is_refused_with_its_reason(what: str, unit: str) -> None:
    # Given a body of about 1 MiB, most of it in one place
    build, code, field = MEBIBYTE_BODIES[what]
    body = build(_mebibyte_of(unit))
    # When it is parsed and validated
    result = outcome_of_body(body)
    # Then it is refused with its specific, bounded error
    assert isinstance(result, InvalidMessage)
    assert_clean_refusal(result)
    assert result.code == code
    assert names_field(result.field, field)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ('{"\\ud800": 1}', "\\ud800"),
        ('{"\\u0000": 1}', "\\x00"),
        ('{"userId": "u", "payload": {"type": "t", "data": 1, "\\u202e": 2}}', "payload.\\u202e"),
    ],
)
def test_an_unknown_field_is_named_with_its_odd_characters_escaped(body: str, field: str) -> None:
    # Given a key holding a lone surrogate, a NUL or a bidi override
    result = outcome_of_body(body)
    # Then the error names it, escaped (SQS refuses such characters in attributes)
    assert isinstance(result, InvalidMessage)
    assert (result.code, result.field) == ("unknown_field", field)
    assert field in result.message
