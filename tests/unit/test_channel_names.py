"""Channel names: what a frame or an envelope may name, what a refusal says, what a grant opens."""

from __future__ import annotations

from typing import Any

import pytest

from wspush.channels.names import Channel, granted, parse_channel
from wspush.errors import ChannelRefused

NAMESPACE_RULE = "a channel's namespace is 1-32 of a-z, 0-9 and -"
NAME_RULE = "a channel's name is 1-128 of A-Z, a-z, 0-9 and . _ ~ -"


def refused(value: Any) -> ChannelRefused:
    with pytest.raises(ChannelRefused) as caught:
        parse_channel(value)
    return caught.value


def test_a_channel_is_its_namespace_and_its_name() -> None:
    # Given a name that uses every character a name may hold
    value = "room-2:Az09._~-"
    # When it is parsed
    channel = parse_channel(value)
    # Then it is split at the colon and reads back as it was written
    assert channel == Channel("room-2", "Az09._~-")
    assert str(channel) == value


@pytest.mark.parametrize("value", [42, None, ["room:1"], ""])
def test_a_channel_that_is_not_a_non_empty_string_is_refused_without_a_channel(
    value: Any,
) -> None:
    # Given a channel field that is not a string, or is empty
    # When it is parsed
    error = refused(value)
    # Then it is refused, and no channel is named in the refusal
    assert (error.code, error.message, error.channel) == (
        "invalid_channel",
        "channel must be a non-empty string",
        None,
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("room", "a channel is named namespace:name, e.g. room:42"),
        (":42", NAMESPACE_RULE),
        ("Room:42", NAMESPACE_RULE),
        ("r" * 33 + ":42", NAMESPACE_RULE),
        ("room:", NAME_RULE),
        ("room:a/b", NAME_RULE),
        ("room:" + "x" * 129, NAME_RULE),
        # The first colon ends the namespace: what follows is the name, where no colon may be
        ("room:a:b", NAME_RULE),
    ],
)
def test_a_malformed_channel_is_refused_with_the_rule_it_breaks(value: str, message: str) -> None:
    # Given a channel that breaks one rule of its form
    # When it is parsed
    error = refused(value)
    # Then the refusal says which rule, and names the channel as it was given
    assert (error.code, error.message, error.channel) == ("invalid_channel", message, value)


def test_a_refusal_shows_no_more_of_a_long_channel_than_the_longest_valid_one() -> None:
    # Given a channel far longer than a namespace (32), a colon and a name (128)
    value = "room:" + "x" * 1000
    # When it is parsed
    error = refused(value)
    # Then the refusal shows its first 161 characters only
    assert error.channel == value[:161]


def test_the_longest_namespace_and_name_are_accepted() -> None:
    # Given a 32-character namespace and a 128-character name
    namespace, name = "n" * 32, "x" * 128
    # When the channel is parsed
    # Then it is accepted as it is
    assert parse_channel(f"{namespace}:{name}") == Channel(namespace, name)


@pytest.mark.parametrize(
    ("grants", "expected"),
    [
        (["room:42"], True),
        (["room:*"], True),
        (["lobby:1", "room:42"], True),
        (["room:4"], False),
        (["room:420"], False),
        (["lobby:*", "*"], False),
        ([], False),
    ],
)
def test_a_grant_names_the_channel_or_its_whole_namespace(
    grants: list[str], expected: bool
) -> None:
    # Given a token's channels claim
    # When it is asked about room:42
    # Then only the channel itself or room:* opens it
    assert granted(Channel("room", "42"), grants) is expected
