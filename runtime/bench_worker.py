"""One variant of ``edgeformers bench``, measured in a process of its own.

``edgeformers bench`` starts ``python -m edgeformers.runtime.bench_worker SPEC`` once per
variant, so each variant's peak memory is its own (``ru_maxrss`` never goes down within a
process) and one variant's warm caches cannot flatter the next. The child prints one
``@@bench`` JSON line per finished measurement, which lets the parent move its progress
bar as the work happens; anything else on stdout (warnings) is ignored.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Callable
from typing import Any

from edgeformers.runtime.bench_inputs import workload

MARKER = "@@bench "


def peak_rss_mb() -> float | None:
    """This process's peak resident memory so far (``ru_maxrss``), in MB."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6  # bytes on macOS, KiB on Linux


def percentile(samples: list[float], q: float) -> float:
    """Nearest-rank percentile: the smallest sample with at least ``q`` of them at or below."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def measure(spec: dict[str, Any], emit: Callable[[dict[str, Any]], None]) -> None:
    """Load the variant once, then time every batch x seq-len; emit each result as it comes."""
    from edgeformers.runtime.api import pipeline

    start = time.perf_counter()
    pipe = pipeline(None, spec["bundle"], dtype=spec["dtype"], device=spec["device"])
    load_ms = 1e3 * (time.perf_counter() - start)
    emit({"kind": "loaded", "dtype": pipe.dtype, "device": pipe.device, "providers": pipe.providers, "load_ms": load_ms,
          "peak_rss_mb": peak_rss_mb()})
    work = workload(pipe, spec.get("new_tokens", 32))
    for size in spec["seq_lens"]:
        item, measured = work.make(size)
        for batch in spec["batches"]:
            began = time.perf_counter()
            work.call(item, batch)
            first_ms = 1e3 * (time.perf_counter() - began)
            timings = []
            for _ in range(spec["runs"]):
                began = time.perf_counter()
                work.call(item, batch)
                timings.append(time.perf_counter() - began)
            p50 = percentile(timings, 0.5)
            emit({"kind": "row", "dtype": pipe.dtype, "batch": batch, "seq_len": size, "tokens": measured,
                  "first_call_ms": first_ms, "p50_ms": 1e3 * p50, "p95_ms": 1e3 * percentile(timings, 0.95),
                  "items_per_s": batch / p50 if p50 > 0 else None, "peak_rss_mb": peak_rss_mb(),
                  "new_tokens": work.new_tokens,
                  "ms_per_token": 1e3 * p50 / work.new_tokens if work.new_tokens else None,
                  "real_time_factor": p50 / (size * batch) if spec.get("unit") == "seconds" else None})


def _emit(record: dict[str, Any]) -> None:
    sys.stdout.write(MARKER + json.dumps(record) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    try:
        measure(spec, _emit)
    except Exception as err:  # typed errors, and a variant onnxruntime cannot run: reported, not raised
        _emit({"kind": "error", "error": f"{type(err).__name__}: {err}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
