"""Seeded random faults for the fake Management API: the same seed gives the same faults.

Each post's answer is drawn from a generator seeded with (seed, connection, message, try
number), so it does not depend on the order in which threads happen to post. Besides
independent per-post faults, a (message, connection) pair may start with a streak of one
retryable fault (a client whose buffer stays full, a gateway node that keeps failing),
long enough to outlast one invocation's retries or even every re-queue round.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from tests.fakes.management_api import Reply

# Streaks of timeouts would make every test wait READ_TIMEOUT per post: single ones suffice.
STREAKS = ("429", "500", "reset")


def default_weights() -> dict[str, float]:
    return {
        "200": 0.87,
        "410": 0.003,
        "429": 0.05,
        "500": 0.03,
        "413": 0.008,
        "403": 0.008,
        "timeout": 0.005,
        "reset": 0.026,
    }


@dataclass(frozen=True)
class FaultMix:
    """How often each answer happens. ``timeout_seconds`` must exceed the client's read timeout."""

    weights: Mapping[str, float] = field(default_factory=default_weights)
    streak_rate: float = 0.04
    max_streak: int = 13
    timeout_seconds: float = 0.5


class SeededFaults:
    """A plan for ``FakeManagementApi.plan``: answers a post from the seed alone."""

    def __init__(self, seed: int, mix: FaultMix | None = None) -> None:
        self.seed = seed
        self.mix = mix or FaultMix()
        self._kinds = list(self.mix.weights)
        self._weights = [self.mix.weights[kind] for kind in self._kinds]

    def __call__(self, connection_id: str, message_id: str | None, tries: int) -> Reply:
        pair = random.Random(f"{self.seed}/{connection_id}/{message_id}")
        if pair.random() < self.mix.streak_rate:
            kind = pair.choice(STREAKS)
            if tries < pair.randint(1, self.mix.max_streak):
                return self.reply(kind)
        post = random.Random(f"{self.seed}/{connection_id}/{message_id}/{tries}")
        return self.reply(post.choices(self._kinds, self._weights)[0])

    def reply(self, kind: str) -> Reply:
        if kind == "timeout":
            return Reply.timeout(self.mix.timeout_seconds)
        if kind == "reset":
            return Reply.connection_reset()
        return Reply.aws(int(kind))
