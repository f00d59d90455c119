"""The channels table: who is subscribed to which channel, who is present, who is online.

Items under a channel's partition key (its name, ``room:42``):

- ``c#<connectionId>``: a subscription (the connection's user, platform, when it opened, and
  its TTL: a subscription never outlives its connection's row). Fan-out queries these page
  by page; the sparse index ``byConnection`` finds a connection's subscriptions when it ends.
- ``u#<userId>``: a presence member: the set of that user's connections in the channel and
  the info attached when the user joined.
- ``#meta``: the channel's member count.

And under ``#user:<userId>`` (no channel name starts with ``#``), ``#online``: the set of the
user's open connections, for ``user.online`` / ``user.offline``.

The model's keys and presence attributes, and the reading of members, are ``store.presence``'s
(which ``wspush presence`` uses without these settings).

A subscription, the connection's channel count and the presence member change in one
transaction, conditioned on what was read just before and retried when another writer got
there first: a user's first join and last leave are each seen once, however many of their
connections come and go at the same moment. Adding or removing a connection that is already
added or removed changes nothing, so a redelivered event is harmless.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from pynamodb.attributes import (
    BooleanAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
)
from pynamodb.exceptions import (
    DeleteError,
    PynamoDBException,
    TransactWriteError,
    UpdateError,
)
from pynamodb.expressions.condition import size
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex
from pynamodb.models import Model
from pynamodb.transactions import TransactWrite

from wspush.errors import ChannelRefused, StorageUnavailable
from wspush.settings import get_settings
from wspush.store import connections
from wspush.store.connections import (
    ConnectionItem,
    ConnectionRecord,
    pause_before_retry,
    transaction_connection,
)
from wspush.store.presence import (
    MEMBER,
    META,
    ChannelTable,
    MemberPage,
    member_page,
)

SUBSCRIPTION = "c#"
ONLINE = "#online"
USER_PARTITION = "#user:"
_CONDITION_FAILED = "ConditionalCheckFailed"
_CONDITION_FAILED_EXCEPTION = "ConditionalCheckFailedException"
# Another writer changed the same items between the read and the transaction: read again,
# after a short jittered pause that grows with each attempt.
_ATTEMPTS = 10
_PAUSE_BASE_SECONDS = 0.005
_PAUSE_CAP_SECONDS = 0.1


class _ConnectionIndex(GlobalSecondaryIndex["_ChannelItem"]):  # type: ignore[no-untyped-call]
    class Meta:
        index_name = "byConnection"
        projection = AllProjection()

    connection_id = UnicodeAttribute(hash_key=True, attr_name="connectionId")
    channel = UnicodeAttribute(range_key=True, attr_name="channel")


class _ChannelItem(ChannelTable):
    """Keys, members' connections and info, and the member count come from ``ChannelTable``."""

    class Meta(ConnectionItem.Meta):  # the same region, timeouts and retries
        table_name = get_settings().channels_table_name

    # Subscriptions (and ``user_id``)
    connection_id = UnicodeAttribute(null=True, attr_name="connectionId")
    platform = UnicodeAttribute(null=True, attr_name="platform")
    connected_at = NumberAttribute(null=True, attr_name="connectedAt")
    present = BooleanAttribute(null=True, attr_name="present")  # also a presence member
    ttl = TTLAttribute(null=True, attr_name="ttl")
    by_connection = _ConnectionIndex()


@dataclass(frozen=True)
class SubscriberPage:
    records: list[ConnectionRecord]
    after: str | None  # the connection id the next page starts after


@dataclass(frozen=True)
class Subscription:
    channel: str
    user_id: str
    present: bool


@dataclass(frozen=True)
class Presence:
    """What joining a presence channel needs: the member's info and the channel's limit."""

    info: Any
    max_members: int


