"""``--optimize O1|O2|O3``: onnxruntime's graph optimizations and transformer fusions,
baked into the fp32 graph before variants are made from it.

- O1: onnxruntime's basic optimizations (constant folding, redundant node elimination);
- O2: O1 plus the transformer fusions of ``onnxruntime.transformers.optimizer`` for the
  family's model type: Attention, (Skip/Embed)LayerNormalization, (Bias)Gelu;
- O3: O2 plus the tanh GELU approximation (FastGelu), which moves outputs slightly.

These mirror optimum's O1–O3. onnxruntime's own extended and layout levels are not baked
in: they emit kernels for the machine doing the export (layout is hardware-specific)
and every session applies them when it loads the graph anyway. The fused graph is the
bundle's fp32 graph, so a session loads the fusion once made instead of redoing pattern
matching — the offline-optimized graph is the cache.

The optimized graph is validated against PyTorch again at the family's tolerance by the
caller (``build``), and the level and the fused-op counts go into the manifest.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edgeformers.exporter.onnx_files import save_onnx
from edgeformers.models.errors import InputError, UnsupportedTaskError
from edgeformers.models.families import Family

logger = logging.getLogger(__name__)

LEVELS = ("O1", "O2", "O3")


def check_optimize(family: Family, level: str | None) -> None:
    """Refuse, before any work, an unknown level or a family with no fusions."""
    if level is None:
        return
    if level not in LEVELS:
        raise InputError(f"--optimize {level!r}: expected one of {', '.join(LEVELS)}")
    if family.optimizer_model_type is None and level != "O1":
        raise UnsupportedTaskError(
            f"--optimize {level}: onnxruntime has no transformer fusions for the {family.name} family; "
            "it takes --optimize O1 (basic graph optimizations) or none"
        )


def attention_shape(config: dict[str, Any]) -> tuple[int, int]:
    """(num_heads, hidden_size) from config.json; 0 lets onnxruntime read them off the graph."""
    heads = config.get("num_attention_heads") or config.get("n_heads") or 0
    hidden = config.get("hidden_size") or config.get("dim") or 0
    return int(heads), int(hidden)


def optimize_graph(graph: Path, family: Family, config: dict[str, Any], level: str, external_data: bool) -> dict[str, Any]:
    """Optimize ``graph`` in place at ``level``; returns what the manifest records."""
    import onnx
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    check_optimize(family, level)
    model = onnx.load(str(graph))
    before = _op_counts(model)
    heads, hidden = attention_shape(config)
    model_type = family.optimizer_model_type or "bert"
    options = FusionOptions(model_type)
    options.enable_gelu_approximation = level == "O3"
    optimizer = optimize_model(
        model,
        model_type=model_type,
        num_heads=heads,
        hidden_size=hidden,
        optimization_options=options,
        opt_level=1,
        use_gpu=False,
        only_onnxruntime=level == "O1",
    )
    optimized = optimizer.model
    after = _op_counts(optimized)
    fused = {op: n for op, n in sorted(after.items()) if n > before.get(op, 0) and op not in before}
    save_onnx(optimized, graph, external_data)
    report = {
        "level": level,
        "model_type": model_type,
        "num_heads": heads,
        "hidden_size": hidden,
        "fused_ops": fused,
        "nodes_before": sum(before.values()),
        "nodes_after": sum(after.values()),
    }
    logger.info("optimized %s at %s: %s", graph.name, level, report)
    return report


def _op_counts(model: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts
