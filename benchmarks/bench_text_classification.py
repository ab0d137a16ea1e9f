"""Text classification: edgeformers runtime vs transformers (torch), optimum (onnxruntime)
and a bare onnxruntime session, on a DistilBERT-base-sized classifier (CPU).

    python benchmarks/bench_text_classification.py            # full run, < 5 min on 2 cores
    python benchmarks/bench_text_classification.py --quick    # smoke run, ~1.5 min

Warm latency: every engine is loaded once in this process, then timed per call on three
workloads (batch 1 short, batch 1 of 128 tokens, a list of 32 short texts in one call),
interleaved round by round so machine noise hits all engines alike. The bare session
gets pre-tokenized numpy arrays: it is the floor any pipeline on the same graph can reach.

Cold start: fresh interpreters doing import + load + first result, timed from spawn to
that result (teardown excluded), with the child's own import/load/first-call split and
its peak RSS (VmHWM). Median of ``--cold-runs`` runs, interleaved.

Results print as markdown tables and go to .bench/results/bench_text_classification.json.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    PEAK_RSS_SNIPPET,
    RESULT_MARKER,
    add_timing_arguments,
    go_offline,
    interleaved,
    log,
    ratio,
    run_child,
    run_plan,
    table,
    verdict,
    warn_if_busy,
    write_results,
)

go_offline()

SCRIPT = "bench_text_classification"
ONNX_FILES = {"fp32": "model.onnx", "q8": "model_quantized.onnx"}
SHORT = "I absolutely loved this movie, the acting was wonderful and so moving."
_SUBJECTS = ["The movie", "This film", "The plot", "The cast", "The ending", "The soundtrack", "The story", "This show"]
_VERDICTS = ["was a total delight", "felt slow and boring", "made me laugh a lot", "was a waste of my time",
             "is the best I have seen this year", "left me cold"]
_ONE_TOKEN_WORDS = ("the film was good and the cast did well but the plot felt slow in the end so we left "
                    "early and went home to read a book instead of").split()


def short_batch(n: int = 32) -> list[str]:
    """n distinct short reviews (~8-14 tokens each)."""
    return [f"{_SUBJECTS[i % len(_SUBJECTS)]} {_VERDICTS[(i * 5 + i // 8) % len(_VERDICTS)]}, honestly." for i in range(n)]


def long_text(count_tokens: Callable[[str], int], target: int = 128) -> str:
    """A text that tokenizes to exactly ``target`` tokens (special tokens included)."""
    words: list[str] = []
    while count_tokens(" ".join(words)) < target:
        words.append(_ONE_TOKEN_WORDS[len(words) % len(_ONE_TOKEN_WORDS)])
    while count_tokens(" ".join(words)) > target:
        words.pop()
    return " ".join(words)


# --------------------------------------------------------------------------- engines


def session_options(threads: int | None) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return options


def bare_session(path: Path, tokenizer: Any, workloads: dict[str, Any],
                 threads: int | None) -> dict[str, Callable[[], Any]]:
    """A plain InferenceSession; feeds are tokenized here, outside the timed call."""
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), session_options(threads), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    calls = {}
    for key, inputs in workloads.items():
        encodings = tokenizer.encode_batch([inputs] if isinstance(inputs, str) else list(inputs))
        arrays = {"input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                  "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                  "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64)}
        feed = {name: arrays[name] for name in names}
        calls[key] = (lambda feed=feed: session.run(["logits"], feed))
    return calls


def pipeline_calls(clf: Callable[..., Any], workloads: dict[str, Any]) -> dict[str, Callable[[], Any]]:
    """Lists go in one call with batch_size=32 for every pipeline, so all engines run the
    same padded (32, longest) batch as the bare session."""
    return {key: (lambda x=inputs: clf(x, batch_size=32) if isinstance(x, list) else clf(x))
            for key, inputs in workloads.items()}


def load_engines(checkpoint: Path, bundle: Path, workloads: dict[str, Any], dtypes: list[str],
                 with_optimum: bool, threads: int | None) -> dict[str, dict[str, Callable[[], Any]]]:
    """engine name -> workload name -> zero-argument call. ``threads`` (None = each
    library's default) pins torch and every onnxruntime session to the same count."""
    import torch
    import transformers
    from tokenizers import Tokenizer

    from edgeformers.runtime import pipeline

    engines: dict[str, dict[str, Callable[[], Any]]] = {}
    for dtype in dtypes:
        log(f"loading edgeformers {dtype}")
        clf = pipeline("sentiment-analysis", bundle, device="cpu", dtype=dtype, threads=threads)
        engines[f"edgeformers {dtype}"] = pipeline_calls(clf, workloads)
    log("loading transformers (torch)")
    if threads:
        torch.set_num_threads(threads)
    torch_clf = transformers.pipeline("sentiment-analysis", model=str(checkpoint), device="cpu")
    engines["transformers torch"] = pipeline_calls(torch_clf, workloads)
    if with_optimum:
        from optimum.onnxruntime import ORTModelForSequenceClassification

        tokenizer = transformers.AutoTokenizer.from_pretrained(str(bundle))
        for dtype in dtypes:
            log(f"loading optimum {dtype}")
            # The bundle is an HF-style repo: config.json at the top, graphs in onnx/.
            # optimum globs **/*.onnx and picks the one named by file_name.
            model = ORTModelForSequenceClassification.from_pretrained(
                str(bundle), file_name=ONNX_FILES[dtype], session_options=session_options(threads))
            clf = transformers.pipeline("sentiment-analysis", model=model, tokenizer=tokenizer, device="cpu")
            engines[f"optimum {dtype}"] = pipeline_calls(clf, workloads)
    tok = Tokenizer.from_file(str(bundle / "tokenizer.json"))
    tok.no_truncation()
    tok.enable_padding(pad_id=tok.token_to_id("[PAD]"), pad_token="[PAD]")
    for dtype in dtypes:
        log(f"loading bare onnxruntime {dtype}")
        engines[f"onnxruntime bare {dtype}"] = bare_session(bundle / "onnx" / ONNX_FILES[dtype], tok, workloads, threads)
    return engines


def agreement(engines: dict[str, dict[str, Callable[[], Any]]], workload: str) -> dict[str, Any]:
    """Each pipeline's labels and top scores on one workload, against torch's: a sanity check
    that all engines computed the same thing (random weights give near-tied logits, so a
    q8 label flip here is expected noise, not a bug)."""
    reference = engines["transformers torch"][workload]()
    out = {}
    for name, calls in engines.items():
        if name.startswith("onnxruntime bare"):
            continue
        got = calls[workload]()
        same = [a["label"] == b["label"] for a, b in zip(got, reference)]
        diff = max(abs(a["score"] - b["score"]) for a, b in zip(got, reference))
        out[name] = {"label_agreement": sum(same) / len(same), "max_score_diff": diff}
    return out


# --------------------------------------------------------------------------- cold start

COLD_CHILD = PEAK_RSS_SNIPPET + f'''
import json, os, sys, time
t0 = time.perf_counter()
engine, model, dtype, text, threads = sys.argv[1:6]
threads = int(threads) or None
if engine == "edgeformers":
    from edgeformers.runtime import pipeline
    t1 = time.perf_counter()
    clf = pipeline("sentiment-analysis", model, device="cpu", dtype=dtype, threads=threads)
elif engine == "transformers":
    from transformers import pipeline
    t1 = time.perf_counter()
    if threads:
        import torch
        torch.set_num_threads(threads)
    clf = pipeline("sentiment-analysis", model=model, device="cpu")
else:
    from optimum.onnxruntime import ORTModelForSequenceClassification
    from transformers import AutoTokenizer, pipeline
    import onnxruntime
    t1 = time.perf_counter()
    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    m = ORTModelForSequenceClassification.from_pretrained(model, file_name={ONNX_FILES!r}[dtype],
                                                          session_options=options)
    clf = pipeline("sentiment-analysis", model=m, tokenizer=AutoTokenizer.from_pretrained(model), device="cpu")
t2 = time.perf_counter()
out = clf(text)
t3 = time.perf_counter()
heavy = sorted(m for m in ("torch", "transformers", "optimum") if m in sys.modules)
print({RESULT_MARKER!r} + json.dumps({{"import_s": t1 - t0, "load_s": t2 - t1, "first_call_s": t3 - t2,
      "peak_rss_mb": _peak_rss_mb(), "heavy_modules": heavy, "output": out}}), flush=True)
os._exit(0)
'''


def cold_start(checkpoint: Path, bundle: Path, runs: int, dtypes: list[str], with_optimum: bool,
               threads: int | None) -> dict[str, Any]:
    cases = {f"edgeformers {d}": ("edgeformers", str(bundle), d) for d in dtypes}
    cases["transformers torch"] = ("transformers", str(checkpoint), "fp32")
    if with_optimum:
        cases["optimum fp32"] = ("optimum", str(bundle), "fp32")
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
    for i in range(runs):
        for name, (engine, model, dtype) in cases.items():
            log(f"cold start {i + 1}/{runs}: {name}")
            child = run_child(COLD_CHILD, [engine, model, dtype, SHORT, str(threads or 0)])
            if child.returncode != 0 or not child.result:
                raise SystemExit(f"cold-start child {name} failed (rc {child.returncode}):\n{child.stderr_tail}")
            samples[name].append({"wall_s": child.wall_s, **child.result})
    summary = {}
    for name, rows in samples.items():
        med = {key: statistics.median(r[key] for r in rows)
               for key in ("wall_s", "import_s", "load_s", "first_call_s", "peak_rss_mb")}
        summary[name] = {**med, "runs": rows, "heavy_modules": rows[0]["heavy_modules"]}
    return summary


# --------------------------------------------------------------------------- report


def report_warm(timings: dict[str, dict[str, Any]], workloads: list[str], dtypes: list[str]) -> dict[str, Any]:
    med = {w: {e: t.median_ms for e, t in timings[w].items()} for w in workloads}
    rows = [[engine, *(med[w][engine] for w in workloads), *(timings[w][engine].p90_ms for w in workloads[:1])]
            for engine in timings[workloads[0]]]
    print("\n### Warm latency, median ms per call (lower is better)\n")
    print(table(["engine", *workloads, f"p90 {workloads[0]}"], rows, digits=2))
    specs = [(f"runtime {d} overhead over bare session (x)", f"edgeformers {d}", f"onnxruntime bare {d}", 1.10, False)
             for d in dtypes]
    if "q8" in dtypes:
        specs.append(("q8 speed-up over torch pipeline (x)", "transformers torch", "edgeformers q8", 5.0, True))
    if "fp32" in dtypes:
        specs.append(("fp32 speed-up over torch pipeline (x)", "transformers torch", "edgeformers fp32", None, True))
    for d in dtypes:
        if f"optimum {d}" in med[workloads[0]]:
            specs.append((f"{d} speed-up over optimum {d} pipeline (x)", f"optimum {d}", f"edgeformers {d}", None, True))
    ratios, rows = {}, []
    for label, num, den, target, higher in specs:
        values = [ratio(med[w][num], med[w][den]) for w in workloads]
        ratios[label] = {"values": dict(zip(workloads, values)), "target": target,
                         "higher_is_better": higher}
        met = sum(verdict(v, target, higher) == "meets" for v in values) if target else None
        rows.append([label, *values, "-" if target is None else ("≥ " if higher else "≤ ") + f"{target:g}",
                     "-" if met is None else f"{met}/{len(values)}"])
    print("\n### Ratios (same run)\n")
    print(table(["ratio", *workloads, "target", "meets"], rows, digits=2))
    return ratios


def report_cold(cold: dict[str, Any], dtypes: list[str]) -> dict[str, Any]:
    rows = [[name, c["wall_s"], c["import_s"], c["load_s"], c["first_call_s"], c["peak_rss_mb"],
             ",".join(c["heavy_modules"]) or "none"] for name, c in cold.items()]
    print("\n### Cold start (fresh process, median of runs) and peak memory\n")
    print(table(["engine", "wall s", "import s", "load s", "first call s", "peak RSS MB", "heavy modules loaded"],
                rows, digits=2))
    torch_row = cold["transformers torch"]
    ratios, rows = {}, []
    for d in dtypes:
        for label, key, target in ((f"{d} cold start / torch", "wall_s", 0.2), (f"{d} peak RSS / torch", "peak_rss_mb", 0.5)):
            value = ratio(cold[f"edgeformers {d}"][key], torch_row[key])
            ratios[label] = {"value": value, "target": target}
            rows.append([label, value, f"≤ {target:g}", verdict(value, target, False)])
    print()
    print(table(["ratio", "value", "target", "verdict"], rows, digits=3))
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_timing_arguments(parser, default_budget=30.0)
    parser.add_argument("--dtypes", default="fp32,q8", help="runtime variants to measure (default fp32,q8)")
    parser.add_argument("--no-optimum", action="store_true", help="skip the optimum.onnxruntime peer")
    parser.add_argument("--threads", type=int, help="pin torch and onnxruntime to N intra-op threads "
                        "(default: each library's own default, as users get it)")
    parser.add_argument("--skip-cold", action="store_true", help="warm latency only")
    parser.add_argument("--skip-warm", action="store_true", help="cold start and memory only")
    args = parser.parse_args()
    plan = run_plan(args, default_budget=30.0)
    budget, cold_runs, warmup, min_rounds = plan.budget, plan.cold_runs, plan.warmup, plan.min_rounds
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    with_optimum = not args.no_optimum
    started = time.perf_counter()
    warn_if_busy()

    from make_models import ensure_models

    checkpoint, bundle = ensure_models()
    results: dict[str, Any] = {"model": "distilbert-base (random weights, 2 labels)", "checkpoint": str(checkpoint),
                               "bundle": str(bundle), "quick": args.quick, "budget_s": budget, "cold_runs": cold_runs,
                               "threads_arg": args.threads}
    print(f"## Text classification benchmark ({'quick' if args.quick else 'full'} run, "
          f"threads={args.threads or 'library defaults'})\n")
    if not args.skip_cold:  # first, while this process is still small and idle
        cold = cold_start(checkpoint, bundle, cold_runs, dtypes, with_optimum, args.threads)
        results["cold_start"] = cold
        results["cold_ratios"] = report_cold(cold, dtypes)
    if not args.skip_warm:
        from tokenizers import Tokenizer

        counter = Tokenizer.from_file(str(bundle / "tokenizer.json"))  # truncation/padding already off
        count = lambda text: len(counter.encode(text).ids)  # noqa: E731
        workloads = {"b1 short": SHORT, "b1 128 tok": long_text(count), "b32 short": short_batch(32)}
        results["workloads"] = {k: {"texts": 1 if isinstance(v, str) else len(v),
                                    "tokens": [count(t) for t in ([v] if isinstance(v, str) else v)]}
                                for k, v in workloads.items()}
        engines = load_engines(checkpoint, bundle, workloads, dtypes, with_optimum, args.threads)
        results["agreement_b32"] = agreement(engines, "b32 short")
        timings = {}
        for key in workloads:
            log(f"timing {key}")
            per_workload = {name: calls[key] for name, calls in engines.items()}
            timings[key] = interleaved(per_workload, warmup, budget, min_rounds, max_rounds=1000)
        results["latency"] = {w: {e: t.as_dict() for e, t in timings[w].items()} for w in workloads}
        results["ratios"] = report_warm(timings, list(workloads), dtypes)
        import torch

        results["threads"] = {"torch": torch.get_num_threads(), "onnxruntime": args.threads or "default"}
    results["elapsed_s"] = time.perf_counter() - started
    path = write_results(SCRIPT, results)
    print(f"\n(total {results['elapsed_s']:.0f} s; results in {path})")


if __name__ == "__main__":
    main()
