"""``edgeformers bench``: how fast a bundle's variants load and answer on this machine.

A quick look for users choosing a variant; the comparisons against peers live in
``benchmarks/``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgeformers.runtime.cli import echo_json, fail_on_errors

SAMPLE = "The new phone's battery lasts two days, but the camera is disappointing in low light."

# task -> how to call its pipeline on one sample text
_CALLS: dict[str, Callable[[Any, list[str]], Any]] = {
    "zero-shot-classification": lambda pipe, texts: pipe(texts, candidate_labels=["tech", "sports", "food"]),
    "fill-mask": lambda pipe, texts: pipe([f"{t} It is {pipe.mask_token}." for t in texts]),
    "question-answering": lambda pipe, texts: pipe(question=["What is disappointing?"] * len(texts), context=texts),
}


def _call(pipe: Any, texts: list[str]) -> Any:
    return _CALLS.get(pipe.task, lambda p, t: p(t))(pipe, texts)


@click.command("bench")
@click.argument("bundle", type=click.Path(file_okay=False, path_type=Path))
@click.option("--dtype", "dtypes", default=None, help="Comma-separated variants (default: every variant).")
@click.option("--device", default="auto", show_default=True)
@click.option("--runs", type=click.IntRange(1), default=20, show_default=True)
@click.option("--batch", type=click.IntRange(1), default=1, show_default=True, help="Inputs per call.")
@click.option("--text", default=SAMPLE, help="Input text (QA: the context).")
@click.option("--json", "as_json", is_flag=True, help="Print the figures as JSON.")
@fail_on_errors
def bench_command(bundle: Path, dtypes: str | None, device: str, runs: int, batch: int, text: str,
                  as_json: bool) -> None:
    """Time BUNDLE's variants: load, first call, then median and p90 latency over --runs calls."""
    from edgeformers.runtime.api import pipeline
    from edgeformers.runtime.bundle import Bundle

    names = dtypes.split(",") if dtypes else list(Bundle.open(bundle).manifest.variants)
    texts = [text] * batch
    rows = []
    for dtype in names:
        start = time.perf_counter()
        pipe = pipeline(None, bundle, dtype=dtype.strip(), device=device)
        loaded = time.perf_counter()
        _call(pipe, texts)
        first = time.perf_counter()
        timings = []
        for _ in range(runs):
            began = time.perf_counter()
            _call(pipe, texts)
            timings.append(time.perf_counter() - began)
        timings.sort()
        rows.append({
            "dtype": pipe.dtype,
            "providers": pipe.providers,
            "load_ms": 1e3 * (loaded - start),
            "first_call_ms": 1e3 * (first - loaded),
            "median_ms": 1e3 * statistics.median(timings),
            "p90_ms": 1e3 * timings[min(len(timings) - 1, int(0.9 * len(timings)))],
            "batch": batch,
        })
    if as_json:
        echo_json(rows)
        return
    click.echo(f"{'dtype':<7} {'load ms':>9} {'first ms':>9} {'median ms':>10} {'p90 ms':>9}  providers")
    for row in rows:
        click.echo(f"{row['dtype']:<7} {row['load_ms']:>9.1f} {row['first_call_ms']:>9.1f} "
                   f"{row['median_ms']:>10.2f} {row['p90_ms']:>9.2f}  {','.join(row['providers'])}")
