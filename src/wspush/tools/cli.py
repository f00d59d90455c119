"""``wspush``: push a message from a terminal, watch what a user receives, see who is in a
channel and who comes online, on the local stack or a deployed one.

    wspush send --user u1 --type order.updated --data '{"orderId": 7}'
    wspush send --channel room:42 --type chat.message --data '{"text": "hi"}'
    wspush listen --user u1 --channel room:42
    wspush presence lobby:main
    wspush events --follow

Without ``--stage``, ``--queue-url``, ``--function-name``, ``--table`` or ``--url`` it talks
to the local stack (``make dev``). This module only parses arguments, calls
``wspush.publisher``, ``wspush.tools.listener``, ``wspush.store.presence`` or
``wspush.tools.event_feed`` and prints; exit status 0 is success, 1 a failed delivery, AWS
call or connection, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import botocore.session

from wspush.auth import secrets
from wspush.auth.tokens import mint
from wspush.channels.names import parse_channel
from wspush.errors import ChannelRefused, InvalidMessage, StorageUnavailable
from wspush.publisher import (
    EndpointUnreachable,
    LambdaSender,
    Publisher,
    PublishError,
    envelope,
    stack_name,
    stack_outputs,
    validate,
)
from wspush.settings import Namespace
from wspush.store import presence as presence_store
from wspush.tools.event_feed import EventFeed
from wspush.tools.listener import DEFAULT_HEARTBEAT_SECONDS, ListenError, connect_url, listen
from wspush.tools.local import (
    JWT_AUDIENCE,
    JWT_ISSUER,
    JWT_SECRET_PARAMETER,
    NAMESPACES,
    LocalStack,
    port_source,
)
from wspush.tools.local import REGION as LOCAL_REGION

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
DUMMY_CREDENTIAL = "test"  # the local stack accepts any credentials

_EXAMPLES = """\
examples:
  wspush send --user u1 --type order.updated --data '{"orderId": 7}'
  wspush send --broadcast --platform pc --type notice --data @notice.json
  wspush send --channel room:42 --type chat.message --data '{"text": "hi"}'
  wspush send --user u-42 --type hello --via lambda --stage prod --region eu-west-1
"""
_LISTEN_EXAMPLES = """\
examples:
  wspush listen --user u1                    # the local stack (a token is made when it runs jwt)
  wspush listen --user u1 --platform mobile
  wspush listen --user u1 --channel room:42 --channel lobby:main
  wspush listen --stage prod --region eu-west-1 --platform pc --token "$TOKEN"
"""


_PRESENCE_EXAMPLES = """\
examples:
  wspush presence lobby:main                 # the local stack
  wspush presence lobby:main --stage prod --region eu-west-1
"""
_EVENTS_EXAMPLES = """\
examples:
  wspush events --follow                     # the local stack, as events happen
  wspush events --queue-url https://sqs.eu-west-1.amazonaws.com/123456789012/my-wspush-events
