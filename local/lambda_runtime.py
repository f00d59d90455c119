"""The Lambda runtime ``make dev`` runs each Python function under, in serverless-offline.

serverless-offline keeps one process per function and talks to it in lines: for each
invocation it writes ``{"context": {...}, "event": ...}`` to the process's stdin, and takes the
first stdout line that is a JSON object with the key ``__offline_payload__`` as the answer;
every other stdout line is printed as the function's log. ``local/bin/python3`` starts this
module in place of serverless-offline's own runner, which gives every invocation the same
request id, 1024 MB and about 6 s, and stops serving at the first exception. Here a handler
gets what Lambda's Python runtime gives it:

- a context per invocation: the request id serverless-offline made for this invocation; the
  function's name, version, ARN, memory (a string, as Lambda's runtime reads it from
  ``AWS_LAMBDA_FUNCTION_MEMORY_SIZE``), log group and stream; and
  ``get_remaining_time_in_millis()`` counting down from the function's configured timeout
  from the moment the invocation starts;
- an exception answered as Lambda reports it (``errorMessage``, ``errorType``, ``requestId``,
  ``stackTrace``) and logged, and the process kept for the next invocation; a handler that
  cannot be imported, or an answer that is not JSON, likewise;
- no stdin, and a stdout that cannot break the protocol: an answer always starts a line of its
  own, whatever the handler printed before it;
- an end when serverless-offline gives up on it: on a timeout it kills the shell it started
  this process with, and this process goes too, as a Lambda sandbox does (a handler left
  running would go on delivering after its caller was told it had failed).

serverless-offline does not pass the function's timeout on: ``local/run.py`` reads every
function's timeout from serverless.yml into ``WSPUSH_LOCAL_FUNCTION_TIMEOUTS``.
"""

from __future__ import annotations

import argparse
import ctypes
import importlib
import io
import json
import logging
import os
import signal
import sys
import time
import traceback
import uuid
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO

from wspush.tools.local import ACCOUNT_ID

PAYLOAD_KEY = "__offline_payload__"
# JSON: each function's name -> its timeout in seconds, as serverless.yml configures it.
TIMEOUTS_VARIABLE = "WSPUSH_LOCAL_FUNCTION_TIMEOUTS"
# The Python that local/bin/python3 runs everything with (the project's venv).
PYTHON_VARIABLE = "WSPUSH_LOCAL_PYTHON"
PR_SET_PDEATHSIG = 1

Handler = Callable[[Any, "LambdaContext"], Any]


@dataclass(frozen=True)
class CognitoIdentity:
    """``context.identity``: filled only for calls made through the AWS Mobile SDK."""

    cognito_identity_id: str | None = None
    cognito_identity_pool_id: str | None = None


@dataclass(frozen=True)
class LambdaContext:
    """What Lambda's Python runtime passes a handler as ``context``."""

    aws_request_id: str
    function_name: str
    function_version: str
    invoked_function_arn: str
    memory_limit_in_mb: str
    log_group_name: str
    log_stream_name: str
    _deadline: float = field(repr=False)  # on time.monotonic()'s clock
    identity: CognitoIdentity = field(default_factory=CognitoIdentity)
    client_context: None = None  # set only by mobile SDK callers

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass(frozen=True)
class Function:
    """The function this process serves, as configured."""

    name: str
    version: str
    memory_size: str
    region: str
    timeout_ms: int
    log_stream_name: str

    @classmethod
    def from_environment(cls, environ: MutableMapping[str, str]) -> Function:
        """From what serverless-offline sets for the function, and the timeouts local/run.py
        passes. Takes this runtime's own variables out of the environment handlers see."""
        timeouts = environ.pop(TIMEOUTS_VARIABLE, None)
        environ.pop(PYTHON_VARIABLE, None)
        name = environ.get("AWS_LAMBDA_FUNCTION_NAME", "")
        try:
            timeout_ms = int(float(json.loads(timeouts or "{}")[name]) * 1000)
        except (ValueError, KeyError, TypeError) as exc:
            raise InitError(
                "LocalRuntimeConfigError",
                f"no timeout for function '{name}' in {TIMEOUTS_VARIABLE} (local/run.py sets it)",
            ) from exc
        version = environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        # One log stream per process, as Lambda has one per execution environment.
        stream = f"{datetime.now(UTC):%Y/%m/%d}/[{version}]{uuid.uuid4().hex}"
        environ["AWS_LAMBDA_LOG_STREAM_NAME"] = stream
        return cls(
            name=name,
            version=version,
            memory_size=environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", ""),
            region=environ.get("AWS_REGION", ""),
            timeout_ms=timeout_ms,
            log_stream_name=stream,
        )

    def context(self, request_id: str, started: float) -> LambdaContext:
        """The context of an invocation that started at ``started`` (time.monotonic())."""
        return LambdaContext(
            aws_request_id=request_id,
            function_name=self.name,
            function_version=self.version,
            invoked_function_arn=(
                f"arn:aws:lambda:{self.region}:{ACCOUNT_ID}:function:{self.name}"
            ),
            memory_limit_in_mb=self.memory_size,
            log_group_name=f"/aws/lambda/{self.name}",
            log_stream_name=self.log_stream_name,
            _deadline=started + self.timeout_ms / 1000,
        )


