"""image-classification speed: a ViT-base-sized random-weight classifier (12 layers, 768 wide,
patch 16, 224x224, 1000 labels), runtime fp32 and q8 against ``transformers.pipeline`` on
torch, at batch 1 and 8 of 640x480 images, plus the share of a runtime call spent in the
numpy/Pillow preprocessing (decode excluded: the images are PIL images already).

Engines are timed round by round, interleaved (``_common.interleaved``), so the ratios hold
on a shared machine even when absolute milliseconds wander. Nothing here asserts.

    python benchmarks/bench_vision.py [--quick] [--budget 30] [--threads N]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import (  # noqa: E402
    BUNDLES_DIR,
    MODELS_DIR,
    add_timing_arguments,
    go_offline,
    interleaved,
    log,
    machine_info,
    ratio,
    run_plan,
    table,
    verdict,
    warn_if_busy,
    write_results,
)

go_offline()

BATCHES = (1, 8)
TARGET_SPEEDUP = 1.5  # issue 8: runtime >= 1.5x torch
TARGET_PREPROCESS_SHARE = 0.15  # issue 8: numpy preprocessing under 15% of a call


def make_checkpoint() -> Path:
    """The ViT-base shape with random weights and ViTImageProcessor's defaults (224, bilinear)."""
    out = MODELS_DIR / "vit-base-random"
    if (out / "model.safetensors").is_file():
        return out
    import torch
    import transformers

    log("building a ViT-base-sized random checkpoint")
    torch.manual_seed(0)
    config = transformers.ViTConfig(num_labels=1000, id2label={i: f"class_{i}" for i in range(1000)},
                                    label2id={f"class_{i}": i for i in range(1000)})
    transformers.ViTForImageClassification(config).eval().save_pretrained(out)
    transformers.ViTImageProcessor().save_pretrained(out)
    return out


def export(checkpoint: Path) -> Path:
    out = BUNDLES_DIR / "vit-base-random"
    if not (out / "edgeformers.json").is_file():
        log("exporting fp32 + q8 (random weights: speed only, variants kept with --allow-degraded)")
        cmd = [str(Path(sys.executable).with_name("edgeformers")), "export", str(checkpoint), str(out),
               "--task", "image-classification", "--dtype", "fp32,q8", "--force", "--allow-degraded"]
        subprocess.run(cmd, check=True, capture_output=True)
    return out


def images(count: int) -> list[Any]:
    from edgeformers.exporter.vision_inputs import synthetic_image

    patterns = ("gradient", "noise", "stripes", "checkerboard", "disc")
    return [synthetic_image(480, 640, seed=i, pattern=patterns[i % 5]) for i in range(count)]


def preprocess_share(pipe: Any, batch: list[Any], rounds: int) -> tuple[float, float]:
    """(median ms of preprocessing alone, median ms of the whole call), interleaved."""
    from edgeformers.runtime.vision.images import image_batch

    pre, full = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        pipe.feed(image_batch(batch)[0])
        pre.append(time.perf_counter() - start)
        start = time.perf_counter()
        pipe(batch, top_k=1, batch_size=len(batch))
        full.append(time.perf_counter() - start)
    return statistics.median(pre) * 1000, statistics.median(full) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_timing_arguments(parser, default_budget=30.0)
    parser.add_argument("--threads", type=int, help="intra-op threads for both onnxruntime and torch")
    args = parser.parse_args()
    plan = run_plan(args, default_budget=30.0)
    warn_if_busy()

    import torch
    import transformers

    from edgeformers.runtime import pipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    bundle = export(make_checkpoint())
    ours = {dtype: pipeline("image-classification", bundle, device="cpu", dtype=dtype, threads=args.threads)
            for dtype in ("fp32", "q8")}
    theirs = transformers.pipeline("image-classification", model=str(make_checkpoint()), device="cpu")

    results: dict[str, Any] = {"machine": machine_info(), "plan": plan.__dict__, "threads": args.threads}
    rows, ratios, shares = [], [], []
    for size in BATCHES:
        batch = images(size)
        engines = {
            "runtime fp32": lambda b=batch: ours["fp32"](b, top_k=1, batch_size=len(b)),
            "runtime q8": lambda b=batch: ours["q8"](b, top_k=1, batch_size=len(b)),
            "transformers (torch)": lambda b=batch: theirs(b, top_k=1, batch_size=len(b)),
        }
        log(f"timing batch {size}")
        timings = interleaved(engines, plan.warmup, plan.budget, plan.min_rounds, max_rounds=1000)
        torch_ms = timings["transformers (torch)"].median_ms
        for name, timing in timings.items():
            rows.append([name, size, timing.median_ms, timing.median_ms / size, timing.p90_ms])
        for dtype in ("fp32", "q8"):
            speedup = ratio(torch_ms, timings[f"runtime {dtype}"].median_ms)
            ratios.append([f"runtime {dtype} vs torch", size, speedup, TARGET_SPEEDUP,
                           verdict(speedup, TARGET_SPEEDUP, True)])
        pre_ms, call_ms = preprocess_share(ours["fp32"], batch, plan.min_rounds)
        share = pre_ms / call_ms
        shares.append(["fp32", size, pre_ms, call_ms, share * 100, TARGET_PREPROCESS_SHARE * 100,
                       verdict(share, TARGET_PREPROCESS_SHARE, False)])
        results[f"batch_{size}"] = {name: t.as_dict() for name, t in timings.items()}
        results[f"batch_{size}"]["preprocess_ms"], results[f"batch_{size}"]["call_ms"] = pre_ms, call_ms

    print("\n## ViT-base-sized image classification (640x480 PIL images)\n")
    print(table(["engine", "batch", "median ms", "ms / image", "p90 ms"], rows, digits=1))
    print()
    print(table(["ratio", "batch", "speedup", "target", "verdict"], ratios, digits=2))
    print()
    print(table(["preprocessing", "batch", "preprocess ms", "call ms", "share %", "target %", "verdict"], shares,
                digits=1))
    results["ratios"], results["preprocess"] = ratios, shares
    log(f"results: {write_results('bench_vision', results)}")


if __name__ == "__main__":
    main()
