"""Shared fixtures. The environment is set here, before any wspush module or botocore
client exists, because settings and the table model are read once per process."""

from __future__ import annotations

import copy
import io
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ACCOUNT = "123456789012"
REGION = "us-east-1"
STAGE = "test"
TABLE = f"wspush-{STAGE}-connections"
PROCESSED_TABLE = f"wspush-{STAGE}-processed"
CHANNELS_TABLE = f"wspush-{STAGE}-channels"
HISTORY_TABLE = f"wspush-{STAGE}-history"
# The namespaces `make dev` declares (local/run.py), and one with few members for the limit.
NAMESPACES = {
    "room": {"subscribe": "authenticated", "history": {"size": 100, "ttlSeconds": 86400}},
    "lobby": {
        "subscribe": "authenticated",
        "presence": True,
        "history": {"size": 100, "ttlSeconds": 86400},
    },
    "secret": {"subscribe": "restricted", "presence": True},
    "tiny": {"subscribe": "authenticated", "presence": True, "maxMembers": 2},
}
QUEUE = f"wspush-{STAGE}-messages"
DLQ = f"wspush-{STAGE}-dead-letters"
QUEUE_URL = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{QUEUE}"
DLQ_URL = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/{DLQ}"

os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "WSPUSH_TABLE_NAME": TABLE,
        "WSPUSH_PROCESSED_TABLE_NAME": PROCESSED_TABLE,
        "WSPUSH_CHANNELS_TABLE_NAME": CHANNELS_TABLE,
        "WSPUSH_HISTORY_TABLE_NAME": HISTORY_TABLE,
        "WSPUSH_NAMESPACES": json.dumps(NAMESPACES),
        "WSPUSH_MAX_CHANNELS_PER_CONNECTION": "5",
        "WSPUSH_EVENT_BUS_NAME": "default",
        "WSPUSH_QUEUE_URL": QUEUE_URL,
        "WSPUSH_DLQ_URL": DLQ_URL,
        "WSPUSH_MANAGEMENT_ENDPOINT": "http://127.0.0.1:9/unset",
        "WSPUSH_BACKOFF_BASE_MS": "1",
        "WSPUSH_BACKOFF_CAP_MS": "5",
        "POWERTOOLS_SERVICE_NAME": "wspush",
        "POWERTOOLS_METRICS_NAMESPACE": "wspush",
        "POWERTOOLS_TRACE_DISABLED": "true",
        # The route tests use the seed's trust-the-client mode; tests/integration/test_auth.py
        # covers jwt mode.
        "WSPUSH_AUTH_MODE": "none",
        "WSPUSH_STAGE": "local",
    }
)
for name in (
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ENDPOINT_URL_SQS",
    # How posts reach the gateway: each test that needs a CA bundle or a proxy sets its own.
    "AWS_CA_BUNDLE",
    "REQUESTS_CA_BUNDLE",
    *("https_proxy", "http_proxy", "no_proxy", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY"),
    "WSPUSH_MAX_HANDSHAKES",
):
    os.environ.pop(name, None)

import boto3  # noqa: E402
import pytest  # noqa: E402
from moto import mock_aws  # noqa: E402 - must be imported before any botocore client
from moto.core.botocore_stubber import BotocoreStubber  # noqa: E402

from local import moto_as_aws, stack  # noqa: E402
from local.tls import Authority, make_authority  # noqa: E402
from tests import mutation_order  # noqa: E402
from tests.fakes.management_api import FakeManagementApi  # noqa: E402
from wspush.observability import logger, metrics  # noqa: E402
from wspush.settings import get_settings  # noqa: E402

EVENTS = Path(__file__).parent / "events"
# moto, where it is kinder than AWS, behaves like AWS in every suite (stale item counts...).
moto_as_aws.install()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """In a mutation run (``make mutation``), the tests likeliest to fail first: each mutant's
    run stops at its first failing test (tests/mutation_order.py)."""
    mutant = mutation_order.mutant_under_test()
    if mutant:
        mutation_order.order(items, mutant, Path.cwd())


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    mutant = mutation_order.mutant_under_test()
    if mutant:
        mutation_order.record_kill(report, mutant, Path.cwd())


@dataclass
class FakeLambdaContext:
    function_name: str = "wspush-test-fn"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:wspush-test-fn"
    aws_request_id: str = "5b2f0e3c-0000-4000-8000-000000000001"
    log_group_name: str = "/aws/lambda/wspush-test-fn"
    log_stream_name: str = "2026/11/28/[$LATEST]0123456789abcdef"
    remaining_ms: int = 30_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_ms


def load_event(name: str) -> dict[str, Any]:
    """A real-shaped event from tests/events; tests change only the fields they care about.

    Its request times are set to now, as on a live event (row TTLs count from connectedAt).
    """
    event: dict[str, Any] = json.loads((EVENTS / name).read_text())
    context = event.get("requestContext")
    if isinstance(context, dict):
        now = time.time_ns() // 1_000_000
        for field in ("connectedAt", "requestTimeEpoch"):
            if field in context:
                context[field] = now
    return copy.deepcopy(event)


@pytest.fixture
def log_output() -> Iterator[io.StringIO]:
    """Everything the Powertools logger writes during the test, in its JSON format.

    A handler of the test's own takes the logger's place for the test: the logger's handler
    keeps the stream it was made with, which pytest (or a mutation run) may have closed by now.
    """
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(logger.registered_formatter)
    underlying = logging.getLogger(logger.name)
    previous = underlying.handlers[:]
    underlying.handlers = [handler]
    try:
        yield buffer
    finally:
        underlying.handlers = previous


# Keys every log line carries (the logger's and the Lambda context's), left out by ``logged``.
_COMMON_LOG_KEYS = frozenset(
    (
        "location",
        "timestamp",
        "service",
        "cold_start",
        "function_name",
        "function_memory_size",
        "function_arn",
        "function_request_id",
        "correlation_id",
        "xray_trace_id",
        "sampling_rate",
    )
)


def logged(buffer: io.StringIO) -> list[dict[str, Any]]:
    """The JSON lines written to ``buffer`` (``log_output``), each without the common keys."""
    return [
        {key: value for key, value in json.loads(line).items() if key not in _COMMON_LOG_KEYS}
        for line in buffer.getvalue().splitlines()
        if line.strip()
    ]


# A metric as CloudWatch reads it from an EMF line: name -> (unit, values).
Emitted = dict[str, tuple[str, list[float]]]


def emf_metrics(out: str) -> Emitted:
    """The metrics in the EMF lines of ``out`` (other lines are skipped)."""
    found: Emitted = {}
    for line in out.splitlines():
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if not isinstance(document, dict) or "_aws" not in document:
            continue
        for directive in document["_aws"]["CloudWatchMetrics"]:
            assert directive["Namespace"] == "wspush"
            for metric in directive["Metrics"]:
                value = document[metric["Name"]]
                values = value if isinstance(value, list) else [value]
                unit, before = found.get(metric["Name"], (metric["Unit"], []))
                found[metric["Name"]] = (unit, before + [float(v) for v in values])
    return found


@pytest.fixture
def emitted_metrics(capsys: pytest.CaptureFixture[str]) -> Callable[[], Emitted]:
    """The metrics emitted since the test began (by a handler, or added outside one: those
    are flushed as a handler's ``log_metrics`` would)."""
    metrics.clear_metrics()

    def read() -> Emitted:
        metrics.flush_metrics()
        return emf_metrics(capsys.readouterr().out)

    return read


@pytest.fixture
def lambda_context() -> FakeLambdaContext:
    return FakeLambdaContext()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """moto's DynamoDB and SQS with the stack's table and queues, fresh per test.

    In-process moto is not thread-safe (concurrent calls break its dicts mid-iteration); code
    that calls AWS from several threads (a user list's streams are written in parallel) gets
    each call handled whole, one at a time, as each AWS request is."""
    one_call_at_a_time = threading.Lock()
    handle = BotocoreStubber.process_request

    def atomic(self: BotocoreStubber, request: Any) -> Any:
        with one_call_at_a_time:
            return handle(self, request)

    monkeypatch.setattr(BotocoreStubber, "process_request", atomic)
    with mock_aws():
        tables = stack.create_tables(boto3.client("dynamodb", region_name=REGION), STAGE)
        assert tables == {
            "ConnectionsTable": TABLE,
            "ChannelsTable": CHANNELS_TABLE,
            "HistoryTable": HISTORY_TABLE,
            "ProcessedMessagesTable": PROCESSED_TABLE,
        }
        urls = stack.create_queues(boto3.client("sqs", region_name=REGION), STAGE)
        assert urls == {"MessagesQueue": QUEUE_URL, "DeadLetterQueue": DLQ_URL}
        yield


@pytest.fixture(scope="session")
def tls_authority(tmp_path_factory: pytest.TempPathFactory) -> Authority:
    """A certificate authority made for this session, and a server certificate for loopback."""
    return make_authority(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="session")
def _management_api(tls_authority: Authority) -> Iterator[FakeManagementApi]:
    """Served over HTTPS, as API Gateway's endpoint is; the sender trusts the session's
    authority through AWS_CA_BUNDLE, as a deployment with its own CA bundle would."""
    api = FakeManagementApi(tls=tls_authority).start()
    os.environ["WSPUSH_MANAGEMENT_ENDPOINT"] = api.url
    os.environ["AWS_CA_BUNDLE"] = str(tls_authority.ca_bundle)
    get_settings.cache_clear()
    yield api
    api.stop()


@pytest.fixture
def management_api(_management_api: FakeManagementApi) -> Iterator[FakeManagementApi]:
    """The fake Management API the delivery code posts to, empty for each test."""
    _management_api.reset()
    yield _management_api
    _management_api.reset()
