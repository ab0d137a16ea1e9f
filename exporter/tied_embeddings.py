"""Tied embeddings stored once.

A checkpoint with tied input/output embeddings (GPT-2, Qwen3-0.6B, SmolLM2 …) holds one
``[vocab, hidden]`` table that the token-embedding Gather reads and the LM head multiplies
by. torch.onnx writes it twice: the table for the Gather and its transpose ``[hidden,
vocab]`` for the head's MatMul (GPT-2 small: 622 MB instead of ~475). Here the copy is
found by value (an initializer equal to another's transpose, or equal to it) and
replaced by what it is computed from:

- fp32 (:func:`tie_embeddings`): the head's MatMul reads ``Transpose(table)``.
  onnxruntime folds that constant when the session starts, so a step runs exactly the
  kernels it ran before; the transposed copy exists in memory only, not in the file.
  ``benchmarks/bench_generation.py --tied`` measures file size, session memory and
  ms/token before and after.
- q8 (:func:`tie_int8`): the quantizers need the weight as an initializer, so they read an
  untied copy (:func:`untied`). Afterwards the head's int8 weight is stored once, as the
  table (``[vocab, hidden]``): the head reads ``Transpose`` of it and the embedding Gather
  reads it too, dequantized with the head's scale (onnxruntime's own Gather quantization
  would have made a second, uint8 table).
- q4 (:func:`share_4bit_embedding`): the head's ``MatMulNBits`` weight is the table's rows
  in 4-bit blocks along hidden (``[vocab, blocks, block/2]`` bytes); the embedding lookup
  becomes ``GatherBlockQuantized`` over those same bytes, so no int8 table is written.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from edgeformers.exporter.onnx_files import save_onnx, uses_external_data

logger = logging.getLogger(__name__)

#: Tables smaller than this are not worth a rewrite (and tiny equal constants, shape
#: vectors and the like, must never be merged).
MIN_ELEMENTS = 4096
#: Names the Transpose nodes this module writes, so :func:`untie_model` finds only those.
TIE_SUFFIX = "/tied_transpose"

Pair = tuple[str, str]  # (table read by the Gather, [hidden, vocab] copy read by the head)


def find_tied(graph: Any, min_elements: int = MIN_ELEMENTS) -> list[tuple[str, str, str]]:
    """``(table, copy, relation)`` for each 2-D initializer ``copy`` that equals ``table``
    transposed ("transpose") or as is ("equal"); a table some Gather reads is kept.

    Only ``graph``'s own initializers are compared, but their consumers may sit anywhere
    below it: optimum's merged decoder (an If node on ``use_cache_branch``) keeps the
    weights of both branches in the outer graph, so the Transpose written here in the
    outer graph serves the LM head of either branch (outer values are visible inside)."""
    from onnx import numpy_helper

    sizes = {init.name: tuple(init.dims) for init in graph.initializer
             if len(init.dims) == 2 and int(np.prod(init.dims)) >= min_elements}
    # a merged decoder's Gathers sit inside its If branches, reading the outer graph's table
    gathered = {node.input[0] for node in _all_nodes(graph) if node.op_type == "Gather"}
    names = sorted(sizes, key=lambda n: (n not in gathered, n))
    candidates = [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
                  if sizes[b] == sizes[a] or sizes[b] == sizes[a][::-1]]
    if not candidates:
        return []
    arrays = {init.name: numpy_helper.to_array(init) for init in graph.initializer
              if init.name in {n for pair in candidates for n in pair}}
    found, used = [], set()
    for table, copy in candidates:
        if table in used or copy in used:
            continue
        a, b = arrays[table], arrays[copy]
        if a.dtype != b.dtype:
            continue
        if b.shape == a.shape[::-1] and a.shape[0] != a.shape[1] and np.array_equal(a, b.T):
            found.append((table, copy, "transpose"))
        elif b.shape == a.shape and np.array_equal(a, b):
            found.append((table, copy, "equal"))
        else:
            continue
        used.add(copy)
    return found


def tie_model(model: Any, min_elements: int = MIN_ELEMENTS) -> list[dict[str, Any]]:
    """Rewrite ``model`` in place so each tied copy is computed from its table; returns
    what was tied (names, relation, bytes no longer stored)."""
    graph = model.graph
    sizes = {init.name: _nbytes(init) for init in graph.initializer}
    tied = []
    for table, copy, relation in find_tied(graph, min_elements):
        _drop_initializer(graph, copy)
        if relation == "transpose":
            _insert_transpose(graph, table, copy)
        else:
            _rename_inputs(graph, copy, table)
        tied.append({"table": table, "copy": copy, "relation": relation, "bytes_saved": sizes[copy]})
    return tied


def tie_embeddings(graph_path: Path) -> list[dict[str, Any]]:
    """Store each tied table of the graph file once (its layout, external data or not, kept)."""
    import onnx

    model = onnx.load(str(graph_path))
    tied = tie_model(model)
    if tied:
        save_onnx(model, graph_path, uses_external_data(graph_path))
        for entry in tied:
            logger.info("tied %s to %s (%s): %.1f MB no longer stored twice", entry["copy"], entry["table"],
                        entry["relation"], entry["bytes_saved"] / 1e6)
    return tied


def untie_model(model: Any) -> list[Pair]:
    """The inverse, in memory: each ``Transpose(table)`` this module wrote becomes an
    initializer again, for quantizers that only take initializer weights."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    pairs = []
    for index in reversed(range(len(graph.node))):
        node = graph.node[index]
        if node.op_type == "Transpose" and node.name.endswith(TIE_SUFFIX) and node.input[0] in inits:
            table = numpy_helper.to_array(inits[node.input[0]])
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(table.T), node.output[0]))
            pairs.append((node.input[0], node.output[0]))
            del graph.node[index]
    return pairs


