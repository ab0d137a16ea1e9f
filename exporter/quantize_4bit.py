"""q4 and q4f16: block-wise weight-only ``MatMulNBits`` (onnxruntime's matmul_nbits_quantizer).

Each MatMul weight is cut into blocks of ``block_size`` values along its input dimension,
each block stored as 4-bit integers with its own scale (and zero point when asymmetric);
activations stay float. Merged decoders keep their weights inside If-node subgraphs, and
the quantizer walks those too.

Two choices beyond transformers.js's plain q4, both measured on all-MiniLM-L6-v2 with
``benchmarks/bench_variants.py``:

- the MatMuls the family lists in ``q4_8bit_nodes`` (BERT-style: value and FFN-up
  projections) stay block-wise 8-bit: pure 4-bit costs MiniLM a mean cosine of 0.967,
  with those two at 8 bits it keeps 0.989;
- the embedding Gather is int8 (as in q8): MatMulNBits only covers MatMuls, and a fp32
  word-embedding table would make q4 larger than q8 (54 MB against 23 MB on MiniLM;
  with it int8, 21 MB).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from edgeformers.exporter.onnx_files import restore, save_onnx
from edgeformers.models.families import Family

logger = logging.getLogger(__name__)

#: Families with any of these tasks generate token by token: one row of activations per step.
GENERATIVE_TASKS = frozenset({"text-generation", "text2text-generation", "summarization", "translation"})
#: MatMulNBits ``accuracy_level`` 4 quantizes each step's activations to int8 and runs int8
#: kernels. On this 2-core AVX2 machine a GPT-2-small q4 step takes ~140-175 ms that way and
#: ~415-430 ms with level 0 (dequantize to fp32, then sgemm), with the same greedy tokens
#: (benchmarks/bench_generation.py). Encoders keep the default: their agreement was measured
#: without it.
GENERATOR_ACCURACY_LEVEL = 4


def make_q4(
    source: Path, target: Path, family: Family, options: Any, external_data: bool, fp16: bool = False
) -> dict[str, Any]:
    """Write the q4 (or, with ``fp16``, q4f16) variant of ``source`` to ``target``."""
    import onnx

    from edgeformers.exporter.quantize import dynamic_int8, to_fp16
    from edgeformers.exporter.tied_embeddings import share_4bit_embedding, untie_model

    model = onnx.load(str(source))
    pairs = untie_model(model)  # a tied LM head is a MatMul weight again, for the quantizer
    generator = bool(family.tasks & GENERATIVE_TASKS)
    if generator:
        # GPT-2's Conv1D projections export as Gemm, which MatMulNBits does not take: as MatMul + Add
        # (what quantize_dynamic does for q8) they are 4-bit too. Encoders' classifier heads stay Gemm.
        from onnxruntime.quantization.onnx_model import ONNXModel

        ONNXModel(model).replace_gemm_with_matmul()
    accuracy = GENERATOR_ACCURACY_LEVEL if generator else None
    eight_bit = sorted(
        name for name in matmul_names(model.graph) if any(part in name for part in family.q4_8bit_nodes)
    )
    model = quantize_matmuls(model, bits=4, block_size=options.block_size, symmetric=options.symmetric,
                             exclude=eight_bit, accuracy_level=accuracy)
    if eight_bit:  # what is left as plain MatMul now is exactly the 8-bit list
        model = quantize_matmuls(model, bits=8, block_size=options.block_size, symmetric=options.symmetric,
                                 accuracy_level=accuracy)
    # the embedding lookup reads the head's 4-bit weight: the table is stored once, in 4 bits
    shared = share_4bit_embedding(model, pairs, options.block_size) if pairs else []
    with tempfile.TemporaryDirectory(prefix=".q4-", dir=target.parent) as scratch:
        weights_only = Path(scratch) / "matmuls.onnx"
        save_onnx(model, weights_only, external_data=True)
        dynamic_int8(weights_only, target, ["Gather"], family)
    if fp16:
        save_onnx(to_fp16(onnx.load(str(target))), target, external_data)
    restore(target, external_data)
    return {
        "method": "matmul_nbits",
        "bits": 4,
        "block_size": options.block_size,
        "symmetric": options.symmetric,
        "eight_bit_nodes": eight_bit,
        **({"accuracy_level": accuracy} if accuracy else {}),
        "embeddings": "4-bit, shared with the LM head (GatherBlockQuantized)" if shared else "int8 (dynamic Gather)",
        **({"fp16": {"keep_io_types": True}} if fp16 else {}),
    }


def quantize_matmuls(model: Any, bits: int, block_size: int, symmetric: bool, exclude: list[str] = (),
                     accuracy_level: int | None = None) -> Any:
    """Every MatMul with a constant weight (subgraphs too) as ``MatMulNBits``; returns the model."""
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    quantizer = MatMulNBitsQuantizer(
        model,
        bits=bits,
        block_size=block_size,
        is_symmetric=symmetric,
        accuracy_level=accuracy_level,
        nodes_to_exclude=list(exclude),
        op_types_to_quantize=("MatMul",),
    )
    quantizer.process()
    return quantizer.model.model


def matmul_names(graph: Any) -> list[str]:
    """Names of the MatMul nodes of ``graph`` and of every subgraph inside it."""
    import onnx

    names = []
    for node in graph.node:
        if node.op_type == "MatMul":
            names.append(node.name)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                names.extend(matmul_names(attr.g))
            elif attr.type == onnx.AttributeProto.GRAPHS:
                for sub in attr.graphs:
                    names.extend(matmul_names(sub))
    return names
