"""The soak's ledger judges what it is shown: each kind of loss or excess fails its line."""

from __future__ import annotations

from dataclasses import replace

from tests.soak.ledger import (
    ABORTED,
    LOST,
    QUEUE,
    QUEUE_COUNTS,
    Evidence,
    Life,
    Sent,
    Target,
    settle,
    window_end,
)

WINDOW = 10.0


def life(key: str, user: str, platform: str, opened: float, ended: float | None = None) -> Life:
    return Life(
        key,
        user,
        platform,
        started_at=opened - 0.1,
        opened_at=opened,
        connection_id=f"id-{key}",
        ended_at=ended,
        how=None if ended is None else ABORTED,
    )


def evidence(lives: list[Life], sent: list[Sent], **changes: object) -> Evidence:
    base = Evidence(
        lives=lives,
        sent=sent,
        window=WINDOW,
        quiet=[100.0],
        stale={"stale-1"},
        stale_before_final={"stale-1"},
        rows_when_quiet={lf.connection_id or "" for lf in lives if lf.ended_at is None},
        open_when_quiet={lf.connection_id or "" for lf in lives if lf.ended_at is None},
        rows_at_end=set(),
        queue_counts=dict.fromkeys(QUEUE_COUNTS, 0),
        invalid=["bad"],
        dead_letters=[("bad", "invalid_payload")],
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def failing(shown: Evidence) -> dict[str, bool]:
    return {v.name: v.ok for v in settle(shown).verdicts if not v.ok}


def world() -> tuple[list[Life], list[Sent]]:
    """Ann on pc and mobile (pc held throughout), Ben on pc; one message to Ann's pc."""
    ann_pc = life("ann-pc", "ann", "pc", opened=1.0)
    ann_mobile = life("ann-mobile", "ann", "mobile", opened=1.0)
    ben = life("ben", "ben", "pc", opened=1.0)
    to_ann_pc = Sent("m1", "user+platform", QUEUE, Target(user="ann", platforms=("pc",)), 5.0)
    to_ann_pc.answered = 5.01
    ann_pc.receipts.append(("m1", 5.2))
    return [ann_pc, ann_mobile, ben], [to_ann_pc]


def test_books_that_balance_pass_every_line() -> None:
    lives, sent = world()
    books = settle(evidence(lives, sent))
    assert books.violations == []
    assert [v.name for v in books.verdicts] == [
        "deliveries",
        "clients",
        "table",
        "queue",
        "dead letters",
    ]
    assert all(v.ok for v in books.verdicts)


def test_a_held_client_that_misses_a_message_or_gets_it_twice_or_late_fails_deliveries() -> None:
    for receipts in ([], [("m1", 5.2), ("m1", 5.3)], [("m1", 16.0)]):
        lives, sent = world()
        lives[0].receipts[:] = receipts
        assert failing(evidence(lives, sent)) == {"deliveries": False}


def test_a_frame_for_someone_else_or_from_nobody_fails_deliveries() -> None:
    for stray in (("m1", 5.2), ("m9", 5.2)):  # Ann's mobile is not on pc; m9 was never sent
        lives, sent = world()
        lives[1].receipts.append(stray)
        assert failing(evidence(lives, sent)) == {"deliveries": False}


def test_a_client_closing_in_the_window_may_miss_the_message_but_not_get_it_twice() -> None:
    lives, sent = world()
    lives[0].ended_at, lives[0].how = 6.0, ABORTED
    lives[0].receipts.clear()
    rows = {"id-ann-mobile", "id-ben"}
    assert failing(evidence(lives, sent, rows_when_quiet=rows, open_when_quiet=rows)) == {}
    lives[0].receipts[:] = [("m1", 5.2), ("m1", 5.3)]
    assert failing(evidence(lives, sent, rows_when_quiet=rows, open_when_quiet=rows)) == {
        "deliveries": False
    }


def test_the_window_ends_when_the_system_is_seen_quiet() -> None:
    _, [sent] = world()
    assert window_end(sent, WINDOW, quiet=[]) == 15.0
    assert window_end(sent, WINDOW, quiet=[2.0, 7.0, 9.0]) == 7.0


def test_a_client_the_stack_closed_fails_clients() -> None:
    lives, sent = world()
    lives[2].how, lives[2].ended_at = LOST, 50.0
    rows = {"id-ann-pc", "id-ann-mobile"}
    assert failing(evidence(lives, sent, rows_when_quiet=rows, open_when_quiet=rows)) == {
        "clients": False
    }


def test_rows_left_behind_fail_the_table() -> None:
    lives, sent = world()
    stored = {"id-ann-pc", "id-ann-mobile", "id-ben"}
    for changes in (
        {"rows_when_quiet": stored | {"stale-1"}},  # a stale row survived the final broadcast
        {"rows_when_quiet": stored - {"id-ben"}},  # an open connection lost its row
        {"rows_at_end": {"id-ben"}},  # a closed connection kept its row
    ):
        assert failing(evidence(lives, sent, **changes)) == {"table": False}


def test_a_queue_not_settled_or_a_dead_letter_of_the_wrong_kind_fails_its_line() -> None:
    lives, sent = world()
    in_flight = {**dict.fromkeys(QUEUE_COUNTS, 0), "ApproximateNumberOfMessagesNotVisible": 1}
    assert failing(evidence(lives, sent, queue_counts=in_flight)) == {"queue": False}
    for letters in ([], [("bad", "x"), ("good", "delivery_failed")]):
        assert failing(evidence(lives, sent, dead_letters=letters)) == {"dead letters": False}
