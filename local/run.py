"""``make dev``: the whole system on this machine, no AWS account and no Docker.

1. moto's server (DynamoDB + SQS) on loopback, with the table and queues created from
   serverless.yml's own resource definitions;
2. serverless-offline's WebSocket gateway running the project's handlers, each under the
   project's own Lambda runtime (``local/lambda_runtime.py``);
3. a poller that drives the sender from the local queue like Lambda's event source mapping,
   one that drives the ``lifecycle`` function from the connections table's stream, and a
   ticker that runs the rotation sweeper as its schedule does (``local/rotation.py``: the
   connection lifetime, the lead and the bucket can be made short, e.g. 60 s, to try it);
4. a second moto server, in a process of its own, for EventBridge: a rule on its default bus
   sends wspush's events (``user.online`` / ``user.offline``) to a queue that ``wspush
   events`` reads (``local/events.py``);
5. the browser client's demo page.

Prints ``ready: <websocket url>`` once everything answers; Ctrl-C or SIGTERM stops all of it.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, suppress
from pathlib import Path
from secrets import token_urlsafe
from types import FrameType

import boto3
from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import make_server

from local import lambda_runtime, moto_as_aws, stack
from local.events import FeedTrimmer, create_event_feed
from local.poller import QueuePoller, lambda_invoker
from local.rotation import LocalRotation, RotationTicker
from local.streams import StreamPoller
from local.web import DemoServer
from wspush.auth.tokens import mint
from wspush.settings import Access, Namespace, SettingsError
from wspush.tools.local import (
    EVENT_BUS,
    HOST,
    JWT_AUDIENCE,
    JWT_ISSUER,
    JWT_SECRET_PARAMETER,
    NAMESPACES,
    REGION,
    STAGE,
    LocalStack,
)

REPO = Path(__file__).resolve().parents[1]
SERVERLESS_CLI = REPO / "node_modules" / "osls" / "bin" / "serverless.js"
# Holds the `python3` that serverless-offline starts each Python function with.
RUNTIME_SHIM_DIR = REPO / "local" / "bin"
PR_SET_PDEATHSIG = 1
STARTUP_TIMEOUT_SECONDS = 90
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "local",
    "AWS_SECRET_ACCESS_KEY": "local",
    "AWS_SESSION_TOKEN": "local",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_REGION": REGION,
}


class Stopped(Exception):
    """SIGINT or SIGTERM arrived."""


def _stop(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


def wait_for_port(port: int, process: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with code {process.returncode}")
        with socket.socket() as probe:
            probe.settimeout(0.5)
            if probe.connect_ex((HOST, port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing answered on {HOST}:{port} within {STARTUP_TIMEOUT_SECONDS} s")


def offline_environment(
    local: LocalStack, auth: str, rotation: LocalRotation | None = None
) -> dict[str, str]:
    """What the handlers need to find moto and the local gateway instead of AWS, and to run
    under the project's own Lambda runtime (local/lambda_runtime.py); the connection lifetime
    and rotation settings of this run (``local/rotation.py``)."""
    env = {
        **os.environ,
        **DUMMY_CREDENTIALS,
        **auth_environment(auth),
        **(rotation or LocalRotation()).environment(),
    }
    # serverless-offline would put $VIRTUAL_ENV/bin first on PATH, before local/bin.
    env.pop("VIRTUAL_ENV", None)
    path = (RUNTIME_SHIM_DIR, Path(sys.prefix) / "bin", env.get("PATH", ""))
    env.update(
        {
            "PATH": os.pathsep.join(str(entry) for entry in path),
            lambda_runtime.PYTHON_VARIABLE: sys.executable,
            lambda_runtime.TIMEOUTS_VARIABLE: json.dumps(stack.function_timeouts(STAGE)),
            "AWS_ENDPOINT_URL_DYNAMODB": local.aws_endpoint,
            "AWS_ENDPOINT_URL_SQS": local.aws_endpoint,
            "AWS_ENDPOINT_URL_SSM": local.aws_endpoint,
            "AWS_ENDPOINT_URL_EVENTBRIDGE": local.events_endpoint,
            "LOCAL_TABLE_NAME": local.table_name,
            "LOCAL_PROCESSED_TABLE_NAME": local.processed_table_name,
            "LOCAL_CHANNELS_TABLE_NAME": local.channels_table_name,
            "LOCAL_HISTORY_TABLE_NAME": local.history_table_name,
            "LOCAL_NAMESPACES": json.dumps(NAMESPACES),
            "LOCAL_EVENT_BUS_NAME": EVENT_BUS,
            "LOCAL_QUEUE_URL": local.messages_queue_url,
            "LOCAL_DLQ_URL": local.dead_letter_queue_url,
            "LOCAL_MANAGEMENT_ENDPOINT": local.management_endpoint,
            **local.port_variables(),
            "PYTHONDONTWRITEBYTECODE": "1",
            # No X-Ray daemon here: tracing would only warn on every invocation.
            "POWERTOOLS_TRACE_DISABLED": "true",
        }
    )
    env.setdefault("LOCAL_ALLOWED_PLATFORMS", "")
    return env


def auth_environment(auth: str) -> dict[str, str]:
    """$connect's settings: trust the client (none), or HS256 tokens with the local secret."""
    if auth == "none":
        return {"LOCAL_AUTH_MODE": "none"}
    return {
        "LOCAL_AUTH_MODE": "jwt",
        "LOCAL_JWT_ALGORITHMS": "HS256",
        "LOCAL_JWT_ISSUER": JWT_ISSUER,
        "LOCAL_JWT_AUDIENCE": JWT_AUDIENCE,
        "LOCAL_JWT_SECRET_PARAMETER": JWT_SECRET_PARAMETER,
    }


