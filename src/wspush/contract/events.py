"""The API Gateway WebSocket route events the handlers read, as small typed values.

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
from typing import Any, NamedTuple


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
