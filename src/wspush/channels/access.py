"""Who may subscribe to a channel, decided in the contract's order.

1. The namespace is open to every authenticated connection (``"subscribe": "authenticated"``);
2. the connection's token named the channel, or its namespace as ``ns:*`` (``channels`` claim);
3. the deployer's authorizer Lambda allows it (asked with user, connection, channel and the
   token's grants; it may attach the member ``info`` presence shows);
4. anything else is refused with ``forbidden``. An authorizer that fails or does not answer
   in time refuses too (fail closed).
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from wspush.channels.names import Channel, granted
from wspush.errors import ChannelRefused
from wspush.observability import logger, metrics
from wspush.settings import Access, Namespace, Settings
from wspush.store.connections import ConnectionRecord

MAX_INFO_BYTES = 1_024  # what one member's info may weigh in a presence list


def authorize(
    record: ConnectionRecord, channel: Channel, namespace: Namespace, settings: Settings
) -> Any:
    """The member info to show in presence (None when there is none); raises
    ``ChannelRefused("forbidden")`` when the connection may not subscribe."""
    if namespace.access is Access.AUTHENTICATED or granted(channel, record.grants):
        return None
    if settings.channel_authorizer:
        return _ask_authorizer(record, channel, settings)
    raise ChannelRefused(
        "forbidden", "this connection may not subscribe to the channel", str(channel)
    )


def _ask_authorizer(record: ConnectionRecord, channel: Channel, settings: Settings) -> Any:
    name = str(channel)
    question = {
        "userId": record.user_id,
        "connectionId": record.connection_id,
        "channel": name,
        "grants": list(record.grants),
    }
    client = _lambda(settings.region, settings.channel_authorizer_timeout_ms)
    try:
        answer = client.invoke(
            FunctionName=settings.channel_authorizer,
            InvocationType="RequestResponse",
            Payload=json.dumps(question).encode(),
        )
        body = json.loads(answer["Payload"].read() or b"null")
    except (BotoCoreError, ClientError, ValueError) as exc:
        logger.warning("channel authorizer unavailable", error=type(exc).__name__)
        metrics.add_metric(name="AuthorizerErrors", unit="Count", value=1)
        raise ChannelRefused("forbidden", "the channel authorizer did not answer", name) from exc
    if answer.get("FunctionError") or not isinstance(body, dict):
        logger.warning("channel authorizer failed", function_error=answer.get("FunctionError"))
        metrics.add_metric(name="AuthorizerErrors", unit="Count", value=1)
        raise ChannelRefused("forbidden", "the channel authorizer failed", name)
    if body.get("allow") is not True:
        raise ChannelRefused("forbidden", "the channel authorizer refused the subscription", name)
    info = body.get("info")
    if len(json.dumps(info, separators=(",", ":"))) > MAX_INFO_BYTES:
        logger.warning("channel authorizer's member info dropped: too large")
        return None
    return info


@cache
def _lambda(region: str, timeout_ms: int) -> Any:
    """A Lambda client that gives up within the route's time: one attempt, bounded waits."""
    seconds = timeout_ms / 1000
    config = Config(
        connect_timeout=seconds,
        read_timeout=seconds,
        retries={"mode": "standard", "total_max_attempts": 1},
    )
    return boto3.session.Session().client("lambda", region_name=region, config=config)
