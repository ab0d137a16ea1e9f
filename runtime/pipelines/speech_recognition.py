"""automatic-speech-recognition: CTC models (wav2vec2, HuBERT) here; encoder-decoder
bundles (Whisper: the manifest's generation section has kind "encoder-decoder") are handed
to ``runtime/pipelines/whisper.py`` when the pipeline is made.

CTC as transformers' pipeline does it: the waveform normalised per utterance (per chunk
when chunking), one graph run, the argmax id per frame, greedy CTC decoding
(``runtime/audio/ctc.py``). ``chunk_length_s``/``stride_length_s`` cut long audio into
overlapping chunks aligned to the model's frame size; each chunk's overlapping frames are
dropped before the ids are joined and decoded, exactly as transformers joins them.
``return_timestamps`` "char" or "word" gives ``chunks`` with ``(start, end)`` in seconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from edgeformers.models.errors import InputError
from edgeformers.runtime.audio.ctc import CtcVocabulary
from edgeformers.runtime.audio.io import audio_inputs, load_audio
from edgeformers.runtime.audio.waveform import WaveformModel
from edgeformers.runtime.pipelines.base import Pipeline, check_count, unbatch

_TIMESTAMPS = ("char", "word")


class SpeechRecognitionPipeline(Pipeline):
    task = "automatic-speech-recognition"
    uses_tokenizer = False

    def __new__(cls, bundle: Any, dtype: str, plan: Any, *args: Any, **kwargs: Any) -> Any:
        """An encoder-decoder bundle (Whisper) gets the Whisper pipeline instead."""
        generation = getattr(bundle.manifest, "generation", None) or {}
        if cls is SpeechRecognitionPipeline and generation.get("kind") == "encoder-decoder":
            from edgeformers.runtime.pipelines.whisper import WhisperPipeline

            return WhisperPipeline(bundle, dtype, plan, *args, **kwargs)
        return super().__new__(cls)

    def prepare(self) -> None:
        self.waveform = WaveformModel(self.bundle, self.model)
        where = str(self.bundle.path)
        self.vocabulary = CtcVocabulary(self.bundle.read_json("vocab.json", required=True),
                                        self.bundle.read_json("tokenizer_config.json"), where)

    @property
    def sampling_rate(self) -> int:
        return self.waveform.sampling_rate

    def __call__(
        self,
        inputs: Any,
        return_timestamps: str | bool | None = None,
        chunk_length_s: float = 0,
        stride_length_s: float | tuple[float, float] | list[float] | None = None,
        return_language: bool | None = None,
        batch_size: int | None = None,
    ) -> Any:
        """Like transformers: one input -> ``{"text": ...}`` (plus ``"chunks"`` with
        ``return_timestamps``), a list -> a list of them. Inputs: file paths, bytes, float
        arrays at the model's rate, ``{"raw"|"array", "sampling_rate"}`` dicts.
        ``return_language`` is Whisper's; CTC models ignore it, as transformers does.
        ``batch_size`` caps how many inputs or chunks of one length run together (the graph
        takes no attention mask, so inputs of different lengths run apart)."""
        if return_timestamps not in (None, False) and return_timestamps not in _TIMESTAMPS:
            raise InputError(
                f"return_timestamps={return_timestamps!r}: a CTC model gives 'char' or 'word' timestamps "
                "(True is for Whisper)"
            )
        check_count("batch_size", batch_size)
        chunking = self._chunking(chunk_length_s, stride_length_s)
        items, single = audio_inputs(inputs)
        # every input's pieces (itself, or its chunks), run together where their lengths match
        pieces: list[tuple[int, np.ndarray, tuple[int, int, int] | None, str]] = []
        for index, item in enumerate(items):
            where = "inputs" if single else f"inputs[{index}]"
            audio, extra = load_audio(item, self.sampling_rate, where)
            if chunking is None:
                stride = extra.get("stride")
                pieces.append((index, audio, None if stride is None else (audio.shape[0], *stride), where))
            else:
                pieces.extend((index, chunk, window, f"{where} (chunk at sample {start})")
                              for start, chunk, window in _chunks(audio, *chunking))
        logits = self.waveform.logits_batch([p[1] for p in pieces], [p[3] for p in pieces], batch_size)
        ids: list[list[np.ndarray]] = [[] for _ in items]
        for (index, _, window, _), rows in zip(pieces, logits):
            frames = rows.argmax(-1)
            ids[index].append(frames if window is None else _cut(frames, window, self.waveform.ratio))
        results = [self._result(np.concatenate(parts), return_timestamps or None) for parts in ids]
        return unbatch(results, single)

    def _chunking(self, chunk_length_s: Any, stride_length_s: Any) -> tuple[int, int, int] | None:
        """(chunk, left, right) in samples, aligned to the frame size as transformers aligns them."""
        if not _is_number(chunk_length_s) or chunk_length_s < 0:
            raise InputError(f"chunk_length_s must be a number of seconds >= 0, got {chunk_length_s!r}")
        if not chunk_length_s:
            return None
        if stride_length_s is None:
            stride_length_s = chunk_length_s / 6
        strides = [stride_length_s] * 2 if _is_number(stride_length_s) else stride_length_s
        if not (isinstance(strides, (list, tuple)) and len(strides) == 2 and all(_is_number(s) and s >= 0
                                                                                  for s in strides)):
            raise InputError(f"stride_length_s must be seconds >= 0 or a (left, right) pair, got {stride_length_s!r}")
        align = self.waveform.ratio

        def samples(seconds: float) -> int:
            return int(round(seconds * self.sampling_rate / align) * align)

        chunk, left, right = samples(chunk_length_s), samples(strides[0]), samples(strides[1])
        if chunk <= left + right:
            raise InputError(f"chunk_length_s ({chunk_length_s}) must be longer than the two strides together "
                             f"({strides[0]} + {strides[1]} s)")
        return chunk, left, right

    def _result(self, ids: np.ndarray, timestamps: str | None) -> dict[str, Any]:
        result: dict[str, Any] = {"text": self.vocabulary.decode(ids)}
        if timestamps:
            offsets = (self.vocabulary.char_offsets(ids) if timestamps == "char"
                       else self.vocabulary.word_offsets(ids))
            ratio, rate = self.waveform.ratio, self.sampling_rate  # frames -> samples -> seconds, as transformers
            result["chunks"] = [{"text": item[timestamps],
                                 "timestamp": (item["start_offset"] * ratio / rate, item["end_offset"] * ratio / rate)}
                                for item in offsets]
        return result


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def _chunks(audio: np.ndarray, chunk: int, left: int, right: int) -> Iterator[tuple[int, np.ndarray,
                                                                                     tuple[int, int, int]]]:
    """(start, samples, (length, left stride, right stride)) per chunk, as transformers' chunk_iter."""
    total = audio.shape[0]
    for start in range(0, total, chunk - left - right):
        piece = audio[start:start + chunk]
        is_last = start + chunk >= total
        window = (piece.shape[0], 0 if start == 0 else left, 0 if is_last else right)
        if piece.shape[0] > window[1]:
            yield start, piece, window
        if is_last:
            break


def _cut(ids: np.ndarray, stride: tuple[int, int, int], ratio: int) -> np.ndarray:
    """The frames of a chunk outside its strides: stride samples rescaled to frames with
    transformers' rounding (``rescale_stride``), cut from the frame count it implies."""
    total, left, right = stride
    frames = int(round(total * (1 / ratio)))  # transformers multiplies by 1/ratio: same float rounding
    left_frames = int(round(left / total * frames))
    right_frames = int(round(right / total * frames))
    return ids[left_frames:frames - right_frames]
