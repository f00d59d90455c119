"""The accounting test's books: who each message was meant for, and what became of each pair.

A (message, connection) pair is settled by evidence only, never by what the sender says:

- **delivered**: the connection received a frame with that message id (the fake gateway's log);
- **gone**: a post of that message to that connection was answered 410, or the connection's
  row had already been deleted (after a 410 to another message) before the message was
  resolved, so it was rightly not a recipient; either way its row is gone;
- **dead-lettered**: a dead letter names the pair, with a reason (``wspush-failures``), or
  SQS moved the message itself to the dead-letter queue after ``maxReceiveCount`` receives.

Every pair must be settled exactly once. Anything else is a violation.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.management_api import Post

PLATFORMS = ("pc", "mobile", "web")
BASE_USERS = 28
BASE_MESSAGES = 84
DELIVERED = "delivered"
GONE_ANSWERED = "gone: answered 410, row deleted"
GONE_BEFORE = "gone: row deleted before the message was resolved"
REDRIVEN = "redriven by SQS after 5 receives"

Pair = tuple[str, str]  # (message id, connection id)


@dataclass(frozen=True)
class Size:
    users: int
    messages: int

    @classmethod
    def scaled(cls, scale: float) -> Size:
        """About ``scale`` times the base number of pairs: users and messages grow by its root."""
        root = math.sqrt(scale)
        return cls(max(2, round(BASE_USERS * root)), max(1, round(BASE_MESSAGES * root)))


@dataclass
class World:
    """The connections that exist at the start, and the messages services send."""

    connections: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> user, platform
    messages: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> envelope

    @classmethod
    def generate(cls, rng: random.Random, size: Size) -> World:
        world = cls()
        for u in range(size.users):
            user = f"u-{u:04d}"
            for platform in PLATFORMS:
                if platform == "pc" or rng.random() < (0.7 if platform == "mobile" else 0.3):
                    world.connections[f"{user}-{platform}"] = (user, platform)
        for n in range(size.messages):
            message_id = f"m-{n:05d}"
            world.messages[message_id] = {
                "id": message_id,
                **world._random_target(rng),
                "payload": {"type": "ledger.entry", "data": {"n": n}},
            }
        return world

    @property
    def users(self) -> dict[str, list[str]]:
        by_user: dict[str, list[str]] = defaultdict(list)
        for connection_id, (user, _) in self.connections.items():
            by_user[user].append(connection_id)
        return by_user

    def recipients(self, envelope: Mapping[str, Any]) -> set[str]:
        """Whom an envelope is meant for, given the connections that exist at the start."""
        platform = envelope.get("platform")
        platforms = {platform} if isinstance(platform, str) else set(platform or PLATFORMS)
        excluded = set(envelope.get("excludeConnectionIds", ()))
        if "connectionIds" in envelope:
            candidates: Iterable[str] = envelope["connectionIds"]
        elif "userId" in envelope:
            candidates = self.users[envelope["userId"]]
        elif "userIds" in envelope:
            candidates = (cid for user in envelope["userIds"] for cid in self.users[user])
        else:
            candidates = self.connections
        return {
            cid
            for cid in candidates
            if cid not in excluded and self.connections[cid][1] in platforms
        }

    def pairs(self) -> set[Pair]:
        return {
            (message_id, cid)
            for message_id, envelope in self.messages.items()
            for cid in self.recipients(envelope)
        }

    def _random_target(self, rng: random.Random) -> dict[str, Any]:
        users = sorted(self.users)
        ids = sorted(self.connections)
        kind = rng.choices(
            ["userIds", "userId", "connectionIds", "broadcast"], [0.4, 0.15, 0.25, 0.2]
        )[0]
        target: dict[str, Any]
        if kind == "userIds":
            count = rng.randint(max(1, len(users) // 8), max(1, len(users) // 2))
            target = {"userIds": rng.sample(users, count)}
        elif kind == "userId":
            target = {"userId": rng.choice(users)}
        elif kind == "connectionIds":
            count = rng.randint(max(1, len(ids) // 10), max(1, len(ids) // 2))
            target = {"connectionIds": rng.sample(ids, count)}
        else:
            target = {"broadcast": True}
            if rng.random() < 0.25:
                target["excludeConnectionIds"] = rng.sample(ids, min(len(ids), 3))
        if rng.random() < 0.3:
            chosen = rng.sample(PLATFORMS, rng.randint(1, 2))
            target["platform"] = chosen[0] if len(chosen) == 1 and rng.random() < 0.5 else chosen
        return target


@dataclass(frozen=True)
class Resolution:
    """One call of ``delivery.deliver``: the recipients a message was resolved to, and when."""

    message_id: str
    recipients: frozenset[str]
    at: float


@dataclass(frozen=True)
class SenderPost:
    """One post as the sender saw it: what ``Gateway.post`` returned, and how long it took."""

    message_id: str
    connection_id: str
    seen: str
    seconds: float


@dataclass
class Evidence:
    frames: Counter[Pair]
    answered_gone: set[Pair]
    first_gone_at: dict[str, float]
    resolutions: dict[str, list[Resolution]]
    letters: dict[Pair, list[str]]
    rows_left: set[str]
    problems: list[str]
    answered: dict[Pair, list[str]] = field(default_factory=lambda: defaultdict(list))
    seen: dict[Pair, list[SenderPost]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def collect(
        cls,
        world: World,
        received: Mapping[str, list[bytes]],
        posts: Iterable[Post],
        sender_posts: Iterable[SenderPost],
        resolutions: Iterable[Resolution],
        dead_letters: Iterable[tuple[str, Mapping[str, str]]],
        rows_left: set[str],
    ) -> Evidence:
        evidence = cls(Counter(), set(), {}, defaultdict(list), defaultdict(list), rows_left, [])
        for connection_id, bodies in received.items():
            for body in bodies:
                evidence.frames[(json.loads(body)["id"], connection_id)] += 1
        for post in posts:
            if post.message_id is not None:
                evidence.answered[(post.message_id, post.connection_id)].append(post.reply.label)
            if post.reply.status == 410 and post.message_id is not None:
                evidence.answered_gone.add((post.message_id, post.connection_id))
                first = evidence.first_gone_at.get(post.connection_id, post.at)
                evidence.first_gone_at[post.connection_id] = min(first, post.at)
        for sent in sender_posts:
            evidence.seen[(sent.message_id, sent.connection_id)].append(sent)
        for resolution in resolutions:
            evidence.resolutions[resolution.message_id].append(resolution)
        for body, attributes in dead_letters:
            evidence._read_letter(world, body, attributes)
        return evidence

    def _read_letter(self, world: World, body: str, attributes: Mapping[str, str]) -> None:
        envelope = json.loads(body)
        message_id = envelope["id"]
        code = attributes.get("wspush-error-code")
        if code is None:
            # No wspush attributes: SQS's redrive moved the record itself.
            for cid in world.recipients(envelope):
                self.letters[(message_id, cid)].append(REDRIVEN)
            return
        if code != "delivery_failed":
            self.problems.append(f"unexpected dead letter {code!r} for {message_id}")
            return
        reasons = {
            f["connectionId"]: f["reason"] for f in json.loads(attributes["wspush-failures"])
        }
        for cid in envelope["connectionIds"]:
            if cid not in reasons:
                self.problems.append(f"{message_id} -> {cid} dead-lettered without its reason")
            self.letters[(message_id, cid)].append(reasons.get(cid, "(no reason)"))

    def explain(self, pair: Pair) -> str:
        """What happened to a pair: its posts from both ends, and its message's resolutions."""
        message_id, cid = pair
        resolved = [
            f"{len(r.recipients)} recipients{'' if cid in r.recipients else ' (not it)'}"
            for r in self.resolutions.get(message_id, [])
        ]
        answered = ", ".join(self.answered.get(pair, [])) or "none"
        seen = ", ".join(f"{s.seen} ({s.seconds:.2f} s)" for s in self.seen.get(pair, []))
        return (
            f"gateway answered: {answered}; sender saw: {seen or 'none'}; "
            f"resolved: {resolved or 'never'}"
        )

    def healthy_posts_timed_out(self) -> int:
        """Posts the gateway answered at once that the sender still saw time out.

        Not the code's doing: the machine was too busy to answer within the read timeout.
        Such a post was delivered and is then retried, so the client gets it twice.
        """
        count = 0
        for pair, seen in self.seen.items():
            timed_out = sum(s.seen == "ReadTimeoutError" for s in seen)
            count += max(0, timed_out - self.answered.get(pair, []).count("timeout"))
        return count

    def outcomes(self, pair: Pair) -> list[str]:
        message_id, cid = pair
        found = [DELIVERED] * self.frames[pair]
        if pair in self.answered_gone:
            found.append(GONE_ANSWERED)
        found += [f"dead-lettered: {reason}" for reason in self.letters.get(pair, ())]
        if self._gone_before_resolved(message_id, cid):
            found.append(GONE_BEFORE)
        return found

    def _gone_before_resolved(self, message_id: str, cid: str) -> bool:
        resolutions = self.resolutions.get(message_id, [])
        gone_at = self.first_gone_at.get(cid)
        return (
            gone_at is not None
            and bool(resolutions)
            and all(cid not in r.recipients for r in resolutions)
            and gone_at < min(r.at for r in resolutions)
        )


