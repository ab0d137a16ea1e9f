"""What a first-time user sees on stderr: one line per warning, and during an export only
edgeformers' own progress, not the deprecation notices of the libraries underneath."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import warnings

from click.testing import CliRunner

from edgeformers.runtime import devices
from edgeformers.runtime.cli import cli

# The export's own lines: "resolving SOURCE", "[n/4] step", "wrote OUTPUT".
PROGRESS = re.compile(r"^(resolving |\[\d/\d\] |wrote )")


def test_a_device_fallback_is_one_warning_line(bundle_factory, monkeypatch):
    _, bundle = bundle_factory("bert", "sequence-classification", "text-classification")
    monkeypatch.setattr(devices, "available_providers", lambda: ["CPUExecutionProvider"])
    shown_before = warnings.showwarning

    result = CliRunner().invoke(cli, ["run", str(bundle), "hello", "--device", "cuda"])

    assert result.exit_code == 0, result.output
    assert result.stderr.splitlines() == [
        "warning: device 'cuda' is unavailable: onnxruntime here offers CPUExecutionProvider; "
        "install onnxruntime-gpu with a matching CUDA for 'cuda'; falling back to CPU"
    ]
    assert json.loads(result.stdout)[0]["label"] in ("NEGATIVE", "POSITIVE")
    assert warnings.showwarning is shown_before  # the CLI's format ends with the command


def test_an_export_shows_only_edgeformers_progress(checkpoint_factory, tmp_path):
    """In a fresh process, as a user runs it, with every warning shown (PYTHONWARNINGS=default)."""
    checkpoint = checkpoint_factory("roberta", "masked-lm")
    env = dict(os.environ, PYTHONWARNINGS="default", HF_HUB_OFFLINE="1")
    command = [sys.executable, "-c", "from edgeformers.runtime.cli import main; main()", "export", str(checkpoint),
               str(tmp_path / "bundle"), "--task", "fill-mask", "--dtype", "fp32"]

    ran = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path)

    assert ran.returncode == 0, ran.stderr
    assert [line for line in ran.stderr.splitlines() if not PROGRESS.match(line)] == []
    assert ran.stdout.startswith("fp32 vs pytorch:")
