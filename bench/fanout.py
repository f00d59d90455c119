"""One fan-out measurement in a fresh process: ``python -m bench.fanout MODE --n N ...``.

- ``wspush``: ``wspush.fanout.delivery.deliver`` as the sender Lambda calls it, with the ``Gateway``
  of ``sending.gateway_for`` pointed at the stub, posting one message to N explicit recipients
  (resolving them is not measured).
- ``channel``: the same delivery to the N subscribers of one channel, *resolution included*:
  the subscriptions are read page by page from the channels table (moto's server in a process
  of its own, on the stub's core, so its work is not counted as ours), then posted to.
- ``recovery``: a client recovering N missed messages of its user stream
  (``wspush.history.recovery.recover``, as the ``recover`` route calls it): the span read from
  the history table (moto's server in a process of its own), then posted one after the other.
  Once with a history of 2N messages, once with 20N (ten times as long, the same N missed):
  the DynamoDB calls, items and bytes read must not grow with the history.
- ``sequential``: the seed's way, one boto3 ``apigatewaymanagementapi`` client posting to each
  recipient in turn.
- ``faults``: ``deliver`` with 410s and 429s injected and the connections table in moto, to
  check each recipient ends in the right bucket and exactly the gone rows are deleted.
- ``cold-pool``: a cold container's first fan-out (no warm-up: the connection pool is empty)
  over TLS, at a share of one CPU that the parent process sets once this one is ready
  (``--ready FILE``, then ``go`` on stdin; see ``bench.cpu_limit``). Counts every attempt's
  outcome, ConnectTimeoutErrors first.
- ``big-audience``: issue 5's big audience, in moto (``mock_aws``) with the stack's tables and
  queues: one broadcast to N stored connections through ``handlers.sender.handler``, which
  splits it into scan segments on the queue; the queue is then drained into the sender, 10
  records an invocation, until empty. Each connection must be posted to exactly once.

Each run first warms up, as a container that has already delivered (imports done, client and
connection pool open), then zeroes the stub's counters and measures wall time, the process's
CPU time (every thread) and its peak RSS. The result is JSON in ``--out``; ``problems`` lists
anything delivered wrongly (a post missing, doubled or misreported).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench.machine import (
    ACCOUNT,
    CHANNELS_TABLE_NAME,
    HISTORY_TABLE_NAME,
    REGION,
    STAGE,
    TABLE_NAME,
)
from bench.stub_gateway import StubClient, selected

PAYLOAD = {
    "type": "order.updated",
    "data": {"orderId": 7, "status": "shipped", "items": 3, "carrier": "DHL", "eta": 1_795_867_200},
}
SEQUENTIAL_WARMUP = 5
# The fault check: this fraction of connections is gone, and among the others every 20th is
# throttled once and every 50th until it runs out of attempts.
GONE_RATE = 0.02
THROTTLED_ONCE_EVERY = 20
THROTTLED_FOR_GOOD_EVERY = 50


def connection_ids(n: int, salt: str = "") -> list[str]:
    """N distinct ids shaped like API Gateway's (16 base64 characters, ``+``/``/``/``=``)."""
    return [
        base64.b64encode(hashlib.sha256(f"{salt}{i}".encode()).digest()[:11]).decode()
        for i in range(n)
    ]


@dataclass
class Measurement:
    mode: str
    n: int
    wall_s: float = 0.0
    cpu_s: float = 0.0
    user_s: float = 0.0
    sys_s: float = 0.0
    rss_before_mb: float = 0.0
    peak_rss_mb: float = 0.0
    setup_ms: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    stub: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def expect(self, what: str, actual: object, expected: object) -> None:
        if actual != expected:
            self.problems.append(f"{self.mode} N={self.n}: {what} is {actual}, expected {expected}")

    def as_dict(self) -> dict[str, Any]:
        delivered = self.outcomes.get("delivered", 0)
        return {
            "mode": self.mode,
            "n": self.n,
            "wall_s": self.wall_s,
            "cpu_s": self.cpu_s,
            "user_s": self.user_s,
            "sys_s": self.sys_s,
            "deliveries_per_s": delivered / self.wall_s if self.wall_s else 0.0,
            "cpu_ms_per_delivery": 1000 * self.cpu_s / delivered if delivered else None,
            "rss_before_mb": self.rss_before_mb,
            "peak_rss_mb": self.peak_rss_mb,
            "setup_ms": self.setup_ms,
            "outcomes": self.outcomes,
            "stub": self.stub,
            "settings": self.settings,
            "details": self.details,
            "problems": self.problems,
        }


