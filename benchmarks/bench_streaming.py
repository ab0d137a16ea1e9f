"""What streaming costs: the incremental detokenizer per token, and a stream against a
plain call on the same bundle (greedy, same tokens).

1. Detokenizer: GPT-2's real byte-level BPE (50257 ids) decoding a 2,000-token text of
   English, CJK and emoji one token at a time (what ``pipe.stream`` does per step),
   against one decode of the whole text (what the plain call does once), in µs per token.
2. Pipeline (with ``--bundle``): ms per generated token of ``pipe(prompt)`` and of
   ``"".join(pipe.stream(prompt))``, timed interleaved; the difference is the stream's
   per-token overhead, shown as a share of a step.

    python benchmarks/bench_streaming.py                                   # detokenizer only
    python benchmarks/bench_streaming.py --bundle .bench/bundles/gpt2-small --new 64
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import go_offline, interleaved, log, table, write_results  # noqa: E402

go_offline()

TEXT = ("The quick brown fox jumps over the lazy dog. 東京は日本の首都です。 We won the match 🎉🎉 and "
        "celebrated ❤️ in Zürich, didn't we? 北京是中国的首都。 Café au lait costs 7,50 €. ")


def detokenizer_cost(tokens: int = 2000, rounds: int = 5) -> dict[str, float]:
    from generation_models import gpt2_tokenizer_json
    from tokenizers import Tokenizer

    from edgeformers.runtime.generation.streaming import IncrementalDetokenizer

    tokenizer = Tokenizer.from_str(gpt2_tokenizer_json(50257))
    ids = tokenizer.encode(TEXT * (tokens // 40 + 1)).ids[:tokens]
    prompt, new = ids[:10], ids[10:]

    def decode(t: list[int]) -> str:
        return tokenizer.decode(t, skip_special_tokens=True)

    stream_s, whole_s = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        detokenizer = IncrementalDetokenizer(decode, prompt)
        text = "".join(detokenizer.add([token]) for token in new) + detokenizer.flush()
        stream_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        whole = decode(ids)[len(decode(prompt)):]
        whole_s.append(time.perf_counter() - start)
        assert text == whole, "the streamed text differs from the whole decode"
    return {"tokens": len(new), "stream_us_per_token": min(stream_s) / len(new) * 1e6,
            "whole_decode_us_per_token": min(whole_s) / len(new) * 1e6}


def pipeline_cost(bundle: Path, new: int, dtype: str | None, budget: float) -> dict[str, float]:
    from edgeformers.runtime import pipeline

    pipe = pipeline("text-generation", bundle, device="cpu", dtype=dtype)
    prompt = "The quick brown fox jumps over the lazy dog and"
    kwargs = {"do_sample": False, "max_new_tokens": new}
    # a greedy call that ends early on EOS would time fewer tokens: count the real ones
    stream = pipe.stream(prompt, **kwargs)
    "".join(stream)
    count = len(stream.token_ids)
    engines = {"call": lambda: pipe(prompt, **kwargs), "stream": lambda: "".join(pipe.stream(prompt, **kwargs))}
    timings = interleaved(engines, warmup=1, budget_s=budget, min_rounds=3, max_rounds=50)
    call, streamed = timings["call"].median_ms / count, timings["stream"].median_ms / count
    return {"tokens": count, "call_ms_per_token": call, "stream_ms_per_token": streamed,
            "overhead_ms_per_token": streamed - call, "overhead_share": (streamed - call) / call}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=None, help="a text-generation bundle to time call vs stream")
    parser.add_argument("--dtype", default=None)
    parser.add_argument("--new", type=int, default=64, help="new tokens per generation")
    parser.add_argument("--budget", type=float, default=20.0, help="seconds of interleaved rounds")
    args = parser.parse_args()
    results: dict[str, dict[str, float]] = {"detokenizer": detokenizer_cost()}
    d = results["detokenizer"]
    log(table(["detokenizer (GPT-2 BPE)", "tokens", "µs/token"],
              [["streamed, token by token", d["tokens"], d["stream_us_per_token"]],
               ["one decode of the whole text", d["tokens"], d["whole_decode_us_per_token"]]], digits=2))
    if args.bundle is not None:
        results["pipeline"] = p = pipeline_cost(args.bundle, args.new, args.dtype, args.budget)
        log(table(["pipeline", "tokens", "ms/token"],
                  [["pipe(prompt)", p["tokens"], p["call_ms_per_token"]],
                   ["''.join(pipe.stream(prompt))", p["tokens"], p["stream_ms_per_token"]]], digits=3))
        log(f"stream overhead: {p['overhead_ms_per_token'] * 1000:.0f} µs/token "
            f"({p['overhead_share'] * 100:.1f}% of a step)")
    log(f"results: {write_results('bench_streaming', results)}")


if __name__ == "__main__":
    main()
