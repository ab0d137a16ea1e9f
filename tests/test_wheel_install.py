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


@pytest.fixture(scope="module")
def base_env(tmp_path_factory) -> Path:
    """A fresh virtual environment holding the built wheel and its base dependencies only."""
    root = tmp_path_factory.mktemp("wheel")
    wheels = root / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
    )
    (wheel,) = wheels.glob("edgeformers-*.whl")
    env_dir = root / "venv"
    venv.create(env_dir, with_pip=True)
    subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)], check=True)
    return env_dir


CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


@pytest.mark.slow
def test_wheel_runs_a_bundle_with_base_dependencies_only(bundle_factory, base_env, tmp_path):
    _, bundle = bundle_factory("distilbert", "sequence-classification", "text-classification")
    env_dir, clean_env = base_env, CLEAN_ENV
    python = env_dir / "bin" / "python"
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


GENERATE = """
import importlib.util, json, sys
from edgeformers.runtime import pipeline
gen = pipeline("text-generation", sys.argv[1])
summ = pipeline("summarization", sys.argv[2])
asr = pipeline("automatic-speech-recognition", sys.argv[3])
out = {"gen": gen("Hello there", do_sample=False, max_new_tokens=6),
       "beams": summ("The quick brown fox jumps over the lazy dog.", max_new_tokens=6, num_beams=2),
       "asr": asr(sys.argv[4]),
       "absent": [m for m in ("torch", "transformers", "optimum", "soundfile", "scipy", "PIL")
                  if importlib.util.find_spec(m) is None],
       "loaded_heavy": [m for m in ("torch", "transformers", "optimum") if m in sys.modules]}
print(json.dumps(out))
"""


@pytest.mark.slow
def test_generation_and_speech_run_with_base_dependencies_only(bundle_factory, base_env, tmp_path):
    """Decoder-only and encoder-decoder generation, and speech recognition on a WAV file, in
    the base install: no torch/transformers/optimum, no soundfile, scipy or Pillow."""
    from edgeformers.exporter.audio_inputs import synthetic_audio
    from tests.fixtures.audio_checkpoints import build_audio_checkpoint, export_bundle
    from tests.fixtures.seq2seq_checkpoints import build_seq2seq_checkpoint

    _, decoder = bundle_factory("gpt2", "causal-lm", "text-generation", dtypes=("fp32",))
    seq2seq = export_bundle(build_seq2seq_checkpoint("bart", tmp_path / "bart"), tmp_path / "bart-bundle",
                            "summarization", ("fp32",))
    speech = export_bundle(build_audio_checkpoint(tmp_path / "w2v"), tmp_path / "w2v-bundle",
                           "automatic-speech-recognition", ("fp32",))
    import wave

    wav = tmp_path / "clip.wav"
    samples = (synthetic_audio("speechlike", 1.2, 16000, seed=3) * 32767).astype("int16")
    with wave.open(str(wav), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(samples.tobytes())
    ran = subprocess.run([str(base_env / "bin" / "python"), "-c", GENERATE, str(decoder), str(seq2seq), str(speech),
                          str(wav)], capture_output=True, text=True, cwd=tmp_path, env=CLEAN_ENV)
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout.strip().splitlines()[-1])
    assert report["absent"] == ["torch", "transformers", "optimum", "soundfile", "scipy", "PIL"]
    assert report["loaded_heavy"] == []
    assert report["gen"] == pipeline("text-generation", decoder)("Hello there", do_sample=False, max_new_tokens=6)
    assert report["beams"] == pipeline("summarization", seq2seq)("The quick brown fox jumps over the lazy dog.",
                                                                 max_new_tokens=6, num_beams=2)
    assert report["asr"] == pipeline("automatic-speech-recognition", speech)(str(wav))
