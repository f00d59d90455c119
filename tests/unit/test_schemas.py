"""The JSON Schemas in ``schemas/``: current, valid, and true to what wspush does.

The property tests (``tests/property/test_schemas.py``) check that the envelope schema and
``parse_message`` agree on generated envelopes; here, the committed files, their examples,
the type pattern in another regex engine, and every error code they list.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from schemas.generate import (
    ENVELOPE_ERRORS,
    FOLDER,
    FRAME_ERRORS,
    SCHEMAS,
    WHITESPACE,
    render,
)
from tests.contract import assert_valid, validator
from wspush.contract import frames
from wspush.contract.messages import MAX_MESSAGES_PER_SEND, encode_frame, parse_json, parse_message
from wspush.errors import InvalidMessage

NOW = 1_795_867_200_000
PAYLOAD = {"type": "order.updated", "data": {"orderId": 7}}


def test_the_committed_schemas_are_what_generate_writes() -> None:
    # Given the schemas built from wspush's constants now
    for name, build in SCHEMAS.items():
        # Then each committed file is exactly that (else: make schemas, and commit)
        committed = (FOLDER / name).read_text(encoding="utf-8")
        assert committed == render(build()), f"schemas/{name} is stale: run make schemas"
    # And the folder holds no schema that nothing writes
    assert {path.name for path in FOLDER.glob("*.json")} == set(SCHEMAS)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_each_schema_is_a_draft_2020_12_schema_and_its_examples_are_valid(name: str) -> None:
    schema = json.loads((FOLDER / name).read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    assert schema["examples"]
    for example in schema["examples"]:
        Draft202012Validator(schema).validate(example)


@pytest.mark.parametrize("example", validator("envelope").schema["examples"])
def test_the_envelope_examples_are_accepted_by_wspush(example: dict[str, Any]) -> None:
    parse_message(example, now_ms=NOW)


def refusal(envelope: Any) -> str:
    with pytest.raises(InvalidMessage) as caught:
        parse_message(parse_json(envelope) if isinstance(envelope, str) else envelope, now_ms=NOW)
    return caught.value.code


# One envelope refused with each code the schemas list, and the same refused by the schema
# (all but payload_too_large, which only the size of the frame decides).
REFUSED = {
    "invalid_json": "{not json",
    "invalid_envelope": [PAYLOAD],
    "unknown_field": {"userId": "u", "userID": "u", "payload": PAYLOAD},
    "invalid_target": {"userId": "u", "broadcast": True, "payload": PAYLOAD},
    "invalid_field": {"userIds": ["u", ""], "payload": PAYLOAD},
    "invalid_payload": {"userId": "u", "payload": {"type": " ", "data": 1}},
    "payload_too_large": {"userId": "u", "payload": {"type": "t", "data": "x" * 131_072}},
    "invalid_channel": {"channel": "room", "payload": PAYLOAD},
}
# Refused by the deployment's configuration, which no schema knows (a channel in a namespace
# that is not declared): tests/integration/test_channels.py.
REFUSED_BY_CONFIGURATION = {"unknown_namespace"}


def test_every_envelope_error_code_the_schemas_list_is_one_wspush_gives() -> None:
    assert set(REFUSED) | REFUSED_BY_CONFIGURATION == set(ENVELOPE_ERRORS)
    for code, envelope in REFUSED.items():
        assert refusal(envelope) == code
        if code not in ("invalid_json", "payload_too_large"):
            assert not validator("envelope").is_valid(envelope), code


def test_the_send_event_takes_one_envelope_or_a_list_of_1_to_100() -> None:
    envelope = {"userId": "u", "payload": PAYLOAD}
    sizes = {0: False, 1: True, MAX_MESSAGES_PER_SEND: True, MAX_MESSAGES_PER_SEND + 1: False}
    for size, valid in sizes.items():
        assert validator("send-event").is_valid([envelope] * size) is valid, size
    assert validator("send-event").is_valid(envelope)
    assert not validator("send-event").is_valid([{"userId": "u"}])


def test_every_frame_error_code_is_one_a_client_gets() -> None:
    # Given frames no route takes: not JSON, not an object, an unknown action
    replies = [
        json.loads(frames.unknown_frame_reply(body, now_ms=NOW))
        for body in ("{oops", "[1]", '{"action": "pnig"}', '{"content": "ping"}', None)
    ]
    # Then each reply is an error frame, and together they give every code the schema lists
    for reply in replies:
        assert_valid("error-frame", reply)
        assert_valid("frame", reply)
    assert {reply["data"]["code"] for reply in replies} == set(FRAME_ERRORS)


def test_a_pushed_frame_and_a_pong_are_frames() -> None:
    message = parse_message({"userId": "u", "id": "m-1", "payload": PAYLOAD}, now_ms=NOW)
    assert_valid("frame", json.loads(message.frame))
    pong = json.loads(frames.reply("pong", {"connectionId": "L0SM9cOFvHcCIhw="}, now_ms=NOW))
    assert_valid("pong-frame", pong)
    assert_valid("frame", pong)
    assert not validator("pong-frame").is_valid(json.loads(message.frame))


def test_a_frame_of_a_blank_type_is_not_a_frame() -> None:
    frame = json.loads(encode_frame("\u3000", 1, message_id="m", ts=NOW))
    assert not validator("frame").is_valid(frame)


def test_the_type_pattern_reads_the_same_in_ecma_262() -> None:
    # Given the payload type's pattern, and text that is, or is near to, whitespace
    pattern = validator("envelope").schema["properties"]["payload"]["properties"]["type"]
    samples = [*WHITESPACE, "\ufeff", "\u200b", "\u180e", "\x00", "t", " t ", "\U0001f600"]
    # When JavaScript's RegExp (what ajv and browsers use), with and without the u flag,
    # tests each one
    script = (
        "const [pattern, samples] = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "const test = (flags) => samples.map((s) => new RegExp(pattern, flags).test(s));"
        "console.log(JSON.stringify([test('u'), test('')]));"
    )
    verdicts = subprocess.run(
        ["node", "-e", script],
        input=json.dumps([pattern["pattern"], samples]),
        capture_output=True,
        text=True,
        check=True,
    )
    # Then it matches exactly the text that holds something str.strip() keeps
    expected = [bool(sample.strip()) for sample in samples]
    assert json.loads(verdicts.stdout) == [expected, expected]
