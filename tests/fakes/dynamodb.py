"""DynamoDB that fails on purpose: moto's own request handler answers with DynamoDB's errors.

The error is raised inside moto's handler for the operation, so it reaches the code under
test the way a real one would: as an HTTP 400/500 with DynamoDB's JSON error body, parsed
by botocore, retried by botocore's standard retry mode (PynamoDB's client allows
``1 + max_retry_attempts`` attempts), then wrapped by PynamoDB. ``after_write=True``
models the worst kind of failure: the write landed, but the caller is told it failed.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from botocore.retries.standard import ExponentialBackoff
from moto.core.exceptions import JsonRESTError
from moto.dynamodb.responses import DynamoHandler

READS = ("Query", "Scan", "BatchGetItem")
_HANDLER_METHODS = {
    "PutItem": "put_item",
    "DeleteItem": "delete_item",
    "UpdateItem": "update_item",
    "GetItem": "get_item",
    "Query": "query",
    "Scan": "scan",
    "BatchGetItem": "batch_get_item",
    "TransactWriteItems": "transact_write_items",
}
_TYPE_PREFIX = "com.amazonaws.dynamodb.v20120810#"


@dataclass(frozen=True)
class DynamoDBError:
    code: str
    status: int
    message: str

    def exception(self) -> JsonRESTError:
        error = JsonRESTError(_TYPE_PREFIX + self.code, self.message)
        error.code = self.status
        return error


THROTTLED = DynamoDBError(
    "ProvisionedThroughputExceededException",
    400,
    "The level of configured provisioned throughput for the table was exceeded.",
)
INTERNAL_ERROR = DynamoDBError("InternalServerError", 500, "Internal server error")


@dataclass
class _Rule:
    operations: frozenset[str]
    error: DynamoDBError
    remaining: int | None  # None: until cleared
    after_write: bool
    table: str | None
    when: Callable[[Mapping[str, Any]], bool] | None

    def matches(self, operation: str, params: Mapping[str, Any]) -> bool:
        if operation not in self.operations or self.remaining == 0:
            return False
        tables = {params.get("TableName"), *params.get("RequestItems", {})}
        if self.table is not None and self.table not in tables:
            return False
        return self.when is None or self.when(params)


class DynamoDBFaults:
    """Install with ``install(monkeypatch)``; then ``fail(...)`` what should fail."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self.calls: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> DynamoDBFaults:
        for operation, method in _HANDLER_METHODS.items():
            monkeypatch.setattr(
                DynamoHandler, method, self._wrap(operation, getattr(DynamoHandler, method))
            )
        return self

    def fail(
        self,
        *operations: str,
        error: DynamoDBError = THROTTLED,
        times: int | None = None,
        after_write: bool = False,
        table: str | None = None,
        when: Callable[[Mapping[str, Any]], bool] | None = None,
    ) -> None:
        """Answer ``operations`` with ``error``: the next ``times`` calls, or until cleared.

        ``table`` limits the fault to one table; ``when`` sees the request's parameters
        (``TableName``, ``ExpressionAttributeValues``...).
        """
        unknown = set(operations) - set(_HANDLER_METHODS)
        assert not unknown, f"not an operation this fake can fail: {unknown}"
        with self._lock:
            self._rules.append(_Rule(frozenset(operations), error, times, after_write, table, when))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def _failure_for(self, operation: str, params: Mapping[str, Any]) -> _Rule | None:
        with self._lock:
            self.calls[operation] += 1
            for rule in self._rules:
                if rule.matches(operation, params):
                    if rule.remaining is not None:
                        rule.remaining -= 1
                    self.failures[operation] += 1
                    return rule
            return None

    def _wrap(self, operation: str, original: Callable[[DynamoHandler], Any]) -> Callable[..., Any]:
        faults = self

        def handle(handler: DynamoHandler) -> Any:
            rule = faults._failure_for(operation, getattr(handler, "body", None) or {})
            if rule is None:
                return original(handler)
            if rule.after_write:
                original(handler)
            raise rule.error.exception()

        return handle


def without_retry_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """botocore still retries, but without sleeping: its backoff timing is not under test."""
    monkeypatch.setattr(ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
