"""Replies to clients and route responses: no table, no AWS call (``$default`` needs only this).

Every reply a client receives has the contract's shape ``{"type", "data", "id", "ts"}``.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from wspush.contract.messages import encode_frame, parse_json
from wspush.errors import ChannelRefused, InvalidMessage

SUPPORTED_ACTIONS = ("ping", "hello", "recover", "subscribe", "unsubscribe", "presence")
_MAX_ECHOED_ACTION = 64
MAX_REF_LENGTH = 64  # a request's ref, echoed in its reply


def frame_text(body: str | None, *, base64_encoded: bool) -> str | None:
    """A frame's text; ``None`` when a base64-flagged body does not decode to UTF-8."""
    if not base64_encoded or body is None:
        return body
    try:
        return base64.b64decode(body, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None


def unknown_frame_reply(body: str | None, *, now_ms: int) -> str:
    """The error reply to a frame no route handles: not JSON, or an unknown action."""
    try:
        frame = parse_json(body or "")
    except InvalidMessage:
        return error_reply("bad_frame", "frame is not valid JSON", now_ms=now_ms)
    if not isinstance(frame, dict):
        return error_reply(
            "bad_frame", 'frame must be a JSON object with an "action"', now_ms=now_ms
        )
    supported = ", ".join(SUPPORTED_ACTIONS)
    action = frame.get("action")
    if not isinstance(action, str) or not action:
        message = f'frame has no "action"; supported actions: {supported}'
    else:
        message = f"unknown action {action[:_MAX_ECHOED_ACTION]!r}; supported actions: {supported}"
    return error_reply("unknown_action", message, now_ms=now_ms)


@dataclass(frozen=True)
class Request:
    """A client's request: its action, its ``ref`` and the fields the actions take."""

    action: str
    ref: str | None
    channel: Any = None
    after: Any = None  # presence: the next page's start
    since: Any = None  # subscribe, recover: the position to recover from


def parse_request(body: str | None, actions: Collection[str]) -> Request:
    """A request frame for one of ``actions``, or ``ChannelRefused("bad_frame")`` saying why."""
    try:
        frame = parse_json(body or "")
    except InvalidMessage as exc:
        raise ChannelRefused("bad_frame", "frame is not valid JSON") from exc
    if not isinstance(frame, dict) or frame.get("action") not in actions:
        choices = ", ".join(actions)
        raise ChannelRefused("bad_frame", f"frame must be an object with an action of {choices}")
    ref = frame.get("ref")
    if ref is not None and (not isinstance(ref, str) or len(ref) > MAX_REF_LENGTH):
        raise ChannelRefused("bad_frame", f"ref must be a string of at most {MAX_REF_LENGTH}")
    return Request(
        frame["action"], ref, frame.get("channel"), frame.get("after"), frame.get("since")
    )


def reply(reply_type: str, data: Any, *, now_ms: int, ref: str | None = None) -> str:
    """A reply frame; it echoes the request's ``ref`` when it had one."""
    extra = {"ref": ref} if ref is not None else None
    frame = encode_frame(reply_type, data, message_id=uuid.uuid4().hex, ts=now_ms, extra=extra)
    return frame.decode("utf-8")


def error_reply(
    code: str,
    message: str,
    *,
    now_ms: int,
    ref: str | None = None,
    channel: str | None = None,
) -> str:
    data = {"code": code, "message": message}
    if channel is not None:
        data["channel"] = channel
    return reply("error", data, now_ms=now_ms, ref=ref)


def route_response(status: int, body: str) -> dict[str, Any]:
    """A WebSocket route's answer; with a route response, ``body`` goes to the client."""
    return {"statusCode": status, "body": body}
