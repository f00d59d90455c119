"""Configuration, read once from the environment into a typed, immutable object.

Only this module reads ``os.environ``; everything else receives a ``Settings``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

# API Gateway closes every WebSocket after 2 hours; rows live a little longer so a
# connection never disappears from the table while its socket is still open.
MAX_CONNECTION_LIFETIME_SECONDS = 2 * 60 * 60
TTL_MARGIN_SECONDS = 10 * 60


class SettingsError(ValueError):
    """A configuration value is missing or malformed."""


@dataclass(frozen=True)
class Settings:
    table_name: str
    region: str
    queue_url: str
    dead_letter_queue_url: str
    management_endpoint: str
    allowed_platforms: frozenset[str]
    connection_ttl_seconds: int = MAX_CONNECTION_LIFETIME_SECONDS + TTL_MARGIN_SECONDS
    delivery_concurrency: int = 32
    max_post_attempts: int = 3
    max_requeues: int = 3
    backoff_base_ms: int = 50
    backoff_cap_ms: int = 2_000
    requeue_delay_seconds: int = 5
    page_size: int | None = None
    # Room left for posts already in flight (connect + read timeout) and the re-queue after.
    deadline_margin_ms: int = 5_000

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        platforms = env.get("WSPUSH_ALLOWED_PLATFORMS", "")
        return cls(
            table_name=_required(env, "WSPUSH_TABLE_NAME"),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            queue_url=env.get("WSPUSH_QUEUE_URL", ""),
            dead_letter_queue_url=env.get("WSPUSH_DLQ_URL", ""),
            management_endpoint=env.get("WSPUSH_MANAGEMENT_ENDPOINT", ""),
            allowed_platforms=frozenset(p.strip() for p in platforms.split(",") if p.strip()),
            delivery_concurrency=_int(env, "WSPUSH_DELIVERY_CONCURRENCY", 32, minimum=1),
            max_post_attempts=_int(env, "WSPUSH_MAX_POST_ATTEMPTS", 3, minimum=1),
            max_requeues=_int(env, "WSPUSH_MAX_REQUEUES", 3, minimum=0),
            backoff_base_ms=_int(env, "WSPUSH_BACKOFF_BASE_MS", 50, minimum=0),
            backoff_cap_ms=_int(env, "WSPUSH_BACKOFF_CAP_MS", 2_000, minimum=0),
            requeue_delay_seconds=_int(env, "WSPUSH_REQUEUE_DELAY_SECONDS", 5, minimum=0),
            page_size=_optional_int(env, "WSPUSH_PAGE_SIZE"),
            deadline_margin_ms=_int(env, "WSPUSH_DEADLINE_MARGIN_MS", 5_000, minimum=0),
        )


@cache
def get_settings() -> Settings:
    """The process-wide settings, read on first use."""
    return Settings.from_env(os.environ)


def _required(env: Mapping[str, str], name: str) -> str:
    value = env.get(name, "").strip()
    if not value:
        raise SettingsError(f"environment variable {name} is required")
    return value


def _int(env: Mapping[str, str], name: str, default: int, *, minimum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise SettingsError(f"{name} must be an integer, got {raw!r}") from exc
    if value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, got {value}")
    return value


def _optional_int(env: Mapping[str, str], name: str) -> int | None:
    if not env.get(name, "").strip():
        return None
    return _int(env, name, 0, minimum=1)
