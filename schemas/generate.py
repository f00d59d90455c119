"""Writes the JSON Schemas (draft 2020-12) in this folder from wspush's own limits.

Every number comes from the constant the code enforces (``wspush.contract.messages``), so a
changed limit reaches the schemas the next time this runs: ``make schemas``.
``tests/unit/test_schemas.py`` fails while a committed file differs from what this writes,
and the property tests check that the envelope schema and ``parse_message`` accept the
same envelopes. Each file stands alone (no ``$ref``
to another file), so any validator in any language can load just the one it needs.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wspush.channels.names import MAX_CHANNEL_LENGTH
from wspush.contract.frames import MAX_REF_LENGTH
from wspush.contract.messages import (
    MAX_CLIENT_FRAME_BYTES,
    MAX_CONNECTION_ID_LENGTH,
    MAX_ID_LENGTH,
    MAX_MESSAGES_PER_SEND,
    MAX_PLATFORM_LENGTH,
    MAX_REPORTED_ERRORS,
    MAX_SQS_MESSAGE_BYTES,
    MAX_TARGETS,
    MAX_USER_ID_LENGTH,
)

Schema = dict[str, Any]

DRAFT = "https://json-schema.org/draft/2020-12/schema"
FOLDER = Path(__file__).resolve().parent

# The codes an envelope is refused with (``InvalidMessage.code``), and what each means.
ENVELOPE_ERRORS = {
    "invalid_json": "the SQS body (or a send event given as a string) is not JSON",
    "invalid_envelope": "the envelope is not a JSON object; for the send Lambda, a list that "
    f"is empty or holds more than {MAX_MESSAGES_PER_SEND} envelopes",
    "unknown_field": "a field the contract does not have (a typo such as userID)",
    "invalid_target": 'not exactly one target, or "broadcast" other than true',
    "invalid_field": "a target, filter or id that is not a non-empty string (or list of "
    "them), too long, in too long a list, or not valid Unicode",
    "invalid_payload": "payload is not {type, data}, its type is blank, its data is missing, "
    "or it holds text that is not valid Unicode or JSON nested too deep",
    "payload_too_large": f"the frame clients would receive is over {MAX_CLIENT_FRAME_BYTES:,} "
    "bytes",
    "invalid_channel": "channel is not namespace:name (namespace 1-32 of a-z 0-9 -, name 1-128 "
    "of A-Z a-z 0-9 . _ ~ -)",
    "unknown_namespace": "the channel's namespace is not declared (WSPUSH_NAMESPACES)",
}
# The codes of a valid message the send Lambda did not send.
NOT_SENT_ERRORS = {
    "deadline": "the invocation ran out of time before it started this message",
    "in_progress": "another invocation is sending this message (same id and target)",
    "storage_unavailable": "wspush's tables could not be used",
}
# The codes of the error frame a client gets for a frame no route takes.
FRAME_ERRORS = {
    "bad_frame": "the frame is not JSON, or not a JSON object (for a channel request: no "
    "valid action, or a ref or after that is not a short string)",
    "unknown_action": 'the frame has no "action", or one wspush does not know',
}
# The codes a subscribe, unsubscribe, presence, hello or recover request is refused with
# (README "Channels", "Recovery").
CHANNEL_ERRORS = {
    "invalid_channel": "the channel is not namespace:name as the contract spells it",
    "unknown_namespace": "no such namespace is declared",
    "forbidden": "neither the namespace, the token's channels claim nor the authorizer allows it",
    "too_many_channels": "the connection holds its maximum of channels",
    "channel_full": "the presence channel holds its maximum of members",
    "not_subscribed": "presence of a channel this connection is not subscribed to",
    "no_presence": "presence of a channel whose namespace has none",
    "unknown_connection": "this connection is closing (its row is gone)",
    "invalid_since": 'since is not {"epoch": a string of 1-64 characters, "seq": a whole '
    "number, 0 or more}",
    "no_history": "recover while user history is off",
    "unavailable": "wspush's tables could not be used: try again",
}

# Python's str.strip() removes these characters, so a payload type made of nothing else
# counts as empty. (ECMA-262's \s is another set: the schema spells this one out.)
WHITESPACE = "".join(char for char in map(chr, range(sys.maxunicode + 1)) if char.isspace())

NOT_CHECKED_HERE = (
    "wspush also refuses what JSON Schema cannot say: text that is not valid Unicode (a lone "
    'surrogate such as "\\ud800", which JSON escapes can carry), a frame to clients over '
    f"{MAX_CLIENT_FRAME_BYTES:,} bytes (API Gateway's limit; the frame is {{type, data, id, "
    "ts} as compact UTF-8 JSON), and data nested about 10,000 levels deep. Lengths count "
    "Unicode code points, as JSON Schema does."
)


def _class_without(chars: str) -> str:
    """A regex character class of every character but ``chars``, in \\uXXXX escapes that
    ECMA-262 and Python's re read alike."""
    codes = sorted(map(ord, chars))
    if codes[-1] > 0xFFFF:
        raise ValueError("a \\uXXXX escape holds only the Basic Multilingual Plane")
    runs: list[list[int]] = []
    for code in codes:
        if runs and runs[-1][1] == code - 1:
            runs[-1][1] = code
        else:
            runs.append([code, code])
    parts = (
        f"\\u{first:04x}" if first == last else f"\\u{first:04x}-\\u{last:04x}"
        for first, last in runs
    )
    return f"[^{''.join(parts)}]"


