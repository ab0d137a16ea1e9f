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

from typing import Any

from edgeformers.models.errors import InputError
from edgeformers.runtime.generation.arguments import SETTING_NAMES, settings_from
from edgeformers.runtime.generation.settings import GenerationSettings

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


def call_settings(defaults: dict[str, Any], given: dict[str, Any], vocab_size: int | None = None) -> GenerationSettings:
    """The settings of one call: ``given`` (the call's arguments, None = not given) over
    ``defaults``, checked by the runtime's one argument checker (generation/arguments.py)."""
    seed = given.get("seed")
    values = {**defaults, **{k: v for k, v in given.items() if v is not None and k != "seed"}}
    refused = [k for k in UNSUPPORTED if values.get(k) != GLOBAL_DEFAULTS.get(k)]
    if refused:
        raise InputError(f"generation settings {', '.join(f'{k}={values[k]!r}' for k in refused)} are not implemented "
                         "by the runtime (they come from the call or the checkpoint's generation_config)")
    if values.get("temperature") == 0.0:  # transformers: temperature 0 means greedy
        values.update(temperature=1.0, do_sample=False)
    return settings_from({k: v for k, v in values.items() if k in SETTING_NAMES}, seed=seed, vocab_size=vocab_size)
