"""Where the benchmark's processes run: their environment, their CPU, and the machine."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
REGION = "us-east-1"
STAGE = "bench"
ACCOUNT = "123456789012"
TABLE_NAME = f"wspush-{STAGE}-connections"
CHANNELS_TABLE_NAME = f"wspush-{STAGE}-channels"
HISTORY_TABLE_NAME = f"wspush-{STAGE}-history"
# The sender Lambda's memory (serverless.yml): Lambda gives a function CPU in proportion to
# its memory, one full vCPU at 1,769 MB.
SENDER_MEMORY_MB = 512
FULL_VCPU_MEMORY_MB = 1_769

# Caller settings that would point a child at real AWS or at `make dev`'s local stack.
_NOT_INHERITED = ("AWS_", "LOCAL_", "POWERTOOLS_")
_STACK_VARIABLES = (
    "WSPUSH_STAGE",
    "WSPUSH_TABLE_NAME",
    "WSPUSH_PROCESSED_TABLE_NAME",
    "WSPUSH_CHANNELS_TABLE_NAME",
    "WSPUSH_HISTORY_TABLE_NAME",
    "WSPUSH_NAMESPACES",
    "WSPUSH_QUEUE_URL",
    "WSPUSH_DLQ_URL",
    "WSPUSH_MANAGEMENT_ENDPOINT",
    "WSPUSH_ALLOWED_PLATFORMS",
)


def lambda_env(management_endpoint: str) -> dict[str, str]:
    """The deployed functions' environment (serverless.yml) with fake credentials, posting to
    ``management_endpoint``; any other AWS call is refused on loopback unless a benchmark points
    it at moto. Delivery tuning set by the caller (``WSPUSH_DELIVERY_CONCURRENCY``...) is kept,
    so settings can be compared."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(_NOT_INHERITED) and key not in _STACK_VARIABLES
    }
    queue = f"https://sqs.{REGION}.amazonaws.com/{ACCOUNT}/wspush-{STAGE}"
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
            # Nothing reaches AWS: any call not pointed elsewhere is refused on loopback.
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
            "WSPUSH_STAGE": STAGE,
            "WSPUSH_TABLE_NAME": TABLE_NAME,
            "WSPUSH_PROCESSED_TABLE_NAME": "",
            "WSPUSH_CHANNELS_TABLE_NAME": CHANNELS_TABLE_NAME,
            "WSPUSH_HISTORY_TABLE_NAME": HISTORY_TABLE_NAME,
            "WSPUSH_NAMESPACES": '{"room": {"subscribe": "authenticated"}}',
            "WSPUSH_QUEUE_URL": f"{queue}-messages",
            "WSPUSH_DLQ_URL": f"{queue}-dead-letters",
            "WSPUSH_MANAGEMENT_ENDPOINT": management_endpoint,
            "WSPUSH_ALLOWED_PLATFORMS": "",
            "POWERTOOLS_SERVICE_NAME": "wspush",
            "POWERTOOLS_METRICS_NAMESPACE": "wspush",
            "POWERTOOLS_LOG_LEVEL": "INFO",
            "POWERTOOLS_TRACER_CAPTURE_RESPONSE": "false",
            "POWERTOOLS_TRACER_CAPTURE_ERROR": "false",
            # No X-Ray daemon here (outside Lambda, Powertools would disable it anyway).
            "POWERTOOLS_TRACE_DISABLED": "true",
            # As on Lambda, whose /var/task is read-only: src/ is compiled on every import.
            "PYTHONDONTWRITEBYTECODE": "1",
        }
    )
    return env


def cpu_plan() -> tuple[int | None, int | None]:
    """(the stub's CPU, the measured process's CPU): one core each when there are two, as
    the targets are per core and the stub must not take the measured process's time."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None, None
    return cpus[0], cpus[1]


def pinned(cpu: int | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that pins a child process to ``cpu`` (None: leave it free)."""
    if cpu is None:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


def describe() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "cpu model")):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu_model": model,
        "cpus": os.cpu_count(),
        "packages": {
            name: metadata.version(name)
            for name in ("boto3", "botocore", "urllib3", "aws-lambda-powertools", "pynamodb")
        },
    }
