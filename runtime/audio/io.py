"""Audio inputs as transformers' speech pipelines take them, turned into float32 mono
waveforms at the model's sampling rate.

Accepted, per item: a file path (str or ``os.PathLike``), the file's ``bytes``, a float numpy
array (samples already at the model's rate, as transformers assumes), or a dict
``{"raw" | "array": array, "sampling_rate": int}`` (the ``datasets`` form; a ``"stride"``
``(left, right)`` in samples is passed on as transformers passes it).

WAV is decoded here with the standard library and numpy (PCM 8/16/24/32-bit through
``wave``; IEEE float and WAVE_FORMAT_EXTENSIBLE files, which ``wave`` refuses, through a small
RIFF reader). Other formats (FLAC, OGG, MP3 ...) go through the optional ``soundfile``
package (``pip install "edgeformers[audio]"``). Channels are averaged to mono; samples are
scaled to [-1, 1) as ffmpeg and soundfile scale them (int16 / 32768 ...).
"""

from __future__ import annotations

import io
import os
import struct
import wave
from typing import Any

import numpy as np

from edgeformers.models.errors import InputError
from edgeformers.runtime.audio.resample import check_rate, resample

#: Largest audio file read (1 GiB: ~9 hours of 16 kHz int16 mono, ~1.6 h of CD audio).
MAX_AUDIO_BYTES = 1 << 30
_FORMAT_PCM, _FORMAT_FLOAT, _FORMAT_EXTENSIBLE = 1, 3, 0xFFFE
_MAX_CHANNELS = 64


def audio_inputs(inputs: Any, name: str = "inputs") -> tuple[list[Any], bool]:
    """``(items, was_single)``: one audio input or a list/tuple of them (an empty list is
    an empty batch). A list of numbers is refused: transformers reads it as a batch of
    scalars, never as one waveform; pass ``np.asarray(samples, dtype=np.float32)``."""
    if isinstance(inputs, (list, tuple)):
        for index, item in enumerate(inputs):
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                raise InputError(f"{name}[{index}] is a number; pass a waveform as a numpy array, not a list of "
                                 "samples")
        return list(inputs), False
    return [inputs], True


def load_audio(item: Any, target_rate: int, where: str = "inputs") -> tuple[np.ndarray, dict[str, Any]]:
    """One input -> ``(waveform, extra)``: float32 mono 1-D at ``target_rate`` (finite,
    non-empty), and ``extra`` holding a dict input's ``stride`` rescaled to ``target_rate``
    samples (empty otherwise)."""
    extra: dict[str, Any] = {}
    if isinstance(item, (str, os.PathLike)):
        audio, rate = decode_file(item, where)
    elif isinstance(item, (bytes, bytearray, memoryview)):
        audio, rate = decode_bytes(bytes(item), where)
    elif isinstance(item, np.ndarray):
        audio, rate = _array(item, where), target_rate
    elif isinstance(item, dict):
        audio, rate, stride = _dict_input(item, where)
        if stride is not None:
            extra["stride"] = stride
    else:
        raise InputError(
            f"{where} is {type(item).__name__}; expected a file path, bytes, a float numpy array at the model's "
            f"{target_rate} Hz, or {{'raw': array, 'sampling_rate': int}}"
        )
    if audio.ndim == 2:  # decoded files come as (channels, samples)
        audio = audio.mean(axis=0)
    audio = _finite_mono(audio, where)
    if rate != target_rate:
        ratio = target_rate / rate
        audio = resample(audio, rate, target_rate, where)
        if "stride" in extra:
            left, right = extra["stride"]
            extra["stride"] = (int(round(left * ratio)), int(round(right * ratio)))
    if "stride" in extra and sum(extra["stride"]) > audio.shape[0]:
        raise InputError(f"{where}: stride {extra['stride']} is longer than the audio ({audio.shape[0]} samples)")
    return audio, extra