def create_token_secret(local: LocalStack) -> Callable[[str], str]:
    """A fresh HS256 secret in (moto's) SSM, where the handlers and `wspush token` read it."""
    secret = token_urlsafe(48)
    ssm = boto3.client("ssm", endpoint_url=local.aws_endpoint, region_name=REGION)
    ssm.put_parameter(Name=JWT_SECRET_PARAMETER, Value=secret, Type="SecureString")
    return lambda user_id: mint(secret, user_id, issuer=JWT_ISSUER, audience=JWT_AUDIENCE)


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when this runner dies, however it dies (Linux)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def start_offline(
    local: LocalStack, auth: str, rotation: LocalRotation, cleanup: ExitStack
) -> subprocess.Popen[bytes]:
    # node itself, not npx: no wrapper process to outlive, so the parent-death signal lands.
    process = subprocess.Popen(  # noqa: S603 - a fixed command line
        ["node", str(SERVERLESS_CLI), "offline", "start", "--stage", STAGE],  # noqa: S607
        cwd=REPO,
        env=offline_environment(local, auth, rotation),
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: node and every handler process
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    cleanup.callback(stop_process_group, process)
    return process


def start_events_server(local: LocalStack, cleanup: ExitStack) -> subprocess.Popen[bytes]:
    """moto's EventBridge and the events queue in a process of their own (local/events.py)."""
    process = subprocess.Popen(  # noqa: S603 - a fixed command line
        [sys.executable, "-m", "local.events", str(local.events_port), "--host", HOST],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent if sys.platform == "linux" else None,
    )
    cleanup.callback(stop_process_group, process)
    return process


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            break
        except subprocess.TimeoutExpired:
            continue
    # Handler processes may outlive node; the group id still reaches them.
    with suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)


def ensure_ports_free(local: LocalStack) -> None:
    """Fail at once, naming the variable that moves it, if any port cannot be bound."""
    for variable, port in local.port_variables().items():
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((HOST, int(port)))
            except OSError as exc:
                raise RuntimeError(
                    f"port {port} on {HOST} is in use (is another `make dev` running?); "
                    f"stop it or choose another port with {variable}"
                ) from exc


class MotoServer:
    """moto's server on a thread; unlike moto's own helper, a port it cannot bind is an
    error here, at once, instead of a thread that waits forever."""

    def __init__(self, port: int) -> None:
        app = DomainDispatcherApplication(create_backend_app)
        self._server = make_server(
            HOST, port, app, threaded=True, request_handler=MotoRequestHandler
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="moto", daemon=True)

    def start(self) -> MotoServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def run(local: LocalStack, auth: str, rotation: LocalRotation) -> None:
    ensure_ports_free(local)
    os.environ.update(DUMMY_CREDENTIALS)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    with ExitStack() as cleanup:
        moto_as_aws.install()  # stale item counts, as DynamoDB reports them
        moto = MotoServer(local.aws_port).start()
        cleanup.callback(moto.stop)
        events_server = start_events_server(local, cleanup)
        dynamodb = boto3.client("dynamodb", endpoint_url=local.aws_endpoint, region_name=REGION)
        sqs = boto3.client("sqs", endpoint_url=local.aws_endpoint, region_name=REGION)
        tables = stack.create_tables(dynamodb, STAGE)
        queues = stack.create_queues(sqs, STAGE)
        wait_for_port(local.events_port, events_server, time.monotonic() + 30)
        events = boto3.client("events", endpoint_url=local.events_endpoint, region_name=REGION)
        events_sqs = boto3.client("sqs", endpoint_url=local.events_endpoint, region_name=REGION)
        events_queue = create_event_feed(events_sqs, events, local)
        expected = (
            tables.get("ConnectionsTable"),
            tables.get("ProcessedMessagesTable"),
            tables.get("ChannelsTable"),
            tables.get("HistoryTable"),
            queues.get("MessagesQueue"),
            queues.get("DeadLetterQueue"),
            events_queue,
        )
        actual = (
            local.table_name,
            local.processed_table_name,
            local.channels_table_name,
            local.history_table_name,
            local.messages_queue_url,
            local.dead_letter_queue_url,
            local.events_queue_url,
        )
        if expected != actual:
            raise RuntimeError(
                f"serverless.yml's resources {expected} are not where"
                f" wspush.tools.local expects {actual}"
            )
        trimmer = FeedTrimmer(events_sqs, local.events_queue_url).start()
        cleanup.callback(trimmer.stop)
        mint_token = create_token_secret(local) if auth == "jwt" else None

        offline = start_offline(local, auth, rotation, cleanup)
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        wait_for_port(local.websocket_port, offline, deadline)
        wait_for_port(local.lambda_port, offline, deadline)

        lambda_client = boto3.client(
            "lambda", endpoint_url=local.lambda_endpoint, region_name=REGION
        )
        poller = QueuePoller(
            sqs, local.messages_queue_url, lambda_invoker(lambda_client, f"wspush-{STAGE}-sender")
        ).start()
        cleanup.callback(poller.stop)
        streams = boto3.client(
            "dynamodbstreams", endpoint_url=local.aws_endpoint, region_name=REGION
        )
        source = stack.stream_source(STAGE, "lifecycle")
        stream_poller = StreamPoller(
            dynamodb,
            streams,
            local.table_name,
            lambda_invoker(lambda_client, f"wspush-{STAGE}-lifecycle"),
            batch_size=source["batchSize"],
            parallel=source.get("parallelizationFactor", 1),
        ).start()
        cleanup.callback(stream_poller.stop)
        ticker = RotationTicker(
            lambda_invoker(lambda_client, f"wspush-{STAGE}-rotation"), rotation.bucket_seconds
        ).start()
        cleanup.callback(ticker.stop)
        demo = DemoServer(
            HOST,
            local.demo_port,
            websocket_url=local.websocket_url,
            mint_token=mint_token,
            exports=moved_ports(local),
        ).start()
        cleanup.callback(demo.stop)

        print(f"ready: {local.websocket_url}", flush=True)
        print(examples(local, auth, rotation), flush=True)
        while offline.poll() is None:
            time.sleep(0.5)
        raise RuntimeError(f"serverless-offline exited with code {offline.returncode}")


