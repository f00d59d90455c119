"""Channel names (``namespace:name``) and the patterns a token may grant (``ns:*``)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from wspush.errors import ChannelRefused
from wspush.settings import NAMESPACE_PATTERN

MAX_NAME_LENGTH = 128
MAX_CHANNEL_LENGTH = 32 + 1 + MAX_NAME_LENGTH
# RFC 3986's unreserved characters: a name can sit in a URL or a key unescaped.
_NAME = re.compile(r"[A-Za-z0-9._~-]{1,128}")


@dataclass(frozen=True)
class Channel:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}:{self.name}"


def parse_channel(value: Any) -> Channel:
    """A channel name from a frame or an envelope, or ``ChannelRefused("invalid_channel")``."""
    if not isinstance(value, str) or not value:
        raise ChannelRefused("invalid_channel", "channel must be a non-empty string")
    shown = value[:MAX_CHANNEL_LENGTH]
    namespace, colon, name = value.partition(":")
    if not colon:
        raise ChannelRefused(
            "invalid_channel", "a channel is named namespace:name, e.g. room:42", shown
        )
    if not NAMESPACE_PATTERN.fullmatch(namespace):
        raise ChannelRefused(
            "invalid_channel", "a channel's namespace is 1-32 of a-z, 0-9 and -", shown
        )
    if not _NAME.fullmatch(name):
        raise ChannelRefused(
            "invalid_channel",
            f"a channel's name is 1-{MAX_NAME_LENGTH} of A-Z, a-z, 0-9 and . _ ~ -",
            shown,
        )
    return Channel(namespace, name)


def granted(channel: Channel, grants: Iterable[str]) -> bool:
    """Whether a token's ``channels`` claim names this channel, or its namespace as ``ns:*``."""
    exact = str(channel)
    every = f"{channel.namespace}:*"
    return any(grant in (exact, every) for grant in grants)
