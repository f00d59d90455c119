"""The demo page in a real browser (headless Chromium, driven by playwright-core)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO, RunningStack

SCRIPT = Path(__file__).parent / "browser" / "demo_page.mjs"


@pytest.mark.parametrize("stack", ["local_stack", "jwt_stack"], ids=["auth-none", "auth-jwt"])
def test_the_demo_page_receives_reconnects_and_receives_again(
    request: pytest.FixtureRequest, stack: str, tmp_path: Path
) -> None:
    # Given Chromium (make test installs Debian's package) and the running local stack; with
    # jwt, the page's token provider asks the dev server for a fresh token on each connect
    local_stack: RunningStack = request.getfixturevalue(stack)
    chromium = shutil.which("chromium")
    assert chromium, "Chromium is missing: `make test` installs Debian's chromium package"
    env = {
        **local_stack.env,
        "DEMO_URL": local_stack.local.demo_url,
        "MANAGEMENT_ENDPOINT": local_stack.local.management_endpoint,
        "WSPUSH_CLI": str(Path(sys.executable).parent / "wspush"),
        "CHROMIUM": chromium,
        "SCREENSHOT": str(tmp_path / "demo.png"),
        "AUTH_MODE": "none" if stack == "local_stack" else "jwt",
    }
    # When the browser script runs its scenario
    result = subprocess.run(
        ["node", str(SCRIPT)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    # Then every step passed, and the page was on two different connections in turn
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["first"] != outcome["second"]
    assert (tmp_path / "demo.png").stat().st_size > 0
