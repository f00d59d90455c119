"""Target resolution, retries and per-recipient outcomes, with no network."""

from __future__ import annotations

import asyncio
import io
import random
import threading
from collections import defaultdict, deque
from collections.abc import Coroutine, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any, TypeVar

import pytest

from tests.conftest import logged
from tests.contract import assert_valid
from wspush.clock import Deadline, now_ms
from wspush.contract.messages import Target, parse_message
from wspush.errors import StorageUnavailable
from wspush.fanout import delivery
from wspush.fanout.delivery import Audience, RetryPolicy, backoff_seconds
from wspush.fanout.gateway import PostOutcome, PostResult
from wspush.settings import Settings
from wspush.store import connections
from wspush.store.connections import ConnectionRecord

NOW = 1_795_867_200_000
SETTINGS = Settings(
    table_name="t",
    region="us-east-1",
    queue_url="q",
    dead_letter_queue_url="dlq",
    management_endpoint="http://127.0.0.1:9",
    allowed_platforms=frozenset(),
    max_post_attempts=3,
    backoff_base_ms=100,
    backoff_cap_ms=1_000,
)

ROWS = [
    ConnectionRecord("c1", "alice", "pc", NOW, NOW),
    ConnectionRecord("c2", "alice", "mobile", NOW, NOW),
    ConnectionRecord("c3", "bob", "pc", NOW, NOW),
]
# How long ago a connection looked up by id opened (default: an hour), and the lookups made.
OPENED_AGO_MS: dict[str, int] = {}
ROW_DELETED: set[str] = set()
LOOKUPS: list[str] = []


