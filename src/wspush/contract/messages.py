"""The message contract: one validation step from outside input to a typed ``Message``.

A service sends (as an SQS body or the send Lambda's event)::

    {"userId": "u-42", "platform": "pc",
     "payload": {"type": "order.updated", "data": {"orderId": 7}}}

with exactly one target (``connectionId`` | ``connectionIds`` | ``userId`` | ``userIds`` |
``channel`` | ``"broadcast": true``), optional ``platform`` (string or list) and
``excludeConnectionIds`` filters, and an optional ``id`` kept as the message id (an
optional field that is null counts as left out).
Clients receive ``{"type", "data", "id", "ts"}`` (and ``channel`` for a channel's message), at
most 128 KB once serialized.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from wspush.channels.names import parse_channel
from wspush.errors import ChannelRefused, InvalidMessage

MAX_CLIENT_FRAME_BYTES = 131_072  # API Gateway's limit for one message to a client
MAX_SQS_MESSAGE_BYTES = 1_048_576  # body and message attributes together; a whole batch too
MAX_SQS_BATCH_ENTRIES = 10  # messages one SendMessageBatch call takes
MAX_MESSAGES_PER_SEND = 100  # envelopes one invocation of the send Lambda accepts
MAX_REPORTED_ERRORS = 100  # failed recipients the send Lambda's answer lists
MAX_ID_LENGTH = 128
MAX_USER_ID_LENGTH = 128
MAX_CONNECTION_ID_LENGTH = 128
MAX_PLATFORM_LENGTH = 32
MAX_TARGETS = 10_000
MAX_ECHOED_NAME_LENGTH = 64  # an unknown field's name, as an error repeats it

_TARGET_FIELDS = ("connectionId", "connectionIds", "userId", "userIds", "channel", "broadcast")
_FILTER_FIELDS = ("platform", "excludeConnectionIds")
_KNOWN_FIELDS = frozenset((*_TARGET_FIELDS, *_FILTER_FIELDS, "payload", "id"))
_PAYLOAD_FIELDS = frozenset(("type", "data"))


@dataclass(frozen=True)
class Target:
    """Who a message is for. Exactly one of the four selectors is set."""

    connection_ids: tuple[str, ...] = ()
    user_ids: tuple[str, ...] = ()
    broadcast: bool = False
    channel: str | None = None
    platforms: frozenset[str] | None = None
    exclude_connection_ids: frozenset[str] = frozenset()
    # (segment, of how many): the share of a broadcast one sender invocation delivers, and the
    # connection id its scan (or a channel's query) starts after. Set from the queue, never
    # from an envelope.
    segment: tuple[int, int] | None = None
    after: str | None = None


@dataclass(frozen=True)
class Message:
    """A validated message: its id, its target and the exact bytes clients receive."""

    id: str
    ts: int
    type: str
    target: Target
    # Payload bodies never reach a log, not even through a repr.
    data: Any = field(repr=False)
    frame: bytes = field(repr=False)
    # The channel a subscriber receives it through (in the frame too), also once the message
    # is re-queued for some of its recipients by connection id.
    channel: str | None = None
    # Its place in the stream it was kept in (in the frame too), once it has one; NOT_KEPT for
    # a message that goes in no stream.
    seq: int | None = None


def parse_json(body: str | bytes) -> Any:
    """Parse a raw body; a body that is not JSON is an ``InvalidMessage`` saying where it
    stops being JSON (never quoting the body)."""
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        why = f"{exc.msg} at character {exc.pos}"
    except _NotANumber as exc:
        why = f"{exc} is not a JSON number"
    except UnicodeDecodeError:
        why = "it is not UTF-8 text"
    except ValueError:  # an integer past Python's limit of 4,300 digits
        why = "a number has too many digits"
    except RecursionError:
        why = "it is nested too deeply"
    raise InvalidMessage("invalid_json", f"message body is not valid JSON: {why}")


def parse_message(
    envelope: Any,
    *,
    now_ms: int,
    ts: int | None = None,
    default_id: str | None = None,
    channel: str | None = None,
    seq: int | None = None,
) -> Message:
    """Validate an envelope into a ``Message`` or raise ``InvalidMessage`` naming the field.

    ``ts`` keeps the original timestamp when a message is re-queued. ``default_id`` is the
    id of a message that has none of its own; it must be the same each time the same
    message is handled again (an SQS message id, a Lambda request id), so clients can
    drop the duplicate. ``channel`` is the channel of a message re-queued by connection id,
    ``seq`` the place in its stream of a message re-queued after it was kept.
    """
    if not isinstance(envelope, Mapping):
        raise InvalidMessage("invalid_envelope", "message must be a JSON object")
    unknown = sorted(str(key) for key in envelope if key not in _KNOWN_FIELDS)
    if unknown:
        name = _echoed_name(unknown[0])
        raise InvalidMessage("unknown_field", f"unknown field '{name}'", name)

    message_id = _message_id(envelope.get("id"), default_id)
    target = _target(envelope)
    payload_type, data = _payload(envelope.get("payload"))
    timestamp = now_ms if ts is None else ts
    channel = target.channel or channel
    frame = encode_frame(
        payload_type, data, message_id=message_id, ts=timestamp, channel=channel, seq=seq
    )
    if len(frame) > MAX_CLIENT_FRAME_BYTES:
        raise InvalidMessage(
            "payload_too_large",
            f"payload is {len(frame)} bytes once serialized; the limit is "
            f"{MAX_CLIENT_FRAME_BYTES} bytes",
            "payload",
        )
    return Message(
        id=message_id,
        ts=timestamp,
        type=payload_type,
        target=target,
        data=data,
        frame=frame,
        channel=channel,
        seq=seq,
    )


def encode_frame(
    payload_type: str,
    data: Any,
    *,
    message_id: str,
    ts: int,
    channel: str | None = None,
    seq: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> bytes:
    """The bytes a client receives: compact JSON with ``type``, ``data``, ``id`` and ``ts``
    (and ``channel``, ``seq`` and a reply's ``ref``, when there is one)."""
    frame: dict[str, Any] = {"type": payload_type, "data": data, "id": message_id, "ts": ts}
    if channel is not None:
        frame["channel"] = channel
    if seq:  # (NOT_KEPT stays out)
        frame["seq"] = seq
    if extra:
        frame.update(extra)
    try:
        text = json.dumps(
            frame,
            separators=(",", ":"),
            ensure_ascii=False,
            allow_nan=False,
        )
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidMessage(
            "invalid_payload", "payload.data is not serializable as JSON", "payload.data"
        ) from exc
    try:
        return text.encode()
    except UnicodeEncodeError as exc:  # a lone surrogate, e.g. from "\ud800" in the JSON
        raise InvalidMessage(
            "invalid_payload", "payload holds text that is not valid Unicode", "payload"
        ) from exc


# The ``seq`` of a message kept in no stream on purpose (wspush's own presence events, which a
# recovering client re-reads with a presence query instead): it stays out of the frame.
NOT_KEPT = 0

# What ``with_seq`` adds to a frame at most: ``,"seq":`` and a 20-digit number.
SEQ_ROOM = len(',"seq":') + 20


def with_seq(frame: bytes, seq: int) -> bytes:
    """A message's frame with its place in a stream: the bytes ``encode_frame`` makes with
    ``seq``, without encoding the payload again (one frame per user of a user list)."""
    return b'%s,"seq":%d}' % (frame[:-1], seq)


def with_target(message: Message, **target: Any) -> dict[str, Any]:
    """An envelope for ``message`` with another target, keeping its filters."""
    envelope: dict[str, Any] = {"id": message.id, **target}
    if message.target.platforms is not None:
        envelope["platform"] = sorted(message.target.platforms)
    if message.target.exclude_connection_ids:
        envelope["excludeConnectionIds"] = sorted(message.target.exclude_connection_ids)
    envelope["payload"] = {"type": message.type, "data": message.data}
    return envelope


def sqs_body(envelope: Any) -> str:
    """An envelope as an SQS message body: compact JSON, non-ASCII escaped as ``json.dumps``
    does by default (SQS refuses some characters JSON strings may carry, such as NUL or
    U+FFFE)."""
    return json.dumps(envelope, separators=(",", ":"), allow_nan=False)


def sqs_batches[T](items: Iterable[T], size: Callable[[T], int]) -> Iterator[list[T]]:
    """Consecutive items in the groups one SendMessageBatch call takes: at most 10, and at
    most 1 MiB in all (``size``: an item's body and attributes, in bytes)."""
    group: list[T] = []
    total = 0
    for item in items:
        item_size = size(item)
        if group and (
            len(group) == MAX_SQS_BATCH_ENTRIES or total + item_size > MAX_SQS_MESSAGE_BYTES
        ):
            yield group
            group, total = [], 0
        group.append(item)
        total += item_size
    if group:
        yield group


def to_envelope(message: Message, connection_ids: list[str]) -> dict[str, Any]:
    """An envelope that sends ``message`` again to exactly ``connection_ids``."""
    return {
        "id": message.id,
        "connectionIds": connection_ids,
        "payload": {"type": message.type, "data": message.data},
    }


class _NotANumber(ValueError):
    """``NaN``, ``Infinity`` or ``-Infinity``: Python's json reads them, JSON has no such
    numbers (and a client's JSON.parse would refuse the frame); the error's text is the
    constant."""


def _reject_constant(name: str) -> Any:
    raise _NotANumber(name)


def _message_id(value: Any, default: str | None) -> str:
    if value is None:
        return default or uuid.uuid4().hex
    _require_string(value, "id", MAX_ID_LENGTH)
    return str(value)


def _target(envelope: Mapping[str, Any]) -> Target:
    present = [name for name in _TARGET_FIELDS if name in envelope]
    if len(present) != 1:
        choices = " | ".join(_TARGET_FIELDS)
        found = ", ".join(present) if present else "none"
        raise InvalidMessage(
            "invalid_target", f"exactly one target is required ({choices}); found {found}", "target"
        )
    name = present[0]
    value = envelope[name]
    platforms = _platforms(envelope.get("platform"))
    exclude = _excluded(envelope.get("excludeConnectionIds"))
    base = Target(platforms=platforms, exclude_connection_ids=exclude)
    if name == "broadcast":
        if value is not True:
            raise InvalidMessage("invalid_target", "broadcast must be true when present", name)
        return replace(base, broadcast=True)
    if name == "channel":
        return replace(base, channel=_channel(value))
    by_connection = name.startswith("connection")
    max_length = MAX_CONNECTION_ID_LENGTH if by_connection else MAX_USER_ID_LENGTH
    if name.endswith("Ids"):
        ids = _string_list(value, name, max_length)
    else:
        _require_string(value, name, max_length)
        ids = (value,)
    return replace(base, connection_ids=ids) if by_connection else replace(base, user_ids=ids)


def _channel(value: Any) -> str:
    try:
        return str(parse_channel(value))
    except ChannelRefused as exc:
        raise InvalidMessage("invalid_channel", exc.message, "channel") from exc


def _platforms(value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        _require_string(value, "platform", MAX_PLATFORM_LENGTH)
        return frozenset((value,))
    return frozenset(_string_list(value, "platform", MAX_PLATFORM_LENGTH))


def _excluded(value: Any) -> frozenset[str]:
    if value is None:  # like a null id or platform: the field left out
        return frozenset()
    return frozenset(
        _string_list(value, "excludeConnectionIds", MAX_CONNECTION_ID_LENGTH, allow_empty=True)
    )


def _payload(value: Any) -> tuple[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidMessage(
            "invalid_payload", 'payload must be an object {"type": ..., "data": ...}', "payload"
        )
    unknown = sorted(str(key) for key in value if key not in _PAYLOAD_FIELDS)
    if unknown:
        name = f"payload.{_echoed_name(unknown[0])}"
        raise InvalidMessage("unknown_field", f"unknown field '{name}'", name)
    payload_type = value.get("type")
    if not isinstance(payload_type, str) or not payload_type.strip():
        raise InvalidMessage(
            "invalid_payload", "payload.type must be a non-empty string", "payload.type"
        )
    if "data" not in value:
        raise InvalidMessage("invalid_payload", "payload.data is required", "payload.data")
    return payload_type, value["data"]


def _echoed_name(name: str) -> str:
    """A key as an error repeats it: escaped and short, since errors are logged and become
    SQS attributes, which refuse control characters and lone surrogates."""
    shown = "".join(
        char if char.isprintable() else ascii(char)[1:-1] for char in name[:MAX_ECHOED_NAME_LENGTH]
    )
    if len(name) > MAX_ECHOED_NAME_LENGTH:
        return f"{shown}..."
    return shown or '""'  # the empty key: a field must never be named by an empty string


def _require_string(value: Any, field: str, max_length: int) -> None:
    if not isinstance(value, str) or not value:
        raise InvalidMessage("invalid_field", f"{field} must be a non-empty string", field)
    if len(value) > max_length:
        raise InvalidMessage(
            "invalid_field", f"{field} is longer than {max_length} characters", field
        )
    if not _is_unicode(value):
        # Ids go to DynamoDB and into Management API URLs, which both need UTF-8.
        raise InvalidMessage(
            "invalid_field", f"{field} holds text that is not valid Unicode", field
        )


def _is_unicode(value: str) -> bool:
    """False for a lone surrogate, e.g. from "\\ud800" in the JSON text."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return False
    return True


def _string_list(
    value: Any, field: str, max_length: int, *, allow_empty: bool = False
) -> tuple[str, ...]:
    if not isinstance(value, list) or (not value and not allow_empty):
        wanted = "a list" if allow_empty else "a non-empty list"
        raise InvalidMessage("invalid_field", f"{field} must be {wanted}", field)
    if len(value) > MAX_TARGETS:
        raise InvalidMessage(
            "invalid_field", f"{field} holds more than {MAX_TARGETS} entries", field
        )
    for index, item in enumerate(value):
        _require_string(item, f"{field}[{index}]", max_length)
    return tuple(dict.fromkeys(value))
