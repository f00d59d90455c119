"""Hostile and near-valid input for the property tests, and the checks they share.

Valid envelopes are built to target the connections of ``conftest.ONLINE``, so a test can
tell who must receive them; broken envelopes are valid ones with exactly one thing wrong,
paired with the field the error must name.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

from schemas.generate import ENVELOPE_ERRORS
from tests.property.conftest import ONLINE
from wspush.contract.messages import (
    MAX_CLIENT_FRAME_BYTES,
    MAX_CONNECTION_ID_LENGTH,
    MAX_ID_LENGTH,
    MAX_PLATFORM_LENGTH,
    MAX_TARGETS,
    MAX_USER_ID_LENGTH,
    encode_frame,
)

# Characters that break naive code: lone surrogates (only reachable through JSON escapes
# such as "\ud800"), NUL and other controls, bidi overrides and marks, a BOM, line and
# paragraph separators, non-characters, an emoji, a combining accent, a tag character,
# JSON's own metacharacters.
SURROGATES = ("\ud800", "\udbff", "\udc00", "\udfff")
ODD_CHARACTERS = (
    *SURROGATES,
    "\x00",
    "\x1f",
    "\x7f",
    "\u200b",
    "\u200f",
    "\u202e",
    "\u2066",
    "\ufeff",
    "\u2028",
    "\u2029",
    "\ufffe",
    "\uffff",
    "\U0001f600",
    "\u0301",
    "\U000e0001",
    '"',
    "\\",
    "'",
)
UNICODE_ODD_CHARACTERS = tuple(c for c in ODD_CHARACTERS if c not in SURROGATES)

# Every error code parse_json and parse_message may raise: the ones the schemas list.
ERROR_CODES = frozenset(ENVELOPE_ERRORS)
MAX_ERROR_TEXT = 1_000  # what an error message or field may weigh, echoes included

USERS = ("alice", "bob", "carol", "nobody")
PLATFORMS = ("pc", "mobile", "web", "tv")
_TARGET_FIELDS = ("connectionId", "connectionIds", "userId", "userIds", "broadcast")
_KNOWN_FIELDS = frozenset((*_TARGET_FIELDS, "platform", "excludeConnectionIds", "payload", "id"))


def odd_text(*, min_size: int = 0, max_size: int = 20, unicode_only: bool = False) -> Any:
    """Any text, with a good share of the characters above."""
    if unicode_only:
        alphabet = st.characters(codec="utf-8") | st.sampled_from(UNICODE_ODD_CHARACTERS)
    else:
        alphabet = st.characters() | st.sampled_from(ODD_CHARACTERS)
    return st.text(alphabet, min_size=min_size, max_size=max_size)


def json_values(*, unicode_only: bool = False, max_leaves: int = 12) -> Any:
    """Any JSON value (as Python decodes it), nested, with odd text and huge integers."""
    text = odd_text(unicode_only=unicode_only)
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**80), max_value=2**80),
        st.floats(allow_nan=False, allow_infinity=False),
        text,
    )
    return st.recursive(
        scalars,
        lambda children: st.one_of(
            st.lists(children, max_size=4), st.dictionaries(text, children, max_size=4)
        ),
        max_leaves=max_leaves,
    )


def non_strings() -> Any:
    return json_values(max_leaves=3).filter(lambda value: not isinstance(value, str))


def non_lists() -> Any:
    return json_values(max_leaves=3).filter(lambda value: not isinstance(value, list))


def non_dicts() -> Any:
    return json_values(max_leaves=3).filter(lambda value: not isinstance(value, dict))


def nested(depth: int, leaf: Any = 0) -> Any:
    """``depth`` lists inside each other, built without recursion."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def deep_json(depth: int) -> str:
    return "[" * depth + "0" + "]" * depth


def payloads() -> Any:
    return st.fixed_dictionaries(
        {
            "type": odd_text(min_size=1, max_size=30, unicode_only=True).filter(str.strip),
            "data": json_values(unicode_only=True),
        }
    )


def _target_fields() -> Any:
    connection_ids = st.sampled_from((*ONLINE, "never-connected"))
    return st.one_of(
        st.fixed_dictionaries({"userId": st.sampled_from(USERS)}),
        st.fixed_dictionaries({"userIds": st.lists(st.sampled_from(USERS), min_size=1)}),
        st.fixed_dictionaries({"connectionId": connection_ids}),
        st.fixed_dictionaries({"connectionIds": st.lists(connection_ids, min_size=1)}),
        st.just({"broadcast": True}),
    )


def valid_envelopes(*, with_id: bool = True) -> Any:
    """Envelopes the contract accepts, aimed at the connections of ``ONLINE``."""
    optional: dict[str, Any] = {
        "platform": st.one_of(
            st.sampled_from(PLATFORMS), st.lists(st.sampled_from(PLATFORMS), min_size=1)
        ),
        "excludeConnectionIds": st.lists(st.sampled_from(tuple(ONLINE)), max_size=2),
    }
    if with_id:
        optional["id"] = odd_text(min_size=1, max_size=128, unicode_only=True)
    rest = st.fixed_dictionaries({"payload": payloads()}, optional=optional)
    return st.tuples(_target_fields(), rest).map(lambda parts: {**parts[0], **parts[1]})


def expected_recipients(envelope: dict[str, Any]) -> set[str]:
    """Who must receive a valid envelope, given who is ``ONLINE``."""
    platform = envelope.get("platform")
    platforms = None if platform is None else {platform} if isinstance(platform, str) else platform
    excluded = set(envelope.get("excludeConnectionIds", []))

    def online_matching(keep: Any) -> set[str]:
        return {
            connection_id
            for connection_id, (user_id, on) in ONLINE.items()
            if keep(connection_id, user_id) and (platforms is None or on in platforms)
        }

    if "connectionId" in envelope or "connectionIds" in envelope:
        ids = set(envelope.get("connectionIds", [envelope.get("connectionId")]))
        # Explicit ids are posted to as given, unless a platform filter needs their rows.
        chosen = ids if platforms is None else online_matching(lambda cid, _: cid in ids)
    elif "broadcast" in envelope:
        chosen = online_matching(lambda _cid, _user: True)
    else:
        users = set(envelope.get("userIds", [envelope.get("userId")]))
        chosen = online_matching(lambda _, user: user in users)
    return chosen - excluded


def _bad_id_strings(max_length: int) -> Any:
    return st.one_of(
        non_strings(),
        st.just(""),
        st.text(min_size=max_length + 1, max_size=max_length + 3),
        st.sampled_from(SURROGATES).map(lambda s: f"id-{s}"),
    )


def _bad_string_lists(max_length: int) -> Any:
    return st.one_of(
        non_lists(),
        st.just([]),
        st.lists(_bad_id_strings(max_length), min_size=1, max_size=2).map(lambda bad: ["ok", *bad]),
    )


def _unknown_keys() -> Any:
    return odd_text(min_size=1, max_size=80).filter(lambda key: key not in _KNOWN_FIELDS)


def _oversized_payload() -> Any:
    return st.sampled_from(("x", "\u00e9", "\u20ac", "\U0001f600", "\x00")).map(
        lambda char: {"type": "t", "data": char * MAX_CLIENT_FRAME_BYTES}
    )


@st.composite
def broken_envelopes(draw: Any) -> tuple[dict[str, Any], str | None]:
    """A valid envelope with exactly one thing wrong, and the field its error must name."""
    envelope: dict[str, Any] = draw(valid_envelopes())
    [target] = [name for name in envelope if name in _TARGET_FIELDS]
    breakage = draw(
        st.sampled_from(
            (
                "unknown field",
                "target value",
                "no target",
                "two targets",
                "platform",
                "exclude",
                "id",
                "payload",
                "payload.type",
                "payload.data",
                "payload extra",
                "too large",
            )
        )
    )
    field: str | None = None
    if breakage == "unknown field":
        key = draw(_unknown_keys())
        envelope[key] = draw(json_values(max_leaves=2))
        field = key if key.isprintable() and len(key) <= 64 else None  # else: escaped
    elif breakage == "target value":
        field = target
        if target == "broadcast":
            envelope[target] = draw(json_values(max_leaves=2).filter(lambda v: v is not True))
        elif target.endswith("Ids"):
            envelope[target] = draw(_bad_string_lists(128))
        else:
            envelope[target] = draw(_bad_id_strings(128))
    elif breakage == "no target":
        del envelope[target]
        field = "target"
    elif breakage == "two targets":
        other = "broadcast" if target != "broadcast" else "userId"
        envelope[other] = True if other == "broadcast" else "alice"
        field = "target"
    elif breakage == "platform":
        # (null is no filter at all, and a list is judged as a list: neither is wrong here)
        envelope["platform"] = draw(
            st.one_of(
                _bad_id_strings(32).filter(lambda v: v is not None and not isinstance(v, list)),
                _bad_string_lists(32).filter(lambda value: isinstance(value, list)),
            )
        )
        field = "platform"
    elif breakage == "exclude":
        envelope["excludeConnectionIds"] = draw(
            st.one_of(
                non_lists().filter(lambda v: v is not None),
                st.lists(_bad_id_strings(128), min_size=1, max_size=2),
            )
        )
        field = "excludeConnectionIds"
    elif breakage == "id":
        envelope["id"] = draw(_bad_id_strings(128).filter(lambda v: v is not None))
        field = "id"
    elif breakage == "payload":
        envelope["payload"] = draw(non_dicts())
        field = "payload"
    elif breakage == "payload.type":
        envelope["payload"]["type"] = draw(
            st.one_of(non_strings(), st.sampled_from(("", " ", "\t\n", "\u3000")))
        )
        field = "payload.type"
    elif breakage == "payload.data":
        envelope["payload"] = {"type": "t"}
        field = "payload.data"
    elif breakage == "payload extra":
        envelope["payload"][draw(st.sampled_from(("extra", "Type", "\x00")))] = 1
        field = "payload"
    else:
        envelope["payload"] = draw(_oversized_payload())
        field = "payload"
    return envelope, field


def names_field(error_field: str | None, expected: str | None) -> bool:
    """True when an error's field is ``expected`` or a part of it (``userIds[1]``)."""
    if expected is None:
        return True
    return error_field is not None and (
        error_field == expected or error_field.startswith((f"{expected}[", f"{expected}."))
    )


def sqs_legal(text: str) -> bool:
    """Only characters SQS accepts in a body or attribute (it refuses the whole message)."""
    return all(
        char in "\t\n\r"
        or "\x20" <= char <= "\ud7ff"
        or "\ue000" <= char <= "\ufffd"
        or char >= "\U00010000"
        for char in text
    )


def assert_safe_error(code: str, message: str, field: str | None) -> None:
    """An error can be logged, returned and put in SQS attributes as it is."""
    assert code in ERROR_CODES
    assert isinstance(message, str)
    assert message
    assert len(message) <= MAX_ERROR_TEXT
    assert sqs_legal(message)
    if field is not None:
        assert isinstance(field, str)
        assert field
        assert len(field) <= MAX_ERROR_TEXT
        assert sqs_legal(field)


def padded_data(
    filler: str, frame_bytes: int, *, payload_type: str, message_id: str, ts: int
) -> str:
    """String data that makes the client frame exactly ``frame_bytes`` bytes long.

    ``filler`` is repeated, then ASCII makes up the rest; each character counts as the
    bytes of its JSON form (NUL is ``\\u0000``: 6 bytes, an emoji 4, an accent 2).
    """
    overhead = len(encode_frame(payload_type, "", message_id=message_id, ts=ts))
    room = frame_bytes - overhead
    weight = len(json.dumps(filler, ensure_ascii=False).encode("utf-8")) - 2
    count = room // weight
    return filler * count + "x" * (room - count * weight)


