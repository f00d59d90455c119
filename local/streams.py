"""Drives the lifecycle function from the connections table's stream, the way Lambda's
DynamoDB event source mapping does, and deletes expired rows the way DynamoDB's TTL does.

Each shard is read in order; a batch the function reports failures for is handed over again
from the first failed record on (``ReportBatchItemFailures``), and the records before it are
not. moto never deletes expired items: the sweeper deletes rows whose TTL has passed (late,
like DynamoDB, which takes up to days), so their REMOVE records reach the function as a
deletion by the TTL does on AWS.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from local.poller import Invoke
from wspush.tools.local import REGION

SWEEP_SECONDS = 30
IDLE_SECONDS = 0.5  # between polls that found nothing
SHARDS_SECONDS = 10  # how often the stream's shards are listed again


def lambda_record(record: dict[str, Any], stream_arn: str) -> dict[str, Any]:
    """One stream record as Lambda hands it to a function (times in epoch seconds)."""
    dynamodb = dict(record["dynamodb"])
    created = dynamodb.get("ApproximateCreationDateTime")
    if created is not None and not isinstance(created, int | float):
        dynamodb["ApproximateCreationDateTime"] = int(created.timestamp())
    return {**record, "dynamodb": dynamodb, "eventSourceARN": stream_arn, "awsRegion": REGION}


class StreamPoller:
    """Reads every shard of one stream from its end (``LATEST``) and invokes the function."""

    def __init__(
        self,
        dynamodb: Any,
        streams: Any,
        table_name: str,
        invoke: Invoke,
        *,
        batch_size: int = 100,
        parallel: int = 1,
    ) -> None:
        self._dynamodb = dynamodb
        self._streams = streams
        self._arn = dynamodb.describe_table(TableName=table_name)["Table"]["LatestStreamArn"]
        self._table = table_name
        self._invoke = invoke
        self._batch_size = batch_size
        self._parallel = max(parallel, 1)
        self._iterators: dict[str, str] = {}
        self._pending: dict[str, list[dict[str, Any]]] = {}
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stream-poller", daemon=True)
        self._last_sweep = time.monotonic()
        self._shard_ids: list[str] = []
        self._listed = 0.0
        self.errors: list[str] = []
        for shard in self._shards():
            self._iterators[shard] = self._iterator(shard, "LATEST")

    def start(self) -> StreamPoller:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)

    def poll_once(self) -> int:
        """Hand each shard's new records to the function; the number handled."""
        handled = 0
        for shard in self._shards():
            if shard not in self._iterators:
                self._iterators[shard] = self._iterator(shard, "TRIM_HORIZON")
            answer = self._streams.get_records(
                ShardIterator=self._iterators[shard], Limit=self._batch_size
            )
            self._iterators[shard] = answer["NextShardIterator"]
            records = self._pending.pop(shard, []) + [
                lambda_record(r, self._arn) for r in answer["Records"]
            ]
            if records:
                handled += self._deliver(shard, records)
        return handled

    def sweep(self, now_s: float | None = None) -> int:
        """Delete rows whose TTL has passed; how many."""
        now = time.time() if now_s is None else now_s
        deleted = 0
        for page in self._dynamodb.get_paginator("scan").paginate(TableName=self._table):
            for item in page["Items"]:
                ttl = item.get("ttl", {}).get("N")
                if ttl is not None and float(ttl) < now:
                    self._dynamodb.delete_item(
                        TableName=self._table, Key={"connectionId": item["connectionId"]}
                    )
                    deleted += 1
        return deleted

    def _deliver(self, shard: str, records: list[dict[str, Any]]) -> int:
        """Hand the records to up to ``parallel`` invocations at once, each row's records to
        the same one, in order (Lambda's ParallelizationFactor); what one of them fails comes
        again, from its first failed record on, with the records of that invocation after it."""
        groups: dict[int, list[dict[str, Any]]] = {}
        for record in records:
            key = json.dumps(record["dynamodb"]["Keys"], sort_keys=True)
            groups.setdefault(zlib.crc32(key.encode()) % self._parallel, []).append(record)
        with ThreadPoolExecutor(max_workers=len(groups)) as pool:
            again = [r for left in pool.map(self._deliver_group, groups.values()) for r in left]
        order = {id(r): index for index, r in enumerate(records)}
        if again:
            self._pending[shard] = sorted(again, key=lambda r: order[id(r)])
        return len(records) - len(again)

    def _deliver_group(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One invocation; the records that must come again."""
        try:
            response = self._invoke({"Records": records})
        except Exception as exc:  # like Lambda: the whole batch comes again
            self._note(f"lifecycle invocation failed: {exc}")
            return records
        failed = [item["itemIdentifier"] for item in response.get("batchItemFailures", [])]
        numbers = [r["dynamodb"]["SequenceNumber"] for r in records]
        positions = [numbers.index(f) for f in failed if f in numbers]
        return records[min(positions) :] if positions else []

    def _shards(self) -> list[str]:
        if time.monotonic() - self._listed > SHARDS_SECONDS:
            description = self._streams.describe_stream(StreamArn=self._arn)["StreamDescription"]
            self._shard_ids = [shard["ShardId"] for shard in description["Shards"]]
            self._listed = time.monotonic()
        return self._shard_ids

    def _iterator(self, shard: str, position: str) -> str:
        iterator: str = self._streams.get_shard_iterator(
            StreamArn=self._arn, ShardId=shard, ShardIteratorType=position
        )["ShardIterator"]
        return iterator

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                if time.monotonic() - self._last_sweep > SWEEP_SECONDS:
                    self._last_sweep = time.monotonic()
                    self.sweep()
                if not self.poll_once():
                    self._stopped.wait(IDLE_SECONDS)
            except (BotoCoreError, ClientError) as exc:
                self._note(f"stream poll failed: {exc}")
                self._stopped.wait(1)

    def _note(self, problem: str) -> None:
        self.errors.append(problem)
        print(f"stream poller: {problem}", flush=True)
