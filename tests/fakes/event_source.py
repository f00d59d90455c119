"""Lambda's side of the sender, in process: a context whose time runs out, and the SQS
event source mapping that feeds the handler from moto's queue.

The mapping is ``local.poller.QueuePoller`` (receive up to 10, invoke, delete only the
records not reported failed). With the queue's visibility timeout at 0, a failed record
is visible again at once (no waiting in tests), and moto applies the queue's redrive
policy from serverless.yml itself: a record received ``maxReceiveCount`` (5) times moves
to the dead-letter queue on its next receive, as SQS does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import boto3

from handlers import sender
from local.poller import QueuePoller
from tests.conftest import REGION, FakeLambdaContext


@dataclass
class CountdownContext(FakeLambdaContext):
    """A context whose remaining time runs down from the invocation's start, as Lambda's does."""

    started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        elapsed_ms = int((time.monotonic() - self.started) * 1000)
        return max(0, self.remaining_ms - elapsed_ms)


@dataclass
class Invocation:
    records: int
    failed: int
    remaining_ms: int


def redeliver_at_once(queue_url: str) -> None:
    """Visibility timeout 0: a record the sender reports failed can be received again at once."""
    boto3.client("sqs", region_name=REGION).set_queue_attributes(
        QueueUrl=queue_url, Attributes={"VisibilityTimeout": "0"}
    )


class SenderEventSource:
    """Invokes ``handlers.sender.handler`` with batches from ``queue_url`` until it is empty.

    ``budget(n)`` is the time the n-th invocation (0-based) starts with, in ms.
    """

    def __init__(
        self,
        queue_url: str,
        *,
        budget: Callable[[int], int] = lambda _: 30_000,
    ) -> None:
        self._budget = budget
        self.invocations: list[Invocation] = []
        self._poller = QueuePoller(
            boto3.client("sqs", region_name=REGION), queue_url, self._invoke, wait_seconds=0
        )

    @property
    def errors(self) -> list[str]:
        """Invocations that raised instead of answering (Lambda would retry the whole batch)."""
        return self._poller.errors

    def run_until_empty(self, *, max_invocations: int = 10_000) -> int:
        """Poll and invoke until a receive comes back empty; the number of invocations."""
        polls = 0
        while self._poller.poll_once():
            polls += 1
            if polls >= max_invocations:
                raise AssertionError(f"the queue did not drain in {max_invocations} invocations")
        return polls

    def _invoke(self, event: dict[str, Any]) -> dict[str, Any]:
        number = len(self.invocations)
        remaining_ms = self._budget(number)
        context = CountdownContext(remaining_ms=remaining_ms)
        response: dict[str, Any] = dict(sender.handler(event, context))
        failed = len(response.get("batchItemFailures", []))
        self.invocations.append(Invocation(len(event["Records"]), failed, remaining_ms))
        return response
