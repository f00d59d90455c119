"""Cold start: how long each handler module takes to import in a fresh interpreter, as a ratio
to ``import boto3`` alone (the Lambda runtime's own import) timed in the same run.

Each import runs ``repeats`` times in a new interpreter, interleaved across modules so drift
hits all alike, after one untimed warm-up import; the median counts. The environment is the
function's as Lambda starts it: serverless.yml's variables plus the runtime's own
(``LAMBDA_TASK_ROOT``, ``AWS_LAMBDA_FUNCTION_NAME``...), tracing on as deployed. This matters:
outside Lambda the X-Ray SDK builds two botocore clients for centralized sampling when it is
imported (~90 ms); inside, the Lambda service samples and the SDK skips them.

Two settings:

- ``venv``: the development venv, every module's bytecode cache written by the warm-up into a
  private cache directory (``PYTHONPYCACHEPREFIX``).
- ``zip``: the deployment zip unpacked as Lambda unpacks it into /var/task, with nothing but
  it, boto3 and the standard library importable (``python -I -S -B``, as the packaging test
  does). /var/task is read-only, so only the ``.pyc`` the zip brings are used (the build
  precompiles every module, see plugins/precompile.py). Its compiled wheels are arm64: on
  another machine their pure-Python fallbacks load instead.
- ``no-pyc``: the same zip with its caches removed, as it was before the build precompiled
  it: every module compiled at each cold start.
"""

from __future__ import annotations

import importlib.util
import shutil
import statistics
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.machine import REPO, STAGE, lambda_env

HANDLERS = (
    "handlers.connect",
    "handlers.disconnect",
    "handlers.ping",
    "handlers.default",
    "handlers.send",
    "handlers.sender",
)
BASELINE = "boto3"
# What each handler cannot import less than, whatever wspush's own code does: the libraries
# its route uses (boto3 among them, but for $default), set up as the handler sets them up.
# Powertools' logger, metrics and tracer for all (the project's style); the table model
# (PynamoDB) where rows are read or written; PyJWT and rsa to check tokens; asyncio for the
# lean delivery path; Powertools' idempotency and batch utilities where messages are
# deduplicated and SQS batches read.
_OBSERVABILITY = (
    "from aws_lambda_powertools import Logger, Metrics, Tracer;"
    " Logger(); Metrics(); Tracer(auto_patch=False)"
)
_DELIVERY = "pynamodb.models, asyncio, aws_lambda_powertools.utilities.idempotency"
_BATCH = "aws_lambda_powertools.utilities.batch"
LIBRARIES = {
    "handlers.connect": f"import boto3; {_OBSERVABILITY}; import pynamodb.models, jwt, rsa",
    "handlers.disconnect": f"import boto3; {_OBSERVABILITY}; import pynamodb.models",
    "handlers.ping": f"import boto3; {_OBSERVABILITY}; import pynamodb.models",
    "handlers.default": _OBSERVABILITY,  # $default never imports boto3
    "handlers.send": f"import boto3; {_OBSERVABILITY}; import {_DELIVERY}",
    "handlers.sender": f"import boto3; {_OBSERVABILITY}; import {_DELIVERY}, {_BATCH}",
}
# What the Lambda Python runtime provides (top-level names in site-packages).
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3")
IMPORT_TIMEOUT_SECONDS = 120

# Only the statement is timed: not the interpreter's start, not site, not printing.
_TIMED = """\
import sys, time
sys.path[:0] = sys.argv[2:]
code = compile(sys.argv[1], "<timed>", "exec")
start = time.perf_counter()
exec(code, {})
print(time.perf_counter() - start)
"""


@dataclass(frozen=True)
class Setting:
    name: str
    interpreter: list[str]
    cwd: Path
    task_root: Path  # LAMBDA_TASK_ROOT: where the handlers are
    paths: tuple[str, ...] = ()  # put first on sys.path
    env: tuple[tuple[str, str], ...] = ()

    def command(self, statement: str) -> list[str]:
        return [*self.interpreter, "-c", _TIMED, statement, *self.paths]


def venv_setting(workdir: Path) -> Setting:
    cache = workdir / "pycache"
    return Setting("venv", [sys.executable], REPO, REPO, env=(("PYTHONPYCACHEPREFIX", str(cache)),))


