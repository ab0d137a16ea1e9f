"""The CLI through click's CliRunner, and its lazy loading in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from edgeformers.runtime.cli import cli
from tests.fixtures.floors import floor_args


@pytest.fixture(scope="module")
def classifier(bundle_factory):
    return bundle_factory("bert", "sequence-classification", "text-classification")


def invoke(*args: str, input: str | None = None):
    return CliRunner().invoke(cli, list(args), input=input)


def test_export_then_inspect_then_run(classifier, tmp_path):
    checkpoint, _ = classifier
    out = tmp_path / "sst2"
    result = invoke("export", str(checkpoint), str(out), "--task", "sentiment-analysis", "--dtype", "fp32,q8,fp16",
                    *floor_args("text-classification"))
    assert result.exit_code == 0, result.output
    assert "[2/4] validating fp32 against PyTorch" in result.output  # progress is shown
    result = invoke("inspect", str(out), "--verify")
    assert result.exit_code == 0, result.output
    for expected in ("text-classification", "onnx/model_quantized.onnx", "onnx/model_fp16.onnx", "checksums: all"):
        assert expected in result.output
    result = invoke("run", str(out), "I love this.", "--dtype", "q8", "-o", "top_k=null")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.output)
    assert len(scores) == 2 and {s["label"] for s in scores} == {"NEGATIVE", "POSITIVE"}


def test_run_reads_inputs_from_stdin(classifier):
    _, bundle = classifier
    result = invoke("run", str(bundle), "-", input="first line\n\nsecond line\n")
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)) == 2


def test_run_and_export_errors_are_one_line(classifier, tmp_path):
    _, bundle = classifier
    result = invoke("run", str(bundle), "x", "--dtype", "q4")
    assert result.exit_code == 1 and "BundleError" in result.output and "Traceback" not in result.output
    result = invoke("export", str(tmp_path / "nope"), str(tmp_path / "out"), "--task", "text-classification")
    assert result.exit_code == 1 and "does not exist" in result.output
    result = invoke("run", str(bundle), "x", "-o", "no-equals")
    assert result.exit_code == 1 and "KEY=VALUE" in result.output


def test_tasks_lists_tasks_and_families():
    result = invoke("tasks")
    assert result.exit_code == 0
    assert "text-classification (alias: sentiment-analysis)" in result.output
    assert "roberta" in result.output


def test_export_without_the_extra_says_what_to_install(monkeypatch, tmp_path):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    result = invoke("export", "x", str(tmp_path / "out"), "--task", "text-classification")
    assert result.exit_code == 1
    assert "pip install 'edgeformers[export]'" in result.output


def test_help_imports_neither_torch_nor_onnxruntime():
    code = (
        "import sys\n"
        "from edgeformers.runtime.cli import cli\n"
        "try:\n    cli(['--help'])\nexcept SystemExit:\n    pass\n"
        "try:\n    cli(['export', '--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'transformers', 'optimum', 'onnxruntime', 'numpy') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out, out
    assert "--dtype" in out  # export --help was printed


def test_validate_checks_a_bundle_against_its_source_again(classifier):
    _, bundle = classifier
    result = invoke("validate", str(bundle))
    assert result.exit_code == 0, result.output
    assert "fp32 vs pytorch" in result.output and "'passed': True" in result.output
    assert "q8 vs fp32" in result.output
    result = invoke("validate", str(bundle), "--atol", "1e-12")
    assert result.exit_code == 1 and "ValidationError" in result.output


def test_weights_live_beside_the_graph_unless_single_file(classifier, tmp_path):
    checkpoint, _ = classifier
    external, single = tmp_path / "external", tmp_path / "single"
    floor = floor_args("text-classification")  # random weights: q8 held to the test floor
    assert invoke("export", str(checkpoint), str(external), "--task", "text-classification", *floor).exit_code == 0
    assert invoke("export", str(checkpoint), str(single), "--task", "text-classification", "--single-file",
                  *floor).exit_code == 0
    assert sorted(p.name for p in (external / "onnx").iterdir()) == [
        "model.onnx", "model.onnx_data", "model_quantized.onnx", "model_quantized.onnx_data"]
    assert sorted(p.name for p in (single / "onnx").iterdir()) == ["model.onnx", "model_quantized.onnx"]
    config = json.loads((external / "config.json").read_text())
    assert config["transformers.js_config"]["use_external_data_format"] is True
    assert "transformers.js_config" not in json.loads((single / "config.json").read_text())
    manifest = json.loads((external / "edgeformers.json").read_text())
    assert "onnx/model.onnx_data" in manifest["files"]  # checksummed like every other file
    assert "Gather" in manifest["variants"]["q8"]["quantization"]["op_types"]
    for bundle in (external, single):
        result = invoke("run", str(bundle), "same input", "--dtype", "q8", "-o", "top_k=null")
        assert result.exit_code == 0, result.output
    assert invoke("run", str(external), "x", "-o", "top_k=null").output == invoke("run", str(single), "x", "-o", "top_k=null").output
