"""A share of one CPU for a process, the way Lambda gives a function CPU by its memory.

Lambda gives a function CPU in proportion to its memory (1,769 MB: one vCPU; 256 MB:
0.145), enforced like a CFS quota: in each period the function may run for its share of it,
then waits for the next period. ``cpu_share`` puts a running process under the same rule:

1. cgroup v2 ``cpu.max`` (quota and period), where the unified hierarchy offers the cpu
   controller;
2. else cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` — the same kernel mechanism;
3. else a duty cycle of SIGCONT / SIGSTOP from this process (runs for the share of each
   period, stopped for the rest), which is stricter than a quota: time the process spends
   waiting for the network during its slot is lost, not saved for later.

The cgroup is made for the one process and removed afterwards; nothing else is moved.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

PERIOD_US = 100_000  # the kernel's default CFS period
MOUNTS = Path("/proc/self/mounts")


def _mount_points(kind: str, option: str | None = None) -> list[Path]:
    points = []
    for line in MOUNTS.read_text().splitlines():
        fields = line.split()
        wanted = option is None or (len(fields) > 3 and option in fields[3].split(","))
        if len(fields) > 3 and fields[2] == kind and wanted:
            points.append(Path(fields[1]))
    return points


def _v2_group(name: str, quota_us: int) -> Path | None:
    for root in _mount_points("cgroup2"):
        try:
            if "cpu" not in (root / "cgroup.controllers").read_text().split():
                continue
            if "cpu" not in (root / "cgroup.subtree_control").read_text().split():
                (root / "cgroup.subtree_control").write_text("+cpu")
            group = root / name
            group.mkdir()
            (group / "cpu.max").write_text(f"{quota_us} {PERIOD_US}")
        except OSError:
            continue
        return group
    return None


def _v1_group(name: str, quota_us: int) -> Path | None:
    for root in _mount_points("cgroup", "cpu"):
        group = root / name
        try:
            group.mkdir()
            (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
            (group / "cpu.cfs_quota_us").write_text(str(quota_us))
        except OSError:
            with suppress(OSError):
                group.rmdir()
            continue
        return group
    return None


@contextmanager
def cpu_share(pid: int, share: float) -> Iterator[str]:
    """Hold process ``pid`` to ``share`` of one CPU until the block ends; yields the method
    (``cgroup v2 cpu.max``, ``cgroup v1 cfs quota`` or ``SIGSTOP/SIGCONT duty cycle``) and
    the period."""
    quota_us = max(1_000, round(share * PERIOD_US))
    name = f"wspush-bench-{os.getpid()}-{pid}"
    for method, make in (("cgroup v2 cpu.max", _v2_group), ("cgroup v1 cfs quota", _v1_group)):
        group = make(name, quota_us)
        if group is None:
            continue
        try:
            (group / "cgroup.procs").write_text(str(pid))
        except OSError:
            group.rmdir()
            continue
        try:
            yield f"{method}, {PERIOD_US // 1000} ms period"
        finally:
            _remove(group, pid)
        return
    with _duty_cycle(pid, quota_us / 1e6, PERIOD_US / 1e6):
        yield f"SIGSTOP/SIGCONT duty cycle, {PERIOD_US // 1000} ms period"


def _remove(group: Path, pid: int) -> None:
    """Give the process (if it still runs) back to the parent group, then remove ours."""
    with suppress(OSError):
        if str(pid) in (group / "cgroup.procs").read_text().split():
            (group.parent / "cgroup.procs").write_text(str(pid))
    with suppress(OSError):
        group.rmdir()


@contextmanager
def _duty_cycle(pid: int, running_s: float, period_s: float) -> Iterator[None]:
    stop = threading.Event()

    def cycle() -> None:
        with suppress(ProcessLookupError):  # the process ended
            while not stop.is_set():
                os.kill(pid, signal.SIGCONT)
                if stop.wait(running_s):
                    break
                os.kill(pid, signal.SIGSTOP)
                stop.wait(period_s - running_s)
            os.kill(pid, signal.SIGCONT)

    thread = threading.Thread(target=cycle, name="duty-cycle", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
