"""Where moto is kinder than AWS, made to behave like AWS for what wspush depends on.

Used by ``make dev`` (its moto server) and by the tests (moto in process), so code that
passes locally does not pass only because a stand-in is kinder than AWS.

- **Stale item counts.** DynamoDB's ``DescribeTable`` reports ``ItemCount`` (and
  ``TableSizeBytes``) as counted about every six hours: a new table says 0, a fast-growing
  one far too few. moto counts live. Here a table's count is taken when it is created (0)
  and again only once six hours have passed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from moto.dynamodb.models.table import Table

COUNT_REFRESH_SECONDS = 6 * 60 * 60
# The wall clock the counts age by (tests move it).
clock: Callable[[], float] = time.time

_original_describe = Table.describe


def _stale_describe(table: Table, base_key: str = "TableDescription") -> dict[str, Any]:
    results: dict[str, Any] = _original_describe(table, base_key)
    counted_at: float | None = getattr(table, "_wspush_counted_at", None)
    now = clock()
    if counted_at is None:
        table._wspush_counted_at, table._wspush_count = now, 0  # type: ignore[attr-defined]
    elif now - counted_at >= COUNT_REFRESH_SECONDS:
        table._wspush_counted_at, table._wspush_count = now, len(table)  # type: ignore[attr-defined]
    results[base_key]["ItemCount"] = table._wspush_count  # type: ignore[attr-defined]
    results[base_key]["TableSizeBytes"] = 0
    return results


def install() -> None:
    """Make every moto DynamoDB table in this process report counts as AWS does."""
    setattr(Table, "describe", _stale_describe)  # noqa: B010 - replacing moto's method


def uninstall() -> None:
    setattr(Table, "describe", _original_describe)  # noqa: B010


@contextmanager
def as_aws() -> Iterator[None]:
    install()
    try:
        yield
    finally:
        uninstall()