def subscribe(
    record: ConnectionRecord,
    channel: str,
    *,
    expires: datetime,
    max_channels: int,
    presence: Presence | None,
) -> bool:
    """Subscribe a connection (and, with ``presence``, make its user a member); True when this
    made the user's first join of the channel.

    Subscribing again is not an error and changes nothing. Raises ``ChannelRefused`` with
    ``unknown_connection`` (its row is gone), ``too_many_channels`` or ``channel_full``.
    """
    cid = record.connection_id
    count = ConnectionItem.channels
    for attempt in range(_ATTEMPTS):
        pause_before_retry(
            attempt, base_seconds=_PAUSE_BASE_SECONDS, cap_seconds=_PAUSE_CAP_SECONDS
        )
        member = _read(channel, MEMBER + record.user_id) if presence else None
        writes = [
            _Write(
                ConnectionItem(cid),
                actions=[count.add(1)],
                condition=ConnectionItem.connection_id.exists()
                & (count.does_not_exist() | (count < max_channels)),
            ),
            _Write(
                _ChannelItem(
                    channel,
                    SUBSCRIPTION + cid,
                    connection_id=cid,
                    user_id=record.user_id,
                    platform=record.platform,
                    connected_at=record.connected_at,
                    present=presence is not None,
                    ttl=expires,
                ),
                condition=_ChannelItem.key.does_not_exist(),
            ),
        ]
        if presence is not None:
            writes += _join(channel, record.user_id, cid, member, presence, expires)
        try:
            _commit(writes)
        except _Cancelled as cancelled:
            if cancelled.failed(1):
                return False  # already subscribed
            if cancelled.failed(0):
                raise _connection_refusal(cid, channel, max_channels) from None
            if presence is not None and member is None and cancelled.failed(3):
                raise ChannelRefused(
                    "channel_full",
                    f"the channel has its maximum of {presence.max_members} members",
                    channel,
                ) from None
            continue  # the member changed since it was read
        return presence is not None and member is None
    raise StorageUnavailable("the channel's members kept changing; try again")


def unsubscribe(
    connection_id: str, channel: str, *, connection_open: bool
) -> tuple[Subscription, bool] | None:
    """End one subscription (and the user's membership through this connection): the ended
    subscription and whether it was the user's last connection in the channel (their
    presence ends), or None if there was none. ``connection_open`` is false when the
    connection's row is gone (its subscriptions are ending with it)."""
    for attempt in range(_ATTEMPTS):
        pause_before_retry(
            attempt, base_seconds=_PAUSE_BASE_SECONDS, cap_seconds=_PAUSE_CAP_SECONDS
        )
        item = _read(channel, SUBSCRIPTION + connection_id)
        if item is None or item.user_id is None:
            return None
        ended = Subscription(channel, item.user_id, bool(item.present))
        member = _read(channel, MEMBER + item.user_id) if ended.present else None
        writes = [_Write(item, delete=True, condition=_ChannelItem.key.exists())]
        if connection_open:
            writes.append(
                _Write(
                    ConnectionItem(connection_id),
                    actions=[ConnectionItem.channels.add(-1)],
                    condition=ConnectionItem.connection_id.exists(),
                )
            )
        last = False
        if member is not None and connection_id in (member.connections or set()):
            last = member.connections == {connection_id}
            writes += _part(member, connection_id, last=last)
        try:
            _commit(writes)
        except _Cancelled as cancelled:
            if cancelled.failed(0):
                return None  # someone else ended it
            if connection_open and cancelled.failed(1):
                connection_open = False  # the connection is ending too
            continue
        return ended, last
    raise StorageUnavailable("the channel's members kept changing; try again")


def _join(
    channel: str,
    user_id: str,
    connection_id: str,
    member: _ChannelItem | None,
    presence: Presence,
    expires: datetime,
) -> list[_Write]:
    if member is not None:
        # Not the first: adding to the set commutes with any other join; a last leave racing
        # this one fails on its exact-set condition, or deletes first and fails this one.
        return [
            _Write(
                member,
                actions=[
                    _ChannelItem.connections.add({connection_id}),
                    _ChannelItem.ttl.set(expires),
                ],
                condition=_ChannelItem.connections.exists(),
            )
        ]
    joined = _ChannelItem(
        channel,
        MEMBER + user_id,
        user_id=user_id,
        connections={connection_id},
        info=presence.info,
        ttl=expires,
    )
    members = _ChannelItem.members
    return [
        _Write(joined, condition=_ChannelItem.key.does_not_exist()),
        _Write(
            _ChannelItem(channel, META),
            actions=[members.add(1)],
            condition=members.does_not_exist() | (members < presence.max_members),
        ),
    ]


def _part(member: _ChannelItem, connection_id: str, *, last: bool) -> list[_Write]:
    if not last:
        # Others stay: the set must still hold this connection and another one.
        return [
            _Write(
                member,
                actions=[_ChannelItem.connections.delete({connection_id})],
                condition=_ChannelItem.connections.contains(connection_id)
                & (size(_ChannelItem.connections) > 1),  # type: ignore[no-untyped-call]
            )
        ]
    # The last one: only if nobody joined since the read.
    return [
        _Write(member, delete=True, condition=_ChannelItem.connections == {connection_id}),
        _Write(
            _ChannelItem(member.channel, META),
            actions=[_ChannelItem.members.add(-1)],
            condition=_ChannelItem.members.exists(),
        ),
    ]