"""


class _UsageError(Exception):
    """Input argparse cannot judge (``--data``, flags that do not go together)."""


@dataclass(frozen=True)
class _Destination:
    """Where the message goes: a queue URL or a function name, and how to reach it."""

    name: str
    region: str | None = None
    endpoint_url: str | None = None
    session: boto3.session.Session | None = None
    local: bool = False

    def client_options(self) -> dict[str, Any]:
        """How ``Publisher`` and ``LambdaSender`` reach it."""
        return {"region": self.region, "endpoint_url": self.endpoint_url, "session": self.session}


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (argparse's own errors exit 2 too)."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage and its message
        return int(exc.code or 0)
    return int(args.run(args))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wspush", description="Push JSON messages to wspush's WebSocket clients."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    send = commands.add_parser(
        "send",
        help="send one message",
        description="Send one message through the queue (default) or the send Lambda.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    send.set_defaults(run=_send)

    target = send.add_argument_group("target (exactly one kind)")
    targets = target.add_mutually_exclusive_group(required=True)
    targets.add_argument(
        "--user", action="append", metavar="USER_ID", help="a user (repeat for several)"
    )
    targets.add_argument(
        "--connection", action="append", metavar="CONNECTION_ID", help="a connection (repeatable)"
    )
    targets.add_argument(
        "--channel", metavar="CHANNEL", help="every subscriber of a channel, e.g. room:42"
    )
    targets.add_argument("--broadcast", action="store_true", help="every connection")

    message = send.add_argument_group("message")
    message.add_argument("--type", required=True, help="payload.type, e.g. order.updated")
    message.add_argument(
        "--data",
        default="{}",
        metavar="JSON",
        help="payload.data as JSON, or @FILE to read it from a file (@- for stdin); default {}",
    )
    message.add_argument(
        "--platform", action="append", help="only connections on this platform (repeatable)"
    )
    message.add_argument(
        "--exclude", action="append", metavar="CONNECTION_ID", help="never this connection"
    )
    message.add_argument("--id", help="the message id (default: a new one)")

    where = send.add_argument_group("destination (default: the local stack of `make dev`)")
    where.add_argument(
        "--via",
        choices=("sqs", "lambda"),
        default="sqs",
        help="through the queue (default) or by invoking the send Lambda and waiting",
    )
    where.add_argument("--stage", help="a deployed stage: read stack wspush-STAGE's outputs")
    where.add_argument("--region", help="the AWS region of --stage (default: AWS's config)")
    where.add_argument("--queue-url", help="this queue (--via sqs), whatever --stage says")
    where.add_argument("--function-name", help="this function (--via lambda), ditto")
    where.add_argument("--endpoint-url", help="send every AWS call to this endpoint")

    listen = commands.add_parser(
        "listen",
        help="connect as a user and print every frame it receives",
        description=(
            "Connect as a user, subscribe to the channels named, ping on a heartbeat, and "
            "print each frame received as one JSON line (the first is the pong naming the "
            "connection; then each subscribe's reply, channel messages and presence events) "
            "until Ctrl-C."
        ),
        epilog=_LISTEN_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    listen.set_defaults(run=_listen)
    listen.add_argument(
        "--user", metavar="USER_ID", help="the userId (required unless a token names the user)"
    )
    listen.add_argument("--platform", default="pc", help="the platform to connect as (pc)")
    listen.add_argument(
        "--channel",
        action="append",
        default=[],
        metavar="CHANNEL",
        help="subscribe to this channel once connected, e.g. room:42 (repeatable)",
    )
    listen.add_argument(
        "--token", help="a JWT for a deployed stage (the local stack's is made for --user)"
    )
    listen.add_argument(
        "--heartbeat",
        type=float,
        default=DEFAULT_HEARTBEAT_SECONDS,
        metavar="SECONDS",
        help=f"seconds between pings ({DEFAULT_HEARTBEAT_SECONDS:.0f})",
    )
    listen.add_argument("--stage", help="a deployed stage: read stack wspush-STAGE's WebSocketUrl")
    listen.add_argument("--region", help="the AWS region of --stage (default: AWS's config)")
    listen.add_argument("--url", help="this WebSocket URL, whatever --stage says")

    presence = commands.add_parser(
        "presence",
        help="who is in a presence channel",
        description=(
            "Print a presence channel's member count and members (userId, info, connections) "
            "as one JSON line, read from the channels table without joining the channel."
        ),
        epilog=_PRESENCE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    presence.set_defaults(run=_presence)
    presence.add_argument("channel", metavar="CHANNEL", help="a presence channel, e.g. lobby:main")
    presence.add_argument("--stage", help="a deployed stage: read stack wspush-STAGE's outputs")
    presence.add_argument("--region", help="the AWS region (default: AWS's config)")
    presence.add_argument("--table", help="this channels table, whatever --stage says")
    presence.add_argument("--endpoint-url", help="send every AWS call to this endpoint")

    events = commands.add_parser(
        "events",
        help="print wspush's user.online / user.offline events",
        description=(
            "Print each EventBridge event wspush put (user.online / user.offline) as one JSON "
            "line, read from the queue a rule sends them to (the local stack has both), and "
            "remove it from the queue. Without --follow, print what is there and exit."
        ),
        epilog=_EVENTS_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    events.set_defaults(run=_events)
    events.add_argument(
        "--follow", action="store_true", help="keep waiting for new events until Ctrl-C"
    )
    events.add_argument("--queue-url", help="this queue (default: the local stack's)")
    events.add_argument("--region", help="the queue's AWS region (default: AWS's config)")
    events.add_argument("--endpoint-url", help="the SQS endpoint (default: AWS's, for --queue-url)")

    token = commands.add_parser(
        "token",
        help="mint a short-lived HS256 token (for `make dev AUTH=jwt` and HMAC stages)",
        description="Print a token for --user, signed with the HMAC secret held in SSM.",
    )
    token.set_defaults(run=_token)
    token.add_argument("--user", required=True, metavar="USER_ID", help="the token's sub")
    token.add_argument("--ttl", type=int, default=900, help="seconds it stays valid (900)")
    token.add_argument(
        "--secret-parameter", default=JWT_SECRET_PARAMETER, help="the SSM parameter (local's)"
    )
    token.add_argument("--issuer", default=JWT_ISSUER, help="iss (local's)")
    token.add_argument("--audience", default=JWT_AUDIENCE, help="aud (local's)")
    token.add_argument("--region", help="the parameter's AWS region (default: local's)")
    token.add_argument("--endpoint-url", help="the SSM endpoint (default: the local stack)")
    token.add_argument(
        "--aws", action="store_true", help="read the secret from AWS, not the local stack"
    )
    return parser


def _token(args: argparse.Namespace) -> int:
    if not 0 < args.ttl <= 86_400:
        return _error("--ttl must be 1 to 86400 seconds", EXIT_USAGE)
    region = args.region or LOCAL_REGION
    if args.aws:
        endpoint, session = args.endpoint_url, None
    else:
        endpoint = args.endpoint_url or LocalStack.from_env().aws_endpoint
        session = _local_session(region)
    try:
        secret = secrets.parameter(
            args.secret_parameter, region=region, endpoint_url=endpoint, session=session
        )
    except secrets.SecretUnavailable as exc:
        hint = "" if args.aws else f" (is `make dev AUTH=jwt` running? {port_source('aws_port')})"
        return _error(f"{exc}{hint}", EXIT_FAILED)
    print(mint(secret, args.user, issuer=args.issuer, audience=args.audience, ttl_seconds=args.ttl))
    return EXIT_OK


def _listen(args: argparse.Namespace) -> int:
    if args.heartbeat <= 0:
        return _error("--heartbeat must be more than 0 seconds", EXIT_USAGE)
    if not args.user and not args.token:
        return _error("--user is required (or --token, for a stage that reads it)", EXIT_USAGE)
    try:
        channels = [_channel_name(channel) for channel in args.channel]
    except _UsageError as exc:
        return _error(str(exc), EXIT_USAGE)
    local = not (args.url or args.stage)
    token = args.token
    try:
        if args.url:
            base = args.url
        elif args.stage:
            outputs = stack_outputs(args.stage, region=args.region)
            if "WebSocketUrl" not in outputs:
                return _error(
                    f"stack {stack_name(args.stage)} has no output WebSocketUrl", EXIT_FAILED
                )
            base = outputs["WebSocketUrl"]
        else:
            base = LocalStack.from_env().websocket_url
            token = token or _local_token(args.user)
    except PublishError as exc:
        return _error(exc.message, EXIT_FAILED)
    url = connect_url(base, user_id=args.user, platform=args.platform, token=token)
    who = args.user or "the token's user"
    print(f"wspush: listening as {who} on {base}; Ctrl-C stops", file=sys.stderr, flush=True)
    try:
        listen(url, _print_line, channels=channels, heartbeat_seconds=args.heartbeat)
    except KeyboardInterrupt:
        return EXIT_OK
    except ListenError as exc:
        hint = f" — is `make dev` running? ({port_source('websocket_port')})" if local else ""
        return _error(f"{exc}{hint}", EXIT_FAILED)
    return EXIT_OK


def _channel_name(value: str) -> str:
    """A channel named on the command line, checked as the gateway would check it."""
    try:
        return str(parse_channel(value))
    except ChannelRefused as exc:
        raise _UsageError(f"{exc.message}: {value!r}") from exc


def _presence(args: argparse.Namespace) -> int:
    try:
        channel = _channel_name(args.channel)
        table = _channels_table(args, channel)
    except _UsageError as exc:
        return _error(str(exc), EXIT_USAGE)
    except PublishError as exc:
        return _error(exc.message, EXIT_FAILED)
    try:
        count, members = presence_store.every_member(table, channel)
    except presence_store.TableUnreachable as exc:
        local = not (args.table or args.stage)
        hint = f" — is `make dev` running? ({port_source('aws_port')})" if local else ""
        return _error(f"{exc}{hint}", EXIT_FAILED)
    except StorageUnavailable as exc:
        return _error(str(exc), EXIT_FAILED)
    members_shown = [member.as_dict() for member in members]
    _print({"channel": channel, "count": count, "members": members_shown})
    return EXIT_OK


def _channels_table(args: argparse.Namespace, channel: str) -> type[presence_store.ChannelTable]:
    """``--table``, else the stack of ``--stage``'s, else the local stack's (whose namespaces
    are known: a channel without presence is refused rather than shown empty)."""
    if args.table or args.stage:
        region = args.region or boto3.session.Session().region_name
        if not region:
            raise PublishError("no_region", "no AWS region configured (set AWS_REGION or --region)")
        name = args.table
        if not name:
            outputs = stack_outputs(args.stage, region=region, endpoint_url=args.endpoint_url)
            if "ChannelsTableName" not in outputs:
                raise PublishError(
                    "missing_output",
                    f"stack {stack_name(args.stage)} has no output ChannelsTableName",
                )
            name = outputs["ChannelsTableName"]
        return presence_store.table(name, region=region, endpoint_url=args.endpoint_url)
    namespace = channel.partition(":")[0]
    declared = {name: Namespace.parse(name, options) for name, options in NAMESPACES.items()}
    with_presence = ", ".join(name for name, ns in declared.items() if ns.presence)
    if namespace not in declared:
        raise _UsageError(
            f"the local stack declares no namespace {namespace!r} "
            f"({', '.join(declared)}; presence in {with_presence})"
        )
    if not declared[namespace].presence:
        raise _UsageError(
            f"namespace {namespace!r} has no presence on the local stack "
            f"(presence in {with_presence})"
        )
    region = args.region or LOCAL_REGION
    credentials = _local_session(region).get_credentials().get_frozen_credentials()
    return presence_store.table(
        LocalStack.from_env().channels_table_name,
        region=region,
        endpoint_url=args.endpoint_url or LocalStack.from_env().aws_endpoint,
        credentials=presence_store.Credentials(
            credentials.access_key, credentials.secret_key, credentials.token
        ),
    )


def _events(args: argparse.Namespace) -> int:
    local = not args.queue_url
    if local:
        region = args.region or LOCAL_REGION
        endpoint = args.endpoint_url or LocalStack.from_env().events_endpoint
        queue_url, session = LocalStack.from_env().events_queue_url, _local_session(region)
    else:
        region, endpoint, queue_url, session = args.region, args.endpoint_url, args.queue_url, None
    try:
        feed = EventFeed(queue_url, region=region, endpoint_url=endpoint, session=session)
        if args.follow:
            print(f"wspush: following {queue_url}; Ctrl-C stops", file=sys.stderr, flush=True)
        for event in feed.follow() if args.follow else feed.drain():
            _print_line(json.dumps(event, ensure_ascii=False, separators=(",", ":")))
    except KeyboardInterrupt:
        return EXIT_OK
    except EndpointUnreachable as exc:
        if local:
            return _error(
                f"cannot reach the local stack at {endpoint} "
                f"— is `make dev` running? ({port_source('events_port')})",
                EXIT_FAILED,
            )
        return _error(exc.message, EXIT_FAILED)
    except PublishError as exc:
        return _error(exc.message, EXIT_FAILED)
    return EXIT_OK


def _local_token(user_id: str | None) -> str | None:
    """A token for the local stack when it runs `make dev AUTH=jwt` (its secret is in the
    local SSM); None when it trusts the client's userId."""
    if not user_id:
        return None
    local = LocalStack.from_env()
    try:
        secret = secrets.parameter(
            JWT_SECRET_PARAMETER,
            region=LOCAL_REGION,
            endpoint_url=local.aws_endpoint,
            session=_local_session(LOCAL_REGION),
        )
    except secrets.SecretUnavailable:
        return None
    return mint(secret, user_id, issuer=JWT_ISSUER, audience=JWT_AUDIENCE)


