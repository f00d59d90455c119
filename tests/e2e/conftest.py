"""The local stack (``python -m local.run``, what ``make dev`` runs) as a session fixture.

It runs on free ports of its own, so the suite can run beside a developer's ``make dev``.
"""

from __future__ import annotations

import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from wspush.tools.local import PORT_VARIABLES, REGION, LocalStack

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_SECONDS = 120


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class RunningStack:
    local: LocalStack
    process: subprocess.Popen[str]
    env: dict[str, str]
    output: list[str] = field(default_factory=list)

    def client(self, service: str) -> Any:
        """A boto3 client for the local stack (moto, or serverless-offline for Lambda)."""
        endpoint = self.local.lambda_endpoint if service == "lambda" else self.local.aws_endpoint
        return boto3.client(
            service,
            endpoint_url=endpoint,
            region_name=REGION,
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )

    def log(self) -> str:
        return "".join(self.output)


def _stop(process: subprocess.Popen[str]) -> int | None:
    """SIGTERM, as Ctrl-C would; SIGKILL only if it does not stop in time."""
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)
        return None


def _port_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@contextmanager
def running_stack(auth: str, extra: Mapping[str, str] | None = None) -> Iterator[RunningStack]:
    """The whole system running locally (`make dev AUTH=...`, with ``extra`` in its
    environment), ready once it says `ready:`."""
    local = LocalStack(**{name: free_port() for name in PORT_VARIABLES})
    # The stack gets the environment a developer's shell has, not the test suite's settings.
    inherited = ("WSPUSH_", "AWS_", "LOCAL_", "POWERTOOLS_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(inherited)}
    env.update(local.port_variables())
    env.update(extra or {})
    env["PYTHONUNBUFFERED"] = "1"
    process = subprocess.Popen(
        [sys.executable, "-m", "local.run", "--auth", auth],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    running = RunningStack(local, process, env)
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            running.output.append(line)
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or process.poll() is not None:
            _stop(process)
            pytest.fail(f"local stack did not become ready:\n{running.log()}")
        try:
            line = lines.get(timeout=min(remaining, 1))
        except queue.Empty:
            continue
        if line.startswith("ready: "):
            assert line.strip() == f"ready: {local.websocket_url}"
            break
    yield running
    # Then Ctrl-C (SIGTERM here) stops everything it started: no process, no port left behind
    assert _stop(process) == 0, running.log()
    left = [port for port in local.port_variables().values() if _port_open(int(port))]
    assert not left, f"ports still open after stop: {left}\n{running.log()}"


@pytest.fixture(scope="session")
def local_stack() -> Iterator[RunningStack]:
    """Given `make dev`: clients say who they are (auth none)."""
    with running_stack("none") as stack:
        yield stack


@pytest.fixture(scope="session")
def jwt_stack() -> Iterator[RunningStack]:
    """Given `make dev AUTH=jwt`: clients connect with HS256 tokens."""
    with running_stack("jwt") as stack:
        yield stack
