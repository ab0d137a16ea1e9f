"""Audio decoding and resampling: WAV through the standard library (PCM 8/16/24/32-bit,
float, WAVE_FORMAT_EXTENSIBLE), other formats through soundfile, resampling against
scipy's polyphase resampler (and torchaudio's, which transformers uses, where importable),
and every malformed input refused with an InputError that names it."""

from __future__ import annotations

import io
import math
import struct
import sys
import wave

import numpy as np
import pytest

from edgeformers.models.errors import InputError
from edgeformers.runtime.audio.io import audio_inputs, decode_bytes, load_audio
from edgeformers.runtime.audio.resample import resample

RATE = 16000


def tones(seconds: float, rate: int, channels: int = 1, freqs: tuple[float, ...] = (220.0, 1250.0)) -> np.ndarray:
    """(channels, n) float64 in [-0.9, 0.9], each channel a different mix."""
    t = np.arange(int(seconds * rate)) / rate
    rows = [sum(0.4 * np.sin(2 * np.pi * f * (c + 1) * t + c) for f in freqs) / len(freqs) * 1.8 for c in
            range(channels)]
    return np.asarray(rows)


def pcm_wav(samples: np.ndarray, rate: int, width: int) -> tuple[bytes, np.ndarray]:
    """A PCM WAV written by ``wave`` and the exact float values it stores."""
    channels = samples.shape[0]
    scale = float(1 << (8 * width - 1))
    ints = np.clip(np.round(samples * scale), -scale, scale - 1).astype(np.int64)
    interleaved = ints.T.reshape(-1)
    if width == 1:
        raw = (interleaved + 128).astype(np.uint8).tobytes()
    elif width == 3:
        raw = b"".join(int(v).to_bytes(3, "little", signed=True) for v in interleaved)
    else:
        raw = interleaved.astype(f"<i{width}").tobytes()
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(raw)
    return buffer.getvalue(), ints / scale


def float_wav(samples: np.ndarray, rate: int, extensible: bool = False, bits: int = 32) -> bytes:
    """An IEEE-float WAV (format 3, or 0xFFFE with the float sub-format), built by hand."""
    channels = samples.shape[0]
    data = samples.T.astype(f"<f{bits // 8}").tobytes()
    block = channels * bits // 8
    if extensible:
        guid = struct.pack("<H", 3) + b"\x00\x00\x00\x00\x10\x00\x80\x00\x00\xaa\x00\x38\x9b\x71"
        fmt = struct.pack("<HHIIHHHHI", 0xFFFE, channels, rate, rate * block, block, bits, 22, bits, 0) + guid
    else:
        fmt = struct.pack("<HHIIHH", 3, channels, rate, rate * block, block, bits)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


@pytest.mark.parametrize("width", [1, 2, 3, 4])
@pytest.mark.parametrize("channels", [1, 2])
def test_pcm_wav_decodes_exactly(width: int, channels: int, tmp_path) -> None:
    samples = tones(0.25, RATE, channels)
    data, stored = pcm_wav(samples, RATE, width)
    decoded, rate = decode_bytes(data)
    assert rate == RATE
    np.testing.assert_allclose(decoded, stored[0] if channels == 1 else stored, rtol=0, atol=1e-12)
    path = tmp_path / "a.wav"
    path.write_bytes(data)
    audio, extra = load_audio(str(path), RATE)
    assert audio.dtype == np.float32 and audio.ndim == 1 and extra == {}
    np.testing.assert_allclose(audio, stored.mean(axis=0), rtol=0, atol=1e-6)  # channels averaged


@pytest.mark.parametrize("width", [2, 3, 4])
def test_pcm_wav_matches_soundfile(width: int) -> None:
    soundfile = pytest.importorskip("soundfile")
    data, _ = pcm_wav(tones(0.1, 22050, 2), 22050, width)
    expected, rate = soundfile.read(io.BytesIO(data), dtype="float64", always_2d=True)
    decoded, ours_rate = decode_bytes(data)
    assert ours_rate == rate
    np.testing.assert_allclose(decoded, expected.T, rtol=0, atol=1e-9)


@pytest.mark.parametrize("extensible", [False, True])
@pytest.mark.parametrize("bits", [32, 64])
def test_float_wav_through_the_riff_reader(extensible: bool, bits: int) -> None:
    """``wave`` refuses IEEE float and WAVE_FORMAT_EXTENSIBLE; the RIFF reader takes them."""
    samples = tones(0.2, 8000, 2)
    data = float_wav(samples, 8000, extensible, bits)
    with pytest.raises(wave.Error):
        wave.open(io.BytesIO(data), "rb")
    decoded, rate = decode_bytes(data)
    assert rate == 8000
    np.testing.assert_allclose(decoded, samples.astype(f"<f{bits // 8}"), rtol=0, atol=0)


