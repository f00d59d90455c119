"""`make mutation`: how many wrong lines in the core modules the fast suites notice.

mutmut (configured in ``[tool.mutmut]`` of pyproject.toml, which alone lists the core modules)
changes one thing at a time in a module (an operator, a constant, a returned value...) and
runs the tests that reach the changed function: a mutant the tests fail on is killed, one
they pass on survived. This script runs it over the core modules, or those named, then
writes ``bench/mutation.json`` (per file: mutants, killed, survived, timeouts, not run,
score, the commit and how long the run took) and prints every surviving mutant.

    .venv/bin/python -m bench.mutation [--modules gateway delivery] [--survivors | --report-only]
        [--max-children 2] [--no-diffs] [--out bench/mutation.json]

``--survivors`` runs again only the mutants that survived or never ran the last
time: after tests were added for them, it updates the figures in minutes instead of hours.

A timeout (a mutant that made a test hang) counts as killed: the suite noticed it. A mutant
no test reaches counts as survived, and so does an equivalent one (README, "Testing").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import tomllib
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "mutation.json"
MUTANTS = ROOT / "mutants"

# mutmut's exit codes per mutant, as its own report reads them.
KILLED = frozenset((1, 3, 37))  # a test failed (or pytest broke; 37: the type check did)
SURVIVED = frozenset((0,))
TIMEOUT = frozenset((36, 24, -24, 152, 255))
NO_TESTS = frozenset((5, 33))


def core_files() -> list[str]:
    """The core modules' paths, from pyproject.toml's ``[tool.mutmut] only_mutate``."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    files: list[str] = config["tool"]["mutmut"]["only_mutate"]
    return files


def module_of(path: str) -> str:
    """``src/wspush/store/rows.py`` -> ``wspush.store.rows`` (mutmut's mutant name prefix)."""
    parts = Path(path).with_suffix("").parts
    return ".".join(parts[1:] if parts[0] == "src" else parts)


def select(files: list[str], names: list[str] | None) -> list[str]:
    """The files of the modules asked for: ``gateway``, ``wspush.fanout.gateway`` or a path."""
    if not names:
        return files
    chosen: list[str] = []
    for name in names:
        matches = [f for f in files if name in (f, module_of(f), module_of(f).rpartition(".")[2])]
        if not matches:
            known = ", ".join(module_of(f).rpartition(".")[2] for f in files)
            raise SystemExit(f"{name!r} is not a core module ({known})")
        chosen.extend(m for m in matches if m not in chosen)
    return chosen


def commit() -> str:
    """HEAD, marked ``-dirty`` when src/ or tests/ differ from it."""
    head = _git("rev-parse", "HEAD") or "unknown"
    dirty = _git("status", "--porcelain", "--", "src", "tests")
    return f"{head}-dirty" if dirty else head


def _git(*args: str) -> str:
    result = subprocess.run(  # noqa: S603 - git, with our own arguments
        ["git", *args],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() if result.returncode == 0 else ""


def run_mutmut(files: list[str], max_children: int | None, *, again: bool) -> float:
    """Run mutmut over the mutants of ``files`` (each run again), or ``again``: only those
    that survived their last run or were never run (after tests were added; a timeout is
    killed already, and mutmut itself runs again the mutants of a changed function); the
    wall time in seconds."""
    command = [sys.executable, "-m", "mutmut", "run"]
    if max_children:
        command += ["--max-children", str(max_children)]
    if again:
        names = [
            name
            for path in files
            for name, code in (results_of(path) or {}).items()
            if code is None or code in SURVIVED or code in NO_TESTS
        ]
        if not names:
            return 0.0
        command += names
    else:
        command += [f"{module_of(f)}.*" for f in files]
    shown = command if len(command) < 12 else [*command[:8], f"... ({len(command) - 4} mutants)"]
    print("$", " ".join(shown), flush=True)
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, check=False)  # noqa: S603 - this interpreter
    if result.returncode != 0:
        raise SystemExit(f"mutmut failed ({result.returncode})")
    return time.monotonic() - started


def results_of(path: str) -> dict[str, int | None] | None:
    """mutmut's exit code per mutant of one file, or None if it never ran there."""
    meta = MUTANTS / f"{path}.meta"
    if not meta.exists():
        return None
    codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
    return codes


def figures(codes: dict[str, int | None]) -> dict[str, Any]:
    counts = Counter(_status(code) for code in codes.values())
    killed = counts["killed"]
    timeouts = counts["timeout"]
    not_run = counts["not run"] + counts["other"]
    run = len(codes) - not_run
    return {
        "mutants": len(codes),
        "killed": killed,
        "survived": counts["survived"],
        "timeouts": timeouts,
        "no_tests": counts["no tests"],
        "not_run": not_run,
        # Over the mutants run: a file is measured only when none is left (``complete``).
        "score": round(100 * (killed + timeouts) / run, 1) if run else None,
        "complete": not_run == 0,
    }


def _status(code: int | None) -> str:
    if code is None:
        return "not run"
    for status, codes in (
        ("killed", KILLED),
        ("survived", SURVIVED),
        ("timeout", TIMEOUT),
        ("no tests", NO_TESTS),
    ):
        if code in codes:
            return status
    return "other"


