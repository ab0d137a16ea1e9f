"""Weight variants made from the fp32 graph: one entry point, :func:`make_variant`.

Dynamic int8 and fp16 live here; 4-bit (q4, q4f16) in ``quantize_4bit`` and static int8
in ``quantize_static``. Every maker returns the settings the manifest records under the
variant's ``quantization``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgeformers.exporter.onnx_files import restore, save_onnx
from edgeformers.models.dtypes import VARIANT_DTYPES
from edgeformers.models.errors import ExportError, InputError
from edgeformers.models.families import Family

logger = logging.getLogger(__name__)

# dtypes this exporter can make, beyond the fp32 export itself
QUANTIZABLE = VARIANT_DTYPES

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")

#: Ops fp16 keeps in fp32 (beside onnxruntime's own block list): those whose fp16 form
#: overflows or loses the small differences a model depends on — the pieces of a
#: decomposed LayerNorm/RMSNorm (x**2 and its mean overflow fp16's 65504 on the outlier
#: channels of larger models; Sqrt/Reciprocal of a tiny variance underflow),
#: Softmax (an exp over large logits) and Erf (GELU's tails). LayerNormalization and the
#: fused norms of ``--optimize`` (SkipLayerNormalization …) are not listed: they compute
#: in fp32 already (LayerNormalization's ``stash_type`` defaults to fp32), and blocking
#: them breaks graphs whose norm weights are shared (ModernBERT: "T bound to different
#: types"). Measured with ``benchmarks/bench_variants.py``: on CPU onnxruntime
#: computes these in fp32 internally anyway, so on all-MiniLM-L6-v2 and the tiny fixtures
#: the list changes neither cosine (1.0000 either way) nor labels; it guards GPUs, where
#: fp16 kernels run natively, at the cost of a few Casts.
FP16_KEEP_FP32: tuple[str, ...] = (
    "Softmax",
    "ReduceMean",
    "Pow",
    "Sqrt",
    "Reciprocal",
    "Erf",
)


@dataclass(frozen=True)
class VariantOptions:
    """User settings for the variants that have any (``export``/``quantize`` options).

    ``block_size``/``symmetric`` shape q4's blocks; ``calibration`` is a text file, one
    example per line, for int8-static (None: a varied built-in set — real data from the
    model's domain is better); ``calibration_method`` picks how activation ranges are
    read off it.
    """

    block_size: int = 32
    symmetric: bool = True
    calibration: Path | None = None
    calibration_method: str = "minmax"

    def check(self) -> None:
        """Refuse impossible settings before any work starts."""
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            raise InputError(f"--block-size {self.block_size}: expected a power of two >= 16 (default 32)")
        if self.calibration_method not in CALIBRATION_METHODS:
            raise InputError(f"--calibration-method {self.calibration_method!r}: expected one of "
                             f"{', '.join(CALIBRATION_METHODS)}")


def check_variant_options(dtypes: list[str], options: VariantOptions | None, task: str | None) -> None:
    """Refuse, before any work, bad q4 settings and an empty or wrong-modality calibration
    file (a dtype the family cannot take is ``families.check_dtypes``)."""
    options = options or VariantOptions()
    options.check()
    if options.calibration is not None:
        from edgeformers.exporter.quantize_static import read_calibration

        if "int8-static" not in dtypes:
            raise InputError(f"--calibration {options.calibration} is only read for the int8-static variant; "
                             "add int8-static to --dtype or drop --calibration")
        read_calibration(options.calibration, task)


def make_variant(
    source: Path,
    target: Path,
    dtype: str,
    family: Family,
    external_data: bool = True,
    options: VariantOptions | None = None,
) -> dict[str, Any]:
    """Write the ``dtype`` variant of ``source`` to ``target``; return its settings for the manifest."""
    options = options or VariantOptions()
    if dtype in ("q8", "int8", "uint8"):
        settings = _dynamic_int8(source, target, dtype, family)
        restore(target, external_data)
        return settings
    if dtype == "fp16":
        return _fp16(source, target, external_data)
    if dtype in ("q4", "q4f16"):
        from edgeformers.exporter.quantize_4bit import make_q4

        return make_q4(source, target, family, options, external_data, fp16=dtype == "q4f16")
    if dtype == "int8-static":
        from edgeformers.exporter.quantize_static import make_static_int8

        return make_static_int8(source, target, family, options, external_data)
    raise ExportError(f"dtype {dtype!r} cannot be made by this exporter yet; it makes: fp32, {', '.join(QUANTIZABLE)}")


def _dynamic_int8(source: Path, target: Path, dtype: str, family: Family) -> dict[str, Any]:
    from onnxruntime.quantization import QuantType

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
    from edgeformers.exporter.tied_embeddings import tie_int8, untied

    with untied(source) as (plain, pairs):  # quantizers take only initializer weights
        dynamic_int8(plain, target, settings["op_types"], family, weight_type)
    if pairs:  # the tied LM head and embedding table, stored once again (exporter/tied_embeddings.py)
        import onnx

        model = onnx.load(str(target))
        settings["tied_embeddings"] = [entry["table"] for entry in tie_int8(model, pairs)]
        save_onnx(model, target, external_data=True)
    return settings


def dynamic_int8(source: Path, target: Path, op_types: list[str], family: Family, weight_type: Any = None) -> None:
    """onnxruntime's dynamic quantization of ``op_types``, subgraphs included."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with quiet_preprocess_hint():
        quantize_dynamic(
            source,
            target,
            op_types_to_quantize=op_types,
            per_channel=family.quantize_per_channel,
            reduce_range=family.quantize_reduce_range,
            weight_type=weight_type or QuantType.QInt8,
            # Merged decoders keep their weights inside If-node subgraphs. Outputs of fused
            # contrib ops (--optimize) have no inferred type; they are float.
            extra_options={"EnableSubgraph": True, "DefaultTensorType": 1},  # onnx.TensorProto.FLOAT
        )


class _DropHint(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Please consider to run pre-processing")


@contextlib.contextmanager
def quiet_preprocess_hint() -> Iterator[None]:
    """onnxruntime logs a shape-inference hint on the root logger for every call; it is
    advice for static quantization and only noise here."""
    hint = _DropHint()
    root = logging.getLogger()
    root.addFilter(hint)
    try:
        yield
    finally:
        root.removeFilter(hint)


def to_fp16(model: Any) -> Any:
    """fp16 weights and compute with fp32 inputs/outputs, :data:`FP16_KEEP_FP32` ops kept fp32."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    # DequantizeLinear below opset 19 takes only fp32 scales (q4f16's int8 embeddings).
    block = sorted({*DEFAULT_OP_BLOCK_LIST, *FP16_KEEP_FP32, "DequantizeLinear"})
    return convert_float_to_float16(model, keep_io_types=True, op_block_list=block)


def _fp16(source: Path, target: Path, external_data: bool) -> dict[str, Any]:
    import onnx

    save_onnx(to_fp16(onnx.load(str(source))), target, external_data)
    return {"method": "cast", "keep_io_types": True, "fp32_ops": list(FP16_KEEP_FP32)}
