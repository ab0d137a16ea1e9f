"""``edgeformers bench``: which of a bundle's variants to ship to this device.

Every variant is measured in a process of its own (:mod:`edgeformers.runtime.bench_worker`)
at each batch size x input length, with the base install alone, since that is what runs
on the target device. The figures are shown as a table, with the validation agreement
the manifest recorded beside them, and the command recommends the fastest variant and
the smallest one among those that passed validation. Comparisons against peer libraries
live in ``benchmarks/``.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import click

from edgeformers.models.errors import InputError
from edgeformers.runtime.cli import fail_on_errors

BENCH_FORMAT = 1


def parse_sizes(value: str, option: str) -> list[int]:
    """``"1,8"`` -> ``[1, 8]``; every entry a positive integer."""
    sizes = []
    for part in value.split(","):
        try:
            size = int(part.strip())
        except ValueError:
            size = 0
        if size < 1:
            raise InputError(f"{option} {value!r}: expected positive integers separated by commas, e.g. 1,8")
        sizes.append(size)
    return list(dict.fromkeys(sizes))


def validation_summary(report: dict[str, Any] | None) -> dict[str, Any]:
    """The recorded agreement of one variant as ``metric``/``value``/``threshold``/``passed``.

    Reports written before thresholds existed carry ``label_agreement``, ``min_cosine`` or
    fp32's ``max_abs_diff`` instead; they are read as the metric they are."""
    report = report or {}
    metric, value, threshold = report.get("metric"), report.get("value"), report.get("threshold")
    if metric is None:
        for name in ("label_agreement", "min_cosine"):
            if isinstance(report.get(name), (int, float)):
                metric, value = name, report[name]
                break
        else:
            diffs = report.get("max_abs_diff")
            if isinstance(diffs, dict) and diffs:
                metric, value, threshold = "max_abs_diff", max(diffs.values()), report.get("atol")
    passed = report.get("passed")
    return {
        "reference": report.get("reference"),
        "metric": metric,
        "value": value if isinstance(value, (int, float)) and not isinstance(value, bool) else None,
        "threshold": threshold if isinstance(threshold, (int, float)) else None,
        "passed": passed if isinstance(passed, bool) else None,
    }


def recommend(variants: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest and the smallest variant among those whose recorded validation passed.

    Speed is the geometric mean of p50 latency over every batch x seq-len measured, so
    each shape counts the same whatever its absolute time."""
    eligible = [v for v in variants if v["validation"]["passed"] is True and not v.get("error")]
    speed = {}
    for variant in eligible:
        times = [row["p50_ms"] for row in rows if row["dtype"] == variant["dtype"]]
        if times and all(t > 0 for t in times):
            speed[variant["dtype"]] = math.exp(sum(math.log(t) for t in times) / len(times))
    sizes = {v["dtype"]: v["file_bytes"] for v in eligible if v["dtype"] in speed}
    if not speed:
        return {"fastest": None, "smallest": None, "eligible": [], "geomean_p50_ms": {},
                "reason": "no variant has both timings and a recorded passing validation"}
    return {
        "fastest": min(speed, key=speed.__getitem__),
        "smallest": min(sizes, key=lambda d: (sizes[d], speed[d])),
        "eligible": list(speed),
        "geomean_p50_ms": speed,
        "reason": "fastest: lowest geometric-mean p50 over every batch x seq-len; smallest: fewest bytes of "
                  "graph + weights; both among variants whose recorded validation passed",
    }


def _run_variant(spec: dict[str, Any], on_record: Any) -> list[dict[str, Any]]:
    """Run one variant's child process; returns its records (an ``error`` one if it failed)."""
    from edgeformers.runtime.bench_worker import MARKER

    command = [sys.executable, "-m", "edgeformers.runtime.bench_worker", json.dumps(spec)]
    records: list[dict[str, Any]] = []
    with tempfile.TemporaryFile(mode="w+") as errors:
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=errors, text=True) as child:
            assert child.stdout is not None
            for line in child.stdout:
                if line.startswith(MARKER):
                    record = json.loads(line[len(MARKER):])
                    records.append(record)
                    on_record(record)
            code = child.wait()
        if code != 0 and not any(r["kind"] == "error" for r in records):
            errors.seek(0)
            tail = errors.read()[-500:].strip()
            records.append({"kind": "error", "error": f"the measuring process exited with {code}: {tail}"})
    return records


