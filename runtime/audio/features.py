"""Audio model inputs in numpy, from a checkpoint's own ``preprocessor_config.json``.

* :func:`whisper_log_mel` is transformers' ``WhisperFeatureExtractor``: pad or cut to the
  30 s window, a centred STFT (reflect padding, periodic Hann window, n_fft 400, hop 160),
  power spectrum, a Slaney mel filter bank (0-8 kHz), ``log10`` clamped at 1e-10, a
  dynamic range of 8 below the maximum, then ``(x + 4) / 4``.
* :func:`normalize_waveform` is ``Wav2Vec2FeatureExtractor``'s ``do_normalize``: zero mean
  and unit variance per utterance over its real samples (not its padding).

The arithmetic runs in float64 and ends in float32, so the result stays within 1e-4
(max abs) of transformers' torch float32 STFT on any signal (tests/test_audio_features.py).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import numpy as np

from edgeformers.models.errors import BundleError, InputError

#: WhisperFeatureExtractor's constructor defaults (whisper-tiny/base/small/medium: 80 mels;
#: large-v3: 128), used for any key the config leaves out.
WHISPER_DEFAULTS: dict[str, Any] = {
    "feature_size": 80,
    "sampling_rate": 16000,
    "hop_length": 160,
    "chunk_length": 30,
    "n_fft": 400,
    "padding_value": 0.0,
}
#: transformers builds Whisper's filter bank up to 8 kHz whatever the sampling rate.
WHISPER_MAX_FREQUENCY = 8000.0


def _positive_int(config: Mapping[str, Any], key: str, defaults: Mapping[str, Any]) -> int:
    value = config.get(key, defaults[key])
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise BundleError(f"preprocessor_config.json: {key} should be a positive integer, got {value!r:.60}")
    return value


def whisper_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The checked STFT/mel settings of a Whisper ``preprocessor_config.json`` dict."""
    settings = {key: _positive_int(config, key, WHISPER_DEFAULTS)
                for key in ("feature_size", "sampling_rate", "hop_length", "chunk_length", "n_fft")}
    padding = config.get("padding_value", 0.0)
    if not isinstance(padding, (int, float)) or isinstance(padding, bool) or not np.isfinite(padding):
        raise BundleError(f"preprocessor_config.json: padding_value should be a number, got {padding!r:.60}")
    settings["padding_value"] = float(padding)
    settings["n_samples"] = settings["chunk_length"] * settings["sampling_rate"]
    return settings


def _hertz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    mels = 3.0 * freq / 200.0
    log_region = freq >= 1000.0
    mels[log_region] = 15.0 + np.log(freq[log_region] / 1000.0) * (27.0 / np.log(6.4))
    return mels


def _mel_to_hertz(mels: np.ndarray) -> np.ndarray:
    freq = 200.0 * mels / 3.0
    log_region = mels >= 15.0
    freq[log_region] = 1000.0 * np.exp(np.log(6.4) / 27.0 * (mels[log_region] - 15.0))
    return freq


