"""A WebSocket client for terminals (``wspush listen``): what an app receives, line by line.

It connects as a user, subscribes to the channels it is given, pings on a heartbeat (API
Gateway closes a connection idle for 10 minutes) and hands each frame it receives on as one
line of compact JSON (replies and presence events included), until the
connection closes or the caller stops it (Ctrl-C). For people and scripts, not for Lambda:
it needs the ``websockets`` package (in the development venv), imported only here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

DEFAULT_HEARTBEAT_SECONDS = 300.0
OPEN_TIMEOUT_SECONDS = 10.0
# Ctrl-C closes cleanly, but waits at most this long for the gateway to answer the close.
CLOSE_TIMEOUT_SECONDS = 2.0
PING = json.dumps({"action": "ping"})


class ListenError(Exception):
    """The connection could not be made, was refused, or ended; ``str()`` says which."""


def connect_url(base: str, *, user_id: str | None, platform: str | None, token: str | None) -> str:
    """``base`` with the handshake's query: ``userId``, ``platform`` and ``token``."""
    query = {
        name: value
        for name, value in (("userId", user_id), ("platform", platform), ("token", token))
        if value
    }
    parts = urlsplit(base)
    joined = "&".join(part for part in (parts.query, urlencode(query)) if part)
    return urlunsplit(parts._replace(query=joined))


def one_line(frame: str | bytes) -> str:
    """A received frame as one line of compact JSON (a frame that is not JSON, as a string)."""
    text = frame.decode("utf-8", "replace") if isinstance(frame, bytes) else frame
    try:
        value: Any = json.loads(text)
    except ValueError:
        value = text
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def subscribe_frame(channel: str, index: int) -> str:
    """The request subscribing to ``channel``; its reply echoes the ref ``subscribe-<index>``."""
    return json.dumps({"action": "subscribe", "channel": channel, "ref": f"subscribe-{index}"})


def listen(
    url: str,
    emit: Callable[[str], None],
    *,
    channels: Sequence[str] = (),
    heartbeat_seconds: float = DEFAULT_HEARTBEAT_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Connect to ``url`` and ``emit`` every frame as one JSON line, pinging at once (the
    pong names the connection), subscribing to each of ``channels`` (its reply, or its
    refusal, is emitted like any frame), then pinging every ``heartbeat_seconds``, for as
    long as the connection lasts: the caller stops it with KeyboardInterrupt (Ctrl-C), which
    closes the connection cleanly on its way out. Raises ``ListenError`` when the connection
    cannot be opened or the other side closes it."""
    try:
        from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
        from websockets.sync.client import connect
    except ImportError as exc:  # pragma: no cover - the dev venv has it
        raise ListenError("wspush listen needs the websockets package") from exc

    try:
        connection = connect(
            url, open_timeout=OPEN_TIMEOUT_SECONDS, close_timeout=CLOSE_TIMEOUT_SECONDS
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        body = exc.response.body.decode("utf-8", "replace").strip() if exc.response.body else ""
        raise ListenError(f"the handshake was refused: {status} {body}".strip()) from exc
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        raise ListenError(f"cannot connect to {_without_query(url)}: {exc}") from exc
    with connection:
        try:
            connection.send(PING)
            for index, channel in enumerate(channels, start=1):
                connection.send(subscribe_frame(channel, index))
            next_ping = clock() + heartbeat_seconds
            while True:
                try:
                    frame = connection.recv(timeout=max(next_ping - clock(), 0))
                except TimeoutError:
                    connection.send(PING)
                    next_ping = clock() + heartbeat_seconds
                    continue
                emit(one_line(frame))
        except KeyboardInterrupt:
            connection.close()  # 1000, normal closure: the person stopped it
            raise
        except ConnectionClosed as exc:
            reason = exc.rcvd.reason if exc.rcvd is not None else ""
            code = exc.rcvd.code if exc.rcvd is not None else 1006
            raise ListenError(
                f"the connection closed ({code}{' ' + reason if reason else ''})"
            ) from exc


def _without_query(url: str) -> str:
    """The URL as it may be shown: a token in its query must not reach a terminal's log."""
    return urlunsplit(urlsplit(url)._replace(query=""))
