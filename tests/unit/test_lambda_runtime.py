"""The local Lambda runtime (``local/lambda_runtime.py``) as serverless-offline drives it.

Each test starts a function's process the way serverless-offline's Python runner does —
``python3 -u <its invoke.py> MODULE HANDLER`` through a shell, with ``local/bin`` first on
PATH as ``make dev`` sets it — and speaks its protocol: one JSON line per invocation on stdin,
the answer is the first stdout line holding ``__offline_payload__``, any other line is a log.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from local.lambda_runtime import (
    PAYLOAD_KEY,
    PYTHON_VARIABLE,
    TIMEOUTS_VARIABLE,
    InitError,
    load_handler,
)

REPO = Path(__file__).resolve().parents[2]
SHIM_DIR = REPO / "local" / "bin"
INVOKE_PY = (
    REPO / "node_modules/serverless-offline/src/lambda/handler-runner/python-runner/invoke.py"
)
HANDLERS = "tests/unit/runtime_handlers"
FUNCTION = "wspush-test-orders"
WAIT_SECONDS = 10


def _lines(stream: IO[str], into: queue.Queue[str | None]) -> None:
    for line in stream:
        into.put(line.rstrip("\n"))
    into.put(None)


class OfflineFunction:
    """One function's process, started and spoken to as serverless-offline does."""

    def __init__(self, handler: str, *, module: str = HANDLERS, timeout_seconds: int = 10) -> None:
        env = {
            **os.environ,
            "PATH": f"{SHIM_DIR}{os.pathsep}{os.environ['PATH']}",
            PYTHON_VARIABLE: sys.executable,
            TIMEOUTS_VARIABLE: json.dumps({FUNCTION: timeout_seconds}),
            # What serverless-offline sets for the function.
            "AWS_LAMBDA_FUNCTION_NAME": FUNCTION,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_LOG_STREAM_NAME": "2016/12/02/[$LATEST]f77ff5e4026c45bda9a9ebcec6bc9cad",
            "AWS_REGION": "eu-west-1",
        }
        self.process = subprocess.Popen(
            f"python3 -u {INVOKE_PY} {module} {handler}",
            shell=True,  # as serverless-offline starts it
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        assert self.process.stderr is not None
        self._stdout: queue.Queue[str | None] = queue.Queue()
        self.stderr: queue.Queue[str | None] = queue.Queue()
        for stream, into in (
            (self.process.stdout, self._stdout),
            (self.process.stderr, self.stderr),
        ):
            threading.Thread(target=_lines, args=(stream, into), daemon=True).start()
        self.logs: list[str] = []

    def send(self, event: Any, request_id: str) -> None:
        # The context serverless-offline sends (its LambdaContext.js): names it made up itself.
        context = {
            "awsRequestId": request_id,
            "callbackWaitsForEmptyEventLoop": True,
            "functionName": FUNCTION,
            "functionVersion": "$LATEST",
            "invokedFunctionArn": f"offline_invokedFunctionArn_for_{FUNCTION}",
            "logGroupName": f"offline_logGroupName_for_{FUNCTION}",
            "logStreamName": f"offline_logStreamName_for_{FUNCTION}",
            "memoryLimitInMB": "256",
        }
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps({"context": context, "event": event}) + "\n")
        self.process.stdin.flush()

    def log_line(self) -> str:
        line = self._stdout.get(timeout=WAIT_SECONDS)
        if line is None:
            errors = []
            while (error := self.stderr.get(timeout=WAIT_SECONDS)) is not None:
                errors.append(error)
            raise AssertionError("the process ended:\n" + "\n".join(errors))
        return line

    def answer(self) -> Any:
        while True:
            line = self.log_line()
            try:
                value = json.loads(line)
            except ValueError:
                value = None
            if isinstance(value, dict) and PAYLOAD_KEY in value:
                return value[PAYLOAD_KEY]
            self.logs.append(line)

    def invoke(self, event: Any, request_id: str) -> Any:
        self.send(event, request_id)
        return self.answer()

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(timeout=WAIT_SECONDS)