def _print_line(line: str) -> None:
    print(line, flush=True)


def _send(args: argparse.Namespace) -> int:
    try:
        valid = validate(
            envelope(
                args.type,
                _data(args.data),
                **_targets(args),
                platform=_one_or_many(args.platform),
                exclude=args.exclude,
                id=args.id,
            )
        )
        destination = _destination(args)
    except _UsageError as exc:
        return _error(str(exc), EXIT_USAGE)
    except InvalidMessage as exc:
        return _error(_invalid(exc), EXIT_USAGE)
    except PublishError as exc:
        return _error(exc.message, EXIT_FAILED)
    try:
        if args.via == "sqs":
            queued = Publisher(destination.name, **destination.client_options()).publish(valid)
            _print({"queued": queued.as_dict()})
            return EXIT_OK
        answer = LambdaSender(destination.name, **destination.client_options()).send(valid)
    except InvalidMessage as exc:
        return _error(_invalid(exc), EXIT_USAGE)
    except EndpointUnreachable as exc:
        if destination.local:
            port = "aws_port" if args.via == "sqs" else "lambda_port"
            return _error(
                f"cannot reach the local stack at {destination.endpoint_url} "
                f"— is `make dev` running? ({port_source(port)})",
                EXIT_FAILED,
            )
        return _error(exc.message, EXIT_FAILED)
    except PublishError as exc:
        return _error(exc.message, EXIT_FAILED)
    _print(answer)
    failure = _delivery_failure(answer)
    return _error(failure, EXIT_FAILED) if failure else EXIT_OK


