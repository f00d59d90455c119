"""Remembering processed messages, so one SQS (or a producer) delivers twice is sent once.

Each message is keyed by its ``id``, its target and its re-queue round: a producer's retry
with the same ``id`` and target, or SQS handing the same message over again, finds the key
already done and is skipped; a re-queued remainder (another target or round) is not.
Powertools' idempotency utility keeps the records in a DynamoDB table with a TTL; a record
left "in progress" by an invocation that died expires with that invocation's time limit,
so a message is never blocked for good.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from aws_lambda_powertools.utilities.idempotency import (
    DynamoDBPersistenceLayer,
    IdempotencyConfig,
    idempotent_function,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    BaseError as IdempotencyError,
)
from aws_lambda_powertools.utilities.idempotency.exceptions import (
    IdempotencyAlreadyInProgressError,
)
from aws_lambda_powertools.utilities.idempotency.hook import IdempotentHookFunction
from aws_lambda_powertools.utilities.idempotency.persistence.datarecord import DataRecord
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config

from wspush.contract.messages import Message
from wspush.errors import StorageUnavailable, WspushError
from wspush.observability import logger, metrics


class AlreadyInProgress(WspushError):
    """Another invocation is handling the same message right now: try again later."""


def key_of(message: Message, round_number: int) -> dict[str, Any]:
    """What makes two deliveries the same work: id, target (canonical) and re-queue round."""
    target = message.target
    key: dict[str, Any] = {
        "id": message.id,
        "connectionIds": sorted(target.connection_ids),
        "userIds": sorted(target.user_ids),
        "broadcast": target.broadcast,
        "platforms": sorted(target.platforms) if target.platforms is not None else None,
        "exclude": sorted(target.exclude_connection_ids),
        "segment": list(target.segment) if target.segment else None,
        "round": round_number,
    }
    if target.channel is not None:
        key["channel"] = target.channel
    if target.after is not None:  # a broadcast's or a channel's share that continues a read
        key["after"] = target.after
    return key


def _skipped(response: Any, idempotent_data: DataRecord) -> Any:
    """Powertools calls this when it answers from an earlier run (the stored answer, a dict
    as every ``work()`` returns): the message is a duplicate."""
    logger.info("duplicate message skipped", message_id=response.get("id"))
    metrics.add_metric(name="DuplicatesSkipped", unit="Count", value=1)
    return response


@cache
def _store(table_name: str, ttl_seconds: int) -> DynamoDBPersistenceLayer:
    """One persistence layer per table and TTL: Powertools configures a layer once, with the
    first config it is used with, and keeps that config's TTL for every later call."""
    config = Config(connect_timeout=2, read_timeout=3, retries={"mode": "standard"})
    return DynamoDBPersistenceLayer(table_name=table_name, boto_config=config)


@dataclass(frozen=True)
class Handled:
    """What ``run_once`` did: ``work()``'s answer (or the first run's), and whether the
    record of it is kept. ``kept`` is False only when the work ran but writing its record
    failed: the recipients were reached, and a later copy of the message will be sent again."""

    answer: dict[str, Any]
    kept: bool = True


def run_once(
    key: dict[str, Any],
    work: Callable[[], dict[str, Any]],
    *,
    table_name: str,
    ttl_seconds: int,
    context: LambdaContext | None,
    on_repeat: IdempotentHookFunction = _skipped,
) -> Handled:
    """``work()``'s answer, computed once per ``key`` within ``ttl_seconds``.

    ``on_repeat(response, idempotent_data)`` gives the answer when an earlier run's is found
    (by default: a duplicate message, logged and counted as one).

    Without a table (some tests, misconfigured stacks) every call does the work. A storage
    error before the work started is ``StorageUnavailable`` (nothing was done); one after it
    never hides what the work did: its answer, or its own exception, comes through.
    """
    if not table_name:
        return Handled(work())
    config = IdempotencyConfig(
        expires_after_seconds=ttl_seconds,
        response_hook=on_repeat,
    )
    if context is not None:
        config.register_lambda_context(context)
    ran: list[dict[str, Any] | BaseException] = []

    @idempotent_function(
        data_keyword_argument="key",
        persistence_store=_store(table_name, ttl_seconds),
        config=config,
    )
    def deliver_once(key: dict[str, Any]) -> dict[str, Any]:
        try:
            answer = work()
        except Exception as exc:
            ran.append(exc)
            raise
        ran.append(answer)
        return answer

    try:
        answer: dict[str, Any] = deliver_once(key=key)
    except IdempotencyAlreadyInProgressError as exc:
        raise AlreadyInProgress from exc
    except IdempotencyError as exc:
        if not ran:
            raise StorageUnavailable("the processed-messages table could not be used") from exc
        # The work ran; only its record could not be written (or its claim released).
        logger.warning("processed record not written", error=type(exc.__cause__).__name__)
        metrics.add_metric(name="RecordsNotKept", unit="Count", value=1)
        if isinstance(ran[0], BaseException):
            raise ran[0] from exc
        return Handled(ran[0], kept=False)
    return Handled(answer)