@pytest.fixture
def start() -> Iterator[Any]:
    started: list[OfflineFunction] = []

    def start(handler: str, **options: Any) -> OfflineFunction:
        started.append(OfflineFunction(handler, **options))
        return started[-1]

    yield start
    for function in started:
        if function.process.poll() is None:
            function.process.kill()
            function.process.wait()


def test_each_invocation_gets_its_own_request_id_and_the_functions_configuration(
    start: Any,
) -> None:
    # Given a function configured with 256 MB
    function = start("describe")
    # When it is invoked twice, serverless-offline sending a new request id each time
    first = function.invoke({}, "req-1")
    second = function.invoke({}, "req-2")
    # Then each invocation has its own request id
    assert (first["aws_request_id"], second["aws_request_id"]) == ("req-1", "req-2")
    # And the context describes the function as Lambda's runtime does (memory is a string there)
    stream = first["log_stream_name"]
    assert {k: v for k, v in first.items() if k not in ("aws_request_id", "remaining_ms")} == {
        "function_name": FUNCTION,
        "function_version": "$LATEST",
        "invoked_function_arn": f"arn:aws:lambda:eu-west-1:123456789012:function:{FUNCTION}",
        "memory_limit_in_mb": "256",
        "log_group_name": f"/aws/lambda/{FUNCTION}",
        "log_stream_name": stream,
        "stream_in_environment": stream,
        "runtime_variables": [],
    }
    # And one log stream per process, named as Lambda names them
    assert re.fullmatch(r"\d{4}/\d\d/\d\d/\[\$LATEST\][0-9a-f]{32}", stream)
    assert second["log_stream_name"] == stream
    function.stop()
    assert function.process.returncode == 0


def test_remaining_time_counts_down_from_the_timeout_from_each_invocation_start(
    start: Any,
) -> None:
    # Given a function configured with a 3 s timeout
    function = start("wait", timeout_seconds=3)
    # When an invocation has used 0.5 s, it has about 2.5 s left
    left = function.invoke({"seconds": 0.5}, "req-1")
    assert 2_000 <= left <= 2_500
    # When the next invocation starts a second later, its clock starts again at 3 s
    time.sleep(1)
    left = function.invoke({"seconds": 0}, "req-2")
    assert 2_500 <= left <= 3_000


def test_a_handler_exception_is_answered_as_lambda_reports_it_and_the_process_serves_on(
    start: Any,
) -> None:
    # Given a running function
    function = start("order")
    # When its handler raises
    error = function.invoke({"orderId": 7, "fail": True}, "req-1")
    # Then the answer is Lambda's error object: message, type, request id, the handler's frames
    assert error == {
        "errorMessage": "order 7 is not known",
        "errorType": "ValueError",
        "requestId": "req-1",
        "stackTrace": [error["stackTrace"][0]],
    }
    assert re.match(
        r'  File ".*/runtime_handlers\.py", line \d+, in order\n', error["stackTrace"][0]
    )
    # And the error is logged as Lambda logs it
    assert function.logs[0] == "[ERROR] ValueError: order 7 is not known"
    assert function.logs[1] == "Traceback (most recent call last):"
    # And the same process answers the next invocation
    assert function.invoke({"orderId": 8}, "req-2") == {"orderId": 8}
    assert function.process.poll() is None


def test_sys_exit_in_a_handler_is_an_exit_error_and_the_process_serves_on(start: Any) -> None:
    function = start("leave")
    for request_id in ("req-1", "req-2"):
        error = function.invoke({}, request_id)
        assert error["errorType"] == "Runtime.ExitError"
        assert error["requestId"] == request_id
        assert "exit status 3" in error["errorMessage"]


def test_an_answer_that_is_not_json_is_a_marshal_error(start: Any) -> None:
    error = start("timestamp").invoke({}, "req-1")
    assert error["errorType"] == "Runtime.MarshalError"
    assert error["errorMessage"].startswith("Unable to marshal response:")
    assert error["requestId"] == "req-1"


@pytest.mark.parametrize(
    ("module", "handler", "error_type"),
    [
        ("tests/unit/no_such_module", "handler", "Runtime.ImportModuleError"),
        (HANDLERS, "no_such_handler", "Runtime.HandlerNotFound"),
    ],
)
def test_a_handler_that_cannot_be_loaded_is_answered_with_lambdas_init_error(
    start: Any, module: str, handler: str, error_type: str
) -> None:
    function = start(handler, module=module)
    for request_id in ("req-1", "req-2"):
        error = function.invoke({}, request_id)
        assert (error["errorType"], error["requestId"]) == (error_type, request_id)
        assert module in error["errorMessage"]


