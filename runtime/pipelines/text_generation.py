"""text-generation for decoder-only bundles, with transformers' TextGenerationPipeline
arguments and outputs (``[{"generated_text": ...}]``).

Defaults are applied as transformers applies them: the call's arguments, then the
checkpoint's generation_config (recorded in the manifest), then the pipeline's own
defaults (``max_new_tokens=256``, ``do_sample=True``). Prompts run one at a time unless
``batch_size`` > 1, then left-padded together. Decoding: greedy or sampling
(temperature, top_k, top_p, seed), min/max_new_tokens, repetition_penalty, one or several
EOS ids. Not yet: beam search, chat messages, streaming, stop strings.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from edgeformers.models.errors import BundleError, InputError
from edgeformers.runtime.generation import DecoderOnlyGenerator, GenerationSettings
from edgeformers.runtime.pipelines.base import Pipeline, check_count, chunks, text_batch, unbatch
from edgeformers.runtime.pipelines.fill_mask import clean_up_tokenization

#: TextGenerationPipeline._default_generation_config: used where the checkpoint's
#: generation_config says nothing.
PIPELINE_DEFAULTS: dict[str, Any] = {"max_new_tokens": 256, "do_sample": True}
_SETTINGS = ("max_new_tokens", "min_new_tokens", "do_sample", "temperature", "top_k", "top_p", "repetition_penalty",
             "eos_token_id", "pad_token_id")


class TextGenerationPipeline(Pipeline):
    task = "text-generation"

    def prepare(self) -> None:
        section = self.bundle.manifest.generation
        if not section:
            raise BundleError(f"{self.bundle.path}: the manifest has no generation section; text-generation needs a "
                              "decoder-only bundle exported by edgeformers with --task text-generation")
        self.generator = DecoderOnlyGenerator(self.model, section, str(self.bundle.path))
        self.defaults = dict(PIPELINE_DEFAULTS)
        self.defaults.update({k: v for k, v in (section.get("defaults") or {}).items() if k in _SETTINGS and v is not None})
        for name in ("eos_token_id", "pad_token_id"):
            if self.defaults.get(name) is None and section.get(name) is not None:
                self.defaults[name] = section[name]
        config = self.bundle.read_json("tokenizer_config.json")
        self.clean_up_spaces = bool(config.get("clean_up_tokenization_spaces", False))

    def __call__(
        self,
        text_inputs: Any,
        return_full_text: bool | None = None,
        max_new_tokens: int | None = None,
        min_new_tokens: int | None = None,
        do_sample: bool | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float | None = None,
        num_return_sequences: int = 1,
        eos_token_id: int | list[int] | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
    ) -> Any:
        texts, single = text_batch(text_inputs, "text_inputs")
        settings = self.generation_settings(max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens, do_sample=do_sample,
                                  temperature=temperature, top_k=top_k, top_p=top_p,
                                  repetition_penalty=repetition_penalty, eos_token_id=eos_token_id, seed=seed)
        check_count("num_return_sequences", num_return_sequences)
        if num_return_sequences > 1 and not settings.do_sample:
            raise InputError(f"num_return_sequences={num_return_sequences} needs do_sample=True: greedy decoding "
                             "gives one sequence per prompt (beam search is not available yet)")
        if return_full_text is not None and not isinstance(return_full_text, bool):
            raise InputError(f"return_full_text must be True or False, got {return_full_text!r}")
        encodings = self.tokenizer.encode(texts, truncation=False)
        for index, encoding in enumerate(encodings):
            if not encoding.ids:
                raise InputError(f"text_inputs[{index}] is empty and this tokenizer adds no BOS token, so there is "
                                 "nothing to continue from; pass at least one character")
        self._check_context(encodings, settings.max_new_tokens)
        results: list[list[dict[str, str]]] = []
        for rows in chunks(len(texts), batch_size or 1):
            prompts = [encodings[i].ids for i in range(rows.start, rows.stop) for _ in range(num_return_sequences)]
            generated = self._generate(prompts, settings)
            outputs = [{"generated_text": self._text(texts[rows.start + n // num_return_sequences], prompt, new,
                                                     return_full_text is not False)}
                       for n, (prompt, new) in enumerate(zip(prompts, generated))]
            results.extend(outputs[i:i + num_return_sequences] for i in range(0, len(outputs), num_return_sequences))
        return unbatch(results, single)

    def _check_context(self, encodings: list[Any], max_new_tokens: int) -> None:
        """A prompt plus its new tokens must fit the model's positions: past them GPT-2's
        position table has no row and a RoPE model leaves the lengths it was trained on."""
        limit = self.bundle.manifest.generation.get("max_positions")
        if not isinstance(limit, int):
            return
        for index, encoding in enumerate(encodings):
            if len(encoding.ids) + max_new_tokens > limit:
                raise InputError(
                    f"text_inputs[{index}] is {len(encoding.ids)} tokens; with max_new_tokens={max_new_tokens} that "
                    f"passes the model's {limit}-token context window; shorten the prompt or lower max_new_tokens"
                )

    def generation_settings(self, seed: int | None = None, **given: Any) -> GenerationSettings:
        """The decoding settings of a call with ``given`` arguments (None: not given),
        checked, over the checkpoint's generation_config and the pipeline defaults."""
        values = {**self.defaults, **{k: v for k, v in given.items() if v is not None}}
        for name in ("max_new_tokens", "top_k"):
            check_count(name, values.get(name), minimum=1 if name == "max_new_tokens" else 0)
        check_count("min_new_tokens", values.get("min_new_tokens"), minimum=0)
        for name, low in (("temperature", 0.0), ("top_p", 0.0), ("repetition_penalty", 0.0)):
            value = values.get(name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value) or value <= low):
                raise InputError(f"{name} must be a number > {low:g}, got {value!r}")
        if values.get("top_p") is not None and values["top_p"] > 1:
            raise InputError(f"top_p must be in (0, 1], got {values['top_p']!r}")
        if not isinstance(values.get("do_sample", False), bool):
            raise InputError(f"do_sample must be True or False, got {values['do_sample']!r}")
        eos = values.get("eos_token_id")
        eos_ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        if any(not isinstance(i, int) or isinstance(i, bool) or i < 0 for i in eos_ids):
            raise InputError(f"eos_token_id must be a token id or a list of token ids, got {eos!r}")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool) or seed < 0):
            raise InputError(f"seed must be a non-negative integer, got {seed!r}")
        return GenerationSettings(
            max_new_tokens=values["max_new_tokens"], min_new_tokens=values.get("min_new_tokens"),
            do_sample=values.get("do_sample", False), temperature=float(values.get("temperature", 1.0)),
            top_k=int(values.get("top_k", 50)), top_p=float(values.get("top_p", 1.0)),
            repetition_penalty=float(values.get("repetition_penalty", 1.0)), eos_token_id=eos_ids,
            pad_token_id=values.get("pad_token_id"), seed=seed,
        )

    def _generate(self, prompts: list[list[int]], settings: GenerationSettings) -> list[list[int]]:
        """Each prompt's new tokens, the rows left-padded into one batch."""
        width = max(len(p) for p in prompts)
        ids = np.full((len(prompts), width), self.tokenizer.pad_id, dtype=np.int64)
        mask = np.zeros((len(prompts), width), dtype=np.int64)
        for row, prompt in enumerate(prompts):
            ids[row, width - len(prompt):] = prompt
            mask[row, width - len(prompt):] = 1
        sequences = self.generator.generate(ids, mask, settings)
        return [row[width:].tolist() for row in sequences]

    def _text(self, prompt_text: str, prompt: list[int], new: list[int], full: bool) -> str:
        """As transformers: decode prompt+new, cut the decoded prompt's length off, then
        put the caller's own prompt text back in front when ``return_full_text``."""
        all_text = self._decode(prompt + new)[len(self._decode(prompt)):]
        return prompt_text + all_text if full else all_text

    def _decode(self, ids: list[int]) -> str:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        return clean_up_tokenization(text) if self.clean_up_spaces else text
