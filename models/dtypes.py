"""Weight variants, named as transformers.js names them so a bundle is also a valid
transformers.js model repository."""

from __future__ import annotations

from dataclasses import dataclass

from edgeformers.models.errors import InputError


@dataclass(frozen=True)
class DtypeSpec:
    name: str
    suffix: str
    description: str


DTYPES: dict[str, DtypeSpec] = {
    spec.name: spec
    for spec in (
        DtypeSpec("fp32", "", "the export itself"),
        DtypeSpec("fp16", "_fp16", "float16 weights and compute, fp32 inputs/outputs"),
        DtypeSpec("q8", "_quantized", "dynamic int8: MatMul/Gemm weights int8, activations uint8"),
        DtypeSpec("int8", "_int8", "dynamic int8, weights forced to int8"),
        DtypeSpec("uint8", "_uint8", "dynamic int8, weights forced to uint8"),
        DtypeSpec("q4", "_q4", "4-bit block-wise weight-only MatMulNBits (sensitive projections 8-bit), embeddings int8"),
        DtypeSpec("q4f16", "_q4f16", "q4 then fp16, fp32 inputs/outputs"),
        # transformers.js has no name for static quantization (its dtypes: fp32, fp16, q8,
        # int8, uint8, q4, q4f16, bnb4), so this one is ours, with a suffix no other uses.
        DtypeSpec("int8-static", "_int8_static", "static int8 (QDQ), activation ranges calibrated ahead of time"),
    )
}

#: Every dtype the exporter makes from the fp32 graph; a family takes all unless its
#: catalog entry lists fewer (``Family.dtypes``).
VARIANT_DTYPES: tuple[str, ...] = ("q8", "int8", "uint8", "fp16", "q4", "q4f16", "int8-static")


def dtype_spec(name: str) -> DtypeSpec:
    try:
        return DTYPES[name]
    except KeyError:
        raise InputError(
            f"unknown dtype {name!r}; expected one of: {', '.join(DTYPES)}"
        ) from None


#: A graph's external weights live beside it as ``<graph file name>_data`` (optimum's and
#: transformers.js's naming: ``model.onnx`` + ``model.onnx_data``).
EXTERNAL_DATA_SUFFIX = "_data"


def onnx_file_name(component: str, dtype: str) -> str:
    """``("model", "q8")`` -> ``"model_quantized.onnx"``, the transformers.js file name."""
    return f"{component}{dtype_spec(dtype).suffix}.onnx"


def parse_onnx_file_name(file_name: str, components: tuple[str, ...]) -> tuple[str, str] | None:
    """Inverse of :func:`onnx_file_name`: ``(component, dtype)`` or None if it is not one."""
    if not file_name.endswith(".onnx"):
        return None
    stem = file_name[: -len(".onnx")]
    # Longest suffix first so "_q4f16" is not read as "_q4" plus junk.
    for spec in sorted(DTYPES.values(), key=lambda s: -len(s.suffix)):
        for component in components:
            if stem == component + spec.suffix:
                return component, spec.name
    return None


#: The variant to prefer per device when the caller asks for ``dtype="auto"``, best
#: first: int8 kernels are the fast path on CPUs, fp16 on GPUs; CoreML runs fp32/fp16.
RECOMMENDED_DTYPES: dict[str, tuple[str, ...]] = {
    "cpu": ("q8", "int8", "uint8", "fp32"),
    "cuda": ("fp16", "fp32", "q8"),
    "coreml": ("fp16", "fp32"),
}


def recommended_dtype(device: str, available: list[str] | tuple[str, ...]) -> str | None:
    """The best of ``available`` for ``device`` ("cuda:1" counts as "cuda"), or None."""
    order = RECOMMENDED_DTYPES.get(device.split(":")[0], RECOMMENDED_DTYPES["cpu"])
    return next((dtype for dtype in order if dtype in available), None)
