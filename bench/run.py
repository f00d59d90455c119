"""`make bench`: fan-out throughput and cost, cold imports, and the deployment zip's size.

For each N (1,000 and 10,000 recipients by default), in fresh processes pinned to one core,
against the stub Management API (its own process, on the other core, 20 ms per post), over
plain HTTP and over TLS (as API Gateway's endpoint is: a certificate authority made for the
run, which both clients are given as ``AWS_CA_BUNDLE``):

- ``wspush.fanout.delivery.deliver`` as the sender Lambda runs it, whatever it is at the time;
- the seed's way, one boto3 client posting sequentially, measured on at most
  ``--sequential-max`` recipients (at ~45/s, 10,000 would take 4 minutes) and extrapolated.

Then a cold container at the smallest memory (issue 9): a fresh process held to 0.145 of one
CPU (256 MB) posts its first fan-out over TLS to 2,000 connections with an empty pool, once
with every handshake started at once (as before the pool bounded them) and once as configured.

Then a fault check (410s and 429s injected), a big audience (one broadcast to 20,000
connections in moto, split into scan segments and delivered by the sender handler, each
connection exactly once), each handler's import time against
``import boto3``, and the zip. Prints a table, writes ``bench/results.json``, and exits 1
only if a delivery was wrong (a post missing, doubled or misreported) or a step failed:
the targets of issue 5 are shown next to the figures, never enforced.

    .venv/bin/python -m bench.run [--sizes 1000,10000] [--sequential-max 1000]
        [--latency-ms 20] [--repeats 11] [--zip PATH | --no-zip] [--no-faults]
        [--big-audience 20000 | --no-big-audience]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from bench import cold_start, package_size
from bench.cpu_limit import cpu_share
from bench.fanout import BIG_AUDIENCE_N, READY_FILE_ENV
from bench.machine import (
    FULL_VCPU_MEMORY_MB,
    REPO,
    SENDER_MEMORY_MB,
    STAGE,
    cpu_plan,
    describe,
    lambda_env,
    pinned,
)
from bench.stub_gateway import DEFAULT_LATENCY_MS, StubClient, running_stub
from local.tls import make_authority

RESULTS = REPO / "bench" / "results.json"
HEADLINE_N = 10_000
FAULT_CHECK_N = 1_000
RECOVERY_MISSED = 300  # issue 12: recovering 300 missed messages
WORKER_TIMEOUT_SECONDS = 1_800
READY_TIMEOUT_SECONDS = 120
SCHEMES = ("http", "https")
# Issue 9: a cold container's first fan-out to a sender-sized audience, at the smallest memory
# a posting function has (the send Lambda's 256 MB), and at Lambda's smallest (128 MB), which
# is also 256 MB on a core half as fast as this one (these machines differ about 2x).
COLD_POOL_MEMORIES_MB = (256, 128)
COLD_POOL_N = 2_000
# Issue 5, section 2 (one core, 20 ms stub latency, N = 10,000). Shown, not enforced.
TARGETS = {
    "deliveries_per_s": (">=", 3_000),
    "cpu_ms_per_delivery": ("<=", 0.3),
    "ratio_vs_sequential": (">=", 70),
    "max_import_ratio_vs_boto3": ("<=", 1.3),
}


class Bench:
    """One run: the measurements, and every problem found on the way."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stub_cpu, self.worker_cpu = cpu_plan()
        self.problems: list[str] = []

    def fanout(
        self,
        mode: str,
        n: int,
        stub: StubClient,
        workdir: Path,
        *,
        scheme: str = "http",
        env: dict[str, str] | None = None,
        share: float | None = None,
        tag: str = "",
    ) -> dict[str, Any] | None:
        """One measurement in a fresh process posting over ``scheme``; with ``share``, the
        process is held to that share of one CPU once it is ready (imports done)."""
        name = f"{mode}-{scheme}-{n}{tag}"
        out, log, ready = (workdir / f"{name}.{ext}" for ext in ("json", "log", "ready"))
        url = stub.tls_url if scheme == "https" else stub.base_url
        child_env = lambda_env(f"{url}/{STAGE}")
        if scheme == "https":
            child_env["AWS_CA_BUNDLE"] = str(workdir / "tls" / "ca.pem")
        child_env.update(env or {})
        child_env[READY_FILE_ENV] = str(ready)
        command = [
            *(sys.executable, "-m", "bench.fanout", mode, "--n", str(n)),
            *("--stub", stub.base_url, "--out", str(out)),
        ]
        with log.open("w") as output:
            process = subprocess.Popen(  # noqa: S603 - this interpreter, our module
                command,
                cwd=REPO,
                env=child_env,
                stdin=subprocess.PIPE,
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
                preexec_fn=pinned(self.worker_cpu),
            )
            try:
                returncode = self._wait(process, ready, share)
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
        if returncode != 0:
            tail = log.read_text()[-3000:]
            self.problems.append(f"{mode} {scheme} N={n}: the measuring process failed:\n{tail}")
            return None
        measurement: dict[str, Any] = json.loads(out.read_text())
        self.problems.extend(measurement["problems"])
        return measurement

    @staticmethod
    def _wait(process: subprocess.Popen[str], ready: Path, share: float | None) -> int:
        if share is None:
            assert process.stdin is not None
            process.stdin.close()
            return process.wait(timeout=WORKER_TIMEOUT_SECONDS)
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                return process.poll() or 1
            time.sleep(0.01)
        with cpu_share(process.pid, share) as how:
            process.communicate("go\n", timeout=WORKER_TIMEOUT_SECONDS)
        ready.write_text(how)
        return process.returncode

    def step(self, name: str, work: Callable[[], Any]) -> Any:
        """Run one step; a failure is a problem of the run, not the end of it."""
        started = time.monotonic()
        print(f"bench: {name}...", file=sys.stderr, flush=True)
        try:
            return work()
        except Exception as exc:  # reported, and the run exits 1
            self.problems.append(f"{name}: {exc}")
            return None
        finally:
            print(f"bench: {name}: {time.monotonic() - started:.1f} s", file=sys.stderr)


