"""Outcome classification of Management API answers."""

import pytest

from wspush.fanout.gateway import PostOutcome, PostResult, classify


@pytest.mark.parametrize(
    ("status", "code", "outcome"),
    [
        (410, "GoneException", PostOutcome.GONE),
        (410, "410", PostOutcome.GONE),  # serverless-offline's bare 410
        (410, None, PostOutcome.GONE),
        (429, "LimitExceededException", PostOutcome.THROTTLED),
        (429, "TooManyRequestsException", PostOutcome.THROTTLED),
        (413, "PayloadTooLargeException", PostOutcome.TOO_LARGE),
        (403, "ForbiddenException", PostOutcome.FORBIDDEN),
        (500, "InternalServerErrorException", PostOutcome.ERROR),
        (503, None, PostOutcome.ERROR),
        (400, "BadRequestException", PostOutcome.REJECTED),
        (404, None, PostOutcome.REJECTED),
        (408, None, PostOutcome.ERROR),
        (None, "GoneException", PostOutcome.GONE),
        (None, "ReadTimeoutError", PostOutcome.ERROR),
        (None, "ThrottlingException", PostOutcome.THROTTLED),
        (None, "AccessDeniedException", PostOutcome.FORBIDDEN),
        (None, None, PostOutcome.ERROR),
        # An error code beats a status that says only "4xx"
        (400, "TooManyRequestsException", PostOutcome.THROTTLED),
        (400, "PayloadTooLargeException", PostOutcome.TOO_LARGE),
        (499, None, PostOutcome.REJECTED),
        # 3xx: API Gateway never redirects a post; whatever answered, it was not delivered
        (301, None, PostOutcome.ERROR),
        (399, None, PostOutcome.ERROR),
        (500, None, PostOutcome.ERROR),
    ],
)
def test_status_decides_first_then_error_code(
    status: int | None, code: str | None, outcome: PostOutcome
) -> None:
    assert classify(status, code) is outcome


def test_only_throttling_transient_errors_and_still_connecting_are_retryable() -> None:
    retryable = {o for o in PostOutcome if PostResult(o).retryable}
    assert retryable == {PostOutcome.THROTTLED, PostOutcome.ERROR, PostOutcome.CONNECTING}


def test_a_410_before_connect_returned_says_so_in_its_reason() -> None:
    assert (
        PostResult(PostOutcome.CONNECTING, 410, "GoneException").reason
        == "410 GoneException (still connecting)"
    )


def test_reason_is_status_and_code_without_repeating_a_bare_status() -> None:
    assert PostResult(PostOutcome.GONE, 410, "410").reason == "410"
    assert (
        PostResult(PostOutcome.FORBIDDEN, 403, "ForbiddenException").reason
        == "403 ForbiddenException"
    )
    assert (
        PostResult(PostOutcome.ERROR, None, "ConnectTimeoutError").reason == "ConnectTimeoutError"
    )
    assert PostResult(PostOutcome.ERROR, 500).reason == "500"
    assert PostResult(PostOutcome.DELIVERED).reason == "delivered"
