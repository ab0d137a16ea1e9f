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

from edgeformers.models.errors import InputError

MARKER = "@@bench "

# Plain words; a model-specific tokenizer splits them into however many tokens it does,
# and the input length is then searched in words until it encodes to the asked tokens.
_WORDS = (
    "the new phone has a bright screen and a battery that lasts two days but the camera is "
    "disappointing in low light and the speaker sounds thin when music plays at full volume while "
    "the price is fair for what you get and the support team answered my questions quickly"
).split()
_FILLERS = ("a", "I", ".", ",")
QUESTION = "What is disappointing?"
LABELS = ("technology", "sports", "food")


def _text(count: int) -> str:
    return " ".join(_WORDS[i % len(_WORDS)] for i in range(count))


def _shapes(pipe: Any) -> tuple[Callable[[str], tuple[list[str], list[str] | None]], Callable[[str, int], Any]]:
    """For the pipeline's task: how one text is encoded (to count its tokens) and how a
    batch of it is passed to the pipeline, one model run per call where the task allows."""
    task = pipe.task
    if task == "question-answering":
        return (lambda text: ([QUESTION], [text]),
                lambda text, n: pipe(question=[QUESTION] * n, context=[text] * n, batch_size=n))
    if task == "zero-shot-classification":
        longest = max(LABELS, key=len)
        return (lambda text: ([text], [f"This example is {longest}."]),
                lambda text, n: pipe([text] * n, candidate_labels=list(LABELS), batch_size=n * len(LABELS)))
    if task == "fill-mask":
        mask = pipe.mask_token
        return (lambda text: ([f"{text} {mask}"], None),
                lambda text, n: pipe([f"{text} {mask}"] * n, batch_size=n))
    return (lambda text: ([text], None), lambda text, n: pipe([text] * n, batch_size=n))


def text_of_length(pipe: Any, tokens: int) -> tuple[str, int]:
    """A text whose model input (special tokens, question or hypothesis included) is
    ``tokens`` long, or as close below as the tokenizer allows; returns it and its length."""
    encode, _ = _shapes(pipe)

    def length(text: str) -> int:
        texts, pairs = encode(text)
        return len(pipe.tokenizer.encode(texts, pairs, truncation=False)[0].ids)

    shortest = length(_text(1))
    if shortest > tokens:
        raise InputError(f"--seq-len {tokens} is too short for this {pipe.task} bundle: its shortest input "
                         f"is {shortest} tokens")
    low, high = 1, max(2, tokens)
    while low < high:  # largest word count that still fits
        middle = (low + high + 1) // 2
        if length(_text(middle)) <= tokens:
            low = middle
        else:
            high = middle - 1
    text = _text(low)
    for _ in range(8):  # top up with one-token words where a long word overshot
        got = length(text)
        if got == tokens:
            break
        extended = next((f"{text} {f}" for f in _FILLERS if length(f"{text} {f}") <= tokens), None)
        if extended is None:
            break
        text = extended
    return text, length(text)


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
    _, call = _shapes(pipe)
    for seq_len in spec["seq_lens"]:
        text, tokens = text_of_length(pipe, seq_len)
        for batch in spec["batches"]:
            began = time.perf_counter()
            call(text, batch)
            first_ms = 1e3 * (time.perf_counter() - began)
            timings = []
            for _ in range(spec["runs"]):
                began = time.perf_counter()
                call(text, batch)
                timings.append(time.perf_counter() - began)
            p50 = percentile(timings, 0.5)
            emit({"kind": "row", "dtype": pipe.dtype, "batch": batch, "seq_len": seq_len, "tokens": tokens,
                  "first_call_ms": first_ms, "p50_ms": 1e3 * p50, "p95_ms": 1e3 * percentile(timings, 0.95),
                  "items_per_s": batch / p50 if p50 > 0 else None, "peak_rss_mb": peak_rss_mb()})


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
