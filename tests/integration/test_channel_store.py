"""The channels table under moto, through ``store.channels``: what a subscription and a
presence member store, what ending them leaves, writers racing between a read and a
transaction, the online set, subscriber pages, and DynamoDB failing."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest

from tests.conftest import CHANNELS_TABLE, REGION, TABLE
from tests.fakes.dynamodb import READS, DynamoDBFaults, without_retry_backoff
from wspush.errors import ChannelRefused, StorageUnavailable
from wspush.store import channels as store
from wspush.store import connections
from wspush.store.connections import ConnectionRecord

pytestmark = pytest.mark.usefixtures("users")

EXPIRES = datetime(2031, 1, 2, 3, 4, 5, tzinfo=UTC)
LATER = datetime(2031, 1, 2, 4, 4, 5, tzinfo=UTC)
MAX_CHANNELS = 5


def record(connection_id: str) -> ConnectionRecord:
    found = connections.get(connection_id)
    assert found is not None
    return found


def subscribe(
    connection_id: str,
    channel: str,
    *,
    presence: store.Presence | None = None,
    expires: datetime = EXPIRES,
) -> bool:
    return store.subscribe(
        record(connection_id),
        channel,
        expires=expires,
        max_channels=MAX_CHANNELS,
        presence=presence,
    )


def join(connection_id: str, channel: str = "lobby:1", *, max_members: int = 10) -> bool:
    return subscribe(connection_id, channel, presence=store.Presence(None, max_members))


def item(channel: str, key: str) -> dict[str, Any] | None:
    """A channels table item as DynamoDB holds it."""
    found = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=CHANNELS_TABLE, Key={"channel": {"S": channel}, "key": {"S": key}}
    )
    stored: dict[str, Any] | None = found.get("Item")
    return stored


def channel_count(connection_id: str) -> str | None:
    """The channel count on a connection's row."""
    row = boto3.client("dynamodb", region_name=REGION).get_item(
        TableName=TABLE, Key={"connectionId": {"S": connection_id}}
    )["Item"]
    count: str | None = row.get("channels", {}).get("N")
    return count


def member_connections(channel: str, user_id: str) -> set[str] | None:
    member = item(channel, "u#" + user_id)
    return None if member is None else set(member["connections"]["SS"])


def change_member(channel: str, user_id: str, *, add: str = "", remove: str = "") -> None:
    """Another writer adding or removing a connection of a member, outside the store."""
    client = boto3.client("dynamodb", region_name=REGION)
    key = {"channel": {"S": channel}, "key": {"S": "u#" + user_id}}
    if add:
        client.update_item(
            TableName=CHANNELS_TABLE,
            Key=key,
            UpdateExpression="ADD connections :c",
            ExpressionAttributeValues={":c": {"SS": [add]}},
        )
    if remove:
        client.update_item(
            TableName=CHANNELS_TABLE,
            Key=key,
            UpdateExpression="DELETE connections :c",
            ExpressionAttributeValues={":c": {"SS": [remove]}},
        )


def after_reading(
    monkeypatch: pytest.MonkeyPatch, key: str, then: Callable[[], None], *, times: int = 1
) -> list[str]:
    """Run ``then`` right after the store reads ``key`` (the first ``times`` reads): another
    writer getting there between the read and the transaction. Answers the keys read."""
    real_read = store._read
    reads: list[str] = []

    def read(channel: str, read_key: str, **options: Any) -> Any:
        found = real_read(channel, read_key, **options)
        reads.append(read_key)
        if read_key == key and reads.count(key) <= times:
            then()
        return found

    monkeypatch.setattr(store, "_read", read)
    return reads


def pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The pauses taken before retries (not slept)."""
    taken: list[float] = []
    monkeypatch.setattr(time, "sleep", taken.append)
    return taken


@pytest.fixture
def faults(monkeypatch: pytest.MonkeyPatch) -> DynamoDBFaults:
    without_retry_backoff(monkeypatch)
    return DynamoDBFaults().install(monkeypatch)


# Subscriptions


def test_a_subscription_stores_its_connection_and_counts_on_its_row() -> None:
    # Given bob's open connection on pc
    # When it subscribes to room:1
    first = subscribe("b-pc", "room:1")
    # Then the subscription holds what fan-out needs, lives as long as the connection, is not
    # a presence member, and the connection's row counts one channel
    opened = record("b-pc").connected_at
    assert first is False
    assert item("room:1", "c#b-pc") == {
        "channel": {"S": "room:1"},
        "key": {"S": "c#b-pc"},
        "connectionId": {"S": "b-pc"},
        "userId": {"S": "bob"},
        "platform": {"S": "pc"},
        "connectedAt": {"N": str(opened)},
        "present": {"BOOL": False},
        "ttl": {"N": str(int(EXPIRES.timestamp()))},
    }
    assert item("room:1", "u#bob") is None
    assert channel_count("b-pc") == "1"
    assert store.is_subscribed("b-pc", "room:1") is True
    assert store.is_subscribed("b-pc", "room:2") is False
    assert store.is_subscribed("c-web", "room:1") is False


def test_subscribing_again_changes_nothing_and_is_no_first_join() -> None:
    # Given bob subscribed to room:1 and a member of lobby:1
    subscribe("b-pc", "room:1")
    assert join("b-pc") is True
    # When he subscribes to both again
    again = [subscribe("b-pc", "room:1"), join("b-pc")]
    # Then neither is a first join, and nothing is counted twice
    assert again == [False, False]
    assert channel_count("b-pc") == "2"
    assert store.members("lobby:1", limit=10).count == 1
    assert member_connections("lobby:1", "bob") == {"b-pc"}


def test_a_first_join_stores_the_member_its_info_and_the_count() -> None:
    # Given carol, with member info
    # When she joins lobby:1
    first = subscribe("c-web", "lobby:1", presence=store.Presence({"name": "Carol"}, 10))
    # Then it is her first join: she is a member with her connection and info, as long-lived
    # as it, the channel counts one member, and her subscription says it is a member's
    assert first is True
    assert item("lobby:1", "u#carol") == {
        "channel": {"S": "lobby:1"},
        "key": {"S": "u#carol"},
        "userId": {"S": "carol"},
        "connections": {"SS": ["c-web"]},
        "info": {"S": '{"name": "Carol"}'},
        "ttl": {"N": str(int(EXPIRES.timestamp()))},
    }
    assert item("lobby:1", "#meta") == {
        "channel": {"S": "lobby:1"},
        "key": {"S": "#meta"},
        "members": {"N": "1"},
    }
    assert item("lobby:1", "c#c-web")["present"] == {"BOOL": True}  # type: ignore[index]


def test_a_second_connection_joins_the_member_and_extends_its_life() -> None:
    # Given alice a member of lobby:1 through her pc
    assert join("a-pc") is True
    # When her mobile joins too, expiring later
    first = subscribe("a-mobile", "lobby:1", presence=store.Presence(None, 10), expires=LATER)
    # Then it is not a first join: the member holds both connections, lives as long as the
    # later one, and the channel still counts one member
    assert first is False
    member = item("lobby:1", "u#alice")
    assert member is not None
    assert set(member["connections"]["SS"]) == {"a-pc", "a-mobile"}
    assert member["ttl"] == {"N": str(int(LATER.timestamp()))}
    assert store.members("lobby:1", limit=10).count == 1


def test_a_connection_subscribes_to_its_maximum_and_is_refused_one_more() -> None:
    # Given bob subscribed to one channel fewer than the maximum
    for index in range(MAX_CHANNELS - 1):
        subscribe("b-pc", f"room:{index}")
    # When he subscribes to the last one allowed, then one more
    subscribe("b-pc", "room:last")
    with pytest.raises(ChannelRefused) as refused:
        subscribe("b-pc", "room:more")
    # Then the last one allowed is held, and the one more is refused with the maximum named
    assert store.is_subscribed("b-pc", "room:last")
    assert (refused.value.code, refused.value.message, refused.value.channel) == (
        "too_many_channels",
        "a connection may subscribe to at most 5 channels",
        "room:more",
    )
    assert channel_count("b-pc") == "5"
    assert store.is_subscribed("b-pc", "room:more") is False


def test_a_connection_whose_row_is_gone_is_refused_as_closing() -> None:
    # Given bob's connection read, then its row deleted (it is closing)
    bob = record("b-pc")
    connections.delete("b-pc")
    # When it subscribes
    with pytest.raises(ChannelRefused) as refused:
        store.subscribe(bob, "room:1", expires=EXPIRES, max_channels=MAX_CHANNELS, presence=None)
    # Then it is refused as closing, and nothing is stored
    assert (refused.value.code, refused.value.message, refused.value.channel) == (
        "unknown_connection",
        "this connection is closing",
        "room:1",
    )
    assert item("room:1", "c#b-pc") is None


def test_a_presence_channel_takes_members_up_to_its_maximum() -> None:
    # Given lobby:1 allows 2 members and has one
    assert join("a-pc", max_members=2) is True
    # When a second user joins, then a third
    second = join("b-pc", max_members=2)
    with pytest.raises(ChannelRefused) as refused:
        join("c-web", max_members=2)
    # Then the second is a member, the third is refused with the maximum named
    assert second is True
    assert (refused.value.code, refused.value.message, refused.value.channel) == (
        "channel_full",
        "the channel has its maximum of 2 members",
        "lobby:1",
    )
    assert store.members("lobby:1", limit=10).count == 2
    assert item("lobby:1", "c#c-web") is None
    assert channel_count("c-web") is None


def test_a_join_racing_the_members_last_leave_makes_a_first_join(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given alice a member of lobby:1 through her pc, and her mobile joining: the pc leaves
    # between the mobile's read of the member and its transaction
    join("a-pc")
    after_reading(
        monkeypatch,
        "u#alice",
        lambda: store.unsubscribe("a-pc", "lobby:1", connection_open=True) and None,
    )
    taken = pauses(monkeypatch)
    # When the mobile's join runs
    first = join("a-mobile")
    # Then it read again after a pause and made the member anew: a first join, counted once
    assert first is True
    assert len(taken) == 1
    assert 0 <= taken[0] <= 0.01
    assert member_connections("lobby:1", "alice") == {"a-mobile"}
    assert store.members("lobby:1", limit=10).count == 1


def test_a_join_whose_member_keeps_changing_gives_up_after_ten_attempts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given another writer that creates or removes alice's member after each read of it
    def flip() -> None:
        if item("lobby:1", "u#alice") is None:
            change_member("lobby:1", "alice", add="a-other")
        else:
            boto3.client("dynamodb", region_name=REGION).delete_item(
                TableName=CHANNELS_TABLE,
                Key={"channel": {"S": "lobby:1"}, "key": {"S": "u#alice"}},
            )

    reads = after_reading(monkeypatch, "u#alice", flip, times=100)
    taken = pauses(monkeypatch)
    # When alice's pc joins lobby:1
    with pytest.raises(StorageUnavailable) as unavailable:
        join("a-pc")
    # Then it tried ten times, pausing before each retry within a window that doubles from
    # 10 ms up to 100 ms, and says why it gave up; nothing of it is stored
    assert str(unavailable.value) == "the channel's members kept changing; try again"
    assert reads.count("u#alice") == 10
    assert len(taken) == 9
    for attempt, pause in enumerate(taken, start=1):
        assert 0 <= pause <= min(0.1, 0.005 * 2**attempt)
    assert item("lobby:1", "c#a-pc") is None
    assert channel_count("a-pc") is None


# Ending subscriptions


def test_unsubscribing_answers_the_subscription_ended_and_uncounts_it() -> None:
    # Given bob subscribed to room:1
    subscribe("b-pc", "room:1")
    # When he unsubscribes, then unsubscribes again
    ended = store.unsubscribe("b-pc", "room:1", connection_open=True)
    again = store.unsubscribe("b-pc", "room:1", connection_open=True)
    # Then the first ends his subscription (he was no member: no presence ends), the second
    # finds none, and his row counts no channel
    assert ended == (store.Subscription("room:1", "bob", False), False)
    assert again is None
    assert item("room:1", "c#b-pc") is None
    assert channel_count("b-pc") == "0"


def test_a_members_connections_leave_one_by_one_until_the_last() -> None:
    # Given alice a member of lobby:1 through two connections
    join("a-pc")
    join("a-mobile")
    # When the pc leaves, then the mobile
    first = store.unsubscribe("a-pc", "lobby:1", connection_open=True)
    assert member_connections("lobby:1", "alice") == {"a-mobile"}
    last = store.unsubscribe("a-mobile", "lobby:1", connection_open=True)
    # Then only the mobile's leaving ends her presence: the member is gone and uncounted
    assert first == (store.Subscription("lobby:1", "alice", True), False)
    assert last == (store.Subscription("lobby:1", "alice", True), True)
    assert item("lobby:1", "u#alice") is None
    assert store.members("lobby:1", limit=10).count == 0


def test_a_subscription_of_a_connection_whose_row_is_gone_still_ends() -> None:
    # Given bob subscribed to room:1 and lobby:1, and his row deleted
    subscribe("b-pc", "room:1")
    join("b-pc")
    connections.delete("b-pc")
    # When his subscriptions end, one as if the connection were open, one knowing it is not
    room = store.unsubscribe("b-pc", "room:1", connection_open=True)
    lobby = store.unsubscribe("b-pc", "lobby:1", connection_open=False)
    # Then both end, the presence with them, and no row is made again to count them
    assert room == (store.Subscription("room:1", "bob", False), False)
    assert lobby == (store.Subscription("lobby:1", "bob", True), True)
    assert store.channels_of("b-pc") == []
    assert connections.get("b-pc") is None
    assert store.members("lobby:1", limit=10).count == 0


def test_a_subscription_ended_by_another_writer_meanwhile_is_not_ended_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given bob in room:1, and his connection's end ending it between his unsubscribe's
    # read and its transaction
    subscribe("b-pc", "room:1")
    other: list[Any] = []
    after_reading(
        monkeypatch,
        "c#b-pc",
        lambda: other.append(store.unsubscribe("b-pc", "room:1", connection_open=True)),
    )
    # When the unsubscribe runs
    ended = store.unsubscribe("b-pc", "room:1", connection_open=True)
    # Then the other writer ended it; this one ended nothing and uncounted nothing
    assert other == [(store.Subscription("room:1", "bob", False), False)]
    assert ended is None
    assert channel_count("b-pc") == "0"


def test_two_connections_leaving_at_once_end_the_presence_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given alice a member through two connections; the mobile leaves between the pc's read
    # of the member and its transaction
    join("a-pc")
    join("a-mobile")
    other: list[Any] = []
    after_reading(
        monkeypatch,
        "u#alice",
        lambda: other.append(store.unsubscribe("a-mobile", "lobby:1", connection_open=True)),
    )
    # When the pc's unsubscribe runs
    ended = store.unsubscribe("a-pc", "lobby:1", connection_open=True)
    # Then the mobile left first, and the pc, read again, was the last: presence ends once
    assert other == [(store.Subscription("lobby:1", "alice", True), False)]
    assert ended == (store.Subscription("lobby:1", "alice", True), True)
    assert item("lobby:1", "u#alice") is None
    assert store.members("lobby:1", limit=10).count == 0
    assert channel_count("a-pc") == channel_count("a-mobile") == "0"


def test_a_last_leave_racing_a_join_is_not_the_last(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given alice a member through her pc; her mobile joins between the pc's read of the
    # member and its transaction
    join("a-pc")
    joined: list[bool] = []
    after_reading(monkeypatch, "u#alice", lambda: joined.append(join("a-mobile")))
    # When the pc's unsubscribe runs
    ended = store.unsubscribe("a-pc", "lobby:1", connection_open=True)
    # Then the pc's leave, read again, was not the last: alice stays, through her mobile
    assert joined == [False]
    assert ended == (store.Subscription("lobby:1", "alice", True), False)
    assert member_connections("lobby:1", "alice") == {"a-mobile"}
    assert store.members("lobby:1", limit=10).count == 1
    assert channel_count("a-pc") == "0"


def test_a_leave_whose_member_keeps_changing_gives_up_after_ten_attempts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given alice a member through her pc, and another writer adding or removing one more
    # connection of hers after each read of the member
    join("a-pc")

    def flip() -> None:
        if member_connections("lobby:1", "alice") == {"a-pc"}:
            change_member("lobby:1", "alice", add="a-other")
        else:
            change_member("lobby:1", "alice", remove="a-other")

    reads = after_reading(monkeypatch, "u#alice", flip, times=100)
    taken = pauses(monkeypatch)
    # When the pc unsubscribes
    with pytest.raises(StorageUnavailable) as unavailable:
        store.unsubscribe("a-pc", "lobby:1", connection_open=True)
    # Then it tried ten times, pausing before each retry as a join does, and says why it
    # gave up; the subscription stands
    assert str(unavailable.value) == "the channel's members kept changing; try again"
    assert reads.count("u#alice") == 10
    assert len(taken) == 9
    for attempt, pause in enumerate(taken, start=1):
        assert 0 <= pause <= min(0.1, 0.005 * 2**attempt)
    assert store.is_subscribed("a-pc", "lobby:1")
    assert channel_count("a-pc") == "1"


# Online and offline


def test_a_user_is_online_from_their_first_connection_to_their_last() -> None:
    # Given alice with no connection recorded online
    # When her pc, her mobile, and her pc again are added
    added = [
        store.came_online("alice", "a-pc", expires=EXPIRES),
        store.came_online("alice", "a-mobile", expires=LATER),
        store.came_online("alice", "a-pc", expires=LATER),
    ]
    online = item("#user:alice", "#online")
    # And her pc, her pc again, and her mobile are removed
    removed = [
        store.went_offline("alice", "a-pc"),
        store.went_offline("alice", "a-pc"),
        store.went_offline("alice", "a-mobile"),
    ]
    # Then only her first connection made her come online and only her last went offline;
    # the set lives as long as its latest connection, and nothing is left of it
    assert added == [True, False, False]
    assert online is not None
    assert set(online["connections"]["SS"]) == {"a-pc", "a-mobile"}
    assert online["ttl"] == {"N": str(int(LATER.timestamp()))}
    assert removed == [False, False, True]
    assert item("#user:alice", "#online") is None
    assert store.went_offline("alice", "a-mobile") is False


def test_a_connection_added_online_twice_is_its_users_coming_online_once() -> None:
    # Given bob online through his pc alone
    assert store.came_online("bob", "b-pc", expires=EXPIRES) is True
    # When his pc is added again (a redelivered event)
    again = store.came_online("bob", "b-pc", expires=EXPIRES)
    # Then he does not come online again
    assert again is False


def last_removal_racing(
    monkeypatch: pytest.MonkeyPatch, meanwhile: Callable[[], None]
) -> list[bool]:
    """alice online through her pc and mobile; the mobile is removed just before the pc is
    taken out of the set, and ``meanwhile`` runs just before the emptied item is deleted.
    Answers the pc's removal."""
    store.came_online("alice", "a-pc", expires=EXPIRES)
    store.came_online("alice", "a-mobile", expires=EXPIRES)
    real_update, real_delete = store._ChannelItem.update, store._ChannelItem.delete
    updated: list[bool] = []

    def update(self: Any, *args: Any, **kwargs: Any) -> Any:
        monkeypatch.setattr(store._ChannelItem, "update", real_update)
        assert store.went_offline("alice", "a-mobile") is False
        answer = real_update(self, *args, **kwargs)
        updated.append(True)
        return answer

    def delete(self: Any, *args: Any, **kwargs: Any) -> Any:
        if updated:  # the pc's delete of the emptied item
            monkeypatch.setattr(store._ChannelItem, "delete", real_delete)
            meanwhile()
        return real_delete(self, *args, **kwargs)

    monkeypatch.setattr(store._ChannelItem, "update", update)
    monkeypatch.setattr(store._ChannelItem, "delete", delete)
    return [store.went_offline("alice", "a-pc")]