def _text(max_length: int, description: str) -> Schema:
    return {
        "description": description,
        "type": "string",
        "minLength": 1,
        "maxLength": max_length,
    }


def _list(item: Schema, description: str, *, min_items: int = 1) -> Schema:
    return {
        "description": description,
        "type": "array",
        "minItems": min_items,
        "maxItems": MAX_TARGETS,
        "items": item,
    }


def _type(description: str) -> Schema:
    return {
        "description": description,
        "type": "string",
        "minLength": 1,
        "pattern": _class_without(WHITESPACE),
    }


def _codes(codes: dict[str, str], what: str) -> Schema:
    meanings = "; ".join(f"{code}: {meaning}" for code, meaning in codes.items())
    return {"description": f"{what} ({meanings}).", "enum": list(codes)}


def _closed(properties: Schema, required: list[str], **extra: Any) -> Schema:
    """An object with exactly these properties (``extra``: its description, oneOf...)."""
    described = {"description": extra.pop("description")} if "description" in extra else {}
    return {
        **described,
        "type": "object",
        **extra,
        "required": required,
        "properties": properties,
        "additionalProperties": False,
    }


TARGETS = ("connectionId", "connectionIds", "userId", "userIds", "channel", "broadcast")
CHANNEL_PATTERN = "^[a-z0-9-]{1,32}:[A-Za-z0-9._~-]{1,128}$"


def _channel(description: str) -> Schema:
    return {
        "description": description,
        "type": "string",
        "pattern": CHANNEL_PATTERN,
        "maxLength": MAX_CHANNEL_LENGTH,
    }


