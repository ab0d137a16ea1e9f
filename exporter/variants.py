"""Quantized variants of a bundle's fp32 graph, each checked against fp32 at the task level.

Used by ``export`` (inside its temporary folder) and by ``quantize`` (on an existing
bundle, where new files appear only once every requested variant is made).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from edgeformers.exporter.onnx_files import uses_external_data
from edgeformers.exporter.quantize import make_variant
from edgeformers.exporter.validate import reference_inputs, run_onnx, task_agreement
from edgeformers.models.dtypes import dtype_spec, onnx_file_name
from edgeformers.models.families import Family, check_supports
from edgeformers.runtime.manifest import Manifest, Variant, describe_files

logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


def parse_dtypes(dtypes: Iterable[str]) -> list[str]:
    """``["fp32,q8", "fp16"]`` -> ``["fp32", "q8", "fp16"]``: fp32 first (every variant is
    made from and checked against it), duplicates dropped, unknown names refused."""
    names = [d.strip() for item in dtypes for d in str(item).split(",") if d.strip()]
    for name in names:
        dtype_spec(name)
    return ["fp32", *[n for n in dict.fromkeys(names) if n != "fp32"]]


def make_checked_variant(
    bundle: Path,
    fp32: Path,
    dtype: str,
    family: Family,
    inputs: list[dict[str, Any]],
    fp32_results: list[dict[str, Any]],
    staging: Path | None = None,
) -> tuple[Variant, dict[str, Any]]:
    """Write the ``dtype`` variant beside ``fp32`` (or into ``staging`` under its final
    name, for the caller to move) and measure its task-level agreement with fp32."""
    final = fp32.with_name(onnx_file_name("model", dtype))
    target = (staging or final.parent) / final.name
    settings = make_variant(fp32, target, dtype, family, external_data=uses_external_data(fp32))
    report = task_agreement(fp32_results, run_onnx(target, inputs), inputs)
    return Variant(dtype, {"model": final.relative_to(bundle).as_posix()}, settings), report


def add_variants(bundle_path: str | Path, dtypes: Iterable[str], progress: Progress | None = None) -> Manifest:
    """Add variants to an existing bundle. Nothing changes on disk unless all succeed:
    they are made in a staging folder and moved beside the fp32 graph at the end."""
    import transformers

    from edgeformers.runtime.bundle import Bundle

    step = progress or logger.info
    bundle = Bundle.open(bundle_path, verify=True)
    manifest = bundle.manifest
    family = check_supports(manifest.model_type, manifest.task)
    fp32 = bundle.onnx_path("fp32")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(bundle.path))
    inputs = reference_inputs(tokenizer, manifest.processing.get("max_length"), manifest.inputs)
    fp32_results = run_onnx(fp32, inputs)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=fp32.parent))
    try:
        for dtype in parse_dtypes(dtypes)[1:]:
            step(f"making the {dtype} variant and checking it against fp32")
            variant, report = make_checked_variant(bundle.path, fp32, dtype, family, inputs, fp32_results, staging)
            manifest.variants[dtype] = variant
            manifest.validation[dtype] = report
        for made in staging.iterdir():
            os.replace(made, fp32.parent / made.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    manifest.files = describe_files(bundle.path)
    manifest.write(bundle.path)
    return manifest