@dataclass
class Books:
    outcomes: Counter[str]
    violations: list[str]


def settle(world: World, evidence: Evidence) -> Books:
    """Each pair's one outcome, and every way the books fail to balance."""
    pairs = world.pairs()
    books = Books(Counter(), list(evidence.problems))
    for pair in sorted(pairs):
        found = evidence.outcomes(pair)
        if len(found) != 1:
            books.outcomes["lost" if not found else "settled more than once"] += 1
            books.violations.append(
                f"{pair[0]} -> {pair[1]}: {found or 'no outcome at all'}; {evidence.explain(pair)}"
            )
            continue
        books.outcomes[found[0]] += 1
        if found[0].startswith("gone") and pair[1] in evidence.rows_left:
            books.violations.append(f"{pair[0]} -> {pair[1]}: gone, but its row is still there")
    strays = {p for p in [*evidence.frames, *evidence.letters] if p not in pairs}
    books.violations += [
        f"{m} -> {c}: not a recipient, yet sent or dead-lettered" for m, c in sorted(strays)
    ]
    return books


def table(rows: Iterable[tuple[str, object]], title: str) -> str:
    rows = list(rows)
    width = max(len(label) for label, _ in rows)
    lines = [title, *(f"  {label:<{width}}  {value:>7}" for label, value in rows)]
    return "\n".join(lines)
