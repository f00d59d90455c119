"""plugins/precompile.py: every module of a Lambda zip gets a checked hash-based cache, and a
cold start then imports without compiling anything."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from plugins import precompile

RUNTIME = f"python{sys.version_info.major}.{sys.version_info.minor}"
TAG = sys.implementation.cache_tag
CHECKED_HASH = 0b11
SCRIPT = Path(precompile.__file__)


def cache_of(source: str) -> str:
    """Where CPython looks for a source's cache, without any PYTHONPYCACHEPREFIX."""
    folder, _, name = source.rpartition("/")
    return f"{folder}/__pycache__/{name.removesuffix('.py')}.{TAG}.pyc".lstrip("/")


# Imports `pkg.mod` from the unpacked zip in a fresh interpreter that may not write caches (as
# /var/task is read-only) and lists the artifact's sources it had to compile.
IMPORT_FROM = """
import sys
root = sys.argv[1]
compiled = []
sys.addaudithook(
    lambda event, args: compiled.append(str(args[1]))
    if event == "compile" and str(args[1]).startswith(root) else None
)
sys.path.insert(0, root)
import pkg.mod
print(pkg.mod.ANSWER)
print("\\n".join(compiled))
"""


def make_zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name, date_time=(2026, 11, 28, 12, 0, 0))
            info.external_attr = (0o755 if name.endswith(".sh") else 0o644) << 16
            archive.writestr(info, data)
    return path


