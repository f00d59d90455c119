"""Configuration, read once from the environment into a typed, immutable object.

Only this module reads ``os.environ``; everything else receives a ``Settings``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cache

# API Gateway closes every WebSocket after 2 hours; rows live a little longer so a
# connection never disappears from the table while its socket is still open.
MAX_CONNECTION_LIFETIME_SECONDS = 2 * 60 * 60
TTL_MARGIN_SECONDS = 10 * 60


# `none` trusts the client's userId: only for the local stack (`make dev`).
INSECURE_AUTH_STAGES = frozenset(("local",))
HMAC_ALGORITHMS = frozenset(("HS256", "HS384", "HS512"))
PUBLIC_KEY_ALGORITHMS = frozenset(("RS256", "RS384", "RS512", "ES256", "ES384"))


class SettingsError(ValueError):
    """A configuration value is missing or malformed."""


# A channel is `namespace:name`; the namespace is declared in WSPUSH_NAMESPACES.
NAMESPACE_PATTERN = re.compile(r"[a-z0-9-]{1,32}")
DEFAULT_MAX_MEMBERS = 10_000
MAX_HISTORY_SIZE = 10_000


class Access(StrEnum):
    """Who may subscribe to a namespace's channels. Either way, a channel named by the
    connection's token (its ``channels`` claim) or allowed by the channel authorizer is open."""

    AUTHENTICATED = "authenticated"  # every connection that passed $connect
    RESTRICTED = "restricted"  # only through the token's claim or the authorizer


@dataclass(frozen=True)
class History:
    """How much of a channel's stream is kept for recovery: the last ``size`` messages, none
    older than ``ttl_seconds``."""

    size: int
    ttl_seconds: int


@dataclass(frozen=True)
class Namespace:
    """One declared namespace and its options."""

    name: str
    access: Access = Access.RESTRICTED
    presence: bool = False
    history: History | None = None
    max_members: int = DEFAULT_MAX_MEMBERS

    @classmethod
    def parse(cls, name: str, options: object) -> Namespace:
        where = f"WSPUSH_NAMESPACES[{name!r}]"
        if not NAMESPACE_PATTERN.fullmatch(name):
            raise SettingsError(f"{where}: a namespace name is 1-32 of a-z, 0-9 and -")
        if not isinstance(options, dict):
            raise SettingsError(f"{where} must be an object")
        unknown = sorted(set(options) - {"subscribe", "presence", "history", "maxMembers"})
        if unknown:
            raise SettingsError(f"{where}: unknown option {unknown[0]!r}")
        try:
            access = Access(options.get("subscribe", Access.RESTRICTED))
        except ValueError as exc:
            choices = " or ".join(repr(a.value) for a in Access)
            raise SettingsError(f"{where}.subscribe must be {choices}") from exc
        presence = options.get("presence", False)
        if not isinstance(presence, bool):
            raise SettingsError(f"{where}.presence must be true or false")
        return cls(
            name=name,
            access=access,
            presence=presence,
            history=_history(where, options.get("history")),
            max_members=_positive(where, "maxMembers", options.get("maxMembers"))
            or DEFAULT_MAX_MEMBERS,
        )


def parse_namespaces(raw: str) -> tuple[Namespace, ...]:
    """WSPUSH_NAMESPACES: a JSON object of namespace name -> options (empty: no channels)."""
    if not raw.strip():
        return ()
    try:
        declared = json.loads(raw)
    except ValueError as exc:
        raise SettingsError("WSPUSH_NAMESPACES is not valid JSON") from exc
    if not isinstance(declared, dict):
        raise SettingsError("WSPUSH_NAMESPACES must be a JSON object")
    return tuple(Namespace.parse(name, options) for name, options in declared.items())


# Each user's own stream: kept unless WSPUSH_USER_HISTORY says otherwise (README "Recovery").
DEFAULT_USER_HISTORY = History(size=100, ttl_seconds=3_600)


def parse_user_history(raw: str) -> History | None:
    """WSPUSH_USER_HISTORY: empty for the default, ``off``, or ``{"size", "ttlSeconds"}``."""
    text = raw.strip()
    if not text:
        return DEFAULT_USER_HISTORY
    if text.lower() == "off":
        return None
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise SettingsError('WSPUSH_USER_HISTORY must be "off" or a JSON object') from exc
    return _history("WSPUSH_USER_HISTORY", value)


def _history(where: str, value: object) -> History | None:
    if value is None or value is False:
        return None
    if not isinstance(value, dict) or set(value) - {"size", "ttlSeconds"}:
        raise SettingsError(f'{where}.history must be {{"size": n, "ttlSeconds": n}} or null')
    size = _positive(where, "history.size", value.get("size")) or 100
    if size > MAX_HISTORY_SIZE:
        raise SettingsError(f"{where}.history.size must be at most {MAX_HISTORY_SIZE}")
    return History(size, _positive(where, "history.ttlSeconds", value.get("ttlSeconds")) or 86_400)


def _positive(where: str, name: str, value: object) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise SettingsError(f"{where}.{name} must be a positive integer")
    return value


class AuthMode(StrEnum):
    NONE = "none"
    JWT = "jwt"


@dataclass(frozen=True)
class AuthSettings:
    """How ``$connect`` knows who is connecting. Only one key source is ever configured,
    and the algorithm list is explicit, so HMAC/public-key confusion cannot happen."""

    mode: AuthMode = AuthMode.JWT
    algorithms: frozenset[str] = frozenset()
    issuer: str = ""
    audience: str = ""
    user_claim: str = "sub"
    leeway_seconds: int = 30
    jwks_url: str = ""
    jwks_timeout_ms: int = 2_000
    secret_parameter: str = ""  # SSM Parameter Store (SecureString) name
    secret_arn: str = ""  # or a Secrets Manager secret
    max_token_length: int = 4_096

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AuthSettings:
        try:
            mode = AuthMode(env.get("WSPUSH_AUTH_MODE", AuthMode.JWT).strip().lower())
        except ValueError as exc:
            raise SettingsError("WSPUSH_AUTH_MODE must be 'jwt' or 'none'") from exc
        if mode is AuthMode.NONE:
            stage = env.get("WSPUSH_STAGE", "")
            if stage not in INSECURE_AUTH_STAGES:
                raise SettingsError(
                    f"WSPUSH_AUTH_MODE=none is allowed only on stages "
                    f"{', '.join(sorted(INSECURE_AUTH_STAGES))}, not {stage!r}"
                )
            return cls(mode=mode)
        auth = cls(
            mode=mode,
            algorithms=frozenset(_list(env.get("WSPUSH_JWT_ALGORITHMS", "RS256"))),
            issuer=env.get("WSPUSH_JWT_ISSUER", "").strip(),
            audience=env.get("WSPUSH_JWT_AUDIENCE", "").strip(),
            user_claim=env.get("WSPUSH_JWT_USER_CLAIM", "").strip() or "sub",
            leeway_seconds=_int(env, "WSPUSH_JWT_LEEWAY_SECONDS", 30, minimum=0),
            jwks_url=env.get("WSPUSH_JWKS_URL", "").strip(),
            jwks_timeout_ms=_int(env, "WSPUSH_JWKS_TIMEOUT_MS", 2_000, minimum=1),
            secret_parameter=env.get("WSPUSH_JWT_SECRET_PARAMETER", "").strip(),
            secret_arn=env.get("WSPUSH_JWT_SECRET_ARN", "").strip(),
        )
        auth.check()
        return auth

    def check(self) -> None:
        """Refuse any combination that could let a forged token through."""
        sources = [s for s in (self.jwks_url, self.secret_parameter, self.secret_arn) if s]
        if len(sources) != 1:
            raise SettingsError(
                "jwt auth needs exactly one key source: WSPUSH_JWKS_URL, "
                "WSPUSH_JWT_SECRET_PARAMETER or WSPUSH_JWT_SECRET_ARN"
            )
        if self.secret_parameter and not self.secret_parameter.startswith("/"):
            raise SettingsError(
                "WSPUSH_JWT_SECRET_PARAMETER must be a path such as /wspush/prod/jwt"
            )
        if not self.issuer or not self.audience:
            raise SettingsError("jwt auth needs WSPUSH_JWT_ISSUER and WSPUSH_JWT_AUDIENCE")
        allowed = PUBLIC_KEY_ALGORITHMS if self.jwks_url else HMAC_ALGORITHMS
        if not self.algorithms or not self.algorithms <= allowed:
            raise SettingsError(
                f"WSPUSH_JWT_ALGORITHMS must be a non-empty subset of "
                f"{', '.join(sorted(allowed))} for this key source"
            )