def _current_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@contextmanager
def measured(result: Measurement) -> Iterator[None]:
    result.rss_before_mb = _current_rss_mb()
    before = resource.getrusage(resource.RUSAGE_SELF)
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    yield
    result.wall_s = time.perf_counter() - wall_start
    result.cpu_s = time.process_time() - cpu_start
    after = resource.getrusage(resource.RUSAGE_SELF)
    result.user_s = after.ru_utime - before.ru_utime
    result.sys_s = after.ru_stime - before.ru_stime
    result.peak_rss_mb = after.ru_maxrss / 1024  # KiB on Linux


def _check_stub(result: Measurement, posts: int, delivered: set[str] | int) -> None:
    """The stub's own count: every recipient posted once and answered 200, no more."""
    stub = result.stub
    count = delivered if isinstance(delivered, int) else len(delivered)
    result.expect("posts the stub received", stub["posts"], posts)
    result.expect("distinct connections the stub delivered to", stub["distinct_delivered"], count)
    result.expect("duplicate deliveries at the stub", stub["duplicate_deliveries"], 0)
    result.expect("posts still in flight at the stub", stub["in_flight"], 0)


def _message(message_id: str) -> Any:
    from wspush.clock import now_ms
    from wspush.contract.messages import parse_message

    return parse_message(
        {"broadcast": True, "payload": PAYLOAD}, now_ms=now_ms(), default_id=message_id
    )


def _settings_summary(settings: Any) -> dict[str, Any]:
    return {
        "delivery_concurrency": settings.delivery_concurrency,
        "max_post_attempts": settings.max_post_attempts,
        "backoff_base_ms": settings.backoff_base_ms,
        "backoff_cap_ms": settings.backoff_cap_ms,
    }


def _gateway(settings: Any) -> Any:
    """The gateway the sender gets (``settings_gateway``): the stub's URL, the CA bundle."""
    from wspush.fanout.gateway import settings_gateway

    return settings_gateway(settings)


def run_wspush(n: int, stub: StubClient) -> Measurement:
    from wspush.fanout import delivery
    from wspush.settings import get_settings

    result = Measurement("wspush", n)
    settings = get_settings()
    result.settings = _settings_summary(settings)
    started = time.perf_counter()
    gateway = _gateway(settings)
    result.setup_ms = 1000 * (time.perf_counter() - started)
    warmup = connection_ids(2 * settings.delivery_concurrency, salt="warmup")
    delivery.deliver(
        _message("bench-warmup"), delivery.Audience(warmup), gateway=gateway, settings=settings
    )
    stub.reset()

    recipients = connection_ids(n)
    message = _message(f"bench-wspush-{n}")
    with measured(result):
        report = delivery.deliver(
            message, delivery.Audience(recipients), gateway=gateway, settings=settings
        )
    result.stub = stub.stats()
    result.outcomes = _outcomes(report)
    result.expect("recipients reported", report.targets, n)
    result.expect("recipients delivered", set(report.delivered) == set(recipients), True)
    result.expect("recipients delivered (count)", len(report.delivered), n)
    result.expect("recipients gone", len(report.gone), 0)
    result.expect("recipients failed", [f.reason for f in report.failed][:5], [])
    _check_stub(result, posts=n, delivered=n)
    return result


BENCH_CHANNEL = "room:bench"