def test_wav_with_extra_chunks_and_odd_sizes() -> None:
    """A LIST chunk of odd size (padded to even, as RIFF requires) before the data."""
    samples = tones(0.05, RATE)
    data = float_wav(samples, RATE)
    fmt_end = 12 + 8 + 16
    extra = b"LIST" + struct.pack("<I", 5) + b"abcde" + b"\x00"
    patched = data[:fmt_end] + extra + data[fmt_end:]
    patched = patched[:4] + struct.pack("<I", len(patched) - 8) + patched[8:]
    decoded, _ = decode_bytes(patched)
    np.testing.assert_allclose(decoded, samples[0].astype(np.float32), rtol=0, atol=0)


def test_flac_through_soundfile(tmp_path) -> None:
    soundfile = pytest.importorskip("soundfile")
    samples = tones(0.3, 44100, 2)
    path = tmp_path / "a.flac"
    soundfile.write(str(path), samples.T, 44100, subtype="PCM_16")
    expected, _ = soundfile.read(str(path), dtype="float32", always_2d=True)
    audio, _ = load_audio(path, 44100)
    np.testing.assert_allclose(audio, expected.mean(axis=1), rtol=0, atol=1e-7)


def test_other_formats_without_soundfile_name_the_extra(monkeypatch, tmp_path) -> None:
    monkeypatch.setitem(sys.modules, "soundfile", None)  # import soundfile -> ImportError
    path = tmp_path / "a.flac"
    path.write_bytes(b"fLaC" + b"\x00" * 100)
    with pytest.raises(InputError, match=r'pip install "edgeformers\[audio\]"'):
        load_audio(str(path), RATE)


# --- resampling ------------------------------------------------------------------------

RATE_PAIRS = [(44100, 16000), (48000, 16000), (8000, 16000), (22050, 16000), (11025, 16000), (32000, 16000),
              (24000, 16000), (16000, 8000), (16000, 44100)]


