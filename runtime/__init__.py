"""The torch-free runtime: ``pipeline(task, bundle, device=...)``.

Importing this package is cheap: onnxruntime, tokenizers and numpy load when the first
pipeline is built, not before.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edgeformers.models.errors import (
    BundleError,
    ChecksumError,
    DeviceError,
    EdgeformersError,
    InputError,
    ModelOutputError,
    UnsupportedTaskError,
)
from edgeformers.runtime import telemetry as _telemetry

# Before anything imports onnxruntime, whose import alone records a telemetry event.
_telemetry.default_off()

if TYPE_CHECKING:
    from edgeformers.runtime.api import pipeline as pipeline

__all__ = [
    "BundleError",
    "ChecksumError",
    "DeviceError",
    "EdgeformersError",
    "InputError",
    "ModelOutputError",
    "UnsupportedTaskError",
    "pipeline",
]


def __getattr__(name: str) -> Any:
    if name == "pipeline":
        from edgeformers.runtime.api import pipeline

        return pipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