def run_channel(n: int, stub: StubClient) -> Measurement:
    from wspush.clock import now_ms
    from wspush.contract.messages import parse_message
    from wspush.fanout import delivery
    from wspush.settings import get_settings
    from wspush.store import channels

    result = Measurement("channel", n)
    settings = get_settings()
    result.settings = _settings_summary(settings)
    # moto answers a query page in time proportional to the whole channel (DynamoDB does not):
    # its pages of 10,000 items may take longer than the 5 s a Lambda waits for DynamoDB.
    channels._ChannelItem.Meta.read_timeout_seconds = 120
    with moto_server_process() as dynamodb:
        warmup_channel = "room:warmup"
        _store_subscriptions(
            dynamodb, warmup_channel, connection_ids(2 * settings.delivery_concurrency, "warmup")
        )
        recipients = connection_ids(n)
        _store_subscriptions(dynamodb, BENCH_CHANNEL, recipients)
        started = time.perf_counter()
        gateway = _gateway(settings)
        result.setup_ms = 1000 * (time.perf_counter() - started)

        def publish(channel: str, message_id: str) -> Any:
            message = parse_message(
                {"channel": channel, "payload": PAYLOAD}, now_ms=now_ms(), default_id=message_id
            )
            audience = delivery.resolve_targets(
                message.target, now_ms=now_ms(), page_size=settings.page_size
            )
            return delivery.deliver(message, audience, gateway=gateway, settings=settings)

        publish(warmup_channel, "bench-warmup")
        stub.reset()
        with measured(result):
            report = publish(BENCH_CHANNEL, f"bench-channel-{n}")
        result.details["resolution"] = _resolution_alone(BENCH_CHANNEL, settings)
    result.stub = stub.stats()
    result.outcomes = _outcomes(report)
    result.expect("recipients reported", report.targets, n)
    result.expect("recipients delivered", set(report.delivered) == set(recipients), True)
    result.expect("recipients failed", [f.reason for f in report.failed][:5], [])
    _check_stub(result, posts=n, delivered=n)
    return result


def _resolution_alone(channel: str, settings: Any) -> dict[str, float]:
    """Reading the channel's subscribers once more, alone: our CPU, and the wall time (moto's
    answers included, which are far slower than DynamoDB's for a big channel)."""
    from wspush.clock import now_ms
    from wspush.contract.messages import Target
    from wspush.fanout import delivery

    cpu, wall = time.process_time(), time.perf_counter()
    audience = delivery.resolve_targets(
        Target(channel=channel), now_ms=now_ms(), page_size=settings.page_size
    )
    return {
        "cpu_s": time.process_time() - cpu,
        "wall_s": time.perf_counter() - wall,
        "subscribers": len(audience.ids),
    }


RECOVERY_HISTORIES = (2, 20)  # the stream's length, in multiples of the messages missed


def run_recovery(n: int, stub: StubClient) -> Measurement:
    from wspush.clock import now_ms
    from wspush.history import recovery
    from wspush.history.streams import Since, user_stream
    from wspush.settings import History, get_settings
    from wspush.store import history

    result = Measurement("recovery", n)
    settings = get_settings()
    result.settings = _settings_summary(settings)
    history.HistoryItem.Meta.read_timeout_seconds = 120  # moto's Query: see run_channel
    runs = []
    with moto_server_process() as dynamodb:
        reads = _count_reads(history)  # (a client made now: moto's endpoint is set)
        for multiple in (1, *RECOVERY_HISTORIES):  # the first a warm-up
            length = multiple * n if multiple > 1 else n
            user = f"bench-{multiple}"
            stream = user_stream(user, settings)
            assert stream is not None
            stream = replace(stream, history=History(size=length, ttl_seconds=86_400))
            epoch = _store_stream(dynamodb, stream.key, length)
            since = Since(epoch, length - n)
            head = history.position(stream.key, now_ms=now_ms())
            read_started = time.perf_counter()
            recovery.missed(stream, since, head, settings, now_ms=now_ms())
            read_s = time.perf_counter() - read_started
            stub.reset()
            reads.update(dict.fromkeys(reads, 0))
            cpu, wall = time.process_time(), time.perf_counter()
            outcome = recovery.recover(stream, since, f"c-{user}", settings, now_ms=now_ms())
            run = {
                "history": length,
                "missed": n,
                "wall_s": time.perf_counter() - wall,
                "cpu_s": time.process_time() - cpu,
                "read_wall_s": read_s,
                "recovered": outcome.recovered,
                **reads,
                "posts": stub.stats()["posts"],
            }
            if multiple > 1:
                runs.append(run)
            result.expect(f"recovered from a history of {length}", outcome.recovered, True)
            result.expect(f"replayed from a history of {length}", run["posts"], n)
    result.details = {"runs": runs}
    result.wall_s = runs[0]["wall_s"]
    result.cpu_s = runs[0]["cpu_s"]
    result.outcomes = {"delivered": runs[0]["posts"]}
    short, long = runs
    for figure in ("calls", "items"):
        result.expect(f"DynamoDB {figure} with 10x the history", long[figure], short[figure])
    # (seqs ten times bigger have a digit more in each key, frame and number read)
    result.expect(
        "DynamoDB bytes with 10x the history within 2%",
        long["bytes"] <= 1.02 * short["bytes"],
        True,
    )
    return result


