"""Drives the rotation sweeper the way its EventBridge schedule does, and sets the local
connection lifetime.

Deployed, API Gateway cuts every connection after 7200 s and a rule runs the ``rotation``
function each minute (one bucket). Locally the three can be short, so that rotation can be
watched and tested in a minute: ``WSPUSH_LOCAL_MAX_CONNECTION_SECONDS`` (serverless-offline's
``webSocketHardTimeout`` cuts each connection then, with 1001, as API Gateway does),
``WSPUSH_LOCAL_ROTATION_LEAD_SECONDS`` and ``WSPUSH_LOCAL_ROTATION_BUCKET_SECONDS``; by default
they are AWS's. The ticker invokes the function at the start of each bucket, through
serverless-offline's Lambda API as the other pollers do, with the event EventBridge sends (a
``Scheduled Event`` whose ``time`` is the tick's). As Lambda does with an asynchronous
invocation that failed, it tries the same event again twice, one and three minutes later.
serverless-offline's own scheduler (once a minute, with an event unlike EventBridge's) is
turned off.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from local.poller import Invoke
from wspush.settings import MAX_CONNECTION_LIFETIME_SECONDS, Settings, SettingsError
from wspush.tools.local import ACCOUNT_ID, REGION, STAGE

VARIABLES = {
    "max_connection_seconds": "WSPUSH_LOCAL_MAX_CONNECTION_SECONDS",
    "lead_seconds": "WSPUSH_LOCAL_ROTATION_LEAD_SECONDS",
    "bucket_seconds": "WSPUSH_LOCAL_ROTATION_BUCKET_SECONDS",
}
# Lambda tries a failed asynchronous invocation twice more: a minute later, then two more.
RETRY_DELAYS_SECONDS = (60, 120)


@dataclass(frozen=True)
class LocalRotation:
    """The local stack's connection lifetime and rotation settings."""

    max_connection_seconds: int = MAX_CONNECTION_LIFETIME_SECONDS
    lead_seconds: int = 600
    bucket_seconds: int = 60

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> LocalRotation:
        """Read from ``WSPUSH_LOCAL_*``, checked as the functions will check them."""
        given = {field: env[name] for field, name in VARIABLES.items() if env.get(name, "")}
        try:
            values = {field: int(value) for field, value in given.items()}
            rotation = cls(**values)
            rotation.settings()
        except (ValueError, SettingsError) as exc:
            named = ", ".join(f"{VARIABLES[field]}={value}" for field, value in given.items())
            raise SettingsError(
                f"{exc}; make dev sets them from {', '.join(VARIABLES.values())} "
                f"(given: {named or 'none'})"
            ) from exc
        return rotation

    def settings(self) -> Settings:
        """The functions' settings with these values (raises ``SettingsError``)."""
        return Settings.from_env(
            {
                "WSPUSH_TABLE_NAME": "local",
                "WSPUSH_MAX_CONNECTION_SECONDS": str(self.max_connection_seconds),
                "WSPUSH_ROTATION_LEAD_SECONDS": str(self.lead_seconds),
                "WSPUSH_ROTATION_BUCKET_SECONDS": str(self.bucket_seconds),
            }
        )

    def environment(self) -> dict[str, str]:
        """serverless-offline's environment: the functions' settings, its cut, no scheduler."""
        return {
            "LOCAL_MAX_CONNECTION_SECONDS": str(self.max_connection_seconds),
            "LOCAL_ROTATION_LEAD_SECONDS": str(self.lead_seconds),
            "LOCAL_ROTATION_BUCKET_SECONDS": str(self.bucket_seconds),
            "LOCAL_ROTATION_SCHEDULE": "false",
        }

    def describe(self) -> str:
        if not self.lead_seconds:
            return f"off; connections cut after {self.max_connection_seconds} s"
        return (
            f"reconnect asked {self.lead_seconds} s before the cut at "
            f"{self.max_connection_seconds} s, swept every {self.bucket_seconds} s"
        )


def scheduled_event(at_s: int) -> dict[str, Any]:
    """The event EventBridge gives a function its schedule rule runs."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": datetime.fromtimestamp(at_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": REGION,
        "resources": [f"arn:aws:events:{REGION}:{ACCOUNT_ID}:rule/wspush-{STAGE}-rotation"],
        "detail": {},
    }


@dataclass
class _Retry:
    at: float  # on the wall clock
    event: dict[str, Any]
    left: tuple[int, ...]  # delays of the retries after this one


class RotationTicker:
    """Invokes the sweeper at the start of every bucket until stopped."""

    def __init__(
        self,
        invoke: Invoke,
        bucket_seconds: int,
        *,
        clock: Callable[[], float] = time.time,
        retry_delays: tuple[int, ...] = RETRY_DELAYS_SECONDS,
    ) -> None:
        self._invoke = invoke
        self._bucket = bucket_seconds
        self._clock = clock
        self._retry_delays = retry_delays
        self._retries: list[_Retry] = []
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rotation-ticker", daemon=True)
        self.errors: list[str] = []

    def start(self) -> RotationTicker:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)

    def tick(self, at_s: int) -> None:
        """One tick of the schedule, due at ``at_s``."""
        self._deliver(scheduled_event(at_s), self._retry_delays)

    def retry_due(self) -> None:
        """Try again the failed ticks whose retry is due."""
        now = self._clock()
        due = [retry for retry in self._retries if retry.at <= now]
        self._retries = [retry for retry in self._retries if retry.at > now]
        for retry in due:
            self._deliver(retry.event, retry.left)

    def _deliver(self, event: dict[str, Any], retries: tuple[int, ...]) -> None:
        try:
            self._invoke(event)
        except Exception as exc:  # like Lambda: an async invocation that failed is retried
            self._note(f"rotation invocation failed ({event['time']}): {exc}")
            if retries:
                self._retries.append(_Retry(self._clock() + retries[0], event, retries[1:]))

    def _run(self) -> None:
        while not self._stopped.is_set():
            now = self._clock()
            next_tick = (int(now) // self._bucket + 1) * self._bucket
            if self._stopped.wait(max(next_tick - now, 0)):
                return
            self.tick(next_tick)
            self.retry_due()

    def _note(self, problem: str) -> None:
        self.errors.append(problem)
        print(f"rotation ticker: {problem}", flush=True)
