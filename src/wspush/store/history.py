"""The history table: each stream's position and the messages it keeps for recovery.

A stream is a user's own (``u:<userId>``) or a channel's (``c:<channel>``). Under its key:

- ``#head``: the stream's ``epoch`` and the ``seq`` of its last message (0: none yet);
- ``s#<seq, 20 digits>``: a kept message: the exact frame its clients received, its id and
  epoch, and a TTL (its age limit; DynamoDB deletes it late, so reads check it too);
- ``i#<message id>``: which ``seq`` a message was given, so a message handled again (SQS
  redelivers, a send is retried) keeps its place instead of taking a new one.

A message is appended in one transaction: the head moves from the ``seq`` just read to the
next, the message and its id are written with it. Two publishers that read the same head
cannot both move it (one is cancelled, reads again and takes the next ``seq``); a write that
fails leaves nothing, so no ``seq`` is ever skipped; a message already appended is found by
its id. A head lost (only when no message was written for longer than ``HEAD_TTL``) starts a
new epoch, which tells recovering clients their history is gone.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pynamodb.attributes import NumberAttribute, TTLAttribute, UnicodeAttribute
from pynamodb.exceptions import PutError, PynamoDBException, TransactWriteError
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from wspush.errors import StorageUnavailable
from wspush.settings import History, get_settings
from wspush.store.connections import ConnectionItem, pause_before_retry, transaction_connection

HEAD = "#head"
MESSAGE = "s#"
MESSAGE_ID = "i#"
SEQ_DIGITS = 20
# A head outlives its stream's kept messages by far: losing it (a new epoch) costs every
# recovering client a reload, so it goes only after a month without a message.
HEAD_TTL = timedelta(days=30)
_CONDITION_FAILED = "ConditionalCheckFailed"
_ATTEMPTS = 12
_PAUSE_BASE_SECONDS = 0.005
_PAUSE_CAP_SECONDS = 0.2


class HistoryItem(Model):
    class Meta(ConnectionItem.Meta):  # the same region, timeouts and retries
        table_name = get_settings().history_table_name

    stream = UnicodeAttribute(hash_key=True, attr_name="stream")
    key = UnicodeAttribute(range_key=True, attr_name="key")
    epoch = UnicodeAttribute(null=True, attr_name="epoch")
    seq = NumberAttribute(null=True, attr_name="seq")
    message_id = UnicodeAttribute(null=True, attr_name="id")
    frame = UnicodeAttribute(null=True, attr_name="frame")
    ttl = TTLAttribute(null=True, attr_name="ttl")


@dataclass(frozen=True)
class Position:
    """Where a stream is: its epoch and the seq of its last message (0: none yet)."""

    epoch: str
    seq: int

    def as_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "seq": self.seq}


@dataclass(frozen=True)
class Placed:
    """Where a message went in its stream, and the frame kept there (the one given the first
    time, when the message was appended before: a replay and a redelivery must agree)."""

    position: Position
    frame: bytes

    @property
    def seq(self) -> int:
        return self.position.seq


@dataclass(frozen=True)
class Kept:
    """One kept message, as a replay posts it."""

    seq: int
    frame: bytes


def message_key(seq: int) -> str:
    return f"{MESSAGE}{seq:0{SEQ_DIGITS}d}"


def new_epoch() -> str:
    return uuid.uuid4().hex[:16]


def position(stream: str, *, now_ms: int) -> Position:
    """The stream's position; a stream never written to gets its head (and epoch) now, so a
    client told this position can recover from it once messages arrive."""
    for _ in range(_ATTEMPTS):
        head = _head(stream)
        if head is not None:
            return head
        item = HistoryItem(stream, HEAD, epoch=new_epoch(), seq=0, ttl=_at(now_ms) + HEAD_TTL)
        try:
            item.save(condition=HistoryItem.key.does_not_exist())
        except PutError as exc:
            if exc.cause_response_code != _CONDITION_FAILED + "Exception":
                raise StorageUnavailable("could not start the stream") from exc
            continue  # another caller started it first: read theirs
        return Position(str(item.epoch), 0)
    raise StorageUnavailable("the stream's head could not be read")


def append(
    stream: str,
    message_id: str,
    frame_for: Callable[[int], bytes],
    history: History,
    *,
    now_ms: int,
) -> Placed:
    """Give a message the stream's next ``seq`` and keep it (``frame_for(seq)``: the frame
    its clients receive), or find the ``seq`` (and the frame) it was given before."""
    kept_until = _at(now_ms) + timedelta(seconds=history.ttl_seconds)
    head_until = max(kept_until + timedelta(days=1), _at(now_ms) + HEAD_TTL)
    for attempt in range(_ATTEMPTS):
        pause_before_retry(
            attempt, base_seconds=_PAUSE_BASE_SECONDS, cap_seconds=_PAUSE_CAP_SECONDS
        )
        head = _head(stream)
        epoch = head.epoch if head is not None else new_epoch()
        seq = head.seq + 1 if head is not None else 1
        moved = HistoryItem(stream, HEAD, epoch=epoch, seq=seq, ttl=head_until)
        head_condition = (
            HistoryItem.key.does_not_exist()
            if head is None
            else (HistoryItem.seq == head.seq) & (HistoryItem.epoch == head.epoch)
        )
        marker = HistoryItem(stream, MESSAGE_ID + message_id, epoch=epoch, seq=seq, ttl=kept_until)
        frame = frame_for(seq)
        kept = HistoryItem(
            stream,
            message_key(seq),
            epoch=epoch,
            seq=seq,
            message_id=message_id,
            frame=frame.decode(),
            ttl=kept_until,
        )
        try:
            # One transaction, conditions in this order: the id is new, the head is as read.
            with TransactWrite(connection=transaction_connection()) as transaction:
                transaction.save(marker, condition=HistoryItem.key.does_not_exist())
                transaction.save(moved, condition=head_condition)
                transaction.save(kept)
        except TransactWriteError as exc:
            reasons = _cancellation_codes(exc)
            if reasons[:1] == [_CONDITION_FAILED]:  # the id's marker: placed before
                earlier = _earlier(stream, message_id, frame_for)
                if earlier is not None:
                    return earlier
            continue  # the head moved (or the transaction collided): read it again
        except PynamoDBException as exc:
            raise StorageUnavailable("could not append to the stream") from exc
        return Placed(Position(epoch, seq), frame)
    raise StorageUnavailable("the stream kept moving; try again")


@dataclass(frozen=True)
class Span:
    """Messages ``after`` < seq <= ``upto`` of one epoch, read for a replay."""

    stream: str
    epoch: str
    after: int
    upto: int


def read(span: Span, *, now_ms: int, max_bytes: int) -> list[Kept] | None:
    """The kept messages of ``span``, in seq order; None when one of them is missing (its age
    passed, or it belongs to an older epoch) or they add up to more than ``max_bytes``: the
    history does not hold the whole span, and a replay of part of it would hide a gap.

    Reads only the span (a key range), however long the stream's history is."""
    if span.upto <= span.after:
        return []
    condition = HistoryItem.key.between(message_key(span.after + 1), message_key(span.upto))
    found: list[Kept] = []
    total = 0
    expected = span.after + 1
    try:
        for item in HistoryItem.query(span.stream, condition, consistent_read=True):
            live = item.ttl is None or item.ttl.timestamp() * 1000 > now_ms
            if item.frame is None or item.seq != expected or item.epoch != span.epoch or not live:
                return None  # a message without its frame is missing too
            frame = item.frame.encode()
            total += len(frame)
            if total > max_bytes:
                return None
            found.append(Kept(expected, frame))
            expected += 1
    except PynamoDBException as exc:
        raise StorageUnavailable("could not read the stream's history") from exc
    return found if expected == span.upto + 1 else None