def _count_reads(history: Any) -> dict[str, int]:
    """DynamoDB calls the history model makes, the items and the bytes they return."""
    counts = {"calls": 0, "items": 0, "bytes": 0}
    client = history.HistoryItem._get_connection().connection.client

    def count(http_response: Any, parsed: dict[str, Any], **_: Any) -> None:
        counts["calls"] += 1
        counts["items"] += len(parsed.get("Items", [])) + ("Item" in parsed)
        counts["bytes"] += len(http_response.content)

    client.meta.events.register("after-call.dynamodb", count)
    return counts


def _store_stream(dynamodb: Any, stream: str, length: int) -> str:
    """A user stream of ``length`` messages, as ``store.history`` keeps them; its epoch."""
    from wspush.contract.messages import with_seq
    from wspush.store.history import HEAD, message_key

    epoch = f"bench{length}"
    ttl = str(int(time.time()) + 86_400)
    base = _message("x").frame
    items = [
        {"stream": {"S": stream}, "key": {"S": HEAD}, "epoch": {"S": epoch},
         "seq": {"N": str(length)}, "ttl": {"N": ttl}},
        *(
            {"stream": {"S": stream}, "key": {"S": message_key(seq)}, "epoch": {"S": epoch},
             "seq": {"N": str(seq)}, "id": {"S": f"m-{seq}"}, "ttl": {"N": ttl},
             "frame": {"S": with_seq(base, seq).decode()}}
            for seq in range(1, length + 1)
        ),
    ]  # fmt: skip
    for start in range(0, len(items), 25):
        dynamodb.batch_write_item(
            RequestItems={
                HISTORY_TABLE_NAME: [{"PutRequest": {"Item": i}} for i in items[start : start + 25]]
            }
        )
    return epoch


