"""A presence channel's members as the channels table holds them, readable with no settings.

The Lambdas read members through ``store.channels`` (its model is this one on the table
their settings name); ``wspush presence`` reads them from outside, on a table it names and
an endpoint it chooses, without joining the channel. Under a channel's name:

- ``u#<userId>``: a member: the set of that user's connections in the channel and the info
  attached when the user joined;
- ``#meta``: the channel's member count.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ConnectionError as AwsConnectionError
from pynamodb.attributes import (
    JSONAttribute,
    NumberAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
)
from pynamodb.exceptions import PynamoDBException
from pynamodb.models import Model

from wspush.errors import StorageUnavailable

MEMBER = "u#"
META = "#meta"
MEMBERS_PER_PAGE = 100


class ChannelTable(Model):
    """The channels table's keys and the attributes presence is read from. It names no
    table: ``store.channels`` declares the Lambdas' model on it, ``table()`` one for a table
    named by the caller."""

    channel = UnicodeAttribute(hash_key=True, attr_name="channel")
    key = UnicodeAttribute(range_key=True, attr_name="key")
    user_id = UnicodeAttribute(null=True, attr_name="userId")
    # A member's connections in the channel (and a user's open connections, for online/offline)
    connections = UnicodeSetAttribute(null=True, attr_name="connections")
    info = JSONAttribute(null=True, attr_name="info")
    # The channel's member count
    members = NumberAttribute(null=True, attr_name="members")


@dataclass(frozen=True)
class Member:
    user_id: str
    info: Any
    connections: int

    def as_dict(self) -> dict[str, Any]:
        """The member as the ``presence`` reply shows it."""
        return {"userId": self.user_id, "info": self.info, "connections": self.connections}


@dataclass(frozen=True)
class MemberPage:
    count: int
    members: list[Member]
    after: str | None  # the user id the next page starts after


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    token: str | None = None


class TableUnreachable(StorageUnavailable):
    """No connection could be made to the table's endpoint (a local stack not running)."""


def table(
    table_name: str,
    *,
    region: str,
    endpoint_url: str | None = None,
    credentials: Credentials | None = None,
) -> type[ChannelTable]:
    """A read-only view of the channels table ``table_name``: AWS's endpoint for ``region``
    unless ``endpoint_url`` is given, the default credentials unless ``credentials`` are."""
    meta: dict[str, Any] = {
        "table_name": table_name,
        "region": region,
        "host": endpoint_url,
        "connect_timeout_seconds": 2,
        "read_timeout_seconds": 5,
        "max_retry_attempts": 2,
    }
    if credentials is not None:
        meta["aws_access_key_id"] = credentials.access_key
        meta["aws_secret_access_key"] = credentials.secret_key
        meta["aws_session_token"] = credentials.token
    return type("ChannelTableView", (ChannelTable,), {"Meta": type("Meta", (), meta)})


def member_page(
    model: type[ChannelTable], channel: str, *, limit: int, after: str | None = None
) -> MemberPage:
    """One page of a presence channel's members (user id order) and the member count.
    Raises ``StorageUnavailable`` (``TableUnreachable`` when the endpoint did not answer)."""
    start = {"channel": {"S": channel}, "key": {"S": MEMBER + after}} if after else None
    try:
        results = model.query(
            channel,
            model.key.startswith(MEMBER),
            limit=limit,
            page_size=limit,
            last_evaluated_key=start,
        )
        page = [
            Member(item.user_id or "", item.info, len(item.connections or ())) for item in results
        ]
        next_key = results.last_evaluated_key
        count = _member_count(model, channel)
    except PynamoDBException as exc:
        raise _unavailable(exc) from exc
    return MemberPage(count, page, next_key["key"]["S"][len(MEMBER) :] if next_key else None)


def _member_count(model: type[ChannelTable], channel: str) -> int:
    try:
        meta = model.get(channel, META)
    except model.DoesNotExist:
        return 0
    return int(meta.members or 0)


def every_member(
    model: type[ChannelTable], channel: str, *, page_size: int = MEMBERS_PER_PAGE
) -> tuple[int, list[Member]]:
    """The member count and every member, page after page (the count is the last page's)."""
    count, members = 0, list[Member]()
    for page in _pages(model, channel, page_size):
        members += page.members
        count = page.count
    return count, members


def _pages(model: type[ChannelTable], channel: str, page_size: int) -> Iterator[MemberPage]:
    after: str | None = None
    while True:
        page = member_page(model, channel, limit=page_size, after=after)
        yield page
        if page.after is None:
            return
        after = page.after


def _unavailable(exc: PynamoDBException) -> StorageUnavailable:
    if isinstance(exc.cause, AwsConnectionError):
        return TableUnreachable(f"could not reach the channels table: {exc.cause}")
    reason = exc.cause_response_code or type(exc.cause).__name__
    return StorageUnavailable(f"could not read the channel's members: {reason}")