def _connection_refusal(connection_id: str, channel: str, max_channels: int) -> ChannelRefused:
    """Why the connection's row refused the subscription: gone, or holding its maximum."""
    if connections.get(connection_id) is None:
        return ChannelRefused("unknown_connection", "this connection is closing", channel)
    return ChannelRefused(
        "too_many_channels",
        f"a connection may subscribe to at most {max_channels} channels",
        channel,
    )


def is_subscribed(connection_id: str, channel: str) -> bool:
    return _read(channel, SUBSCRIPTION + connection_id) is not None


def members(channel: str, *, limit: int, after: str | None = None) -> MemberPage:
    """One page of a presence channel's members (user id order) and the member count."""
    return member_page(_ChannelItem, channel, limit=limit, after=after)


def subscribers(
    channel: str, *, now_ms: int, page_size: int | None = None
) -> Iterator[ConnectionRecord]:
    """Every live subscription of a channel, following the query's pages to the end."""
    after: str | None = None
    while True:
        page = subscriber_page(channel, now_ms=now_ms, limit=page_size, after=after)
        yield from page.records
        if page.after is None:
            return
        after = page.after


def subscriber_page(
    channel: str, *, now_ms: int, limit: int | None, after: str | None = None
) -> SubscriberPage:
    """At most ``limit`` subscriptions of a channel (a 1 MB page when None), read in one Query
    from ``after`` on, so one invocation's share of a big channel stays bounded.

    This is fan-out's hot read: it asks only for the four attributes a post needs and reads
    the answer's JSON itself (``_raw_reads``), which costs a fraction of building PynamoDB
    models from botocore's parse (measured in ``make bench``: the channel row).
    """
    request: dict[str, Any] = {
        "TableName": _ChannelItem.Meta.table_name,
        "KeyConditionExpression": "#c = :c AND begins_with(#k, :p)",
        "ProjectionExpression": "#k, #p, #o, #t",
        "ExpressionAttributeNames": {
            "#c": "channel",
            "#k": "key",
            "#p": "platform",
            "#o": "connectedAt",
            "#t": "ttl",
        },
        "ExpressionAttributeValues": {":c": {"S": channel}, ":p": {"S": SUBSCRIPTION}},
        # A subscription written a moment ago must be seen: a subscribe with `since` reads the
        # channel's position after writing it, and counts on every later seq reaching it.
        "ConsistentRead": True,
    }
    if limit is not None:
        request["Limit"] = limit
    if after is not None:
        request["ExclusiveStartKey"] = {
            "channel": {"S": channel},
            "key": {"S": SUBSCRIPTION + after},
        }
    try:
        answer = _raw_reads(_ChannelItem.Meta.region).query(**request)
    except (BotoCoreError, ClientError) as exc:
        raise StorageUnavailable("could not query the channel's subscribers") from exc
    records = []
    for item in answer[_RAW_ITEMS]:  # each as ``subscribe`` wrote it: every attribute is there
        if float(item["ttl"]["N"]) * 1000 <= now_ms:
            continue  # expired: DynamoDB deletes it late
        connected = int(item["connectedAt"]["N"])
        records.append(
            ConnectionRecord(
                connection_id=item["key"]["S"][len(SUBSCRIPTION) :],
                user_id="",
                platform=item["platform"]["S"],
                connected_at=connected,
                last_seen_at=connected,
            )
        )
    next_key = answer.get(_RAW_NEXT)
    return SubscriberPage(records, next_key["key"]["S"][len(SUBSCRIPTION) :] if next_key else None)


_RAW_ITEMS = "wspushRawItems"
_RAW_NEXT = "wspushRawLastEvaluatedKey"


@cache
def _raw_reads(region: str) -> Any:
    """A DynamoDB client whose Query answers are read with ``json.loads`` alone: botocore's
    shape-by-shape parse of ten thousand items costs more CPU than posting to them. A
    successful answer's body is taken before botocore parses it (``before-parse``), and the
    items come back under ``_RAW_ITEMS`` as DynamoDB sent them; errors are parsed as usual."""
    client = boto3.session.Session().client(
        "dynamodb",
        region_name=region,
        config=Config(
            connect_timeout=_ChannelItem.Meta.connect_timeout_seconds,
            read_timeout=_ChannelItem.Meta.read_timeout_seconds,
            retries={"mode": "standard", "total_max_attempts": 3},
        ),
    )

    def take_body(
        response_dict: dict[str, Any], customized_response_dict: dict[str, Any], **_: Any
    ) -> None:
        if response_dict.get("status_code") != 200:
            return
        body = json.loads(response_dict["body"])
        customized_response_dict[_RAW_ITEMS] = body.get("Items", [])
        if "LastEvaluatedKey" in body:
            customized_response_dict[_RAW_NEXT] = body["LastEvaluatedKey"]
        response_dict["body"] = b"{}"

    client.meta.events.register("before-parse.dynamodb.Query", take_body)
    return client


