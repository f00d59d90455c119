"""Time: the contract's timestamps, and the deadline an invocation must finish by."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol


def now_ms() -> int:
    """Milliseconds since the epoch (the unit of ``ts``, ``connectedAt``, ``lastSeenAt``)."""
    return time.time_ns() // 1_000_000


class HasRemainingTime(Protocol):
    def get_remaining_time_in_millis(self) -> int: ...


@dataclass(frozen=True)
class Deadline:
    """A point on the monotonic clock after which no new work may start."""

    at: float
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)

    @classmethod
    def never(cls) -> Deadline:
        return cls(float("inf"))

    @classmethod
    def of(cls, context: HasRemainingTime, *, margin_ms: int) -> Deadline:
        """The Lambda's own time limit, less a margin for the work already in flight."""
        remaining_ms = context.get_remaining_time_in_millis() - margin_ms
        return cls(time.monotonic() + remaining_ms / 1000)

    def remaining(self) -> float:
        return self.at - self.clock()

    def passed(self) -> bool:
        return self.remaining() <= 0
