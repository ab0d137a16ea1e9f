"""The built wheel, installed with base dependencies only into a fresh virtual
environment, runs a bundle there with no torch, transformers or optimum installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from edgeformers.runtime import pipeline

ROOT = Path(__file__).resolve().parents[1]

CHECK = """
import importlib.util, json, sys
missing = [m for m in ("torch", "transformers", "optimum") if importlib.util.find_spec(m) is None]
from edgeformers.runtime import pipeline
clf = pipeline("sentiment-analysis", sys.argv[1], dtype="q8")
result = clf(["I love this.", "Café 🙂"], top_k=None)
heavy = [m for m in ("torch", "transformers", "optimum") if m in sys.modules]
print(json.dumps({"absent": missing, "loaded_heavy": heavy, "result": result, "providers": clf.providers}))
"""


@pytest.mark.slow
def test_wheel_runs_a_bundle_with_base_dependencies_only(bundle_factory, tmp_path):
    _, bundle = bundle_factory("distilbert", "sequence-classification", "text-classification")
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
    )
    (wheel,) = wheels.glob("edgeformers-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], check=True)

    clean_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    out = subprocess.run(
        [str(python), "-c", CHECK, str(bundle)], capture_output=True, text=True, check=True, cwd=tmp_path, env=clean_env
    ).stdout
    report = json.loads(out.strip().splitlines()[-1])
    assert report["absent"] == ["torch", "transformers", "optimum"]
    assert report["loaded_heavy"] == []
    expected = pipeline("sentiment-analysis", bundle, dtype="q8")(["I love this.", "Café 🙂"], top_k=None)
    assert report["result"] == json.loads(json.dumps(expected))

    cli = env_dir / "bin" / "edgeformers"
    ran = subprocess.run([str(cli), "run", str(bundle), "hello"], capture_output=True, text=True, env=clean_env, cwd=tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)[0]["label"] in ("NEGATIVE", "POSITIVE")
    # bench and slim are base-install commands: they run here, without the export extra
    figures = tmp_path / "bench.json"
    benched = subprocess.run([str(cli), "bench", str(bundle), "--device", "cpu", "--batch", "1", "--seq-len", "8",
                              "--runs", "1", "--json", str(figures)], capture_output=True, text=True, env=clean_env,
                             cwd=tmp_path)
    assert benched.returncode == 0, benched.stderr
    assert [row["dtype"] for row in json.loads(figures.read_text())["rows"]] == ["fp32", "q8"]
    slimmed = subprocess.run([str(cli), "slim", str(bundle), str(tmp_path / "q8-only"), "--dtype", "q8"],
                             capture_output=True, text=True, env=clean_env, cwd=tmp_path)
    assert slimmed.returncode == 0, slimmed.stderr
    assert list(json.loads((tmp_path / "q8-only" / "edgeformers.json").read_text())["variants"]) == ["q8"]
    refused = subprocess.run([str(cli), "export", "x", "y", "--task", "text-classification"],
                             capture_output=True, text=True, env=clean_env, cwd=tmp_path)
    assert refused.returncode == 1 and "pip install 'edgeformers[export]'" in refused.stderr
