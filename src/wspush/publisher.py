"""Publishing from other Python services: validate an envelope, then queue it or invoke ``send``.

Every envelope goes through the contract's own validation (``messages.parse_message``)
before anything is sent, so a bad envelope fails in the caller's process with the field
named, instead of later on the dead-letter queue. The queue gets the envelope as it is,
plus an ``id`` when it has none, so the caller always knows the message id clients see.

    publisher = Publisher(queue_url)
    publisher.publish(envelope("order.updated", {"orderId": 7}, user="u-42"))
    publisher.publish(envelope("chat.message", {"text": "hi"}, channel="room:42"))

Errors: ``InvalidMessage`` for a bad envelope (nothing sent), ``PublishError`` when an AWS
call fails as a whole (``EndpointUnreachable`` when no connection could be made,
``SendFunctionError`` when the send Lambda itself raised).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any, overload

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    NoRegionError,
)
from botocore.exceptions import ConnectionError as AwsConnectionError

from wspush.clock import now_ms
from wspush.contract.messages import (
    MAX_MESSAGES_PER_SEND,
    MAX_SQS_MESSAGE_BYTES,
    parse_message,
    sqs_batches,
    sqs_body,
)
from wspush.errors import InvalidMessage, WspushError

MAX_SEND_MESSAGES = MAX_MESSAGES_PER_SEND  # what the send Lambda accepts per invocation
MAX_INVOKE_PAYLOAD_BYTES = 6_291_456  # Lambda's limit for a synchronous invocation's event

_CONFIG = Config(connect_timeout=2, read_timeout=10, retries={"mode": "standard"})
# Longer than the send function's timeout (10 s): a slow fan-out is waited for, not re-invoked.
_LAMBDA_CONFIG = Config(connect_timeout=2, read_timeout=65, retries={"mode": "standard"})
_SERVICE_NAMES = {"sqs": "SQS", "lambda": "Lambda", "cloudformation": "CloudFormation"}


class PublishError(WspushError):
    """An AWS call failed as a whole (refused, unreachable, no credentials, no answer)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class EndpointUnreachable(PublishError):
    """No connection could be made: a wrong endpoint, or a local stack that is not running."""

    def __init__(self, service: str, endpoint: str) -> None:
        super().__init__("unreachable", f"cannot reach {service} at {endpoint}")
        self.endpoint = endpoint


class SendFunctionError(PublishError):
    """The send Lambda raised instead of answering (the invoke response's ``FunctionError``)."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__("function_error", f"the send Lambda failed: {error_type}: {message}")
        self.error_type = error_type


@dataclass(frozen=True)
class PublishResult:
    """A message on the queue: SQS's message id and the wspush id clients will see."""

    sqs_message_id: str
    id: str

    def as_dict(self) -> dict[str, str]:
        return {"messageId": self.sqs_message_id, "id": self.id}


@dataclass(frozen=True)
class PublishFailure:
    """A message of a batch that is not on the queue, and why.

    ``field`` is set for an invalid envelope, ``sender_fault`` for an entry SQS refused
    (true: sending it again as it is fails again). ``id`` is the wspush id the message was
    given, if it got that far: retry with it so clients can drop a duplicate.
    """

    code: str
    message: str
    field: str | None = None
    sender_fault: bool | None = None
    id: str | None = None


@dataclass(frozen=True)
class BatchResult:
    """One result per input envelope, in input order."""

    results: tuple[PublishResult | PublishFailure, ...]

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def queued(self) -> dict[int, PublishResult]:
        return {i: r for i, r in enumerate(self.results) if isinstance(r, PublishResult)}

    @property
    def failed(self) -> dict[int, PublishFailure]:
        return {i: r for i, r in enumerate(self.results) if isinstance(r, PublishFailure)}


@dataclass(frozen=True)
class _Entry:
    index: int
    id: str
    body: str


def envelope(
    type: str,
    data: Any,
    *,
    user: str | None = None,
    users: Iterable[str] | None = None,
    connection: str | None = None,
    connections: Iterable[str] | None = None,
    channel: str | None = None,
    broadcast: bool = False,
    platform: str | Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    id: str | None = None,
) -> dict[str, Any]:
    """An envelope from keyword arguments; validation happens when it is published."""
    built: dict[str, Any] = {}
    if id is not None:
        built["id"] = id
    if user is not None:
        built["userId"] = user
    if users is not None:
        built["userIds"] = _listed(users)
    if connection is not None:
        built["connectionId"] = connection
    if connections is not None:
        built["connectionIds"] = _listed(connections)
    if channel is not None:
        built["channel"] = channel
    if broadcast:
        built["broadcast"] = True
    if platform is not None:
        built["platform"] = _listed(platform)
    if exclude is not None:
        built["excludeConnectionIds"] = _listed(exclude)
    built["payload"] = {"type": type, "data": data}
    return built


def validate(envelope: Any) -> dict[str, Any]:
    """A valid copy of ``envelope`` with its message ``id`` set, or ``InvalidMessage``."""
    message = parse_message(envelope, now_ms=now_ms())
    return {**envelope, "id": message.id}


