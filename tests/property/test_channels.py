"""Channels under arbitrary input: names, token grants, subscribe frames, and presence counts
through any sequence of joins and leaves of one user's connections (and under threads)."""

from __future__ import annotations

import json
import random
import re
import threading
import time
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.generate import CHANNEL_ERRORS
from tests.support import add_connection
from wspush.channels import subscriptions
from wspush.channels.names import Channel, granted, parse_channel
from wspush.clock import now_ms
from wspush.errors import ChannelRefused
from wspush.settings import get_settings
from wspush.store import channels as store
from wspush.store import connections

VALID = re.compile(r"[a-z0-9-]{1,32}:[A-Za-z0-9._~-]{1,128}")
namespaces = st.from_regex(r"[a-z0-9-]{1,32}", fullmatch=True)
names = st.from_regex(r"[A-Za-z0-9._~-]{1,128}", fullmatch=True)


@given(st.one_of(st.text(max_size=200), st.integers(), st.none(), st.lists(st.text())))
def test_any_value_is_a_channel_name_or_invalid_channel(value: Any) -> None:
    # Given anything a frame or an envelope may carry
    try:
        channel = parse_channel(value)
    except ChannelRefused as exc:
        refused: ChannelRefused | None = exc
    else:
        refused = None
    if refused is not None:
        # Then it is refused with the one code, and what is echoed stays short
        assert refused.code == "invalid_channel"
        assert refused.channel is None or len(refused.channel) <= 161
        assert not (isinstance(value, str) and VALID.fullmatch(value))
    else:
        # Or it is exactly a valid name, given back unchanged
        assert isinstance(value, str)
        assert VALID.fullmatch(value)
        assert str(channel) == value


@given(namespaces, names, st.lists(st.text(max_size=40), max_size=8))
def test_a_grant_opens_exactly_its_channel_or_its_namespace(
    namespace: str, name: str, grants: list[str]
) -> None:
    # Given a channel and the grants of some token
    channel = Channel(namespace, name)
    # Then it is granted exactly when a grant names it or its namespace's wildcard
    expected = f"{namespace}:{name}" in grants or f"{namespace}:*" in grants
    assert granted(channel, grants) is expected
    # And no other pattern opens it
    assert not granted(channel, [g for g in grants if g not in (str(channel), f"{namespace}:*")])


frames = st.one_of(
    st.text(max_size=300),
    st.dictionaries(
        st.sampled_from(["action", "channel", "ref", "after", "since", "x"]),
        st.one_of(
            st.sampled_from(["subscribe", "unsubscribe", "presence", "room:1", "lobby:1"]),
            st.text(max_size=80),
            st.integers(),
            st.none(),
            st.lists(st.integers(), max_size=2),
        ),
        max_size=5,
    ).map(json.dumps),
)


@pytest.mark.usefixtures("aws")
@settings(max_examples=150, deadline=None)
@given(frames)
def test_every_channel_frame_gets_one_reply_of_the_contracts_shape(body: str) -> None:
    # Given an open connection and any frame reaching a channel route
    if connections.get("c-any") is None:
        add_connection("c-any", "alice")
    # When it is handled
    reply = json.loads(subscriptions.handle("c-any", body, get_settings(), now_ms=now_ms()))
    # Then the reply is one frame: a known reply type, or an error with a code and a message
    assert {"type", "data", "id", "ts"} <= reply.keys()
    assert reply["type"] in {"subscribed", "unsubscribed", "presence", "error"}
    if reply["type"] == "error":
        # (each code one the error frame's schema lists)
        assert reply["data"]["code"] in {"bad_frame", *CHANNEL_ERRORS}
        assert reply["data"]["message"]
    # And a ref, when valid, is echoed
    try:
        sent = json.loads(body)
    except ValueError:
        return
    ref = sent.get("ref") if isinstance(sent, dict) else None
    action = sent.get("action") if isinstance(sent, dict) else None
    if isinstance(ref, str) and len(ref) <= 64 and action in subscriptions.ACTIONS:
        assert reply.get("ref") == ref
    # (the connection's channel count stays within its limit whatever was sent)
    assert len(store.channels_of("c-any")) <= get_settings().max_channels_per_connection


