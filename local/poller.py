"""Drives the sender from the local queue the way Lambda's SQS event source mapping does.

Receives up to 10 messages, invokes the sender with the real SQS event shape, and deletes
only the records it did not report in ``batchItemFailures``: failed ones reappear after the
queue's visibility timeout and, past ``maxReceiveCount``, SQS moves them to the dead-letter
queue. (serverless-offline-sqs deletes whole batches, which hides partial failures.)
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from local.lambda_runtime import is_error_object
from wspush.tools.local import ACCOUNT_ID, REGION

Invoke = Callable[[dict[str, Any]], dict[str, Any]]


def lambda_record(message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
    """One SQS message as Lambda hands it to a function."""
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": message.get("Attributes", {}),
        "messageAttributes": {
            name: {
                "stringValue": value.get("StringValue"),
                "stringListValues": [],
                "binaryListValues": [],
                "dataType": value["DataType"],
            }
            for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message["MD5OfBody"],
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": REGION,
    }


class QueuePoller:
    """Long-polls one queue and hands each batch to ``invoke`` until stopped."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        invoke: Invoke,
        *,
        batch_size: int = 10,
        wait_seconds: int = 1,
    ) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._queue_arn = f"arn:aws:sqs:{REGION}:{ACCOUNT_ID}:{queue_url.rsplit('/', 1)[1]}"
        self._invoke = invoke
        self._batch_size = batch_size
        self._wait_seconds = wait_seconds
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sqs-poller", daemon=True)
        self.errors: list[str] = []

    def start(self) -> QueuePoller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=self._wait_seconds + 5)

    def poll_once(self) -> int:
        """Receive one batch, invoke, delete the successes; the number of records handled."""
        messages = self._sqs.receive_message(
            QueueUrl=self._queue_url,
            MaxNumberOfMessages=self._batch_size,
            WaitTimeSeconds=self._wait_seconds,
            AttributeNames=["All"],
            MessageAttributeNames=["All"],
        ).get("Messages", [])
        if not messages:
            return 0
        event = {"Records": [lambda_record(m, self._queue_arn) for m in messages]}
        try:
            response = self._invoke(event)
        except Exception as exc:  # like Lambda: a failed invocation returns the whole batch later
            self._note(f"sender invocation failed: {exc}")
            return len(messages)
        failed = {item["itemIdentifier"] for item in response.get("batchItemFailures", [])}
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            self._sqs.delete_message_batch(
                QueueUrl=self._queue_url,
                Entries=[
                    {"Id": str(index), "ReceiptHandle": m["ReceiptHandle"]}
                    for index, m in enumerate(done[start : start + 10])
                ],
            )
        return len(messages)

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                self.poll_once()
            except (BotoCoreError, ClientError) as exc:
                self._note(f"queue poll failed: {exc}")
                self._stopped.wait(1)

    def _note(self, problem: str) -> None:
        self.errors.append(problem)
        print(f"poller: {problem}", flush=True)


def lambda_invoker(lambda_client: Any, function_name: str) -> Invoke:
    """Invoke a function synchronously (serverless-offline's Lambda API) and parse its answer;
    an invocation that failed raises."""

    def invoke(event: dict[str, Any]) -> dict[str, Any]:
        answer = lambda_client.invoke(
            FunctionName=function_name, InvocationType="RequestResponse", Payload=json.dumps(event)
        )
        payload = json.loads(answer["Payload"].read() or b"{}")
        if answer.get("FunctionError"):
            raise RuntimeError(f"{answer['FunctionError']}: {payload}")
        if is_error_object(payload):
            # The handler raised: serverless-offline answers with the error, but no FunctionError.
            raise RuntimeError(f"{payload['errorType']}: {payload['errorMessage']}")
        result: dict[str, Any] = payload if isinstance(payload, dict) else {}
        return result

    return invoke
