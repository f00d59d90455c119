"""Replies to frames no route handles: always JSON, always saying why."""

import json

import pytest

from wspush.contract.frames import unknown_frame_reply

NOW = 1_795_867_200_000


@pytest.mark.parametrize(
    ("body", "code", "hint"),
    [
        ("hello", "bad_frame", "not valid JSON"),
        (None, "bad_frame", "not valid JSON"),
        ("[1, 2]", "bad_frame", "JSON object"),
        ('{"content": "x"}', "unknown_action", 'no "action"'),
        ('{"action": "publish"}', "unknown_action", "'publish'"),
        ('{"action": 5}', "unknown_action", 'no "action"'),
    ],
)
def test_error_reply_has_the_contract_shape(body: str | None, code: str, hint: str) -> None:
    reply = json.loads(unknown_frame_reply(body, now_ms=NOW))
    assert reply["type"] == "error"
    assert reply["data"]["code"] == code
    assert hint in reply["data"]["message"]
    assert reply["ts"] == NOW
    assert reply["id"]


def test_a_huge_action_name_is_not_echoed_in_full() -> None:
    reply = json.loads(unknown_frame_reply(json.dumps({"action": "a" * 10_000}), now_ms=NOW))
    assert len(reply["data"]["message"]) < 200