def read_zip(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


@pytest.fixture
def lambda_zip(tmp_path: Path) -> Path:
    """A zip as serverless-python-requirements leaves it, with one stale timestamp cache."""
    return make_zip(
        tmp_path / "function.zip",
        {
            "handler.py": b"import pkg.mod\n",
            "pkg/__init__.py": b"",
            "pkg/mod.py": b"ANSWER = 42\n",
            f"pkg/__pycache__/mod.{TAG}.pyc": b"stale timestamp-based cache",
            "pkg/data.json": b"{}",
            "bin/run.sh": b"#!/bin/sh\n",
        },
    )


def test_every_module_gets_a_checked_hash_cache_of_its_source(lambda_zip: Path) -> None:
    # When the zip is precompiled
    report = precompile.precompile(lambda_zip)

    # Then every source has a checked-hash cache of exactly its bytes, where Python looks
    entries = read_zip(lambda_zip)
    sources = {name: data for name, data in entries.items() if name.endswith(".py")}
    assert report.compiled == len(sources) == 3
    for name, source in sources.items():
        cache = entries[cache_of(name)]
        assert cache[:4] == importlib.util.MAGIC_NUMBER
        assert int.from_bytes(cache[4:8], "little") == CHECKED_HASH
        assert cache[8:16] == importlib.util.source_hash(source)
    # And the stale cache was replaced, not kept beside the new one
    assert report.replaced == 1
    assert entries[f"pkg/__pycache__/mod.{TAG}.pyc"] != b"stale timestamp-based cache"


def test_other_entries_keep_their_bytes_and_permissions(lambda_zip: Path) -> None:
    before = read_zip(lambda_zip)

    precompile.precompile(lambda_zip)

    after = read_zip(lambda_zip)
    kept = {name: data for name, data in before.items() if not name.endswith(".pyc")}
    assert {name: after[name] for name in kept} == kept
    with zipfile.ZipFile(lambda_zip) as archive:
        assert archive.getinfo("bin/run.sh").external_attr >> 16 == 0o755


def test_tracebacks_name_the_path_lambda_runs_the_code_from(lambda_zip: Path) -> None:
    precompile.precompile(lambda_zip)

    cache = read_zip(lambda_zip)[f"pkg/__pycache__/mod.{TAG}.pyc"]
    assert b"/var/task/pkg/mod.py" in cache


def unpacked(zip_path: Path, task: Path) -> Path:
    """The zip unpacked, as Lambda unpacks it into a read-only /var/task."""
    with zipfile.ZipFile(zip_path) as archive:
        archive.extractall(task)
    return task


def import_from(task: Path) -> tuple[str, list[str]]:
    """A fresh interpreter that may not write caches imports ``pkg.mod`` from ``task``: its
    ANSWER, and the sources of the artifact it had to compile."""
    result = subprocess.run(
        [sys.executable, "-I", "-B", "-c", IMPORT_FROM, str(task)],
        capture_output=True,
        text=True,
        check=True,
    )
    answer, *compiled = result.stdout.splitlines()
    return answer, [name for name in compiled if name]


def test_a_cold_start_imports_the_caches_without_compiling(
    lambda_zip: Path, tmp_path: Path
) -> None:
    # Given the precompiled zip unpacked
    precompile.precompile(lambda_zip)
    task = unpacked(lambda_zip, tmp_path / "task")

    # When a fresh interpreter imports its modules without writing caches
    answer, compiled = import_from(task)

    # Then it runs the code and compiled nothing of the artifact
    assert answer == "42"
    assert compiled == []


def test_an_edited_source_is_compiled_not_served_from_its_old_cache(
    lambda_zip: Path, tmp_path: Path
) -> None:
    # Given a precompiled zip whose module was changed after precompiling
    precompile.precompile(lambda_zip)
    task = unpacked(lambda_zip, tmp_path / "task")
    (task / "pkg" / "mod.py").write_text("ANSWER = 43\n")

    # When it is imported
    answer, compiled = import_from(task)

    # Then the source runs: a checked cache never stands in for a different source
    assert answer == "43"
    assert compiled == [str(task / "pkg" / "mod.py")]


def test_a_source_python_cannot_compile_is_reported_and_left_as_it_is(tmp_path: Path) -> None:
    broken = make_zip(tmp_path / "f.zip", {"ok.py": b"X = 1\n", "old.py": b"print 'py2'\n"})

    report = precompile.precompile(broken)

    assert report.failed == ["old.py"]
    entries = read_zip(broken)
    assert entries["old.py"] == b"print 'py2'\n"
    assert cache_of("old.py") not in entries
    assert cache_of("ok.py") in entries


def test_precompiling_twice_gives_the_same_zip_content(lambda_zip: Path) -> None:
    precompile.precompile(lambda_zip)
    once = read_zip(lambda_zip)

    precompile.precompile(lambda_zip)

    assert read_zip(lambda_zip) == once


def test_caches_must_come_from_the_runtimes_python_version(
    lambda_zip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # When asked to precompile for a runtime other than this interpreter's version
    code = precompile.main(["--runtime", "python3.9", str(lambda_zip)])

    # Then it refuses, saying which Python is needed, and leaves the zip alone
    assert code == 2
    assert "python3.9 caches must be compiled by python3.9" in capsys.readouterr().err
    assert f"pkg/__pycache__/mod.{TAG}.pyc" in read_zip(lambda_zip)
    assert read_zip(lambda_zip)[f"pkg/__pycache__/mod.{TAG}.pyc"] == b"stale timestamp-based cache"


def test_main_precompiles_for_this_runtime(
    lambda_zip: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert precompile.main(["--runtime", RUNTIME, str(lambda_zip)]) == 0

    assert "function.zip: 3 modules compiled (1 old caches dropped)" in capsys.readouterr().out


def test_a_module_shipped_as_bytecode_alone_is_kept(tmp_path: Path) -> None:
    # Given a zip holding a compiled module with no source beside it
    shipped = make_zip(tmp_path / "f.zip", {"ok.py": b"X = 1\n", "legacy.pyc": b"bytecode"})

    precompile.precompile(shipped)

    assert read_zip(shipped)["legacy.pyc"] == b"bytecode"


def test_the_callers_python_settings_change_nothing_in_the_zip(tmp_path: Path) -> None:
    # Given a shell that moves caches elsewhere and optimizes (which Lambda never does)
    env = {"PYTHONPYCACHEPREFIX": str(tmp_path / "elsewhere"), "PYTHONOPTIMIZE": "2"}
    zip_path = make_zip(tmp_path / "f.zip", {"pkg/mod.py": b'"""Kept docstring."""\n'})

    # When the zip is precompiled from that shell, even without -I
    subprocess.run(
        [sys.executable, str(SCRIPT), "--runtime", RUNTIME, str(zip_path)],
        env=env,
        capture_output=True,
        check=True,
    )

    # Then the cache is where Lambda's Python reads it, and unoptimized (-OO drops docstrings)
    caches = {name: data for name, data in read_zip(zip_path).items() if name.endswith(".pyc")}
    assert list(caches) == [f"pkg/__pycache__/mod.{TAG}.pyc"]
    assert b"Kept docstring." in caches[f"pkg/__pycache__/mod.{TAG}.pyc"]