@contextmanager
def untied(source: Path) -> Iterator[tuple[Path, list[Pair]]]:
    """``(source, [])``, or where this module tied tables, ``(untied copy, pairs)``: the
    copy is a temporary file beside ``source``, removed afterwards."""
    import onnx

    skeleton = onnx.load(str(source), load_external_data=False)
    if not any(n.op_type == "Transpose" and n.name.endswith(TIE_SUFFIX) for n in skeleton.graph.node):
        yield source, []
        return
    model = onnx.load(str(source))
    pairs = untie_model(model)
    if not pairs:
        yield source, []
        return
    with tempfile.TemporaryDirectory(prefix=".untied-", dir=source.parent) as scratch:
        copy = Path(scratch) / source.name
        save_onnx(model, copy, external_data=True)
        yield copy, pairs


def tie_int8(model: Any, pairs: list[Pair]) -> list[dict[str, Any]]:
    """After dynamic int8 of an untied graph: store each pair's int8 head weight once, as
    the table, read by the head through ``Transpose`` and by the embedding Gather
    (dequantized with the head's scale and zero point, in place of its own table)."""
    from onnx import numpy_helper

    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    tied = []
    for table, copy in pairs:
        weight, scale, zero = f"{copy}_quantized", f"{copy}_scale", f"{copy}_zero_point"
        users = _consumers(graph, weight)
        gathers = _consumers(graph, f"{table}_quantized")
        if not (weight in inits and scale in inits and zero in inits and users and gathers
                and all(n.op_type == "MatMulInteger" and list(n.input).index(weight) == 1 for n in users)
                and all(n.op_type == "Gather" and n.input[0] == f"{table}_quantized" for n in gathers)):
            logger.info("q8: %s and %s were not quantized as one weight; both kept", table, copy)
            continue
        dequants = [d for g in gathers for d in _consumers(graph, g.output[0])]
        if not all(d.op_type == "DequantizeLinear" for d in dequants):
            continue
        shared = f"{table}_tied_quantized"
        values = numpy_helper.to_array(inits[weight])
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(values.T), shared))
        saved = _nbytes(inits[weight]) + _nbytes(inits[f"{table}_quantized"])
        for node in gathers:
            node.input[0] = shared
        for node in dequants:
            node.input[1], node.input[2] = scale, zero
        _drop_initializer(graph, weight)
        _insert_transpose(graph, shared, weight)
        _drop_unused(graph)
        tied.append({"table": shared, "copy": weight, "relation": "transpose", "bytes_saved": saved - values.nbytes})
    return tied


