"""The API Gateway WebSocket route events the handlers read, as small typed values (and the
schedule's event the rotation sweeper reads).

The routes read five fields of the event. Powertools' event data classes would serve, but
importing one loads all 30 of its event modules, a large share of what a route's cold start
may add to ``import boto3`` (README, *Cold starts*). The sender still uses Powertools' SQS
record, which its batch processor loads anyway.

Where API Gateway leaves a field out, the route reads a default rather than failing:
``connectedAt`` as unknown (``$connect`` then counts from now), ``isBase64Encoded`` as false,
the query as empty.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any, NamedTuple

from wspush.errors import InvalidEvent


class QueryParameters(Mapping[str, str]):
    """A handshake's query string parameters, named case-insensitively (``userid`` is
    ``userId``); when a name is spelled several ways, the last one wins."""

    def __init__(self, parameters: Mapping[str, str] | None = None) -> None:
        self._values = {name.lower(): value for name, value in (parameters or {}).items()}

    def __getitem__(self, name: str) -> str:
        return self._values[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


class RouteEvent(NamedTuple):
    """What a ``$connect``, ``$disconnect``, ``ping`` or ``$default`` invocation is about."""

    connection_id: str
    connected_at: int | None  # ms since the epoch
    query: QueryParameters
    body: str | None
    base64_encoded: bool

    @classmethod
    def of(cls, event: Mapping[str, Any]) -> RouteEvent:
        context = event["requestContext"]
        return cls(
            connection_id=context["connectionId"],
            connected_at=context.get("connectedAt"),
            query=QueryParameters(event.get("queryStringParameters")),
            body=event.get("body"),
            base64_encoded=bool(event.get("isBase64Encoded")),
        )


class ScheduledEvent(NamedTuple):
    """An EventBridge scheduled event: its id, and the time it was due (``time``, whole
    seconds, UTC). A retry of the event carries the same time, so it redoes the same work."""

    id: str
    time_ms: int

    @classmethod
    def of(cls, event: Mapping[str, Any], *, now_ms: int) -> ScheduledEvent:
        """An event without a ``time`` (invoked by hand) is due now."""
        raw = event.get("time")
        if raw is None:
            return cls(str(event.get("id", "")), now_ms)
        try:
            when = datetime.fromisoformat(raw)
        except (TypeError, ValueError) as exc:
            raise InvalidEvent(f"the scheduled event's time is not a time: {raw!r}") from exc
        if when.tzinfo is None:
            raise InvalidEvent(f"the scheduled event's time has no time zone: {raw!r}")
        return cls(str(event.get("id", "")), round(when.timestamp() * 1000))