def moved_ports(local: LocalStack) -> str:
    """One ``export`` line that points another terminal's ``wspush`` at moved ports ("" when
    every port is where it is by default)."""
    defaults = LocalStack().port_variables()
    moved = [
        f"{variable}={port}"
        for variable, port in local.port_variables().items()
        if port != defaults[variable]
    ]
    return f"export {' '.join(moved)}" if moved else ""


def described_namespaces() -> str:
    """``make dev``'s namespaces, each with who may subscribe and whether it has presence."""
    described = []
    for name, options in NAMESPACES.items():
        namespace = Namespace.parse(name, options)
        who = "everyone" if namespace.access is Access.AUTHENTICATED else "by grant"
        described.append(f"{name} ({who}{', presence' if namespace.presence else ''})")
    return ", ".join(described)


def examples(local: LocalStack, auth: str, rotation: LocalRotation | None = None) -> str:
    """What ``make dev`` prints once the stack is ready: what runs where, and what to type."""
    cli = ".venv/bin/wspush"
    if auth == "jwt":
        mode = "auth        jwt: HS256 tokens from `wspush token` (the demo page gets its own)"
    else:
        mode = "auth        none: clients say who they are (`make dev AUTH=jwt` for tokens)"
    exports = moved_ports(local)
    first = f"\n  ports moved: in another terminal, first paste\n    {exports}\n" if exports else ""
    return f"""{first}
  demo page   {local.demo_url}
  {mode}
  listen      {cli} listen --user u1      (prints each frame u1 receives; Ctrl-C stops)
  send        {cli} send --user u1 --type order.updated --data '{{"orderId": 7}}'
  via lambda  {cli} send --via lambda --user u1 --type hello --data '{{}}'
  channel     {cli} listen --user u1 --channel lobby:main
              {cli} send --channel lobby:main --type chat.message --data '{{"text": "hi"}}'
  presence    {cli} presence lobby:main   (who is in a presence channel, read from its table)
  events      {cli} events --follow       (user.online / user.offline, as they happen)
  namespaces  {described_namespaces()}
  rotation    {(rotation or LocalRotation()).describe()}
  queue       {local.messages_queue_url}
  moto        {local.aws_endpoint}   (DynamoDB, SQS, SSM; EventBridge at {local.events_endpoint})
  Ctrl-C stops everything.
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make dev", description="Run wspush locally.")
    parser.add_argument(
        "--auth", choices=("none", "jwt"), default="none", help="how $connect knows the user"
    )
    args = parser.parse_args(argv)
    # Ctrl-C, kill, a closed terminal, Ctrl-\\: every way out stops what was started.
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT):
        signal.signal(signum, _stop)
    try:
        run(LocalStack.from_env(), args.auth, LocalRotation.from_env(os.environ))
    except Stopped as stopped:
        print(f"stopped ({stopped})", flush=True)
        return 0
    except (RuntimeError, TimeoutError, OSError, SettingsError) as exc:
        print(f"make dev failed: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
