"""Weight variants made from the fp32 graph: dynamic int8 and fp16."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from edgeformers.exporter.onnx_files import restore, save_onnx
from edgeformers.models.errors import ExportError
from edgeformers.models.families import Family

logger = logging.getLogger(__name__)

# dtypes this exporter can make, beyond the fp32 export itself
QUANTIZABLE = ("q8", "int8", "uint8", "fp16")


def make_variant(source: Path, target: Path, dtype: str, family: Family, external_data: bool = True) -> dict[str, Any]:
    """Write the ``dtype`` variant of ``source`` to ``target``; return its settings for the manifest."""
    if dtype in ("q8", "int8", "uint8"):
        settings = _dynamic_int8(source, target, dtype, family)
        restore(target, external_data)
        return settings
    if dtype == "fp16":
        return _fp16(source, target, external_data)
    raise ExportError(f"dtype {dtype!r} cannot be made by this exporter yet; it makes: fp32, {', '.join(QUANTIZABLE)}")


def _dynamic_int8(source: Path, target: Path, dtype: str, family: Family) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    weight_type = QuantType.QUInt8 if dtype == "uint8" else QuantType.QInt8
    settings = {
        "method": "dynamic",
        "weight_type": weight_type.name,
        "per_channel": family.quantize_per_channel,
        "reduce_range": family.quantize_reduce_range,
        # Gather too: the word-embedding table is a third of a BERT-base and int8 costs it
        # nothing measurable (MiniLM cosine unchanged), while halving file size and load memory.
        "op_types": ["MatMul", "Gemm", "Attention", "Gather"],
    }
    with _quiet_preprocess_hint():
        quantize_dynamic(
            source,
            target,
            op_types_to_quantize=settings["op_types"],
            per_channel=settings["per_channel"],
            reduce_range=settings["reduce_range"],
            weight_type=weight_type,
            # Merged decoders keep their weights inside If-node subgraphs.
            extra_options={"EnableSubgraph": True},
        )
    return settings


class _DropHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Please consider to run pre-processing")


@contextlib.contextmanager
def _quiet_preprocess_hint() -> Iterator[None]:
    """onnxruntime logs a shape-inference hint on the root logger for every call; it is
    advice for static quantization and only noise here."""
    hint = _DropHint()
    root = logging.getLogger()
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)


def _fp16(source: Path, target: Path, external_data: bool) -> dict[str, Any]:
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    save_onnx(model, target, external_data)
    return {"method": "cast", "keep_io_types": True}
