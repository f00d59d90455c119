"""The publisher and the ``wspush`` command against moto's SQS and CloudFormation.

The send Lambda's invoke API is played by botocore's Stubber: no Lambda runtime needed.
"""

from __future__ import annotations

import io
import json
import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import Stubber
from moto.server import ThreadedMotoServer

from handlers import sender
from tests.conftest import QUEUE_URL, REGION, FakeLambdaContext
from tests.fakes.management_api import FakeManagementApi
from tests.support import PAYLOAD, add_connection, drain, frames, sqs_event
from wspush.clock import now_ms
from wspush.contract.messages import parse_message
from wspush.publisher import (
    EndpointUnreachable,
    LambdaSender,
    Publisher,
    PublishError,
    PublishResult,
    SendFunctionError,
    envelope,
    stack_outputs,
)
from wspush.store import channels
from wspush.store.connections import ConnectionRecord
from wspush.tools import cli
from wspush.tools.local import LocalStack

FUNCTION = "wspush-test-send"


def received(queue_url: str = QUEUE_URL) -> list[dict[str, Any]]:
    """Every message now on a queue: its SQS id and its parsed body."""
    sqs = boto3.client("sqs", region_name=REGION)
    messages: list[dict[str, Any]] = []
    while True:
        answer = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)
        if not answer.get("Messages"):
            return messages
        for message in answer["Messages"]:
            messages.append({"sqs_id": message["MessageId"], "body": json.loads(message["Body"])})
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    status = cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


# --- Publisher on moto's queue ------------------------------------------------------------


@pytest.mark.usefixtures("aws")
def test_one_published_message_is_on_the_queue_as_a_valid_envelope() -> None:
    # When a service publishes one envelope without an id
    result = Publisher(QUEUE_URL).publish({"userId": "u-42", "platform": "pc", "payload": PAYLOAD})
    # Then the queue holds it, with the id the result reports, valid for the sender
    [message] = received()
    assert message["sqs_id"] == result.sqs_message_id
    assert message["body"] == {
        "userId": "u-42",
        "platform": "pc",
        "payload": PAYLOAD,
        "id": result.id,
    }
    assert parse_message(message["body"], now_ms=0).id == result.id


@pytest.mark.usefixtures("aws")
def test_a_batch_of_25_is_queued_with_every_id_preserved() -> None:
    # Given 25 envelopes, every other one with its own id
    envelopes = [
        {"userId": f"u-{n}", "payload": PAYLOAD, **({"id": f"m-{n}"} if n % 2 else {})}
        for n in range(25)
    ]
    # When they are published as a batch
    result = Publisher(QUEUE_URL).publish_batch(envelopes)
    # Then all 25 are queued: given ids kept, generated ones reported, bodies valid
    assert result.ok
    ids = [r.id for r in result.results if isinstance(r, PublishResult)]
    assert [ids[n] for n in range(1, 25, 2)] == [f"m-{n}" for n in range(1, 25, 2)]
    messages = received()
    assert sorted(m["body"]["id"] for m in messages) == sorted(ids)
    assert {m["sqs_id"] for m in messages} == {r.sqs_message_id for r in result.queued.values()}
    for message in messages:
        parse_message(message["body"], now_ms=0)


@pytest.mark.usefixtures("aws")
def test_an_invalid_envelope_in_a_batch_stays_off_the_queue() -> None:
    envelopes = [{"userId": "u", "payload": PAYLOAD}, {"userId": "u", "payload": {"type": "t"}}]
    result = Publisher(QUEUE_URL).publish_batch(envelopes)
    assert list(result.queued) == [0]
    assert result.failed[1].field == "payload.data"
    assert len(received()) == 1


@pytest.mark.usefixtures("aws")
def test_a_queue_that_does_not_exist_is_an_error_not_a_result() -> None:
    missing = QUEUE_URL.replace("messages", "nope")
    with pytest.raises(PublishError) as caught:
        Publisher(missing).publish({"broadcast": True, "payload": PAYLOAD})
    assert not isinstance(caught.value, EndpointUnreachable)
    with pytest.raises(PublishError):
        Publisher(missing).publish_batch([{"broadcast": True, "payload": PAYLOAD}])


