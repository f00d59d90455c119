"""The API Gateway Management API: the only module that posts to connections.

Each post ends in one ``PostOutcome``. Status codes decide, not error codes: a
dead connection is HTTP 410 whether the error says ``GoneException`` (AWS) or just
``410`` (serverless-offline).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError


class PostOutcome(StrEnum):
    DELIVERED = "delivered"
    GONE = "gone"
    THROTTLED = "throttled"
    TOO_LARGE = "too_large"
    FORBIDDEN = "forbidden"
    REJECTED = "rejected"  # any other 4xx: the request itself is wrong, retrying cannot help
    ERROR = "error"


_RETRYABLE = frozenset((PostOutcome.THROTTLED, PostOutcome.ERROR))
_REQUEST_TIMEOUT = 408
_BY_STATUS = {
    410: PostOutcome.GONE,
    429: PostOutcome.THROTTLED,
    413: PostOutcome.TOO_LARGE,
    403: PostOutcome.FORBIDDEN,
}
_BY_CODE = {
    "GoneException": PostOutcome.GONE,
    "LimitExceededException": PostOutcome.THROTTLED,
    "TooManyRequestsException": PostOutcome.THROTTLED,
    "ThrottlingException": PostOutcome.THROTTLED,
    "PayloadTooLargeException": PostOutcome.TOO_LARGE,
    "ForbiddenException": PostOutcome.FORBIDDEN,
    "AccessDeniedException": PostOutcome.FORBIDDEN,
}


@dataclass(frozen=True)
class PostResult:
    outcome: PostOutcome
    status: int | None = None
    code: str | None = None

    @property
    def retryable(self) -> bool:
        return self.outcome in _RETRYABLE

    @property
    def reason(self) -> str:
        """A short, log-safe description: status and error code, never the payload."""
        parts = [str(self.status)] if self.status is not None else []
        if self.code and self.code != str(self.status):
            parts.append(self.code)
        return " ".join(parts) or self.outcome.value


def classify(status: int | None, code: str | None) -> PostOutcome:
    """Map a failed post's HTTP status (first) or error code to its outcome."""
    if status is not None and status in _BY_STATUS:
        return _BY_STATUS[status]
    if code is not None and code in _BY_CODE:
        return _BY_CODE[code]
    if status is not None and 400 <= status < 500 and status != _REQUEST_TIMEOUT:
        return PostOutcome.REJECTED
    return PostOutcome.ERROR


# One post answers in milliseconds; these bound how long a stuck one can hold a worker.
CONNECT_TIMEOUT_SECONDS = 1
READ_TIMEOUT_SECONDS = 3


class Gateway:
    """One Management API client with a connection pool sized to the fan-out."""

    def __init__(self, endpoint_url: str, *, region: str, max_connections: int) -> None:
        config = Config(
            max_pool_connections=max_connections,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            tcp_keepalive=True,
            # Retries are ours (delivery decides per outcome); botocore must not add more.
            retries={"total_max_attempts": 1},
        )
        self._client: Any = boto3.session.Session().client(
            "apigatewaymanagementapi", endpoint_url=endpoint_url, region_name=region, config=config
        )

    def post(self, connection_id: str, data: bytes) -> PostResult:
        try:
            self._client.post_to_connection(ConnectionId=connection_id, Data=data)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            code = exc.response.get("Error", {}).get("Code")
            return PostResult(classify(status, code), status, code)
        except BotoCoreError as exc:  # timeouts, resets, refused connections
            return PostResult(PostOutcome.ERROR, None, type(exc).__name__)
        return PostResult(PostOutcome.DELIVERED, 200)
