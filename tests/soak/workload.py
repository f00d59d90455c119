"""The soak's workload: real WebSocket clients coming and going on the local stack while
services send to connections, users and everyone, by the queue and by the send Lambda.

One asyncio process holds every client (the ``websockets`` library); AWS calls run on a
thread pool. The seed fixes every choice (users, platforms, who leaves and how, targets,
routes); timing decides which connections are open when a message is sent, so the counts
move a little between runs of one seed.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any
from urllib.parse import urlencode

from botocore.exceptions import BotoCoreError, ClientError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from tests.e2e.conftest import RunningStack
from tests.soak.ledger import (
    ABORTED,
    CLEAN,
    FAILED,
    LAMBDA,
    LOST,
    PLATFORMS,
    QUEUE,
    QUEUE_COUNTS,
    Evidence,
    Life,
    Sent,
    Target,
)

# A message's delivery window, from just before SendMessage/Invoke. In a 300-client run the
# slowest frame arrives after about 1.6 s (the last of a broadcast's 300 posts, or a send
# Lambda starting cold), so 10 s leaves room for a loaded 2-core machine shared with other
# work, while a queue that falls behind still shows as late deliveries within seconds.
WINDOW_SECONDS = 10.0
MESSAGES_PER_SECOND = 5.0
KINDS = {"connection": 0.3, "user": 0.3, "user+platform": 0.3, "broadcast": 0.1}
LAMBDA_SHARE = 0.15  # messages sent through the send Lambda; the rest go on the queue
CHURN_PER_SECOND = 0.01  # share of the clients that leave each second; as many join
ABORT_SHARE = 0.4  # of those leaving: dropped without a close frame (TCP reset)
CHURN_TICK_SECONDS = 0.5
STALE_OPENED_AGO_MS = 3_600_000  # stale rows: connections that opened an hour ago
# serverless-offline starts one more process for a function whenever an invocation finds all
# of its processes busy, and on 2 cores a burst of cold starts feeds itself: 60 clients
# leaving at 30/s started 48 $disconnect processes, and $disconnect took up to 9.95 s of its
# 10 s (warm: 10 ms); 30 closing at once left 23 rows stored 20 s later. So handshakes are
# bounded and the last clients leave at a pace a warm process keeps up with; the churn
# itself (3/s at 300 clients) stays below both.
CONNECT_CONCURRENCY = 8  # handshakes in flight
TEARDOWN_PER_SECOND = 10  # clients leaving at the end
LAMBDA_CONCURRENCY = 2  # direct sends in flight
OPEN_TIMEOUT_SECONDS = 30
SETTLE_TIMEOUT_SECONDS = 90  # re-queue rounds wait 5 + 10 + 20 s at most
ROWS_TIMEOUT_SECONDS = 20
POLL_SECONDS = 0.25


@dataclass(frozen=True)
class Size:
    clients: int  # clients held open at once (the churn replaces those that leave)
    seconds: float  # how long services send while clients come and go
    seed: int

    @property
    def users(self) -> int:
        return max(4, self.clients // 3)

    @property
    def stale_rows(self) -> int:
        return max(6, self.clients // 20)

    @property
    def invalid_messages(self) -> int:
        return max(3, round(self.seconds / 20))


def invalid_body(seed: int, n: int, user: str) -> str:
    """The ``n``-th invalid message: each body is unique, so dead letters match one to one."""
    tag = f"soak-{seed}-invalid-{n}"
    payload = {"type": "soak.invalid", "data": {"n": n}}
    shapes: list[Any] = [
        {"id": tag, "userId": user, "payload": {"type": "soak.invalid"}},  # no data
        {"id": tag, "userID": user, "payload": payload},  # unknown field
        {"id": tag, "userId": user, "payload": {"type": "", "data": {}}},  # empty type
        f"not json: {tag}",
        {"id": tag, "userId": user, "broadcast": True, "payload": payload},  # two targets
    ]
    shape = shapes[n % len(shapes)]
    return shape if isinstance(shape, str) else json.dumps(shape)


class Client:
    """One app on one WebSocket: learns its connection id from a pong, records every frame."""

    def __init__(self, life: Life) -> None:
        self.life = life
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pong = asyncio.Event()

    async def open(self, url: str) -> bool:
        query = urlencode({"userId": self.life.user, "platform": self.life.platform})
        try:
            self._ws = await connect(
                f"{url}?{query}",
                open_timeout=OPEN_TIMEOUT_SECONDS,
                ping_interval=None,
                compression=None,
                proxy=None,
            )
            self._reader = asyncio.create_task(self._read(self._ws))
            await self._ws.send(json.dumps({"action": "ping", "content": "ping"}))
            await asyncio.wait_for(self._pong.wait(), OPEN_TIMEOUT_SECONDS)
        except (OSError, TimeoutError, WebSocketException) as exc:
            self._end(FAILED, f"{type(exc).__name__}: {exc}")
            if self._ws is not None:
                self._ws.transport.abort()
        return self.life.opened_at is not None

    def close(self) -> Coroutine[Any, Any, None]:
        """Start a clean close (a close frame, then the socket): the client is leaving from
        now on; await the result to see it through."""
        self._end(CLEAN)
        return self._closing()

    async def _closing(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            await self._reader

    def abort(self) -> None:
        """Drop the connection without a close frame: the socket is reset (SO_LINGER 0)."""
        self._end(ABORTED)
        if self._ws is None:
            return
        sock = self._ws.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self._ws.transport.abort()

    def _end(self, how: str, note: str = "") -> None:
        if self.life.how is None:
            self.life.how = how
            self.life.ended_at = time.monotonic()
            self.life.note = note

    async def _read(self, ws: ClientConnection) -> None:
        try:
            async for raw in ws:
                self._take(raw, time.monotonic())
        except ConnectionClosed:
            pass
        if self.life.how is None:
            self._end(LOST, f"close code {ws.close_code} {ws.close_reason!r}")
        self._pong.set()  # an open() still waiting for its pong waits no longer

    def _take(self, raw: str | bytes, at: float) -> None:
        try:
            frame = json.loads(raw)
        except ValueError:
            frame = None
        if not isinstance(frame, dict):
            self.life.strays.append(repr(raw)[:200])
            return
        kind = frame.get("type")
        if kind == "pong" and self.life.opened_at is None:
            self.life.connection_id = frame["data"]["connectionId"]
            self.life.opened_at = at
            self._pong.set()
        elif str(kind).startswith("soak.") and isinstance(frame.get("id"), str):
            self.life.receipts.append((frame["id"], at))
        else:
            self.life.strays.append(repr(raw)[:200])


@dataclass
class Phases:
    """How long each part of the run took, in seconds."""

    ramp: float = 0.0
    traffic: float = 0.0
    settle: float = 0.0
    final: float = 0.0


class Soak:
    """Holds the clients, sends the messages, and gathers the evidence the ledger judges."""

    def __init__(self, stack: RunningStack, size: Size) -> None:
        self.stack = stack
        self.size = size
        self.users = [f"u-{n:03d}" for n in range(size.users)]
        self.clients: list[Client] = []
        self.sent: list[Sent] = []
        self.invalid: list[str] = []
        self.stale: set[str] = set()
        self.quiet: list[float] = []
        self.peak = 0
        self.churned: Counter[str] = Counter()  # how clients left while services sent
        self.phases = Phases()
        self._sqs = stack.client("sqs")
        self._lambda = stack.client("lambda")
        self._dynamodb = stack.client("dynamodb")
        self._pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="soak-aws")
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connect_slots = asyncio.Semaphore(CONNECT_CONCURRENCY)
        self._lambda_slots = asyncio.Semaphore(LAMBDA_CONCURRENCY)
        self._messages = 0

    async def _store_stale(self, count: int, rng: random.Random) -> None:
        """Rows of connections that opened an hour ago and whose ``$disconnect`` never came
        (no socket has their id: the gateway answers 410), for some of the soak's users."""
        now_ms = int(time.time() * 1000)
        opened = now_ms - STALE_OPENED_AGO_MS
        items = []
        for _ in range(count):
            connection_id = f"stale-{uuid.UUID(int=rng.getrandbits(128)).hex}"
            self.stale.add(connection_id)
            item = {
                "connectionId": {"S": connection_id},
                "userId": {"S": rng.choice(self.users)},
                "platform": {"S": rng.choice(PLATFORMS)},
                "connectedAt": {"N": str(opened)},
                "lastSeenAt": {"N": str(opened)},
                "ttl": {"N": str(now_ms // 1000 + 3_600)},
            }
            items.append({"PutRequest": {"Item": item}})
        for start in range(0, len(items), 25):
            await self._aws(
                self._dynamodb.batch_write_item,
                RequestItems={self.stack.local.table_name: items[start : start + 25]},
            )

    async def _store_stale_at(self, moment: float, count: int, rng: random.Random) -> None:
        await asyncio.sleep(max(0.0, moment - time.monotonic()))
        await self._store_stale(count, rng)

    async def run(self) -> Evidence:
        try:
            return await self._run()
        finally:
            for task in self._tasks:
                task.cancel()
            for client in self.clients:
                if client.life.how is None:
                    client.abort()
            self._pool.shutdown(wait=False, cancel_futures=True)

    async def _run(self) -> Evidence:
        started = time.monotonic()
        rng = random.Random(f"{self.size.seed}/clients")
        await asyncio.gather(*(self._open(self._new_client(rng)) for _ in range(self.size.clients)))
        self.phases.ramp = time.monotonic() - started

        # Stale rows come in three waves: before the traffic, halfway, and after it settled
        # (so the final broadcast meets some).
        stale_rng = random.Random(f"{self.size.seed}/stale")
        waves = [self.size.stale_rows // 3] * 2
        waves.append(self.size.stale_rows - sum(waves))
        await self._store_stale(waves[0], stale_rng)
        started = time.monotonic()
        until = started + self.size.seconds
        await asyncio.gather(
            self._sending(until),
            self._churning(until, rng),
            self._invalid(until),
            self._store_stale_at(started + self.size.seconds / 2, waves[1], stale_rng),
        )
        await self._finish_tasks()
        self.phases.traffic = time.monotonic() - started

        started = time.monotonic()
        await self._settled()
        self.phases.settle = time.monotonic() - started

        started = time.monotonic()
        await self._store_stale(waves[2], stale_rng)
        stale_before_final = await self._stored() & self.stale
        final = await self._send("final broadcast", QUEUE, Target(broadcast=True))
        await self._received_by_all(final)
        queue_counts = await self._settled()
        rows_when_quiet, open_when_quiet = await self._rows_match_clients()
        self.phases.final = time.monotonic() - started

        dead_letters = await self._dead_letters()
        for client in self._live():
            self._leave(client, rng)
            await asyncio.sleep(1 / TEARDOWN_PER_SECOND)
        await self._finish_tasks()
        rows_at_end = await self._rows_until(set())
        return Evidence(
            lives=[client.life for client in self.clients],
            sent=self.sent,
            window=WINDOW_SECONDS,
            quiet=self.quiet,
            stale=set(self.stale),
            stale_before_final=stale_before_final,
            rows_when_quiet=rows_when_quiet,
            open_when_quiet=open_when_quiet,
            rows_at_end=rows_at_end,
            queue_counts=queue_counts,
            invalid=self.invalid,
            dead_letters=dead_letters,
        )

    # Clients

    def _new_client(self, rng: random.Random) -> Client:
        life = Life(
            key=f"c{len(self.clients):05d}",
            user=rng.choice(self.users),
            platform=rng.choice(PLATFORMS),
            started_at=time.monotonic(),
        )
        client = Client(life)
        self.clients.append(client)
        return client

    def _live(self) -> list[Client]:
        """Clients open now (pong seen) and not leaving."""
        return [c for c in self.clients if c.life.how is None and c.life.opened_at is not None]

    async def _open(self, client: Client) -> None:
        async with self._connect_slots:
            client.life.started_at = time.monotonic()
            await client.open(self.stack.local.websocket_url)
        self.peak = max(self.peak, len(self._live()))

    def _leave(self, client: Client, rng: random.Random) -> None:
        if rng.random() < ABORT_SHARE:
            client.abort()
        else:
            self._spawn(client.close())

    async def _churning(self, until: float, rng: random.Random) -> None:
        owed = 0.0
        while time.monotonic() + CHURN_TICK_SECONDS < until:
            await asyncio.sleep(CHURN_TICK_SECONDS)
            owed += self.size.clients * CHURN_PER_SECOND * CHURN_TICK_SECONDS
            leaving = int(owed)
            owed -= leaving
            for _ in range(leaving):
                live = self._live()
                if live:
                    client = rng.choice(live)
                    self._leave(client, rng)
                    self.churned[client.life.how or ""] += 1
            for _ in range(leaving):
                self._spawn(self._open(self._new_client(rng)))

    # Services

    async def _sending(self, until: float) -> None:
        rng = random.Random(f"{self.size.seed}/messages")
        # Every kind by both routes first, so even a short run has them all.
        first = [(kind, route) for kind in KINDS for route in (QUEUE, LAMBDA)]
        rng.shuffle(first)
        while True:
            await asyncio.sleep(rng.expovariate(MESSAGES_PER_SECOND))
            if time.monotonic() >= until:
                return
            if first:
                kind, route = first.pop()
            else:
                kind = rng.choices(list(KINDS), list(KINDS.values()))[0]
                route = LAMBDA if rng.random() < LAMBDA_SHARE else QUEUE
            target = self._target(kind, rng)
            if target is not None:
                self._spawn(self._send(kind, route, target))

    def _target(self, kind: str, rng: random.Random) -> Target | None:
        if kind == "connection":
            live = self._live()
            return Target(connection_id=rng.choice(live).life.connection_id) if live else None
        if kind == "user":
            return Target(user=rng.choice(self.users))
        if kind == "user+platform":
            platforms = tuple(sorted(rng.sample(PLATFORMS, rng.choice((1, 1, 2)))))
            return Target(user=rng.choice(self.users), platforms=platforms)
        return Target(broadcast=True)

    async def _send(self, kind: str, route: str, target: Target) -> Sent:
        self._messages += 1
        message_id = f"soak-{self.size.seed}-{self._messages:06d}"
        payload = {"type": f"soak.{kind.replace(' ', '-')}", "data": {"n": self._messages}}
        body = json.dumps(
            {
                "id": message_id,
                **target.envelope(),
                "payload": payload,
            }
        )
        sent = Sent(message_id, kind, route, target, started=time.monotonic())
        self.sent.append(sent)
        try:
            if route == QUEUE:
                await self._aws(
                    self._sqs.send_message,
                    QueueUrl=self.stack.local.messages_queue_url,
                    MessageBody=body,
                )
            else:
                async with self._lambda_slots:
                    sent.started = time.monotonic()
                    sent.answer = await self._aws(self._invoke, body)
        except (BotoCoreError, ClientError, ValueError) as exc:
            sent.error = f"{type(exc).__name__}: {exc}"
        sent.answered = time.monotonic()
        return sent

    def _invoke(self, body: str) -> Any:
        answer = self._lambda.invoke(
            FunctionName=self.stack.local.send_function_name, Payload=body.encode()
        )
        return json.loads(answer["Payload"].read())

    async def _invalid(self, until: float) -> None:
        """Invalid messages through the queue, spread evenly over the run."""
        rng = random.Random(f"{self.size.seed}/invalid")
        count = self.size.invalid_messages
        start = time.monotonic()
        for n in range(count):
            at = start + (n + 0.5) * (until - start) / count
            await asyncio.sleep(max(0.0, at - time.monotonic()))
            body = invalid_body(self.size.seed, n, rng.choice(self.users))
            self.invalid.append(body)
            queue_url = self.stack.local.messages_queue_url
            await self._aws(self._sqs.send_message, QueueUrl=queue_url, MessageBody=body)

    # Settling and reading the stack's state

    async def _received_by_all(self, sent: Sent) -> None:
        deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            missing = [c for c in self._live() if all(mid != sent.id for mid, _ in c.life.receipts)]
            if not missing:
                return
            await asyncio.sleep(POLL_SECONDS)

    async def _settled(self) -> dict[str, int]:
        """Wait until the queue holds nothing visible, in flight or delayed (twice in a row);
        that moment is quiet: no message can arrive after it. The last counts read."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_SECONDS
        zero_since: float | None = None
        while True:
            counts = await self._queue_counts()
            if any(counts.values()):
                zero_since = None
            elif zero_since is None:
                zero_since = time.monotonic()
            else:
                self.quiet.append(time.monotonic())
                return counts
            if time.monotonic() > deadline:
                return counts
            await asyncio.sleep(POLL_SECONDS)

    async def _queue_counts(self) -> dict[str, int]:
        answer = await self._aws(
            self._sqs.get_queue_attributes,
            QueueUrl=self.stack.local.messages_queue_url,
            AttributeNames=list(QUEUE_COUNTS),
        )
        return {name: int(value) for name, value in answer["Attributes"].items()}

    async def _stored(self) -> set[str]:
        def scan() -> set[str]:
            pages = self._dynamodb.get_paginator("scan").paginate(
                TableName=self.stack.local.table_name, ProjectionExpression="connectionId"
            )
            return {item["connectionId"]["S"] for page in pages for item in page["Items"]}

        rows: set[str] = await self._aws(scan)
        return rows

    async def _rows_match_clients(self) -> tuple[set[str], set[str]]:
        """The table and the open clients' ids, once they agree (or the time is up)."""
        open_ids = {c.life.connection_id for c in self._live() if c.life.connection_id}
        return await self._rows_until(open_ids), open_ids

    async def _rows_until(self, expected: set[str]) -> set[str]:
        """The table's rows once they are ``expected`` (deletes settle), or when time is up."""
        deadline = time.monotonic() + ROWS_TIMEOUT_SECONDS
        while True:
            rows = await self._stored()
            if rows == expected or time.monotonic() > deadline:
                return rows
            await asyncio.sleep(POLL_SECONDS)

    async def _dead_letters(self) -> list[tuple[str, str]]:
        letters: list[tuple[str, str]] = []
        while True:
            answer = await self._aws(
                self._sqs.receive_message,
                QueueUrl=self.stack.local.dead_letter_queue_url,
                MaxNumberOfMessages=10,
                MessageAttributeNames=["All"],
                VisibilityTimeout=600,
                WaitTimeSeconds=1,
            )
            messages = answer.get("Messages", [])
            if not messages:
                return letters
            for message in messages:
                code = message.get("MessageAttributes", {}).get("wspush-error-code", {})
                letters.append((message["Body"], code.get("StringValue", "")))

    # Plumbing

    async def _aws(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, partial(call, *args, **kwargs))

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish_tasks(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks))