def _envelope_body() -> Schema:
    """The envelope without its file's header, to embed in the send event's schema."""
    connection_id = _text(MAX_CONNECTION_ID_LENGTH, "An API Gateway connection id.")
    user_id = _text(MAX_USER_ID_LENGTH, "A user id, as the connection's token (or query) gave it.")
    platform = _text(MAX_PLATFORM_LENGTH, "A platform, as a client connected with (pc, mobile…).")
    properties: Schema = {
        "connectionId": {**connection_id, "description": "Target: this one connection."},
        "connectionIds": _list(
            connection_id, "Target: these connections (duplicates are sent once)."
        ),
        "userId": {**user_id, "description": "Target: every connection of this user."},
        "userIds": _list(user_id, "Target: every connection of these users."),
        "channel": _channel(
            "Target: every subscriber of this channel (namespace:name, in a declared namespace)."
        ),
        "broadcast": {"description": "Target: every connection.", "const": True},
        "platform": {
            "description": "Only connections on this platform, or on one of these; null is "
            "the same as leaving it out.",
            "anyOf": [platform, _list(platform, "Platforms."), {"type": "null"}],
        },
        "excludeConnectionIds": {
            "description": "Never these connections (e.g. the one that caused the event); "
            "null is the same as leaving it out.",
            "anyOf": [_list(connection_id, "Connection ids.", min_items=0), {"type": "null"}],
        },
        "payload": _closed(
            {
                "type": _type(
                    "What the client dispatches on, e.g. order.updated: a string with at "
                    "least one character that is not whitespace."
                ),
                "data": {"description": "Any JSON value, null included."},
            },
            ["type", "data"],
            description="What clients receive, as the frame's type and data.",
        ),
        "id": {
            "description": "The message id clients see (for de-duplication) and the "
            "idempotency key: within an hour (WSPUSH_IDEMPOTENCY_TTL_SECONDS), a second message "
            "with the same id and target is taken for a retry and not sent again. Left out "
            "or null: the SQS message id (queue) or the Lambda request id (send) is used.",
            "anyOf": [_text(MAX_ID_LENGTH, "A message id."), {"type": "null"}],
        },
    }
    return _closed(
        properties,
        ["payload"],
        oneOf=[{"required": [target]} for target in TARGETS],
    )


ENVELOPE_EXAMPLES = [
    {
        "userId": "u-42",
        "platform": "pc",
        "payload": {"type": "order.updated", "data": {"orderId": 7}},
    },
    {"connectionId": "L0SM9cOFvHcCIhw=", "payload": {"type": "hello", "data": None}},
    {"channel": "room:42", "payload": {"type": "chat.message", "data": {"text": "hi"}}},
    {
        "broadcast": True,
        "platform": ["pc", "web"],
        "excludeConnectionIds": ["L0SM9cOFvHcCIhw="],
        "id": "maintenance-2026-12-24",
        "payload": {"type": "notice", "data": {"text": "Maintenance at 22:00 UTC"}},
    },
]


def envelope() -> Schema:
    return {
        "$schema": DRAFT,
        "title": "wspush envelope",
        "description": "One message as a service sends it: the body of an SQS message on "
        "wspush's messages queue, or the send Lambda's event (which also takes a list: "
        "send-event.schema.json). Exactly one target (connectionId, connectionIds, userId, "
        'userIds or "broadcast": true), optional platform and excludeConnectionIds filters, '
        "the payload clients receive, an optional id. An SQS message is at most "
        f"{MAX_SQS_MESSAGE_BYTES:,} bytes, body and attributes together, and holds only "
        "characters SQS allows (JSON with non-ASCII characters escaped always does). "
        + NOT_CHECKED_HERE,
        **_envelope_body(),
        "examples": ENVELOPE_EXAMPLES,
    }


def send_event() -> Schema:
    return {
        "$schema": DRAFT,
        "title": "wspush send Lambda event",
        "description": "What a service invokes the send Lambda with: one envelope, or a list "
        f"of 1 to {MAX_MESSAGES_PER_SEND} (each answered on its own: an invalid one does not "
        "stop the others). A JSON string holding either is parsed too, as when a caller "
        "encodes the event twice; this schema describes the event itself. " + NOT_CHECKED_HERE,
        "anyOf": [
            {"$ref": "#/$defs/envelope"},
            {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_MESSAGES_PER_SEND,
                "items": {"$ref": "#/$defs/envelope"},
            },
        ],
        "$defs": {"envelope": {"description": "See envelope.schema.json.", **_envelope_body()}},
        "examples": [ENVELOPE_EXAMPLES[0], ENVELOPE_EXAMPLES[:2]],
    }


def _message_id() -> Schema:
    return _text(MAX_ID_LENGTH, "The message id, as clients see it.")


def _count(description: str) -> Schema:
    return {"description": description, "type": "integer", "minimum": 0}


