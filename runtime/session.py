"""One ONNX graph behind one onnxruntime session.

The session is created once and is safe to share between threads (onnxruntime's
``run`` is). Inputs are fed only if the graph declares them, so one code path serves
BERT (token_type_ids) and DistilBERT (none).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from edgeformers.models.errors import BundleError, DeviceError, ModelOutputError
from edgeformers.runtime.bundle_files import BundleFolder
from edgeformers.runtime.devices import DevicePlan
from edgeformers.runtime.onnx_scan import external_data_files
from edgeformers.runtime.telemetry import disable_events

logger = logging.getLogger(__name__)

_NUMPY_TYPES = {
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(bool)": np.bool_,
}


class OnnxModel:
    def __init__(
        self,
        path: Path,
        plan: DevicePlan,
        threads: int | None = None,
        strict: bool = False,
    ) -> None:
        import onnxruntime

        disable_events(onnxruntime)  # before the first session (runtime/telemetry.py)

        # edgeformers reads the graph's external-data locations itself and refuses any that
        # leaves the graph's folder, before onnxruntime opens anything (onnx_scan).
        folder = BundleFolder(path.parent)
        real = folder.path(path.name, f"{path.parent}: ONNX graph")
        external_data_files(folder, path.name, real, str(real))
        path = folder.for_onnxruntime(path.name, real)
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = onnxruntime.InferenceSession(str(path), sess_options=options, providers=plan.providers)
        except Exception as err:  # onnxruntime raises its own untyped errors
            raise BundleError(f"{path}: onnxruntime could not load this graph: {err}") from None
        self.path = path
        self.providers: list[str] = list(self.session.get_providers())
        wanted = plan.providers[0][0]
        if wanted not in self.providers:
            message = (
                f"onnxruntime dropped {wanted} for {path.name} (session runs on {', '.join(self.providers)}); "
                "check the CUDA/cuDNN libraries or the provider's log"
            )
            if strict:
                raise DeviceError(message)
            warnings.warn(message, RuntimeWarning, stacklevel=3)
        self.input_types = {i.name: _NUMPY_TYPES.get(i.type) for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def input_names(self) -> list[str]:
        return list(self.input_types)

    def run(self, feed: dict[str, np.ndarray], outputs: list[str] | None = None,
            checked: list[str] | None = None) -> dict[str, np.ndarray]:
        """Run the graph on ``feed``; ``outputs`` (default all) come back by name. Float
        outputs are refused if non-finite: all of them, or only ``checked`` (a decoder's
        KV presents feed the next step, whose logits are checked: a float64 sum over the
        whole cache each step would cost ~6% of a GPT-2 step for nothing)."""
        missing = [name for name in self.input_types if name not in feed]
        if missing:
            raise BundleError(
                f"{self.path.name} needs inputs {missing} that this pipeline does not produce; "
                f"it can feed {sorted(feed)}"
            )
        inputs: dict[str, Any] = {}
        for name, kind in self.input_types.items():
            value = feed[name]
            inputs[name] = value.astype(kind, copy=False) if kind is not None else value
        names = outputs or self.output_names
        try:
            values = self.session.run(names, inputs)
        except Exception as err:  # onnxruntime's own untyped errors (Fail, InvalidArgument ...)
            shapes = {name: tuple(value.shape) for name, value in inputs.items()}
            raise ModelOutputError(f"{self.path.name}: onnxruntime failed on inputs of shapes {shapes}: {err}") from None
        results = dict(zip(names, values))
        for name in names if checked is None else checked:
            check_finite(results[name], self.path.name, name)
        return results


def check_finite(value: np.ndarray, graph: str, output: str) -> None:
    """Refuse NaN/inf outputs (an fp16 overflow, a broken export) before they turn into
    labels, scores or invalid JSON. A float64 sum is one pass, propagates NaN and inf,
    and cannot overflow on float32/float16 values."""
    if value.dtype.kind == "f" and value.size and not np.isfinite(value.sum(dtype=np.float64)):
        bad = int(np.count_nonzero(~np.isfinite(value)))
        raise ModelOutputError(
            f"{graph}: output {output!r} has {bad} non-finite values (NaN or inf) of {value.size}; "
            "the graph or this variant is broken for this input (an fp16 variant may overflow: try fp32)"
        )