class Publisher:
    """Puts envelopes on the messages queue; the sender Lambda delivers them.

    ``publish`` raises ``InvalidMessage`` or ``PublishError``. ``publish_batch`` reports
    per-message failures in its result and raises only for an input it cannot iterate or
    when its first SQS call fails as a whole: then nothing is on the queue. A later call
    failing as a whole marks that call's messages failed with its error, and the messages
    after it failed with ``not_sent``, so nothing queued is hidden behind an exception.
    """

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

    def publish(self, envelope: Any) -> PublishResult:
        """Queue one envelope."""
        valid = validate(envelope)
        body = _sqs_body(valid)
        try:
            answer = self._sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(exc, "SQS") from exc
        return PublishResult(str(answer["MessageId"]), valid["id"])

    def publish_batch(self, envelopes: Iterable[Any]) -> BatchResult:
        """Queue many envelopes, up to 10 (and 1 MiB) per SQS call."""
        items = list(envelopes)
        results: dict[int, PublishResult | PublishFailure] = {}
        entries: list[_Entry] = []
        for index, item in enumerate(items):
            try:
                valid = validate(item)
                entries.append(_Entry(index, valid["id"], _sqs_body(valid)))
            except InvalidMessage as exc:
                results[index] = PublishFailure(exc.code, exc.message, field=exc.field)
        groups = list(sqs_batches(entries, lambda entry: len(entry.body)))  # ASCII bodies
        for number, group in enumerate(groups):
            try:
                answer = self._sqs.send_message_batch(
                    QueueUrl=self.queue_url,
                    Entries=[{"Id": str(e.index), "MessageBody": e.body} for e in group],
                )
            except (ClientError, BotoCoreError) as exc:
                error = aws_error(exc, "SQS")
                if number == 0:
                    raise error from exc
                results.update(_failed_from(groups[number:], error))
                break
            results.update(_answered(group, answer))
        return BatchResult(tuple(results[index] for index in range(len(items))))


class LambdaSender:
    """Invokes the send Lambda synchronously: delivery happens now and the answer says how.

    The answer per message is ``{"id", "targets", "delivered", "gone", "failed", "errors"}``
    (or ``{"error": {...}}``), as the send Lambda gives it. Envelopes are validated first.
    """

    def __init__(
        self,
        function_name: str,
        *,
        lambda_client: Any = None,
        region: str | None = None,
        endpoint_url: str | None = None,
        session: boto3.session.Session | None = None,
    ) -> None:
        self.function_name = function_name
        self._lambda = (
            lambda_client
            if lambda_client is not None
            else aws_client("lambda", region, endpoint_url, session, _LAMBDA_CONFIG)
        )

    @overload
    def send(self, envelopes: Mapping[str, Any]) -> dict[str, Any]: ...

    @overload
    def send(self, envelopes: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]: ...

    def send(
        self, envelopes: Mapping[str, Any] | Sequence[Mapping[str, Any]]
    ) -> dict[str, Any] | list[dict[str, Any]]:
        """Deliver one envelope (answer: a dict) or a list of 1 to 100 (answer: a list)."""
        event: dict[str, Any] | list[dict[str, Any]]
        if isinstance(envelopes, Mapping):
            event = validate(envelopes)
        else:
            event = _validated_list(envelopes)
        payload = json.dumps(event, separators=(",", ":"), allow_nan=False).encode()
        if len(payload) > MAX_INVOKE_PAYLOAD_BYTES:
            raise InvalidMessage(
                "request_too_large",
                f"the invocation is {len(payload)} bytes; Lambda's limit is "
                f"{MAX_INVOKE_PAYLOAD_BYTES} bytes",
            )
        try:
            response = self._lambda.invoke(
                FunctionName=self.function_name, InvocationType="RequestResponse", Payload=payload
            )
            raw = response["Payload"].read()
        except (ClientError, BotoCoreError) as exc:
            raise aws_error(exc, "Lambda") from exc
        if response.get("FunctionError"):
            raise _function_error(raw)
        answer: dict[str, Any] | list[dict[str, Any]] = _answer(raw, many=isinstance(event, list))
        return answer


def stack_name(stage: str) -> str:
    """The CloudFormation stack ``sls deploy --stage <stage>`` creates."""
    return f"wspush-{stage}"


def stack_outputs(
    stage: str,
    *,
    region: str | None = None,
    endpoint_url: str | None = None,
    cloudformation_client: Any = None,
    session: boto3.session.Session | None = None,
) -> dict[str, str]:
    """A deployed stack's outputs: ``QueueUrl``, ``SendFunctionName``, ``WebSocketUrl``..."""
    client = (
        cloudformation_client
        if cloudformation_client is not None
        else aws_client("cloudformation", region, endpoint_url, session, _CONFIG)
    )
    try:
        stacks = client.describe_stacks(StackName=stack_name(stage))["Stacks"]
    except (ClientError, BotoCoreError) as exc:
        raise aws_error(exc, "CloudFormation") from exc
    outputs = stacks[0].get("Outputs", []) if stacks else []
    return {str(output["OutputKey"]): str(output["OutputValue"]) for output in outputs}


