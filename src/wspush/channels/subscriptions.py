"""What the ``subscribe``, ``unsubscribe`` and ``presence`` routes do, frame to reply.

A request is ``{"action", "channel", "ref"?}`` (``presence`` also takes ``"after"``, the
``next`` of the page before). Every reply echoes ``ref``; a refusal is an ``error`` frame
whose data names the code and the channel.
"""

from __future__ import annotations

import uuid
from typing import Any

from wspush.channels.access import authorize
from wspush.channels.names import Channel, parse_channel
from wspush.clock import Deadline
from wspush.contract.frames import Request
from wspush.contract.messages import NOT_KEPT, sqs_body
from wspush.errors import ChannelRefused, QueueUnavailable, StorageUnavailable
from wspush.fanout import queues
from wspush.history import recovery
from wspush.history.streams import Since, channel_stream
from wspush.observability import logger, metrics
from wspush.routes.requests import answer
from wspush.settings import Namespace, Settings
from wspush.store import channels as store
from wspush.store import connections, history

MEMBERS_PER_PAGE = 100
ACTIONS = ("subscribe", "unsubscribe", "presence")


def handle(
    connection_id: str,
    body: str | None,
    settings: Settings,
    *,
    now_ms: int,
    deadline: Deadline | None = None,
) -> str:
    """The reply frame to one channel request (after a recovery's replay is posted)."""

    def work(request: Request) -> tuple[str, Any]:
        if request.action == "subscribe":
            return subscribe(connection_id, request, settings, now_ms=now_ms, deadline=deadline)
        return _ROUTES[request.action](connection_id, request, settings)

    return answer(
        connection_id,
        body,
        ACTIONS,
        work,
        now_ms=now_ms,
        kind="channel",
        unavailable="channels are unavailable, try again later",
    )


def subscribe(
    connection_id: str,
    request: Request,
    settings: Settings,
    *,
    now_ms: int,
    deadline: Deadline | None = None,
) -> tuple[str, Any]:
    """Subscribe; in a namespace with history, answer the channel's position, and with
    ``since``, first post what the connection missed of the channel (``recovered``)."""
    channel, namespace = _declared(request.channel, settings)
    name = str(channel)
    since = Since.parse(request.since, name) if request.since is not None else None
    record = connections.get(connection_id)
    if record is None:
        raise ChannelRefused("unknown_connection", "this connection is not open", name)
    info = authorize(record, channel, namespace, settings)
    presence = store.Presence(info, namespace.max_members) if namespace.presence else None
    first = store.subscribe(
        record,
        name,
        expires=connections.expiry(record.connected_at, settings.connection_ttl_seconds),
        max_channels=settings.max_channels_per_connection,
        presence=presence,
    )
    metrics.add_metric(name="Subscribed", unit="Count", value=1)
    logger.info("subscribed", connection_id=connection_id, channel=name)
    if first:
        announce(
            settings,
            name,
            "presence.join",
            {"channel": name, "userId": record.user_id, "info": info},
            exclude=connection_id,
        )
    # Read after the subscription is written: a message given a later seq is fanned out to
    # this connection, one given this seq or an earlier one is in the replay (or both).
    data: dict[str, Any] = {"channel": name}
    stream = channel_stream(name, settings)
    try:
        if stream is not None and since is None:
            data.update(history.position(stream.key, now_ms=now_ms).as_dict())
        elif stream is not None and since is not None:
            outcome = recovery.recover(
                stream, since, connection_id, settings, now_ms=now_ms, deadline=deadline
            )
            data.update(outcome.as_dict())
    except StorageUnavailable:
        # The subscription stands (and was announced): say so, without a position; a client
        # that asked to recover is told it could not.
        logger.exception("channel position not read", connection_id=connection_id, channel=name)
        metrics.add_metric(name="StorageErrors", unit="Count", value=1)
    if since is not None:
        data.setdefault("recovered", False)  # no history (any more), or not readable now
    return "subscribed", data


def unsubscribe(connection_id: str, request: Request, settings: Settings) -> tuple[str, Any]:
    channel = parse_channel(request.channel)
    end(connection_id, str(channel), settings, connection_open=True)
    return "unsubscribed", {"channel": str(channel)}


def presence(connection_id: str, request: Request, settings: Settings) -> tuple[str, Any]:
    channel, namespace = _declared(request.channel, settings)
    name = str(channel)
    if not namespace.presence:
        raise ChannelRefused(
            "no_presence", f"namespace {channel.namespace!r} has no presence", name
        )
    after = request.after
    if after is not None and (not isinstance(after, str) or not after):
        raise ChannelRefused("bad_frame", "after must be the next of an earlier page", name)
    if not store.is_subscribed(connection_id, name):
        raise ChannelRefused("not_subscribed", "subscribe to the channel to see its members", name)
    page = store.members(name, limit=MEMBERS_PER_PAGE, after=after)
    members = [
        {"userId": m.user_id, "info": m.info, "connections": m.connections} for m in page.members
    ]
    return "presence", {
        "channel": name,
        "count": page.count,
        "members": members,
        "next": page.after,
    }


def end(connection_id: str, channel: str, settings: Settings, *, connection_open: bool) -> None:
    """End one subscription; tell the channel when its user's last connection left it."""
    ended = store.unsubscribe(connection_id, channel, connection_open=connection_open)
    if ended is None:
        return
    subscription, last = ended
    metrics.add_metric(name="Unsubscribed", unit="Count", value=1)
    logger.info("unsubscribed", connection_id=connection_id, channel=channel)
    if last:
        announce(
            settings,
            channel,
            "presence.leave",
            {"channel": channel, "userId": subscription.user_id},
        )


def announce(
    settings: Settings, channel: str, event_type: str, data: Any, *, exclude: str | None = None
) -> None:
    """Queue a presence event to the channel's subscribers, like any channel message but kept
    in no stream: a client that recovers asks for the members again (best effort: the
    membership itself is already right)."""
    envelope: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "channel": channel,
        "payload": {"type": event_type, "data": data},
    }
    if exclude is not None:
        envelope["excludeConnectionIds"] = [exclude]
    try:
        queues.send_all(
            settings.queue_url,
            [queues.Outgoing(sqs_body(envelope), {queues.SEQ: str(NOT_KEPT)})],
            region=settings.region,
        )
    except QueueUnavailable:
        logger.warning("presence event not queued", channel=channel, event=event_type)
        metrics.add_metric(name="PresenceEventsLost", unit="Count", value=1)


def _declared(value: Any, settings: Settings) -> tuple[Channel, Namespace]:
    channel = parse_channel(value)
    namespace = settings.namespace(channel.namespace)
    if namespace is None:
        raise ChannelRefused(
            "unknown_namespace", f"no namespace {channel.namespace!r} is declared", str(channel)
        )
    return channel, namespace


_ROUTES = {"unsubscribe": unsubscribe, "presence": presence}
