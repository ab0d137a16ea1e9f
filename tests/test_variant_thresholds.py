"""Variants are held to their task's agreement threshold (models/agreement.py): a broken
variant fails ``export`` and ``quantize`` with the figures and writes nothing;
``--allow-degraded`` keeps it, marked in the manifest, in ``inspect`` and with a warning
at load; ``validate`` refuses it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgeformers.exporter import agreement, variants
from edgeformers.models.agreement import AGREEMENT_RULES, agreement_rule
from edgeformers.models.errors import UnsupportedTaskError
from edgeformers.models.tasks import TASKS
from edgeformers.runtime import pipeline
from edgeformers.runtime.cli import cli
from tests.fixtures.floors import floor_for

LABELS = ["NEGATIVE", "NEUTRAL", "POSITIVE"]


def invoke(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def swap_labels(source: Path, dest: Path) -> None:
    """Write ``source`` to ``dest`` with the classifier's outputs rolled by one label
    (weight and bias of the last MatMul/Gemm): it still runs, but never answers fp32's label."""
    import onnx

    from edgeformers.exporter.onnx_files import save_onnx

    model = onnx.load(str(source))
    initializers = {t.name: t for t in model.graph.initializer}
    last = [n for n in model.graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in initializers][-1]
    trans_b = last.op_type == "Gemm" and any(a.name == "transB" and a.i for a in last.attribute)
    _roll(initializers[last.input[1]], axis=0 if trans_b else -1)
    if last.op_type == "Gemm" and len(last.input) > 2:
        bias = last.input[2]
    else:
        bias = next((i for n in model.graph.node if n.op_type == "Add" and last.output[0] in n.input
                     for i in n.input if i in initializers), None)
    if bias in initializers:
        _roll(initializers[bias], axis=-1)
    save_onnx(model, dest, external_data=False)


def _roll(tensor, axis: int) -> None:
    from onnx import numpy_helper

    values = numpy_helper.to_array(tensor)
    tensor.CopyFrom(numpy_helper.from_array(np.roll(values, 1, axis=axis), tensor.name))


def breaking(real, tmp_path: Path, only: str | None = None):
    """A make_variant that quantizes a label-swapped copy of fp32 (for ``only`` that dtype)."""

    def broken(source, target, dtype, *args, **kwargs):
        if only is None or dtype == only:
            swapped = tmp_path / f"swapped-{dtype}.onnx"
            swap_labels(Path(source), swapped)
            source = swapped
        return real(source, target, dtype, *args, **kwargs)

    return broken


@pytest.fixture
def broken_quantizer(monkeypatch, tmp_path_factory):
    monkeypatch.setattr(variants, "make_variant", breaking(variants.make_variant, tmp_path_factory.mktemp("swap")))


@pytest.fixture(scope="module")
def checkpoint(checkpoint_factory):
    return checkpoint_factory("bert", "sequence-classification", labels=LABELS)


def test_every_task_has_a_rule_with_a_metric_the_exporter_computes():
    assert set(AGREEMENT_RULES) == set(TASKS)
    for task, rule in AGREEMENT_RULES.items():
        assert 0 < rule.threshold <= 1, task
        assert rule.metric in agreement._METRICS, task
    assert agreement_rule("sentiment-analysis") is AGREEMENT_RULES["text-classification"]
    with pytest.raises(UnsupportedTaskError, match="unknown task"):
        agreement_rule("translation-xx")


def test_validation_set_is_large_and_varied():
    texts = agreement.AGREEMENT_TEXTS
    assert len(texts) >= 40 and len(set(texts)) == len(texts)
    assert any(len(t.split()) > 300 for t in texts) and any(len(t) <= 3 for t in texts)
    assert any("é" in t for t in texts) and any("東京" in t for t in texts) and any("🙂" in t for t in texts)
    masked = agreement.masked_texts("<mask>")
    assert all(t.count("<mask>") == 1 for t in masked)
    assert len(agreement.qa_pairs()) == len(texts) == len(agreement.zero_shot_pairs())


def test_a_healthy_export_records_the_figures(bundle_factory):
    """A random-weight fixture is exported with the test floor as ``--min-agreement``: the
    manifest records it as the user's bar, and ``validate`` holds the variant to it again."""
    _, bundle = bundle_factory("bert", "sequence-classification", "text-classification", labels=LABELS)
    report = json.loads((bundle / "edgeformers.json").read_text())["validation"]["q8"]
    rule = agreement_rule("text-classification")
    floor = floor_for("text-classification")
    assert report["metric"] == rule.metric == "label_agreement"
    assert report["threshold"] == floor and report["threshold_source"] == "user"
    assert report["passed"] is True and "degraded" not in report
    assert report["value"] == report["label_agreement"] >= floor
    assert report["inputs"] == len(agreement.AGREEMENT_TEXTS) == report["details"]["inputs"]
    result = invoke("validate", bundle)
    assert result.exit_code == 0, result.output
    assert "q8 vs fp32" in result.output


