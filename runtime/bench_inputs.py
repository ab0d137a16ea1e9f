"""What ``edgeformers bench`` feeds each task: an input of the asked size, and one call
of the pipeline on a batch of it.

``--seq-len`` sizes the input in the task's own unit: tokens for text (the prompt, for
generating tasks), the side of a square image in pixels for vision (the processor resizes
it, so larger camera frames cost more preprocessing), seconds of audio for speech. Text
generation is timed greedily with exactly ``new_tokens`` new tokens per row (EOS held off
by ``min_new_tokens``), so every variant does the same work and a row's time per token is
comparable; Whisper has no ``min_new_tokens`` (its token count depends on what it hears),
so speech rows give the real-time factor instead.

Imported by the parent for :func:`input_unit` (stdlib only at import time); the worker
builds inputs with numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edgeformers.models.errors import InputError

GENERATING = frozenset({"text-generation", "text2text-generation", "summarization", "translation"})
VISION = frozenset({"image-classification", "object-detection", "image-to-text"})
AUDIO = frozenset({"automatic-speech-recognition", "audio-classification"})
#: The tasks timed with a fixed count of new tokens (a row's time per token is reported).
PER_TOKEN = GENERATING | {"image-to-text"}

# Plain words; a model-specific tokenizer splits them into however many tokens it does,
# and the input length is then searched in words until it encodes to the asked tokens.
_WORDS = (
    "the new phone has a bright screen and a battery that lasts two days but the camera is "
    "disappointing in low light and the speaker sounds thin when music plays at full volume while "
    "the price is fair for what you get and the support team answered my questions quickly"
).split()
_FILLERS = ("a", "I", ".", ",")
QUESTION = "What is disappointing?"
LABELS = ("technology", "sports", "food")


def input_unit(task: str) -> tuple[str, tuple[int, ...]]:
    """(what ``--seq-len`` counts for ``task``, the sizes used when it is not given)."""
    if task in VISION:
        return "pixels", (224, 640)
    if task in AUDIO:
        return "seconds", (5, 30)
    return "tokens", (16, 128)


@dataclass(frozen=True)
class Workload:
    """``make(size)`` -> (one input, its measured size); ``call(input, batch)`` runs the
    pipeline once on ``batch`` copies. ``new_tokens``: tokens generated per row, if fixed."""

    make: Callable[[int], tuple[Any, int]]
    call: Callable[[Any, int], Any]
    new_tokens: int | None = None


def workload(pipe: Any, new_tokens: int) -> Workload:
    """The inputs and the call for ``pipe``'s task."""
    task = pipe.task
    greedy = {"do_sample": False, "num_beams": 1, "max_new_tokens": new_tokens, "min_new_tokens": new_tokens}
    if task in VISION:
        if task == "image-to-text":
            return Workload(square_image, lambda image, n: pipe([image] * n, batch_size=n, generate_kwargs=greedy),
                            new_tokens)
        return Workload(square_image, lambda image, n: pipe([image] * n, batch_size=n))
    if task in AUDIO:
        rate = int(pipe.sampling_rate)
        return Workload(lambda seconds: (tone(seconds, rate), seconds),
                        lambda audio, n: pipe([{"raw": audio, "sampling_rate": rate}] * n, batch_size=n))
    make = lambda tokens: text_of_length(pipe, tokens)  # noqa: E731
    if task == "text-generation":
        return Workload(make, lambda text, n: pipe([text] * n, batch_size=n, return_full_text=False, **greedy),
                        new_tokens)
    if task in GENERATING:
        codes = list(getattr(pipe, "languages", {}) or {})
        languages = {"src_lang": codes[0], "tgt_lang": codes[1 % len(codes)]} if codes else {}
        return Workload(make, lambda text, n: pipe([text] * n, batch_size=n, **languages, **greedy), new_tokens)
    _, call = _shapes(pipe)
    return Workload(make, call)


def square_image(side: int) -> tuple[Any, int]:
    """A ``side`` x ``side`` RGB image of smooth gradients and noise (fixed seed)."""
    import numpy as np

    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, side, dtype=np.float32)
    image = np.stack([ramp[None, :].repeat(side, 0), ramp[:, None].repeat(side, 1),
                      rng.uniform(0, 255, (side, side)).astype(np.float32)], axis=-1)
    return image.astype(np.uint8), side


def tone(seconds: int, rate: int) -> Any:
    """``seconds`` of a 220 Hz tone under light noise at ``rate`` (fixed seed), float32."""
    import numpy as np

    t = np.arange(int(seconds * rate), dtype=np.float32) / rate
    noise = np.random.default_rng(0).normal(0, 0.01, t.size).astype(np.float32)
    return (0.3 * np.sin(2 * np.pi * 220 * t) + noise).astype(np.float32)


def _text(count: int) -> str:
    return " ".join(_WORDS[i % len(_WORDS)] for i in range(count))


def _shapes(pipe: Any) -> tuple[Callable[[str], tuple[list[str], list[str] | None]], Callable[[str, int], Any]]:
    """For a text task: how one text is encoded (to count its tokens) and how a batch of
    it is passed to the pipeline, one model run per call where the task allows."""
    task = pipe.task
    if task == "question-answering":
        return (lambda text: ([QUESTION], [text]),
                lambda text, n: pipe(question=[QUESTION] * n, context=[text] * n, batch_size=n))
    if task == "zero-shot-classification":
        longest = max(LABELS, key=len)
        return (lambda text: ([text], [f"This example is {longest}."]),
                lambda text, n: pipe([text] * n, candidate_labels=list(LABELS), batch_size=n * len(LABELS)))
    if task == "fill-mask":
        mask = pipe.mask_token
        return (lambda text: ([f"{text} {mask}"], None),
                lambda text, n: pipe([f"{text} {mask}"] * n, batch_size=n))
    return (lambda text: ([text], None), lambda text, n: pipe([text] * n, batch_size=n))


def text_of_length(pipe: Any, tokens: int) -> tuple[str, int]:
    """A text whose model input (special tokens, question or hypothesis included) is
    ``tokens`` long, or as close below as the tokenizer allows; returns it and its length."""
    encode, _ = _shapes(pipe)

    def length(text: str) -> int:
        texts, pairs = encode(text)
        return len(pipe.tokenizer.encode(texts, pairs, truncation=False)[0].ids)

    shortest = length(_text(1))
    if shortest > tokens:
        raise InputError(f"--seq-len {tokens} is too short for this {pipe.task} bundle: its shortest input "
                         f"is {shortest} tokens")
    low, high = 1, max(2, tokens)
    while low < high:  # largest word count that still fits
        middle = (low + high + 1) // 2
        if length(_text(middle)) <= tokens:
            low = middle
        else:
            high = middle - 1
    text = _text(low)
    for _ in range(8):  # top up with one-token words where a long word overshot
        got = length(text)
        if got == tokens:
            break
        extended = next((f"{text} {f}" for f in _FILLERS if length(f"{text} {f}") <= tokens), None)
        if extended is None:
            break
        text = extended
    return text, length(text)
