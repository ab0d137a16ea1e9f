"""Device names -> onnxruntime execution providers, in one function.

``"auto"`` picks CUDA when usable, else CoreML on Apple, else CPU. An unavailable device
falls back to CPU with one warning, or raises with ``strict=True``.
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any

from edgeformers.models.errors import DeviceError

logger = logging.getLogger(__name__)

_PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}
_DEVICE_PATTERN = re.compile(r"^(auto|cpu|coreml|cuda)(?::(\d+))?$")


@dataclass(frozen=True)
class DevicePlan:
    """The device asked for, the one chosen, and the providers to request in order."""

    requested: str
    device: str
    providers: list[tuple[str, dict[str, Any]]] = field(default_factory=list)


def available_providers() -> list[str]:
    import onnxruntime

    return list(onnxruntime.get_available_providers())


def resolve_device(device: str = "auto", strict: bool = False) -> DevicePlan:
    match = _DEVICE_PATTERN.match(str(device).strip().lower())
    if not match:
        raise DeviceError(f"unknown device {device!r}; expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'coreml'")
    kind, index = match.group(1), match.group(2)
    available = available_providers()
    if kind == "auto":
        if _PROVIDERS["cuda"] in available:
            kind = "cuda"
        elif sys.platform == "darwin" and _PROVIDERS["coreml"] in available:
            kind = "coreml"
        else:
            kind = "cpu"
    elif kind != "cpu" and _PROVIDERS[kind] not in available:
        message = (
            f"device {device!r} is unavailable: onnxruntime here offers {', '.join(available)}"
            + ("" if kind != "cuda" else "; install onnxruntime-gpu with a matching CUDA for 'cuda'")
        )
        if strict:
            raise DeviceError(message)
        warnings.warn(message + "; falling back to CPU", RuntimeWarning, stacklevel=3)
        kind, index = "cpu", None
    options: dict[str, Any] = {"device_id": int(index)} if index is not None and kind == "cuda" else {}
    providers = [(_PROVIDERS[kind], options)]
    if kind != "cpu":
        providers.append((_PROVIDERS["cpu"], {}))
    name = kind if index is None or kind != "cuda" else f"cuda:{index}"
    return DevicePlan(requested=str(device), device=name, providers=providers)