@pytest.mark.parametrize("orig,new", RATE_PAIRS)
def test_resample_matches_scipy_resample_poly(orig: int, new: int) -> None:
    """Band-limited content (tones below 40% of the lower Nyquist) matches scipy's Kaiser
    polyphase resampler within 5e-3 away from the edges (the two filters differ only near
    Nyquist, and in how they treat the first and last few milliseconds)."""
    signal = pytest.importorskip("scipy.signal")
    low = min(orig, new) / 2
    x = tones(1.13, orig, freqs=(0.05 * low, 0.2 * low, 0.4 * low))[0].astype(np.float32)
    ours = resample(x, orig, new)
    assert ours.dtype == np.float32 and ours.shape[0] == math.ceil(len(x) * new / orig)
    g = math.gcd(orig, new)
    reference = signal.resample_poly(x.astype(np.float64), new // g, orig // g)
    edge = new // 50
    np.testing.assert_allclose(ours[edge:-edge], reference[edge:len(ours) - edge], rtol=0, atol=5e-3)


@pytest.mark.parametrize("orig,new", RATE_PAIRS)
def test_resample_matches_torchaudio_where_installed(orig: int, new: int) -> None:
    """transformers' speech pipelines resample with torchaudio.functional.resample; where
    torchaudio imports, ours equals it within 5e-5 (float32 arithmetic on its side)."""
    functional = pytest.importorskip("torchaudio.functional")
    import torch

    x = np.random.default_rng(orig).normal(0, 0.3, int(orig * 0.7) + 5).astype(np.float32)
    expected = functional.resample(torch.from_numpy(x), orig, new).numpy()
    np.testing.assert_allclose(resample(x, orig, new), expected, rtol=0, atol=5e-5)


def test_dict_inputs_resample_and_rescale_stride() -> None:
    x = tones(0.5, 8000)[0].astype(np.float32)
    audio, extra = load_audio({"raw": x, "sampling_rate": 8000, "stride": (800, 400)}, RATE)
    np.testing.assert_array_equal(audio, resample(x, 8000, RATE))
    assert extra == {"stride": (1600, 800)}
    same, _ = load_audio({"array": x.astype(np.float64), "sampling_rate": 8000.0, "path": "ignored.wav"}, RATE)
    np.testing.assert_allclose(same, audio, atol=1e-6)
    native, extra = load_audio(x, 8000)
    assert extra == {} and np.array_equal(native, x)


def test_stereo_arrays_are_averaged_either_way_round() -> None:
    stereo = tones(0.1, RATE, 2).astype(np.float32)
    first, _ = load_audio(stereo, RATE)
    second, _ = load_audio(stereo.T.copy(), RATE)
    np.testing.assert_allclose(first, stereo.mean(axis=0), atol=1e-7)
    np.testing.assert_array_equal(first, second)


def test_audio_inputs_batches() -> None:
    x = np.zeros(10, np.float32)
    assert audio_inputs(x) == ([x], True)
    items, single = audio_inputs([x, "a.wav"])
    assert len(items) == 2 and not single
    with pytest.raises(InputError, match=r"inputs\[0\] is a number"):
        audio_inputs([0.1, 0.2])


def _truncated_wav() -> bytes:
    data, _ = pcm_wav(tones(0.2, RATE), RATE, 2)
    return data[: len(data) // 2]


BAD_INPUTS = [
    (np.zeros(0, np.float32), "holds no samples"),
    (np.array([0.1, np.nan, 0.2], np.float32), "non-finite sample"),
    (np.array([0.0, np.inf], np.float64), "non-finite sample"),
    (np.zeros((2, 3, 4), np.float32), "expected \\(samples,\\) or \\(channels, samples\\)"),
    (np.zeros((100, 100), np.float32), "expected \\(samples,\\) or \\(channels, samples\\)"),
    (np.zeros(100, np.int16), "dtype int16.*32768"),
    (np.zeros(100, np.complex64), "dtype complex64"),
    ({"raw": np.zeros(100, np.float32), "sampling_rate": 0}, "sampling_rate.*positive integer"),
    ({"raw": np.zeros(100, np.float32), "sampling_rate": -8000}, "sampling_rate.*positive integer"),
    ({"raw": np.zeros(100, np.float32), "sampling_rate": 16000.5}, "sampling_rate.*positive integer"),
    ({"raw": np.zeros(100, np.float32), "sampling_rate": "16k"}, "sampling_rate.*positive integer"),
    ({"raw": np.zeros(100, np.float32), "sampling_rate": 44101}, "no resampler for 44101 Hz -> 16000 Hz"),
    ({"raw": np.zeros(100, np.float32)}, "expected \\{'raw': array, 'sampling_rate': int\\}"),
    ({"raw": [0.1, 0.2], "sampling_rate": 16000}, "\\['raw'\\] is list"),
    ({"raw": np.zeros(100, np.float32), "sampling_rate": 16000, "stride": (80, 40)}, "stride .* is longer"),
    ({"raw": np.zeros(100, np.float32), "sampling_rate": 16000, "stride": 4}, "stride'\\] must be"),
    (b"this is not audio at all", "not an audio file soundfile can decode"),
    (_truncated_wav(), "truncated"),
    (b"RIFF\x10\x00\x00\x00WAVEfmt ", "no format chunk|truncated"),
    (12345, "int; expected a file path, bytes"),
    (None, "NoneType; expected a file path, bytes"),
]


@pytest.mark.parametrize("item,message", BAD_INPUTS, ids=[m[:24] for _, m in BAD_INPUTS])
def test_bad_inputs_are_input_errors_naming_the_input(item, message: str) -> None:
    pytest.importorskip("soundfile")  # the non-WAV bytes reach soundfile's own refusal
    with pytest.raises(InputError, match=message) as info:
        load_audio(item, RATE, where="inputs[3]")
    assert "inputs[3]" in str(info.value)


def test_bad_files_are_input_errors(tmp_path) -> None:
    pytest.importorskip("soundfile")
    text = tmp_path / "notes.wav"
    text.write_text("just some text pretending to be a wav file")
    with pytest.raises(InputError, match="notes.wav"):
        load_audio(str(text), RATE)
    truncated = tmp_path / "cut.wav"
    truncated.write_bytes(_truncated_wav())
    with pytest.raises(InputError, match="cut.wav.*truncated"):
        load_audio(truncated, RATE)
    with pytest.raises(InputError, match="cannot read audio file"):
        load_audio(str(tmp_path / "missing.wav"), RATE)
    with pytest.raises(InputError, match="cannot read audio file"):
        load_audio(str(tmp_path), RATE)  # a folder


def test_wav_header_with_zero_rate_is_refused() -> None:
    data, _ = pcm_wav(tones(0.01, RATE), RATE, 2)
    broken = data[:24] + struct.pack("<I", 0) + data[28:]
    with pytest.raises(InputError, match="sample rate.*positive integer"):
        load_audio(broken, RATE)
