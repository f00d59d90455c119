"""A message's place in the streams that keep it, given before it is delivered.

A message to a channel whose namespace keeps history gets the channel's next ``seq``; a
message to users (user history on) gets each user's next ``seq``. The frame a recipient
receives carries it; the history keeps that exact frame for replays. A message handled again
(SQS redelivers, a send is retried) finds the place it was given (``store.history.append``),
and a message re-queued after its place was given carries it along (``wspush-seq``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from wspush.contract.messages import MAX_CLIENT_FRAME_BYTES, SEQ_ROOM, Message, with_seq
from wspush.errors import InvalidMessage
from wspush.history.streams import Stream, channel_stream, user_stream
from wspush.observability import metrics
from wspush.settings import Settings
from wspush.store import history

_APPEND_WORKERS = 8  # users of one user list whose streams are written at once


@dataclass(frozen=True)
class Stamped:
    """The message (its frame carrying its ``seq`` when it went into one stream) and, for a
    list of users, each user's ``seq``."""

    message: Message
    user_seqs: Mapping[str, int] = field(default_factory=dict)


def kept_in(message: Message, settings: Settings) -> list[tuple[str, Stream]]:
    """The streams a message goes into: (user id or channel, stream). A message narrowed by
    ``platform`` or ``excludeConnectionIds`` goes into none: it is not for every connection
    of its users or channel, and a replay must never bring it to one it left out."""
    target = message.target
    if target.platforms is not None or target.exclude_connection_ids:
        return []
    if target.channel is not None:
        stream = channel_stream(target.channel, settings)
        return [(target.channel, stream)] if stream is not None else []
    found = [(user, user_stream(user, settings)) for user in target.user_ids]
    return [(user, stream) for user, stream in found if stream is not None]


def check_room(message: Message, settings: Settings) -> None:
    """A message that will be kept must leave room in its frame for its ``seq``."""
    if message.seq is not None or not kept_in(message, settings):
        return
    if len(message.frame) + SEQ_ROOM > MAX_CLIENT_FRAME_BYTES:
        raise InvalidMessage(
            "payload_too_large",
            f"payload is {len(message.frame)} bytes once serialized; a message kept for "
            f"recovery may be at most {MAX_CLIENT_FRAME_BYTES - SEQ_ROOM} bytes (its frame "
            "also carries its seq)",
            "payload",
        )


def stamp(message: Message, settings: Settings, *, now_ms: int) -> Stamped:
    """Give the message its place in each of its streams (raises ``StorageUnavailable``:
    nothing was delivered yet, the whole message can be tried again)."""
    if message.seq is not None:
        return Stamped(message)  # placed before it was re-queued
    streams = kept_in(message, settings)
    if not streams:
        return Stamped(message)

    def place(stream: Stream) -> history.Placed:
        return history.append(
            stream.key,
            message.id,
            lambda seq: with_seq(message.frame, seq),
            stream.history,
            now_ms=now_ms,
        )

    if len(streams) == 1:  # a channel, or one user: the frame itself carries the seq
        placed = place(streams[0][1])
        metrics.add_metric(name="MessagesKept", unit="Count", value=1)
        return Stamped(_as_kept(message, placed))
    with ThreadPoolExecutor(max_workers=min(len(streams), _APPEND_WORKERS)) as pool:
        seqs = [placed.seq for placed in pool.map(place, (stream for _, stream in streams))]
    metrics.add_metric(name="MessagesKept", unit="Count", value=len(streams))
    return Stamped(message, {user: seq for (user, _), seq in zip(streams, seqs, strict=True)})


def _as_kept(message: Message, placed: history.Placed) -> Message:
    """The message as its stream keeps it: its seq, and the frame kept the first time it was
    placed (a send retried later made a new ``ts``; the kept frame's wins, so a replay and
    this delivery are the same bytes)."""
    ts = json.loads(placed.frame)["ts"]  # every frame carries its ts
    return replace(message, frame=placed.frame, seq=placed.seq, ts=ts)