# --- the command on moto's queue ----------------------------------------------------------


@pytest.mark.usefixtures("aws")
def test_command_queues_on_the_given_queue_and_prints_the_ids(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # When the command sends to the queue by its URL
    argv = ["send", "--user", "u-42", "--type", "order.updated", "--data", '{"orderId": 7}']
    status, out, err = run([*argv, "--queue-url", QUEUE_URL], capsys)
    # Then it printed one JSON line naming the message that is now on the queue
    assert (status, err) == (0, "")
    queued = json.loads(out)["queued"]
    [message] = received()
    assert queued == {"messageId": message["sqs_id"], "id": message["body"]["id"]}
    assert message["body"] == {"userId": "u-42", "payload": PAYLOAD, "id": queued["id"]}


@pytest.mark.usefixtures("aws")
def test_a_message_to_a_channel_reaches_its_subscribers_through_the_sender(
    management_api: FakeManagementApi,
    lambda_context: FakeLambdaContext,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given a and b subscribed to room:42, c connected but not subscribed
    for cid, user in (("a", "alice"), ("b", "bob"), ("c", "carol")):
        add_connection(cid, user)
    for cid in ("a", "b"):
        record = ConnectionRecord(cid, "alice" if cid == "a" else "bob", "pc", now_ms(), now_ms())
        expires = datetime.now(UTC) + timedelta(hours=2)
        channels.subscribe(record, "room:42", expires=expires, max_channels=5, presence=None)
    # When a service publishes to the channel, and the command sends to it minus b
    by_service = Publisher(QUEUE_URL).publish(envelope("chat.message", {"n": 1}, channel="room:42"))
    argv = ["send", "--channel", "room:42", "--exclude", "b", "--type", "chat.message"]
    status, out, _ = run([*argv, "--data", '{"n": 2}', "--queue-url", QUEUE_URL], capsys)
    assert status == 0
    by_command = json.loads(out)["queued"]["id"]
    # Then the queue holds channel envelopes the sender delivers to the subscribers only
    records = drain(QUEUE_URL)
    assert [json.loads(r["body"])["channel"] for r in records] == ["room:42", "room:42"]
    response = sender.handler(sqs_event(*records), lambda_context)
    assert response["batchItemFailures"] == []
    assert [f["id"] for f in frames(management_api, "a")] == [by_service.id, by_command]
    assert [f["id"] for f in frames(management_api, "b")] == [by_service.id]
    assert frames(management_api, "c") == []
    assert {f["channel"] for f in frames(management_api, "a")} == {"room:42"}


def stack_template(outputs: dict[str, Any]) -> str:
    return json.dumps(
        {
            "Resources": {
                "MessagesQueue": {
                    "Type": "AWS::SQS::Queue",
                    "Properties": {"QueueName": "wspush-prod-messages"},
                }
            },
            "Outputs": {key: {"Value": value} for key, value in outputs.items()},
        }
    )


@pytest.fixture
def prod_stack(aws: None) -> str:
    """A deployed-looking stack wspush-prod in moto; returns its queue URL."""
    cloudformation = boto3.client("cloudformation", region_name=REGION)
    template = stack_template(
        {"QueueUrl": {"Ref": "MessagesQueue"}, "SendFunctionName": "wspush-prod-send"}
    )
    cloudformation.create_stack(StackName="wspush-prod", TemplateBody=template)
    return stack_outputs("prod", region=REGION)["QueueUrl"]


def test_stage_is_resolved_from_the_stacks_outputs(
    prod_stack: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given the stack wspush-prod, its queue distinct from the test stack's
    assert prod_stack.endswith("/wspush-prod-messages")
    assert stack_outputs("prod")["SendFunctionName"] == "wspush-prod-send"
    # When the command sends to --stage prod
    argv = ["send", "--broadcast", "--type", "hello", "--stage", "prod", "--region", REGION]
    status, out, _ = run(argv, capsys)
    # Then the message is on that stack's queue
    assert status == 0
    [message] = received(prod_stack)
    assert message["body"]["id"] == json.loads(out)["queued"]["id"]
    assert received(QUEUE_URL) == []


@pytest.mark.usefixtures("aws")
def test_a_stage_without_a_stack_or_without_the_output_fails_with_the_reason(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given no stack wspush-nope, and a stack wspush-bare without outputs
    boto3.client("cloudformation", region_name=REGION).create_stack(
        StackName="wspush-bare", TemplateBody=stack_template({})
    )
    send = ["send", "--broadcast", "--type", "hello", "--region", REGION]
    # When the command is pointed at either
    status, out, err = run([*send, "--stage", "nope"], capsys)
    # Then it exits 1 with CloudFormation's reason, or the missing output named
    assert (status, out) == (1, "")
    assert err.startswith("wspush: error: CloudFormation refused the call: ValidationError: ")
    assert "wspush-nope" in err
    status, _, err = run([*send, "--stage", "bare", "--via", "lambda"], capsys)
    assert (status, err) == (1, "wspush: error: stack wspush-bare has no output SendFunctionName\n")


# --- the command's default target: the local stack ----------------------------------------


@pytest.fixture
def local_aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStack]:
    """moto's server on a free port, as ``make dev`` runs it, with the local queue."""
    port = free_port()
    monkeypatch.setenv("WSPUSH_LOCAL_AWS_PORT", str(port))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    local = LocalStack.from_env()
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=local.aws_endpoint)
    assert sqs.create_queue(QueueName="wspush-local-messages")["QueueUrl"] == (
        local.messages_queue_url
    )
    yield local
    server.stop()


def test_by_default_the_command_queues_on_the_local_stack(
    local_aws: LocalStack, capsys: pytest.CaptureFixture[str]
) -> None:
    # When the command runs with no destination flags
    status, out, _ = run(["send", "--user", "u-42", "--type", "hello", "--id", "m-1"], capsys)
    # Then the message is on the local stack's queue
    assert status == 0
    sqs = boto3.client("sqs", region_name=REGION, endpoint_url=local_aws.aws_endpoint)
    [message] = sqs.receive_message(QueueUrl=local_aws.messages_queue_url)["Messages"]
    assert json.loads(message["Body"])["id"] == "m-1"
    assert json.loads(out) == {"queued": {"messageId": message["MessageId"], "id": "m-1"}}


def test_a_local_stack_that_is_not_running_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given nothing listening where the local stack should be
    monkeypatch.setenv("WSPUSH_LOCAL_AWS_PORT", str(free_port()))
    # When the command sends there
    status, out, err = run(["send", "--broadcast", "--type", "hello"], capsys)
    # Then it says so, and how to fix it
    endpoint = LocalStack.from_env().aws_endpoint
    assert (status, out) == (1, "")
    assert err == (
        f"wspush: error: cannot reach the local stack at {endpoint} — is `make dev` running? "
        f"(port from WSPUSH_LOCAL_AWS_PORT={endpoint.rsplit(':', 1)[1]})\n"
    )


# --- LambdaSender against a stubbed invoke API --------------------------------------------


def invoke_answer(body: Any, *, function_error: str | None = None) -> dict[str, Any]:
    raw = json.dumps(body).encode()
    answer: dict[str, Any] = {
        "StatusCode": 200,
        "Payload": StreamingBody(io.BytesIO(raw), len(raw)),
    }
    if function_error:
        answer["FunctionError"] = function_error
    return answer


@pytest.fixture
def lambda_stub() -> Iterator[tuple[Any, Stubber]]:
    client = boto3.client("lambda", region_name=REGION)
    with Stubber(client) as stub:
        yield client, stub
        stub.assert_no_pending_responses()


def expected_invoke(event: Any) -> dict[str, Any]:
    return {
        "FunctionName": FUNCTION,
        "InvocationType": "RequestResponse",
        "Payload": json.dumps(event, separators=(",", ":")).encode(),
    }


def test_lambda_sender_invokes_synchronously_and_returns_the_answer(
    lambda_stub: tuple[Any, Stubber],
) -> None:
    # Given a send Lambda that delivers to one of two connections and finds the other gone
    client, stub = lambda_stub
    event = {"userId": "alice", "id": "m-1", "payload": PAYLOAD}
    answer = {"id": "m-1", "targets": 2, "delivered": 1, "gone": 1, "failed": 0, "errors": []}
    stub.add_response("invoke", invoke_answer(answer), expected_invoke(event))
    # When one envelope is sent through it
    result = LambdaSender(FUNCTION, lambda_client=client).send(event)
    # Then the event was the envelope and the answer is the Lambda's
    assert result == answer


def test_lambda_sender_sends_a_list_as_one_invocation(lambda_stub: tuple[Any, Stubber]) -> None:
    client, stub = lambda_stub
    events = [{"connectionId": f"c-{n}", "id": f"m-{n}", "payload": PAYLOAD} for n in range(3)]
    answers = [{"id": f"m-{n}", "targets": 1, "delivered": 1} for n in range(3)]
    stub.add_response("invoke", invoke_answer(answers), expected_invoke(events))
    assert LambdaSender(FUNCTION, lambda_client=client).send(events) == answers


def test_a_function_error_becomes_an_exception_with_its_message(
    lambda_stub: tuple[Any, Stubber],
) -> None:
    # Given a send Lambda that raises
    client, stub = lambda_stub
    crash = {"errorType": "KeyError", "errorMessage": "'WSPUSH_TABLE_NAME'", "stackTrace": []}
    stub.add_response("invoke", invoke_answer(crash, function_error="Unhandled"))
    # When a message is sent, Then its error type and message are raised
    with pytest.raises(SendFunctionError) as caught:
        LambdaSender(FUNCTION, lambda_client=client).send({"broadcast": True, "payload": PAYLOAD})
    assert caught.value.error_type == "KeyError"
    assert str(caught.value) == "the send Lambda failed: KeyError: 'WSPUSH_TABLE_NAME'"


def test_a_missing_function_is_a_publish_error(lambda_stub: tuple[Any, Stubber]) -> None:
    client, stub = lambda_stub
    stub.add_client_error("invoke", "ResourceNotFoundException", "Function not found", 404)
    with pytest.raises(PublishError) as caught:
        LambdaSender(FUNCTION, lambda_client=client).send({"broadcast": True, "payload": PAYLOAD})
    assert caught.value.code == "ResourceNotFoundException"


def test_command_via_lambda_prints_the_send_lambdas_answer(
    lambda_stub: tuple[Any, Stubber],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Given the real LambdaSender over the stubbed invoke API
    client, stub = lambda_stub
    made: list[dict[str, Any]] = []

    def sender(function_name: str, **options: Any) -> LambdaSender:
        made.append({"function_name": function_name, **options})
        return LambdaSender(function_name, lambda_client=client)

    monkeypatch.setattr(cli, "LambdaSender", sender)
    answer = {"id": "m-1", "targets": 1, "delivered": 1, "gone": 0, "failed": 0, "errors": []}
    event = {"id": "m-1", "userId": "u-42", "payload": {"type": "hello", "data": {}}}
    stub.add_response(
        "invoke",
        invoke_answer(answer),
        {**expected_invoke(event), "FunctionName": "wspush-local-send"},
    )
    # When the command sends through the local send Lambda
    argv = ["send", "--user", "u-42", "--type", "hello", "--id", "m-1", "--via", "lambda"]
    status, out, _ = run(argv, capsys)
    # Then it went to serverless-offline's Lambda endpoint and printed the answer
    assert (status, json.loads(out)) == (0, answer)
    assert made[0]["endpoint_url"] == LocalStack.from_env().lambda_endpoint