def test_the_last_two_connections_leaving_at_once_make_the_user_go_offline_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given alice's last two connections leaving at once: the mobile is removed just before
    # the pc is taken out of the set
    # When the pc's removal runs
    offline = last_removal_racing(monkeypatch, lambda: None)
    # Then the mobile's removal left the pc (the helper checks it answered False); the pc's
    # was the last: she went offline once, and the emptied item is removed
    assert offline == [True]
    assert item("#user:alice", "#online") is None


def test_a_connection_coming_online_as_the_last_one_leaves_is_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given alice's last two connections leaving at once, and her tablet coming online just
    # before the emptied item is deleted
    came: list[bool] = []
    # When the pc's removal runs
    offline = last_removal_racing(
        monkeypatch, lambda: came.append(store.came_online("alice", "a-tab", expires=EXPIRES))
    )
    # Then she went offline, and came online again with the tablet, which is kept
    assert offline == [True]
    assert came == [True]
    online = item("#user:alice", "#online")
    assert online is not None
    assert online["connections"] == {"SS": ["a-tab"]}


def test_an_emptied_online_item_that_cannot_be_deleted_is_unavailable(
    monkeypatch: pytest.MonkeyPatch, faults: DynamoDBFaults
) -> None:
    # Given alice's last two connections leaving at once, and the delete of her emptied
    # online item failing
    def fail_the_delete() -> None:
        faults.fail("DeleteItem", table=CHANNELS_TABLE)

    # When the pc's removal runs
    # Then it says the item could not be removed
    with pytest.raises(StorageUnavailable) as caught:
        last_removal_racing(monkeypatch, fail_the_delete)
    assert str(caught.value) == "could not remove the user's online item"


