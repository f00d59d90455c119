"""A client request's round trip, shared by the routes that answer one (``hello``,
``recover``, ``subscribe``...): parse it, do it, and answer with its reply or an ``error``
saying why, the request's ``ref`` echoed either way."""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from wspush.contract.frames import Request, error_reply, parse_request, reply
from wspush.errors import ChannelRefused, StorageUnavailable
from wspush.observability import logger, metrics

# A route that replays what a connection missed stops this long before the function's time
# limit, leaving time for its reply.
REPLY_MARGIN_MS = 1_000


def answer(
    connection_id: str,
    body: str | None,
    actions: Collection[str],
    work: Callable[[Request], tuple[str, Any]],
    *,
    now_ms: int,
    kind: str,
    unavailable: str,
) -> str:
    """The reply frame to one request: ``work``'s (type, data), or an ``error``. ``kind``
    names the requests in logs and metrics (``channel``: ``ChannelRequestsRefused``)."""
    ref: str | None = None
    try:
        request = parse_request(body, actions)
        ref = request.ref
        reply_type, data = work(request)
    except ChannelRefused as exc:
        metrics.add_metric(name=f"{kind.title()}RequestsRefused", unit="Count", value=1)
        logger.info(f"{kind} request refused", connection_id=connection_id, code=exc.code)
        return error_reply(exc.code, exc.message, now_ms=now_ms, ref=ref, channel=exc.channel)
    except StorageUnavailable:
        logger.exception(f"{kind} request failed", connection_id=connection_id)
        metrics.add_metric(name="StorageErrors", unit="Count", value=1)
        return error_reply("unavailable", unavailable, now_ms=now_ms, ref=ref)
    return reply(reply_type, data, now_ms=now_ms, ref=ref)
