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
    """Points on the monotonic clock that bound one invocation's work.

    ``at``: no new work (a message, a post, a retry) starts after it. ``cut``: posts still in
    flight are abandoned, so what must be written after them (re-queues, dead letters, the
    processed record) still fits. ``end``: the function's own time limit.
    """

    at: float
    clock: Callable[[], float] = field(default=time.monotonic, compare=False, repr=False)
    cut: float = float("inf")
    end: float = float("inf")

    @classmethod
    def never(cls) -> Deadline:
        return cls(float("inf"))

    @classmethod
    def of(cls, context: HasRemainingTime, *, margin_ms: int, reserve_ms: int = 0) -> Deadline:
        """The Lambda's own time limit, less a margin for the work already in flight and,
        within it, a reserve for settling that work."""
        end = time.monotonic() + context.get_remaining_time_in_millis() / 1000
        return cls(end - margin_ms / 1000, cut=end - reserve_ms / 1000, end=end)

    def remaining(self) -> float:
        return self.at - self.clock()

    def passed(self) -> bool:
        return self.remaining() <= 0

    def until_cut(self) -> float:
        return self.cut - self.clock()

    def left(self) -> float:
        """Seconds until the function's time limit."""
        return self.end - self.clock()
