"""Streams under any sequence of appends, repeated appends and failed writes: seqs have no gap
and no duplicate, and a recovery from any position reads exactly what came after it; and any
``since`` a client sends is a position or ``invalid_since``."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pynamodb.exceptions import TransactWriteError

from wspush.clock import now_ms
from wspush.contract.messages import encode_frame, with_seq
from wspush.errors import ChannelRefused, StorageUnavailable
from wspush.history.streams import MAX_EPOCH_LENGTH, Since
from wspush.settings import History
from wspush.store import history
from wspush.store.history import Span

pytestmark = pytest.mark.usefixtures("aws")

KEEP = History(size=1_000, ttl_seconds=3_600)
# An operation: append a message (ids from a small pool, so some come again), possibly with
# its write refused by DynamoDB.
operations = st.lists(
    st.tuples(st.sampled_from([f"m-{n}" for n in range(8)]), st.booleans()), max_size=25
)


class _Refused(history.TransactWrite):  # type: ignore[misc, name-defined]
    def __exit__(self, *exc: Any) -> None:
        raise TransactWriteError("refused")


@settings(max_examples=30, deadline=None)
@given(steps=operations)
def test_a_stream_has_no_gap_and_no_duplicate_whatever_happens(
    steps: list[tuple[str, bool]], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream = f"u:{uuid.uuid4().hex}"
    expected: dict[str, int] = {}  # what a perfect stream would have given each id
    for message_id, refused in steps:
        # When a message is appended (the write refused, or not)
        frame = encode_frame("t", {"m": message_id}, message_id=message_id, ts=1)
        with monkeypatch.context() as patch:
            if refused:
                patch.setattr(history, "TransactWrite", _Refused)
            try:
                position = history.append(
                    stream, message_id, lambda seq, f=frame: with_seq(f, seq), KEEP,
                    now_ms=now_ms(),
                )  # fmt: skip
            except StorageUnavailable:
                assert refused
                continue
        # Then a new id takes the next seq, an id seen before keeps its own
        expected.setdefault(message_id, len(expected) + 1)
        assert position.seq == expected[message_id]
    head = history.position(stream, now_ms=now_ms())
    assert head.seq == len(expected)
    # And a recovery from any position reads exactly the messages after it, in order
    by_seq = sorted(expected, key=expected.__getitem__)
    for since in range(head.seq + 1):
        kept = history.read(
            Span(stream, head.epoch, since, head.seq), now_ms=now_ms(), max_bytes=10**6
        )
        assert kept is not None
        assert [json.loads(k.frame)["id"] for k in kept] == by_seq[since:]
        assert [json.loads(k.frame)["seq"] for k in kept] == list(range(since + 1, head.seq + 1))


@given(
    st.one_of(
        st.none(),
        st.integers(),
        st.text(max_size=10),
        st.dictionaries(
            st.sampled_from(["epoch", "seq", "x"]),
            st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=70)),
        ),
    )
)
def test_any_since_is_a_position_or_invalid_since(value: Any) -> None:
    try:
        since = Since.parse(value, "room:1")
    except ChannelRefused as exc:
        refused: ChannelRefused | None = exc
    else:
        refused = None
    if refused is not None:
        assert (refused.code, refused.channel) == ("invalid_since", "room:1")
    else:
        assert isinstance(value, dict)
        assert value == {"epoch": since.epoch, "seq": since.seq}
        assert 0 < len(since.epoch) <= MAX_EPOCH_LENGTH
        assert type(since.seq) is int
        assert since.seq >= 0