@contextmanager
def moto_server_process() -> Iterator[Any]:
    """moto's server as a process of its own on the cores this one is not pinned to, with the
    stack's tables, as the only DynamoDB endpoint; a client of it."""
    import socket
    import subprocess

    import boto3

    from local import stack

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mine = os.sched_getaffinity(0)
    others = (set(range(os.cpu_count() or 1)) - mine) or mine
    server = subprocess.Popen(  # noqa: S603 - this interpreter, moto's server
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: os.sched_setaffinity(0, others),
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("moto's server did not start")
            time.sleep(0.1)
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = f"http://127.0.0.1:{port}"
        dynamodb = boto3.client("dynamodb")
        tables = stack.create_tables(dynamodb, STAGE)
        if tables.get("ChannelsTable") != CHANNELS_TABLE_NAME:
            raise RuntimeError(f"serverless.yml names the tables {tables}")
        yield dynamodb
    finally:
        server.terminate()
        server.wait(timeout=10)


def _store_subscriptions(dynamodb: Any, channel: str, connection_ids: list[str]) -> None:
    """Subscriptions as the channel route stores them, of connections that opened a while ago."""
    now = int(time.time()) - 600
    for start in range(0, len(connection_ids), 25):
        items = [
            {
                "PutRequest": {
                    "Item": {
                        "channel": {"S": channel},
                        "key": {"S": f"c#{cid}"},
                        "connectionId": {"S": cid},
                        "userId": {"S": f"u-{index}"},
                        "platform": {"S": "pc"},
                        "connectedAt": {"N": str(now * 1000)},
                        "present": {"BOOL": False},
                        "ttl": {"N": str(now + 3_600)},
                    }
                }
            }
            for index, cid in enumerate(connection_ids[start : start + 25], start)
        ]
        dynamodb.batch_write_item(RequestItems={CHANNELS_TABLE_NAME: items})


def run_sequential(n: int, stub: StubClient) -> Measurement:
    import boto3
    from botocore.exceptions import ClientError

    result = Measurement("sequential", n)
    started = time.perf_counter()
    client = boto3.client(
        "apigatewaymanagementapi",
        endpoint_url=os.environ["WSPUSH_MANAGEMENT_ENDPOINT"],
        region_name=os.environ["AWS_REGION"],
    )
    result.setup_ms = 1000 * (time.perf_counter() - started)
    frame = _frame()
    for connection_id in connection_ids(SEQUENTIAL_WARMUP, salt="warmup"):
        client.post_to_connection(ConnectionId=connection_id, Data=frame)
    stub.reset()

    delivered, errors = 0, []
    with measured(result):
        for connection_id in connection_ids(n):
            try:
                client.post_to_connection(ConnectionId=connection_id, Data=frame)
            except ClientError as exc:
                errors.append(exc.response.get("Error", {}).get("Code", "?"))
            else:
                delivered += 1
    result.stub = stub.stats()
    result.outcomes = {"delivered": delivered, "gone": 0, "failed": len(errors), "throttled": 0}
    result.expect("posts that failed", errors[:5], [])
    _check_stub(result, posts=n, delivered=n)
    return result


def _frame() -> bytes:
    """The same bytes wspush posts (the client frame: type, data, id, ts)."""
    frame = {**PAYLOAD, "id": "bench-sequential", "ts": int(time.time() * 1000)}
    return json.dumps(frame, separators=(",", ":")).encode()


def _outcomes(report: Any) -> dict[str, int]:
    return {
        "delivered": len(report.delivered),
        "gone": len(report.gone),
        "failed": len(report.failed),
        "throttled": report.throttled,
    }


def run_faults(n: int, stub: StubClient) -> Measurement:
    """410s and 429s injected: buckets, stub posts and deleted rows are all as expected."""
    with moto_dynamodb() as dynamodb:
        from wspush.fanout import delivery
        from wspush.settings import get_settings

        result = Measurement("faults", n)
        settings = get_settings()
        result.settings = _settings_summary(settings)
        recipients = connection_ids(n, salt="faults")
        _store_rows(dynamodb, recipients)
        attempts = settings.max_post_attempts
        gone = {cid for cid in recipients if selected(cid, GONE_RATE)}
        alive = [cid for cid in recipients if cid not in gone]
        throttles = {cid: 1 for cid in alive[1::THROTTLED_ONCE_EVERY]}
        throttles.update({cid: attempts for cid in alive[3::THROTTLED_FOR_GOOD_EVERY]})
        failing = {cid for cid, count in throttles.items() if count >= attempts}
        stub.configure(gone_rate=GONE_RATE, throttle_ids=throttles)

        gateway = _gateway(settings)
        with measured(result):
            report = delivery.deliver(
                _message(f"bench-faults-{n}"),
                delivery.Audience(recipients),
                gateway=gateway,
                settings=settings,
            )
            delivery.forget_gone(report.gone)
        result.stub = stub.stats()
        stub.configure()  # back to no faults
        result.outcomes = _outcomes(report)
        result.expect("gone recipients", set(report.gone) == gone, True)
        result.expect(
            "failed recipients", {f.connection_id for f in report.failed} == failing, True
        )
        result.expect(
            "failure reasons",
            {(f.reason, f.retryable, f.attempted) for f in report.failed},
            {("429 LimitExceededException", True, True)} if failing else set(),
        )
        result.expect("delivered recipients", set(report.delivered) == set(alive) - failing, True)
        result.expect("429s reported", report.throttled, sum(throttles.values()))
        result.expect("rows left", _stored_ids(dynamodb) == set(recipients) - gone, True)
        posts = n + sum(min(count, attempts - 1) for count in throttles.values())
        _check_stub(result, posts=posts, delivered=set(alive) - failing)
        result.expect("410s at the stub", result.stub["statuses"].get("410", 0), len(gone))
        result.expect("429s at the stub", result.stub["statuses"].get("429", 0), report.throttled)
        return result


@contextmanager
def moto_dynamodb() -> Iterator[Any]:
    """moto's server on a thread, with the stack's tables, as the only DynamoDB endpoint."""
    import threading

    import boto3
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    from local import stack

    app = DomainDispatcherApplication(create_backend_app)
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, name="moto", daemon=True)
    thread.start()
    try:
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = f"http://127.0.0.1:{server.server_port}"
        dynamodb = boto3.client("dynamodb")
        tables = stack.create_tables(dynamodb, STAGE)
        if tables.get("ConnectionsTable") != TABLE_NAME:
            raise RuntimeError(f"serverless.yml names the table {tables}, not {TABLE_NAME}")
        yield dynamodb
    finally:
        server.shutdown()
        server.server_close()