def send_answer() -> Schema:
    report = _closed(
        {
            "id": _message_id(),
            "targets": _count("Recipients found: delivered + gone + failed."),
            "delivered": _count("Recipients API Gateway accepted the message for."),
            "gone": _count("Recipients whose connection was gone (410); their rows are deleted."),
            "failed": _count("Recipients not reached."),
            "errors": {
                "description": f"Why recipients failed: the first {MAX_REPORTED_ERRORS}.",
                "type": "array",
                "maxItems": MAX_REPORTED_ERRORS,
                "items": _closed(
                    {
                        "connectionId": {"type": "string"},
                        "reason": {
                            "description": 'e.g. "403 ForbiddenException", or "deadline" for '
                            "a recipient the function ran out of time to reach.",
                            "type": "string",
                        },
                    },
                    ["connectionId", "reason"],
                ),
            },
            "errorsTruncated": {
                "description": "Failed recipients left out of errors.",
                "type": "integer",
                "minimum": 1,
            },
            "remembered": {
                "description": "Present (false) when the message was delivered as reported "
                "but could not be recorded as handled: a retry with the same id is sent again.",
                "const": False,
            },
        },
        ["id", "targets", "delivered", "gone", "failed", "errors"],
        description="A message that was handled: what happened to its recipients.",
    )
    not_sent = _closed(
        {
            "id": _message_id(),
            "error": _closed(
                {
                    "code": _codes(NOT_SENT_ERRORS, "Why nothing was sent"),
                    "message": {"type": "string", "minLength": 1},
                    "field": {"type": "null"},
                },
                ["code", "message", "field"],
            ),
        },
        ["id", "error"],
        description="A valid message that was not sent; sending it again may work.",
    )
    refused = _closed(
        {
            "error": _closed(
                {
                    "code": _codes(ENVELOPE_ERRORS, "Why the envelope was refused"),
                    "message": {"type": "string", "minLength": 1},
                    "field": {
                        "description": "The field to blame, e.g. payload.type or userIds[3]; "
                        "null when the whole envelope is.",
                        "type": ["string", "null"],
                    },
                },
                ["code", "message", "field"],
            ),
        },
        ["error"],
        description="An envelope that breaks the contract; sending it again will not help.",
    )
    return {
        "$schema": DRAFT,
        "title": "wspush send Lambda answer",
        "description": "What the send Lambda answers a synchronous (RequestResponse) "
        "invocation: one answer per envelope, a list of them for a list of envelopes, or one "
        "refusal for an event that is neither. (A function that failed as a whole is "
        "answered by Lambda itself: FunctionError, with errorMessage and errorType.)",
        "anyOf": [
            {"$ref": "#/$defs/answer"},
            {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_MESSAGES_PER_SEND,
                "items": {"$ref": "#/$defs/answer"},
            },
        ],
        "$defs": {
            "answer": {
                "description": "What happened to one envelope.",
                "oneOf": [
                    {"$ref": "#/$defs/report"},
                    {"$ref": "#/$defs/notSent"},
                    {"$ref": "#/$defs/refused"},
                ],
            },
            "report": report,
            "notSent": not_sent,
            "refused": refused,
        },
        "examples": [
            {"id": "5f0c9e1a", "targets": 2, "delivered": 1, "gone": 1, "failed": 0, "errors": []},
            {
                "error": {
                    "code": "invalid_payload",
                    "message": "payload.type must be a non-empty string",
                    "field": "payload.type",
                }
            },
        ],
    }


FRAME_NOTE = (
    f"At most {MAX_CLIENT_FRAME_BYTES:,} bytes. Frames have these four fields, plus channel on a "
    "channel's message, seq on a message kept for recovery (a user's, or a channel's with "
    "history) and ref on the reply to a request that carried one; a client "
    "dispatches on type and ignores types and fields it does not know, so that later "
    "versions can add some."
)


def _frame(type_: Schema, data: Schema, description: str) -> Schema:
    return _closed(
        {
            "channel": _channel("The channel a subscriber received this message through."),
            "seq": {
                "description": "The message's place in its stream (the channel's when channel "
                "is there, else the user's): one more than the message before it.",
                "type": "integer",
                "minimum": 1,
            },
            "ref": {
                "description": "The ref of the request this frame replies to.",
                "type": "string",
                "maxLength": MAX_REF_LENGTH,
            },
            "type": type_,
            "data": data,
            "id": _text(
                MAX_ID_LENGTH, "The message id: a message that arrives twice has the same id."
            ),
            "ts": _count(
                "When wspush accepted the message (or made the reply), in milliseconds since "
                "the epoch."
            ),
        },
        ["type", "data", "id", "ts"],
        description=description,
    )


