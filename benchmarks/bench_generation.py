"""Text generation speed: edgeformers (fp32, q8, q4) vs transformers ``generate`` on torch,
optimum's ``ORTModelForCausalLM`` and a bare onnxruntime + numpy loop, against this
machine's memory-bandwidth floor; beam search vs greedy; tied embeddings stored once vs
twice; optionally a DistilBART-sized summarizer vs the torch pipeline.

    python benchmarks/bench_generation.py --quick            # smoke run: ~4 min once the models exist
    python benchmarks/bench_generation.py --threads 1        # steadier ratios on a busy machine
    python benchmarks/bench_generation.py --summarizer       # adds distilbart-cnn (first export ~10 min)

Models (benchmarks/generation_models.py; random weights, real shapes, exported on first
use): gpt2-small (124M) and smollm2-135m (SmolLM2-135M's Llama config). Workload: one
~11-token prompt, batch 1, greedy, exactly 64 new tokens (``min_new_tokens`` =
``max_new_tokens`` = 64 for every engine, so a random model's EOS cannot end a run
early). ms/token = call time / 64 (the prompt step included, as a user sees it).

Engines, interleaved round by round (_common.interleaved):
  edgeformers <dtype>   pipeline("text-generation", bundle, dtype=...)(prompt, ...)
  bare ort <dtype>      InferenceSession.run in a numpy loop over pre-tokenized ids: argmax,
                        present -> past, nothing else (the floor for any runtime on that graph)
  torch                 AutoModelForCausalLM.generate on the checkpoint
  optimum fp32 / q8     ORTModelForCausalLM.from_pretrained(bundle, file_name=...).generate

Floor: bytes of weights one step reads (every initializer except the rows an embedding
lookup picks: a Gather table costs one row) / memory bandwidth, measured here as numpy
copies of a 512 MB array (read + write bytes / time, best of 5).
Nothing is asserted; tables go to stdout, figures to .bench/results/bench_generation.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

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
    verdict,
    warn_if_busy,
    write_results,
)
from generation_models import ensure_model  # noqa: E402

go_offline()

SCRIPT = "bench_generation"
PROMPT = "The quick brown fox jumps over the lazy dog, and"
NEW = 64
MODELS = ("gpt2-small", "smollm2-135m")
_SUFFIX = {"fp32": "", "q8": "_quantized", "q4": "_q4"}
_READ_IN_ROWS = ("Gather", "GatherBlockQuantized")


# --------------------------------------------------------------------------- engines


def session(path: Path, threads: int | None) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def bare_loop(graph: Path, section: dict[str, Any], ids: np.ndarray, threads: int | None) -> Callable[[], Any]:
    """Greedy decoding with nothing but session.run, argmax and the past handed back."""
    sess = session(graph, threads)
    outputs = [o.name for o in sess.get_outputs()]
    logits_at = outputs.index(section["logits"])
    present_at = [outputs.index(p) for p in section["present_outputs"]]
    empty = np.zeros((1, section["num_kv_heads"], 0, section["head_size"]), dtype=np.float32)
    positions = section["inputs"].get("position_ids")

    def run() -> list[int]:
        past = {name: empty for name in section["past_inputs"]}
        current, length, tokens = ids, ids.shape[1], []
        for _ in range(NEW):
            feed = {"input_ids": current, "attention_mask": np.ones((1, length), dtype=np.int64), **past}
            if positions:
                feed[positions] = np.arange(length - current.shape[1], length, dtype=np.int64)[None]
            out = sess.run(None, feed)
            token = int(out[logits_at][0, -1].argmax())
            tokens.append(token)
            past = {name: out[i] for name, i in zip(section["past_inputs"], present_at)}
            current, length = np.array([[token]], dtype=np.int64), length + 1
        return tokens

    return run


def load_engines(name: str, checkpoint: Path, bundle: Path, dtypes: list[str], threads: int | None,
                 optimum: bool) -> dict[str, Callable[[], Any]]:
    import torch
    import transformers

    from edgeformers.runtime import pipeline
    from edgeformers.runtime.bundle import Bundle

    section = Bundle.open(bundle).manifest.generation
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(checkpoint))
    batch = tokenizer(PROMPT, return_tensors="pt")
    ids = batch["input_ids"].numpy().astype(np.int64)
    greedy = dict(do_sample=False, max_new_tokens=NEW, min_new_tokens=NEW)
    engines: dict[str, Callable[[], Any]] = {}
    for dtype in dtypes:
        pipe = pipeline("text-generation", bundle, device="cpu", dtype=dtype, threads=threads)
        engines[f"edgeformers {dtype}"] = lambda p=pipe: p(PROMPT, return_full_text=False, **greedy)
        engines[f"bare ort {dtype}"] = bare_loop(bundle / "onnx" / f"model{_SUFFIX[dtype]}.onnx", section, ids, threads)
    if threads:
        torch.set_num_threads(threads)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(checkpoint)).eval()

    def torch_generate() -> Any:
        with torch.inference_mode():
            return model.generate(**batch, pad_token_id=tokenizer.eos_token_id, **greedy)

    engines["torch"] = torch_generate
    if optimum:
        from optimum.onnxruntime import ORTModelForCausalLM

        for dtype in ("fp32", "q8"):
            if dtype not in dtypes:
                continue
            options = session_options(threads)
            ort_model = ORTModelForCausalLM.from_pretrained(str(bundle), file_name=f"model{_SUFFIX[dtype]}.onnx",
                                                            use_cache=True, session_options=options)
            engines[f"optimum {dtype}"] = lambda m=ort_model: m.generate(**batch, pad_token_id=tokenizer.eos_token_id,
                                                                         **greedy)
    log(f"{name}: {len(engines)} engines loaded")
    return engines


def session_options(threads: int | None) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    return options


# --------------------------------------------------------------------------- floor


def weight_bytes_per_token(graph: Path) -> int:
    """Bytes of initializers one decoding step reads: all of them, except tables only an
    embedding lookup reads (it reads one row per token)."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    users: dict[str, set[str]] = {}
    for node in model.graph.node:
        for name in node.input:
            users.setdefault(name, set()).add(node.op_type)
    total = 0
    for init in model.graph.initializer:
        size = int(np.prod(init.dims)) * onnx.helper.tensor_dtype_to_np_dtype(init.data_type).itemsize
        if users.get(init.name) and users[init.name] <= set(_READ_IN_ROWS):
            continue
        total += size
    return total