def run(args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    bench = Bench(args)
    started = time.monotonic()
    sizes = args.sizes
    rows: list[dict[str, Any]] = []
    faults = big_audience = cold_pool = recovery = None
    with tempfile.TemporaryDirectory(prefix="wspush-bench-") as tmp:
        workdir = Path(tmp)
        zip_facts = None
        if not args.no_zip:
            zip_facts = bench.step(
                "deployment zip", lambda: package_size.deployment_zip(workdir, args.zip)
            )
        authority = make_authority(workdir / "tls")
        stub_process = running_stub(
            args.latency_ms, preexec_fn=pinned(bench.stub_cpu), tls=authority
        )
        with stub_process as stub:
            samples: dict[tuple[str, int], Any] = {}
            for n in sizes:
                for scheme in SCHEMES:
                    wspush = bench.step(
                        f"wspush deliver {scheme} N={n}",
                        partial(bench.fanout, "wspush", n, stub, workdir, scheme=scheme),
                    )
                    rows.append(
                        {"path": "wspush", "scheme": scheme, "n": n, "measured_n": n,
                         "result": wspush}
                    )  # fmt: skip
                    if scheme == "http" and not args.no_channel:
                        channel = bench.step(
                            f"channel publish {scheme} N={n}",
                            partial(bench.fanout, "channel", n, stub, workdir, scheme=scheme),
                        )
                        rows.append(
                            {"path": "channel", "scheme": scheme, "n": n, "measured_n": n,
                             "result": channel}
                        )  # fmt: skip
                    sample = min(n, args.sequential_max)
                    if (scheme, sample) not in samples:  # one sample serves every N above it
                        samples[scheme, sample] = bench.step(
                            f"sequential boto3 {scheme} N={sample}",
                            partial(bench.fanout, "sequential", sample, stub, workdir,
                                    scheme=scheme),
                        )  # fmt: skip
                    rows.append(
                        {"path": "sequential", "scheme": scheme, "n": n, "measured_n": sample,
                         "result": samples[scheme, sample]}
                    )  # fmt: skip
            if not args.no_faults:
                faults = bench.step(
                    f"fault check N={FAULT_CHECK_N}",
                    lambda: bench.fanout("faults", FAULT_CHECK_N, stub, workdir),
                )
            if not args.no_recovery:
                recovery = bench.step(
                    f"recovery of {args.recovery} missed",
                    lambda: bench.fanout("recovery", args.recovery, stub, workdir),
                )
            if not args.no_cold_pool:
                cold_pool = bench.step(
                    f"cold pool N={args.cold_pool}",
                    lambda: _cold_pool(bench, stub, workdir, args.cold_pool),
                )
            if not args.no_big_audience:
                big_audience = bench.step(
                    f"big audience N={args.big_audience}",
                    partial(bench.fanout, "big-audience", args.big_audience, stub, workdir),
                )

        def imports_work() -> dict[str, Any]:
            settings = [cold_start.venv_setting(workdir)]
            if zip_facts is not None:
                settings.append(cold_start.zip_setting(zip_facts.path, workdir / "unpacked"))
                settings.append(
                    cold_start.zip_setting(zip_facts.path, workdir / "no-pyc", without_caches=True)
                )
            return cold_start.measure(settings, args.repeats, pinned(bench.worker_cpu))

        imports = bench.step(f"cold imports x{args.repeats}", imports_work)
        zip_info = zip_facts.as_dict() if zip_facts is not None else None
    if zip_info and zip_info["compiled_files"] < zip_info["source_files"]:
        # The build precompiles every module: without that, the zip's import figures are not
        # what a deployed function gets.
        bench.problems.append(
            f"deployment zip: {zip_info['compiled_files']} caches for"
            f" {zip_info['source_files']} modules (plugins/precompile.js did not run?)"
        )
    results = assemble(args, bench, rows, faults, imports, zip_info)
    results["big_audience"] = _big_audience_summary(big_audience)
    results["cold_pool"] = cold_pool
    results["recovery"] = _recovery_summary(recovery)
    for run in (cold_pool or {}).get("runs", []):
        suffix = "_all_at_once" if run["all_at_once"] else ""
        for figure in ("connect_timeouts", "pool_timeouts"):
            results[f"cold_pool_{run['memory_mb']}mb_{figure}{suffix}"] = run[figure]
    results["bench_seconds"] = time.monotonic() - started
    return results, bench.problems


def _row(entry: dict[str, Any]) -> dict[str, Any] | None:
    """A measurement as a table row; a sample stands for all N (per-delivery costs hold)."""
    result = entry["result"]
    if result is None:
        return None
    extrapolated = entry["measured_n"] < entry["n"]
    rate = result["deliveries_per_s"]
    stub = result["stub"]
    return {
        "path": entry["path"],
        "scheme": entry["scheme"],
        "n": entry["n"],
        "measured_n": entry["measured_n"],
        "extrapolated": extrapolated,
        "deliveries_per_s": rate,
        "cpu_ms_per_delivery": result["cpu_ms_per_delivery"],
        "user_s": result["user_s"],
        "sys_s": result["sys_s"],
        "peak_rss_mb": result["peak_rss_mb"],
        "rss_before_mb": result["rss_before_mb"],
        "wall_s": entry["n"] / rate if extrapolated and rate else result["wall_s"],
        "measured_wall_s": result["wall_s"],
        "client_setup_ms": result["setup_ms"],
        "outcomes": result["outcomes"],
        "settings": result["settings"],
        "stub": {
            "posts": stub["posts"],
            "cpu_s": stub["cpu_s"],
            "cpu_share_of_one_core": stub["cpu_s"] / stub["wall_s"] if stub["wall_s"] else 0.0,
            "cpu_us_per_post": 1e6 * stub["cpu_s"] / stub["posts"] if stub["posts"] else None,
            "max_in_flight": stub["max_in_flight"],
            "connections_opened": stub["connections_opened"],
        },
    }


def _find(
    rows: list[dict[str, Any]], path: str, n: int, scheme: str = "http"
) -> dict[str, Any] | None:
    return next(
        (r for r in rows if r["path"] == path and r["n"] == n and r["scheme"] == scheme), None
    )


def _cold_pool(bench: Bench, stub: StubClient, workdir: Path, n: int) -> dict[str, Any] | None:
    """A cold container posts its first fan-out over TLS at a share of one CPU: once with
    every handshake started at once (the pool as it was), once as configured."""
    concurrency = os.environ.get("WSPUSH_DELIVERY_CONCURRENCY", "128")
    configured = os.environ.get("WSPUSH_MAX_HANDSHAKES", "")
    runs = []
    limited_by = ""
    for memory_mb in COLD_POOL_MEMORIES_MB:
        share = memory_mb / FULL_VCPU_MEMORY_MB
        for all_at_once in (True, False):
            handshakes = concurrency if all_at_once else configured
            tag = f"-{memory_mb}mb" + ("-all-at-once" if all_at_once else "")
            result = bench.fanout(
                "cold-pool",
                n,
                stub,
                workdir,
                scheme="https",
                env={"WSPUSH_MAX_HANDSHAKES": handshakes} if handshakes else {},
                share=share,
                tag=tag,
            )
            if result is None:
                return None
            limited_by = (workdir / f"cold-pool-https-{n}{tag}.ready").read_text()
            details = result["details"]
            runs.append(
                {
                    "memory_mb": memory_mb,
                    "cpu_share": share,
                    "all_at_once": all_at_once,
                    "max_handshakes": result["settings"]["max_handshakes"],
                    "delivery_concurrency": result["settings"]["delivery_concurrency"],
                    "connect_timeouts": details["connect_timeouts"],
                    "pool_timeouts": details["pool_timeouts"],
                    "attempts": details["attempts"],
                    "delivered": result["outcomes"]["delivered"],
                    "failed": result["outcomes"]["failed"],
                    "failed_reasons": details["failed_reasons"],
                    "slowest_handshake_s": details["slowest_handshake_s"],
                    "longest_wait_s": details["longest_wait_s"],
                    "connect_timeout_s": details["connect_timeout_s"],
                    "wall_s": result["wall_s"],
                    "cpu_s": result["cpu_s"],
                    "cpu_share_measured": details["cpu_share"],
                    "deliveries_per_s": result["deliveries_per_s"],
                    "connections_opened": details["connections_opened"],
                    "peak_handshakes": details["peak_handshakes"],
                }
            )
    return {"n": n, "scheme": "https", "limited_by": limited_by, "runs": runs}


def assemble(
    args: argparse.Namespace,
    bench: Bench,
    entries: list[dict[str, Any]],
    faults: dict[str, Any] | None,
    imports: dict[str, Any] | None,
    zip_info: dict[str, Any] | None,
) -> dict[str, Any]:
    rows = [row for row in map(_row, entries) if row is not None]
    ratios: dict[str, dict[str, float]] = {scheme: {} for scheme in SCHEMES}
    for scheme in SCHEMES:
        for n in args.sizes:
            ours, seed = _find(rows, "wspush", n, scheme), _find(rows, "sequential", n, scheme)
            if ours and seed and seed["deliveries_per_s"]:
                ratios[scheme][str(n)] = ours["deliveries_per_s"] / seed["deliveries_per_s"]
    headline_n = HEADLINE_N if HEADLINE_N in args.sizes else max(args.sizes)
    ours = _find(rows, "wspush", headline_n) or {}
    seed = _find(rows, "sequential", headline_n) or {}
    ours_tls = _find(rows, "wspush", headline_n, "https") or {}
    seed_tls = _find(rows, "sequential", headline_n, "https") or {}
    concurrency = (ours.get("settings") or {}).get("delivery_concurrency")
    cpu_ms = ours.get("cpu_ms_per_delivery")
    venv_imports = (imports or {}).get("venv", {})
    zip_imports = (imports or {}).get("zip", {})
    no_pyc_imports = (imports or {}).get("no-pyc", {})
    # The headline is the zip as Lambda imports it; the venv (with dev-only packages such as
    # `cryptography`, which PyJWT loads when present) only when no zip was measured.
    headline_imports = zip_imports or venv_imports
    library_ratios = [e["ratio_vs_boto3"] for e in headline_imports.get("libraries", {}).values()]
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "headline_n": headline_n,
        "deliveries_per_s": ours.get("deliveries_per_s"),
        "cpu_ms_per_delivery": cpu_ms,
        "peak_rss_mb": ours.get("peak_rss_mb"),
        "sequential_deliveries_per_s": seed.get("deliveries_per_s"),
        "ratio_vs_sequential": ratios["http"].get(str(headline_n)),
        # The same over TLS, as API Gateway's endpoint is served (both clients trusting the
        # run's own certificate authority through AWS_CA_BUNDLE).
        "deliveries_per_s_tls": ours_tls.get("deliveries_per_s"),
        "cpu_ms_per_delivery_tls": ours_tls.get("cpu_ms_per_delivery"),
        "peak_rss_mb_tls": ours_tls.get("peak_rss_mb"),
        "sequential_deliveries_per_s_tls": seed_tls.get("deliveries_per_s"),
        "sequential_cpu_ms_per_delivery_tls": seed_tls.get("cpu_ms_per_delivery"),
        "ratio_vs_sequential_tls": ratios["https"].get(str(headline_n)),
        "max_import_ratio_vs_boto3": headline_imports.get("max_ratio_vs_boto3"),
        "max_import_ratio_from": "zip" if zip_imports else "venv",
        "max_import_ratio_vs_boto3_venv": venv_imports.get("max_ratio_vs_boto3"),
        "max_import_ratio_vs_boto3_no_pyc": no_pyc_imports.get("max_ratio_vs_boto3"),
        "max_import_ratio_vs_boto3_zip": zip_imports.get("max_ratio_vs_boto3"),
        # The same for the libraries alone that each handler needs: below this, no handler can go.
        "max_library_import_ratio_vs_boto3": max(library_ratios, default=None),
        "zip_bytes": (zip_info or {}).get("zip_bytes"),
        "targets": {key: {"op": op, "value": value} for key, (op, value) in TARGETS.items()},
        "ceilings": {
            # Posts in flight / latency: what the stub's latency allows at this concurrency.
            "latency_bound_deliveries_per_s": (
                concurrency / (args.latency_ms / 1000) if concurrency else None
            ),
            # The sender's share of a vCPU at its memory size, spent at the measured cost.
            "sender_memory_mb": SENDER_MEMORY_MB,
            "sender_vcpu_share": SENDER_MEMORY_MB / FULL_VCPU_MEMORY_MB,
            "cpu_bound_deliveries_per_s_at_sender_memory": (
                SENDER_MEMORY_MB / FULL_VCPU_MEMORY_MB * 1000 / cpu_ms if cpu_ms else None
            ),
        },
        "ratios_vs_sequential": ratios["http"],
        "ratios_vs_sequential_tls": ratios["https"],
        # Publishing to a channel of N subscribers against the same delivery to N explicit ids:
        # what reading the subscribers adds to each delivery's CPU (issue 11: ~10 % at most).
        "channel_cpu_overhead": _channel_overhead(rows, args.sizes),
        "fanout": rows,
        "fault_check": _fault_summary(faults),
        "imports": imports,
        "zip": zip_info,
        "setup": {
            "stub_latency_ms": args.latency_ms,
            "sizes": args.sizes,
            "sequential_max": args.sequential_max,
            "import_repeats": args.repeats,
            "stub_cpu": bench.stub_cpu,
            "measured_cpu": bench.worker_cpu,
        },
        "machine": describe(),
        "commit": _commit(),
        "ok": not bench.problems,
        "problems": bench.problems,
    }