class InitError(Exception):
    """The function could not be set up. Like Lambda, each invocation is answered with it
    (and tries the setup again)."""

    def __init__(self, error_type: str, message: str, stack_trace: list[str] | None = None):
        super().__init__(message)
        self.error_type = error_type
        self.message = message
        self.stack_trace = stack_trace or []


def error_object(
    error_type: str, message: str, request_id: str, stack_trace: list[str] | None = None
) -> dict[str, Any]:
    """An error as Lambda's Python runtime answers it."""
    return {
        "errorMessage": message,
        "errorType": error_type,
        "requestId": request_id,
        "stackTrace": stack_trace or [],
    }


def is_error_object(answer: Any) -> bool:
    """Whether an answer is an error this runtime reported: serverless-offline hands it back
    as an ordinary payload, without the ``FunctionError`` Lambda's Invoke API adds."""
    return isinstance(answer, dict) and "errorType" in answer and "errorMessage" in answer


def _stack_trace(exc: BaseException, skip: int = 0) -> list[str]:
    frames = traceback.extract_tb(exc.__traceback__)[skip:]
    return traceback.format_list(frames)


def load_handler(module_path: str, name: str) -> Handler:
    """The handler ``name`` of ``module_path`` (``handlers/send``), or ``InitError``."""
    try:
        module = importlib.import_module(module_path.replace("/", "."))
    except SyntaxError as exc:
        raise InitError(
            "Runtime.UserCodeSyntaxError",
            f"Syntax error in module '{module_path}': {exc}",
            traceback.format_exception_only(exc),
        ) from exc
    except ImportError as exc:
        raise InitError(
            "Runtime.ImportModuleError", f"Unable to import module '{module_path}': {exc}"
        ) from exc
    except Exception as exc:
        raise InitError(type(exc).__name__, str(exc), _stack_trace(exc)) from exc
    handler = getattr(module, name, None)
    if not callable(handler):
        raise InitError(
            "Runtime.HandlerNotFound", f"Handler '{name}' missing on module '{module_path}'"
        )
    return handler  # type: ignore[no-any-return]


class HandlerOutput(io.TextIOWrapper):
    """Handlers' stdout, on the protocol's pipe: it knows whether its last line is finished,
    so that an answer never lands at the end of a line a handler left open."""

    line_open = False

    def write(self, s: str, /) -> int:
        written = super().write(s)
        if s:
            self.line_open = not s.endswith("\n")
        return written

    def end_line(self) -> None:
        if self.line_open:
            self.write("\n")
        self.flush()


class _RequestIdFilter(logging.Filter):
    """Puts the invocation's request id on every record, as Lambda's log lines carry it."""

    request_id = ""

    def filter(self, record: logging.LogRecord) -> bool:
        record.aws_request_id = self.request_id
        return True


