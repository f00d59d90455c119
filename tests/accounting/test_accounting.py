"""N messages x M recipients through the sender under a seeded mix of faults: every
(message, connection) pair must end exactly once as delivered, gone, or dead-lettered.

The queue is run the way Lambda runs it (``tests.fakes.event_source``): batches of up to
10 records, only the records not reported failed are deleted, a failed record comes back,
and after 5 receives SQS's redrive policy moves it to the dead-letter queue. Faults:

- per post, from the seed (``tests.fakes.fault_plan``): 200, 410 (the connection stays
  gone), 429, 500, 413, 403, a timeout (no answer within the client's read timeout), a
  connection reset, and streaks of one retryable fault long enough to outlast re-queues;
- per record: the table fails every read that resolves its targets while it is handled
  (throttling or internal errors, through botocore's retries): SQS must deliver it again;
- per invocation: little time left, so the deadline passes mid-batch or mid-fan-out.

Size and seed: see tests/accounting/conftest.py. The seed fixes the faults; which posts
the deadline cuts off depends on timing, so the counts may move slightly between runs.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from aws_lambda_powertools.utilities.data_classes.sqs_event import SQSRecord

from tests.accounting.ledger import (
    DELIVERED,
    Books,
    Evidence,
    Resolution,
    SenderPost,
    Size,
    World,
    settle,
    table,
)
from tests.conftest import DLQ_URL, QUEUE_URL, REGION, TABLE
from tests.fakes.dynamodb import (
    INTERNAL_ERROR,
    READS,
    THROTTLED,
    DynamoDBFaults,
    without_retry_backoff,
)
from tests.fakes.event_source import SenderEventSource, redeliver_at_once
from tests.fakes.fault_plan import FaultMix, SeededFaults
from tests.fakes.management_api import FakeManagementApi
from tests.support import add_connection, attributes_of, drain, stored_ids
from wspush.fanout import delivery, gateway, queues, sending
from wspush.settings import Settings, get_settings

READ_TIMEOUT = 1.0  # a hung post costs this much; healthy ones answer in a few ms
SHORT_BUDGET_RATE = 0.15  # invocations that start with little time left
SHORT_BUDGET_MS = (0, 400)  # how little, beyond the deadline margin
UNREADABLE_RATE = 0.1  # records handled while the table fails their target reads
NORMAL_BUDGET_MS = 30_000
SETTINGS_HELP = "--accounting-seed/--accounting-scale or WSPUSH_ACCOUNTING_SEED/_SCALE"


@pytest.fixture
def sender_under_test(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Re-queues visible at once; the gateway client times out after READ_TIMEOUT."""
    monkeypatch.setattr(queues, "MAX_DELAY_SECONDS", 0)
    monkeypatch.setattr(gateway, "CONNECT_TIMEOUT_SECONDS", READ_TIMEOUT)
    monkeypatch.setattr(gateway, "READ_TIMEOUT_SECONDS", READ_TIMEOUT)
    without_retry_backoff(monkeypatch)
    gateway.gateway_for.cache_clear()
    get_settings.cache_clear()
    yield
    gateway.gateway_for.cache_clear()


@pytest.fixture
def resolutions(monkeypatch: pytest.MonkeyPatch) -> list[Resolution]:
    """Each ``delivery.deliver`` call's message and recipients (behaviour unchanged)."""
    seen: list[Resolution] = []
    deliver = delivery.deliver

    def recording(message: Any, audience: delivery.Audience, **kwargs: Any) -> Any:
        seen.append(Resolution(message.id, frozenset(audience.ids), time.monotonic()))
        return deliver(message, audience, **kwargs)

    monkeypatch.setattr(delivery, "deliver", recording)
    return seen


@pytest.fixture
def sender_posts(monkeypatch: pytest.MonkeyPatch) -> list[SenderPost]:
    """Each post as ``Gateway.post`` returned it to the sender (behaviour unchanged)."""
    seen: list[SenderPost] = []
    post = gateway.Gateway.post

    async def recording(
        self: gateway.Gateway, connection_id: str, data: bytes
    ) -> gateway.PostResult:
        started = time.monotonic()
        result = await post(self, connection_id, data)
        label = "200" if result.outcome is gateway.PostOutcome.DELIVERED else result.reason
        message_id = json.loads(data)["id"]
        seen.append(SenderPost(message_id, connection_id, label, time.monotonic() - started))
        return result

    monkeypatch.setattr(gateway.Gateway, "post", recording)
    return seen


