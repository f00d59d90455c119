"""Each handler loads what its route needs and nothing more (issue: cold starts).

A module-level import costs every cold start of every function that loads it; `make bench`
measures the time, and these tests keep what only one route needs out of the others.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# The costlier families, each with the handlers that may load it.
ONLY_IN = {
    # Powertools' event data classes (30 modules in one import): the sender's batch needs them.
    "aws_lambda_powertools.utilities.data_classes": {"sender"},
    "aws_lambda_powertools.utilities.batch": {"sender"},
    "aws_lambda_powertools.utilities.idempotency": {"send", "sender", "rotation"},
    "asyncio": {"send", "sender"},
    "wspush.fanout.delivery": {"send", "sender"},
    "wspush.fanout.gateway": {"send", "sender"},
    "wspush.fanout.queues": {"send", "sender", "rotation"},
    "jwt": {"connect"},
    "rsa": {"connect"},
    "wspush.auth.tokens": {"connect"},
    "ecdsa": set(),  # only once an ES algorithm is configured
    "pynamodb": {"connect", "disconnect", "ping", "send", "sender", "rotation"},
}
HANDLERS = ("connect", "disconnect", "ping", "default", "send", "sender", "rotation")

LOADED = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
print(json.dumps(sorted(sys.modules)))
"""


@pytest.mark.parametrize("name", HANDLERS)
def test_a_handler_loads_only_what_its_route_needs(name: str) -> None:
    # Given the function's environment at a cold start in Lambda (the X-Ray SDK checks it)
    env = {**os.environ, "LAMBDA_TASK_ROOT": str(REPO), "AWS_LAMBDA_FUNCTION_NAME": name}
    env.pop("POWERTOOLS_TRACE_DISABLED", None)
    # When a fresh interpreter imports the handler
    result = subprocess.run(
        [sys.executable, "-c", LOADED, f"handlers.{name}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    modules = set(json.loads(result.stdout))
    loaded = {
        family
        for family in ONLY_IN
        if any(m == family or m.startswith(f"{family}.") for m in modules)
    }
    # Then it loaded the families its route needs, and none that only other routes need
    assert loaded == {family for family, allowed in ONLY_IN.items() if name in allowed}
