"""``pipeline()``: the one entry point, shaped like ``transformers.pipeline``."""

from __future__ import annotations

import logging
import os
import warnings
from typing import Any

from edgeformers.models.dtypes import dtype_spec, recommended_dtype
from edgeformers.models.errors import BundleError, UnsupportedTaskError
from edgeformers.models.tasks import resolve_task
from edgeformers.runtime.bundle import Bundle
from edgeformers.runtime.devices import resolve_device
from edgeformers.runtime.pipelines import pipeline_class

logger = logging.getLogger(__name__)

# Which variant to load when the caller names none: the reference export first.
_DTYPE_PREFERENCE = ("fp32", "q8", "fp16", "int8", "uint8", "q4", "q4f16")


def pipeline(
    task: str | None = None,
    model: str | os.PathLike[str] | None = None,
    *,
    device: str = "auto",
    dtype: str | None = None,
    strict: bool = False,
    threads: int | None = None,
    verify: bool = False,
) -> Any:
    """Load a bundle for ``task`` and return a callable pipeline.

    ``task`` may be an alias ("sentiment-analysis", "ner") or None to take the bundle's
    own. ``dtype`` picks a variant ("fp32", "q8", "fp16" …): None takes fp32 when the
    bundle has it (the reference export), "auto" the catalog's best for the device (q8 on
    CPU, fp16 on CUDA); only variants whose files are present count. ``verify=True``
    checks the sha256 of every file the loaded variant reads (graphs, external weights,
    tokenizer and config files) against the manifest, and refuses a file it reads that
    the manifest does not list; sizes are always checked. A bundle with nothing to
    verify (no manifest, or an empty ``files``) gives a ``UserWarning``.
    """
    if model is None:
        raise BundleError("pipeline() needs a bundle folder: pipeline(task, 'path/to/bundle')")
    spec = resolve_task(task) if task is not None else None
    bundle = Bundle.open(model, task=spec.name if spec else None, verify=verify)
    bundle_task = bundle.manifest.task
    if spec is None:
        spec = resolve_task(bundle_task)
    elif spec.name != bundle_task and not _compatible(spec.name, bundle_task):
        raise UnsupportedTaskError(
            f"bundle {bundle.path} was exported for {bundle_task!r}, not {spec.name!r}; "
            f"re-export it with --task {spec.name}"
        )
    plan = resolve_device(device, strict=strict)
    # Only variants whose files are all there: a device may ship just the one it runs.
    available = bundle.present_variants()
    if dtype is None:
        dtype = next((d for d in _DTYPE_PREFERENCE if d in available), None) or next(iter(available), None)
    elif dtype == "auto":
        dtype = recommended_dtype(plan.device, available) or next(iter(available), None)
    else:
        dtype_spec(dtype)  # unknown names get the typed error listing the known ones
    if dtype is None:
        listed = ", ".join(bundle.manifest.variants) or "none"
        raise BundleError(f"{bundle.path}: none of the variants listed ({listed}) has its files in the folder")
    bundle.variant(dtype)  # a listed but absent variant: which files are missing, which variants are here
    cls = pipeline_class(spec.name)
    result = cls(bundle, dtype, plan, threads=threads, strict=strict, requested_task=task)
    logger.info("loaded %s (%s) on %s", bundle.path, dtype, ", ".join(result.providers))
    _warn_if_degraded(bundle, dtype)
    return result


def _warn_if_degraded(bundle: Bundle, dtype: str) -> None:
    """A variant kept with ``--allow-degraded`` loads (the user chose to keep it) with one
    warning at load time, not per call: its answers move from fp32's more than its task's
    threshold allows."""
    report = bundle.manifest.validation.get(dtype)
    if isinstance(report, dict) and report.get("degraded"):
        warnings.warn(
            f"{bundle.path}: the {dtype} variant was kept degraded: {report.get('metric')} "
            f"{report.get('value')} against fp32 is below the task's threshold {report.get('threshold')}",
            UserWarning,
            stacklevel=3,
        )


def _compatible(requested: str, exported: str) -> bool:
    """Tasks that run on another task's graph (zero-shot on an NLI classifier)."""
    seq2seq = {"text2text-generation", "summarization", "translation"}  # one encoder-decoder graph pair serves all
    return (requested, exported) in {("zero-shot-classification", "text-classification")} or (
        requested in seq2seq and exported in seq2seq)