def _dict_input(item: dict[str, Any], where: str) -> tuple[np.ndarray, int, tuple[int, int] | None]:
    key = "raw" if "raw" in item else "array" if "array" in item else None
    if key is None or "sampling_rate" not in item:
        raise InputError(
            f"{where} is a dict with keys {sorted(map(str, item))}; expected {{'raw': array, 'sampling_rate': int}} "
            "(or 'array' instead of 'raw', as datasets names it)"
        )
    rate = check_rate(item["sampling_rate"], f"{where}['sampling_rate']")
    stride = item.get("stride")
    if stride is not None:
        if not (isinstance(stride, (tuple, list)) and len(stride) == 2
                and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 0 for s in stride)):
            raise InputError(f"{where}['stride'] must be (left, right) non-negative sample counts, got {stride!r:.60}")
        stride = (int(stride[0]), int(stride[1]))
    value = item[key]
    if not isinstance(value, np.ndarray):
        raise InputError(f"{where}[{key!r}] is {type(value).__name__}; expected a float numpy array")
    return _array(value, f"{where}[{key!r}]"), rate, stride


def _array(value: np.ndarray, where: str) -> np.ndarray:
    """A float array as transformers takes it: 1-D, or 2-D channels-first (averaged)."""
    if value.dtype.kind != "f":
        hint = " (integer PCM: divide by 32768 for int16)" if value.dtype.kind in "iu" else ""
        raise InputError(f"{where} has dtype {value.dtype}; expected float samples in [-1, 1]{hint}")
    if value.ndim == 2:
        # transformers averages axis 0 (channels first); a (samples, channels) array is turned first
        if value.shape[0] > _MAX_CHANNELS >= value.shape[1]:
            value = value.T
        if value.shape[0] > _MAX_CHANNELS:
            raise InputError(f"{where} has shape {value.shape}; expected (samples,) or (channels, samples)")
        value = value.mean(axis=0)
    elif value.ndim != 1:
        raise InputError(f"{where} has shape {value.shape}; expected (samples,) or (channels, samples)")
    return value


def _finite_mono(audio: np.ndarray, where: str) -> np.ndarray:
    if audio.shape[0] == 0:
        raise InputError(f"{where} holds no samples; expected a non-empty waveform")
    audio = audio.astype(np.float32, copy=False)
    if not np.isfinite(audio).all():
        bad = int(np.flatnonzero(~np.isfinite(audio))[0])
        raise InputError(f"{where} has a non-finite sample ({audio[bad]}) at index {bad}; expected finite floats")
    return audio


def decode_file(path: str | os.PathLike[str], where: str = "inputs") -> tuple[np.ndarray, int]:
    """``(samples, rate)`` of an audio file: ``(n,)`` or ``(channels, n)`` float."""
    try:
        size = os.stat(path).st_size
        if size > MAX_AUDIO_BYTES:
            raise InputError(f"{where}: {os.fspath(path)!r} is {size:,} bytes; the limit is {MAX_AUDIO_BYTES:,}")
        with open(path, "rb") as handle:
            data = handle.read()
    except InputError:
        raise
    except OSError as err:
        raise InputError(f"{where}: cannot read audio file {os.fspath(path)!r}: {err.strerror or err}") from None
    return decode_bytes(data, f"{where} ({os.fspath(path)!r})")