class Runtime:
    """Serves invocations of one handler, one at a time, until stdin closes."""

    def __init__(
        self,
        module_path: str,
        handler_name: str,
        environ: MutableMapping[str, str],
        output: HandlerOutput,
    ) -> None:
        self._module_path = module_path
        self._handler_name = handler_name
        self._output = output
        self._request_id = _RequestIdFilter()
        self._function: Function | InitError
        try:
            self._function = Function.from_environment(environ)
        except InitError as error:
            self._function = error
        self._handler: Handler | None = None

    def install_logging(self) -> None:
        """The root logger writes to stdout, each line with the request id, as on Lambda."""
        formatter = logging.Formatter(
            "[%(levelname)s]\t%(asctime)s.%(msecs)03dZ\t%(aws_request_id)s\t%(message)s",
            "%Y-%m-%dT%H:%M:%S",
        )
        formatter.converter = time.gmtime
        handler = logging.StreamHandler(self._output)
        handler.setFormatter(formatter)
        handler.addFilter(self._request_id)
        logging.getLogger().addHandler(handler)

    def ready(self) -> tuple[Function, Handler] | InitError:
        """The function and its handler, imported on first use (Lambda's init phase)."""
        if isinstance(self._function, InitError):
            return self._function
        if self._handler is None:
            try:
                self._handler = load_handler(self._module_path, self._handler_name)
            except InitError as error:
                return error
        return self._function, self._handler

    def serve(self, requests: BinaryIO, replies: BinaryIO) -> None:
        while line := requests.readline():
            started = time.monotonic()
            request = json.loads(line)
            context = request.get("context") or {}
            request_id = str(context.get("awsRequestId") or uuid.uuid4())
            answer = self.invoke(request.get("event"), request_id, started)
            self._output.end_line()
            replies.write(_answer_line(answer, request_id))
            replies.flush()

    def invoke(self, event: Any, request_id: str, started: float) -> Any:
        """The handler's answer to ``event``, or the error Lambda would report."""
        self._request_id.request_id = request_id
        ready = self.ready()
        if isinstance(ready, InitError):
            return self._failed(
                error_object(ready.error_type, ready.message, request_id, ready.stack_trace)
            )
        function, handler = ready
        try:
            return handler(event, function.context(request_id, started))
        except Exception as exc:
            return self._failed(
                error_object(type(exc).__name__, str(exc), request_id, _stack_trace(exc, 1))
            )
        except SystemExit as exc:
            # Lambda would start a new sandbox; this process serves on, so nothing hangs.
            return self._failed(
                error_object(
                    "Runtime.ExitError",
                    f"RequestId: {request_id} Error: Runtime exited with error: "
                    f"exit status {exc.code}",
                    request_id,
                )
            )

    def _failed(self, error: dict[str, Any]) -> dict[str, Any]:
        """Log the error as Lambda does, then answer with it."""
        self._output.end_line()
        lines = [f"[ERROR] {error['errorType']}: {error['errorMessage']}"]
        if error["stackTrace"]:
            lines.append("Traceback (most recent call last):")
            lines.extend(line.rstrip("\n") for line in error["stackTrace"])
        self._output.write("\n".join(lines) + "\n")
        return error


def _answer_line(answer: Any, request_id: str) -> bytes:
    """The protocol line that carries ``answer`` (Lambda's marshal error if it is not JSON)."""
    try:
        line = json.dumps({PAYLOAD_KEY: answer}, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        error = error_object(
            "Runtime.MarshalError", f"Unable to marshal response: {exc}", request_id
        )
        line = json.dumps({PAYLOAD_KEY: error})
    return line.encode() + b"\n"


def _exit_with_parent() -> None:
    """serverless-offline stops a function that timed out by killing the shell it started it
    with (``spawn(..., {shell: true})``); this process must not outlive that shell."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve one Lambda handler to serverless-offline.")
    parser.add_argument("module_path", help="the handler's module, as a path: handlers/send")
    parser.add_argument("handler_name", help="the function in it: handler")
    args = parser.parse_args(argv)
    _exit_with_parent()
    # The protocol keeps stdin and stdout to itself; handlers get no stdin (as on Lambda) and
    # a stdout on the same pipe, so their lines and the answers stay in order.
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb", buffering=0)
    nothing = os.open(os.devnull, os.O_RDONLY)
    os.dup2(nothing, 0)
    os.close(nothing)
    output = HandlerOutput(
        open(1, "wb", closefd=False),  # noqa: SIM115 - lives as long as the process
        encoding="utf-8",
        line_buffering=True,
    )
    sys.stdout = output
    runtime = Runtime(args.module_path, args.handler_name, os.environ, output)
    runtime.install_logging()
    runtime.ready()  # import the handler now, before the first invocation's clock starts
    runtime.serve(requests, replies)
    return 0


if __name__ == "__main__":
    sys.exit(main())