def memory_bandwidth(megabytes: int = 512, repeats: int = 5) -> dict[str, float]:
    """GB/s of numpy copies (read + write bytes) and of a sum (read bytes), best of ``repeats``."""
    source = np.ones(megabytes * (1 << 20) // 8, dtype=np.float64)
    target = np.empty_like(source)
    copy = min(_timed(lambda: np.copyto(target, source)) for _ in range(repeats))
    read = min(_timed(lambda: source.sum()) for _ in range(repeats))
    return {"copy_gbs": 2 * megabytes * (1 << 20) / copy / 1e9, "read_gbs": megabytes * (1 << 20) / read / 1e9}


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# --------------------------------------------------------------------------- tied embeddings


_MEMORY_CHILD = PEAK_RSS_SNIPPET + '''
import json, sys, numpy as np, onnxruntime
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
before = rss()
options = onnxruntime.SessionOptions()
options.intra_op_num_threads = 1
s = onnxruntime.InferenceSession(sys.argv[1], sess_options=options, providers=["CPUExecutionProvider"])
loaded = rss()
print("''' + RESULT_MARKER + '''" + json.dumps({"session_mb": loaded - before, "peak_mb": _peak_rss_mb()}))
import os; os._exit(0)
'''


def tied_comparison(bundle: Path, threads: int | None, budget: float, quick: bool) -> dict[str, Any]:
    """The fp32 graph as exported (tied table stored once) against the same graph with the
    transposed copy written back: file size, session memory, ms/token."""
    import onnx
    import transformers

    from edgeformers.exporter.onnx_files import save_onnx
    from edgeformers.exporter.tied_embeddings import untie_model
    from edgeformers.runtime.bundle import Bundle

    tied = bundle / "onnx" / "model.onnx"
    untied_dir = BUNDLES_DIR / (bundle.name + "-untied")
    untied = untied_dir / "model.onnx"
    if not untied.is_file() or untied.stat().st_mtime < tied.stat().st_mtime:
        untied_dir.mkdir(parents=True, exist_ok=True)
        model = onnx.load(str(tied))
        if not untie_model(model):
            return {"skipped": "nothing tied in this graph"}
        save_onnx(model, untied, external_data=True)
        del model
    sizes = {k: sum(p.stat().st_size for p in g.parent.glob(g.name + "*")) / MB for k, g in
             (("tied", tied), ("untied", untied))}
    memory = {k: [run_child(_MEMORY_CHILD, [str(g)]).result for _ in range(1 if quick else 3)]
              for k, g in (("tied", tied), ("untied", untied))}
    section = Bundle.open(bundle).manifest.generation
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(bundle))
    ids = tokenizer(PROMPT, return_tensors="np")["input_ids"].astype(np.int64)
    loops = {"tied": bare_loop(tied, section, ids, threads), "untied": bare_loop(untied, section, ids, threads)}
    same = loops["tied"]() == loops["untied"]()
    timings = interleaved(loops, 1, budget, 1 if quick else 5, 30)
    return {"file_mb": sizes, "session_mb": {k: float(np.median([m["session_mb"] for m in v])) for k, v in memory.items()},
            "ms_per_token": {k: t.median_ms / NEW for k, t in timings.items()}, "same_tokens": same}


