"""What the encoder-only audio pipelines (CTC speech recognition, audio classification)
share: the feature extractor's settings from ``preprocessor_config.json``, the front end's
geometry from ``config.json``, and one run of the graph on one waveform. wav2vec2 / HuBERT
take the normalised waveform; AST (Audio Spectrogram Transformer) takes Kaldi-style log-mel
filter banks (``features.ast_fbank``).

The graphs optimum exports for these models take ``input_values`` and no attention mask,
so only inputs of one shape share a run (chunks of a long recording, clips of a fixed
length, every AST input): padding would change group-normalised models' outputs.
"""

from __future__ import annotations

import functools
import operator
from typing import Any

import numpy as np

from edgeformers.models.errors import BundleError, InputError
from edgeformers.runtime.audio.features import ast_fbank, ast_settings, normalize_waveform
from edgeformers.runtime.audio.resample import check_rate
from edgeformers.runtime.bundle import Bundle
from edgeformers.runtime.pipelines.base import DEFAULT_BATCH_SIZE
from edgeformers.runtime.session import OnnxModel

#: wav2vec2's front end (7 convs, stride 320, 400-sample receptive field) when config.json
#: has no conv_kernel/conv_stride.
_DEFAULT_KERNELS = (10, 3, 3, 3, 3, 2, 2)
_DEFAULT_STRIDES = (5, 2, 2, 2, 2, 2, 2)


def _int_list(config: dict[str, Any], key: str, default: tuple[int, ...], where: str) -> tuple[int, ...]:
    value = config.get(key, default)
    if not (isinstance(value, (list, tuple)) and value
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)):
        raise BundleError(f"{where}: {key} should be a list of positive integers, got {value!r:.60}")
    return tuple(value)


class WaveformModel:
    """One ``input_values -> logits`` graph with its feature extractor settings."""

    def __init__(self, bundle: Bundle, model: OnnxModel) -> None:
        self.model = model
        where = f"{bundle.path}/preprocessor_config.json"
        settings = bundle.read_json("preprocessor_config.json", required=True)
        self.sampling_rate = check_rate(settings.get("sampling_rate", 16000), f"{where}: sampling_rate")
        self.do_normalize = bool(settings.get("do_normalize", True))
        config = bundle.read_json("config.json", required=True)
        #: AST's filter-bank settings (None: a waveform model)
        self.fbank: dict[str, Any] | None = None
        if settings.get("feature_extractor_type") == "ASTFeatureExtractor" or (
                config.get("model_type") == "audio-spectrogram-transformer"):
            ast_settings(settings)  # refuse bad values at load time
            self.fbank = dict(settings)
        kernels = _int_list(config, "conv_kernel", _DEFAULT_KERNELS, f"{bundle.path}/config.json")
        strides = _int_list(config, "conv_stride", _DEFAULT_STRIDES, f"{bundle.path}/config.json")
        if len(kernels) != len(strides):
            raise BundleError(f"{bundle.path}/config.json: conv_kernel and conv_stride differ in length")
        #: samples per logit frame (transformers' ``config.inputs_to_logits_ratio``)
        self.ratio = functools.reduce(operator.mul, strides, 1)
        #: the fewest samples the conv stack turns into one frame
        self.min_samples = 1
        for kernel, stride in reversed(list(zip(kernels, strides))):
            self.min_samples = (self.min_samples - 1) * stride + kernel
        if self.fbank is not None:  # one 25 ms frame, hop 10 ms
            self.min_samples, self.ratio = 400, 160
        self.input_name = "input_values"
        if self.input_name not in model.input_names:
            raise BundleError(f"{bundle.path}: the graph takes {model.input_names}, not input_values (a "
                              "wav2vec2-style model)")

    def check_length(self, audio: np.ndarray, where: str) -> None:
        if audio.shape[0] < self.min_samples:
            raise InputError(
                f"{where} is {audio.shape[0]} samples ({audio.shape[0] / self.sampling_rate * 1000:.1f} ms) at "
                f"{self.sampling_rate} Hz; the model needs at least {self.min_samples} "
                f"({self.min_samples / self.sampling_rate * 1000:.1f} ms)"
            )

    def features(self, audio: np.ndarray) -> np.ndarray:
        """``input_values`` as the checkpoint's feature extractor makes them: ``(1, samples)``
        (Wav2Vec2FeatureExtractor) or ``(1, max_length, num_mel_bins)`` (ASTFeatureExtractor)."""
        if self.fbank is not None:
            return ast_fbank(audio, self.fbank)[None]
        values = normalize_waveform(audio) if self.do_normalize else audio.astype(np.float32)
        return values[None, :]

    def logits(self, audio: np.ndarray, where: str) -> np.ndarray:
        """The graph's ``logits`` for one waveform, batch dimension dropped."""
        return self.logits_batch([audio], [where])[0]

    def logits_batch(self, audios: list[np.ndarray], wheres: list[str],
                     batch_size: int | None = None) -> list[np.ndarray]:
        """``logits`` per waveform; waveforms whose features have one shape run together,
        ``batch_size`` (default DEFAULT_BATCH_SIZE) at a time."""
        for audio, where in zip(audios, wheres):
            self.check_length(audio, where)
        features = [self.features(audio) for audio in audios]
        results: list[np.ndarray] = [np.empty(0)] * len(features)
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, feature in enumerate(features):
            groups.setdefault(feature.shape, []).append(index)
        size = batch_size or DEFAULT_BATCH_SIZE
        for indices in groups.values():
            for start in range(0, len(indices), size):
                part = indices[start:start + size]
                batch = np.concatenate([features[i] for i in part])
                logits = self.model.run({self.input_name: batch}, ["logits"])["logits"]
                for row, index in enumerate(part):
                    results[index] = logits[row]
        return results
