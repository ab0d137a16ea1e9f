"""The decoding settings of the text2text-generation / summarization / translation
pipelines, merged exactly as transformers 4.57 merges them (``Pipeline.__init__`` and
``GenerationMixin._prepare_generation_config``):

1. the pipeline's own defaults (``max_new_tokens=256``, ``num_beams=4``) over
   ``GenerationConfig()``'s;
2. every value of the checkpoint's generation_config that differs from ``GenerationConfig()``
   replaces one the pipeline left at the global default (so the pipeline's ``num_beams=4``
   stays even where the checkpoint says 1, and BART's ``max_length=142`` comes in);
3. a ``max_length`` other than 20 from the checkpoint turns the pipeline's
   ``max_new_tokens=256`` off;
4. the task's ``task_specific_params`` (config.json; T5's ``summarize:`` / ``translate …``
   prefixes and their lengths) update the result;
5. the call's arguments win over all of it.
"""

from __future__ import annotations

import math
from typing import Any

from edgeformers.models.errors import InputError
from edgeformers.runtime.generation.settings import GenerationSettings
from edgeformers.runtime.pipelines.base import check_count

#: transformers' GenerationConfig() values for the keys that change what is generated.
GLOBAL_DEFAULTS: dict[str, Any] = {
    "max_length": 20, "max_new_tokens": None, "min_length": 0, "min_new_tokens": None, "early_stopping": False,
    "do_sample": False, "num_beams": 1, "num_beam_groups": 1, "penalty_alpha": None, "temperature": 1.0,
    "top_k": 50, "top_p": 1.0, "min_p": None, "typical_p": 1.0, "epsilon_cutoff": 0.0, "eta_cutoff": 0.0,
    "diversity_penalty": 0.0, "repetition_penalty": 1.0, "encoder_repetition_penalty": 1.0, "length_penalty": 1.0,
    "no_repeat_ngram_size": 0, "bad_words_ids": None, "force_words_ids": None, "forced_bos_token_id": None,
    "forced_eos_token_id": None, "exponential_decay_length_penalty": None, "suppress_tokens": None,
    "begin_suppress_tokens": None, "num_return_sequences": 1, "pad_token_id": None, "bos_token_id": None,
    "eos_token_id": None, "encoder_no_repeat_ngram_size": 0, "decoder_start_token_id": None, "stop_strings": None,
    "sequence_bias": None, "guidance_scale": None, "max_time": None,
}
#: Text2TextGenerationPipeline._default_generation_config.
PIPELINE_DEFAULTS: dict[str, Any] = {"max_new_tokens": 256, "num_beams": 4}
#: Settings that change the result but that the runtime does not implement: refused when set.
UNSUPPORTED = ("num_beam_groups", "penalty_alpha", "epsilon_cutoff", "eta_cutoff", "diversity_penalty",
               "encoder_repetition_penalty", "force_words_ids", "exponential_decay_length_penalty",
               "encoder_no_repeat_ngram_size", "sequence_bias", "guidance_scale", "max_time")
_COUNTS = {"max_new_tokens": 1, "max_length": 1, "min_length": 0, "min_new_tokens": 0, "num_beams": 1,
           "num_return_sequences": 1, "top_k": 0, "no_repeat_ngram_size": 0}
_POSITIVE = ("temperature", "repetition_penalty")
_UNIT = ("top_p", "typical_p", "min_p")


def pipeline_defaults(model_defaults: dict[str, Any], task_params: dict[str, Any] | None,
                      pad_id: int | None) -> tuple[dict[str, Any], str]:
    """(the pipeline's generation settings before a call, the task's input prefix)."""
    values = {**GLOBAL_DEFAULTS, **PIPELINE_DEFAULTS}
    for key, value in model_defaults.items():
        if key.startswith("_") or key == "transformers_version":
            continue
        default = GLOBAL_DEFAULTS.get(key)
        if values.get(key, default) == default and value != default:
            values[key] = value
    if values.get("temperature") == 0.0:
        values["do_sample"] = False
    if values["max_new_tokens"] == PIPELINE_DEFAULTS["max_new_tokens"] and values.get("max_length") not in (None, 20):
        values["max_new_tokens"] = None
    params = dict(task_params or {})
    prefix = params.pop("prefix", "") or ""
    values.update(params)
    if values.get("pad_token_id") is None and pad_id is not None:
        values["pad_token_id"] = pad_id
    return values, str(prefix)


