"""Services' side of the local stack: the queue, the dead-letter queue, the send Lambda."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.contract import assert_valid
from tests.e2e.clients import PAYLOAD, connected, eventually, unique
from tests.e2e.conftest import REPO, RunningStack
from tests.e2e.test_channel_cli import ctrl_c_as_a_terminal_sends_it


def readme_example(language: str, section: str) -> str:
    """The one ``language`` code block in README.md's ``section``, exactly as readers copy it."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    text = readme.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    [block] = re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.DOTALL | re.MULTILINE)
    return str(block)


def test_an_invalid_message_is_dead_lettered_with_its_reason_and_its_batch_still_arrives(
    local_stack: RunningStack,
) -> None:
    user = unique("dave")
    sqs = local_stack.client("sqs")
    with connected(local_stack, user) as app:
        # When a batch holds an invalid message between two valid ones
        invalid = json.dumps({"userId": user, "payload": {"type": "t"}})
        sqs.send_message_batch(
            QueueUrl=local_stack.local.messages_queue_url,
            Entries=[
                {
                    "Id": "a",
                    "MessageBody": json.dumps({"userId": user, "id": "ok-1", "payload": PAYLOAD}),
                },
                {"Id": "b", "MessageBody": invalid},
                {
                    "Id": "c",
                    "MessageBody": json.dumps({"userId": user, "id": "ok-2", "payload": PAYLOAD}),
                },
            ],
        )
        # Then both valid messages arrive
        assert sorted(app.receive()["id"] for _ in range(2)) == ["ok-1", "ok-2"]

    # And the invalid one waits in the dead-letter queue, saying why
    def dead_letters() -> list[dict[str, object]]:
        answer = sqs.receive_message(
            QueueUrl=local_stack.local.dead_letter_queue_url,
            MessageAttributeNames=["All"],
            WaitTimeSeconds=1,
        )
        return [m for m in answer.get("Messages", []) if m["Body"] == invalid]

    [letter] = eventually(dead_letters)
    attributes = {k: v["StringValue"] for k, v in letter["MessageAttributes"].items()}
    assert attributes["wspush-error-code"] == "invalid_payload"
    assert attributes["wspush-error-field"] == "payload.data"


def test_the_send_lambda_answers_with_per_outcome_counts(local_stack: RunningStack) -> None:
    user = unique("erin")
    with connected(local_stack, user, "pc") as pc, connected(local_stack, user, "mobile") as mobile:
        # When a service invokes the send function directly (serverless-offline's Lambda API)
        answer = local_stack.client("lambda").invoke(
            FunctionName=local_stack.local.send_function_name,
            Payload=json.dumps({"userId": user, "id": "direct-1", "payload": PAYLOAD}),
        )
        result = json.loads(answer["Payload"].read())
        # Then it reports both deliveries, and both apps have the message
        assert result == {
            "id": "direct-1",
            "targets": 2,
            "delivered": 2,
            "gone": 0,
            "failed": 0,
            "errors": [],
        }
        assert pc.receive()["id"] == mobile.receive()["id"] == "direct-1"


def test_the_cli_sends_through_the_queue_and_through_the_send_lambda(
    local_stack: RunningStack,
) -> None:
    user = unique("fred")
    cli = [str(Path(sys.executable).parent / "wspush"), "send", "--user", user, "--type", "cli.t"]
    with connected(local_stack, user) as app:
        # When the CLI sends via SQS (the default) and via the send Lambda
        queued = subprocess.run(
            [*cli, "--data", '{"n": 1}'], env=local_stack.env, capture_output=True, text=True
        )
        direct = subprocess.run(
            [*cli, "--data", '{"n": 2}', "--via", "lambda"],
            env=local_stack.env,
            capture_output=True,
            text=True,
        )
        # Then it printed what happened, and both messages arrived
        assert queued.returncode == 0, queued.stderr
        assert direct.returncode == 0, direct.stderr
        queued_id = json.loads(queued.stdout)["queued"]["id"]
        answer = json.loads(direct.stdout)
        assert (answer["targets"], answer["delivered"]) == (1, 1)
        received = {app.receive()["id"], app.receive()["id"]}
        assert received == {queued_id, answer["id"]}


def test_the_cli_refuses_bad_input_with_a_clear_message(local_stack: RunningStack) -> None:
    cli = str(Path(sys.executable).parent / "wspush")
    result = subprocess.run(
        [cli, "send", "--user", "u", "--type", "t", "--data", "{not json"],
        env=local_stack.env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("wspush: error:")


def test_the_readmes_node_example_reaches_a_websocket_client(local_stack: RunningStack) -> None:
    # Given the README's Node.js example (AWS SDK v3 and ajv), run as the README says: the
    # SDK pointed at the local stack's moto through the environment, from the repository's root
    example = readme_example("js", "Sending from your services")
    env = {
        **local_stack.env,
        "AWS_ENDPOINT_URL_SQS": local_stack.local.aws_endpoint,
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "WSPUSH_QUEUE_URL": local_stack.local.messages_queue_url,
    }
    # And an app connected as the example's user
    with connected(local_stack, "u-42", "pc") as app:
        # When the example runs
        ran = subprocess.run(
            ["node", "--input-type=module"],
            input=example,
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert ran.returncode == 0, ran.stderr
        # Then the app receives the message, its id the SQS message id the example printed (no
        # seq: narrowed to a platform, it is kept in no stream)
        frame = app.receive()
    assert frame == {
        "type": "order.updated",
        "data": {"orderId": 7},
        "id": ran.stdout.strip(),
        "ts": frame["ts"],
    }
    assert_valid("frame", frame)


@pytest.mark.parametrize("stack", ["local_stack", "jwt_stack"], ids=["auth-none", "auth-jwt"])
def test_wspush_listen_prints_what_a_user_receives_until_ctrl_c(
    request: pytest.FixtureRequest, stack: str
) -> None:
    # Given the local stack (with jwt, `wspush listen` makes its own token for the user)
    local_stack: RunningStack = request.getfixturevalue(stack)
    user = unique("lena")
    wspush = str(Path(sys.executable).parent / "wspush")
    listener = subprocess.Popen(
        [wspush, "listen", "--user", user],
        env=local_stack.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ctrl_c_as_a_terminal_sends_it,
    )
    try:
        # When it is connected (its first line is the pong naming the connection)
        assert listener.stdout is not None
        pong = json.loads(listener.stdout.readline())
        assert pong["type"] == "pong"
        # And a message is pushed to that user with the CLI
        sent = subprocess.run(
            [wspush, "send", "--user", user, "--type", "listen.t", "--data", '{"n": 1}'],
            env=local_stack.env,
            capture_output=True,
            text=True,
            check=True,
        )
        queued_id = json.loads(sent.stdout)["queued"]["id"]
        # Then it prints the frame as one JSON line
        frame = json.loads(listener.stdout.readline())
        assert (frame["type"], frame["data"], frame["id"]) == ("listen.t", {"n": 1}, queued_id)
    finally:
        # And Ctrl-C stops it cleanly
        listener.send_signal(signal.SIGINT)
        assert listener.wait(timeout=10) == 0
