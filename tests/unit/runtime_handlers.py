"""Handlers the local Lambda runtime serves in tests/unit/test_lambda_runtime.py."""

from __future__ import annotations

import logging
import os
import sys
import time
from datetime import UTC, datetime
from typing import Any


def describe(event: Any, context: Any) -> dict[str, Any]:
    """What the handler was given: its context, and what it sees of its environment."""
    return {
        "aws_request_id": context.aws_request_id,
        "function_name": context.function_name,
        "function_version": context.function_version,
        "invoked_function_arn": context.invoked_function_arn,
        "memory_limit_in_mb": context.memory_limit_in_mb,
        "log_group_name": context.log_group_name,
        "log_stream_name": context.log_stream_name,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "stream_in_environment": os.environ.get("AWS_LAMBDA_LOG_STREAM_NAME"),
        "runtime_variables": sorted(name for name in os.environ if name.startswith("WSPUSH_LOCAL")),
    }


def wait(event: Any, context: Any) -> int:
    """Sleeps ``event["seconds"]``, then answers the time it has left."""
    print(f"pid {os.getpid()}", flush=True)
    time.sleep(event["seconds"])
    return int(context.get_remaining_time_in_millis())


def order(event: Any, context: Any) -> dict[str, Any]:
    if event.get("fail"):
        raise ValueError(f"order {event['orderId']} is not known")
    return {"orderId": event["orderId"]}


def leave(event: Any, context: Any) -> None:
    sys.exit(3)


def timestamp(event: Any, context: Any) -> dict[str, Any]:
    return {"at": datetime.now(UTC)}


def chatter(event: Any, context: Any) -> dict[str, Any]:
    """Prints a whole line, logs a warning, leaves a line unfinished and reads stdin."""
    print("a whole line")
    logging.getLogger("somewhere").warning("careful")
    print("no newline at the end", end="")
    return {"stdin": sys.stdin.read(), "n": event["n"]}