def zip_setting(zip_path: Path, workdir: Path, *, without_caches: bool = False) -> Setting:
    """The zip unpacked into ``workdir``, next to a directory holding only boto3 & co.
    ``without_caches``: its bytecode caches removed, as a zip without them would be."""
    artifact = workdir / "task"
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(artifact)
    if without_caches:
        for cache in list(artifact.rglob("__pycache__")):
            shutil.rmtree(cache)
    runtime = workdir / "runtime"
    runtime.mkdir()
    spec = importlib.util.find_spec(BASELINE)
    if spec is None or spec.origin is None:
        raise RuntimeError("boto3 is not installed")
    site_packages = Path(spec.origin).resolve().parents[1]
    for name in RUNTIME_PROVIDED:
        (runtime / name).symlink_to(site_packages / name)
    interpreter = [sys.executable, "-I", "-S", "-B"]
    name = "no-pyc" if without_caches else "zip"
    return Setting(name, interpreter, workdir, artifact, (str(artifact), str(runtime)))


def runtime_env(setting: Setting) -> dict[str, str]:
    """The function's environment at a cold start: serverless.yml's variables, tracing on,
    and the variables the Lambda runtime sets itself."""
    env = lambda_env("http://127.0.0.1:9/unset")
    for name in ("POWERTOOLS_TRACE_DISABLED", "PYTHONDONTWRITEBYTECODE"):
        env.pop(name, None)
    env.update(
        {
            "LAMBDA_TASK_ROOT": str(setting.task_root),
            "AWS_EXECUTION_ENV": "AWS_Lambda_python3.13",
            "AWS_LAMBDA_FUNCTION_NAME": f"wspush-{STAGE}-function",
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_XRAY_DAEMON_ADDRESS": "127.0.0.1:9",
            "AWS_XRAY_CONTEXT_MISSING": "LOG_ERROR",
        }
    )
    env.update(setting.env)
    return env


def measure(
    settings: list[Setting], repeats: int, preexec_fn: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Per setting: each module's import times (ms), median, and ratio to ``import boto3``;
    and the same for the libraries alone that each handler needs (``LIBRARIES``)."""
    subjects = {
        BASELINE: f"import {BASELINE}",
        **{module: f"import {module}" for module in HANDLERS},
        **{_libraries(m): LIBRARIES[m] for m in HANDLERS},
    }
    envs = {setting.name: runtime_env(setting) for setting in settings}
    runs = {s.name: {subject: list[float]() for subject in subjects} for s in settings}
    for statement in subjects.values():  # warm-up: caches written, files in the page cache
        for setting in settings:
            _timed_ms(setting, statement, envs[setting.name], preexec_fn)
    for _ in range(repeats):
        for subject, statement in subjects.items():
            for setting in settings:
                runs[setting.name][subject].append(
                    _timed_ms(setting, statement, envs[setting.name], preexec_fn)
                )
    results: dict[str, Any] = {}
    for setting in settings:
        times = runs[setting.name]
        baseline = statistics.median(times[BASELINE])
        ratios = {m: statistics.median(times[m]) / baseline for m in HANDLERS}
        slowest = max(ratios, key=lambda m: ratios[m])
        results[setting.name] = {
            "modules": {m: _entry(times[m], baseline) for m in (BASELINE, *HANDLERS)},
            "libraries": {
                m: {**_entry(times[_libraries(m)], baseline), "statement": LIBRARIES[m]}
                for m in HANDLERS
            },
            "max_ratio_vs_boto3": ratios[slowest],
            "slowest": slowest,
        }
    return results


def _entry(runs_ms: list[float], baseline_ms: float) -> dict[str, Any]:
    median = statistics.median(runs_ms)
    return {"median_ms": median, "ratio_vs_boto3": median / baseline_ms, "runs_ms": runs_ms}


def _libraries(module: str) -> str:
    return f"{module} (libraries alone)"


def _timed_ms(
    setting: Setting,
    statement: str,
    env: dict[str, str],
    preexec_fn: Callable[[], None] | None,
) -> float:
    result = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        setting.command(statement),
        cwd=setting.cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=IMPORT_TIMEOUT_SECONDS,
        preexec_fn=preexec_fn,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"{statement} ({setting.name}) failed:\n{result.stderr[-2000:]}")
    return 1000 * float(result.stdout.strip().splitlines()[-1])
