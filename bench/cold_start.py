"""Cold start: how long each handler module takes to import in a fresh interpreter, as a ratio
to ``import boto3`` alone (the Lambda runtime's own import) timed in the same run.

Each import runs ``repeats`` times in a new interpreter, interleaved across modules so drift
hits all alike; the median counts. Two settings:

- ``venv``: the development venv, as tests run (site-packages hold compiled ``.pyc``;
  ``src/`` and ``handlers/`` are compiled at each import, bytecode caches being kept out).
- ``zip``: the deployment zip unpacked as Lambda unpacks it into /var/task, with nothing but
  it, boto3 and the standard library importable (``python -I -S -B``, as the packaging test
  does). The zip holds no ``.pyc`` (``slim``) and /var/task is read-only, so every module
  of the zip is compiled at each cold start. Its compiled wheels are arm64: on another
  machine their pure-Python fallbacks load instead.
"""

from __future__ import annotations

import importlib.util
import statistics
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.machine import REPO, lambda_env

HANDLERS = (
    "handlers.connect",
    "handlers.disconnect",
    "handlers.ping",
    "handlers.default",
    "handlers.send",
    "handlers.sender",
)
BASELINE = "boto3"
# What the Lambda Python runtime provides (top-level names in site-packages).
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3")
IMPORT_TIMEOUT_SECONDS = 120

# Only the import is timed: not the interpreter's start, not site, not printing.
_TIMED_IMPORT = """\
import importlib, sys, time
sys.path[:0] = sys.argv[2:]
start = time.perf_counter()
importlib.import_module(sys.argv[1])
print(time.perf_counter() - start)
"""


@dataclass(frozen=True)
class Setting:
    name: str
    interpreter: list[str]
    cwd: Path
    paths: tuple[str, ...] = ()  # put first on sys.path

    def command(self, module: str) -> list[str]:
        return [*self.interpreter, "-c", _TIMED_IMPORT, module, *self.paths]


def venv_setting() -> Setting:
    return Setting("venv", [sys.executable, "-B"], REPO)


def zip_setting(zip_path: Path, workdir: Path) -> Setting:
    """The zip unpacked into ``workdir``, next to a directory holding only boto3 & co."""
    artifact = workdir / "task"
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(artifact)
    runtime = workdir / "runtime"
    runtime.mkdir()
    spec = importlib.util.find_spec(BASELINE)
    if spec is None or spec.origin is None:
        raise RuntimeError("boto3 is not installed")
    site_packages = Path(spec.origin).resolve().parents[1]
    for name in RUNTIME_PROVIDED:
        (runtime / name).symlink_to(site_packages / name)
    interpreter = [sys.executable, "-I", "-S", "-B"]
    return Setting("zip", interpreter, workdir, (str(artifact), str(runtime)))


def measure(
    settings: list[Setting], repeats: int, preexec_fn: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Per setting: each module's import times (ms), median, and ratio to ``import boto3``."""
    env = lambda_env("http://127.0.0.1:9/unset")
    modules = (BASELINE, *HANDLERS)
    runs: dict[str, dict[str, list[float]]] = {s.name: {m: [] for m in modules} for s in settings}
    for _ in range(repeats):
        for module in modules:
            for setting in settings:
                runs[setting.name][module].append(_import_ms(setting, module, env, preexec_fn))
    results: dict[str, Any] = {}
    for setting in settings:
        medians = {m: statistics.median(times) for m, times in runs[setting.name].items()}
        ratios = {m: medians[m] / medians[BASELINE] for m in HANDLERS}
        slowest = max(ratios, key=lambda m: ratios[m])
        results[setting.name] = {
            "modules": {
                m: {"median_ms": medians[m], "ratio_vs_boto3": ratios.get(m, 1.0), "runs_ms": t}
                for m, t in runs[setting.name].items()
            },
            "max_ratio_vs_boto3": ratios[slowest],
            "slowest": slowest,
        }
    return results


def _import_ms(
    setting: Setting,
    module: str,
    env: dict[str, str],
    preexec_fn: Callable[[], None] | None,
) -> float:
    result = subprocess.run(  # noqa: S603 - this interpreter, a fixed script
        setting.command(module),
        cwd=setting.cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=IMPORT_TIMEOUT_SECONDS,
        preexec_fn=preexec_fn,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"import {module} ({setting.name}) failed:\n{result.stderr[-2000:]}")
    return 1000 * float(result.stdout.strip().splitlines()[-1])
