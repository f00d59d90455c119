"""The ``wspush`` command without AWS: arguments, exit statuses, what it hands the publisher."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wspush.publisher import EndpointUnreachable, PublishError, PublishResult, validate
from wspush.store import presence
from wspush.tools import cli
from wspush.tools.local import LocalStack

SEND = ["send", "--user", "u-42", "--type", "order.updated"]


class FakePublisher:
    """Stands in for ``Publisher``: remembers how it was made and what it published."""

    made: list[dict[str, Any]]
    published: list[dict[str, Any]]
    error: Exception | None = None

    def __init__(self, queue_url: str, **options: Any) -> None:
        self.made.append({"queue_url": queue_url, **options})

    def publish(self, envelope: dict[str, Any]) -> PublishResult:
        if self.error is not None:
            raise self.error
        valid = validate(envelope)
        self.published.append(valid)
        return PublishResult("sqs-1", valid["id"])


class FakeSender:
    """Stands in for ``LambdaSender``: answers what the test says the send Lambda answers."""

    made: list[dict[str, Any]]
    sent: list[dict[str, Any]]
    answer: dict[str, Any]
    error: Exception | None = None

    def __init__(self, function_name: str, **options: Any) -> None:
        self.made.append({"function_name": function_name, **options})

    def send(self, envelope: dict[str, Any]) -> dict[str, Any]:
        if self.error is not None:
            raise self.error
        self.sent.append(envelope)
        return self.answer


@pytest.fixture
def publisher(monkeypatch: pytest.MonkeyPatch) -> type[FakePublisher]:
    fake = type("Publisher", (FakePublisher,), {"made": [], "published": []})
    monkeypatch.setattr(cli, "Publisher", fake)
    return fake


@pytest.fixture
def sender(monkeypatch: pytest.MonkeyPatch) -> type[FakeSender]:
    fake = type("Sender", (FakeSender,), {"made": [], "sent": []})
    monkeypatch.setattr(cli, "LambdaSender", fake)
    return fake


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["send", "--type", "t"],
            "one of the arguments --user --connection --channel --broadcast is required",
        ),
        (["send", "--user", "u", "--broadcast", "--type", "t"], "not allowed with argument"),
        (["send", "--channel", "room:1", "--user", "u", "--type", "t"], "not allowed with"),
        (["send", "--user", "u"], "the following arguments are required: --type"),
        ([*SEND, "--via", "carrier-pigeon"], "invalid choice: 'carrier-pigeon'"),
        ([], "the following arguments are required: command"),
    ],
)
def test_argument_errors_exit_2_with_argparses_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(argv, capsys)
    assert status == 2
    assert message in err
    assert out == ""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--data", "{orderId: 7}"], "wspush: error: --data is not valid JSON: "),
        (["--data", "@/nonexistent/data.json"], "wspush: error: cannot read --data file "),
        (["--function-name", "f"], "wspush: error: --function-name is for --via lambda"),
        (["--via", "lambda", "--queue-url", "q"], "wspush: error: --queue-url is for --via sqs"),
        (["--id", ""], "wspush: error: id must be a non-empty string (field: id)"),
        (["--platform", "p" * 33], "wspush: error: platform is longer than 32 characters ("),
    ],
)
def test_bad_input_exits_2_before_anything_is_sent(
    publisher: type[FakePublisher],
    extra: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # When the command gets input it cannot send
    status, out, err = run([*SEND, *extra], capsys)
    # Then it says why on one line, exits 2 and made no publisher
    assert status == 2
    assert err.startswith(message)
    assert err.count("\n") == 1
    assert out == ""
    assert publisher.made == []


def test_an_invalid_type_names_the_field(
    publisher: type[FakePublisher], capsys: pytest.CaptureFixture[str]
) -> None:
    status, _, err = run(["send", "--broadcast", "--type", " "], capsys)
    assert status == 2
    assert err == "wspush: error: payload.type must be a non-empty string (field: payload.type)\n"
    assert publisher.published == []


def test_by_default_it_queues_on_the_local_stack_and_prints_the_ids(
    publisher: type[FakePublisher], capsys: pytest.CaptureFixture[str]
) -> None:
    # When a message is sent with no destination flags
    status, out, _ = run([*SEND, "--data", '{"orderId": 7}'], capsys)
    # Then it went to the local stack's queue through moto's endpoint
    local = LocalStack.from_env()
    made = publisher.made[0]
    assert (made["queue_url"], made["endpoint_url"], made["region"]) == (
        local.messages_queue_url,
        local.aws_endpoint,
        "us-east-1",
    )
    # And the envelope is the contract's, and one JSON line says what was queued
    sent = publisher.published[0]
    payload = {"type": "order.updated", "data": {"orderId": 7}}
    assert sent == {"userId": "u-42", "payload": payload, "id": sent["id"]}
    assert status == 0
    assert out == json.dumps({"queued": {"messageId": "sqs-1", "id": sent["id"]}}) + "\n"


def test_repeated_flags_become_lists_and_single_ones_stay_single(
    publisher: type[FakePublisher], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["send", "--user", "a", "--user", "b", "--type", "t", "--platform", "pc"]
    argv += ["--exclude", "c-1", "--id", "m-1"]
    assert run(argv, capsys)[0] == 0
    assert publisher.published[0] == {
        "id": "m-1",
        "userIds": ["a", "b"],
        "platform": "pc",
        "excludeConnectionIds": ["c-1"],
        "payload": {"type": "t", "data": {}},
    }
    argv = ["send", "--connection", "c-1", "--type", "t", "--platform", "pc", "--platform", "web"]
    assert run(argv, capsys)[0] == 0
    assert publisher.published[1]["connectionId"] == "c-1"
    assert publisher.published[1]["platform"] == ["pc", "web"]


def test_a_channel_is_one_target_and_keeps_the_filters(
    publisher: type[FakePublisher], capsys: pytest.CaptureFixture[str]
) -> None:
    # When a message is sent to a channel, for pc, minus one connection
    argv = ["send", "--channel", "room:42", "--type", "chat.message", "--data", '{"text": "hi"}']
    status, _, _ = run([*argv, "--platform", "pc", "--exclude", "c-1", "--id", "m-1"], capsys)
    # Then the envelope's one target is the channel, with its filters
    assert status == 0
    assert publisher.published[0] == {
        "id": "m-1",
        "channel": "room:42",
        "platform": "pc",
        "excludeConnectionIds": ["c-1"],
        "payload": {"type": "chat.message", "data": {"text": "hi"}},
    }


def test_a_malformed_channel_exits_2_naming_the_rule(
    publisher: type[FakePublisher], capsys: pytest.CaptureFixture[str]
) -> None:
    # When the channel is not namespace:name
    status, out, err = run(["send", "--channel", "room", "--type", "t"], capsys)
    # Then nothing is sent, and the error says what a channel looks like
    assert (status, out) == (2, "")
    assert err == (
        "wspush: error: a channel is named namespace:name, e.g. room:42 (field: channel)\n"
    )
    assert publisher.made == []


def test_data_is_read_from_a_file_or_stdin(
    publisher: type[FakePublisher],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a JSON file
    data = tmp_path / "data.json"
    data.write_text('{"orderId": 7, "note": "é"}', encoding="utf-8")
    # When it is named with @
    assert run([*SEND, "--data", f"@{data}"], capsys)[0] == 0
    # Then its content is the payload's data; and @- reads stdin the same way
    assert publisher.published[0]["payload"]["data"] == {"orderId": 7, "note": "é"}
    monkeypatch.setattr("sys.stdin", io.StringIO("[1, 2]"))
    assert run([*SEND, "--data", "@-"], capsys)[0] == 0
    assert publisher.published[1]["payload"]["data"] == [1, 2]


def test_explicit_queue_url_wins_and_is_not_local(
    publisher: type[FakePublisher], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [*SEND, "--stage", "prod", "--queue-url", "https://q", "--endpoint-url", "https://e"]
    assert run(argv, capsys)[0] == 0
    assert publisher.made == [
        {"queue_url": "https://q", "region": None, "endpoint_url": "https://e", "session": None}
    ]


def test_an_unreachable_local_stack_says_to_start_it(
    publisher: type[FakePublisher], capsys: pytest.CaptureFixture[str]
) -> None:
    publisher.error = EndpointUnreachable("SQS", "http://127.0.0.1:4566/")
    status, out, err = run(SEND, capsys)
    endpoint = LocalStack.from_env().aws_endpoint
    assert status == 1
    assert err == (
        f"wspush: error: cannot reach the local stack at {endpoint} — is `make dev` running? "
        "(port 4566: WSPUSH_LOCAL_AWS_PORT is not set)\n"
    )
    assert out == ""


def test_an_unreachable_moved_local_stack_names_the_variable_that_moved_it(
    sender: type[FakeSender],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("WSPUSH_LOCAL_LAMBDA_PORT", "45002")
    sender.error = EndpointUnreachable("Lambda", "http://127.0.0.1:45002/")
    status, _, err = run([*SEND, "--via", "lambda"], capsys)
    assert status == 1
    assert err.endswith("— is `make dev` running? (port from WSPUSH_LOCAL_LAMBDA_PORT=45002)\n")


def test_an_aws_failure_exits_1_with_its_reason(
    publisher: type[FakePublisher], capsys: pytest.CaptureFixture[str]
) -> None:
    publisher.error = PublishError("AccessDenied", "SQS refused the call: AccessDenied: no")
    status, _, err = run([*SEND, "--queue-url", "https://q"], capsys)
    assert (status, err) == (1, "wspush: error: SQS refused the call: AccessDenied: no\n")


def test_via_lambda_prints_the_answer_and_goes_to_the_local_send_function(
    sender: type[FakeSender], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a send Lambda that delivers to both of u-42's connections
    answer = {"id": "m-1", "targets": 2, "delivered": 2, "gone": 0, "failed": 0, "errors": []}
    sender.answer = answer
    # When the command sends through it
    status, out, _ = run([*SEND, "--via", "lambda", "--id", "m-1"], capsys)
    # Then serverless-offline's Lambda endpoint was used and the answer printed as is
    local = LocalStack.from_env()
    made = sender.made[0]
    assert (made["function_name"], made["endpoint_url"]) == (
        local.send_function_name,
        local.lambda_endpoint,
    )
    assert sender.sent[0]["id"] == "m-1"
    assert (status, json.loads(out)) == (0, answer)


PARTLY_FAILED = {
    "id": "m",
    "targets": 3,
    "delivered": 1,
    "gone": 1,
    "failed": 1,
    "errors": [{"connectionId": "c-2", "reason": "403 ForbiddenException"}],
}
STORAGE_DOWN = {
    "id": "m",
    "error": {"code": "storage_unavailable", "message": "table down", "field": None},
}


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        (PARTLY_FAILED, "1 of 3 recipients failed (first: c-2: 403 ForbiddenException)"),
        (STORAGE_DOWN, "the send Lambda answered an error: table down"),
    ],
)
def test_a_delivery_with_failures_exits_1(
    sender: type[FakeSender],
    answer: dict[str, Any],
    reason: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sender.answer = answer
    status, out, err = run([*SEND, "--via", "lambda"], capsys)
    assert status == 1
    assert json.loads(out) == answer
    assert err == f"wspush: error: {reason}\n"


def test_nobody_online_is_not_a_failure(
    sender: type[FakeSender], capsys: pytest.CaptureFixture[str]
) -> None:
    sender.answer = {"id": "m", "targets": 0, "delivered": 0, "gone": 0, "failed": 0, "errors": []}
    assert run([*SEND, "--via", "lambda"], capsys)[0] == 0


def test_local_targets_get_dummy_credentials_only_when_none_are_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given credentials in the environment (as tests/conftest.py sets)
    configured = cli._local_session("us-east-1").get_credentials()
    assert configured.access_key == "testing"
    # When none are configured anywhere
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    # Then the local stack gets dummy ones (and no metadata service was asked)
    dummy = cli._local_session("us-east-1").get_credentials()
    assert (dummy.access_key, dummy.secret_key) == ("test", "test")


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    status, out, _ = run(["send", "--help"], capsys)
    assert status == 0
    assert "--via {sqs,lambda}" in out


# --- presence -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["presence"], "the following arguments are required: CHANNEL"),
        (["presence", "lobby"], "a channel is named namespace:name, e.g. room:42: 'lobby'"),
        (
            ["presence", "room:42"],
            "namespace 'room' has no presence on the local stack (presence in lobby, secret)",
        ),
        (
            ["presence", "nowhere:1"],
            "the local stack declares no namespace 'nowhere' (room, lobby, secret; presence in",
        ),
    ],
)
def test_presence_of_a_channel_that_cannot_have_members_exits_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status, out, err = run(argv, capsys)
    assert (status, out) == (2, "")
    assert message in err


def test_presence_reads_the_local_stacks_channels_table_and_prints_one_json_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a channels table whose lobby:main holds alice on two connections
    read: list[tuple[Any, str]] = []

    def every_member(model: Any, channel: str) -> tuple[int, list[presence.Member]]:
        read.append((model, channel))
        return 1, [presence.Member("alice", {"name": "Alice"}, 2)]

    monkeypatch.setattr(presence, "every_member", every_member)
    # When the command asks for its members with no destination flags
    status, out, _ = run(["presence", "lobby:main"], capsys)
    # Then the local stack's table was read at moto's endpoint
    local = LocalStack.from_env()
    [(model, channel)] = read
    assert channel == "lobby:main"
    assert (model.Meta.table_name, model.Meta.host, model.Meta.region) == (
        local.channels_table_name,
        local.aws_endpoint,
        "us-east-1",
    )
    # And one JSON line holds the count and the members
    assert status == 0
    assert json.loads(out) == {
        "channel": "lobby:main",
        "count": 1,
        "members": [{"userId": "alice", "info": {"name": "Alice"}, "connections": 2}],
    }


def test_presence_with_a_table_reads_it_where_it_is_told(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    models: list[Any] = []
    monkeypatch.setattr(
        presence, "every_member", lambda model, channel: models.append(model) or (0, [])
    )
    argv = [
        "presence",
        "vip:1",
        "--table",
        "t",
        "--region",
        "eu-west-1",
        "--endpoint-url",
        "http://e",
    ]
    status, out, _ = run(argv, capsys)
    # Then any namespace may be asked (a stage's are not known here), and nothing is local
    assert status == 0
    assert json.loads(out) == {"channel": "vip:1", "count": 0, "members": []}
    assert (models[0].Meta.table_name, models[0].Meta.host, models[0].Meta.region) == (
        "t",
        "http://e",
        "eu-west-1",
    )


# --- events -------------------------------------------------------------------------------


class FakeFeed:
    """Stands in for ``EventFeed``: remembers how it was made; holds two events."""

    made: list[dict[str, Any]]
    events: tuple[Any, ...] = (
        {"detail-type": "user.online", "detail": {"userId": "é"}},
        "not json",
    )

    def __init__(self, queue_url: str, **options: Any) -> None:
        self.made.append({"queue_url": queue_url, **options})

    def drain(self) -> Iterator[Any]:
        yield from self.events

    def follow(self) -> Iterator[Any]:
        yield from self.events
        raise KeyboardInterrupt


@pytest.fixture
def feed(monkeypatch: pytest.MonkeyPatch) -> type[FakeFeed]:
    fake = type("Feed", (FakeFeed,), {"made": []})
    monkeypatch.setattr(cli, "EventFeed", fake)
    return fake


def test_events_reads_the_local_stacks_events_queue_by_default(
    feed: type[FakeFeed], capsys: pytest.CaptureFixture[str]
) -> None:
    # When the command runs with no flags
    status, out, err = run(["events"], capsys)
    # Then it read the local stack's events queue at moto's endpoint
    local = LocalStack.from_env()
    made = feed.made[0]
    assert (made["queue_url"], made["endpoint_url"], made["region"]) == (
        local.events_queue_url,
        local.events_endpoint,
        "us-east-1",
    )
    # And printed each event as one JSON line, and exited
    assert (status, err) == (0, "")
    assert out.splitlines() == [
        '{"detail-type":"user.online","detail":{"userId":"é"}}',
        '"not json"',
    ]


def test_events_follow_stops_on_ctrl_c_with_status_0(
    feed: type[FakeFeed], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["events", "--follow", "--queue-url", "https://q", "--region", "eu-west-1"]
    status, out, err = run(argv, capsys)
    assert status == 0
    assert len(out.splitlines()) == 2
    assert err == "wspush: following https://q; Ctrl-C stops\n"
    assert feed.made == [
        {"queue_url": "https://q", "region": "eu-west-1", "endpoint_url": None, "session": None}
    ]
