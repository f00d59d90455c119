"""``$connect`` with any query string (in the tests' ``none`` auth mode: userId from the query).

The handshake never raises: it is accepted (200, one row holding exactly what was asked)
or refused with a 4xx and nothing stored. A userId of 1 to 128 printable characters is
accepted; longer, or holding whitespace or control characters, is refused.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from handlers import connect
from tests.conftest import FakeLambdaContext, load_event
from tests.property.strategies import ODD_CHARACTERS, odd_text
from tests.support import stored_ids
from wspush.clock import now_ms
from wspush.contract.messages import MAX_PLATFORM_LENGTH, MAX_USER_ID_LENGTH
from wspush.store import connections

pytestmark = pytest.mark.usefixtures("aws")

REFUSED = (400, 401, 403)
# Letters, marks (combining accents), numbers, punctuation, symbols (emoji): printable.
PRINTABLE = st.characters(categories=["L", "M", "N", "P", "S"])
# Whitespace, controls, format characters (bidi marks, zero-width space), lone surrogates,
# private use, unassigned: never part of a userId or platform.
UNPRINTABLE = st.characters(categories=["Zs", "Zl", "Zp", "Cc", "Cf", "Cs", "Co", "Cn"])


def connect_event(query: dict[str, str] | None) -> tuple[str, dict[str, Any]]:
    """A real $connect event with this query and a connection id of its own."""
    connection_id = f"c-{uuid.uuid4().hex}"
    event = load_event("ws_connect.json")
    event["requestContext"]["connectionId"] = connection_id
    # Connected now: rows expire 2 h 10 min after connectedAt, and reads skip expired rows
    event["requestContext"]["connectedAt"] = now_ms()
    event["queryStringParameters"] = query
    event["multiValueQueryStringParameters"] = (
        {name: [value] for name, value in query.items()} if query is not None else None
    )
    return connection_id, event


def handshake(query: dict[str, str] | None, context: FakeLambdaContext) -> tuple[int, Any]:
    """The status, and the row stored for the connection (None when there is none)."""
    before = stored_ids()
    connection_id, event = connect_event(query)
    response = connect.handler(event, context)
    assert set(response) == {"statusCode", "body"}
    assert isinstance(response["body"], str)
    rows = list(connections.get_many([connection_id], now_ms=now_ms()))
    # Nothing but that connection's row may have appeared
    assert stored_ids() - before <= {connection_id}
    return response["statusCode"], rows[0] if rows else None


def asked(query: dict[str, str], name: str) -> str | None:
    """A parameter as the handler reads it: Powertools matches names case-insensitively
    (``userid`` is ``userId``), and the last spelling in the query wins."""
    values = [value for key, value in query.items() if key.lower() == name.lower()]
    return values[-1] if values else None


def lengths_around(limit: int) -> Any:
    return st.integers(1, 3).map(lambda n: limit - 2 + n) | st.integers(1, limit + 3)


def queries() -> Any:
    value = st.one_of(
        odd_text(max_size=140),
        lengths_around(MAX_USER_ID_LENGTH).flatmap(
            lambda size: st.text(
                PRINTABLE | st.sampled_from(ODD_CHARACTERS), min_size=size, max_size=size
            )
        ),
    )
    names = st.sampled_from(("userId", "platform", "token", "userid", "")) | odd_text(max_size=8)
    return st.none() | st.dictionaries(names, value, max_size=4)


@settings(max_examples=100, deadline=None)
@given(query=queries())
@example(query={"userId": "\ud800"})
@example(query={"userId": "u\u202eevil"})
@example(query={"userId": "u" * MAX_USER_ID_LENGTH, "platform": "p" * (MAX_PLATFORM_LENGTH + 1)})
@example(query={"userId": "\U0001f600" * MAX_USER_ID_LENGTH})
@example(query={"userId": "u", "platform": "\x00"})
def test_any_query_is_accepted_whole_or_refused_leaving_nothing(
    lambda_context: FakeLambdaContext, query: dict[str, str] | None
) -> None:
    # Given any query string, when a client connects with it
    status, row = handshake(query, lambda_context)
    # Then it is accepted with exactly the row asked for, or refused with a 4xx and no row
    if status == 200:
        assert query is not None
        assert row is not None
        assert row.user_id == asked(query, "userId")
        assert row.platform == (asked(query, "platform") or "unknown")
    else:
        assert status in REFUSED
        assert row is None


@settings(max_examples=60, deadline=None)
@given(
    user_id=lengths_around(MAX_USER_ID_LENGTH).flatmap(
        lambda size: st.text(PRINTABLE, min_size=size, max_size=size)
    ),
    platform=st.none() | st.text(PRINTABLE, min_size=1, max_size=MAX_PLATFORM_LENGTH),
)
def test_printable_ids_up_to_the_limits_are_accepted_and_longer_ones_refused(
    lambda_context: FakeLambdaContext, user_id: str, platform: str | None
) -> None:
    # Given a userId of printable characters (accents, emoji, scripts of any direction)
    query = {"userId": user_id} if platform is None else {"userId": user_id, "platform": platform}
    # When a client connects with it
    status, row = handshake(query, lambda_context)
    # Then up to 128 characters it is stored as it is; beyond, it is refused with 400
    if len(user_id) <= MAX_USER_ID_LENGTH:
        assert status == 200
        assert row is not None
        assert (row.user_id, row.platform) == (user_id, platform or "unknown")
    else:
        assert (status, row) == (400, None)


@settings(max_examples=60, deadline=None)
@given(
    prefix=st.text(PRINTABLE, max_size=15),
    bad=UNPRINTABLE,
    suffix=st.text(PRINTABLE, max_size=15),
    where=st.sampled_from(("userId", "platform")),
)
def test_whitespace_or_control_characters_are_refused_with_400(
    lambda_context: FakeLambdaContext, prefix: str, bad: str, suffix: str, where: str
) -> None:
    # Given a userId or platform holding one whitespace, control, format or surrogate char
    query = {"userId": "u-1", where: prefix + bad + suffix}
    # When a client connects with it, then it is refused with 400 and nothing is stored
    assert handshake(query, lambda_context) == (400, None)
