"""audio-classification (wav2vec2 sequence classification): labels and scores equal
transformers.pipeline("audio-classification") on the same fp32 checkpoint, with top_k and
function_to_apply; q8 held to fp32's labels; bad inputs are InputErrors."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")

from edgeformers.exporter.audio_inputs import synthetic_audio  # noqa: E402
from edgeformers.models.errors import InputError  # noqa: E402
from edgeformers.runtime import pipeline  # noqa: E402
from edgeformers.runtime.audio.resample import resample  # noqa: E402
from tests.fixtures.audio_checkpoints import AUDIO_LABELS, build_audio_checkpoint, export_bundle  # noqa: E402
from tests.fixtures.floors import floor_for  # noqa: E402

TASK = "audio-classification"
#: the catalog families this module proves (tests/test_families.py TESTED_ELSEWHERE)
ARCHS = ("wav2vec2", "ast")
RATE = 16000
SCORE_ATOL = 1e-5
CLIPS = [("tones", 0.4), ("speechlike", 1.2), ("noise", 2.0), ("chirp", 3.3), ("quiet", 0.7)]


@pytest.fixture(scope="module")
def classifier(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("audio-cls")
    checkpoint = build_audio_checkpoint(root / "checkpoint", head="audio-classification")
    return checkpoint, export_bundle(checkpoint, root / "bundle", TASK)


@pytest.fixture(scope="module")
def ours(classifier: tuple[Path, Path]):
    return pipeline(TASK, classifier[1])


@pytest.fixture(scope="module")
def reference(classifier: tuple[Path, Path]):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.pipeline(TASK, model=str(classifier[0]), device="cpu")


def assert_same(got: list[dict], expected: list[dict]) -> None:
    assert [item["label"] for item in got] == [item["label"] for item in expected]
    np.testing.assert_allclose([item["score"] for item in got], [item["score"] for item in expected],
                               rtol=0, atol=SCORE_ATOL)
    assert all(set(item) == {"score", "label"} and type(item["score"]) is float for item in got)


@pytest.mark.parametrize("kind,seconds", CLIPS)
@pytest.mark.parametrize("kwargs", [{}, {"top_k": 2}, {"top_k": None}, {"top_k": 50},
                                    {"function_to_apply": "sigmoid"}, {"function_to_apply": "none", "top_k": 3}])
def test_labels_and_scores_equal_transformers(ours, reference, kind: str, seconds: float, kwargs: dict) -> None:
    audio = synthetic_audio(kind, seconds, RATE, seed=13)
    assert_same(ours(audio, **kwargs), reference(audio, **kwargs))


def test_the_calibrated_fixture_answers_more_than_one_label(ours) -> None:
    tops = {ours(synthetic_audio(kind, seconds, RATE, seed=i))[0]["label"] for i, (kind, seconds) in enumerate(CLIPS)}
    assert len(tops) > 1 and tops <= set(AUDIO_LABELS)


def test_batches_rates_and_files(ours, reference, tmp_path) -> None:
    clips = [synthetic_audio(kind, seconds, RATE, seed=3) for kind, seconds in CLIPS]
    for got, clip in zip(ours(clips, top_k=3, batch_size=4), clips):
        assert_same(got, reference(clip, top_k=3))
    low = synthetic_audio("speechlike", 1.1, 22050, seed=1)
    # transformers would resample with torchaudio (not installed): its side gets our resampling
    assert_same(ours({"array": low, "sampling_rate": 22050}), reference(resample(low, 22050, RATE)))
    soundfile = pytest.importorskip("soundfile")
    path = tmp_path / "clip.wav"
    soundfile.write(str(path), clips[1], RATE, subtype="PCM_16")
    decoded, _ = soundfile.read(str(path), dtype="float32")
    assert_same(ours(str(path)), reference(decoded))


def test_q8_keeps_fp32_labels_and_a_folder_without_manifest(classifier: tuple[Path, Path], tmp_path) -> None:
    manifest = json.loads((classifier[1] / "edgeformers.json").read_text())
    report = manifest["validation"]["q8"]
    assert report["metric"] == "label_agreement" and report["passed"] and report["value"] >= floor_for(TASK)
    assert manifest["labels"] == {str(i): label for i, label in enumerate(AUDIO_LABELS)}
    bare = tmp_path / "bare"
    shutil.copytree(classifier[1], bare)
    (bare / "edgeformers.json").unlink()
    runtime = pipeline(None, bare, dtype="q8")  # Wav2Vec2ForSequenceClassification -> audio-classification
    assert runtime.task == TASK
    fp32 = pipeline(TASK, classifier[1])
    clips = [synthetic_audio(kind, seconds, RATE, seed=40 + i) for i, (kind, seconds) in enumerate(CLIPS * 4)]
    same = [runtime(clip)[0]["label"] == fp32(clip)[0]["label"] for clip in clips]
    assert sum(same) / len(same) >= floor_for(TASK)


def test_ast_classifier_equals_transformers(tmp_path_factory) -> None:
    """AST on Kaldi-style filter banks computed by the runtime (runtime/audio/features.py
    ast_fbank); one batch of clips shorter and longer than its 1 s window (every AST input
    has one shape, so they run together). HuBERT is proven in test_speech_recognition_ctc."""
    root = tmp_path_factory.mktemp("ast-cls")
    checkpoint = build_audio_checkpoint(root / "checkpoint", model_type="ast", head="audio-classification", seed=2)
    bundle = export_bundle(checkpoint, root / "bundle", TASK, dtypes=("fp32",))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = transformers.pipeline(TASK, model=str(checkpoint), device="cpu")
    runtime = pipeline(TASK, bundle)
    clips = [synthetic_audio(kind, seconds, RATE, seed=6) for kind, seconds in CLIPS]
    for got, clip in zip(runtime(clips, top_k=None), clips):
        assert_same(got, reference(clip, top_k=None))


BAD_CALLS = [
    (dict(inputs=np.zeros(50, np.float32)), "50 samples"),
    (dict(inputs=np.full(4000, np.inf, np.float32)), "non-finite"),
    (dict(inputs=np.zeros(4000, np.int16)), "dtype int16"),
    (dict(inputs=np.zeros(4000, np.float32), top_k=0), "top_k"),
    (dict(inputs=np.zeros(4000, np.float32), function_to_apply="relu"), "function_to_apply"),
    (dict(inputs={"array": np.zeros(4000, np.float32), "sampling_rate": 0}), "sampling_rate"),
    (dict(inputs=b"definitely not audio"), "not an audio file|soundfile"),
]


@pytest.mark.parametrize("kwargs,message", BAD_CALLS, ids=[m[:24] for _, m in BAD_CALLS])
def test_bad_inputs_are_input_errors(ours, kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        ours(**kwargs)
