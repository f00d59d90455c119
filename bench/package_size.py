"""The deployment zip and its size.

``.serverless/wspush.zip`` is reused when it is newer than every file it is built from;
otherwise ``sls package --stage bench`` runs in a clean copy of the service (as a fresh
checkout would be, like the packaging test), so nothing is written into the working tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.machine import REPO, STAGE

SERVICE = "wspush"
BUILT_ZIP = REPO / ".serverless" / f"{SERVICE}.zip"
PACKAGE_TIMEOUT_SECONDS = 900
# What the zip is made of: the service definition, the dependencies, the code.
INPUTS = ("serverless.yml", "requirements.txt", "package.json", "package-lock.json")
SOURCE_DIRS = ("handlers", "src", "plugins")
# Not needed to package, or not in a fresh checkout.
NOT_COPIED = shutil.ignore_patterns(
    ".git",
    ".venv*",
    "node_modules",
    ".serverless",
    "__pycache__",
    "*.pyc",
    "*.egg-info",
    ".*_cache",
    ".hypothesis",
    "client",
    "tests",
    "bench",
)


@dataclass(frozen=True)
class ZipFacts:
    path: Path
    source: str  # "reused", "built" or "given"
    build_s: float | None

    def as_dict(self) -> dict[str, Any]:
        with zipfile.ZipFile(self.path) as archive:
            entries = archive.infolist()
        return {
            "zip_bytes": self.path.stat().st_size,
            "uncompressed_bytes": sum(entry.file_size for entry in entries),
            "files": len(entries),
            "source_files": sum(entry.filename.endswith(".py") for entry in entries),
            "compiled_files": sum(entry.filename.endswith(".pyc") for entry in entries),
            "source": self.source,
            "build_s": self.build_s,
        }


def is_fresh(zip_path: Path) -> bool:
    """Built after the last change to anything it is made of."""
    if not zip_path.is_file():
        return False
    inputs = [REPO / name for name in INPUTS]
    for directory in SOURCE_DIRS:
        inputs.extend(
            path for path in (REPO / directory).rglob("*") if "__pycache__" not in path.parts
        )
    newest = max(path.stat().st_mtime for path in inputs if path.exists())
    return zip_path.stat().st_mtime > newest


def deployment_zip(workdir: Path, given: Path | None = None) -> ZipFacts:
    if given is not None:
        return ZipFacts(given, "given", None)
    if is_fresh(BUILT_ZIP):
        return ZipFacts(BUILT_ZIP, "reused", None)
    started = time.monotonic()
    path = build(workdir)
    return ZipFacts(path, "built", time.monotonic() - started)


# Auth as a deployer configures it (an HMAC secret in SSM): without a key source, or with auth
# `none`, a stage refuses to package (plugins/auth-check.js).
HMAC_AUTH_PARAMS = {
    "jwtAlgorithms": "HS256",
    "jwtSecretParameter": "/wspush/example/jwt-secret",
    "jwtIssuer": "https://issuer.example",
    "jwtAudience": "wspush",
}


def build(workdir: Path) -> Path:
    packaged = package_clean_copy(workdir, stage=STAGE, params=HMAC_AUTH_PARAMS)
    return packaged.directory / f"{SERVICE}.zip"


@dataclass(frozen=True)
class Packaged:
    directory: Path  # the zip and the CloudFormation templates
    output: str  # what `sls package` printed


class PackagingRefused(RuntimeError):
    """``sls package`` failed; ``output`` is what it printed."""

    def __init__(self, output: str) -> None:
        super().__init__(f"sls package failed:\n{output[-4000:]}")
        self.output = output


def package_clean_copy(
    workdir: Path,
    *,
    stage: str,
    params: Mapping[str, str],
    env: Mapping[str, str] | None = None,
) -> Packaged:
    """``sls package --stage <stage> --param k=v...`` in a clean copy of the service under
    ``workdir``, as a fresh checkout would be (no caches, venvs or build outputs), so nothing
    is written into the working tree. ``env`` adds to this process's environment. (Also the
    packaging test's.) Raises ``PackagingRefused`` with what it printed if it fails.
    """
    service = workdir / "service"
    shutil.copytree(REPO, service, ignore=NOT_COPIED)
    (service / "node_modules").symlink_to(REPO / "node_modules", target_is_directory=True)
    output = workdir / "package"
    # LOCAL_* values are for serverless-offline and would replace the stack's own references.
    child_env = {key: value for key, value in os.environ.items() if not key.startswith("LOCAL_")}
    child_env.update(env or {})
    result = subprocess.run(  # noqa: S603 - a fixed command line
        [
            *("npx", "sls", "package", "--stage", stage, "--package", str(output)),
            *(arg for name, value in params.items() for arg in ("--param", f"{name}={value}")),
        ],
        cwd=service,
        env=child_env,
        capture_output=True,
        text=True,
        timeout=PACKAGE_TIMEOUT_SECONDS,
        check=False,
    )
    printed = result.stdout + result.stderr
    if result.returncode != 0:
        raise PackagingRefused(printed)
    return Packaged(output, printed)
