"""Validation inputs for wav2vec2-style audio encoders (CTC speech recognition, audio
classification): synthetic audio made with numpy (tones, noise, chirps, AM/FM mixes,
near-silence; several lengths), turned into ``input_values`` by the checkpoint's own
transformers feature extractor, so the exporter checks the graph on exactly what
transformers would feed the PyTorch model.

Each clip is its own feed: optimum's graphs for these models take no attention mask, and
the runtime runs one waveform at a time.

The CTC agreement metric lives here too: quantized variants are held to the characters of
fp32's greedy transcript (collapsed, blank-free ids), not to raw per-frame argmaxes, which
flip on blank/character near-ties that leave the text unchanged.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np

from edgeformers.models.errors import ExportError

AUDIO_TASKS = frozenset({"automatic-speech-recognition", "audio-classification"})
#: (kind, seconds) of the fp32-vs-PyTorch clips.
VALIDATION_CLIPS: tuple[tuple[str, float], ...] = (
    ("tones", 1.0), ("noise", 0.43), ("chirp", 2.7), ("speechlike", 1.9), ("quiet", 0.8),
)
#: Clips in the agreement set (one changed label is 2.5 points).
AGREEMENT_CLIPS = 40
_KINDS = ("tones", "noise", "chirp", "speechlike", "quiet")
#: Tokenizer and processor files of a CTC checkpoint (it has no tokenizer.json form).
AUDIO_FILES = ("preprocessor_config.json", "vocab.json", "tokenizer_config.json", "special_tokens_map.json",
               "added_tokens.json")


def synthetic_audio(kind: str, seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """A deterministic float32 mono clip in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(max(int(seconds * rate), 1)) / rate
    nyquist = rate / 2
    if kind == "tones":
        freqs = rng.uniform(80, 0.4 * nyquist, 3)
        wave = sum(np.sin(2 * np.pi * f * t + p) for f, p in zip(freqs, rng.uniform(0, 6.28, 3))) / 3
    elif kind == "noise":
        wave = rng.normal(0, 0.3, t.shape)
    elif kind == "chirp":
        start, end = rng.uniform(50, 300), rng.uniform(0.2, 0.45) * nyquist
        wave = np.sin(2 * np.pi * (start * t + (end - start) * t ** 2 / (2 * max(seconds, 1e-3))))
    elif kind == "speechlike":  # a buzzing "voice": harmonics of a wandering pitch, syllable envelope
        pitch = 120 + 30 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t)
        phase = 2 * np.pi * np.cumsum(pitch) / rate
        wave = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)) ** 2
        wave = wave + rng.normal(0, 0.02, t.shape)
    else:
        wave = rng.normal(0, 1e-3, t.shape)
    wave = np.asarray(wave, dtype=np.float64)
    peak = np.abs(wave).max()
    return (wave / peak * rng.uniform(0.3, 0.9) if peak > 0.01 else wave).astype(np.float32)


def copy_audio_files(checkpoint: Path, work: Path) -> None:
    """The feature extractor's and CTC vocabulary's files, beside the graph."""
    if not (checkpoint / "preprocessor_config.json").is_file():
        raise ExportError(f"{checkpoint}: preprocessor_config.json is missing; audio models need their feature "
                          "extractor's settings")
    for name in AUDIO_FILES:
        if (checkpoint / name).is_file() and not (work / name).exists():
            shutil.copyfile(checkpoint / name, work / name)


def reference_extractor(folder: Path) -> Any:
    """The checkpoint's own feature extractor, loaded by transformers (never its own code)."""
    import transformers

    if not (Path(folder) / "preprocessor_config.json").is_file():
        raise ExportError(f"{folder}: preprocessor_config.json is missing; audio models need their feature extractor")
    try:
        return transformers.AutoFeatureExtractor.from_pretrained(str(folder), trust_remote_code=False)
    except Exception as err:
        raise ExportError(f"{folder}: transformers cannot load its feature extractor: {err}") from err


def _feeds(folder: Path, clips: list[tuple[str, float, int]], graph_inputs: list[str]) -> list[dict[str, np.ndarray]]:
    extractor = reference_extractor(folder)
    rate = int(extractor.sampling_rate)
    feeds = []
    for kind, seconds, seed in clips:
        encoded = extractor(synthetic_audio(kind, seconds, rate, seed), sampling_rate=rate, return_tensors="np")
        feeds.append({name: np.asarray(encoded[name]) for name in graph_inputs if name in encoded})
    return feeds


def reference_inputs(folder: Path, graph_inputs: list[str]) -> list[dict[str, np.ndarray]]:
    """Each validation clip as its own feed."""
    return _feeds(folder, [(kind, seconds, i) for i, (kind, seconds) in enumerate(VALIDATION_CLIPS)], graph_inputs)


def agreement_clips() -> list[tuple[str, float, int]]:
    rng = np.random.default_rng(4321)
    return [(_KINDS[i % len(_KINDS)], float(rng.uniform(0.4, 3.0)), 100 + i) for i in range(AGREEMENT_CLIPS)]


def agreement_feeds(folder: Path, task: str, graph_inputs: list[str]) -> tuple[list[dict[str, np.ndarray]], int]:
    """The agreement set, one clip per feed, and how many clips it holds."""
    feeds = _feeds(folder, agreement_clips(), graph_inputs)
    return feeds, len(feeds)


def describe_report(report: dict[str, Any]) -> dict[str, Any]:
    """The fp32 report with the clips it was checked on in place of the texts."""
    report = {key: value for key, value in report.items() if key != "texts"}
    report["audio"] = [f"{kind} {seconds:g} s" for kind, seconds in VALIDATION_CLIPS]
    return report


def ctc_transcript(logits: np.ndarray, blank: int | None) -> list[int]:
    """Greedy CTC ids of one row: per-frame argmax, repeats collapsed, blanks dropped."""
    ids = logits.argmax(-1)
    keep = np.ones(ids.shape[0], dtype=bool)
    keep[1:] = ids[1:] != ids[:-1]
    collapsed = ids[keep]
    return [int(i) for i in collapsed if i != blank]


def edit_distance(a: list[int], b: list[int]) -> int:
    """Levenshtein distance (insertions, deletions, substitutions)."""
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def character_agreement(reference: list[dict[str, np.ndarray]], candidate: list[dict[str, np.ndarray]],
                        blank: int | None) -> tuple[float, dict[str, Any]]:
    """1 - (character edits from fp32's transcripts to the variant's) / (fp32's characters),
    over all clips, floored at 0: one minus the variant's character error rate with fp32 as
    the reference."""
    edits = characters = identical = 0
    for ref, cand in zip(reference, candidate):
        for want_row, got_row in zip(ref["logits"], cand["logits"]):
            want, got = ctc_transcript(want_row, blank), ctc_transcript(got_row, blank)
            distance = edit_distance(want, got)
            edits += distance
            characters += len(want)
            identical += int(distance == 0)
    value = max(0.0, 1.0 - edits / characters) if characters else float(edits == 0)
    return value, {"edits": edits, "characters": characters, "identical_transcripts": identical}


def blank_id(folder: Path) -> int | None:
    """CTC's blank: the model's pad token id (config.json), as transformers' CTC loss takes it."""
    from edgeformers.runtime.bundle import read_json

    value = read_json(Path(folder) / "config.json").get("pad_token_id")
    return value if isinstance(value, int) and not isinstance(value, bool) else None