def _listed(values: str | Iterable[str]) -> Any:
    # A lone string stays a string: a single platform, or a mistake validation will name.
    return values if isinstance(values, str) else list(values)


def _sqs_body(valid: dict[str, Any]) -> str:
    try:
        body = sqs_body(valid)
    except (TypeError, ValueError) as exc:
        raise InvalidMessage("invalid_envelope", "message is not serializable as JSON") from exc
    if len(body) > MAX_SQS_MESSAGE_BYTES:
        raise InvalidMessage(
            "message_too_large",
            f"message is {len(body)} bytes as an SQS body; the limit is "
            f"{MAX_SQS_MESSAGE_BYTES} bytes",
        )
    return body


def _answered(group: list[_Entry], answer: Any) -> dict[int, PublishResult | PublishFailure]:
    by_id = {str(entry.index): entry for entry in group}
    results: dict[int, PublishResult | PublishFailure] = {}
    for done in answer.get("Successful", []):
        entry = by_id[done["Id"]]
        results[entry.index] = PublishResult(str(done["MessageId"]), entry.id)
    for refused in answer.get("Failed", []):
        entry = by_id[refused["Id"]]
        results[entry.index] = PublishFailure(
            str(refused["Code"]),
            str(refused.get("Message", "")),
            sender_fault=bool(refused["SenderFault"]),
            id=entry.id,
        )
    for entry in group:
        if entry.index not in results:
            results[entry.index] = PublishFailure(
                "no_answer", "SQS's answer does not mention this message", id=entry.id
            )
    return results


def _failed_from(groups: list[list[_Entry]], error: PublishError) -> dict[int, PublishFailure]:
    """The failing call's entries get its error; the ones after it were never sent."""
    failed = {
        entry.index: PublishFailure(error.code, error.message, id=entry.id) for entry in groups[0]
    }
    for entry in chain.from_iterable(groups[1:]):
        failed[entry.index] = PublishFailure(
            "not_sent", f"not sent: an earlier call failed ({error.message})", id=entry.id
        )
    return failed


def _validated_list(envelopes: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    if isinstance(envelopes, str | bytes) or not 0 < len(envelopes) <= MAX_SEND_MESSAGES:
        raise InvalidMessage(
            "invalid_envelope", f"a list must hold 1 to {MAX_SEND_MESSAGES} messages"
        )
    valid = []
    for index, item in enumerate(envelopes):
        try:
            valid.append(validate(item))
        except InvalidMessage as exc:
            raise InvalidMessage(exc.code, f"message {index}: {exc.message}", exc.field) from exc
    return valid


def _function_error(raw: bytes) -> SendFunctionError:
    try:
        error = json.loads(raw)
    except ValueError:
        error = None
    if isinstance(error, dict):
        return SendFunctionError(
            str(error.get("errorType", "Error")), str(error.get("errorMessage", ""))
        )
    return SendFunctionError("Error", raw.decode("utf-8", "replace")[:500])


def _answer(raw: bytes, *, many: bool) -> Any:
    try:
        answer = json.loads(raw)
    except ValueError:
        answer = None
    expected = list if many else dict
    if not isinstance(answer, expected) or (many and not all(isinstance(a, dict) for a in answer)):
        text = raw.decode("utf-8", "replace")[:200]
        raise PublishError("bad_answer", f"the send Lambda's answer is not wspush's: {text}")
    return answer


def aws_client(
    service: str,
    region: str | None,
    endpoint_url: str | None,
    session: boto3.session.Session | None,
    config: Config,
) -> Any:
    """A client of ``service``; a client that cannot be made is a ``PublishError``."""
    try:
        return (session or boto3.session.Session()).client(
            service, region_name=region, endpoint_url=endpoint_url, config=config
        )
    except BotoCoreError as exc:
        raise aws_error(exc, _SERVICE_NAMES[service]) from exc


def aws_error(exc: Exception, service: str) -> PublishError:
    """One AWS failure as a ``PublishError``, by its type and AWS's error code (``service``
    names the AWS service in the message)."""
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        return PublishError(code, f"{service} refused the call: {code}: {error.get('Message', '')}")
    if isinstance(exc, AwsConnectionError):
        return EndpointUnreachable(service, str(exc.kwargs.get("endpoint_url", "its endpoint")))
    if isinstance(exc, HTTPClientError):
        return PublishError(
            "no_answer", f"{service} did not answer ({exc}); the call may or may not have happened"
        )
    if isinstance(exc, NoCredentialsError):
        return PublishError(
            "no_credentials", "no AWS credentials found (set AWS_PROFILE or AWS_ACCESS_KEY_ID)"
        )
    if isinstance(exc, NoRegionError):
        return PublishError("no_region", "no AWS region configured (set AWS_REGION)")
    return PublishError("aws_error", f"{service}: {exc}")
