"""The exporter: checkpoint -> validated, quantized ONNX bundle. Needs ``edgeformers[export]``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgeformers.exporter.build import export as export

__all__ = ["export", "require_export_extra"]

_EXTRA_MODULES = ("torch", "transformers", "optimum.exporters.onnx", "onnx")


def require_export_extra() -> None:
    """Raise :class:`MissingExtraError` naming the install command if the export stack is absent."""
    import importlib.util

    from edgeformers.models.errors import MissingExtraError

    missing = []
    for name in _EXTRA_MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(name.split(".")[0])
    if missing:
        raise MissingExtraError(
            f"exporting needs {', '.join(missing)}, which are not installed; "
            "install the export extra: pip install 'edgeformers[export]', or pip install '.[export]' in a clone "
            "of the repository (with torch's CPU build: pip install torch==2.13.0 first)"
        )


def __getattr__(name: str) -> Any:
    if name == "export":
        from edgeformers.exporter.build import export

        return export
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
