"""Checking an exported graph: every fp32 output against PyTorch, and each quantized
variant against fp32 at the task level, held to the task's threshold from the catalog
(``edgeformers.models.agreement``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from edgeformers.models.errors import ExportError, ValidationError
from edgeformers.models.tasks import TaskSpec

logger = logging.getLogger(__name__)

# Short, accented, CJK/emoji and over-long texts: the cases where exports go wrong.
VALIDATION_TEXTS: tuple[str, ...] = (
    "I love this.",
    "This was a terrible waste of time and money, and I want it back.",
    "Café au lait in Zürich costs 5 € — naïve pricing?",
    "東京は日本の首都です 🙂",
    " ".join(["The quick brown fox jumps over the lazy dog."] * 80),
)


def reference_inputs(tokenizer: Any, max_length: int | None, graph_inputs: list[str]) -> list[dict[str, np.ndarray]]:
    """Each validation text alone, then all of them as one padded batch; only the inputs
    the graph declares, plus the attention mask that task-level checks pool with."""
    kwargs = {"truncation": True, "max_length": max_length} if max_length else {"truncation": True}
    singles = [dict(tokenizer(text, return_tensors="np", **kwargs)) for text in VALIDATION_TEXTS]
    batch = dict(tokenizer(list(VALIDATION_TEXTS), padding=True, return_tensors="np", **kwargs))
    keep = set(graph_inputs) | {"attention_mask"}
    return [{k: v for k, v in feed.items() if k in keep} for feed in (*singles, batch)]


def run_onnx(path: Path, inputs: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray]]:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    outputs = [o.name for o in session.get_outputs()]
    results = []
    for feed in inputs:
        values = session.run(outputs, {n: model_input(feed[n]) for n in names})
        results.append(dict(zip(outputs, values)))
    return results


def model_input(value: np.ndarray) -> np.ndarray:
    """Token ids and masks as int64, pixel values and audio features as float32."""
    return value.astype(np.int64) if np.issubdtype(value.dtype, np.integer) or value.dtype == np.bool_ \
        else value.astype(np.float32)


def reference_tokenizer(folder: Path) -> Any:
    """The bundle's own tokenizer, loaded by transformers: the reference side of validation.
    Never its own code: a folder whose tokenizer_config.json has ``auto_map`` is refused."""
    import transformers

    from edgeformers.exporter.source import refuse_custom_code

    refuse_custom_code(folder, folder)
    return transformers.AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)


def torch_outputs(
    checkpoint: Path, spec: TaskSpec, inputs: list[dict[str, np.ndarray]], names: list[str]
) -> list[dict[str, np.ndarray]]:
    """The PyTorch model's outputs on ``inputs``, for the graph's output ``names``."""
    import torch
    import transformers

    auto_class = getattr(transformers, f"AutoModelFor{spec.head}" if spec.head else "AutoModel")
    try:
        model = auto_class.from_pretrained(str(checkpoint), trust_remote_code=False).eval()
    except Exception as err:
        raise ExportError(f"{checkpoint}: transformers could not load it as {auto_class.__name__}: {err}") from err
    results = []
    with torch.inference_mode():
        for feed in inputs:
            output = model(**{k: torch.from_numpy(model_input(v)) for k, v in feed.items()})
            results.append({name: output[name].float().numpy() for name in names})
    return results


def compare_outputs(
    onnx_results: list[dict[str, np.ndarray]],
    torch_results: list[dict[str, np.ndarray]],
    atol: float,
) -> dict[str, Any]:
    """Max abs difference per output over all inputs; raises listing every output over ``atol``."""
    diffs: dict[str, float] = {}
    for got, want in zip(onnx_results, torch_results):
        for name, expected in want.items():
            if got[name].shape != expected.shape:
                raise ValidationError(
                    f"output {name!r}: ONNX shape {got[name].shape} differs from PyTorch {expected.shape}"
                )
            diffs[name] = max(diffs.get(name, 0.0), float(np.abs(got[name] - expected).max(initial=0.0)))
    failures = {name: diff for name, diff in diffs.items() if not diff <= atol}
    report = {
        "reference": "pytorch",
        "inputs": len(torch_results),
        "texts": list(VALIDATION_TEXTS),
        "atol": atol,
        "max_abs_diff": diffs,
        "passed": not failures,
    }
    if failures:
        listing = ", ".join(f"{name}: {diff:.3g}" for name, diff in failures.items())
        raise ValidationError(f"the ONNX export differs from PyTorch beyond atol={atol:g} ({listing})")
    return report


def validate_bundle(
    bundle_path: str | Path, source: str | None = None, atol: float | None = None, allow_pickle: bool = False,
    min_agreement: float | None = None,
) -> dict[str, Any]:
    """Check an existing bundle again: fp32 against the PyTorch checkpoint (the manifest's
    source unless ``source`` names another), every other variant against fp32 by the
    task's agreement metric. Returns the reports; raises :class:`ValidationError` if fp32
    is beyond ``atol`` or any variant is below its task's threshold (one kept with
    ``--allow-degraded`` included: it is still below). The source is checked like an
    export's: no custom code, pickle weights only with ``allow_pickle``. A variant is held to
    ``min_agreement`` when given, else to the threshold it was accepted under (a user's
    ``--min-agreement`` recorded at export), else to the catalog's."""
    from edgeformers.exporter.agreement import AgreementCheck
    from edgeformers.exporter.source import resolve_source
    from edgeformers.models.families import check_supports
    from edgeformers.models.tasks import resolve_task
    from edgeformers.runtime.bundle import Bundle

    bundle = Bundle.open(bundle_path, verify=True)
    manifest = bundle.manifest
    family = check_supports(manifest.model_type, manifest.task)
    origin = source or manifest.source.get("hub_id") or manifest.source.get("path")
    if not origin:
        raise ExportError(f"{bundle.path}: the manifest records no source; pass the checkpoint with --source")
    checkpoint = resolve_source(origin, None if source else manifest.source.get("revision"), allow_pickle=allow_pickle)
    if manifest.generation.get("kind") == "encoder-decoder":  # two graphs per variant: exporter/seq2seq.py
        from edgeformers.exporter.seq2seq import kind_for, revalidate_two_graphs

        return revalidate_two_graphs(bundle, checkpoint.path, family.atol if atol is None else atol, min_agreement,
                                     kind_for(manifest.task, family.name))
    fp32 = bundle.onnx_path("fp32")
    max_length = manifest.processing.get("max_length")
    tolerance = family.atol if atol is None else atol
    if manifest.task == "text-generation":
        from edgeformers.exporter.generation import validate_decoder

        reports = {"fp32": validate_decoder(checkpoint.path, bundle.path, fp32, tolerance)}
    else:
        from edgeformers.exporter import audio_inputs, vision_inputs

        inputs = (vision_inputs.reference_inputs(bundle.path, manifest.inputs)
                  if manifest.task in vision_inputs.VISION_TASKS
                  else audio_inputs.reference_inputs(bundle.path, manifest.inputs)
                  if manifest.task in audio_inputs.AUDIO_TASKS
                  else reference_inputs(reference_tokenizer(bundle.path), max_length, manifest.inputs))
        fp32_results = run_onnx(fp32, inputs)
        expected = torch_outputs(checkpoint.path, resolve_task(manifest.task), inputs, manifest.outputs)
        reports = {"fp32": compare_outputs(fp32_results, expected, tolerance)}
    others = [dtype for dtype in manifest.variants if dtype != "fp32"]
    if others:
        check = AgreementCheck.prepare(bundle.path, manifest.task, max_length, manifest.inputs, fp32, min_agreement,
                                       generation=manifest.generation)
        for dtype in others:
            reports[dtype] = check.measure(bundle.onnx_path(dtype))
    return held_to_recorded_thresholds(reports, manifest, min_agreement)