# Subscriber pages


def test_subscribers_follow_pages_to_the_end_and_skip_expired_subscriptions(
    faults: DynamoDBFaults,
) -> None:
    # Given five subscriptions of room:1, one of them (first of its page) expiring at exactly
    # this moment and one a millisecond later
    now = int(EXPIRES.timestamp()) * 1000
    for cid in ("a-pc", "a-mobile", "c-web"):
        subscribe(cid, "room:1", expires=LATER)
    subscribe("b-pc", "room:1", expires=EXPIRES)
    connections.save(ConnectionRecord("d-tv", "dave", "tv", 7, 7), ttl_seconds=7_800)
    subscribe("d-tv", "room:1", expires=datetime.fromtimestamp(now / 1000 + 1, UTC))
    # When they are read two by two at that moment
    found = list(store.subscribers("room:1", now_ms=now, page_size=2))
    # Then every live one is read once, in connection id order, as a post needs it, in three
    # queries; the one expiring now is not
    assert faults.calls["Query"] == 3
    assert [(r.connection_id, r.platform, r.connected_at) for r in found] == [
        ("a-mobile", "mobile", record("a-mobile").connected_at),
        ("a-pc", "pc", record("a-pc").connected_at),
        ("c-web", "web", record("c-web").connected_at),
        ("d-tv", "tv", 7),
    ]
    assert all(r.last_seen_at == r.connected_at and r.user_id == "" for r in found)


