"""Log-mel and waveform-normalisation parity with transformers' feature extractors,
computed in the test on synthetic signals (tones, noise, chirps, silence, clipping) of
several lengths, shorter and longer than Whisper's 30 s window."""

from __future__ import annotations

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")

from edgeformers.models.errors import InputError  # noqa: E402
from edgeformers.runtime.audio.features import (  # noqa: E402
    mel_filters,
    normalize_waveform,
    whisper_log_mel,
)

RATE = 16000
LOG_MEL_ATOL = 1e-4


def signal(kind: str, seconds: float, seed: int = 0) -> np.ndarray:
    """A float32 test waveform in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    if kind == "tone":
        wave = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 3100 * t)
    elif kind == "noise":
        wave = rng.normal(0, 0.3, t.shape)
    elif kind == "chirp":
        wave = 0.7 * np.sin(2 * np.pi * (100 * t + 600 * t**2))
    elif kind == "mix":
        wave = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + rng.normal(0, 0.05, t.shape)
    elif kind == "quiet":
        wave = 1e-4 * rng.normal(0, 1, t.shape)  # near silence: the clamp and the 8-dB range decide
    elif kind == "clipped":
        wave = np.clip(3 * np.sin(2 * np.pi * 150 * t), -1, 1)
    else:
        raise ValueError(kind)
    return wave.astype(np.float32)


CASES = [("tone", 1.0), ("noise", 2.37), ("chirp", 7.3), ("mix", 12.0), ("quiet", 0.5), ("clipped", 29.99),
         ("chirp", 30.0), ("mix", 41.5), ("tone", 0.03)]


@pytest.mark.parametrize("kind,seconds", CASES)
@pytest.mark.parametrize("n_mels", [80, 128])
def test_whisper_log_mel_matches_transformers(kind: str, seconds: float, n_mels: int) -> None:
    extractor = transformers.WhisperFeatureExtractor(feature_size=n_mels)
    audio = signal(kind, seconds, seed=n_mels)
    expected = extractor(audio, sampling_rate=RATE, return_tensors="np")["input_features"][0]
    ours = whisper_log_mel(audio, extractor.to_dict())
    assert ours.dtype == np.float32 and ours.shape == expected.shape == (n_mels, 3000)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=LOG_MEL_ATOL)


@pytest.mark.parametrize("seconds", [3.21, 45.0])
def test_whisper_log_mel_unpadded_matches_longest_padding(seconds: float) -> None:
    """Long-form input: transformers' ``padding="longest", truncation=False`` on one signal."""
    extractor = transformers.WhisperFeatureExtractor()
    audio = signal("mix", seconds, seed=3)
    expected = extractor(audio, sampling_rate=RATE, return_tensors="np", padding="longest",
                         truncation=False)["input_features"][0]
    ours = whisper_log_mel(audio, extractor.to_dict(), pad_or_truncate=False)
    assert ours.shape == expected.shape
    np.testing.assert_allclose(ours, expected, rtol=0, atol=LOG_MEL_ATOL)


def test_whisper_log_mel_from_saved_config_keys(tmp_path) -> None:
    """The dict read from a saved preprocessor_config.json drives it (non-default hop and window)."""
    extractor = transformers.WhisperFeatureExtractor(feature_size=40, hop_length=200, n_fft=512, chunk_length=10)
    extractor.save_pretrained(tmp_path)
    import json

    config = json.loads((tmp_path / "preprocessor_config.json").read_text())
    audio = signal("chirp", 6.0)
    expected = extractor(audio, sampling_rate=RATE, return_tensors="np")["input_features"][0]
    np.testing.assert_allclose(whisper_log_mel(audio, config), expected, rtol=0, atol=LOG_MEL_ATOL)


@pytest.mark.parametrize("n_mels", [80, 128])
def test_mel_filters_match_transformers(n_mels: int) -> None:
    from transformers.audio_utils import mel_filter_bank

    expected = mel_filter_bank(num_frequency_bins=201, num_mel_filters=n_mels, min_frequency=0.0,
                               max_frequency=8000.0, sampling_rate=RATE, norm="slaney", mel_scale="slaney")
    np.testing.assert_allclose(mel_filters(400, n_mels, RATE), expected, rtol=1e-12, atol=1e-15)


def test_whisper_log_mel_refuses_bad_shapes() -> None:
    with pytest.raises(InputError, match="1-D"):
        whisper_log_mel(np.zeros((2, 100), np.float32), {})


@pytest.mark.parametrize("lengths", [[16000], [9000, 16000, 4000]])
def test_normalize_waveform_matches_wav2vec2(lengths: list[int]) -> None:
    """do_normalize over the real samples of each padded row, padding set back to 0."""
    extractor = transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    audios = [signal("mix", n / RATE, seed=i) * (i + 1) + 0.1 * i for i, n in enumerate(lengths)]
    expected = extractor(audios, sampling_rate=RATE, padding=True, return_tensors="np")["input_values"]
    width = max(lengths)
    for row, audio in enumerate(audios):
        padded = np.pad(audio, (0, width - len(audio)))
        np.testing.assert_allclose(normalize_waveform(padded, len(audio)), expected[row], rtol=0, atol=1e-5)


@pytest.mark.parametrize("kind,seconds", [("tone", 1.0), ("noise", 2.37), ("chirp", 7.3), ("quiet", 0.5),
                                          ("clipped", 12.0), ("mix", 0.03)])
@pytest.mark.parametrize("n_mels,max_length", [(128, 1024), (64, 300)])
def test_ast_fbank_matches_transformers(kind: str, seconds: float, n_mels: int, max_length: int) -> None:
    """ASTFeatureExtractor as transformers computes it without torchaudio (installed here:
    none; with torchaudio it calls torchaudio's Kaldi fbank instead)."""
    from transformers.utils import is_speech_available

    from edgeformers.runtime.audio.features import ast_fbank

    if is_speech_available():
        pytest.skip("torchaudio is installed: transformers takes its Kaldi fbank path")
    extractor = transformers.ASTFeatureExtractor(num_mel_bins=n_mels, max_length=max_length)
    audio = signal(kind, max(seconds, 0.03), seed=n_mels)
    if len(audio) < 400:
        with pytest.raises(InputError, match="at least 400"):
            ast_fbank(audio, extractor.to_dict())
        return
    expected = extractor(audio, sampling_rate=RATE, return_tensors="np")["input_values"][0]
    ours = ast_fbank(audio, extractor.to_dict())
    assert ours.dtype == np.float32 and ours.shape == expected.shape == (max_length, n_mels)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=LOG_MEL_ATOL)