def _earlier(stream: str, message_id: str, frame_for: Callable[[int], bytes]) -> Placed | None:
    """Where a message appended before went, and the frame kept for it (made again only if
    that item's age passed and DynamoDB deleted it)."""
    marker = _read(stream, MESSAGE_ID + message_id)
    if marker is None or marker.seq is None:
        return None
    seq = int(marker.seq)
    kept = _read(stream, message_key(seq))
    frame = kept.frame.encode() if kept is not None and kept.frame else frame_for(seq)
    return Placed(Position(str(marker.epoch), seq), frame)


def _head(stream: str) -> Position | None:
    item = _read(stream, HEAD)
    if item is None or item.epoch is None or item.seq is None:
        return None
    return Position(item.epoch, int(item.seq))


def _read(stream: str, key: str) -> HistoryItem | None:
    try:
        return HistoryItem.get(stream, key, consistent_read=True)
    except HistoryItem.DoesNotExist:
        return None
    except PynamoDBException as exc:
        raise StorageUnavailable("could not read the stream") from exc


def _cancellation_codes(exc: TransactWriteError) -> list[str | None]:
    if exc.cause_response_code != "TransactionCanceledException":
        raise StorageUnavailable("could not append to the stream") from exc
    return [reason.code if reason else None for reason in exc.cancellation_reasons]


def _at(now_ms: int) -> datetime:
    return datetime.fromtimestamp(now_ms / 1000, tz=UTC)