def frame() -> Schema:
    return {
        "$schema": DRAFT,
        "title": "wspush frame",
        **_frame(
            _type("The payload's type (pong and error for wspush's own replies)."),
            {"description": "The payload's data: any JSON value."},
            "Every frame a client receives: one JSON object. A pushed message is exactly the "
            "payload a service sent plus its id and ts (its type is the service's choice, and "
            "may be any); wspush's own replies have the same shape (pong-frame.schema.json, "
            "error-frame.schema.json). " + FRAME_NOTE,
        ),
        "examples": [
            {"type": "order.updated", "data": {"orderId": 7}, "id": "5f0c9e1a", "ts": 1795867200000}
        ],
    }


def pong_frame() -> Schema:
    return {
        "$schema": DRAFT,
        "title": "wspush pong frame",
        **_frame(
            {"const": "pong"},
            _closed(
                {
                    "connectionId": {
                        "description": "This connection's id.",
                        "type": "string",
                        "minLength": 1,
                    }
                },
                ["connectionId"],
            ),
            'The reply to {"action": "ping"}; the ping also refreshes the connection\'s '
            "liveness. " + FRAME_NOTE,
        ),
        "examples": [
            {
                "type": "pong",
                "data": {"connectionId": "L0SM9cOFvHcCIhw="},
                "id": "d6f03c2b",
                "ts": 1795873954014,
            }
        ],
    }


def error_frame() -> Schema:
    return {
        "$schema": DRAFT,
        "title": "wspush error frame",
        **_frame(
            {"const": "error"},
            _closed(
                {
                    "code": _codes({**FRAME_ERRORS, **CHANNEL_ERRORS}, "Why the frame was refused"),
                    "message": {"type": "string", "minLength": 1},
                    "channel": {
                        "description": "The channel a refused channel request named.",
                        "type": "string",
                        "maxLength": MAX_CHANNEL_LENGTH,
                    },
                },
                ["code", "message"],
            ),
            "The reply to a frame no route takes (not JSON, or an unknown action), or to a "
            "channel request that is refused. " + FRAME_NOTE,
        ),
        "examples": [
            {
                "type": "error",
                "data": {
                    "code": "unknown_action",
                    "message": "unknown action 'pnig'; supported actions: ping",
                },
                "id": "0c5e2a91",
                "ts": 1795873954014,
            }
        ],
    }


SCHEMAS: dict[str, Callable[[], Schema]] = {
    "envelope.schema.json": envelope,
    "send-event.schema.json": send_event,
    "send-answer.schema.json": send_answer,
    "frame.schema.json": frame,
    "pong-frame.schema.json": pong_frame,
    "error-frame.schema.json": error_frame,
}


def render(schema: Schema) -> str:
    """A schema as its committed file holds it: indented JSON, short lists on one line."""
    return _dumps(schema, 0) + "\n"


def _dumps(value: Any, depth: int) -> str:
    inline = json.dumps(value, ensure_ascii=False)
    scalars = isinstance(value, list) and not any(isinstance(v, dict | list) for v in value)
    if not isinstance(value, dict | list) or (scalars and len(inline) <= 60) or not value:
        return inline
    inner = "  " * (depth + 1)
    if isinstance(value, list):
        items = [inner + _dumps(item, depth + 1) for item in value]
        return "[\n" + ",\n".join(items) + "\n" + "  " * depth + "]"
    fields = [
        f"{inner}{json.dumps(key, ensure_ascii=False)}: {_dumps(item, depth + 1)}"
        for key, item in value.items()
    ]
    return "{\n" + ",\n".join(fields) + "\n" + "  " * depth + "}"


def main() -> None:
    for name, build in SCHEMAS.items():
        (FOLDER / name).write_text(render(build()), encoding="utf-8")
        print(f"wrote schemas/{name}")


if __name__ == "__main__":
    main()