@dataclass(frozen=True)
class Settings:
    table_name: str
    region: str
    queue_url: str
    dead_letter_queue_url: str
    management_endpoint: str
    allowed_platforms: frozenset[str]
    connection_ttl_seconds: int = MAX_CONNECTION_LIFETIME_SECONDS + TTL_MARGIN_SECONDS
    delivery_concurrency: int = 128
    max_post_attempts: int = 3
    max_requeues: int = 3
    backoff_base_ms: int = 50
    backoff_cap_ms: int = 2_000
    requeue_delay_seconds: int = 5
    page_size: int | None = None
    # No post starts this close to the function's timeout; posts still in flight this close
    # (settle_reserve_ms) are abandoned, so re-queues, dead letters and the processed record
    # are written before Lambda stops the function.
    deadline_margin_ms: int = 5_000
    settle_reserve_ms: int = 2_000
    # API Gateway answers 410 for a connection whose $connect has not returned yet: a 410 for
    # a connection younger than this is retried, and its row kept.
    connect_grace_ms: int = 10_000
    # Where processed message keys are remembered (empty: not remembered), and for how long.
    processed_table_name: str = ""
    idempotency_ttl_seconds: int = 3_600
    # Big audiences are split so many sender invocations deliver in parallel: a broadcast into
    # scan segments of about this many connections, a user list into chunks of this many users.
    connections_per_segment: int = 2_000
    users_per_chunk: int = 500
    # A broadcast past one page of connections_per_segment is split into at least this many
    # scan segments (more when DynamoDB's item count, refreshed every ~6 hours, says so).
    broadcast_segments: int = 8
    # A message another invocation is handling is put back on the queue this much later.
    busy_retry_seconds: int = 30
    # How posts reach the Management API, read as boto3 reads them: the CA bundle to trust
    # instead of the system's (AWS_CA_BUNDLE, else REQUESTS_CA_BUNDLE), the proxies
    # (HTTPS_PROXY, HTTP_PROXY, NO_PROXY; a lower-case name wins, as urllib reads them), and
    # how many connections may be in their handshake at once (see gateway.py).
    ca_bundle: str = ""
    https_proxy: str = ""
    http_proxy: str = ""
    no_proxy: str = ""
    max_handshakes: int = 8
    # Channels: the second table (subscriptions and presence), the declared namespaces, and
    # how many channels one connection may hold.
    channels_table_name: str = ""
    namespaces: tuple[Namespace, ...] = ()
    max_channels_per_connection: int = 128
    # The deployer's channel authorizer (a Lambda function name or ARN; empty: none), and
    # how long a subscribe waits for its answer.
    channel_authorizer: str = ""
    channel_authorizer_timeout_ms: int = 2_000
    # Where user.online / user.offline events go (empty: not sent).
    event_bus_name: str = ""
    # Recovery: the history table (streams' positions and kept messages), how much of each
    # user's own stream is kept (None: no user history), and how much one replay may post.
    history_table_name: str = ""
    user_history: History | None = DEFAULT_USER_HISTORY
    max_replay_messages: int = 500
    max_replay_bytes: int = 2 * 1024 * 1024
    # Rotation: API Gateway cuts every connection this long after it opened (configurable for
    # local runs only); wspush asks clients to reconnect this long before (0: never), sweeping
    # connections whose warning is due in buckets of this many seconds.
    max_connection_seconds: int = MAX_CONNECTION_LIFETIME_SECONDS
    rotation_lead_seconds: int = 600
    rotation_bucket_seconds: int = 60

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        return cls(
            table_name=_required(env, "WSPUSH_TABLE_NAME"),
            region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
            queue_url=env.get("WSPUSH_QUEUE_URL", ""),
            dead_letter_queue_url=env.get("WSPUSH_DLQ_URL", ""),
            management_endpoint=env.get("WSPUSH_MANAGEMENT_ENDPOINT", ""),
            allowed_platforms=frozenset(_list(env.get("WSPUSH_ALLOWED_PLATFORMS", ""))),
            delivery_concurrency=_int(env, "WSPUSH_DELIVERY_CONCURRENCY", 128, minimum=1),
            max_post_attempts=_int(env, "WSPUSH_MAX_POST_ATTEMPTS", 3, minimum=1),
            max_requeues=_int(env, "WSPUSH_MAX_REQUEUES", 3, minimum=0),
            backoff_base_ms=_int(env, "WSPUSH_BACKOFF_BASE_MS", 50, minimum=0),
            backoff_cap_ms=_int(env, "WSPUSH_BACKOFF_CAP_MS", 2_000, minimum=0),
            requeue_delay_seconds=_int(env, "WSPUSH_REQUEUE_DELAY_SECONDS", 5, minimum=0),
            page_size=_optional_int(env, "WSPUSH_PAGE_SIZE"),
            deadline_margin_ms=_int(env, "WSPUSH_DEADLINE_MARGIN_MS", 5_000, minimum=0),
            settle_reserve_ms=_int(env, "WSPUSH_SETTLE_RESERVE_MS", 2_000, minimum=0),
            connect_grace_ms=_int(env, "WSPUSH_CONNECT_GRACE_MS", 10_000, minimum=0),
            processed_table_name=env.get("WSPUSH_PROCESSED_TABLE_NAME", "").strip(),
            idempotency_ttl_seconds=_int(env, "WSPUSH_IDEMPOTENCY_TTL_SECONDS", 3_600, minimum=60),
            connections_per_segment=_int(env, "WSPUSH_CONNECTIONS_PER_SEGMENT", 2_000, minimum=1),
            users_per_chunk=_int(env, "WSPUSH_USERS_PER_CHUNK", 500, minimum=1),
            broadcast_segments=_int(env, "WSPUSH_BROADCAST_SEGMENTS", 8, minimum=1),
            busy_retry_seconds=_int(env, "WSPUSH_BUSY_RETRY_SECONDS", 30, minimum=0),
            ca_bundle=(
                env.get("AWS_CA_BUNDLE", "").strip() or env.get("REQUESTS_CA_BUNDLE", "").strip()
            ),
            https_proxy=_proxy(env, "https"),
            http_proxy=_proxy(env, "http"),
            no_proxy=_proxy(env, "no"),
            max_handshakes=_int(env, "WSPUSH_MAX_HANDSHAKES", 8, minimum=1),
            channels_table_name=env.get("WSPUSH_CHANNELS_TABLE_NAME", "").strip(),
            namespaces=parse_namespaces(env.get("WSPUSH_NAMESPACES", "")),
            max_channels_per_connection=_int(
                env, "WSPUSH_MAX_CHANNELS_PER_CONNECTION", 128, minimum=1
            ),
            channel_authorizer=env.get("WSPUSH_CHANNEL_AUTHORIZER", "").strip(),
            channel_authorizer_timeout_ms=_int(
                env, "WSPUSH_CHANNEL_AUTHORIZER_TIMEOUT_MS", 2_000, minimum=1
            ),
            event_bus_name=env.get("WSPUSH_EVENT_BUS_NAME", "").strip(),
            history_table_name=env.get("WSPUSH_HISTORY_TABLE_NAME", "").strip(),
            user_history=parse_user_history(env.get("WSPUSH_USER_HISTORY", "")),
            max_replay_messages=_int(env, "WSPUSH_MAX_REPLAY_MESSAGES", 500, minimum=1),
            max_replay_bytes=_int(env, "WSPUSH_MAX_REPLAY_BYTES", 2 * 1024 * 1024, minimum=1),
            max_connection_seconds=_int(
                env, "WSPUSH_MAX_CONNECTION_SECONDS", MAX_CONNECTION_LIFETIME_SECONDS, minimum=10
            ),
            rotation_lead_seconds=_int(env, "WSPUSH_ROTATION_LEAD_SECONDS", 600, minimum=0),
            rotation_bucket_seconds=_int(env, "WSPUSH_ROTATION_BUCKET_SECONDS", 60, minimum=1),
        ).checked()

    def namespace(self, name: str) -> Namespace | None:
        """A declared namespace, or None."""
        return next((ns for ns in self.namespaces if ns.name == name), None)

    def checked(self) -> Settings:
        if self.rotation_lead_seconds >= self.max_connection_seconds:
            raise SettingsError(
                "WSPUSH_ROTATION_LEAD_SECONDS must be less than WSPUSH_MAX_CONNECTION_SECONDS "
                f"({self.rotation_lead_seconds} >= {self.max_connection_seconds})"
            )
        if self.rotation_lead_seconds and (
            self.rotation_lead_seconds + self.rotation_bucket_seconds >= self.max_connection_seconds
        ):
            # A connection's bucket is swept once, up to `lead` and a bucket before its cut:
            # that must come after the connection opened, or it is missed.
            raise SettingsError(
                "WSPUSH_ROTATION_LEAD_SECONDS plus WSPUSH_ROTATION_BUCKET_SECONDS must be less "
                f"than WSPUSH_MAX_CONNECTION_SECONDS ({self.rotation_lead_seconds} + "
                f"{self.rotation_bucket_seconds} >= {self.max_connection_seconds})"
            )
        if self.settle_reserve_ms > self.deadline_margin_ms:
            raise SettingsError(
                "WSPUSH_SETTLE_RESERVE_MS must not exceed WSPUSH_DEADLINE_MARGIN_MS "
                f"({self.settle_reserve_ms} > {self.deadline_margin_ms})"
            )
        return self


@cache
def get_settings() -> Settings:
    """The process-wide settings, read on first use."""
    return Settings.from_env(os.environ)


@cache
def get_auth_settings() -> AuthSettings:
    """``$connect``'s authentication settings, read on first use (only that route needs
    them: a misconfiguration refuses connections, it never stops delivery)."""
    return AuthSettings.from_env(os.environ)


def _list(raw: str) -> list[str]:
    return [item.strip() for item in raw.split(",") if item.strip()]


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


def _proxy(env: Mapping[str, str], scheme: str) -> str:
    """``<scheme>_proxy`` as urllib (and so botocore) reads it: the lower-case variable, even
    empty, wins over the upper-case one."""
    lower = env.get(f"{scheme}_proxy")
    if lower is not None:
        return lower.strip()
    return env.get(f"{scheme.upper()}_PROXY", "").strip()


def _optional_int(env: Mapping[str, str], name: str) -> int | None:
    if not env.get(name, "").strip():
        return None
    return _int(env, name, 0, minimum=1)
