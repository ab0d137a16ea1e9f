"""How bundles store ONNX graphs: by default the graph in ``model.onnx`` and its weights
in ``model.onnx_data`` beside it (optimum's and transformers.js's external-data naming).

External weights are memory-mapped by onnxruntime instead of parsed out of one protobuf:
on a DistilBERT-base q8 graph that took peak RSS from 279 to 103 MB and session creation
from ~0.27 to ~0.08 s at the same latency. ``external_data=False`` keeps single files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgeformers.models.dtypes import EXTERNAL_DATA_SUFFIX

_TWO_GB = 2**31 - 1


def data_file(graph: Path) -> Path:
    return graph.with_name(graph.name + EXTERNAL_DATA_SUFFIX)


def uses_external_data(graph: Path) -> bool:
    return data_file(graph).exists()


def save_onnx(model: Any, graph: Path, external_data: bool) -> None:
    """Write ``model`` to ``graph`` (replacing any older copy and weights file)."""
    import onnx

    for old in (graph, data_file(graph)):
        old.unlink(missing_ok=True)
    if not external_data and model.ByteSize() > _TWO_GB:
        external_data = True  # protobuf cannot hold more than 2 GB in one file
    if external_data:
        onnx.save_model(
            model,
            str(graph),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=data_file(graph).name,
            size_threshold=1024,
        )
        # onnx creates the weights file owner-only; give it the graph file's permissions.
        data_file(graph).chmod(graph.stat().st_mode & 0o777)
    else:
        onnx.save_model(model, str(graph))


def restore(graph: Path, external_data: bool) -> None:
    """Re-save ``graph`` in the requested layout (a no-op when it already is)."""
    if uses_external_data(graph) == external_data:
        return
    import onnx

    save_onnx(onnx.load(str(graph)), graph, external_data)