def test_handler_output_never_breaks_the_protocol(start: Any) -> None:
    # Given a handler that prints, logs, leaves a line unfinished and reads stdin
    function = start("chatter")
    # When it is invoked twice
    first = function.invoke({"n": 1}, "req-1")
    second = function.invoke({"n": 2}, "req-2")
    # Then both answers arrive whole: the handler read nothing of the protocol's stdin
    assert first == {"stdin": "", "n": 1}
    assert second == {"stdin": "", "n": 2}
    # And its output came out as log lines, the unfinished one ended before the answer
    assert function.logs[0] == "a whole line"
    assert re.fullmatch(r"\[WARNING\]\t\S+Z\treq-1\tcareful", function.logs[1])
    assert function.logs[2] == "no newline at the end"
    assert function.logs[3:] == ["a whole line", function.logs[4], "no newline at the end"]
    assert function.logs[4].endswith("\treq-2\tcareful")


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


@pytest.mark.skipif(sys.platform != "linux", reason="the parent-death signal is Linux's")
def test_a_timed_out_function_stops_when_serverless_offline_kills_its_shell(
    start: Any,
) -> None:
    # Given a handler in the middle of a long invocation
    function = start("wait")
    function.send({"seconds": 60}, "req-1")
    pid = int(function.log_line().removeprefix("pid "))
    # When serverless-offline's timeout kills the process it started (the shell)
    function.process.send_signal(signal.SIGTERM)
    function.process.wait(timeout=WAIT_SECONDS)
    # Then the handler does not run on, as it would not on Lambda
    deadline = time.monotonic() + WAIT_SECONDS
    while not _gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _gone(pid)


def test_any_other_python3_call_goes_to_the_projects_python() -> None:
    result = subprocess.run(
        [str(SHIM_DIR / "python3"), "-c", "import sys; print(sys.prefix)"],
        env={**os.environ, PYTHON_VARIABLE: sys.executable},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == sys.prefix


def test_make_dev_starts_python_functions_through_the_runtime_with_their_timeouts() -> None:
    from local.run import offline_environment
    from wspush.tools.local import LocalStack

    # When make dev prepares serverless-offline's environment
    env = offline_environment(LocalStack(), "none")
    # Then the `python3` serverless-offline finds is the runtime's, whatever venv was active
    assert "VIRTUAL_ENV" not in env
    assert shutil.which("python3", path=env["PATH"]) == str(SHIM_DIR / "python3")
    assert env[PYTHON_VARIABLE] == sys.executable
    # And each function's timeout is serverless.yml's (the sender's 30 s, the 10 s default)
    timeouts = json.loads(env[TIMEOUTS_VARIABLE])
    assert timeouts["wspush-local-sender"] == 30
    assert timeouts["wspush-local-send"] == timeouts["wspush-local-connect"] == 10
    assert timeouts["wspush-local-welcome"] == timeouts["wspush-local-channel"] == 20
    assert timeouts["wspush-local-rotation"] == 30
    assert len(timeouts) == 10


@pytest.mark.parametrize(
    ("source", "error_type", "message"),
    [
        ("def handler(:\n", "Runtime.UserCodeSyntaxError", "Syntax error in module 'broken'"),
        ("raise RuntimeError('no settings')\n", "RuntimeError", "no settings"),
    ],
)
def test_a_module_that_fails_to_load_is_an_init_error_named_as_lambda_names_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str, error_type: str, message: str
) -> None:
    # Given a handler module that cannot be imported
    (tmp_path / "broken.py").write_text(source)
    monkeypatch.syspath_prepend(tmp_path)
    # When the runtime loads it, then the init error says why, with where it happened
    with pytest.raises(InitError) as caught:
        load_handler("broken", "handler")
    assert caught.value.error_type == error_type
    assert caught.value.message.startswith(message)
    assert "broken.py" in "".join(caught.value.stack_trace)
