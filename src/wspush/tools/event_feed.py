"""wspush's EventBridge events (``user.online`` / ``user.offline``) read back from an SQS queue
that a rule sends them to, for ``wspush events``.

``make dev`` makes that rule (source ``wspush`` on the ``default`` bus) and its queue on the
local stack. On AWS, a rule with the event pattern ``{"source": ["wspush"]}`` on the stack's
bus, targeting a queue of one's own, does the same. Each event is deleted from the queue once
it has been handed on, so the feed shows an event once, whoever reads it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from wspush.publisher import aws_client, aws_error

LONG_POLL_SECONDS = 20  # SQS's longest wait for a message
DRAIN_WAIT_SECONDS = 1  # long enough for SQS to look at every server, short enough to end
_BATCH = 10  # SQS's most messages per receive
# The read timeout outlasts a long poll.
_CONFIG = Config(
    connect_timeout=2, read_timeout=LONG_POLL_SECONDS + 10, retries={"mode": "standard"}
)


class EventFeed:
    """Events on ``queue_url``, oldest first as SQS hands them over. Raises ``PublishError``
    (``EndpointUnreachable`` when the endpoint cannot be reached) when an SQS call fails."""

    def __init__(
        self,
        queue_url: str,
        *,
        sqs_client: Any = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        session: boto3.session.Session | None = None,
    ) -> None:
        self.queue_url = queue_url
        self._sqs = (
            sqs_client
            if sqs_client is not None
            else aws_client("sqs", region, endpoint_url, session, _CONFIG)
        )

    def drain(self) -> Iterator[Any]:
        """Every event on the queue now; ends at the first receive that finds none."""
        while True:
            received = 0
            for event in self._receive(DRAIN_WAIT_SECONDS):
                received += 1
                yield event
            if not received:
                return

    def follow(self) -> Iterator[Any]:
        """Every event, as it arrives, for ever (long polling); the caller stops it."""
        while True:
            yield from self._receive(LONG_POLL_SECONDS)

    def _receive(self, wait_seconds: int) -> Iterator[Any]:
        """One receive's events, each parsed from its JSON body (a body that is not JSON as
        its text); the batch is deleted once every event has been handed on."""
        try:
            answer = self._sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=_BATCH, WaitTimeSeconds=wait_seconds
            )
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(exc, "SQS") from exc
        messages = answer.get("Messages", [])
        for message in messages:
            yield _parsed(message["Body"])
        if not messages:
            return
        entries = [
            {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
            for index, message in enumerate(messages)
        ]
        try:
            self._sqs.delete_message_batch(QueueUrl=self.queue_url, Entries=entries)
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(exc, "SQS") from exc


def _parsed(body: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return body