def channels_of(connection_id: str) -> list[str]:
    """The channels a connection is subscribed to (the index is eventually consistent: a
    subscription made a moment ago may be missing; its TTL ends it then)."""
    try:
        return [
            item.channel
            for item in _ChannelItem.by_connection.query(connection_id)
            if item.key.startswith(SUBSCRIPTION)
        ]
    except PynamoDBException as exc:
        raise StorageUnavailable("could not query the connection's channels") from exc


def came_online(user_id: str, connection_id: str, *, expires: datetime) -> bool:
    """Add a connection to its user's open connections; True when it is the user's only one
    (the user came online). Adding it again answers False."""
    item = _ChannelItem(USER_PARTITION + user_id, ONLINE)
    try:
        item.update(
            actions=[_ChannelItem.connections.add({connection_id}), _ChannelItem.ttl.set(expires)],
            condition=~_ChannelItem.connections.contains(connection_id),
        )
    except UpdateError as exc:
        if exc.cause_response_code == _CONDITION_FAILED_EXCEPTION:
            return False
        raise StorageUnavailable("could not record the user online") from exc
    return item.connections == {connection_id}


def went_offline(user_id: str, connection_id: str) -> bool:
    """Remove a connection from its user's open connections; True when it was the last one
    (the user went offline). Removing it again answers False.

    Most users have one connection: deleting the item while it holds exactly this one is a
    single call; otherwise the connection is taken out of the set."""
    item = _ChannelItem(USER_PARTITION + user_id, ONLINE)
    try:
        item.delete(condition=_ChannelItem.connections == {connection_id})
    except DeleteError as exc:
        if exc.cause_response_code != _CONDITION_FAILED_EXCEPTION:
            raise StorageUnavailable("could not record the user offline") from exc
    else:
        return True
    try:
        item.update(
            actions=[_ChannelItem.connections.delete({connection_id})],
            condition=_ChannelItem.connections.contains(connection_id),
        )
    except UpdateError as exc:
        if exc.cause_response_code == _CONDITION_FAILED_EXCEPTION:
            return False  # removed already
        raise StorageUnavailable("could not record the user offline") from exc
    if item.connections:
        return False
    try:  # the last one left between the two calls: the item is empty now
        item.delete(condition=_ChannelItem.connections.does_not_exist())
    except DeleteError as exc:
        if exc.cause_response_code != _CONDITION_FAILED_EXCEPTION:
            raise StorageUnavailable("could not remove the user's online item") from exc
    return True


_DELETE, _PUT, _UPDATE = 0, 1, 2


@dataclass
class _Write:
    """One item of a transaction: an update (``actions``), a put (none), or a delete."""

    item: Model
    actions: list[Any] | None = None
    condition: Any = None
    delete: bool = False

    @property
    def kind(self) -> int:
        if self.delete:
            return _DELETE
        return _PUT if self.actions is None else _UPDATE


class _Cancelled(Exception):
    def __init__(self, codes: list[str | None]) -> None:
        super().__init__()
        self.codes = codes

    def failed(self, index: int) -> bool:
        return self.codes[index] == _CONDITION_FAILED


def _commit(writes: list[_Write]) -> None:
    """Write ``writes`` in one transaction. A cancellation names, for each write in the order
    given, why it failed (PynamoDB sends deletes, then puts, then updates)."""
    order = sorted(range(len(writes)), key=lambda index: writes[index].kind)
    try:
        with TransactWrite(connection=transaction_connection()) as transaction:
            for index in order:
                write = writes[index]
                if write.kind == _DELETE:
                    transaction.delete(write.item, condition=write.condition)
                elif write.kind == _PUT:
                    transaction.save(write.item, condition=write.condition)
                else:
                    transaction.update(
                        write.item, actions=write.actions or [], condition=write.condition
                    )
    except TransactWriteError as exc:
        if exc.cause_response_code == "TransactionCanceledException":
            codes: list[str | None] = [None] * len(writes)
            for position, reason in zip(order, exc.cancellation_reasons, strict=False):
                codes[position] = reason.code if reason else None
            raise _Cancelled(codes) from exc
        raise StorageUnavailable("could not write the subscription") from exc


def _read(channel: str, key: str, *, consistent: bool = True) -> _ChannelItem | None:
    try:
        return _ChannelItem.get(channel, key, consistent_read=consistent)
    except _ChannelItem.DoesNotExist:
        return None
    except PynamoDBException as exc:
        raise StorageUnavailable("could not read the channels table") from exc