@functools.lru_cache(maxsize=8)
def mel_filters(n_fft: int, n_mels: int, sampling_rate: int, max_frequency: float = WHISPER_MAX_FREQUENCY) -> np.ndarray:
    """``(n_fft // 2 + 1, n_mels)`` Slaney-normalised triangular filters on the Slaney mel
    scale from 0 Hz to ``max_frequency`` (read-only: shared between calls)."""
    mel_points = np.linspace(_hertz_to_mel(np.array([0.0]))[0], _hertz_to_mel(np.array([max_frequency]))[0],
                             n_mels + 2)
    edges = _mel_to_hertz(mel_points)
    fft_freqs = np.linspace(0, sampling_rate // 2, n_fft // 2 + 1)
    slopes = edges[None, :] - fft_freqs[:, None]
    widths = np.diff(edges)
    down = -slopes[:, :-2] / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    filters *= (2.0 / (edges[2:n_mels + 2] - edges[:n_mels]))[None, :]
    filters.setflags(write=False)
    return filters


@functools.lru_cache(maxsize=4)
def _hann(n_fft: int) -> np.ndarray:
    window = np.hanning(n_fft + 1)[:-1]  # periodic, as torch.hann_window
    window.setflags(write=False)
    return window


#: STFT frames transformed at once (30 s of Whisper audio): an hour of long-form audio then
#: needs tens of MB at a time, not the gigabytes of all its frames in float64.
_FRAMES_PER_BLOCK = 3000


def mel_power(audio: np.ndarray, n_fft: int, hop_length: int, filters: np.ndarray) -> np.ndarray:
    """``(n_mels, frames)`` mel power of a centred STFT (reflect-padded by n_fft // 2, periodic
    Hann window), frames = ``len(audio) // hop_length + 1`` as torch.stft gives."""
    half = n_fft // 2
    if audio.shape[0] <= half:
        # reflect padding needs more samples than half a window; torch refuses such input
        raise InputError(f"audio has {audio.shape[0]} samples; the spectrogram needs more than {half}")
    padded = np.pad(audio, half, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop_length]
    blocks = []
    for start in range(0, frames.shape[0], _FRAMES_PER_BLOCK):
        spectrum = np.fft.rfft(frames[start:start + _FRAMES_PER_BLOCK].astype(np.float64) * _hann(n_fft), axis=-1)
        blocks.append((spectrum.real ** 2 + spectrum.imag ** 2) @ filters)
    return np.concatenate(blocks).T


def pad_or_trim(audio: np.ndarray, length: int, padding_value: float = 0.0) -> np.ndarray:
    """``audio`` cut to ``length`` samples, or padded at the end with ``padding_value``."""
    if audio.shape[0] >= length:
        return audio[:length]
    return np.concatenate([audio, np.full(length - audio.shape[0], padding_value, dtype=audio.dtype)])


def whisper_log_mel(audio: np.ndarray, config: Mapping[str, Any], pad_or_truncate: bool = True) -> np.ndarray:
    """Whisper's ``input_features`` for one mono float waveform already at the model's rate:
    ``(feature_size, n_samples // hop_length)`` float32, n_samples being ``chunk_length``
    seconds (3000 frames for 30 s).

    ``config`` is the ``preprocessor_config.json`` dict (missing keys take
    WhisperFeatureExtractor's defaults). ``pad_or_truncate=False`` keeps the whole signal
    (``len // hop_length`` frames), as transformers' ``padding="longest", truncation=False``
    does for one input (long-form transcription)."""
    settings = whisper_settings(config)
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise InputError(f"audio should be a 1-D mono waveform, got shape {audio.shape}")
    if pad_or_truncate:
        audio = pad_or_trim(audio, settings["n_samples"], settings["padding_value"])
    filters = mel_filters(settings["n_fft"], settings["feature_size"], settings["sampling_rate"])
    mel = mel_power(audio, settings["n_fft"], settings["hop_length"], filters)[:, :-1]
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


def normalize_waveform(audio: np.ndarray, length: int | None = None, padding_value: float = 0.0) -> np.ndarray:
    """Zero mean, unit variance over the first ``length`` samples (all when None); samples
    past ``length`` (padding) are set to ``padding_value``. The 1e-7 under the square root is
    transformers' own, so silence stays finite."""
    audio = np.asarray(audio, dtype=np.float32)
    real = audio if length is None else audio[:length]
    normed = (audio - real.mean()) / np.sqrt(real.var() + 1e-7)
    if length is not None and length < audio.shape[0]:
        normed[length:] = padding_value
    return normed.astype(np.float32)


# --- AST (Audio Spectrogram Transformer): Kaldi-style log-mel filter banks ----------------

#: ASTFeatureExtractor's constructor defaults (AudioSet mean/std).
AST_DEFAULTS: dict[str, Any] = {"num_mel_bins": 128, "max_length": 1024, "sampling_rate": 16000,
                                "mean": -4.2677393, "std": 4.5689974, "do_normalize": True}
_KALDI = {"frame_length": 400, "hop_length": 160, "fft_length": 512, "preemphasis": 0.97,
          "mel_floor": 1.192092955078125e-07, "min_frequency": 20.0}


def _kaldi_mel(freq: np.ndarray) -> np.ndarray:
    return 1127.0 * np.log(1.0 + freq / 700.0)


@functools.lru_cache(maxsize=4)
def kaldi_mel_filters(n_mels: int, sampling_rate: int, fft_length: int = 512) -> np.ndarray:
    """``(fft_length // 2 + 1, n_mels)`` triangles on Kaldi's mel scale from 20 Hz to Nyquist,
    triangular in mel space and unnormalised (Kaldi's ``fbank``)."""
    bins = fft_length // 2 + 1
    edges = np.linspace(_kaldi_mel(np.array(_KALDI["min_frequency"])), _kaldi_mel(np.array(sampling_rate // 2)),
                        n_mels + 2)
    fft_mels = _kaldi_mel(sampling_rate / ((bins - 1) * 2) * np.arange(bins))
    slopes = edges[None, :] - fft_mels[:, None]
    widths = np.diff(edges)
    filters = np.maximum(0.0, np.minimum(-slopes[:, :-2] / widths[:-1], slopes[:, 2:] / widths[1:]))
    filters.setflags(write=False)
    return filters


def ast_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The checked settings of an ASTFeatureExtractor ``preprocessor_config.json`` dict."""
    settings = {key: _positive_int(config, key, AST_DEFAULTS) for key in ("num_mel_bins", "max_length",
                                                                          "sampling_rate")}
    for key in ("mean", "std"):
        value = config.get(key, AST_DEFAULTS[key])
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not np.isfinite(value) or (
                key == "std" and value == 0):
            raise BundleError(f"preprocessor_config.json: {key} should be a finite number, got {value!r:.60}")
        settings[key] = float(value)
    settings["do_normalize"] = bool(config.get("do_normalize", True))
    return settings


def ast_fbank(audio: np.ndarray, config: Mapping[str, Any]) -> np.ndarray:
    """AST's ``input_values`` for one mono waveform at the model's rate: ``(max_length,
    num_mel_bins)`` float32 log-mel filter banks as ASTFeatureExtractor computes them without
    torchaudio (per 25 ms frame, hop 10 ms: DC offset removed, pre-emphasis 0.97, Hann window,
    512-point power spectrum, Kaldi mel filters, natural log floored at float32's epsilon),
    zero-padded or cut to ``max_length`` frames, then ``(x - mean) / (2 * std)``."""
    settings = ast_settings(config)
    audio = np.asarray(audio, dtype=np.float32).astype(np.float64)
    length, hop = _KALDI["frame_length"], _KALDI["hop_length"]
    if audio.ndim != 1:
        raise InputError(f"audio should be a 1-D mono waveform, got shape {audio.shape}")
    if audio.shape[0] < length:
        raise InputError(f"audio has {audio.shape[0]} samples; the filter banks need at least {length}")
    frames = np.lib.stride_tricks.sliding_window_view(audio, length)[::hop].copy()
    frames -= frames.mean(axis=1, keepdims=True)
    frames[:, 1:] -= _KALDI["preemphasis"] * frames[:, :-1].copy()
    frames[:, 0] *= 1 - _KALDI["preemphasis"]
    frames *= np.hanning(length)  # symmetric, as transformers' window_function(periodic=False)
    spectrum = np.fft.rfft(frames, n=_KALDI["fft_length"], axis=-1).astype(np.complex64)
    power = np.abs(spectrum, dtype=np.float64) ** 2
    filters = kaldi_mel_filters(settings["num_mel_bins"], settings["sampling_rate"], _KALDI["fft_length"])
    fbank = np.log(np.maximum(_KALDI["mel_floor"], power @ filters)).astype(np.float32)
    fbank = pad_or_trim_frames(fbank, settings["max_length"])
    if settings["do_normalize"]:
        fbank = (fbank - settings["mean"]) / (settings["std"] * 2)
    return fbank.astype(np.float32)


def pad_or_trim_frames(features: np.ndarray, frames: int) -> np.ndarray:
    """``(frames, bins)``: zero rows appended, or the first ``frames`` kept."""
    if features.shape[0] >= frames:
        return features[:frames]
    return np.concatenate([features, np.zeros((frames - features.shape[0], features.shape[1]), features.dtype)])