def test_a_subscriber_page_holds_at_most_its_limit_and_says_where_the_next_starts() -> None:
    # Given three subscriptions of room:1, and a member of lobby:1
    for cid in ("a-pc", "b-pc", "c-web"):
        subscribe(cid, "room:1")
    join("a-mobile")
    now = int(EXPIRES.timestamp()) * 1000 - 1
    # When room:1 is read two at a time, and lobby:1 whole
    first = store.subscriber_page("room:1", now_ms=now, limit=2)
    second = store.subscriber_page("room:1", now_ms=now, limit=2, after=first.after)
    lobby = store.subscriber_page("lobby:1", now_ms=now, limit=None)
    # Then the pages split the subscriptions, the last one says none follow, and a channel's
    # members are not read as its subscribers
    assert [r.connection_id for r in first.records] == ["a-pc", "b-pc"]
    assert first.after == "b-pc"
    assert [r.connection_id for r in second.records] == ["c-web"]
    assert second.after is None
    assert [r.connection_id for r in lobby.records] == ["a-mobile"]
    assert lobby.after is None


# DynamoDB failing


def unavailable(call: Callable[[], object]) -> str:
    with pytest.raises(StorageUnavailable) as caught:
        call()
    return str(caught.value)


def test_a_channels_table_that_cannot_be_read_is_unavailable(faults: DynamoDBFaults) -> None:
    # Given bob subscribed to room:1, and the channels table failing every read
    subscribe("b-pc", "room:1")
    faults.fail("GetItem", *READS, table=CHANNELS_TABLE)
    # When the store reads it
    # Then each read says what could not be done
    assert unavailable(lambda: store.is_subscribed("b-pc", "room:1")) == (
        "could not read the channels table"
    )
    assert unavailable(lambda: store.channels_of("b-pc")) == (
        "could not query the connection's channels"
    )
    assert unavailable(lambda: store.subscriber_page("room:1", now_ms=0, limit=None)) == (
        "could not query the channel's subscribers"
    )


def test_a_subscription_that_cannot_be_written_is_unavailable(faults: DynamoDBFaults) -> None:
    # Given DynamoDB failing every transaction
    faults.fail("TransactWriteItems")
    # When bob subscribes
    # Then the write is unavailable, not refused
    assert unavailable(lambda: subscribe("b-pc", "room:1")) == "could not write the subscription"


def test_an_online_set_that_cannot_be_written_is_unavailable(faults: DynamoDBFaults) -> None:
    # Given alice online through two connections, then the channels table failing writes
    store.came_online("alice", "a-pc", expires=EXPIRES)
    store.came_online("alice", "a-mobile", expires=EXPIRES)
    faults.fail("UpdateItem", table=CHANNELS_TABLE)
    # When a connection is added, and one removed
    # Then each says what could not be recorded
    assert unavailable(lambda: store.came_online("alice", "a-3", expires=EXPIRES)) == (
        "could not record the user online"
    )
    assert unavailable(lambda: store.went_offline("alice", "a-pc")) == (
        "could not record the user offline"
    )
    faults.clear()
    faults.fail("DeleteItem", table=CHANNELS_TABLE)
    assert unavailable(lambda: store.went_offline("alice", "a-pc")) == (
        "could not record the user offline"
    )
