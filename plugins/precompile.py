"""Adds a bytecode cache (``.pyc``) for every Python module of a Lambda zip.

Lambda unpacks the zip into /var/task, which is read-only: a module without a usable cache is
compiled from source at every cold start (the README's *Cold starts* says what that costs).
pip's caches cannot serve: the packaging plugin strips them, and they are timestamp-based,
while file dates do not survive the trip through a zip.

The caches written here are *checked hash-based* (PEP 552): Python uses one only while the
source's hash matches, whatever the dates, and otherwise compiles the source as usual, so a
cache can slow a cold start down but never run code other than the source beside it. They are
compiled by the runtime's Python version (their tag, e.g. ``cpython-313``, must be Lambda's),
unoptimized (Lambda runs without ``-O``), named where Lambda's Python looks for them whatever
this shell's ``PYTHONPYCACHEPREFIX``, with tracebacks naming /var/task paths.

    python3.13 -I plugins/precompile.py --runtime python3.13 .serverless/wspush.zip
"""

from __future__ import annotations

import argparse
import os
import py_compile
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

TASK_ROOT = PurePosixPath("/var/task")
FILE_MODE = 0o644


class PrecompileError(Exception):
    """The zip cannot be precompiled for this runtime."""


@dataclass
class Report:
    compiled: int = 0
    replaced: int = 0  # caches already in the zip (stale or timestamp-based), dropped
    failed: list[str] = field(default_factory=list)  # sources Python cannot compile
    bytes_before: int = 0
    bytes_after: int = 0


def check_runtime(runtime: str) -> None:
    """This interpreter's caches are the runtime's only if they share a version tag."""
    expected = "cpython-" + runtime.removeprefix("python").replace(".", "")
    if sys.implementation.cache_tag != expected:
        raise PrecompileError(
            f"{runtime} caches must be compiled by {runtime}, not by Python "
            f"{sys.version.split()[0]} ({sys.implementation.cache_tag})"
        )


def cache_name(source: str) -> str:
    """Where Lambda's Python looks for ``source``'s cache: ``a/__pycache__/b.<tag>.pyc``."""
    path = PurePosixPath(source)
    name = f"{path.stem}.{sys.implementation.cache_tag}.pyc"
    return str(path.parent / "__pycache__" / name) if path.parent.parts else f"__pycache__/{name}"


def is_cache(name: str, names: set[str]) -> bool:
    """A cache of a source in the zip (replaced by a fresh one). A ``.pyc`` with no source
    beside it is a module shipped as bytecode, and stays."""
    if "__pycache__" in PurePosixPath(name).parts[:-1]:
        return True
    return name.endswith((".pyc", ".pyo")) and name[:-1] in names


def precompile(zip_path: Path) -> Report:
    """Rewrites ``zip_path`` with a fresh checked-hash cache beside every ``.py`` it holds."""
    report = Report(bytes_before=zip_path.stat().st_size)
    with tempfile.TemporaryDirectory(prefix="wspush-precompile-") as tmp:
        workdir = Path(tmp)
        rewritten = workdir / "out.zip"
        with (
            zipfile.ZipFile(zip_path) as source_zip,
            zipfile.ZipFile(rewritten, "w", zipfile.ZIP_DEFLATED) as out,
        ):
            names = set(source_zip.namelist())
            caches: list[tuple[zipfile.ZipInfo, bytes]] = []
            for info in source_zip.infolist():
                if is_cache(info.filename, names):
                    report.replaced += not info.is_dir()
                    continue
                data = source_zip.read(info)
                out.writestr(info, data)
                if info.filename.endswith(".py") and not info.is_dir():
                    cache = _compile(info, data, workdir, report)
                    if cache is not None:
                        caches.append(cache)
            for cache_info, cache_data in caches:
                out.writestr(cache_info, cache_data)
        os.replace(rewritten, zip_path)
    report.bytes_after = zip_path.stat().st_size
    return report


def _compile(
    info: zipfile.ZipInfo, source: bytes, workdir: Path, report: Report
) -> tuple[zipfile.ZipInfo, bytes] | None:
    source_file = workdir / "src" / info.filename
    source_file.parent.mkdir(parents=True, exist_ok=True)
    source_file.write_bytes(source)
    cache_file = workdir / "cache.pyc"
    try:
        py_compile.compile(
            str(source_file),
            cfile=str(cache_file),
            dfile=str(TASK_ROOT / info.filename),
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
            optimize=0,
        )
    except py_compile.PyCompileError:
        report.failed.append(info.filename)
        return None
    finally:
        source_file.unlink()
    cache_info = zipfile.ZipInfo(cache_name(info.filename), date_time=info.date_time)
    cache_info.external_attr = FILE_MODE << 16
    cache_info.compress_type = zipfile.ZIP_DEFLATED
    report.compiled += 1
    return cache_info, cache_file.read_bytes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Add a bytecode cache for every module of a zip.")
    parser.add_argument("--runtime", required=True, help="the functions' runtime, e.g. python3.13")
    parser.add_argument("zips", nargs="+", type=Path)
    args = parser.parse_args(argv)
    try:
        check_runtime(args.runtime)
    except PrecompileError as exc:
        print(f"precompile: {exc}", file=sys.stderr)
        return 2
    for zip_path in args.zips:
        report = precompile(zip_path)
        print(
            f"precompile: {zip_path.name}: {report.compiled} modules compiled "
            f"({report.replaced} old caches dropped), "
            f"{report.bytes_before:,} -> {report.bytes_after:,} bytes"
        )
        for name in report.failed:
            # Python cannot compile it here either: importing it would fail the same way.
            print(f"precompile: {zip_path.name}: {name} does not compile, left as it is")
    return 0


if __name__ == "__main__":
    sys.exit(main())
