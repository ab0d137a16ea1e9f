"""Checking decoding arguments (a call's, over a checkpoint's generation_config, over a
pipeline's defaults) and turning them into :class:`GenerationSettings`: one place for
every generating pipeline (text-generation, text2text, summarization, translation,
speech), so each refuses bad values with the same :class:`InputError` wording."""

from __future__ import annotations

import math
from dataclasses import fields
from typing import Any

from edgeformers.models.errors import InputError
from edgeformers.runtime.generation.settings import DEFAULT_MAX_LENGTH, GenerationSettings

#: Every setting a call or a generation_config may give (seed is per call only).
SETTING_NAMES: tuple[str, ...] = tuple(f.name for f in fields(GenerationSettings) if f.name != "seed")
_NUMBERS = {  # name: (lowest, highest, lowest allowed itself, highest allowed itself)
    "temperature": (0.0, math.inf, False, False), "top_p": (0.0, 1.0, False, True),
    "min_p": (0.0, 1.0, True, True), "typical_p": (0.0, 1.0, False, True),
    "repetition_penalty": (0.0, math.inf, False, False), "length_penalty": (-math.inf, math.inf, False, False),
}
_COUNTS = {"max_new_tokens": 1, "max_length": 1, "min_new_tokens": 0, "min_length": 0, "top_k": 0,
           "no_repeat_ngram_size": 0, "num_beams": 1, "num_return_sequences": 1}
_TOKEN_LISTS = ("eos_token_id", "forced_eos_token_id", "suppress_tokens", "begin_suppress_tokens")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _token(name: str, value: Any, vocab_size: int | None) -> int:
    if not _is_int(value) or value < 0 or (vocab_size is not None and value >= vocab_size):
        limit = f" below the vocabulary size {vocab_size}" if vocab_size else ""
        raise InputError(f"{name} must hold token ids (integers >= 0{limit}), got {value!r}")
    return int(value)


def _tokens(name: str, value: Any, vocab_size: int | None) -> list[int] | None:
    if value is None:
        return None
    items = [value] if _is_int(value) else value
    if not isinstance(items, (list, tuple)):
        raise InputError(f"{name} must be a token id or a list of token ids, got {value!r}")
    return [_token(name, item, vocab_size) for item in items]


def _bad_words(value: Any, vocab_size: int | None) -> list[list[int]] | None:
    if value is None:
        return None
    if not isinstance(value, (list, tuple)) or not value or \
            not all(isinstance(word, (list, tuple)) and word for word in value):
        raise InputError(f"bad_words_ids must be a non-empty list of non-empty lists of token ids, got {value!r}")
    return [[_token("bad_words_ids", token, vocab_size) for token in word] for word in value]


def _stop_strings(value: Any) -> list[str] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items or not all(isinstance(s, str) and s for s in items):
        raise InputError(f"stop_strings must be a non-empty string or a list of them, got {value!r}")
    return list(items)


def settings_from(values: dict[str, Any], seed: Any = None, vocab_size: int | None = None) -> GenerationSettings:
    """Checked settings from ``values`` (missing or None: GenerationSettings' default).

    Raises InputError naming the argument and what it accepts. ``vocab_size`` (when
    known) bounds every token id given."""
    unknown = sorted(set(values) - set(SETTING_NAMES))
    if unknown:
        raise InputError(f"unknown generation setting{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                         f"accepted: {', '.join(SETTING_NAMES)}")
    given = {k: v for k, v in values.items() if v is not None}
    for name, minimum in _COUNTS.items():
        value = given.get(name)
        if value is not None and (not _is_int(value) or value < minimum):
            raise InputError(f"{name} must be an integer >= {minimum} (or None for the default), got {value!r}")
    for name, (low, high, low_ok, high_ok) in _NUMBERS.items():
        value = given.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or \
                value < low or value > high or (value == low and not low_ok) or (value == high and not high_ok):
            if high == math.inf:
                raise InputError(f"{name} must be a number > {low:g}, got {value!r}")
            raise InputError(f"{name} must be in {'[' if low_ok else '('}{low:g}, {high:g}{']' if high_ok else ')'}, "
                             f"got {value!r}")
        given[name] = float(value)
    for name in ("do_sample",):
        if not isinstance(given.get(name, False), bool):
            raise InputError(f"{name} must be True or False, got {given[name]!r}")
    early = given.get("early_stopping", False)
    if not isinstance(early, bool) and early != "never":
        raise InputError(f"early_stopping must be True, False or 'never', got {early!r}")
    for name in _TOKEN_LISTS:
        if name in given:
            given[name] = _tokens(name, given[name], vocab_size)
    for name in ("forced_bos_token_id", "pad_token_id"):
        if name in given:
            given[name] = _token(name, given[name], None if name == "pad_token_id" else vocab_size)
    given["bad_words_ids"] = _bad_words(given.get("bad_words_ids"), vocab_size)
    given["stop_strings"] = _stop_strings(given.get("stop_strings"))
    if seed is not None and (not _is_int(seed) or seed < 0):
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    settings = GenerationSettings(**{**given, "max_new_tokens": given.get("max_new_tokens"), "seed": seed})
    _check_search(settings)
    return settings


def _check_search(settings: GenerationSettings) -> None:
    """The combinations transformers refuses, with its wording."""
    returned, beams = settings.num_return_sequences, settings.num_beams
    if beams == 1 and returned > 1 and not settings.do_sample:
        raise InputError(f"Greedy methods without beam search do not support `num_return_sequences` different than 1 "
                         f"(got {returned}): pass do_sample=True or num_beams >= {returned}")
    if beams > 1 and returned > beams:
        raise InputError(f"`num_return_sequences` ({returned}) has to be smaller or equal to `num_beams` ({beams})")
    if beams > 1 and settings.do_sample:
        raise InputError("sampled beam search (do_sample=True with num_beams > 1) is not available; pass "
                         "do_sample=False for beam search or num_beams=1 to sample")


def merge(call: dict[str, Any], checkpoint: dict[str, Any], pipeline: dict[str, Any]) -> dict[str, Any]:
    """Call arguments over the checkpoint's generation_config over the pipeline's defaults,
    as transformers' pipelines merge them: a checkpoint ``max_length`` of 20 is the global
    default (so 20 new tokens), and a pipeline ``max_new_tokens`` default gives way to a
    checkpoint's own ``max_length`` (Whisper's 448, BART's 142). A call's ``max_length``
    without ``max_new_tokens`` is honoured (transformers' pipeline would keep its
    max_new_tokens default instead; model.generate honours it, and so does this)."""
    stored = {k: v for k, v in checkpoint.items() if k in SETTING_NAMES and v is not None}
    if stored.get("max_length") == DEFAULT_MAX_LENGTH:
        del stored["max_length"]
    values = {**pipeline, **stored}
    if "max_length" in stored and "max_new_tokens" not in stored:
        values.pop("max_new_tokens", None)
    given = {k: v for k, v in call.items() if v is not None}
    if "max_length" in given and "max_new_tokens" not in given:
        values.pop("max_new_tokens", None)
    return {**values, **given}