def held_to_recorded_thresholds(reports: dict[str, Any], manifest: Any, min_agreement: float | None) -> dict[str, Any]:
    """Re-validation's verdict on freshly measured variant ``reports``: a variant accepted
    under a user's ``--min-agreement`` is held to that threshold again unless another is
    given now; any variant below its threshold is a ValidationError listing them all."""
    from edgeformers.exporter.agreement import describe_failure

    for dtype, report in reports.items():
        recorded = manifest.validation.get(dtype) or {}
        if dtype != "fp32" and min_agreement is None and recorded.get("threshold_source") == "user":
            threshold = float(recorded["threshold"])
            report.update(threshold=threshold, threshold_source="user", passed=bool(report["value"] >= threshold))
    failures = [describe_failure(dtype, report) for dtype, report in reports.items()
                if dtype != "fp32" and not report["passed"]]
    if failures:
        raise ValidationError("; ".join(failures))
    return reports


def note_max_diff(diffs: dict[str, float], name: str, got: np.ndarray, want: np.ndarray) -> None:
    """Keep the largest absolute difference seen for ``name``; a shape mismatch fails at once."""
    if got.shape != want.shape:
        raise ValidationError(f"{name}: ONNX shape {got.shape} differs from PyTorch {want.shape}")
    diffs[name] = max(diffs.get(name, 0.0), float(np.abs(got - want).max(initial=0.0)))
