"""Load held, nothing lost: many clients coming and going on the local stack (`make dev`)
while services send to connections, users and everyone, by the queue and the send Lambda.

Clients leave cleanly or drop without a close frame, new ones join; the table also holds
rows of connections whose ``$disconnect`` never came; a few invalid messages go on the queue.
The ledger (tests/soak/ledger.py) then judges deliveries, the table, the queue and the
dead-letter queue from what the clients received and what the stack holds at the end.

Size and seed: tests/soak/conftest.py (``make soak`` runs 300 clients for 120 s).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter

import pytest

from tests.e2e.conftest import RunningStack
from tests.soak.ledger import (
    ABORTED,
    CLEAN,
    FAILED,
    HELD,
    HELD_ONCE,
    LAMBDA,
    LOST,
    NOT_MEANT,
    PARTIAL,
    PARTIAL_ONCE,
    QUEUE,
    Books,
    Evidence,
    latency_rows,
    settle,
    spread,
    table,
)
from tests.soak.workload import KINDS, WINDOW_SECONDS, Size, Soak

SETTINGS_HELP = "WSPUSH_SOAK_CLIENTS / WSPUSH_SOAK_SECONDS / WSPUSH_SOAK_SEED"


def test_load_is_held_and_nothing_is_lost(
    soak_stack: RunningStack, soak_size: Size, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    # Given the local stack
    soak = Soak(soak_stack, soak_size)
    # When clients come and go while services send, rows of connections whose $disconnect
    # never came are stored (before, during and after the traffic), and the system settles
    evidence = asyncio.run(soak.run())
    # Then the books balance
    books = settle(evidence)
    with capsys.disabled():
        print(report(soak, evidence, books, time.monotonic() - started))
    assert books.violations == [], "\n".join(books.violations[:30])
    assert all(verdict.ok for verdict in books.verdicts)


def report(soak: Soak, evidence: Evidence, books: Books, elapsed: float) -> str:
    size = soak.size
    lives = evidence.lives
    ended = Counter(life.how for life in lives)
    opened = [life for life in lives if life.opened_at is not None]
    handshakes = [life.opened_at - life.started_at for life in opened if life.opened_at]
    users = len({life.user for life in lives})
    title = (
        f"\nsoak: {size.clients} clients held for {soak.phases.traffic:.0f} s "
        f"({users} users, 3 platforms), {elapsed:.0f} s in all"
    )
    clients: list[tuple[str, object]] = [
        ("peak concurrent", soak.peak),
        ("opened (handshake and pong)", len(opened)),
        (f"closed cleanly ({soak.churned[CLEAN]} while sending)", ended[CLEAN]),
        (f"aborted, no close frame ({soak.churned[ABORTED]} while sending)", ended[ABORTED]),
        ("closed by the stack", ended[LOST]),
        ("handshakes failed", ended[FAILED]),
        ("handshake to pong, ms p50/p95/max", spread(handshakes)),
    ]
    routes = Counter((sent.kind, sent.route) for sent in evidence.sent)
    messages: list[tuple[str, object]] = [
        (f"{kind} by {route}", routes[(kind, route)])
        for kind in [*KINDS, "final broadcast"]
        for route in (QUEUE, LAMBDA)
        if routes[(kind, route)]
    ]
    messages.append(("total valid", len(evidence.sent)))
    codes = Counter(code for _, code in evidence.dead_letters)
    messages.append(("invalid, by the queue", len(evidence.invalid)))
    messages.append(
        ("  dead-lettered as", ", ".join(f"{code} {n}" for code, n in sorted(codes.items())))
    )
    frames = sum(len(life.receipts) for life in lives)
    deliveries: list[tuple[str, object]] = [
        ("frames received", frames),
        ("(message, client) pairs judged", sum(books.pairs[k] for k in (HELD, PARTIAL, NOT_MEANT))),
        *((label, books.pairs[label]) for label in (HELD, HELD_ONCE, PARTIAL, PARTIAL_ONCE)),
        (NOT_MEANT, books.pairs[NOT_MEANT]),
    ]
    latency = latency_rows(books.latencies)
    answers = [s.answer for s in evidence.sent if s.route == LAMBDA and isinstance(s.answer, dict)]
    calls = {
        route: [s.answered - s.started for s in evidence.sent if s.route == route and s.answered]
        for route in (QUEUE, LAMBDA)
    }
    direct: list[tuple[str, object]] = [
        (f"{route} call, ms p50/p95/max", spread(values)) for route, values in calls.items()
    ]
    direct.extend(
        (f"send Lambda answers: {field}", sum(int(a.get(field, 0)) for a in answers))
        for field in ("targets", "delivered", "gone", "failed")
    )
    stale = len(evidence.stale)
    stale_left = evidence.rows_when_quiet & evidence.stale
    left_before = len(evidence.stale_before_final)
    cleanup: list[tuple[str, object]] = [
        ("stale rows stored", stale),
        ("  deleted before the final broadcast", stale - left_before),
        ("  deleted by the final broadcast", left_before - len(stale_left)),
        (
            "phases, s: ramp / traffic / settle / final",
            f"{soak.phases.ramp:.0f} / {soak.phases.traffic:.0f} / "
            f"{soak.phases.settle:.0f} / {soak.phases.final:.0f}",
        ),
    ]
    work = stack_rows(soak.stack.log(), soak.phases.traffic)
    verdict = [f"  {'PASS' if v.ok else 'FAIL'}  {v.name}: {v.detail}" for v in books.verdicts]
    return "\n".join(
        [
            table(clients, title),
            table(messages, f"messages (window {WINDOW_SECONDS:g} s):"),
            table(deliveries, "deliveries:"),
            table(latency, "latency, SendMessage/Invoke to frame, ms p50 / p95 / p99 / max:"),
            table(direct, "sending:"),
            table(cleanup, "clean-up:"),
            table(work, "the local stack's work (from its log):"),
            "verdict:",
            *verdict,
            *(f"  ! {v}" for v in books.violations[:20]),
            f"  seed {size.seed}, {size.clients} clients, {size.seconds:g} s ({SETTINGS_HELP})\n",
        ]
    )


INVOCATION = re.compile(r"\(λ: (\w+)\) RequestId: \S+\s+Duration: ([\d.]+) ms")
EVENTS = (
    "connection gone",
    "requeued recipients",
    "delivery failed",
    "invalid message dead-lettered",
)


def stack_rows(log: str, traffic_seconds: float) -> list[tuple[str, object]]:
    """What each function did, from serverless-offline's invocation lines and the handlers'
    structured logs: how busy the one sender poller was tells whether the queue kept up."""
    durations: dict[str, list[float]] = {}
    for function, milliseconds in INVOCATION.findall(log):
        durations.setdefault(function, []).append(float(milliseconds) / 1000)
    rows: list[tuple[str, object]] = []
    for function, values in sorted(durations.items()):
        rows.append((f"{function}: invocations", len(values)))
        rows.append((f"{function}: ms p50/p95/max", spread(values)))
    busy = sum(durations.get("sender", []))
    rows.append(("sender busy, share of the traffic phase", f"{busy / traffic_seconds:.0%}"))
    events = Counter(re.findall(r'"message":"([^"]+)"', log))
    rows.extend((f'logged "{event}"', events[event]) for event in EVENTS)
    rows.append(("errors logged", log.count('"level":"ERROR"') + log.count("Traceback")))
    return rows