# What str.strip() removes (a payload type of nothing else is blank), and characters that
# look blank but are not to Python: ECMA-262's \s also holds U+FEFF; zero-width spaces and
# U+180E (whitespace in Unicode before 6.3) are not whitespace to either.
WHITESPACE = tuple(char for char in map(chr, range(0x3001)) if char.isspace())
NEAR_WHITESPACE = ("\ufeff", "\u200b", "\u180e", "\u2060", "\x00")
# Characters of 1, 2, 3 and 4 UTF-8 bytes, and a combining accent: lengths count code points.
WIDE_CHARACTERS = ("x", "\u00e9", "\u20ac", "\U0001f600", "\u0301")

_STRING_LIMITS = {
    "id": MAX_ID_LENGTH,
    "connectionId": MAX_CONNECTION_ID_LENGTH,
    "userId": MAX_USER_ID_LENGTH,
    "platform": MAX_PLATFORM_LENGTH,
}
_LIST_ITEM_LIMITS = {
    "connectionIds": MAX_CONNECTION_ID_LENGTH,
    "userIds": MAX_USER_ID_LENGTH,
    "excludeConnectionIds": MAX_CONNECTION_ID_LENGTH,
    "platform": MAX_PLATFORM_LENGTH,
}


def strings_around(limit: int) -> Any:
    """Strings of 0, 1, limit - 1, limit and limit + 1 characters, wide ones included."""
    lengths = st.sampled_from((0, 1, limit - 1, limit, limit + 1))
    return st.tuples(st.sampled_from(WIDE_CHARACTERS), lengths).map(lambda cl: cl[0] * cl[1])


def lists_around(item_limit: int) -> Any:
    """Lists near their limits: 0, 1 or MAX_TARGETS (+ 1) entries, or one entry near its
    length limit among good ones."""
    sizes = st.sampled_from((0, 1, 2, MAX_TARGETS, MAX_TARGETS + 1))
    return st.one_of(
        sizes.map(lambda size: [f"c-{index % 7}" for index in range(size)]),
        st.tuples(strings_around(item_limit), st.integers(0, 2)).map(
            lambda entry: [*["ok", "ok"][: entry[1]], entry[0]]
        ),
    )


def blank_looking_types() -> Any:
    """Payload types of whitespace only, or whitespace around one other character."""
    blanks = st.text(st.sampled_from(WHITESPACE), min_size=1, max_size=3)
    return st.one_of(
        blanks,
        st.tuples(blanks, st.sampled_from((*NEAR_WHITESPACE, "t")), blanks).map("".join),
    )


@st.composite
def boundary_envelopes(draw: Any) -> dict[str, Any]:
    """A valid envelope with one field near or past a limit, of a wrong type, or null."""
    envelope: dict[str, Any] = draw(valid_envelopes())
    field = draw(
        st.sampled_from(
            (*_STRING_LIMITS, *_LIST_ITEM_LIMITS, "broadcast", "payload.type", "payload")
        )
    )
    if field in _TARGET_FIELDS:  # the field becomes the target
        for target in _TARGET_FIELDS:
            envelope.pop(target, None)
    wrong_types = json_values(max_leaves=3)
    if field == "payload.type":
        envelope["payload"]["type"] = draw(st.one_of(blank_looking_types(), wrong_types))
    elif field == "payload":
        envelope["payload"] = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "type": st.just("t"),
                    "data": json_values(max_leaves=2),
                    "Type": st.just("t"),
                    "extra": st.none(),
                },
            )
        )
    elif field == "broadcast":
        envelope[field] = draw(
            st.sampled_from((True, False, 1, 1.0, 0, "true", None, [True])) | wrong_types
        )
    else:
        values = [wrong_types]
        if field in _STRING_LIMITS:
            values.append(strings_around(_STRING_LIMITS[field]))
        if field in _LIST_ITEM_LIMITS:
            values.append(lists_around(_LIST_ITEM_LIMITS[field]))
        envelope[field] = draw(st.one_of(values))
    return envelope