def run_bench(bundle: Path, dtypes: list[str], device: str, batches: list[int], seq_lens: list[int],
              runs: int, progress: Any = None, new_tokens: int = 32) -> dict[str, Any]:
    """Measure every variant in ``dtypes``; the figures and the recommendation as a dict."""
    from edgeformers.runtime.bench_inputs import PER_TOKEN, input_unit
    from edgeformers.runtime.bundle import Bundle

    opened = Bundle.open(bundle)
    manifest = opened.manifest
    unit, _ = input_unit(manifest.task)
    variants, rows = [], []
    per_variant = len(batches) * len(seq_lens)
    for dtype in dtypes:
        spec = {"bundle": str(bundle), "dtype": dtype, "device": device, "batches": batches,
                "seq_lens": seq_lens, "runs": runs, "unit": unit, "new_tokens": new_tokens}
        if progress:
            progress.start(dtype)
        records = _run_variant(spec, lambda r: progress.advance(r) if progress else None)
        loaded = next((r for r in records if r["kind"] == "loaded"), {})
        error = next((r["error"] for r in records if r["kind"] == "error"), None)
        entry = {
            "dtype": dtype,
            "device": loaded.get("device"),
            "providers": loaded.get("providers"),
            "load_ms": loaded.get("load_ms"),
            "file_bytes": opened.variant_bytes(dtype),
            "peak_rss_mb": max((r["peak_rss_mb"] for r in records if r.get("peak_rss_mb") is not None),
                               default=None),
            "validation": validation_summary(manifest.validation.get(dtype)),
            "error": error,
        }
        variants.append(entry)
        for record in records:
            if record["kind"] == "row":
                row = {k: v for k, v in record.items() if k != "kind"}
                row.update(load_ms=entry["load_ms"], file_bytes=entry["file_bytes"],
                           validation=entry["validation"])
                rows.append(row)
        if progress:
            progress.finish(dtype, per_variant)
    return {
        "format": "edgeformers-bench",
        "format_version": BENCH_FORMAT,
        "bundle": str(bundle),
        "task": manifest.task,
        "model_type": manifest.model_type,
        "device": device,
        "batches": batches,
        "seq_lens": seq_lens,
        "unit": unit,
        "new_tokens": new_tokens if manifest.task in PER_TOKEN else None,
        "runs": runs,
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": _machine(),
        "variants": variants,
        "rows": rows,
        "recommendation": recommend(variants, rows),
    }


def _machine() -> dict[str, Any]:
    from importlib import metadata

    try:
        onnxruntime_version = metadata.version("onnxruntime")
    except metadata.PackageNotFoundError:
        onnxruntime_version = None
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "onnxruntime": onnxruntime_version}


def write_json_atomically(path: Path, data: dict[str, Any]) -> None:
    """A reader sees the old file or the complete new one, never half a JSON document."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.partial")
    try:
        staging.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(staging, path)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise


class _Progress:
    """A rich progress bar over every variant x shape, on stderr."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), console=Console(stderr=True), transient=True)
        self._task = self._bar.add_task("bench", total=total)
        self._done = 0

    def __enter__(self) -> _Progress:
        self._bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._bar.stop()

    def start(self, dtype: str) -> None:
        self._bar.update(self._task, description=f"{dtype}: loading")
        self._rows = 0

    def advance(self, record: dict[str, Any]) -> None:
        if record["kind"] == "row":
            self._rows += 1
            self._bar.update(self._task, advance=1,
                             description=f"{record['dtype']}: batch {record['batch']} x {record['seq_len']} tokens")

    def finish(self, dtype: str, expected: int) -> None:
        self._bar.update(self._task, advance=expected - self._rows)  # a failed variant skips its rows


