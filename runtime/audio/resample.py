"""Sample-rate conversion in numpy: a band-limited windowed-sinc polyphase resampler.

transformers' speech pipelines resample with ``torchaudio.functional.resample`` at its
defaults (Hann-windowed sinc, 6 zero crossings, roll-off 0.99). This is the same filter,
written from its definition: the output sample ``j`` is
``sum_i x[i] * h((i / orig - j / new) * base)`` with ``base = min(orig, new) * 0.99`` (rates
reduced by their gcd), ``h(t) = sinc(t) * cos(pi t / 12)^2`` for ``|t| <= 6``, scaled by
``base / orig``, and the output ``ceil(len * new / orig)`` samples long. Against torchaudio
2.11 it agrees to ~1e-6; against scipy's ``resample_poly`` (a Kaiser filter) to ~1e-2 on
band-limited signals (tests/test_audio_io.py states both bounds).

The filter bank has ``new`` phases of ``orig + 2 * width`` taps after gcd reduction; a rate
pair that reduces to a huge ratio (44101 Hz -> 16 kHz: 44101:16000) would need gigabytes, so
it is refused with a clear error instead.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from edgeformers.models.errors import InputError

ZERO_CROSSINGS = 6
ROLLOFF = 0.99
#: Largest filter bank built (phases x taps): 44.1 kHz -> 16 kHz needs 160 x 475 = 76k.
MAX_KERNEL_ELEMENTS = 4_000_000


def check_rate(rate: object, where: str) -> int:
    """A sampling rate as a positive int (a float with an integer value is accepted)."""
    if isinstance(rate, (float, np.floating)) and float(rate).is_integer():
        rate = int(rate)
    if isinstance(rate, np.integer):
        rate = int(rate)
    if not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
        raise InputError(f"{where} must be a positive integer number of samples per second, got {rate!r:.60}")
    return rate


@functools.lru_cache(maxsize=16)
def _kernel(orig: int, new: int) -> tuple[np.ndarray, int]:
    """``(new, orig + 2 * width)`` filter bank for rates already reduced by their gcd, and
    ``width``, the taps each side beyond one input period."""
    base = min(orig, new) * ROLLOFF
    width = math.ceil(ZERO_CROSSINGS * orig / base)
    taps = np.arange(-width, width + orig, dtype=np.float64) / orig
    t = (taps[None, :] - np.arange(new, dtype=np.float64)[:, None] / new) * base
    t = np.clip(t, -ZERO_CROSSINGS, ZERO_CROSSINGS)
    window = np.cos(t * math.pi / ZERO_CROSSINGS / 2) ** 2
    kernel = np.sinc(t) * window * (base / orig)
    kernel.setflags(write=False)
    return kernel, width


def resample(audio: np.ndarray, orig_rate: int, new_rate: int, where: str = "audio") -> np.ndarray:
    """``audio`` (1-D) from ``orig_rate`` to ``new_rate`` samples per second, float32."""
    orig_rate = check_rate(orig_rate, f"{where}: sampling_rate")
    new_rate = check_rate(new_rate, "the model's sampling_rate")
    audio = np.asarray(audio)
    if orig_rate == new_rate:
        return audio.astype(np.float32, copy=False)
    gcd = math.gcd(orig_rate, new_rate)
    orig, new = orig_rate // gcd, new_rate // gcd
    base = min(orig, new) * ROLLOFF
    taps = orig + 2 * math.ceil(ZERO_CROSSINGS * orig / base)
    if new * taps > MAX_KERNEL_ELEMENTS:
        raise InputError(
            f"{where}: no resampler for {orig_rate} Hz -> {new_rate} Hz (the ratio reduces to {orig}:{new}, whose "
            f"filter would need {new * taps:,} coefficients); resample the audio to {new_rate} Hz or to a rate with "
            "a simpler ratio (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000 Hz ...) first"
        )
    kernel, width = _kernel(orig, new)
    length = audio.shape[0]
    padded = np.pad(audio.astype(np.float32, copy=False), (width, width + orig))
    frames = np.lib.stride_tricks.sliding_window_view(padded, kernel.shape[1])[::orig]
    # in blocks of ~1M taps: an hour of 44.1 kHz audio never holds all its frames at once
    step = max(1, (1 << 20) // kernel.shape[1])
    out = np.concatenate([(frames[i:i + step].astype(np.float64) @ kernel.T).reshape(-1)
                          for i in range(0, frames.shape[0], step)])
    return out[: math.ceil(new * length / orig)].astype(np.float32)
