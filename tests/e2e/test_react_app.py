"""What a newcomer does with client/README.md: a React app of their own, outside the repository,
the client installed as the README says, built with Vite, in Chromium against the local stack.

The app is client/example (the README's app, kept identical to it by the client's tests). Its
packages come from the npm registry through a cache under ``.cache/npm``: ``npm ci
--prefer-offline`` from the app's own lockfile downloads them once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import REPO, RunningStack

CLIENT = REPO / "client"
EXAMPLE = CLIENT / "example"
NPM_CACHE = REPO / ".cache" / "npm"
SCRIPT = Path(__file__).parent / "browser" / "react_app.mjs"
NPM_TIMEOUT_SECONDS = 300


def npm(app: Path, *args: str) -> str:
    result = subprocess.run(
        ["npm", *args, "--no-audit", "--no-fund", "--cache", str(NPM_CACHE)],
        cwd=app,
        capture_output=True,
        text=True,
        timeout=NPM_TIMEOUT_SECONDS,
    )
    assert result.returncode == 0, f"npm {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def new_app(work: Path) -> Path:
    """client/example with its own packages installed, in `work` (outside the repository)."""
    assert not work.resolve().is_relative_to(REPO), "the app must live outside the repository"
    app = work / "app"
    shutil.copytree(EXAMPLE, app, ignore=shutil.ignore_patterns("node_modules", "dist*"))
    npm(app, "ci", "--prefer-offline")
    return app


@pytest.fixture(scope="module", params=["folder", "tarball"])
def react_app(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Given the README's app in a directory of its own, with the client installed from the
    wspush checkout: the folder itself (`npm install ../wspush/client`, with the app's
    `install-links=true`), or `npm pack`'s tarball of it."""
    work = tmp_path_factory.mktemp(f"react-app-{request.param}")
    app = new_app(work)
    if request.param == "folder":
        npm(app, "install", "--prefer-offline", str(CLIENT))
    else:
        packed = json.loads(
            npm(app, "pack", str(CLIENT), "--pack-destination", str(work), "--json")
        )
        npm(app, "install", "--prefer-offline", str(work / packed[0]["filename"]))
    assert not (app / "node_modules" / "@wspush" / "client").is_symlink()
    return app


def vite_build(app: Path, out: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`vite build` with exactly the app settings in `env` (none from the developer's shell)."""
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("VITE_")}
    return subprocess.run(
        [str(app / "node_modules" / ".bin" / "vite"), "build", "--outDir", out, "--emptyOutDir"],
        cwd=app,
        env={**inherited, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def build(app: Path, out: str, env: dict[str, str]) -> Path:
    result = vite_build(app, out, env)
    assert result.returncode == 0, f"vite build:\n{result.stdout}{result.stderr}"
    return app / out


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        return


@contextmanager
def served(root: Path) -> Iterator[str]:
    """`root` on a loopback origin of its own (not the local stack's)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, name="react-app", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("stack", ["local_stack", "jwt_stack"], ids=["auth-none", "auth-jwt"])
def test_the_readme_react_app_connects_and_renders_a_pushed_message(
    request: pytest.FixtureRequest, stack: str, react_app: Path
) -> None:
    # Given the app built for the running local stack; with jwt it fetches each token from the
    # stack's /token, on another origin than its own
    local_stack: RunningStack = request.getfixturevalue(stack)
    chromium = shutil.which("chromium")
    assert chromium, "Chromium is missing: `make test` installs Debian's chromium package"
    env = {"VITE_WSPUSH_URL": local_stack.local.websocket_url}
    token_url = ""
    if stack == "jwt_stack":
        token_url = f"{local_stack.local.demo_url}token"
        env["VITE_WSPUSH_TOKEN_URL"] = token_url
    dist = build(react_app, f"dist-{stack}", env)

    with served(dist) as app_url:
        # When the browser opens it and a message is pushed to its user with the CLI
        result = subprocess.run(
            ["node", str(SCRIPT)],
            cwd=REPO,
            env={
                **local_stack.env,
                "APP_URL": app_url,
                "TOKEN_URL": token_url,
                "WSPUSH_CLI": str(Path(sys.executable).parent / "wspush"),
                "CHROMIUM": chromium,
            },
            capture_output=True,
            text=True,
            timeout=120,
        )

    # Then the page connected and rendered the message
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["connectionId"]
    if token_url:
        # And its token came cross-origin, allowed for the app's loopback origin only
        assert outcome["tokenAnswers"], "the app never asked for a token"
        for answer in outcome["tokenAnswers"]:
            assert answer == {"status": 200, "allowOrigin": outcome["origin"]}


def test_a_bare_symlink_to_the_folder_fails_the_build_instead_of_bundling_a_second_react(
    tmp_path: Path,
) -> None:
    # Given the app without the README's `install-links=true`: npm only links the folder
    app = new_app(tmp_path)
    (app / ".npmrc").unlink()
    npm(app, "install", "--prefer-offline", str(CLIENT))
    assert (app / "node_modules" / "@wspush" / "client").is_symlink()
    # When it is built
    result = vite_build(app, "dist", {})
    # Then the build stops, because React cannot be found from the client's folder; a React
    # there would have been bundled beside the app's and left the page blank
    assert result.returncode != 0, "the app built against the client's folder"
    output = result.stdout + result.stderr
    assert "optional-peer-dep:react:@wspush/client" in output, output