def test_a_broken_variant_fails_the_export_and_writes_nothing(checkpoint, tmp_path, broken_quantizer):
    out = tmp_path / "bundle"
    result = invoke("export", checkpoint, out, "--task", "text-classification", "--dtype", "fp32,q8")
    assert result.exit_code != 0, result.output
    message = result.output.strip().splitlines()[-1]
    assert message.startswith("Error: ValidationError: the q8 variant is below its task's threshold")
    threshold = agreement_rule("text-classification").threshold
    assert "label_agreement" in message and f"< {threshold:g} over 40 inputs" in message, message
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # the temporary folder is gone too


def test_allow_degraded_keeps_the_variant_marked(checkpoint, tmp_path, broken_quantizer):
    out = tmp_path / "bundle"
    result = invoke("export", checkpoint, out, "--task", "text-classification", "--dtype", "fp32,q8",
                    "--allow-degraded")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "edgeformers.json").read_text())["validation"]["q8"]
    assert report["passed"] is False and report["degraded"] is True
    threshold = agreement_rule("text-classification").threshold
    assert report["metric"] == "label_agreement" and report["threshold"] == threshold
    assert report["value"] < threshold

    shown = invoke("inspect", out)
    assert shown.exit_code == 0, shown.output
    q8_line = next(line for line in shown.output.splitlines() if line.strip().startswith("q8 "))
    assert "DEGRADED (label_agreement" in q8_line
    assert "DEGRADED" not in next(line for line in shown.output.splitlines() if line.strip().startswith("fp32 "))

    with pytest.warns(UserWarning, match="q8 variant was kept degraded: label_agreement"):
        pipeline("text-classification", out, dtype="q8", device="cpu")
    with warnings_as_errors():
        pipeline("text-classification", out, dtype="fp32", device="cpu")  # fp32 loads quietly

    checked = invoke("validate", out)
    assert checked.exit_code != 0
    lines = checked.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ValidationError: the q8 variant is below"), lines


def test_quantize_with_a_broken_variant_leaves_the_bundle_byte_identical(bundle_factory, tmp_path, monkeypatch,
                                                                         tmp_path_factory):
    _, made = bundle_factory("bert", "sequence-classification", "text-classification", dtypes=("fp32",),
                             labels=LABELS)
    bundle = Path(shutil.copytree(made, tmp_path / "bundle"))
    before = files_of(bundle)
    broken = breaking(variants.make_variant, tmp_path_factory.mktemp("swap"), only="q8")
    monkeypatch.setattr(variants, "make_variant", broken)
    result = invoke("quantize", bundle, "--dtype", "q8,fp16")
    assert result.exit_code != 0
    assert "ValidationError: the q8 variant is below its task's threshold: label_agreement" in result.output
    assert files_of(bundle) == before

    kept = invoke("quantize", bundle, "--dtype", "q8", "--allow-degraded")
    assert kept.exit_code == 0, kept.output
    report = json.loads((bundle / "edgeformers.json").read_text())["validation"]["q8"]
    assert report["degraded"] is True and report["passed"] is False


class warnings_as_errors:
    """Inside: any warning is an error."""

    def __enter__(self):
        import warnings

        self._catcher = warnings.catch_warnings()
        self._catcher.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        return self._catcher.__exit__(*exc)


def test_min_agreement_replaces_the_catalog_bar_and_is_recorded(checkpoint, tmp_path):
    """A user's bar is applied and recorded; one outside (0, 1] is refused before any work."""
    out = tmp_path / "bundle"
    refused = invoke("export", checkpoint, out, "--task", "text-classification", "--min-agreement", "1.5")
    assert refused.exit_code != 0 and "--min-agreement must be a number in (0, 1]" in refused.output
    assert not out.exists()
    kept = invoke("export", checkpoint, out, "--task", "text-classification", "--dtype", "fp32,q8",
                  "--min-agreement", "0.05")
    assert kept.exit_code == 0, kept.output
    report = json.loads((out / "edgeformers.json").read_text())["validation"]["q8"]
    assert report["threshold"] == 0.05 and report["threshold_source"] == "user" and report["passed"] is True


def test_validate_holds_a_variant_to_the_bar_it_was_accepted_under(checkpoint, tmp_path, broken_quantizer):
    """A broken variant kept (degraded) under a user's bar of 0.9 still fails ``validate``,
    which re-applies the recorded bar rather than the catalog's."""
    out = tmp_path / "bundle"
    kept = invoke("export", checkpoint, out, "--task", "text-classification", "--dtype", "fp32,q8",
                  "--min-agreement", "0.9", "--allow-degraded")
    assert kept.exit_code == 0, kept.output
    report = json.loads((out / "edgeformers.json").read_text())["validation"]["q8"]
    assert report["threshold"] == 0.9 and report["threshold_source"] == "user" and report["degraded"] is True
    checked = invoke("validate", out)
    assert checked.exit_code != 0 and "< 0.9 over 40 inputs" in checked.output, checked.output
