"""The catalog: what each architecture family and task needs.

Pure Python and stdlib only, so the exporter and the torch-free runtime can both read it.
"""

from edgeformers.models.dtypes import DTYPES, DtypeSpec, dtype_spec, onnx_file_name
from edgeformers.models.errors import (
    BundleError,
    ChecksumError,
    DeviceError,
    EdgeformersError,
    ExportError,
    InputError,
    MissingExtraError,
    UnsupportedTaskError,
    ValidationError,
)
from edgeformers.models.families import FAMILIES, Family, family_for
from edgeformers.models.tasks import TASKS, TaskSpec, resolve_task

__all__ = [
    "DTYPES",
    "FAMILIES",
    "TASKS",
    "BundleError",
    "ChecksumError",
    "DeviceError",
    "DtypeSpec",
    "EdgeformersError",
    "ExportError",
    "Family",
    "InputError",
    "MissingExtraError",
    "TaskSpec",
    "UnsupportedTaskError",
    "ValidationError",
    "dtype_spec",
    "family_for",
    "onnx_file_name",
    "resolve_task",
]