def _fmt(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def print_report(report: dict[str, Any], stderr: bool = False) -> None:
    """The figures as a rich table, then the recommendation."""
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=stderr)
    if not console.is_terminal:
        console = Console(stderr=stderr, width=160)
    # the device the variants really ran on (after any fallback), not the one asked for
    device = next((v["device"] for v in report["variants"] if v["device"]), report["device"])
    table = Table(title=f"{report['bundle']} ({report['task']}) on {device}")
    unit = report.get("unit", "tokens")
    # per task: time per generated token (fixed count, greedy), or the real-time factor of speech
    extra = ("ms/token", "ms_per_token", 2) if report.get("new_tokens") else \
        ("RTF", "real_time_factor", 3) if unit == "seconds" else None
    names = ["dtype", "batch", unit, "load ms", "first ms", "p50 ms", "p95 ms", "items/s", "peak MB", "size MB",
             "validation"]
    if extra:
        names.insert(7, extra[0])
    for name in names:
        table.add_column(name, justify="left" if name in ("dtype", "validation") else "right")
    for row in report["rows"]:
        cells = [row["dtype"], str(row["batch"]), str(row["tokens"]), _fmt(row["load_ms"]),
                 _fmt(row["first_call_ms"]), _fmt(row["p50_ms"], 2), _fmt(row["p95_ms"], 2),
                 _fmt(row["items_per_s"]), _fmt(row["peak_rss_mb"]), _fmt(row["file_bytes"] / 1e6),
                 _validation_text(row["validation"])]
        if extra:
            cells.insert(7, _fmt(row.get(extra[1]), extra[2]))
        table.add_row(*cells)
    if report.get("new_tokens"):
        console.print(f"each row generates {report['new_tokens']} new tokens greedily per input "
                      "(min_new_tokens holds EOS off)", markup=False)
    console.print(table)
    for variant in report["variants"]:
        if variant["error"]:
            console.print(f"{variant['dtype']} failed: {variant['error']}", markup=False)
    providers = {v["dtype"]: ",".join(v["providers"] or []) for v in report["variants"] if v["providers"]}
    if providers:
        console.print("providers: " + "; ".join(f"{d}={p}" for d, p in providers.items()), markup=False)
    advice = report["recommendation"]
    if advice["fastest"] is None:
        console.print(f"recommendation: none ({advice['reason']})", markup=False)
    else:
        console.print(f"recommended for {device}: fastest {advice['fastest']}, "
                      f"smallest {advice['smallest']} (among {', '.join(advice['eligible'])}, which passed "
                      "validation)", markup=False)


def _validation_text(summary: dict[str, Any]) -> str:
    if summary["metric"] is None:
        return "not recorded"
    text = f"{summary['metric']}={summary['value']:.3g}" if summary["value"] is not None else summary["metric"]
    notes = [f"threshold {summary['threshold']:g}"] if summary["threshold"] is not None else []
    if summary["passed"] is not None:
        notes.append("passed" if summary["passed"] else "FAILED")
    return f"{text} ({', '.join(notes)})" if notes else text


@click.command("bench")
@click.argument("bundle", type=click.Path(file_okay=False, path_type=Path))
@click.option("--dtype", "dtypes", default="all", show_default=True,
              help="Comma-separated variants, or 'all' for every variant present.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N or coreml.")
@click.option("--batch", "batches", default="1,8", show_default=True, help="Comma-separated batch sizes.")
@click.option("--seq-len", "seq_lens", default=None,
              help="Comma-separated input sizes in the task's unit: tokens for text, special tokens included (QA: "
                   "question + context; generation: the prompt), default 16,128; the side of a square image in "
                   "pixels for vision, default 224,640; seconds of audio for speech, default 5,30.")
@click.option("--new-tokens", type=click.IntRange(1), default=32, show_default=True,
              help="Generating tasks: new tokens per input, generated greedily (EOS held off), so every variant "
                   "does the same work.")
@click.option("--runs", type=click.IntRange(1), default=20, show_default=True,
              help="Timed calls per batch x seq-len, after one first call.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the figures and the recommendation as JSON to this file ('-': stdout).")
@fail_on_errors
def bench_command(bundle: Path, dtypes: str, device: str, batches: str, seq_lens: str | None, new_tokens: int,
                  runs: int, json_path: Path | None) -> None:
    """Time BUNDLE's variants on this machine, each in a process of its own: load time, first
    call, p50/p95 latency, throughput, peak memory and size per batch x seq-len, beside the
    validation recorded at export; then recommend the fastest and the smallest variant that
    passed validation."""
    from edgeformers.runtime.bench_inputs import input_unit
    from edgeformers.runtime.bundle import Bundle
    from edgeformers.runtime.devices import resolve_device
    from edgeformers.runtime.slim import parse_dtypes

    opened = Bundle.open(bundle)
    present = opened.present_variants()
    names = present if dtypes.strip() == "all" else parse_dtypes(dtypes, present)
    unit, default_sizes = input_unit(opened.manifest.task)
    sizes = parse_sizes(batches, "--batch")
    lengths = parse_sizes(seq_lens, "--seq-len") if seq_lens is not None else list(default_sizes)
    limit = opened.manifest.processing.get("max_length")
    if unit == "tokens" and isinstance(limit, int) and max(lengths) > limit:
        raise InputError(f"--seq-len {max(lengths)} is longer than the bundle's max_length of {limit} tokens")
    resolve_device(device)  # an unknown device name fails here, not once per variant
    with _Progress(len(names) * len(sizes) * len(lengths)) as progress:
        report = run_bench(bundle, names, device, sizes, lengths, runs, progress, new_tokens)
    to_stdout = json_path is not None and str(json_path) == "-"
    print_report(report, stderr=to_stdout)
    if to_stdout:
        click.echo(json.dumps(report, indent=2))
    elif json_path is not None:
        write_json_atomically(json_path, report)
        click.echo(f"figures written to {json_path}", err=True)
