"""EventBridge: the only module that puts events (``user.online`` / ``user.offline``).

Best effort: an event that cannot be put is logged and counted, never retried into a loop
that would hold up the connection's clean-up.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from wspush.observability import logger, metrics

SOURCE = "wspush"


def put(bus_name: str, detail_type: str, detail: dict[str, Any], *, region: str) -> bool:
    """Put one event on ``bus_name``; False (logged) when it was not accepted."""
    try:
        answer = _client(region).put_events(
            Entries=[
                {
                    "EventBusName": bus_name,
                    "Source": SOURCE,
                    "DetailType": detail_type,
                    "Detail": json.dumps(detail, separators=(",", ":")),
                }
            ]
        )
    except (BotoCoreError, ClientError) as exc:
        logger.warning("event not put", detail_type=detail_type, error=type(exc).__name__)
        metrics.add_metric(name="EventsNotPut", unit="Count", value=1)
        return False
    if answer.get("FailedEntryCount"):
        code = answer["Entries"][0].get("ErrorCode")
        logger.warning("event not put", detail_type=detail_type, error=code)
        metrics.add_metric(name="EventsNotPut", unit="Count", value=1)
        return False
    metrics.add_metric(name="EventsPut", unit="Count", value=1)
    return True


@cache
def _client(region: str) -> Any:
    return boto3.session.Session().client(
        "events",
        region_name=region,
        config=Config(connect_timeout=2, read_timeout=3, retries={"mode": "standard"}),
    )