def share_4bit_embedding(model: Any, pairs: list[Pair], block_size: int) -> list[dict[str, Any]]:
    """After MatMulNBits of an untied graph: the embedding Gather of each pair reads the
    head's 4-bit weight through ``GatherBlockQuantized`` (symmetric blocks only: the
    default zero point 8 of both ops then agrees) and its fp32 table is dropped."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {init.name: init for init in graph.initializer}
    shared = []
    for table, copy in pairs:
        # a merged decoder has one head and one lookup per If branch, all reading the outer graph's weights
        heads = [n for n in _all_nodes(graph) if n.op_type == "MatMulNBits" and n.input[1].startswith(copy + "_Q")]
        gathers = [(owner, n) for owner, n in _owned_nodes(graph) if table in n.input]
        if (not heads or len({tuple(h.input) for h in heads}) != 1 or len(heads[0].input) > 3
                or heads[0].input[1] not in inits or heads[0].input[2] not in inits
                or any(_attr(h, "bits") != 4 or _attr(h, "block_size") != block_size for h in heads) or not gathers
                or not all(n.op_type == "Gather" and n.input[0] == table and _attr(n, "axis", 0) == 0
                           for _, n in gathers)):
            logger.info("q4: the embedding %s keeps its own table (head not plain symmetric 4-bit)", table)
            continue
        head = heads[0]
        vocab, blocks, blob = inits[head.input[1]].dims
        hidden = _attr(head, "K")
        scales_3d = f"{head.input[2]}/as_blocks"
        graph.initializer.append(numpy_helper.from_array(np.array([vocab, blocks, 1], dtype=np.int64),
                                                         scales_3d + "_shape"))
        graph.initializer.append(numpy_helper.from_array(np.array([hidden], dtype=np.int64), f"{table}/hidden"))
        graph.node.insert(0, helper.make_node("Reshape", [head.input[2], scales_3d + "_shape"], [scales_3d],
                                              name=scales_3d))
        for index, (owner, gather) in enumerate(gathers):
            prefix, out = f"{gather.name or table}/block_quantized_{index}", gather.output[0]
            nodes = [
                helper.make_node("GatherBlockQuantized", [head.input[1], gather.input[1], scales_3d],
                                 [prefix + "_blocks"], name=prefix, domain="com.microsoft",
                                 bits=4, block_size=block_size, gather_axis=0, quantize_axis=2),
                helper.make_node("Shape", [gather.input[1]], [prefix + "_ids_shape"], name=prefix + "/shape"),
                helper.make_node("Concat", [prefix + "_ids_shape", f"{table}/hidden"], [prefix + "_out_shape"],
                                 name=prefix + "/concat", axis=0),
                helper.make_node("Reshape", [prefix + "_blocks", prefix + "_out_shape"], [out],
                                 name=prefix + "/reshape"),
            ]
            position = list(owner.node).index(gather)  # where the lookup was: its inputs exist by then
            owner.node.remove(gather)
            for node in reversed(nodes):
                owner.node.insert(position, node)
        saved = _nbytes(inits[table])
        _drop_initializer(graph, table)
        shared.append({"table": head.input[1], "copy": table, "relation": "4-bit blocks",
                       "bytes_saved": saved, "shape": [vocab, blocks, blob]})
    if shared and not any(o.domain == "com.microsoft" for o in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return shared


# --------------------------------------------------------------------------- graph edits


def _insert_transpose(graph: Any, table: str, output: str) -> None:
    from onnx import helper

    # Same output name as the dropped initializer: every consumer stays as it was.
    graph.node.insert(0, helper.make_node("Transpose", [table], [output], name=output + TIE_SUFFIX, perm=[1, 0]))


def _all_nodes(graph: Any) -> Iterator[Any]:
    import onnx

    for node in graph.node:
        yield node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                yield from _all_nodes(sub)


def _owned_nodes(graph: Any) -> Iterator[tuple[Any, Any]]:
    """``(graph the node belongs to, node)`` for every node, subgraphs included."""
    import onnx

    for node in graph.node:
        yield graph, node
        for attr in node.attribute:
            for sub in ([attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)):
                yield from _owned_nodes(sub)


def _consumers(graph: Any, name: str) -> list[Any]:
    return [node for node in _all_nodes(graph) if name in node.input]


def _attr(node: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for attr in node.attribute:
        if attr.name == name:
            return helper.get_attribute_value(attr)
    return default


def _drop_initializer(graph: Any, name: str) -> None:
    for index, init in enumerate(graph.initializer):
        if init.name == name:
            del graph.initializer[index]
            break
    for index, graph_input in enumerate(graph.input):
        if graph_input.name == name:  # IR < 4 lists initializers as inputs too
            del graph.input[index]
            break


def _drop_unused(graph: Any) -> None:
    used = {name for node in _all_nodes(graph) for name in node.input}
    for init in list(graph.initializer):
        if init.name not in used:
            _drop_initializer(graph, init.name)


def _rename_inputs(graph: Any, old: str, new: str) -> None:
    for node in _all_nodes(graph):
        for index, name in enumerate(node.input):
            if name == old:
                node.input[index] = new


def _nbytes(init: Any) -> int:
    from onnx import helper

    return int(np.prod(init.dims)) * np.dtype(helper.tensor_dtype_to_np_dtype(init.data_type)).itemsize
