"""Shared helpers for the benchmark scripts: paths, timing, subprocess runs, peak memory,
tables and the JSON results file.

Benchmarks compare engines measured in the same run on the same machine, so the
figures that matter are the ratios; absolute milliseconds depend on the machine and on
whatever else it is doing. Nothing here asserts a threshold.
"""

from __future__ import annotations

import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH_DIR = REPO / ".bench"
RESULTS_DIR = BENCH_DIR / "results"
MODELS_DIR = BENCH_DIR / "models"
BUNDLES_DIR = BENCH_DIR / "bundles"

# Nothing may reach the Hub: checkpoints and bundles are local folders.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def go_offline() -> None:
    """Set the offline switches before transformers/huggingface_hub are imported."""
    for key, value in OFFLINE_ENV.items():
        os.environ.setdefault(key, value)


def child_env() -> dict[str, str]:
    """Environment for child processes: the parent's, plus the offline switches."""
    env = dict(os.environ)
    env.update(OFFLINE_ENV)
    return env


def log(message: str) -> None:
    """Progress on stderr, so stdout stays the tables."""
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- timing


@dataclass
class Timing:
    """Per-call wall times (seconds) of one engine on one workload."""

    samples: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples) * 1000.0 if self.samples else float("nan")

    @property
    def p90_ms(self) -> float:
        if not self.samples:
            return float("nan")
        ordered = sorted(self.samples)
        return ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))] * 1000.0

    def as_dict(self) -> dict[str, Any]:
        return {"median_ms": self.median_ms, "p90_ms": self.p90_ms, "n": len(self.samples)}


def time_once(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(
    engines: dict[str, Callable[[], Any]],
    warmup: int,
    budget_s: float,
    min_rounds: int,
    max_rounds: int,
    seed: int = 0,
) -> dict[str, Timing]:
    """Time every engine once per round, in a shuffled order, until ``budget_s`` of rounds
    has passed (at least ``min_rounds``, at most ``max_rounds``). Interleaving spreads
    machine noise — other jobs, frequency changes — evenly over the engines, which keeps
    the ratios honest on a shared machine even when the absolute figures wander."""
    for fn in engines.values():
        for _ in range(warmup):
            fn()
    results = {name: Timing() for name in engines}
    order = list(engines)
    rng = random.Random(seed)
    start = time.perf_counter()
    rounds = 0
    while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() - start < budget_s):
        rng.shuffle(order)
        for name in order:
            results[name].samples.append(time_once(engines[name]))
        rounds += 1
    return results


def warn_if_busy() -> None:
    """Say so when other work already loads the CPUs: OpenMP (torch) degrades far more
    than onnxruntime when its threads are descheduled, which skews the torch ratios."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return
    cores = os.cpu_count() or 1
    if load > 0.5 * cores:
        log(f"warning: 1-minute load average {load:.1f} on {cores} cores; figures will be noisy. "
            "On a shared machine, --threads 1 gives steadier ratios.")


def ratio(numerator: float, denominator: float) -> float:
    if not denominator or denominator != denominator or numerator != numerator:
        return float("nan")
    return numerator / denominator


# --------------------------------------------------------------------------- subprocesses

# Printed by a child before its JSON line, so stray output (warnings) cannot confuse us.
RESULT_MARKER = "@@BENCH_RESULT@@ "

# Prepended to child code: peak RSS of the child itself, from the kernel.
PEAK_RSS_SNIPPET = '''
def _peak_rss_mb():
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource, sys as _sys
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024.0 * 1024.0) if _sys.platform == "darwin" else peak / 1024.0
'''


@dataclass
class ChildRun:
    wall_s: float
    result: dict[str, Any]
    returncode: int
    stderr_tail: str


def run_child(code: str, args: Sequence[str], timeout_s: float = 300.0) -> ChildRun:
    """Run ``python -c code args...`` in a fresh interpreter and time the whole process
    from spawn to exit. The child prints ``RESULT_MARKER + json`` and leaves with
    ``os._exit`` so interpreter teardown (large for torch) is not counted."""
    command = [sys.executable, "-c", code, *args]
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=child_env(), timeout=timeout_s,
                          cwd=str(REPO))
    wall = time.perf_counter() - start
    result: dict[str, Any] = {}
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_MARKER):
            result = json.loads(line[len(RESULT_MARKER):])
    return ChildRun(wall, result, done.returncode, done.stderr[-2000:])


# --------------------------------------------------------------------------- output


def fmt(value: Any, digits: int = 1) -> str:
    if isinstance(value, float):
        if value != value:
            return "n/a"
        return f"{value:.{digits}f}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], digits: int = 1) -> str:
    """A GitHub-flavoured markdown table (pastes straight into benchmarks/README.md)."""
    cells = [[fmt(c, digits) for c in row] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h)) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(str(h).ljust(w) for h, w in zip(headers, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    return "\n".join(lines)


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    if value != value:
        return "n/a"
    ok = value >= target if higher_is_better else value <= target
    return "meets" if ok else "misses"


def machine_info() -> dict[str, Any]:
    """What the figures were measured on; ratios travel between machines, ms do not."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    try:
        info["loadavg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    from importlib import metadata

    versions = {}
    for dist in ("edgeformers", "onnxruntime", "tokenizers", "numpy", "torch", "transformers", "optimum",
                 "optimum-onnx"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    info["versions"] = versions
    return info


def write_results(script: str, data: dict[str, Any]) -> Path:
    """Write ``.bench/results/<script>.json`` (``.bench/`` is git-ignored)."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{script}.json"
    payload = {"script": script, "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": machine_info(), **data}
    path.write_text(json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")
    return path


def dir_size(path: Path) -> int:
    """Bytes of regular files under ``path`` (symlinks not followed)."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            file = Path(root) / name
            try:
                if not file.is_symlink():
                    total += file.stat().st_size
            except OSError:
                pass
    return total


MB = 1024.0 * 1024.0


@dataclass(frozen=True)
class RunPlan:
    """How long the warm rounds run and how many fresh processes time the cold start."""

    quick: bool
    budget: float
    cold_runs: int
    warmup: int
    min_rounds: int


def add_timing_arguments(parser: Any, default_budget: float) -> None:
    """``--quick``, ``--budget`` and ``--cold-runs``, shared by the peer benchmarks."""
    parser.add_argument("--quick", action="store_true", help="few iterations and one cold run: proves the script works")
    parser.add_argument("--budget", type=float,
                        help=f"seconds of timed rounds per workload (default {default_budget:g}, quick 2)")
    parser.add_argument("--cold-runs", type=int, help="fresh processes per engine (default 3, quick 1)")


def run_plan(args: Any, default_budget: float) -> RunPlan:
    quick = bool(args.quick)
    return RunPlan(
        quick=quick,
        budget=args.budget if args.budget is not None else (2.0 if quick else default_budget),
        cold_runs=args.cold_runs or (1 if quick else 3),
        warmup=1 if quick else 3,
        min_rounds=3 if quick else 10,
    )