def _data(value: str) -> Any:
    text = value
    if value.startswith("@"):
        path = value[1:]
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise _UsageError(f"cannot read --data file {path}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise _UsageError(f"--data file {path} is not UTF-8 text") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise _UsageError(f"--data is not valid JSON: {exc}") from exc


def _targets(args: argparse.Namespace) -> dict[str, Any]:
    """``--user``/``--connection`` once → ``userId``/``connectionId``; repeated → the list;
    ``--channel`` → ``channel``."""
    if args.user:
        return {"user": args.user[0]} if len(args.user) == 1 else {"users": args.user}
    if args.connection:
        if len(args.connection) == 1:
            return {"connection": args.connection[0]}
        return {"connections": args.connection}
    if args.channel is not None:
        return {"channel": args.channel}
    return {"broadcast": args.broadcast}


def _one_or_many(values: list[str] | None) -> str | list[str] | None:
    return values[0] if values and len(values) == 1 else values


def _destination(args: argparse.Namespace) -> _Destination:
    """Explicit flags, else the stack of ``--stage``, else the local stack."""
    if args.via == "sqs":
        if args.function_name:
            raise _UsageError("--function-name is for --via lambda")
        explicit, output = args.queue_url, "QueueUrl"
    else:
        if args.queue_url:
            raise _UsageError("--queue-url is for --via sqs")
        explicit, output = args.function_name, "SendFunctionName"
    if explicit:
        return _Destination(explicit, args.region, args.endpoint_url)
    if args.stage:
        outputs = stack_outputs(args.stage, region=args.region, endpoint_url=args.endpoint_url)
        if output not in outputs:
            raise PublishError(
                "missing_output", f"stack {stack_name(args.stage)} has no output {output}"
            )
        return _Destination(outputs[output], args.region, args.endpoint_url)
    local = LocalStack.from_env()
    region = args.region or LOCAL_REGION
    if args.via == "sqs":
        name, endpoint = local.messages_queue_url, local.aws_endpoint
    else:
        name, endpoint = local.send_function_name, local.lambda_endpoint
    return _Destination(
        name, region, args.endpoint_url or endpoint, _local_session(region), local=True
    )


def _local_session(region: str) -> boto3.session.Session:
    """The configured credentials if there are any, else dummy ones.

    Container and instance-metadata credentials are not looked for: outside AWS that
    lookup waits on a network timeout, and the local stack accepts any credentials.
    """
    core = botocore.session.Session()
    resolver = core.get_component("credential_provider")
    for method in ("container-role", "iam-role"):
        resolver.remove(method)
    if core.get_credentials() is None:
        return boto3.session.Session(
            aws_access_key_id=DUMMY_CREDENTIAL,
            aws_secret_access_key=DUMMY_CREDENTIAL,
            region_name=region,
        )
    return boto3.session.Session(botocore_session=core, region_name=region)


def _delivery_failure(answer: dict[str, Any]) -> str | None:
    """Why the send Lambda's answer is not a success, or None."""
    if "error" in answer:
        return f"the send Lambda answered an error: {_described(answer['error'])}"
    failed = answer.get("failed", 0)
    if not failed:
        return None
    first = (answer.get("errors") or [{}])[0]
    return (
        f"{failed} of {answer.get('targets')} recipients failed "
        f"(first: {first.get('connectionId')}: {first.get('reason')})"
    )


def _invalid(exc: InvalidMessage) -> str:
    return _described(exc.as_dict())


def _described(error: dict[str, Any]) -> str:
    field = error.get("field")
    return f"{error.get('message')} (field: {field})" if field else str(error.get("message"))


def _print(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False), flush=True)


def _error(message: str, status: int) -> int:
    print(f"wspush: error: {message}", file=sys.stderr, flush=True)
    return status
