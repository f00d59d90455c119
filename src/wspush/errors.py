"""Domain exceptions. The edges (handlers) turn them into status codes and replies."""

from __future__ import annotations


class WspushError(Exception):
    """Base class of every error this package raises on purpose."""


class InvalidMessage(WspushError):
    """A service sent a message that breaks the contract. Retrying will not help."""

    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def as_dict(self) -> dict[str, str | None]:
        return {"code": self.code, "message": self.message, "field": self.field}


class ConnectionRefused(WspushError):
    """A WebSocket handshake is refused; nothing is stored. ``reason`` is safe to log."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class BadHandshake(ConnectionRefused):
    """The handshake's query is missing or malformed."""


class Unauthenticated(ConnectionRefused):
    """No token, or a token that does not verify (signature, expiry, issuer, audience...)."""


class Forbidden(ConnectionRefused):
    """A valid token that does not allow this connection (e.g. another user's id asked)."""


class ChannelRefused(WspushError):
    """A subscribe, unsubscribe or presence request is refused; ``code`` is the contract's
    (``forbidden``, ``invalid_channel``, ``unknown_namespace``, ``too_many_channels``...)."""

    def __init__(self, code: str, message: str, channel: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.channel = channel


class AuthUnavailable(WspushError):
    """The keys needed to check a token could not be had: fail closed, retry later."""


class StorageUnavailable(WspushError):
    """The connections table could not be read or written. Retrying may help."""


class QueueUnavailable(WspushError):
    """A message could not be put on the queue or the dead-letter queue."""


class DeadlineReached(WspushError):
    """The invocation is about to run out of time; the work was not started."""


class InvalidEvent(WspushError):
    """A function's event is not what its trigger sends (e.g. a scheduled event's time)."""


class RotationIncomplete(WspushError):
    """Some buckets due for rotation could not be queued: the tick is tried again (Lambda's
    retries of an asynchronous invocation), and later ticks catch up on them."""