# --------------------------------------------------------------------------- summarizer


ARTICLE = ("The city council met on Tuesday to discuss the new budget for public transport. After hours of debate, "
           "members agreed to fund two new bus lines and to repair the old bridge over the river, which has been "
           "closed since the spring floods. The mayor said the plan would cut travel times for thousands of "
           "commuters, while critics warned that the costs could rise further next year.")


def summarizer(threads: int | None, budget: float, quick: bool) -> dict[str, Any]:
    import torch
    import transformers

    from edgeformers.runtime import pipeline

    checkpoint, bundle = ensure_model("distilbart-cnn")
    if threads:
        torch.set_num_threads(threads)
    # the same fixed-length work for both: 4 beams, exactly 40 tokens
    kwargs = dict(min_length=40, max_length=40, truncation=True)
    ours = pipeline("summarization", bundle, device="cpu", dtype="q8", threads=threads)
    theirs = transformers.pipeline("summarization", model=str(checkpoint), device="cpu")
    engines = {"edgeformers q8": lambda: ours(ARTICLE, **kwargs), "torch pipeline": lambda: theirs(ARTICLE, **kwargs)}
    timings = interleaved(engines, 1, budget, 2 if quick else 5, 20)
    return {name: t.as_dict() for name, t in timings.items()}


