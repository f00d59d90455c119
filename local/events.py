"""The local stack's EventBridge events, kept where ``wspush events`` reads them.

``python -m local.events PORT`` is a moto server of its own (EventBridge, and SQS for the
events queue), in its own process: on AWS the events' work does not share DynamoDB's CPU, and
here thousands of rows going through the connections table's stream (a ``user.online`` or
``user.offline`` each) would otherwise hold up the moto server every other call of the local
stack waits on. A rule on its ``default`` bus sends every event whose source is wspush to the
events queue. Nobody may be reading it, and moto's SQS does work in proportion to a queue's
depth on every message it takes in, so the queue is trimmed to its newest ``KEPT`` events.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import threading
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

from local import moto_events
from wspush import eventbus
from wspush.tools.local import EVENT_BUS, EVENTS_RULE, LocalStack

KEPT = 100
TRIM_INTERVAL_SECONDS = 1.0
_BATCH = 10


def create_event_feed(sqs: Any, events: Any, local: LocalStack) -> str:
    """The events queue, and a rule on the local bus sending every event whose source is
    wspush to it; returns the queue's URL."""
    url: str = sqs.create_queue(QueueName=local.events_queue_url.rsplit("/", 1)[1])["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]
    events.put_rule(
        Name=EVENTS_RULE,
        EventBusName=EVENT_BUS,
        EventPattern=json.dumps({"source": [eventbus.SOURCE]}),
        State="ENABLED",
    )
    events.put_targets(
        Rule=EVENTS_RULE,
        EventBusName=EVENT_BUS,
        Targets=[{"Id": "events-queue", "Arn": arn["QueueArn"]}],
    )
    return url


class FeedTrimmer:
    """Drops the oldest events while the queue holds more than ``kept``."""

    def __init__(
        self,
        sqs: Any,
        queue_url: str,
        *,
        kept: int = KEPT,
        interval_seconds: float = TRIM_INTERVAL_SECONDS,
    ) -> None:
        self._sqs = sqs
        self._queue_url = queue_url
        self._kept = kept
        self._interval = interval_seconds
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="events-trimmer", daemon=True)

    def start(self) -> FeedTrimmer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=self._interval + 5)

    def trim_once(self) -> int:
        """Drop what is over ``kept``, oldest first (moto hands messages over in the order
        they came); the number dropped."""
        attributes = self._sqs.get_queue_attributes(
            QueueUrl=self._queue_url, AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        excess = int(attributes["ApproximateNumberOfMessages"]) - self._kept
        dropped = 0
        while excess > 0:
            messages = self._sqs.receive_message(
                QueueUrl=self._queue_url, MaxNumberOfMessages=min(_BATCH, excess)
            ).get("Messages", [])
            if not messages:
                break
            self._sqs.delete_message_batch(
                QueueUrl=self._queue_url,
                Entries=[
                    {"Id": str(index), "ReceiptHandle": message["ReceiptHandle"]}
                    for index, message in enumerate(messages)
                ],
            )
            excess -= len(messages)
            dropped += len(messages)
        return dropped

    def _run(self) -> None:
        while not self._stopped.wait(self._interval):
            try:
                self.trim_once()
            except (BotoCoreError, ClientError):
                continue  # moto is stopping, or busy: the next round trims


def main(argv: list[str] | None = None) -> int:
    """Serve moto on ``PORT`` until SIGTERM or SIGINT."""
    parser = argparse.ArgumentParser(prog="python -m local.events")
    parser.add_argument("port", type=int)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto_events.install()
    app = DomainDispatcherApplication(create_backend_app)
    server = make_server(
        args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler
    )

    def stop(signum: int, frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    server.serve_forever()
    server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