@pytest.mark.usefixtures("aws", "sender_under_test")
def test_every_pair_ends_exactly_once_as_delivered_gone_or_dead_lettered(
    management_api: FakeManagementApi,
    resolutions: list[Resolution],
    sender_posts: list[SenderPost],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    accounting_seed: int,
    accounting_scale: float,
) -> None:
    started = time.monotonic()
    # Given connections and messages drawn from the seed
    size = Size.scaled(accounting_scale)
    world = World.generate(random.Random(accounting_seed), size)
    for connection_id, (user, platform) in world.connections.items():
        add_connection(connection_id, user, platform)
    # And a gateway answering from the seeded fault plan
    plan = SeededFaults(accounting_seed, FaultMix(timeout_seconds=READ_TIMEOUT + 0.5))
    management_api.plan(plan)
    # And a table that sometimes fails every read resolving a record's targets (through
    # botocore's retries) while that record is handled, and invocations that sometimes start
    # with little time left
    table_faults = DynamoDBFaults().install(monkeypatch)
    unreadable: list[str] = []
    process_queued = sending.process_queued

    def processing(record: SQSRecord, settings: Settings, **kwargs: Any) -> None:
        message_id = json.loads(record.body)["id"]
        invocation = len(source.invocations)
        draw = random.Random(f"{accounting_seed}/table/{invocation}/{message_id}")
        table_faults.clear()
        if draw.random() < UNREADABLE_RATE:
            error = draw.choice([THROTTLED, INTERNAL_ERROR])
            table_faults.fail(*READS, error=error, table=TABLE)
            unreadable.append(message_id)
        process_queued(record, settings, **kwargs)

    monkeypatch.setattr(sending, "process_queued", processing)
    margin_ms = get_settings().deadline_margin_ms

    def budget(n: int) -> int:
        draw = random.Random(f"{accounting_seed}/budget/{n}")
        if draw.random() < SHORT_BUDGET_RATE:
            return margin_ms + draw.randint(*SHORT_BUDGET_MS)
        return NORMAL_BUDGET_MS

    # When the services' messages are queued and the queue is run like Lambda until empty
    redeliver_at_once(QUEUE_URL)
    publish(world)
    source = SenderEventSource(QUEUE_URL, budget=budget)
    source.run_until_empty()
    table_faults.clear()

    # Then the books balance: each pair settled exactly once, by evidence
    evidence = Evidence.collect(
        world,
        management_api.received,
        management_api.posts,
        sender_posts,
        resolutions,
        [(r["body"], attributes_of(r)) for r in drain(DLQ_URL)],
        stored_ids(),
    )
    books = settle(world, evidence)
    run = Run(source, table_faults, unreadable, sender_posts, time.monotonic() - started)
    with capsys.disabled():
        print(report(world, size, books, evidence, management_api, run))
        print(f"  seed {accounting_seed}, scale {accounting_scale:g} ({SETTINGS_HELP})\n")
    assert books.violations == [], "\n".join(books.violations[:30])
    assert books.outcomes[DELIVERED] > 0
    assert source.errors == []
    assert drain(QUEUE_URL) == []


def publish(world: World) -> None:
    sqs = boto3.client("sqs", region_name=REGION)
    envelopes = list(world.messages.values())
    for start in range(0, len(envelopes), 10):
        sqs.send_message_batch(
            QueueUrl=QUEUE_URL,
            Entries=[
                {"Id": str(index), "MessageBody": json.dumps(envelope)}
                for index, envelope in enumerate(envelopes[start : start + 10])
            ],
        )


@dataclass
class Run:
    source: SenderEventSource
    table_faults: DynamoDBFaults
    unreadable: list[str]
    sender_posts: list[SenderPost]
    elapsed: float


def report(
    world: World,
    size: Size,
    books: Books,
    evidence: Evidence,
    api: FakeManagementApi,
    run: Run,
) -> str:
    pairs = sum(books.outcomes.values())
    title = (
        f"\naccounting: {size.messages} messages x {len(world.connections)} connections "
        f"({size.users} users) = {pairs} (message, connection) pairs, {run.elapsed:.1f} s"
    )
    order = sorted(
        books.outcomes,
        key=lambda o: (not o.startswith("delivered"), not o.startswith("gone"), o),
    )
    rows: list[tuple[str, object]] = [(outcome, books.outcomes[outcome]) for outcome in order]
    rows.append(("total", pairs))
    posts = Counter(post.reply.label for post in api.posts)
    invocations = run.source.invocations
    failed_reads = sorted(run.table_faults.failures.items())
    slowest = max((p.seconds for p in run.sender_posts if p.seen == "200"), default=0.0)
    work: list[tuple[str, object]] = [
        *((f"posts answered {label}", count) for label, count in sorted(posts.items())),
        ("invocations", len(invocations)),
        ("  with little time left", sum(i.remaining_ms < NORMAL_BUDGET_MS for i in invocations)),
        ("records handled", sum(i.records for i in invocations)),
        ("  while the table failed their reads", len(run.unreadable)),
        *((f"  DynamoDB {op} calls failed", n) for op, n in failed_reads),
        ("  reported failed (back to SQS)", sum(i.failed for i in invocations)),
        ("healthy posts the sender saw time out", evidence.healthy_posts_timed_out()),
        (f"slowest 200 seen by the sender (of {READ_TIMEOUT} s)", f"{slowest:.2f} s"),
    ]
    return "\n".join([table(rows, title), table(work, "faults and work:")])