def _store_rows(dynamodb: Any, connection_ids: list[str]) -> None:
    """Rows of connections that opened a while ago (a 410 for them means gone)."""
    now = int(time.time()) - 600
    for start in range(0, len(connection_ids), 25):
        items = [
            {
                "PutRequest": {
                    "Item": {
                        "connectionId": {"S": cid},
                        "userId": {"S": f"u-{index}"},
                        "platform": {"S": "pc"},
                        "connectedAt": {"N": str(now * 1000)},
                        "lastSeenAt": {"N": str(now * 1000)},
                        "ttl": {"N": str(now + 3_600)},
                    }
                }
            }
            for index, cid in enumerate(connection_ids[start : start + 25], start)
        ]
        dynamodb.batch_write_item(RequestItems={TABLE_NAME: items})


def _stored_ids(dynamodb: Any) -> set[str]:
    pages = dynamodb.get_paginator("scan").paginate(
        TableName=TABLE_NAME, ProjectionExpression="connectionId"
    )
    return {item["connectionId"]["S"] for page in pages for item in page["Items"]}


# --- a big audience, split into shares for many sender invocations (issue 5, section 3) ---

BIG_AUDIENCE_N = 20_000
# A million connections at 2,000 a segment: the split the README's on-paper broadcast makes,
# measured by splitting the same rows into this many segments.
MILLION_SEGMENTS = 500
SQS_BATCH_SIZE = 10  # the sender's batchSize, as the event source mapping hands records over


@dataclass
class _LambdaContext:
    """What the sender reads from its Lambda context (as tests/conftest.py's fake)."""

    aws_request_id: str
    function_name: str = f"wspush-{STAGE}-sender"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:wspush-{STAGE}-sender"
    log_group_name: str = f"/aws/lambda/wspush-{STAGE}-sender"
    log_stream_name: str = "2026/01/01/[$LATEST]bench"
    remaining_ms: int = 900_000  # Lambda's longest timeout: no share stops for time here

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def _sqs_record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    """A message received from SQS as Lambda's event source mapping hands it to the sender."""
    now = str(int(time.time() * 1000))
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": now,
            "SenderId": "AIDABENCH",
            "ApproximateFirstReceiveTimestamp": now,
        },
        "messageAttributes": {
            name: {
                "stringValue": value["StringValue"],
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": "String",
            }
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }


def run_big_audience(n: int, stub: StubClient) -> Measurement:
    """One broadcast to N connections: split, every share delivered, each connection once."""
    # Every AWS call goes to moto in this process: no endpoint override, and moto's hooks in
    # place before any botocore client exists.
    os.environ.pop("AWS_ENDPOINT_URL", None)
    os.environ.pop("AWS_ENDPOINT_URL_DYNAMODB", None)
    os.environ.pop("AWS_ENDPOINT_URL_SQS", None)
    import uuid

    import boto3
    from moto import mock_aws

    from local import moto_as_aws, stack

    with mock_aws(), moto_as_aws.as_aws():
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        sqs = boto3.client("sqs", region_name=REGION)
        tables = stack.create_tables(dynamodb, STAGE)
        if tables.get("ConnectionsTable") != TABLE_NAME:
            raise RuntimeError(f"serverless.yml names the tables {tables}, not {TABLE_NAME}")
        urls = stack.create_queues(sqs, STAGE)
        queue_url, dlq_url = urls["MessagesQueue"], urls["DeadLetterQueue"]
        os.environ.update(
            {
                "WSPUSH_TABLE_NAME": TABLE_NAME,
                "WSPUSH_PROCESSED_TABLE_NAME": tables["ProcessedMessagesTable"],
                "WSPUSH_QUEUE_URL": queue_url,
                "WSPUSH_DLQ_URL": dlq_url,
            }
        )
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]

        from handlers import sender
        from wspush.fanout import queues
        from wspush.settings import get_settings

        get_settings.cache_clear()
        settings = get_settings()
        result = Measurement("big-audience", n)
        result.settings = {
            **_settings_summary(settings),
            "connections_per_segment": settings.connections_per_segment,
        }
        recipients = connection_ids(n, salt="big-audience")
        started = time.perf_counter()
        _store_rows(dynamodb, recipients)
        store_s = time.perf_counter() - started
        # The table is new: its item count says 0, as DynamoDB's does for hours.
        expected_segments = settings.broadcast_segments

        def invoke(records: list[dict[str, Any]]) -> list[str]:
            context = _LambdaContext(aws_request_id=str(uuid.uuid4()))
            answer = sender.handler({"Records": records}, context)
            return [item["itemIdentifier"] for item in answer["batchItemFailures"]]

        broadcast = {"broadcast": True, "id": "big-1", "payload": {"type": "bench", "data": {}}}
        original = {
            "MessageId": str(uuid.uuid4()),
            "ReceiptHandle": "bench-original",
            "Body": json.dumps(broadcast),
            "MD5OfBody": hashlib.md5(json.dumps(broadcast).encode()).hexdigest(),  # noqa: S324
        }
        stub.reset()
        handled, invocations, failed, segments, continuations = 1, 1, [], [], 0
        with measured(result):
            split_started = time.perf_counter()
            failed += invoke([_sqs_record(original, queue_arn)])
            split_s = time.perf_counter() - split_started
            while True:
                answer = sqs.receive_message(
                    QueueUrl=queue_url,
                    MaxNumberOfMessages=SQS_BATCH_SIZE,
                    MessageAttributeNames=["All"],
                )
                messages = answer.get("Messages", [])
                if not messages:
                    break
                records = [_sqs_record(message, queue_arn) for message in messages]
                for record in records:
                    attributes = record["messageAttributes"]
                    if queues.AFTER in attributes:
                        continuations += 1
                    else:
                        segments.append(attributes.get(queues.SEGMENT, {}).get("stringValue"))
                batch_failed = invoke(records)
                failed += batch_failed
                handled += len(records)
                invocations += 1
                for message in messages:
                    if message["MessageId"] not in batch_failed:
                        sqs.delete_message(
                            QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"]
                        )
        result.stub = stub.stats()
        left = _messages_left(sqs, queue_url)
        dead_letters = sum(_messages_left(sqs, dlq_url).values())
        million_split_s, million_shares = _split_only(
            invoke, sqs, queue_url, queue_arn, n, MILLION_SEGMENTS
        )
        distinct = result.stub["distinct_delivered"]
        duplicates = result.stub["duplicate_deliveries"]
        result.outcomes = {"delivered": distinct, "gone": 0, "failed": 0, "throttled": 0}
        result.details = {
            "connections": n,
            "segments": len(segments),
            "segment_labels": sorted(set(map(str, segments))),
            "continuations": continuations,
            "messages_handled": handled,
            "sender_invocations": invocations,
            "stub_posts": result.stub["posts"],
            "distinct_reached": distinct,
            "duplicates": duplicates,
            "missing": n - distinct,
            "wall_s": result.wall_s,
            "split_wall_s": split_s,
            "million_split_segments": million_shares,
            "million_split_wall_s": million_split_s,
            "store_rows_s": store_s,
            "records_failed": len(failed),
            "messages_left": left,
            "dead_letters": dead_letters,
        }
        # The stub only sees ids the sender read from the table, which holds exactly these N.
        result.expect("connections reached twice (duplicates)", duplicates, 0)
        result.expect("connections missed", n - distinct, 0)
        result.expect("posts the stub received", result.stub["posts"], n)
        result.expect("posts still in flight at the stub", result.stub["in_flight"], 0)
        result.expect("segments the broadcast was split into", len(segments), expected_segments)
        result.expect(
            "segments queued",
            sorted(map(str, segments)),
            sorted(f"{s}/{expected_segments}" for s in range(expected_segments)),
        )
        result.expect(
            "shares (segments and their continuations) of at most one page each",
            handled - 1 >= -(-n // settings.connections_per_segment),
            True,
        )
        result.expect("records the sender reported failed", failed, [])
        result.expect("messages left on the queue", left, dict.fromkeys(left, 0))
        result.expect("dead letters", dead_letters, 0)
        result.expect("shares of the 500-segment split", million_shares, MILLION_SEGMENTS)
        return result


def _split_only(
    invoke: Any, sqs: Any, queue_url: str, queue_arn: str, n: int, segments: int
) -> tuple[float, int]:
    """The split alone of a broadcast into ``segments`` shares (the first invocation's work
    for a million connections, whose item count says 500 pages): its wall time and the shares
    it queued, which are dropped."""
    from wspush.settings import get_settings

    caller_setting = os.environ.get("WSPUSH_BROADCAST_SEGMENTS")
    os.environ["WSPUSH_BROADCAST_SEGMENTS"] = str(segments)
    get_settings.cache_clear()
    broadcast = {"broadcast": True, "id": "big-split", "payload": {"type": "bench", "data": {}}}
    body = json.dumps(broadcast)
    message = {
        "MessageId": "bench-split",
        "ReceiptHandle": "bench-split",
        "Body": body,
        "MD5OfBody": hashlib.md5(body.encode()).hexdigest(),  # noqa: S324
    }
    try:
        started = time.perf_counter()
        failed = invoke([_sqs_record(message, queue_arn)])
        elapsed = time.perf_counter() - started
        queued = _messages_left(sqs, queue_url)["ApproximateNumberOfMessages"]
        sqs.purge_queue(QueueUrl=queue_url)
    finally:
        if caller_setting is None:
            del os.environ["WSPUSH_BROADCAST_SEGMENTS"]
        else:
            os.environ["WSPUSH_BROADCAST_SEGMENTS"] = caller_setting
        get_settings.cache_clear()
    return elapsed, queued if not failed else 0


def _messages_left(sqs: Any, queue_url: str) -> dict[str, int]:
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]
    return {name: int(attributes.get(name, 0)) for name in names}