def _commit() -> str | None:
    """The checked-out commit (read only: the index is never touched)."""
    result = subprocess.run(
        ["git", "rev-parse", "HEAD"],  # noqa: S607
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or None


def _big_audience_summary(measurement: dict[str, Any] | None) -> dict[str, Any] | None:
    """Issue 5, section 3: one broadcast split into shares, each connection reached once."""
    if measurement is None:
        return None
    details = measurement["details"]
    return {
        "connections": details["connections"],
        "segments": details["segments"],
        "connections_per_segment": measurement["settings"]["connections_per_segment"],
        "messages_handled": details["messages_handled"],
        "sender_invocations": details["sender_invocations"],
        "stub_posts": details["stub_posts"],
        "distinct_reached": details["distinct_reached"],
        "duplicates": details["duplicates"],
        "missing": details["missing"],
        "wall_s": details["wall_s"],
        "split_wall_s": details["split_wall_s"],
        "million_split_segments": details["million_split_segments"],
        "million_split_wall_s": details["million_split_wall_s"],
        # The whole worker's CPU, moto's (in this process) included.
        "process_cpu_s": measurement["cpu_s"],
        "ok": not measurement["problems"],
    }


def _big_audience_lines(big: dict[str, Any] | None) -> list[str]:
    if big is None:
        return []
    return [
        f"Big audience: one broadcast to {big['connections']:,} connections in moto, split by"
        " the sender handler, shares delivered 10 records an invocation, one after another",
        f"  {big['segments']} segments of ~{big['connections_per_segment']:,} connections;"
        f" {big['messages_handled']} messages handled in {big['sender_invocations']} sender"
        f" invocations; {big['stub_posts']:,} posts at the stub",
        f"  {big['distinct_reached']:,} connections reached, {big['duplicates']} twice,"
        f" {big['missing']} missed: "
        + ("each exactly once" if big["ok"] else "WRONG (see problems)"),
        f"  wall {big['wall_s']:.2f} s for the whole broadcast (split + every share),"
        f" of which the split {1000 * big['split_wall_s']:.0f} ms",
        f"  the split alone into {big['million_split_segments']} segments (a million connections"
        f" at ~2,000 a segment): {1000 * big['million_split_wall_s']:.0f} ms",
    ]


def _recovery_summary(measurement: dict[str, Any] | None) -> dict[str, Any] | None:
    """Issue 12: a recovery's cost grows with what was missed, not with the history."""
    if measurement is None:
        return None
    short, long = measurement["details"]["runs"]
    return {
        "missed": short["missed"],
        "runs": measurement["details"]["runs"],
        "history_ratio": long["history"] / short["history"],
        "ratios_long_to_short": {
            figure: long[figure] / short[figure] if short[figure] else None
            for figure in ("calls", "items", "bytes", "cpu_s", "wall_s", "read_wall_s")
        },
        "ok": not measurement["problems"],
    }


def _recovery_lines(recovery: dict[str, Any] | None) -> list[str]:
    if recovery is None:
        return []
    lines = [
        f"Recovery: a client recovering {recovery['missed']} missed messages of its user stream"
        " (recovery.recover as the recover route runs it: the head, the span read from moto's"
        " server in its own process, then each frame posted after the one before)",
        "  history  DynamoDB calls  items read  bytes read   our CPU s   wall s  posts"
        "  read alone, wall s",
    ]
    for run in recovery["runs"]:
        lines.append(
            f"  {run['history']:>7,}{run['calls']:>16,}{run['items']:>12,}{run['bytes']:>12,}"
            f"{run['cpu_s']:>12.3f}{run['wall_s']:>9.2f}{run['posts']:>7,}"
            f"{run['read_wall_s']:>20.3f}"
        )
    ratios = recovery["ratios_long_to_short"]
    lines.append(
        f"  {recovery['history_ratio']:.0f}x the history: calls x{ratios['calls']:.2f}, items"
        f" x{ratios['items']:.2f}, bytes x{ratios['bytes']:.2f}, our CPU x{ratios['cpu_s']:.2f},"
        f" wall x{ratios['wall_s']:.2f}, the read alone x{ratios['read_wall_s']:.2f} (moto"
        " scans the whole partition for a Query; DynamoDB reads the key range). The wall time"
        " is the posts': one after the other, each the stub's latency - "
        + ("the reads are the same" if recovery["ok"] else "WRONG (see problems)")
    )
    return lines


def _cold_pool_lines(cold: dict[str, Any] | None) -> list[str]:
    if cold is None:
        return []
    lines = [
        f"Cold pool: a fresh process held to the CPU share of its memory (1,769 MB = one CPU) as"
        f" Lambda holds a function ({cold['limited_by']}), its first fan-out over TLS to"
        f" {cold['n']:,} connections, the pool empty",
        "  memory  handshakes at once     connect   pool  delivered failed opened"
        "  slowest handshake  longest wait   wall s  CPU share",
        "                                 timeouts  timeouts",
    ]
    for run in cold["runs"]:
        label = f"{run['max_handshakes']}" + (" (all at once)" if run["all_at_once"] else "")
        lines.append(
            f"  {run['memory_mb']:>3} MB  {label:<21}{run['connect_timeouts']:>9,}"
            f"{run['pool_timeouts']:>10,}{run['delivered']:>11,}{run['failed']:>7,}"
            f"{run['connections_opened']:>7,}{run['slowest_handshake_s']:>12.2f} s"
            f" ({run['slowest_handshake_s'] / run['connect_timeout_s']:>4.0%})"
            f"{run['longest_wait_s']:>10.2f} s{run['wall_s']:>9.2f}"
            f"{_num(run['cpu_share_measured'], 3):>11}"
        )
    lines.append(
        "  timeouts: attempts that failed so (a recipient has up to 3); slowest handshake: from"
        " its start, as a share of the connect timeout; longest wait: a post's for a connection"
        " given back or a free handshake slot (it gives up only after a whole connect timeout"
        " in which no connection came back or was opened)"
    )
    lines.append(
        "  128 MB is also 256 MB on a core half as fast as this one's (these machines differ ~2x)"
    )
    return lines


def _fault_summary(faults: dict[str, Any] | None) -> dict[str, Any] | None:
    if faults is None:
        return None
    return {
        "n": faults["n"],
        "outcomes": faults["outcomes"],
        "stub_statuses": faults["stub"]["statuses"],
        "wall_s": faults["wall_s"],
        "ok": not faults["problems"],
    }


# --- the table ---------------------------------------------------------------------------


def _met(key: str, value: float | None) -> str:
    op, target = TARGETS[key]
    if value is None:
        return ""
    met = value >= target if op == ">=" else value <= target
    return "met" if met else "not met"


def _num(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _channel_overhead(rows: list[dict[str, Any]], sizes: list[int]) -> dict[str, float]:
    overhead: dict[str, float] = {}
    for n in sizes:
        explicit, channel = _find(rows, "wspush", n, "http"), _find(rows, "channel", n, "http")
        if explicit and channel and explicit["cpu_ms_per_delivery"]:
            ratio = channel["cpu_ms_per_delivery"] / explicit["cpu_ms_per_delivery"]
            overhead[str(n)] = ratio - 1
    return overhead


_LABELS = {
    "wspush": "wspush deliver (sender)",
    "channel": "wspush channel (resolved)",
    "sequential": "sequential boto3 (seed)",
}


def table(results: dict[str, Any]) -> str:
    setup = results["setup"]
    machine = results["machine"]
    rows = results["fanout"]
    settings: dict[str, Any] = next((r["settings"] for r in rows if r["path"] == "wspush"), {})
    out = [
        f"wspush bench · {results['generated_at']} · stub latency {setup['stub_latency_ms']:g} ms"
        f" · delivery concurrency {settings.get('delivery_concurrency', '?')}"
        f" · {settings.get('max_post_attempts', '?')} attempts",
        f"{machine['cpu_model'] or machine['machine']} · {machine['cpus']} CPUs · "
        f"measured process on CPU {setup['measured_cpu']}, stub on CPU {setup['stub_cpu']} · "
        f"Python {machine['python']} · boto3 {machine['packages']['boto3']}",
        "",
        "Fan-out: one message to N recipients"
        "       N  deliveries/s  CPU ms/deliv  peak RSS MB    wall s  stub CPU  in flight"
        "  target (N=10,000)",
    ]
    for row in rows:
        star = "*" if row["extrapolated"] else " "
        label = f"{_LABELS[row['path']]} {row['scheme']}"
        target = ""
        if row["path"] == "wspush" and row["n"] == HEADLINE_N and row["scheme"] == "http":
            target = "≥3,000/s  ≤0.3 ms"
        stub = row["stub"]
        out.append(
            f"  {label:<34}{row['n']:>8,}{_num(row['deliveries_per_s'], 1):>13}{star}"
            f"{_num(row['cpu_ms_per_delivery'], 3):>13}{star}{_num(row['peak_rss_mb'], 1):>12}"
            f"{_num(row['wall_s'], 2):>10}{star}{stub['cpu_share_of_one_core']:>8.0%}"
            f"{stub['max_in_flight']:>11}  {target}"
        )
    for row in rows:
        if row["extrapolated"]:
            out.append(
                f"  * sequential {row['scheme']} for N={row['n']:,}: measured on"
                f" {row['measured_n']:,} recipients (one sample for every N above it),"
                " per-delivery figures extrapolated (wall = N / rate)"
            )
    out.append("  stub CPU: share of one core the stub used while answering (it is not the limit)")
    out.append(
        "  https: TLS to the stub (RSA-2048 chain, as execute-api's), both clients given the"
        " run's CA as AWS_CA_BUNDLE; a warm pool, so handshakes are not in these figures"
    )
    out.append(
        "  channel: the same message published to a channel of N subscribers, their"
        " subscriptions read page by page from the channels table (moto, in its own process)"
    )
    for n, overhead in results.get("channel_cpu_overhead", {}).items():
        target = "  target ≤ ~10 %" if int(n) == HEADLINE_N else ""
        out.append(
            f"  channel resolution on top of explicit ids, N={int(n):,}: {overhead:+.1%} CPU"
            f" per delivery{target}"
        )
    for key, scheme in (("ratios_vs_sequential", "http"), ("ratios_vs_sequential_tls", "https")):
        for n, ratio in results[key].items():
            target = "  target ≥70x" if int(n) == HEADLINE_N and scheme == "http" else ""
            out.append(f"  ratio wspush / sequential {scheme}, N={int(n):,}: {ratio:.1f}x{target}")
    ceilings = results["ceilings"]
    if ceilings["latency_bound_deliveries_per_s"]:
        out.append(
            f"  ceilings: {settings.get('delivery_concurrency')} posts in flight at "
            f"{setup['stub_latency_ms']:g} ms allow "
            f"{ceilings['latency_bound_deliveries_per_s']:,.0f}/s; "
            f"at the sender's {ceilings['sender_memory_mb']} MB "
            f"({ceilings['sender_vcpu_share']:.2f} vCPU) this CPU cost allows "
            f"{_num(ceilings['cpu_bound_deliveries_per_s_at_sender_memory'])}/s"
        )
    faults = results["fault_check"]
    if faults:
        o = faults["outcomes"]
        out.append(
            f"  fault check, N={faults['n']:,} with 410s and 429s injected: {o['delivered']:,}"
            f" delivered, {o['gone']} gone (rows deleted), {o['failed']} failed (429 on every"
            f" attempt), {o['throttled']} 429s in all: "
            + ("as expected" if faults["ok"] else "WRONG (see problems)")
        )
    cold_lines = _cold_pool_lines(results.get("cold_pool"))
    out += ["", *cold_lines] if cold_lines else []
    recovery_lines = _recovery_lines(results.get("recovery"))
    out += ["", *recovery_lines] if recovery_lines else []
    big_lines = _big_audience_lines(results.get("big_audience"))
    out += ["", *big_lines] if big_lines else []
    out += ["", *_import_lines(results.get("imports"), setup["import_repeats"])]
    out += ["", *_summary_lines(results)]
    return "\n".join(out)


def _import_lines(imports: dict[str, Any] | None, repeats: int) -> list[str]:
    if not imports:
        return ["Cold start: not measured"]
    settings = list(imports)
    header = "".join(f"{name + ' ms':>10}{'xboto3':>8}{'libs':>7}" for name in settings)
    title = f"Cold start: import in a fresh interpreter, median of {repeats}"
    lines = [f"{title:<42}{header}  target"]
    first = imports[settings[0]]["modules"]
    for module in first:
        cells = ""
        for name in settings:
            entry = imports[name]["modules"][module]
            libraries = imports[name]["libraries"].get(module)
            libs = f"{libraries['ratio_vs_boto3']:>6.2f}x" if libraries else " " * 7
            cells += f"{entry['median_ms']:>10.0f}{entry['ratio_vs_boto3']:>7.2f}x{libs}"
        label = f"import {module}" if module == cold_start.BASELINE else module
        lines.append(f"  {label:<40}{cells}  {'' if module == cold_start.BASELINE else '≤1.3x'}")
    lines.append(
        "  libs: the libraries alone that the handler's route uses, set up as it sets them up"
        " (bench/cold_start.py, LIBRARIES): no handler can import in less"
    )
    for name in settings:
        lines.append(
            f"  max ({name}): {imports[name]['max_ratio_vs_boto3']:.2f}x"
            f" ({imports[name]['slowest']})"
        )
    if "zip" in imports:
        lines.append(
            "  zip: the deployment zip as Lambda imports it, from the caches it brings"
            " (/var/task is read-only); no-pyc: the same without them"
        )
    return lines


def _summary_lines(results: dict[str, Any]) -> list[str]:
    zip_info = results.get("zip") or {}
    lines = [
        f"results.json (N={results['headline_n']:,})        measured       target",
        _summary("deliveries_per_s", results["deliveries_per_s"], 0, "≥ 3,000"),
        _summary("cpu_ms_per_delivery", results["cpu_ms_per_delivery"], 3, "≤ 0.3"),
        _summary("sequential_deliveries_per_s", results["sequential_deliveries_per_s"], 1, ""),
        _summary("ratio_vs_sequential", results["ratio_vs_sequential"], 1, "≥ 70"),
        _summary("deliveries_per_s_tls", results["deliveries_per_s_tls"], 0, ""),
        _summary("cpu_ms_per_delivery_tls", results["cpu_ms_per_delivery_tls"], 3, ""),
        _summary(
            "sequential_deliveries_per_s_tls", results["sequential_deliveries_per_s_tls"], 1, ""
        ),
        _summary("ratio_vs_sequential_tls", results["ratio_vs_sequential_tls"], 1, ""),
        _summary("max_import_ratio_vs_boto3", results["max_import_ratio_vs_boto3"], 2, "≤ 1.3")
        + f" ({results['max_import_ratio_from']})",
    ]
    for key, value in results.items():
        if key.startswith("cold_pool_") and value is not None:
            lines.append(_summary(key, value, 0, ""))
    for key in (
        "max_import_ratio_vs_boto3_venv",
        "max_import_ratio_vs_boto3_no_pyc",
        "max_library_import_ratio_vs_boto3",
    ):
        if results.get(key) is not None:
            lines.append(_summary(key, results[key], 2, ""))
    zip_note = ""
    if zip_info:
        how = (
            f"built by sls package --stage {STAGE} in {zip_info['build_s']:.0f} s"
            if zip_info["source"] == "built"
            else zip_info["source"]
        )
        unpacked_mb = zip_info["uncompressed_bytes"] / 1e6
        zip_note = f"{zip_info['files']} files, {unpacked_mb:.1f} MB unpacked, {how}"
    lines.append(f"  {'zip_bytes':<30}{_num(results['zip_bytes']):>12}  {'':<12}{zip_note}")
    lines.append(
        f"bench took {results['bench_seconds']:.0f} s; "
        + ("every delivery was right" if results["ok"] else "PROBLEMS (see below)")
    )
    return lines


def _summary(key: str, value: float | None, digits: int, target: str) -> str:
    status = _met(key, value) if key in TARGETS else ""
    return f"  {key:<30}{_num(value, digits):>12}  {target:<12}{status}"


def _sizes(text: str) -> list[int]:
    sizes = [int(part) for part in text.split(",") if part.strip()]
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("sizes are positive integers, e.g. 1000,10000")
    return sizes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Benchmark wspush's fan-out, cold imports and deployment zip.",
    )
    parser.add_argument("--sizes", type=_sizes, default=[1_000, HEADLINE_N])
    parser.add_argument(
        "--sequential-max",
        type=int,
        default=1_000,
        help="post sequentially to at most this many recipients, extrapolate beyond",
    )
    parser.add_argument("--latency-ms", type=float, default=DEFAULT_LATENCY_MS)
    parser.add_argument(
        "--repeats",
        type=int,
        default=11,
        help="fresh imports per module (one import varies by ±15%% here: 11 steady the median)",
    )
    zip_options = parser.add_mutually_exclusive_group()
    zip_options.add_argument("--zip", type=Path, help="measure this zip instead of building one")
    zip_options.add_argument("--no-zip", action="store_true")
    parser.add_argument("--no-faults", action="store_true", help="skip the fault check")
    parser.add_argument(
        "--no-channel", action="store_true", help="skip publishing to a channel of N subscribers"
    )
    big = parser.add_mutually_exclusive_group()
    big.add_argument(
        "--big-audience",
        type=int,
        default=BIG_AUDIENCE_N,
        metavar="N",
        help="connections for the big-audience broadcast",
    )
    big.add_argument("--no-big-audience", action="store_true", help="skip the big audience")
    cold = parser.add_mutually_exclusive_group()
    cold.add_argument(
        "--cold-pool",
        type=int,
        default=COLD_POOL_N,
        metavar="N",
        help="recipients of a cold container's first fan-out at a small share of one CPU",
    )
    cold.add_argument("--no-cold-pool", action="store_true", help="skip the cold pool")
    recovering = parser.add_mutually_exclusive_group()
    recovering.add_argument(
        "--recovery",
        type=int,
        default=RECOVERY_MISSED,
        help="missed messages a recovery replays (default %(default)s)",
    )
    recovering.add_argument("--no-recovery", action="store_true", help="skip the recovery")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.big_audience < 1 or args.cold_pool < 1:
        parser.error("--big-audience and --cold-pool take a positive number of connections")

    results, problems = run(args)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    if problems:
        print("\nproblems:", *problems, sep="\n- ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