# --------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_timing_arguments(parser, default_budget=40.0)
    parser.add_argument("--threads", type=int, help="intra-op threads for every session and torch")
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma list of {', '.join(MODELS)}")
    parser.add_argument("--dtypes", default="fp32,q8,q4")
    parser.add_argument("--no-optimum", action="store_true")
    parser.add_argument("--no-beams", action="store_true", help="skip beam search (4 beams) vs greedy")
    parser.add_argument("--no-tied", action="store_true", help="skip the tied vs untied fp32 comparison")
    parser.add_argument("--summarizer", action="store_true", help="add distilbart-cnn q8 vs the torch pipeline")
    args = parser.parse_args()
    plan = run_plan(args, default_budget=40.0)
    dtypes = [d for d in args.dtypes.split(",") if d]
    warn_if_busy()
    results: dict[str, Any] = {"threads": args.threads, "new_tokens": NEW, "prompt": PROMPT, "models": {}}
    try:
        results["load_1m_start"] = os.getloadavg()[0]
    except OSError:
        pass
    bandwidth = memory_bandwidth()
    results["bandwidth"] = bandwidth
    print(f"memory bandwidth: {bandwidth['copy_gbs']:.1f} GB/s (numpy copy), {bandwidth['read_gbs']:.1f} GB/s "
          "(numpy sum)\n")
    for name in [m for m in args.models.split(",") if m]:
        checkpoint, bundle = ensure_model(name)
        engines = load_engines(name, checkpoint, bundle, dtypes, args.threads, not args.no_optimum)
        # a 64-token call takes seconds: --quick times each engine in 2 rounds after one warm-up call
        timings = interleaved(engines, plan.warmup, plan.budget, 2 if plan.quick else plan.min_rounds, 1000)
        per_token = {engine: t.median_ms / NEW for engine, t in timings.items()}
        floor = {d: weight_bytes_per_token(bundle / "onnx" / f"model{_SUFFIX[d]}.onnx") for d in dtypes}
        rows = []
        for engine, ms in per_token.items():
            dtype = engine.split()[-1] if engine.split()[-1] in floor else None
            floor_ms = floor[dtype] / (bandwidth["copy_gbs"] * 1e9) * 1e3 if dtype else float("nan")
            bare = per_token.get(f"bare ort {dtype}") if dtype else None
            rows.append([engine, ms, ratio(per_token["torch"], ms), ratio(ms, floor_ms),
                         ratio(ms, bare) if bare and not engine.startswith("bare") else float("nan")])
        print(f"### {name}: ms/token, 64 new tokens, batch 1, greedy\n")
        print(table(["engine", "ms/token", "x faster than torch", "x floor", "x bare loop"], rows, digits=2))
        print("\nfloor (weights read per token / copy bandwidth): " + ", ".join(
            f"{d} {b / MB:.0f} MB = {b / (bandwidth['copy_gbs'] * 1e9) * 1e3:.2f} ms" for d, b in floor.items()))
        entry: dict[str, Any] = {"ms_per_token": per_token, "weight_bytes_per_token": floor,
                                 "timings": {k: t.as_dict() for k, t in timings.items()}}
        targets = []
        for dtype, target in (("fp32", 2.0), ("q8", 6.0)):
            if f"edgeformers {dtype}" in per_token:
                value = ratio(per_token["torch"], per_token[f"edgeformers {dtype}"])
                targets.append([f"{dtype} vs torch", value, f">= {target}", verdict(value, target, True)])
        if "edgeformers q4" in per_token:
            value = ratio(per_token["edgeformers q4"], floor["q4"] / (bandwidth["copy_gbs"] * 1e9) * 1e3)
            targets.append(["q4 vs floor", value, "<= 1.5", verdict(value, 1.5, False)])
            if "edgeformers q8" in per_token:
                value = ratio(per_token["edgeformers q4"], per_token["edgeformers q8"])
                targets.append(["q4 / q8 time", value, "< 1", verdict(value, 0.999, False)])
        for dtype in dtypes:
            value = ratio(per_token[f"edgeformers {dtype}"], per_token[f"bare ort {dtype}"]) - 1
            targets.append([f"runtime overhead {dtype}", value, "<= 0.10", verdict(value, 0.10, False)])
        if not args.no_beams and "q8" in dtypes:
            beam = beam_vs_greedy(bundle, args.threads, plan.budget, plan.quick)
            entry["beams"] = beam
            targets.append(["4 beams / greedy per token (q8)", beam["ratio"], "<= 2.5", verdict(beam["ratio"], 2.5, False)])
        print("\n" + table(["target", "value", "goal", "verdict"], targets, digits=2) + "\n")
        if not args.no_tied and name == MODELS[0]:
            tied = tied_comparison(bundle, args.threads, plan.budget / 2, plan.quick)
            entry["tied"] = tied
            if "file_mb" in tied:
                print("#### gpt2-small fp32: tied table stored once vs twice\n")
                print(table(["graph", "file MB", "session MB", "ms/token"],
                            [[k, tied["file_mb"][k], tied["session_mb"][k], tied["ms_per_token"][k]]
                             for k in ("tied", "untied")], digits=1))
                print(f"\nsame greedy tokens: {tied['same_tokens']}\n")
        results["models"][name] = entry
    if args.summarizer:
        summary = summarizer(args.threads, plan.budget, plan.quick)
        results["summarizer"] = summary
        speedup = ratio(summary["torch pipeline"]["median_ms"], summary["edgeformers q8"]["median_ms"])
        print("### distilbart-cnn-sized summarizer (4 beams, 40 tokens)\n")
        print(table(["engine", "ms/call"], [[k, v["median_ms"]] for k, v in summary.items()]))
        print(f"\nq8 vs torch pipeline: {speedup:.2f}x (target >= 3: {verdict(speedup, 3.0, True)})\n")
    try:
        results["load_1m_end"] = os.getloadavg()[0]
    except OSError:
        pass
    log(f"results: {write_results(SCRIPT, results)}")


def beam_vs_greedy(bundle: Path, threads: int | None, budget: float, quick: bool) -> dict[str, Any]:
    """q8 pipeline, 64 new tokens both ways: time per generated token, 4 beams over greedy."""
    from edgeformers.runtime import pipeline

    pipe = pipeline("text-generation", bundle, device="cpu", dtype="q8", threads=threads)
    common = dict(do_sample=False, max_new_tokens=NEW, min_new_tokens=NEW, return_full_text=False)
    engines = {"greedy": lambda: pipe(PROMPT, **common), "4 beams": lambda: pipe(PROMPT, num_beams=4, **common)}
    timings = interleaved(engines, 1, budget / 2, 1 if quick else 5, 50)
    greedy, beams = timings["greedy"].median_ms / NEW, timings["4 beams"].median_ms / NEW
    return {"greedy_ms_per_token": greedy, "beams_ms_per_token": beams, "ratio": ratio(beams, greedy)}


if __name__ == "__main__":
    main()
