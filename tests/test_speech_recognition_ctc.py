"""CTC speech recognition (wav2vec2, HuBERT): the runtime's transcripts equal
transformers.pipeline("automatic-speech-recognition") on the same fp32 checkpoint, for
clips of several lengths (up to 35 s) and sample rates, files, timestamps, chunking and
strides; q8 is held to fp32's characters; bad inputs are InputErrors."""

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
from tests.fixtures.audio_checkpoints import (  # noqa: E402
    build_audio_checkpoint,
    ctc_character_agreement,
    export_bundle,
)
from tests.fixtures.floors import floor_for  # noqa: E402

TASK = "automatic-speech-recognition"
#: the catalog families this module proves (tests/test_families.py TESTED_ELSEWHERE)
ARCHS = ("wav2vec2", "hubert")
RATE = 16000
CLIPS = [("tones", 0.3), ("speechlike", 1.0), ("noise", 2.37), ("chirp", 4.1), ("quiet", 0.9)]


@pytest.fixture(scope="module")
def ctc(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(checkpoint, bundle with fp32 + q8) of a tiny group-norm wav2vec2 (wav2vec2-base style)."""
    root = tmp_path_factory.mktemp("ctc")
    checkpoint = build_audio_checkpoint(root / "checkpoint")
    return checkpoint, export_bundle(checkpoint, root / "bundle", TASK)


@pytest.fixture(scope="module")
def ours(ctc: tuple[Path, Path]):
    return pipeline(TASK, ctc[1])


@pytest.fixture(scope="module")
def reference(ctc: tuple[Path, Path]):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.pipeline(TASK, model=str(ctc[0]), device="cpu")


@pytest.mark.parametrize("kind,seconds", CLIPS)
def test_transcripts_equal_transformers(ours, reference, kind: str, seconds: float) -> None:
    audio = synthetic_audio(kind, seconds, RATE, seed=7)
    expected = reference(audio)
    assert expected["text"].strip(), "the calibrated fixture should not transcribe to nothing"
    assert ours(audio) == expected


@pytest.mark.parametrize("timestamps", ["char", "word"])
def test_timestamps_equal_transformers(ours, reference, timestamps: str) -> None:
    audio = synthetic_audio("speechlike", 1.7, RATE, seed=3)
    expected = reference(audio, return_timestamps=timestamps)
    got = ours(audio, return_timestamps=timestamps)
    assert got == expected and len(got["chunks"]) > 1
    assert all(type(t) is float for chunk in got["chunks"] for t in chunk["timestamp"])


@pytest.mark.parametrize("chunk,stride", [(1.0, None), (2.0, 0.25), (1.5, (0.3, 0.1))])
def test_chunking_equals_transformers(ours, reference, chunk: float, stride) -> None:
    audio = synthetic_audio("chirp", 6.3, RATE, seed=11)
    expected = reference(audio, chunk_length_s=chunk, stride_length_s=stride)
    assert ours(audio, chunk_length_s=chunk, stride_length_s=stride) == expected


def test_long_audio_with_chunks_and_timestamps(ours, reference) -> None:
    """35 s, longer than Whisper's window: chunked, with word timestamps across the chunks."""
    audio = np.concatenate([synthetic_audio(kind, 7.0, RATE, seed=i)
                            for i, kind in enumerate(("speechlike", "tones", "noise", "chirp", "speechlike"))])
    kwargs = dict(chunk_length_s=10, return_timestamps="word")
    assert ours(audio, **kwargs) == reference(audio, **kwargs)


def test_dict_input_with_stride_equals_transformers(ours, reference) -> None:
    audio = synthetic_audio("speechlike", 2.0, RATE, seed=5)
    item = {"raw": audio, "sampling_rate": RATE, "stride": (3200, 1600)}
    assert ours(dict(item)) == reference(dict(item))


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_other_sample_rates(ours, reference, rate: int) -> None:
    """A dict at another rate is resampled to 16 kHz. transformers resamples with
    torchaudio, which is not installed here: its side gets the clip resampled by ours (equal
    to torchaudio's within 5e-5, tests/test_audio_io.py), so every other step is compared."""
    audio = synthetic_audio("speechlike", 1.3, rate, seed=rate)
    expected = reference(resample(audio, rate, RATE))
    assert ours({"array": audio, "sampling_rate": rate}) == expected
    assert ours({"raw": audio.astype(np.float64), "sampling_rate": rate}) == expected


def test_files_and_bytes(ours, reference, tmp_path) -> None:
    """WAV decoded here, FLAC through soundfile; transformers' side gets soundfile's samples
    (it reads files with the ffmpeg binary, which this machine lacks)."""
    soundfile = pytest.importorskip("soundfile")
    audio = synthetic_audio("speechlike", 1.5, RATE, seed=9)
    for name, subtype in (("a.wav", "PCM_16"), ("b.wav", "FLOAT"), ("c.flac", "PCM_24")):
        path = tmp_path / name
        soundfile.write(str(path), audio, RATE, subtype=subtype)
        decoded, _ = soundfile.read(str(path), dtype="float32")
        expected = reference(decoded)
        assert ours(str(path)) == expected
        assert ours(path.read_bytes()) == expected
    stereo = tmp_path / "stereo_8k.wav"
    low = synthetic_audio("speechlike", 1.5, 8000, seed=1)
    soundfile.write(str(stereo), np.stack([low, 0.5 * low], axis=1), 8000, subtype="PCM_16")
    decoded, _ = soundfile.read(str(stereo), dtype="float32")
    assert ours(str(stereo)) == reference(resample(decoded.mean(axis=1), 8000, RATE))


def test_batches_give_one_result_per_input(ours, reference) -> None:
    clips = [synthetic_audio(kind, seconds, RATE, seed=2) for kind, seconds in CLIPS[:3]]
    # equal lengths share a run (no padding needed), the others run apart
    clips += [synthetic_audio(kind, 1.0, RATE, seed=3) for kind in ("noise", "tones", "chirp")]
    assert ours(clips, batch_size=2) == [reference(clip) for clip in clips]
    assert ours([]) == []


def test_q8_keeps_fp32_characters(ctc: tuple[Path, Path], ours) -> None:
    manifest = json.loads((ctc[1] / "edgeformers.json").read_text())
    report = manifest["validation"]["q8"]
    assert report["metric"] == "character_agreement" and report["passed"] and report["value"] >= floor_for(TASK)
    assert manifest["variants"]["q8"]["quantization"]["per_channel"] is False
    quantized = pipeline(TASK, ctc[1], dtype="q8")
    clips = [synthetic_audio(kind, seconds, RATE, seed=21) for kind, seconds in CLIPS]
    fp32 = [ours(clip)["text"] for clip in clips]
    q8 = [quantized(clip)["text"] for clip in clips]
    assert ctc_character_agreement(fp32, q8) >= floor_for(TASK)


def test_hubert_stable_layer_norm_and_a_folder_without_manifest(tmp_path_factory) -> None:
    """HuBERT with the pre-norm ("layer") front end; the bundle's manifest removed, the task
    comes from HubertForCTC and the catalog."""
    root = tmp_path_factory.mktemp("hubert")
    checkpoint = build_audio_checkpoint(root / "checkpoint", model_type="hubert", feat_extract_norm="layer", seed=1)
    bundle = export_bundle(checkpoint, root / "bundle", TASK, dtypes=("fp32",))
    bare = root / "bare"
    shutil.copytree(bundle, bare)
    (bare / "edgeformers.json").unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = transformers.pipeline(TASK, model=str(checkpoint), device="cpu")
    runtime = pipeline(None, bare)
    assert runtime.task == TASK
    for kind, seconds in CLIPS[:3]:
        audio = synthetic_audio(kind, seconds, RATE, seed=4)
        assert runtime(audio, return_timestamps="char") == reference(audio, return_timestamps="char")


BAD_CALLS = [
    (dict(inputs=np.zeros(100, np.float32)), "100 samples.*needs at least 185"),
    (dict(inputs=np.zeros(0, np.float32)), "holds no samples"),
    (dict(inputs=np.array([0.0, np.nan] * 400, np.float32)), "non-finite"),
    (dict(inputs=np.ones((2, 3, 400), np.float32)), "shape"),
    (dict(inputs={"raw": np.zeros(8000, np.float32), "sampling_rate": -1}), "sampling_rate"),
    (dict(inputs={"raw": np.zeros(8000, np.float32), "sampling_rate": 16001}), "no resampler"),
    (dict(inputs="no/such/file.wav"), "cannot read audio file"),
    (dict(inputs=b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00\x01\x00"), "truncated|format chunk"),
    (dict(inputs=np.zeros(8000, np.float32), return_timestamps=True), "'char' or 'word'"),
    (dict(inputs=np.zeros(8000, np.float32), chunk_length_s=-1), "chunk_length_s"),
    (dict(inputs=np.zeros(8000, np.float32), chunk_length_s=1, stride_length_s=0.5), "longer than the two strides"),
    (dict(inputs=np.zeros(8000, np.float32), chunk_length_s=1, stride_length_s=(0.1,)), "stride_length_s"),
    (dict(inputs=np.zeros(8000, np.float32), max_new_tokens=5), "unknown argument 'max_new_tokens'"),
    (dict(inputs=np.zeros(8000, np.float32), batch_size=0), "batch_size"),
    (dict(inputs=[np.zeros(8000, np.float32), np.zeros(10, np.float32)]), r"inputs\[1\] is 10 samples"),
]


@pytest.mark.parametrize("kwargs,message", BAD_CALLS, ids=[m[:28] for _, m in BAD_CALLS])
def test_bad_inputs_are_input_errors(ours, kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        ours(**kwargs)


@pytest.mark.parametrize("options", [
    {},
    {"do_lower_case": True, "word_delimiter_token": "/"},
    {"clean_up_tokenization_spaces": True, "replace_word_delimiter_char": "_"},
    {"target_lang": "fra"},
])
def test_ctc_decoding_equals_wav2vec2_tokenizer(tmp_path, options: dict) -> None:
    """The runtime's vocab.json decoding against Wav2Vec2CTCTokenizer.decode on random frame
    ids (runs, blanks, delimiters, specials, ids past the vocabulary): text, char and word
    offsets, with lower-casing, another delimiter, clean-up, and an MMS-style nested vocabulary."""
    from edgeformers.runtime.audio.ctc import CtcVocabulary

    delimiter = options.get("word_delimiter_token", "|")
    chars = ["<pad>", "<s>", "</s>", "<unk>", delimiter, *"ABCDE", "'", ".", ",", "Xy"]
    vocab = {c: i for i, c in enumerate(chars)}
    nested = "target_lang" in options
    (tmp_path / "vocab.json").write_text(json.dumps({"eng": {"Q": 0}, "fra": vocab} if nested else vocab))
    tokenizer = transformers.Wav2Vec2CTCTokenizer(str(tmp_path / "vocab.json"), **options)
    tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    ours = CtcVocabulary(json.loads((tmp_path / "vocab.json").read_text()), config, str(tmp_path))
    rng = np.random.default_rng(len(options))
    for _ in range(25):
        weights = np.r_[8.0, np.ones(len(chars) - 1), 0.3]  # blanks common; one id past the vocabulary
        ids = rng.choice(len(chars) + 1, size=int(rng.integers(0, 60)), p=weights / weights.sum())
        ids = np.repeat(ids, rng.integers(1, 4, ids.shape[0]))  # runs to collapse
        expected = tokenizer.decode(ids, output_char_offsets=True, output_word_offsets=True)
        assert ours.decode(ids) == tokenizer.decode(ids) == expected.text
        assert ours.char_offsets(ids) == [{k: (int(v) if k != "char" else v) for k, v in o.items()}
                                          for o in expected.char_offsets]
        assert ours.word_offsets(ids) == [{k: (int(v) if k != "word" else v) for k, v in o.items()}
                                          for o in expected.word_offsets]


def test_cli_run_transcribes_a_wav_file(ctc: tuple[Path, Path], reference, tmp_path) -> None:
    """`edgeformers run BUNDLE speech.wav` (the README's command) prints transformers' transcript as JSON."""
    soundfile = pytest.importorskip("soundfile")
    from click.testing import CliRunner

    from edgeformers.runtime.cli import cli

    audio = synthetic_audio("speechlike", 1.5, RATE, seed=4)
    path = tmp_path / "speech.wav"
    soundfile.write(str(path), audio, RATE, subtype="FLOAT")
    result = CliRunner().invoke(cli, ["run", str(ctc[1]), str(path)])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == reference(soundfile.read(str(path), dtype="float32")[0])


def test_bench_times_seconds_of_audio_with_the_real_time_factor(ctc: tuple[Path, Path]) -> None:
    from tests.fixtures.bench_report import bench_report, check_rows

    _, bundle = ctc
    report, table = bench_report(bundle, "--batch", "1,2", "--seq-len", "1,3")
    check_rows(report, ["fp32", "q8"], [1, 2], [1, 3], "seconds")
    assert "RTF" in table