def call_settings(defaults: dict[str, Any], given: dict[str, Any]) -> GenerationSettings:
    """The settings of one call: ``given`` (the call's arguments, None = not given),
    each checked, over ``defaults``."""
    for name, value in given.items():
        if value is not None:
            _check(name, value)
    values = {**defaults, **{k: v for k, v in given.items() if v is not None}}
    refused = [k for k in UNSUPPORTED if values.get(k) != GLOBAL_DEFAULTS.get(k)]
    if refused:
        raise InputError(f"the checkpoint's generation settings use {', '.join(f'{k}={values[k]!r}' for k in refused)}, "
                         "which the runtime does not implement")
    if values.get("temperature") == 0.0:
        values["do_sample"] = False
    return GenerationSettings(
        max_new_tokens=values.get("max_new_tokens"), max_length=values.get("max_length"),
        min_new_tokens=values.get("min_new_tokens"), min_length=int(values.get("min_length") or 0),
        do_sample=bool(values.get("do_sample")), temperature=float(values.get("temperature", 1.0)),
        top_k=int(values.get("top_k") or 0), top_p=float(values.get("top_p", 1.0)), min_p=values.get("min_p"),
        typical_p=float(values.get("typical_p", 1.0)), repetition_penalty=float(values.get("repetition_penalty", 1.0)),
        no_repeat_ngram_size=int(values.get("no_repeat_ngram_size") or 0), bad_words_ids=values.get("bad_words_ids"),
        forced_bos_token_id=values.get("forced_bos_token_id"),
        forced_eos_token_id=_ids(values.get("forced_eos_token_id")) or None,
        suppress_tokens=values.get("suppress_tokens"), begin_suppress_tokens=values.get("begin_suppress_tokens"),
        num_beams=int(values.get("num_beams") or 1), length_penalty=float(values.get("length_penalty", 1.0)),
        early_stopping=values.get("early_stopping", False),
        num_return_sequences=int(values.get("num_return_sequences") or 1),
        eos_token_id=_ids(values.get("eos_token_id")), pad_token_id=values.get("pad_token_id"),
        seed=values.get("seed"),
    )


def _ids(value: Any) -> list[int]:
    return [] if value is None else [value] if isinstance(value, int) else list(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(name: str, value: Any) -> None:
    """One call argument's type and range; the message names it and what is accepted."""
    if name in _COUNTS:
        check_count(name, value, minimum=_COUNTS[name])
    elif name in _POSITIVE or name in _UNIT or name == "length_penalty":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise InputError(f"{name} must be a finite number, got {value!r}")
        if name in _POSITIVE and value <= 0 and not (name == "temperature" and value == 0):
            raise InputError(f"{name} must be a number > 0, got {value!r}")
        if name in _UNIT and not 0 <= value <= 1:
            raise InputError(f"{name} must be in [0, 1], got {value!r}")
    elif name == "do_sample":
        if not isinstance(value, bool):
            raise InputError(f"do_sample must be True or False, got {value!r}")
    elif name == "early_stopping":
        if not isinstance(value, bool) and value != "never":
            raise InputError(f"early_stopping must be True, False or 'never', got {value!r}")
    elif name in ("eos_token_id", "forced_eos_token_id"):
        if not (_is_int(value) and value >= 0) and not (
                isinstance(value, (list, tuple)) and all(_is_int(i) and i >= 0 for i in value)):
            raise InputError(f"{name} must be a token id or a list of token ids, got {value!r}")
    elif name == "forced_bos_token_id":
        if not (_is_int(value) and value >= 0):
            raise InputError(f"forced_bos_token_id must be a token id, got {value!r}")
    elif name == "bad_words_ids":
        if not isinstance(value, (list, tuple)) or not all(
                isinstance(w, (list, tuple)) and w and all(_is_int(i) and i >= 0 for i in w) for w in value):
            raise InputError(f"bad_words_ids must be a list of non-empty lists of token ids, got {value!r}")
    elif name == "seed":
        if not (_is_int(value) and value >= 0):
            raise InputError(f"seed must be a non-negative integer, got {value!r}")