def decode_bytes(data: bytes, where: str = "inputs") -> tuple[np.ndarray, int]:
    """``(samples, rate)`` of an encoded audio file's bytes."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return _decode_wav(data, where)
    return _decode_soundfile(data, where)


def _decode_wav(data: bytes, where: str) -> tuple[np.ndarray, int]:
    try:
        with wave.open(io.BytesIO(data), "rb") as reader:
            channels, width, rate, frames = (reader.getnchannels(), reader.getsampwidth(), reader.getframerate(),
                                             reader.getnframes())
            raw = reader.readframes(frames)
        if len(raw) < frames * channels * width:
            raise InputError(f"{where}: the WAV file is truncated ({len(raw):,} of {frames * channels * width:,} "
                             "data bytes)")
        return _pcm(raw, _FORMAT_PCM, width, channels, where), _wav_rate(rate, where)
    except (wave.Error, EOFError, struct.error):
        return _decode_riff(data, where)  # float or WAVE_FORMAT_EXTENSIBLE (or broken: said there)


def _decode_riff(data: bytes, where: str) -> tuple[np.ndarray, int]:
    """The ``fmt `` and ``data`` chunks of a RIFF/WAVE file, read by hand."""
    fmt: tuple[int, int, int, int] | None = None
    offset = 12
    while offset + 8 <= len(data):
        chunk_id, size = data[offset:offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        body = data[offset + 8:offset + 8 + size]
        if chunk_id == b"fmt ":
            if len(body) < 16:
                raise InputError(f"{where}: the WAV file's format chunk is truncated")
            tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
            if tag == _FORMAT_EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack_from("<H", body, 24)[0]  # the sub-format GUID starts with the format tag
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise InputError(f"{where}: the WAV file has its data before its format chunk")
            if len(body) < size:
                raise InputError(f"{where}: the WAV file is truncated ({len(body):,} of {size:,} data bytes)")
            tag, channels, rate, bits = fmt
            if tag not in (_FORMAT_PCM, _FORMAT_FLOAT) or bits % 8 or not bits:
                raise InputError(f"{where}: WAV sample format {tag:#x} with {bits} bits is not supported (PCM 8/16/"
                                 "24/32-bit and float 32/64-bit are); convert it, or install soundfile")
            return _pcm(body, tag, bits // 8, channels, where), _wav_rate(rate, where)
        offset += 8 + size + (size & 1)
    raise InputError(f"{where}: the WAV file has no {'data' if fmt else 'format'} chunk (truncated or not audio)")


def _wav_rate(rate: int, where: str) -> int:
    return check_rate(rate, f"{where}: the WAV header's sample rate")


def _pcm(raw: bytes, tag: int, width: int, channels: int, where: str) -> np.ndarray:
    """Interleaved little-endian samples -> ``(n,)`` or ``(channels, n)`` float64 in [-1, 1)."""
    if not 1 <= channels <= _MAX_CHANNELS:
        raise InputError(f"{where}: the WAV header says {channels} channels")
    usable = len(raw) - len(raw) % (width * channels)
    raw = raw[:usable]
    if tag == _FORMAT_FLOAT and width in (4, 8):
        samples = np.frombuffer(raw, dtype=f"<f{width}").astype(np.float64)
    elif tag == _FORMAT_PCM and width == 1:
        samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
    elif tag == _FORMAT_PCM and width in (2, 4):
        samples = np.frombuffer(raw, dtype=f"<i{width}").astype(np.float64) / float(1 << (8 * width - 1))
    elif tag == _FORMAT_PCM and width == 3:
        triples = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        values = triples[:, 0] | (triples[:, 1] << 8) | (triples[:, 2] << 16)
        values = np.where(values >= 1 << 23, values - (1 << 24), values)
        samples = values.astype(np.float64) / float(1 << 23)
    else:
        kind = "float" if tag == _FORMAT_FLOAT else "PCM"
        raise InputError(f"{where}: {8 * width}-bit {kind} WAV samples are not supported")
    if channels == 1:
        return samples
    return samples.reshape(-1, channels).T


def _decode_soundfile(data: bytes, where: str) -> tuple[np.ndarray, int]:
    try:
        import soundfile
    except ImportError:
        raise InputError(
            f"{where} is not a WAV file; other audio formats (FLAC, OGG, MP3 ...) need the soundfile package: "
            'pip install "edgeformers[audio]"'
        ) from None
    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as err:  # libsndfile's errors: not audio, truncated, unknown codec
        raise InputError(f"{where} is not an audio file soundfile can decode: {err}"[:400]) from None
    return samples.T, check_rate(rate, f"{where}: the file's sample rate")