CONNECTIONS = ["a-1", "a-2", "a-3"]
steps = st.lists(
    st.tuples(st.sampled_from(["join", "leave", "close"]), st.sampled_from(CONNECTIONS)),
    max_size=14,
)


@pytest.mark.usefixtures("aws")
@settings(max_examples=60, deadline=None)
@given(steps)
def test_presence_follows_any_sequence_of_one_users_joins_and_leaves(
    sequence: list[tuple[str, str]],
) -> None:
    # Given alice's three connections and a fresh presence channel
    channel = f"lobby:{uuid.uuid4().hex[:12]}"
    for cid in CONNECTIONS:
        if connections.get(cid) is None:
            add_connection(cid, "alice")
    inside: set[str] = set()
    joins = leaves = 0
    # When her connections join, leave and end (their subscriptions ending with them) in
    # this order
    for step, cid in sequence:
        if step == "join":
            record = connections.get(cid)
            assert record is not None
            first = store.subscribe(
                record,
                channel,
                expires=connections.expiry(record.connected_at, 7_800),
                max_channels=1_000,
                presence=store.Presence(None, 10),
            )
            joins += first
            assert first == (not inside)
            inside.add(cid)
        else:
            ended = store.unsubscribe(cid, channel, connection_open=step == "leave")
            if ended is not None:
                leaves += ended[1]
                assert ended[1] == (inside == {cid})
            assert (ended is not None) == (cid in inside)
            inside.discard(cid)
    # Then she is a member exactly while a connection is in, counted once, and every join
    # was followed by one leave (or she is still in)
    page = store.members(channel, limit=10)
    assert page.count == (1 if inside else 0)
    assert [(m.user_id, m.connections) for m in page.members] == (
        [("alice", len(inside))] if inside else []
    )
    assert joins - leaves == (1 if inside else 0)
    for cid in CONNECTIONS:  # leave the rows as they were for the next example
        store.unsubscribe(cid, channel, connection_open=True)


@pytest.mark.usefixtures("aws")
def test_one_users_connections_joining_and_leaving_at_once_keep_the_count_right(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given alice's eight connections, each DynamoDB call atomic (moto is not thread-safe; on
    # AWS each is too) while threads interleave freely between them: between one writer's
    # read of the member and its transaction, another writer commits
    one_at_a_time = threading.Lock()
    cancelled: list[int] = []

    def atomic(call: Any, counting: bool = False) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            time.sleep(random.uniform(0, 0.002))
            with one_at_a_time:
                try:
                    return call(*args, **kwargs)
                except store._Cancelled:
                    if counting:
                        cancelled.append(1)
                    raise

        return run

    monkeypatch.setattr(store, "_read", atomic(store._read))
    monkeypatch.setattr(store, "_commit", atomic(store._commit, counting=True))
    monkeypatch.setattr(connections, "get", atomic(connections.get))
    ids = [f"a-{index}" for index in range(8)]
    for cid in ids:
        add_connection(cid, "alice")
    events: list[bool] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def join_then_leave(cid: str) -> None:
        try:
            record = connections.get(cid)
            assert record is not None
            for _ in range(3):
                first = store.subscribe(
                    record,
                    "lobby:race",
                    expires=connections.expiry(record.connected_at, 7_800),
                    max_channels=10,
                    presence=store.Presence(None, 10),
                )
                ended = store.unsubscribe(cid, "lobby:race", connection_open=True)
                with lock:
                    events.extend([first] if first else [])
                    events.extend([False] if ended and ended[1] else [])
        except BaseException as exc:
            errors.append(exc)

    # When all of them join and leave the same channel three times, at the same time
    threads = [threading.Thread(target=join_then_leave, args=(cid,)) for cid in ids]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # Then writers did collide (and read again), nothing failed, every first join had its
    # last leave, and the channel is empty
    assert cancelled
    assert errors == []
    assert events.count(True) == events.count(False) >= 1
    page = store.members("lobby:race", limit=10)
    assert (page.count, page.members) == (0, [])
