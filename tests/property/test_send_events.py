"""Direct invocations of the send Lambda with any JSON as the event.

The handler never raises: the answer is a per-message report, ``{"error": {code, message,
field}}``, or for a list of 1 to 100 messages a list of those, and it is JSON that the
Lambda runtime can return.
"""

from __future__ import annotations

import io
import json
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from handlers import send
from tests.conftest import FakeLambdaContext
from tests.contract import assert_valid
from tests.fakes.management_api import FakeManagementApi
from tests.property.strategies import (
    assert_safe_error,
    broken_envelopes,
    deep_json,
    json_values,
    nested,
    odd_text,
    valid_envelopes,
)
from tests.support import PAYLOAD

pytestmark = pytest.mark.usefixtures("online")

REPORT_KEYS = {"id", "targets", "delivered", "gone", "failed", "errors"}


def assert_answers_one_message(answer: Any) -> None:
    """A delivery report, or an error (with the message id when it was valid)."""
    assert isinstance(answer, dict)
    if "error" in answer:
        assert set(answer) <= {"id", "error"}
        error = answer["error"]
        assert set(error) == {"code", "message", "field"}
        if "id" not in answer:  # refused before it was a message: the contract's codes
            assert_safe_error(error["code"], error["message"], error["field"])
    else:
        assert set(answer) == REPORT_KEYS
        assert answer["targets"] == answer["delivered"] + answer["gone"] + answer["failed"]


def events() -> Any:
    envelopes = st.one_of(
        valid_envelopes(), broken_envelopes().map(lambda pair: pair[0]), json_values()
    )
    return st.one_of(
        json_values(),
        envelopes,
        st.lists(envelopes, max_size=5),
        # around the 100-message limit: mostly cheap broken messages, a few valid ones
        st.integers(98, 120).flatmap(
            lambda size: st.lists(
                st.one_of(broken_envelopes().map(lambda pair: pair[0]), st.none()),
                min_size=size,
                max_size=size,
            )
        ),
        # the event as a JSON string (parsed by the handler), and text that is not JSON
        envelopes.map(json.dumps),
        st.lists(envelopes, max_size=3).map(json.dumps),
        odd_text(max_size=50),
        st.integers(1, 12_000).map(deep_json),
    )


@settings(max_examples=80, deadline=None)
@given(events())
@example([])
@example([None] * 101)
@example({"connectionId": "\ud800", "payload": {"type": "t", "data": 1}})
@example('{"connectionId": "\\ud800", "payload": {"type": "t", "data": 1}}')
@example({"userId": "u", "payload": {"type": "t", "data": "x" * 1_048_576}})
@example("[" * 10_000 + "]" * 10_000)
def test_any_event_gets_an_answer_never_a_stack_trace(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext, event: Any
) -> None:
    # Given any JSON value as the event
    management_api.reset()
    # When the send Lambda is invoked with it
    answer = send.handler(event, lambda_context)
    # Then it answers per message (a list for a list of 1..100), or one error for the event
    if isinstance(answer, list):
        parsed = json.loads(event) if isinstance(event, str) else event
        assert isinstance(parsed, list)
        assert 0 < len(answer) == len(parsed) <= 100
        for item in answer:
            assert_answers_one_message(item)
    else:
        assert_answers_one_message(answer)
    # And the answer is JSON the Lambda runtime can return as UTF-8, as its schema describes
    json.dumps(answer, ensure_ascii=False, allow_nan=False).encode("utf-8")
    assert_valid("send-answer", answer)


@settings(max_examples=30, deadline=None)
@given(st.lists(valid_envelopes(with_id=False), min_size=1, max_size=4))
def test_a_list_of_valid_messages_is_answered_one_report_each(
    management_api: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    envelopes: list[dict[str, Any]],
) -> None:
    # Given valid messages with odd unicode in their payloads
    management_api.reset()
    # When they are sent as one list
    answer = send.handler(envelopes, lambda_context)
    # Then each has a report with the request's id and nothing failed
    assert [item["id"] for item in answer] == [
        f"{lambda_context.aws_request_id}-{index}" for index in range(len(envelopes))
    ]
    assert all(item["failed"] == 0 and set(item) == REPORT_KEYS for item in answer)


@pytest.mark.parametrize("depth", [1_000, 9_990, 10_000, 100_000])
def test_deeply_nested_data_is_answered_not_crashed_on(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext, depth: int
) -> None:
    # Given an event whose data is lists nested `depth` deep (as the runtime decoded it)
    management_api.reset()
    event = {"connectionId": "b-pc", "payload": {"type": "t", "data": nested(depth)}}
    # When the send Lambda is invoked with it
    answer = send.handler(event, lambda_context)
    # Then it is delivered, or refused as data that cannot be serialized (no RecursionError)
    assert_answers_one_message(answer)
    if "error" in answer:
        assert answer["error"]["field"] == "payload.data"
    else:
        assert answer["delivered"] == 1


def test_a_refused_id_is_not_repeated_in_the_logs(
    management_api: FakeManagementApi, lambda_context: FakeLambdaContext, log_output: io.StringIO
) -> None:
    # Given an event whose id is 100,000 characters (refused: ids are at most 128)
    event = {"id": "x" * 100_000, "userId": "bob", "payload": PAYLOAD}
    # When the send Lambda is invoked with it
    answer = send.handler(event, lambda_context)
    # Then it is refused, and no log line carries the id
    assert answer["error"]["field"] == "id"
    assert all(len(line) < 10_000 for line in log_output.getvalue().splitlines())
