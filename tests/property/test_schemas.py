"""The envelope schema and ``parse_message`` agree: whatever the schema accepts is accepted,
whatever it refuses is refused, and both blame the same field.

The schema cannot say everything (``schemas/envelope.schema.json`` says what it leaves out):
text that is not valid Unicode, and a frame over 131,072 bytes. An envelope holding either
is valid for the schema and refused by ``parse_message``, with those codes only.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.contract import blamed_fields, related, validator
from tests.property.strategies import (
    ERROR_CODES,
    WHITESPACE,
    boundary_envelopes,
    broken_envelopes,
    json_values,
    odd_text,
    valid_envelopes,
)
from wspush.contract.messages import MAX_CLIENT_FRAME_BYTES, MAX_TARGETS, Message, parse_message
from wspush.errors import InvalidMessage

NOW = 1_795_867_200_000
DEFAULT_ID = "a-default-id"


def outcome(envelope: Any) -> Message | InvalidMessage:
    try:
        return parse_message(envelope, now_ms=NOW, default_id=DEFAULT_ID)
    except InvalidMessage as error:
        return error


def holds_lone_surrogate(value: Any) -> bool:
    if isinstance(value, str):
        return any("\ud800" <= char <= "\udfff" for char in value)
    if isinstance(value, dict):
        return any(holds_lone_surrogate(k) or holds_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(holds_lone_surrogate(item) for item in value)
    return False


def frame_bytes(envelope: dict[str, Any]) -> int:
    """The size of the frame clients would get, computed here, not by wspush."""
    frame = {
        "type": envelope["payload"]["type"],
        "data": envelope["payload"]["data"],
        "id": envelope.get("id") or DEFAULT_ID,
        "ts": NOW,
    }
    return len(json.dumps(frame, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


def assert_agree(envelope: Any) -> None:
    """Valid for the schema (and nothing the schema cannot see is wrong) ⇔ accepted; when
    both refuse, ``parse_message`` blames a field the schema blames too."""
    errors = list(validator("envelope").iter_errors(envelope))
    result = outcome(envelope)
    if not errors:
        if holds_lone_surrogate(envelope):
            assert isinstance(result, InvalidMessage), "a lone surrogate got through"
            assert result.code in ("invalid_field", "invalid_payload"), result.code
        elif frame_bytes(envelope) > MAX_CLIENT_FRAME_BYTES:
            assert isinstance(result, InvalidMessage), "an oversized frame got through"
            assert (result.code, result.field) == ("payload_too_large", "payload")
        else:
            assert isinstance(result, Message), (result.code, result.field, result.message)
        return
    assert isinstance(result, InvalidMessage), [e.message for e in errors]
    assert result.code in ERROR_CODES
    if holds_lone_surrogate(envelope):
        return  # wspush may have stopped at a surrogate before reaching what the schema saw
    blamed = blamed_fields(errors)
    if result.code == "unknown_field":
        # (its name is escaped and cut short in the error: compare where it sits)
        unknown_at = "payload" if (result.field or "").startswith("payload.") else ""
        assert any(
            e.validator == "additionalProperties" and ".".join(map(str, e.path)) == unknown_at
            for e in errors
        ), (result.field, blamed)
    else:
        assert any(related(result.field, field) for field in blamed), (result.field, blamed)


@settings(max_examples=400)
@given(valid_envelopes())
def test_every_valid_envelope_is_valid_for_the_schema(envelope: dict[str, Any]) -> None:
    # Given an envelope the contract accepts, when both judge it, then they agree
    assert_agree(envelope)


@settings(max_examples=400)
@given(broken_envelopes())
@example(({"userId": "u", "excludeConnectionIds": None, "payload": {"type": "t", "data": 1}}, None))
@example(({"broadcast": 1, "payload": {"type": "t", "data": 1}}, "broadcast"))
def test_a_broken_envelope_is_refused_by_both_naming_the_same_field(
    broken: tuple[dict[str, Any], str | None],
) -> None:
    # Given a valid envelope with exactly one thing wrong, when both judge it, then they agree
    assert_agree(broken[0])


@settings(max_examples=400, deadline=None)
@given(boundary_envelopes())
@example({"userIds": ["u"] * MAX_TARGETS, "payload": {"type": "t", "data": 1}})
@example({"userIds": ["u"] * (MAX_TARGETS + 1), "payload": {"type": "t", "data": 1}})
@example(
    {"userId": "u", "platform": ["pc"] * (MAX_TARGETS + 1), "payload": {"type": "t", "data": 1}}
)
@example({"userId": "u", "payload": {"type": "\u3000\x1c\x85", "data": 1}})
@example({"userId": "u", "payload": {"type": "\ufeff", "data": 1}})
@example({"userId": "\U0001f600" * 128, "payload": {"type": "t", "data": 1}})
@example({"userId": "\U0001f600" * 129, "payload": {"type": "t", "data": 1}})
def test_limits_and_types_at_their_boundaries_agree(envelope: dict[str, Any]) -> None:
    # Given a field at, just under or just past its limit, of a wrong type, or null
    # When both judge the envelope, then they agree
    assert_agree(envelope)


@settings(max_examples=300)
@given(json_values() | st.dictionaries(odd_text(), json_values(), max_size=6))
def test_any_json_value_is_judged_alike(envelope: Any) -> None:
    # Given any JSON value at all, when both judge it, then they agree
    assert_agree(envelope)


@settings(max_examples=60, deadline=None)
@given(
    filler=st.sampled_from(("x", "\u00e9", "\u20ac", "\U0001f600", "\x00")),
    delta=st.integers(-2, 2),
)
def test_the_frame_limit_is_the_only_size_the_schema_leaves_out(filler: str, delta: int) -> None:
    # Given data that makes the frame the limit + delta bytes
    overhead = frame_bytes({"payload": {"type": "t", "data": ""}})
    weight = len(json.dumps(filler, ensure_ascii=False).encode("utf-8")) - 2
    room = MAX_CLIENT_FRAME_BYTES + delta - overhead
    data = filler * (room // weight) + "x" * (room % weight)
    envelope = {"userId": "u", "payload": {"type": "t", "data": data}}
    assert frame_bytes(envelope) == MAX_CLIENT_FRAME_BYTES + delta
    # When both judge it, then the schema takes it and wspush refuses it past the limit
    assert validator("envelope").is_valid(envelope)
    assert_agree(envelope)


def test_each_blank_character_is_blank_to_both() -> None:
    # Given a payload type made of one whitespace character (as str.strip() sees it)
    for char in WHITESPACE:
        envelope = {"userId": "u", "payload": {"type": char * 2, "data": None}}
        # When both judge it, then both refuse it as payload.type
        assert not validator("envelope").is_valid(envelope), repr(char)
        assert_agree(envelope)