# --- a cold container at a share of one CPU (issue 9, section 2) ---

READY_FILE_ENV = "WSPUSH_BENCH_READY_FILE"


def run_cold_pool(n: int, stub: StubClient) -> Measurement:
    """A cold container's first fan-out: the process is made as the send Lambda's would be
    (imports, settings, an empty pool), says it is ready, and once the parent has limited
    its CPU and says go, posts to N recipients. Every attempt's outcome is counted."""
    from wspush.fanout import delivery
    from wspush.fanout import gateway as gateway_module
    from wspush.fanout.gateway import Gateway, Network, PostOutcome, PostResult
    from wspush.settings import get_settings

    settings = get_settings()
    result = Measurement("cold-pool", n)
    result.settings = {**_settings_summary(settings), "max_handshakes": settings.max_handshakes}
    attempts: Counter[str] = Counter()

    class CountingGateway(Gateway):
        async def post(self, connection_id: str, data: bytes) -> PostResult:
            answer = await super().post(connection_id, data)
            delivered = answer.outcome is PostOutcome.DELIVERED
            attempts[answer.outcome.value if delivered else answer.reason] += 1
            return answer

    gateway = CountingGateway(
        settings.management_endpoint,
        region=settings.region,
        max_connections=settings.delivery_concurrency,
        network=Network.from_settings(settings),
    )
    recipients = connection_ids(n, salt="cold")
    message = _message(f"bench-cold-{n}")
    stub.reset()
    Path(os.environ[READY_FILE_ENV]).write_text("ready")
    if sys.stdin.readline().strip() != "go":
        raise RuntimeError("the parent did not say go")
    with measured(result):
        report = delivery.deliver(
            message, delivery.Audience(recipients), gateway=gateway, settings=settings
        )
    result.stub = stub.stats()
    result.outcomes = _outcomes(report)
    result.details = {
        "attempts": dict(attempts.most_common()),
        "connect_timeouts": attempts["ConnectTimeoutError"],
        "pool_timeouts": attempts["PoolTimeoutError"],
        "failed_reasons": dict(Counter(f.reason for f in report.failed).most_common()),
        "connections_opened": gateway.opened,
        "peak_handshakes": gateway.peak_handshakes,
        "slowest_handshake_s": gateway.slowest_handshake,
        "longest_wait_s": gateway.longest_wait,
        "connect_timeout_s": gateway_module.CONNECT_TIMEOUT_SECONDS,
        "cpu_share": result.cpu_s / result.wall_s if result.wall_s else None,
    }
    result.expect("recipients reported", report.targets, n)
    result.expect("duplicate deliveries at the stub", result.stub["duplicate_deliveries"], 0)
    return result


MODES: dict[str, Callable[[int, StubClient], Measurement]] = {
    "wspush": run_wspush,
    "channel": run_channel,
    "recovery": run_recovery,
    "sequential": run_sequential,
    "faults": run_faults,
    "big-audience": run_big_audience,
    "cold-pool": run_cold_pool,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout")
    parser.add_argument("mode", choices=sorted(MODES))
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--stub", required=True, help="the stub gateway's base URL")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    result = MODES[args.mode](args.n, StubClient(args.stub))
    args.out.write_text(json.dumps(result.as_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
