"""The soak's books: what each client saw, what services sent, and the verdict.

Everything here is evidence the soak gathered itself, never what wspush says it did:

- **deliveries**: each (message, client) pair is judged by the frames that client received.
  A client that was open (handshake complete, pong seen) before the message was sent and
  stayed open to the end of its delivery window must have received it exactly once, within
  the window; a targeted client that opened or closed during the window at most once; a
  client the message was not meant for never. A frame no message accounts for, and a client
  the other side closed, are violations too.
- **table**: once the system is quiet, the connections table holds exactly the clients still
  open (every closed client's row deleted, every stale row deleted); after the last clients
  close, nothing.
- **queue**: nothing visible, in flight or delayed once settled.
- **dead letters**: exactly the invalid messages the run sent, body for body.

A message's delivery window starts just before its ``SendMessage``/``Invoke`` and lasts
``window`` seconds, or less when the system was seen quiet sooner (queue settled, every
direct send answered): after that nothing can arrive.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

PLATFORMS = ("pc", "mobile", "web")
CLEAN = "closed cleanly"
ABORTED = "aborted"
LOST = "closed by the other side"
FAILED = "handshake failed"
HELD = "held: open for the whole window"
HELD_ONCE = "  received exactly once"
PARTIAL = "opening or closing in the window"
PARTIAL_ONCE = "  received (at most once)"
NOT_MEANT = "not meant for the client"
QUEUE = "queue"
LAMBDA = "lambda"
QUEUE_COUNTS = (
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
)


@dataclass
class Life:
    """One client connection, as the client saw it (times on the soak's monotonic clock)."""

    key: str
    user: str
    platform: str
    started_at: float  # the handshake began
    opened_at: float | None = None  # its first pong arrived: $connect returned, row stored
    connection_id: str | None = None
    ended_at: float | None = None  # it began to close, was aborted, or was lost
    how: str | None = None  # CLEAN, ABORTED, LOST or FAILED; None while open
    receipts: list[tuple[str, float]] = field(default_factory=list)  # (message id, when)
    strays: list[str] = field(default_factory=list)  # frames that are neither pong nor message
    note: str = ""  # why a handshake failed, or how the other side closed

    def open_at(self, moment: float) -> bool:
        return (
            self.opened_at is not None
            and self.opened_at <= moment
            and (self.ended_at is None or self.ended_at > moment)
        )


@dataclass(frozen=True)
class Target:
    """Whom a message is for: one of a connection, a user (maybe on some platforms), everyone."""

    connection_id: str | None = None
    user: str | None = None
    platforms: tuple[str, ...] | None = None
    broadcast: bool = False

    def envelope(self) -> dict[str, Any]:
        fields: dict[str, Any]
        if self.connection_id is not None:
            fields = {"connectionId": self.connection_id}
        elif self.user is not None:
            fields = {"userId": self.user}
        else:
            fields = {"broadcast": True}
        if self.platforms is not None:
            fields["platform"] = self.platforms[0] if len(self.platforms) == 1 else self.platforms
        return fields

    def matches(self, life: Life) -> bool:
        if self.platforms is not None and life.platform not in self.platforms:
            return False
        if self.connection_id is not None:
            return life.connection_id == self.connection_id
        if self.user is not None:
            return life.user == self.user
        return self.broadcast


@dataclass
class Sent:
    """One message a service sent, by the queue or the send Lambda."""

    id: str
    kind: str
    route: str
    target: Target
    started: float  # just before SendMessage / Invoke
    answered: float | None = None  # the call returned
    answer: Any = None  # the send Lambda's answer
    error: str | None = None  # the call itself failed


@dataclass
class Evidence:
    lives: list[Life]
    sent: list[Sent]
    window: float
    quiet: list[float]  # moments the system was seen quiet (queue settled, nothing in flight)
    stale: set[str]  # rows stored for connections whose $disconnect never came
    stale_before_final: set[str]  # of those, still stored just before the final broadcast
    rows_when_quiet: set[str]  # the table after the final broadcast settled
    open_when_quiet: set[str]  # connection ids of the clients open then
    rows_at_end: set[str]  # the table once every client had closed
    queue_counts: dict[str, int]  # the queue's counts once settled
    invalid: list[str]  # bodies of the invalid messages sent
    dead_letters: list[tuple[str, str]]  # (body, wspush-error-code) on the dead-letter queue


@dataclass
class Verdict:
    name: str
    ok: bool
    detail: str


@dataclass
class Books:
    pairs: Counter[str] = field(default_factory=Counter)
    violations: list[str] = field(default_factory=list)
    latencies: list[tuple[Sent, float]] = field(default_factory=list)  # SendMessage to frame
    verdicts: list[Verdict] = field(default_factory=list)


def window_end(sent: Sent, window: float, quiet: Sequence[float]) -> float:
    """When ``sent`` can no longer arrive: ``window`` after it was sent, or the first moment
    the system was seen quiet after it was answered, whichever comes first."""
    end = sent.started + window
    after = sent.answered if sent.answered is not None else sent.started
    return min([end, *(moment for moment in quiet if moment >= after)])


def settle(evidence: Evidence) -> Books:
    books = Books()
    _deliveries(evidence, books)
    _clients(evidence, books)
    _table(evidence, books)
    _queue(evidence, books)
    _dead_letters(evidence, books)
    return books


def _deliveries(evidence: Evidence, books: Books) -> None:
    by_id = {sent.id: sent for sent in evidence.sent}
    received: list[Counter[str]] = []
    first: list[dict[str, float]] = []
    problems: list[str] = []
    for life in evidence.lives:
        counts: Counter[str] = Counter()
        when: dict[str, float] = {}
        for message_id, at in life.receipts:
            counts[message_id] += 1
            when.setdefault(message_id, at)
            sent = by_id.get(message_id)
            if sent is None:
                problems.append(f"{life.key} received {message_id}, which nobody sent")
            else:
                books.latencies.append((sent, at - sent.started))
        problems.extend(f"{life.key} received an unexpected frame: {s}" for s in life.strays)
        received.append(counts)
        first.append(when)
    for sent in evidence.sent:
        if sent.error is not None:
            problems.append(f"{sent.id} could not be sent: {sent.error}")
            continue
        end = window_end(sent, evidence.window, evidence.quiet)
        for life, counts, when in zip(evidence.lives, received, first, strict=True):
            got = counts[sent.id]
            if not sent.target.matches(life):
                books.pairs[NOT_MEANT] += 1
                if got:
                    problems.append(f"{sent.id} ({sent.kind}) reached {life.key}, not a target")
                continue
            held = (
                life.opened_at is not None
                and life.opened_at <= sent.started
                and (life.ended_at is None or life.ended_at >= end)
            )
            if held:
                books.pairs[HELD] += 1
                books.pairs[HELD_ONCE] += got == 1
                if got != 1:
                    problems.append(
                        f"{sent.id} ({sent.kind}, {sent.route}) reached {life.key} {got} times, "
                        "open for its whole window"
                    )
                elif when[sent.id] > sent.started + evidence.window:
                    late = when[sent.id] - sent.started
                    problems.append(f"{sent.id} reached {life.key} late: {late:.1f} s")
            elif life.started_at <= end and (
                life.ended_at is None or life.ended_at >= sent.started
            ):
                books.pairs[PARTIAL] += 1
                books.pairs[PARTIAL_ONCE] += got == 1
                if got > 1:
                    problems.append(f"{sent.id} reached {life.key} {got} times (at most once)")
            elif got:
                problems.append(f"{sent.id} reached {life.key}, not open in its window")
    books.verdicts.append(
        Verdict(
            "deliveries",
            not problems,
            "exactly once to every client held through its window, at most once to clients "
            "opening or closing in it, never to others",
        )
    )
    books.violations.extend(problems)


def _clients(evidence: Evidence, books: Books) -> None:
    problems = [
        f"{life.key} ({life.user}/{life.platform}): {life.how} {life.note}"
        for life in evidence.lives
        if life.how in (LOST, FAILED)
    ]
    books.verdicts.append(
        Verdict("clients", not problems, "every handshake completed; none closed by the stack")
    )
    books.violations.extend(problems)


def _table(evidence: Evidence, books: Books) -> None:
    closed = {
        life.connection_id
        for life in evidence.lives
        if life.connection_id is not None and life.connection_id not in evidence.open_when_quiet
    }
    rows = evidence.rows_when_quiet
    known = closed | evidence.stale | evidence.open_when_quiet
    problems = [
        *(f"closed connection {cid} still stored" for cid in sorted(rows & closed)),
        *(f"stale row {cid} still stored" for cid in sorted(rows & evidence.stale)),
        *(f"open connection {cid} not stored" for cid in sorted(evidence.open_when_quiet - rows)),
        *(f"unknown row {cid}" for cid in sorted(rows - known)),
        *(f"row {cid} left after every client closed" for cid in sorted(evidence.rows_at_end)),
    ]
    books.verdicts.append(
        Verdict(
            "table",
            not problems,
            f"{len(closed)} closed connections and {len(evidence.stale)} stale rows deleted; "
            f"{len(evidence.open_when_quiet)} open ones stored, then none",
        )
    )
    books.violations.extend(problems)


def _queue(evidence: Evidence, books: Books) -> None:
    left = {name: n for name, n in evidence.queue_counts.items() if n}
    missing = [name for name in QUEUE_COUNTS if name not in evidence.queue_counts]
    ok = not left and not missing
    books.verdicts.append(Verdict("queue", ok, "nothing visible, in flight or delayed at the end"))
    if not ok:
        books.violations.append(f"queue not settled: {evidence.queue_counts}")


def _dead_letters(evidence: Evidence, books: Books) -> None:
    expected = Counter(evidence.invalid)
    found = Counter(body for body, _ in evidence.dead_letters)
    problems = [
        *(f"dead letter not sent as invalid: {body[:120]}" for body in found - expected),
        *(f"invalid message not dead-lettered: {body[:120]}" for body in expected - found),
    ]
    books.verdicts.append(
        Verdict(
            "dead letters",
            not problems,
            f"exactly the {len(evidence.invalid)} invalid messages sent, nothing else",
        )
    )
    books.violations.extend(problems)


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (``share`` in 0..1); 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def spread(seconds: Sequence[float]) -> str:
    """p50 / p95 / max, in milliseconds."""
    figures = (percentile(seconds, 0.5), percentile(seconds, 0.95), max(seconds, default=0.0))
    return " / ".join(f"{value * 1000:.0f}" for value in figures)


def table(rows: Iterable[tuple[str, object]], title: str) -> str:
    rows = list(rows)
    width = max(len(label) for label, _ in rows)
    return "\n".join([title, *(f"  {label:<{width}}  {value:>9}" for label, value in rows)])


def latency_rows(latencies: Sequence[tuple[Sent, float]]) -> list[tuple[str, object]]:
    """Percentiles of the time from SendMessage/Invoke to a client's receipt: all frames,
    by route, and by audience (broadcasts post to everyone, so their frames wait longer)."""
    groups: dict[str, Callable[[Sent], bool]] = {
        "all": lambda sent: True,
        "by the queue": lambda sent: sent.route == QUEUE,
        "by the send Lambda": lambda sent: sent.route == LAMBDA,
        "to a connection or user": lambda sent: not sent.target.broadcast,
        "broadcast": lambda sent: sent.target.broadcast,
    }
    rows: list[tuple[str, object]] = []
    for label, chosen in groups.items():
        values = [seconds for sent, seconds in latencies if chosen(sent)]
        figures = [percentile(values, p) for p in (0.5, 0.95, 0.99)] + [max(values, default=0)]
        text = " / ".join(f"{seconds * 1000:.0f}" for seconds in figures)
        rows.append((f"{label} ({len(values)} frames)", text))
    return rows
