"""Which streams keep history, what they are called in the history table, and the ``since``
a client recovers from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wspush.channels.names import parse_channel
from wspush.errors import ChannelRefused
from wspush.settings import History, Settings

MAX_EPOCH_LENGTH = 64
USER_PREFIX = "u:"
CHANNEL_PREFIX = "c:"


@dataclass(frozen=True)
class Stream:
    """A stream with history: its key in the history table and how much of it is kept."""

    key: str
    history: History

    def first_kept(self, head_seq: int) -> int:
        """The oldest seq its history may still hold (by count; age is checked per message)."""
        return max(1, head_seq - self.history.size + 1)


def user_stream(user_id: str, settings: Settings) -> Stream | None:
    """The user's own stream, or None when user history is off (or there is no history table)."""
    if settings.user_history is None or not settings.history_table_name:
        return None
    return Stream(USER_PREFIX + user_id, settings.user_history)


def channel_stream(channel: str, settings: Settings) -> Stream | None:
    """The channel's stream, or None when its namespace keeps no history."""
    namespace = settings.namespace(parse_channel(channel).namespace)
    if namespace is None or namespace.history is None or not settings.history_table_name:
        return None
    return Stream(CHANNEL_PREFIX + channel, namespace.history)


@dataclass(frozen=True)
class Since:
    """The position a client last saw: recover what came after ``seq`` in ``epoch``."""

    epoch: str
    seq: int

    @classmethod
    def parse(cls, value: Any, channel: str | None = None) -> Since:
        """A request's ``since``, or ``ChannelRefused("invalid_since")`` saying what is wrong."""
        if not isinstance(value, dict) or set(value) != {"epoch", "seq"}:
            raise ChannelRefused(
                "invalid_since", 'since must be {"epoch": "...", "seq": n}', channel
            )
        epoch, seq = value["epoch"], value["seq"]
        if not isinstance(epoch, str) or not 0 < len(epoch) <= MAX_EPOCH_LENGTH:
            raise ChannelRefused(
                "invalid_since",
                f"since.epoch must be a string of 1-{MAX_EPOCH_LENGTH} characters",
                channel,
            )
        if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0:
            raise ChannelRefused(
                "invalid_since", "since.seq must be a whole number, 0 or more", channel
            )
        return cls(epoch, seq)