def survivors(codes: dict[str, int | None]) -> list[str]:
    return sorted(name for name, code in codes.items() if code in SURVIVED or code in NO_TESTS)


def diff_of(mutant: str) -> str:
    """The changed lines of one mutant, as ``mutmut show`` prints them."""
    result = subprocess.run(  # noqa: S603 - this interpreter, a mutant's name
        [sys.executable, "-m", "mutmut", "show", mutant],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    lines = result.stdout.splitlines()
    changed = [line for line in lines if line[:1] in "+-" and not line.startswith(("+++", "---"))]
    return "\n".join(f"      {line.strip()}" for line in changed)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", nargs="*", help="core modules to run (default: all)")
    parser.add_argument(
        "--report-only", action="store_true", help="re-read mutmut's last results, run nothing"
    )
    parser.add_argument(
        "--survivors",
        action="store_true",
        help="run again only the mutants that survived or never ran",
    )
    parser.add_argument("--max-children", type=int, help="mutants run at once (default: CPUs)")
    parser.add_argument("--no-diffs", action="store_true", help="name survivors without diffs")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)

    files = select(core_files(), args.modules)
    previous: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    entries: dict[str, Any] = dict(previous.get("files", {}))
    run: dict[str, Any] = {}
    if not args.report_only:
        seconds = run_mutmut(files, args.max_children, again=args.survivors)
        run = {
            "commit": commit(),
            "seconds": round(seconds),
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "modules": [module_of(f) for f in files],
            "survivors_only": args.survivors,
            "max_children": args.max_children or os.cpu_count(),
        }

    print(f"\n{'file':<28} {'mutants':>7} {'killed':>6} {'surv.':>5} {'t/o':>4} {'score':>6}")
    for path in core_files():
        codes = results_of(path)
        if codes is None or all(code is None for code in codes.values()):
            continue  # never run
        entry = {**entries.get(path, {}), **figures(codes)}
        if path in files and run:
            # The wall time is the whole run's, which may have measured other modules too.
            key = "survivors_run_seconds" if args.survivors else "run_seconds"
            entry.update({"commit": run["commit"], "at": run["at"], key: run["seconds"]})
            entry["run_modules" if not args.survivors else "survivors_run_modules"] = run["modules"]
        entry.setdefault("commit", commit())
        entries[path] = entry
        print(
            f"{path:<28} {entry['mutants']:>7} {entry['killed']:>6} {entry['survived']:>5}"
            f" {entry['timeouts']:>4} {entry['score']!s:>5}%"
            + ("" if entry["complete"] else f"  ({entry['not_run']} not run yet)")
        )
    total = Counter[str]()
    for path in core_files():
        if entries.get(path, {}).get("complete"):
            total.update(
                {k: v for k, v in entries[path].items() if type(v) is int}  # not bools
            )
    for timing in ("run_seconds", "survivors_run_seconds"):
        total.pop(timing, None)
    mutants = total["mutants"]
    summary = {
        **{k: total[k] for k in ("mutants", "killed", "survived", "timeouts", "no_tests")},
        "score": round(100 * (total["killed"] + total["timeouts"]) / mutants, 1)
        if mutants
        else None,
        "files_measured": len([p for p in core_files() if entries.get(p, {}).get("complete")]),
        "files_core": len(core_files()),
    }
    print(
        f"{'all complete files':<28} {mutants:>7} {total['killed']:>6} {total['survived']:>5}"
        f" {total['timeouts']:>4} {summary['score']!s:>5}%"
    )
    # Over every mutant run so far, complete files or not. mutmut runs the mutants whose
    # tests are quickest first, so a partial run is not a random sample of the rest.
    ran = Counter[str]()
    for path in core_files():
        entry = entries.get(path, {})
        ran.update({k: entry.get(k, 0) for k in ("mutants", "killed", "survived", "timeouts")})
        ran["not_run"] += entry.get("not_run", 0) if path in entries else 0
    run_count = ran["mutants"] - ran["not_run"]
    so_far = {
        "core_mutants": ran["mutants"],
        "run": run_count,
        "killed": ran["killed"],
        "survived": ran["survived"],
        "timeouts": ran["timeouts"],
        "score": round(100 * (ran["killed"] + ran["timeouts"]) / run_count, 1)
        if run_count
        else None,
    }
    print(
        f"{'every mutant run so far':<28} {run_count:>7} {ran['killed']:>6} {ran['survived']:>5}"
        f" {ran['timeouts']:>4} {so_far['score']!s:>5}%  (of {ran['mutants']} in files run)"
    )
    document = {
        "tool": "mutmut 3.8.1 over tests/unit and tests/integration ([tool.mutmut])",
        "score": "(killed + timeouts) / mutants; survived includes equivalent mutants",
        "total": summary,
        "run_so_far": so_far,
        "last_run": run or previous.get("last_run"),
        "files": {p: entries[p] for p in core_files() if p in entries},
    }
    args.out.write_text(json.dumps(document, indent=2) + "\n")
    print(f"wrote {args.out}")

    for path in files:
        codes = results_of(path) or {}
        left = survivors(codes)
        if not left:
            continue
        print(f"\nsurviving mutants of {path} ({len(left)}):")
        for name in left:
            label = "no test reaches it" if codes[name] in NO_TESTS else "survived"
            print(f"  {name} ({label})")
            if not args.no_diffs:
                print(diff_of(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