@pytest.fixture
def table(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The data-access functions answered from ROWS; returns the deleted ids."""
    deleted: list[str] = []
    OPENED_AGO_MS.clear()
    ROW_DELETED.clear()
    LOOKUPS.clear()

    def for_user(
        user_id: str, *, now_ms: int, page_size: int | None = None
    ) -> Iterator[ConnectionRecord]:
        return (r for r in ROWS if r.user_id == user_id)

    def all_connections(
        *,
        now_ms: int,
        page_size: int | None = None,
        segment: int | None = None,
        total_segments: int | None = None,
    ) -> Iterator[ConnectionRecord]:
        return iter(ROWS)

    def get_many(ids: Iterable[str], *, now_ms: int) -> Iterator[ConnectionRecord]:
        wanted = set(ids)
        return (r for r in reversed(ROWS) if r.connection_id in wanted)

    def delete_many(connection_ids: list[str]) -> None:
        deleted.extend(connection_ids)

    def connected_at(connection_id: str) -> int | None:
        LOOKUPS.append(connection_id)
        if connection_id in ROW_DELETED or connection_id == "unstored":
            return None
        return now_ms() - OPENED_AGO_MS.get(connection_id, 3_600_000)

    monkeypatch.setattr(connections, "for_user", for_user)
    monkeypatch.setattr(connections, "all_connections", all_connections)
    monkeypatch.setattr(connections, "get_many", get_many)
    monkeypatch.setattr(connections, "delete_many", delete_many)
    monkeypatch.setattr(connections, "connected_at", connected_at)
    return deleted


T = TypeVar("T")


async def no_sleep(_: float) -> None:
    return None


class ScriptedGateway:
    """Answers posts from per-connection scripts; 200 once a script runs out."""

    def __init__(self, **scripts: list[PostOutcome]) -> None:
        self.scripts = {cid: deque(outcomes) for cid, outcomes in scripts.items()}
        self.posts: dict[str, int] = defaultdict(int)

    def run(self, work: Coroutine[Any, Any, T]) -> T:
        return asyncio.run(work)

    async def post(self, connection_id: str, data: bytes) -> PostResult:
        self.posts[connection_id] += 1
        script = self.scripts.get(connection_id)
        outcome = script.popleft() if script else PostOutcome.DELIVERED
        status = {
            PostOutcome.GONE: 410,
            PostOutcome.THROTTLED: 429,
            PostOutcome.TOO_LARGE: 413,
            PostOutcome.FORBIDDEN: 403,
            PostOutcome.ERROR: 500,
        }.get(outcome, 200)
        return PostResult(outcome, status)


def resolve(target: Target) -> list[str]:
    return delivery.resolve_targets(target, now_ms=NOW).ids


def test_user_target_resolves_every_connection_of_that_user(table: list[str]) -> None:
    assert resolve(Target(user_ids=("alice",))) == ["c1", "c2"]


def test_platform_filter_and_exclude_list_narrow_the_audience(table: list[str]) -> None:
    assert resolve(Target(user_ids=("alice", "bob"), platforms=frozenset({"pc"}))) == ["c1", "c3"]
    assert resolve(Target(broadcast=True, exclude_connection_ids=frozenset({"c2"}))) == ["c1", "c3"]


def test_explicit_ids_are_used_as_given_without_a_lookup(table: list[str]) -> None:
    assert resolve(
        Target(connection_ids=("zz", "c1"), exclude_connection_ids=frozenset({"c1"}))
    ) == ["zz"]


def test_explicit_ids_with_a_platform_filter_are_looked_up_in_given_order(table: list[str]) -> None:
    target = Target(connection_ids=("c3", "c2", "gone"), platforms=frozenset({"pc", "mobile"}))
    assert resolve(target) == ["c3", "c2"]


def test_a_user_listed_twice_is_resolved_once(table: list[str]) -> None:
    assert resolve(Target(user_ids=("alice", "alice"))) == ["c1", "c2"]


def deliver(
    gateway: ScriptedGateway,
    recipients: list[str] | delivery.Audience,
    settings: Settings = SETTINGS,
    deadline: Deadline | None = None,
) -> delivery.DeliveryReport:
    message = parse_message({"broadcast": True, "payload": {"type": "t", "data": 1}}, now_ms=NOW)
    audience = recipients if isinstance(recipients, delivery.Audience) else Audience(recipients)
    return delivery.deliver(
        message,
        audience,
        gateway=gateway,
        settings=settings,  # type: ignore[arg-type]
        deadline=deadline,
        sleep=no_sleep,
        rng=random.Random(1),
    )


def test_each_recipient_ends_in_exactly_one_outcome(table: list[str]) -> None:
    # Given one connection of each kind
    gateway = ScriptedGateway(
        ok=[],
        gone=[PostOutcome.GONE],
        busy=[PostOutcome.THROTTLED, PostOutcome.THROTTLED],
        big=[PostOutcome.TOO_LARGE],
        denied=[PostOutcome.FORBIDDEN],
        broken=[PostOutcome.ERROR] * 5,
    )
    # When the message is delivered, and what is gone forgotten
    report = deliver(gateway, ["ok", "gone", "busy", "big", "denied", "broken"])
    assert delivery.forget_gone(report.gone) == 1
    # Then throttling was retried until delivered, gone rows deleted, the rest failed
    assert sorted(report.delivered) == ["busy", "ok"]
    assert report.gone == ["gone"]
    assert table == ["gone"]
    assert report.throttled == 2
    failures = {f.connection_id: (f.reason, f.retryable) for f in report.failed}
    assert failures == {"big": ("413", False), "denied": ("403", False), "broken": ("500", True)}
    # And 413/403 were not retried while errors were, up to the bound
    assert (gateway.posts["big"], gateway.posts["denied"], gateway.posts["broken"]) == (1, 1, 3)
    assert report.as_dict()["targets"] == 6


def test_no_recipients_means_no_posts(table: list[str]) -> None:
    gateway = ScriptedGateway()
    report = deliver(gateway, [])
    assert (report.targets, report.delivered, gateway.posts) == (0, [], {})


def test_single_attempt_policy_never_retries(table: list[str]) -> None:
    gateway = ScriptedGateway(busy=[PostOutcome.THROTTLED])
    report = deliver(gateway, ["busy"], replace(SETTINGS, max_post_attempts=1))
    assert gateway.posts["busy"] == 1
    assert [f.retryable for f in report.failed] == [True]


@pytest.mark.parametrize("retry", [0, 1, 2, 3, 10, 40])
def test_backoff_is_jittered_between_zero_and_the_capped_exponential(retry: int) -> None:
    policy = RetryPolicy(max_attempts=5, base_ms=100, cap_ms=1_000)
    ceiling = min(1.0, 0.1 * 2**retry)
    delays = [backoff_seconds(retry, policy, random.Random(seed)) for seed in range(200)]
    assert all(0 <= d <= ceiling for d in delays)
    assert max(delays) > ceiling * 0.8  # full jitter spreads over the whole range


class Clock:
    """A monotonic clock that moves only when told to."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_no_post_starts_after_the_deadline(table: list[str]) -> None:
    # Given a gateway where each post takes one second, one post at a time, 2.5 s left
    clock = Clock()

    class SlowGateway(ScriptedGateway):
        async def post(self, connection_id: str, data: bytes) -> PostResult:
            clock.now += 1.0
            return await super().post(connection_id, data)

    gateway = SlowGateway()
    settings = replace(SETTINGS, delivery_concurrency=1)
    # When five recipients are due
    report = deliver(gateway, ["a", "b", "c", "d", "e"], settings, Deadline(2.5, clock))
    # Then three were posted, and two are failed as untried and retryable
    assert report.delivered == ["a", "b", "c"]
    untried = [(f.connection_id, f.attempted, f.retryable) for f in report.failed]
    assert untried == [("d", False, True), ("e", False, True)]


def test_a_retry_that_would_outlast_the_deadline_is_not_made(table: list[str]) -> None:
    # Given a throttled recipient and no time left for even the shortest backoff
    clock = Clock()
    gateway = ScriptedGateway(busy=[PostOutcome.THROTTLED] * 3)
    # When it is delivered with 1 ms to go
    report = deliver(gateway, ["busy"], deadline=Deadline(0.001, clock))
    # Then it was posted once and reported as a retryable, attempted failure
    assert gateway.posts["busy"] == 1
    assert [(f.reason, f.attempted, f.retryable) for f in report.failed] == [("429", True, True)]


def test_a_report_stays_small_whatever_the_number_of_failures() -> None:
    # Given a fan-out in which 5,000 recipients failed
    report = delivery.DeliveryReport("m", targets=5_000)
    report.failed = [delivery.Failure(f"c-{i}", "500", retryable=True) for i in range(5_000)]
    # When it is answered (and stored for redelivery checks)
    answer = report.as_dict()
    # Then it counts them all but lists only the first 100, saying how many it left out
    assert (answer["failed"], len(answer["errors"]), answer["errorsTruncated"]) == (
        5_000,
        100,
        4_900,
    )
    assert_valid("send-answer", answer)
    assert report.as_dict(max_errors=0)["errors"] == []


# --- a 410 while $connect has not returned ------------------------------------------------


def opened(**ago_ms: int) -> Audience:
    """An audience read from the table: each connection opened that many ms ago."""
    OPENED_AGO_MS.update(ago_ms)
    return Audience(list(ago_ms), {cid: now_ms() - ago for cid, ago in ago_ms.items()})


def test_a_410_for_a_connection_still_connecting_is_retried_and_its_row_kept(
    table: list[str],
) -> None:
    # Given a connection that opened 200 ms ago and whose $connect has not returned for two posts
    gateway = ScriptedGateway(new=[PostOutcome.GONE, PostOutcome.GONE])
    # When the message is delivered to it
    report = deliver(gateway, opened(new=200))
    delivery.forget_gone(report.gone)
    # Then the third post delivered it, and its row was never taken for gone
    assert report.delivered == ["new"]
    assert (report.gone, report.connecting, table) == ([], 2, [])


def test_a_410_that_outlasts_the_retries_of_a_young_connection_is_retryable_not_gone(
    table: list[str],
) -> None:
    gateway = ScriptedGateway(new=[PostOutcome.GONE] * 3)
    report = deliver(gateway, opened(new=200))
    failures = [(f.connection_id, f.reason, f.retryable, f.attempted) for f in report.failed]
    assert failures == [("new", "410 (still connecting)", True, True)]
    assert (report.gone, gateway.posts["new"]) == ([], 3)


def test_a_410_for_a_connection_older_than_the_grace_is_gone_at_once(table: list[str]) -> None:
    gateway = ScriptedGateway(old=[PostOutcome.GONE] * 3)
    report = deliver(gateway, opened(old=SETTINGS.connect_grace_ms + 1))
    assert (report.gone, gateway.posts["old"], LOOKUPS) == (["old"], 1, [])


def test_a_410_s_connection_is_read_again_unless_its_row_said_it_is_old(
    table: list[str],
) -> None:
    # Given explicit ids (no row read): one just opened, one long open, one never stored
    OPENED_AGO_MS["fresh"] = 100
    gateway = ScriptedGateway(
        fresh=[PostOutcome.GONE, PostOutcome.GONE],
        stale=[PostOutcome.GONE],
        unstored=[PostOutcome.GONE],
    )
    # When the message is delivered to them and to a healthy one
    report = deliver(gateway, ["ok", "fresh", "stale", "unstored"])
    # Then each 410's connection was read (the young one at each 410), only it was retried
    assert sorted(LOOKUPS) == ["fresh", "fresh", "stale", "unstored"]
    assert sorted(report.delivered) == ["fresh", "ok"]
    assert sorted(report.gone) == ["stale", "unstored"]


def test_a_young_connection_whose_row_is_already_gone_is_gone_at_once(table: list[str]) -> None:
    # Given a connection read with the audience a moment after it opened, that closed since
    # ($disconnect deleted its row)
    audience = opened(closed=300)
    ROW_DELETED.add("closed")
    gateway = ScriptedGateway(closed=[PostOutcome.GONE] * 3)
    # When the message is delivered, its 410 is final: no retry, no "still connecting"
    report = deliver(gateway, audience)
    assert (report.gone, report.connecting, gateway.posts["closed"]) == (["closed"], 0, 1)


def test_without_a_grace_every_410_is_gone_with_no_read(table: list[str]) -> None:
    # Given no connect grace, a connection read with the audience and an explicit id (unread)
    gateway = ScriptedGateway(new=[PostOutcome.GONE], unread=[PostOutcome.GONE])
    audience = opened(new=0)
    audience = Audience([*audience.ids, "unread"], audience.connected_at)
    # When both answer 410, both are gone, and no connection's age was read
    report = deliver(gateway, audience, replace(SETTINGS, connect_grace_ms=0))
    assert (report.gone, LOOKUPS) == (["new", "unread"], [])


# --- the deadline's cut and the clean-up after the last post ---------------------------------


def test_a_post_still_in_flight_at_the_cut_is_abandoned_as_a_retryable_failure(
    table: list[str],
) -> None:
    # Given a gateway whose answer to "stuck" comes half a second late, and a cut 50 ms away
    class StuckGateway(ScriptedGateway):
        async def post(self, connection_id: str, data: bytes) -> PostResult:
            if connection_id == "stuck":
                await asyncio.sleep(0.5)
            return await super().post(connection_id, data)

    deadline = Deadline.of(Remaining(60_000), margin_ms=10_000, reserve_ms=59_950)
    # When the message is delivered
    report = deliver(StuckGateway(), ["ok", "stuck"], deadline=deadline)
    # Then the healthy post landed and the stuck one was given up, retryable, as attempted
    assert report.delivered == ["ok"]
    failures = [(f.connection_id, f.reason, f.retryable, f.attempted) for f in report.failed]
    assert failures == [("stuck", delivery.ABANDONED, True, True)]


class Remaining:
    def __init__(self, ms: int) -> None:
        self.ms = ms

    def get_remaining_time_in_millis(self) -> int:
        return self.ms


def test_gone_rows_are_forgotten_only_while_the_invocation_has_time(table: list[str]) -> None:
    # Given 100 gone connections and an invocation already within its last half second
    clock = Clock()
    gone = [f"g-{i}" for i in range(100)]
    deadline = Deadline(-1.0, clock, cut=-1.0, end=0.5)
    # When the clean-up runs, nothing is deleted (the rows expire through their TTL)
    assert delivery.forget_gone(gone, deadline=deadline) == 0
    assert table == []
    # And with more than half a second to spare, every row is deleted, 25 to a batch
    assert delivery.forget_gone(gone, deadline=Deadline(-1.0, clock, end=1.4)) == 100
    assert sorted(table) == sorted(gone)


# --- what is logged, how many posts at once, exact figures -----------------------------------


def test_each_gone_and_failed_recipient_is_logged_with_its_message(
    table: list[str], log_output: io.StringIO
) -> None:
    # Given one recipient gone, one refused for good and one delivered
    gateway = ScriptedGateway(gone=[PostOutcome.GONE], big=[PostOutcome.TOO_LARGE])
    # When a message is delivered to them
    report = deliver(gateway, ["ok", "gone", "big"])
    # Then the gone one and the failed one are logged (never the delivered one), by id
    message_id = report.message_id
    assert logged(log_output) == [
        {"level": "INFO", "message": "connection gone", "connection_id": "gone",
         "message_id": message_id},
        {"level": "WARNING", "message": "delivery failed", "connection_id": "big",
         "message_id": message_id, "reason": "413", "retryable": False},
    ]  # fmt: skip


def test_no_more_posts_are_in_flight_than_the_delivery_concurrency(table: list[str]) -> None:
    # Given a gateway that counts the posts in flight, and a concurrency of 3
    in_flight = {"now": 0, "most": 0}

    class CountingGateway(ScriptedGateway):
        async def post(self, connection_id: str, data: bytes) -> PostResult:
            in_flight["now"] += 1
            in_flight["most"] = max(in_flight["most"], in_flight["now"])
            await asyncio.sleep(0.001)
            in_flight["now"] -= 1
            return await super().post(connection_id, data)

    # When 12 recipients are due
    report = deliver(
        CountingGateway(), [f"c-{i}" for i in range(12)], replace(SETTINGS, delivery_concurrency=3)
    )
    # Then all were delivered, 3 at a time
    assert len(report.delivered) == 12
    assert in_flight["most"] == 3


def test_the_backoff_is_a_uniform_draw_in_milliseconds_over_the_capped_exponential() -> None:
    policy = RetryPolicy(max_attempts=5, base_ms=100, cap_ms=1_000)
    for retry, ceiling_ms in ((0, 100), (2, 400), (4, 1_000)):
        expected = random.Random(7).uniform(0, ceiling_ms) / 1000
        assert backoff_seconds(retry, policy, random.Random(7)) == expected


def test_retries_wait_the_backoff_before_each_new_attempt(table: list[str]) -> None:
    # Given a recipient throttled twice
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    message = parse_message({"broadcast": True, "payload": {"type": "t", "data": 1}}, now_ms=NOW)
    gateway = ScriptedGateway(busy=[PostOutcome.THROTTLED] * 2)
    # When it is delivered
    report = delivery.deliver(
        message,
        Audience(["busy"]),
        gateway=gateway,  # type: ignore[arg-type]
        settings=SETTINGS,
        sleep=sleep,
        rng=random.Random(3),
    )
    # Then it waited twice, the backoff of retry 0 then of retry 1, and was delivered
    rng = random.Random(3)
    policy = RetryPolicy.from_settings(SETTINGS)
    assert waits == [backoff_seconds(0, policy, rng), backoff_seconds(1, policy, rng)]
    assert report.delivered == ["busy"]


def test_a_report_is_retryable_only_when_a_failure_is() -> None:
    report = delivery.DeliveryReport("m")
    assert not report.retryable
    report.failed.append(delivery.Failure("a", "413", retryable=False))
    assert not report.retryable
    report.failed.append(delivery.Failure("b", "500", retryable=True))
    assert report.retryable


def test_a_report_at_the_error_bound_lists_every_failure() -> None:
    report = delivery.DeliveryReport("m", targets=3)
    report.failed = [delivery.Failure(f"c-{i}", "500", retryable=True) for i in range(3)]
    answer = report.as_dict(max_errors=3)
    assert "errorsTruncated" not in answer
    assert [e["connectionId"] for e in answer["errors"]] == ["c-0", "c-1", "c-2"]
    assert report.as_dict(max_errors=2)["errorsTruncated"] == 1


def test_gone_rows_are_deleted_25_to_a_call(
    table: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    batches: list[int] = []
    monkeypatch.setattr(connections, "delete_many", lambda ids: batches.append(len(ids)))
    gone = [f"g-{i}" for i in range(60)]
    assert delivery.forget_gone(gone) == 60
    assert sorted(batches) == [10, 25, 25]
    assert delivery.forget_gone([]) == 0


def test_rows_that_cannot_be_deleted_are_left_to_their_ttl_and_logged(
    table: list[str], monkeypatch: pytest.MonkeyPatch, log_output: io.StringIO
) -> None:
    # Given a table that refuses the deletes of one batch in two
    calls: list[int] = []

    def delete_many(ids: list[str]) -> None:
        calls.append(len(ids))
        if ids[0] == "g-0":
            raise StorageUnavailable("throttled")

    monkeypatch.setattr(connections, "delete_many", delete_many)
    # When 50 gone rows are forgotten
    deleted = delivery.forget_gone([f"g-{i}" for i in range(50)])
    # Then the other batch is deleted, and what is left is logged
    assert deleted == 25
    assert sorted((line["message"], line["connections"]) for line in logged(log_output)) == [
        ("could not delete gone connections", 25),
        ("gone connections left to their TTL", 25),
    ]


def test_a_410_whose_connection_age_cannot_be_read_is_gone(
    table: list[str], monkeypatch: pytest.MonkeyPatch, log_output: io.StringIO
) -> None:
    def unreadable(connection_id: str) -> int:
        raise StorageUnavailable("throttled")

    monkeypatch.setattr(connections, "connected_at", unreadable)
    report = deliver(ScriptedGateway(x=[PostOutcome.GONE]), ["x"])
    assert report.gone == ["x"]
    assert {
        "level": "WARNING",
        "message": "could not read a gone connection's age",
        "connection_id": "x",
    } in logged(log_output)


def test_reads_are_asked_for_with_the_page_size_segment_and_time_given(
    table: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the table's reads, recording what they are asked
    asked: list[tuple[str, dict[str, Any]]] = []

    def recorder(name: str) -> Any:
        def read(*args: Any, **kwargs: Any) -> Iterator[ConnectionRecord]:
            asked.append((name, {**kwargs, **({"first": args[0]} if args else {})}))
            return iter(ROWS)

        return read

    for name in ("for_user", "all_connections", "get_many"):
        monkeypatch.setattr(connections, name, recorder(name))
    # When each kind of target is resolved with a page size
    for target in (
        Target(user_ids=("alice",)),
        Target(broadcast=True, segment=(2, 5)),
        Target(broadcast=True),
        Target(connection_ids=("c1", "c3"), platforms=frozenset({"pc"})),
    ):
        delivery.resolve_targets(target, now_ms=NOW, page_size=7)
    # Then each read got them
    assert asked == [
        ("for_user", {"now_ms": NOW, "page_size": 7, "first": "alice"}),
        ("all_connections", {"now_ms": NOW, "page_size": 7, "segment": 2, "total_segments": 5}),
        ("all_connections",
         {"now_ms": NOW, "page_size": 7, "segment": None, "total_segments": None}),
        ("get_many", {"now_ms": NOW, "first": ("c1", "c3")}),
    ]  # fmt: skip


def test_an_audience_read_from_rows_keeps_when_each_opened() -> None:
    rows = [ConnectionRecord("a", "u", "pc", 5, 9), ConnectionRecord("b", "u", "web", 6, 9)]
    assert Audience.of(rows, Target(broadcast=True)) == Audience(["a", "b"], {"a": 5, "b": 6})
    assert Audience.of(rows, Target(user_ids=("u",), platforms=frozenset({"web"}))) == Audience(
        ["b"], {"b": 6}
    )


def test_an_audience_of_users_gives_each_connection_its_user_s_seq() -> None:
    # Given rows of two users, and the seq the message took in one user's stream
    rows = [ConnectionRecord("a", "u", "pc", 5, 9), ConnectionRecord("b", "v", "web", 6, 9)]
    # When the audience is read for both users
    audience = Audience.of(rows, Target(user_ids=("u", "v")), {"u": 4})
    # Then only that user's connection carries a seq of its own
    assert audience == Audience(["a", "b"], {"a": 5, "b": 6}, {"a": 4})


def test_a_delete_still_running_at_the_reserve_is_left_behind(
    table: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given deletes that last until the test lets them end (2 s at most), ten batches of them
    # for eight threads, and 50 ms left before a reserve of 3 s
    release = threading.Event()
    started: list[int] = []
    finished: list[bool] = []

    def slow_delete(ids: list[str]) -> None:
        started.append(len(ids))
        release.wait(2)
        finished.append(True)

    pools: list[ThreadPoolExecutor] = []

    class Kept(ThreadPoolExecutor):
        def __init__(self, max_workers: int) -> None:
            super().__init__(max_workers)
            pools.append(self)

    monkeypatch.setattr(connections, "delete_many", slow_delete)
    monkeypatch.setattr(delivery, "ThreadPoolExecutor", Kept)
    monkeypatch.setattr(delivery, "FORGET_RESERVE_SECONDS", 3.0)
    deadline = Deadline(-1.0, Clock(), end=3.05)
    # When 250 gone rows are forgotten
    deleted = delivery.forget_gone([f"g-{i}" for i in range(250)], deadline=deadline)
    # Then it returned at the reserve without waiting for the deletes, which it does not count
    assert (deleted, finished) == (0, [])
    # And the batches no thread had started were dropped, not left to run after it returned
    release.set()
    [pool] = pools
    pool.shutdown(wait=True)
    assert 1 <= len(started) <= 8
    assert len(finished) == len(started)


def test_the_grace_holds_for_a_connection_younger_than_it_by_a_millisecond(
    table: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a clock that stands still, a grace of 1 ms, and two connections answering 410:
    # one opened this very millisecond, one opened 1 ms ago
    monkeypatch.setattr(delivery, "now_ms", lambda: NOW)
    opened_at = {"now": NOW, "before": NOW - 1}
    monkeypatch.setattr(connections, "connected_at", opened_at.get)
    gateway = ScriptedGateway(now=[PostOutcome.GONE], before=[PostOutcome.GONE])
    # When the message is delivered to them
    audience = Audience(list(opened_at), opened_at)
    report = deliver(gateway, audience, replace(SETTINGS, connect_grace_ms=1))
    # Then the one opened now was still connecting and got the retry; the other is gone
    assert (report.delivered, report.gone, report.connecting) == (["now"], ["before"], 1)
