"""text-generation for decoder-only bundles, with transformers' TextGenerationPipeline
arguments and outputs (``[{"generated_text": ...}]``).

Defaults are applied as transformers applies them: the call's arguments, then the
checkpoint's generation_config (recorded in the manifest), then the pipeline's own
defaults (``max_new_tokens=256``, ``do_sample=True``). Prompts run one at a time unless
``batch_size`` > 1, then left-padded together. Decoding (runtime/generation/): greedy,
sampling (temperature, top_k, top_p, min_p, typical_p, seed) or beam search (num_beams,
length_penalty, early_stopping, num_return_sequences), with repetition_penalty,
no_repeat_ngram_size, bad_words_ids, min/max_length, min/max_new_tokens, one or several
EOS ids and stop_strings; transformers' ``generate_kwargs`` dict is accepted too.
Chat messages (one conversation or a list of them) are rendered with the
tokenizer's chat template (runtime/chat_template.py); :meth:`TextGenerationPipeline.stream`
yields the new text piece by piece (runtime/generation/streaming.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeformers.models.errors import BundleError, InputError
from edgeformers.runtime.chat_template import ChatTemplate, Prompts, chat_prompts, is_chat
from edgeformers.runtime.generation import DecoderOnlyGenerator, GenerationSettings
from edgeformers.runtime.generation.arguments import SETTING_NAMES, merge, settings_from
from edgeformers.runtime.generation.streaming import IncrementalDetokenizer, TextStream, check_stream_arguments
from edgeformers.runtime.pipelines.base import Pipeline, chunks, text_batch, unbatch
from edgeformers.runtime.pipelines.fill_mask import clean_up_tokenization

#: TextGenerationPipeline._default_generation_config: used where the checkpoint's
#: generation_config says nothing.
PIPELINE_DEFAULTS: dict[str, Any] = {"max_new_tokens": 256, "do_sample": True}


class TextGenerationPipeline(Pipeline):
    task = "text-generation"

    def prepare(self) -> None:
        section = self.bundle.manifest.generation
        if not section:
            raise BundleError(f"{self.bundle.path}: the manifest has no generation section; text-generation needs a "
                              "decoder-only bundle exported by edgeformers with --task text-generation")
        self.generator = DecoderOnlyGenerator(self.model, section, str(self.bundle.path),
                                              decode=lambda ids: self.tokenizer.decode(ids, skip_special_tokens=False))
        #: the checkpoint's generation_config (manifest), EOS/pad filled from the section
        self.checkpoint_defaults = {k: v for k, v in (section.get("defaults") or {}).items()
                                    if k in SETTING_NAMES and v is not None}
        for name in ("eos_token_id", "pad_token_id"):
            if self.checkpoint_defaults.get(name) is None and section.get(name) is not None:
                self.checkpoint_defaults[name] = section[name]
        self.defaults = merge({}, self.checkpoint_defaults, PIPELINE_DEFAULTS)
        vocab = self.bundle.read_json("config.json").get("vocab_size")
        self.vocab_size = vocab if isinstance(vocab, int) and not isinstance(vocab, bool) and vocab > 0 else None
        config = self.bundle.read_json("tokenizer_config.json")
        self.clean_up_spaces = bool(config.get("clean_up_tokenization_spaces", False))
        self.chat_template = ChatTemplate.from_bundle(self.bundle)

    def __call__(
        self,
        text_inputs: Any,
        return_full_text: bool | None = None,
        continue_final_message: bool | None = None,
        max_new_tokens: int | None = None,
        min_new_tokens: int | None = None,
        do_sample: bool | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        repetition_penalty: float | None = None,
        num_return_sequences: int | None = None,
        eos_token_id: int | list[int] | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
        num_beams: int | None = None,
        length_penalty: float | None = None,
        early_stopping: bool | str | None = None,
        no_repeat_ngram_size: int | None = None,
        bad_words_ids: list[list[int]] | None = None,
        min_length: int | None = None,
        max_length: int | None = None,
        min_p: float | None = None,
        typical_p: float | None = None,
        stop_strings: str | list[str] | None = None,
        generate_kwargs: dict[str, Any] | None = None,
    ) -> Any:
        inputs = self._prompts(text_inputs, continue_final_message)
        texts, single = inputs.texts, inputs.single
        settings = self.generation_settings(
            generate_kwargs=generate_kwargs, max_new_tokens=max_new_tokens, min_new_tokens=min_new_tokens,
            do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
            repetition_penalty=repetition_penalty, eos_token_id=eos_token_id, seed=seed,
            num_return_sequences=num_return_sequences, num_beams=num_beams, length_penalty=length_penalty,
            early_stopping=early_stopping, no_repeat_ngram_size=no_repeat_ngram_size, bad_words_ids=bad_words_ids,
            min_length=min_length, max_length=max_length, min_p=min_p, typical_p=typical_p, stop_strings=stop_strings)
        num_return_sequences = settings.num_return_sequences
        if return_full_text is not None and not isinstance(return_full_text, bool):
            raise InputError(f"return_full_text must be True or False, got {return_full_text!r}")
        encodings = self._encode(inputs)
        self._check_context(encodings, settings.max_new_tokens, settings.max_length)
        results: list[list[dict[str, str]]] = []
        for rows in chunks(len(texts), batch_size or 1):
            prompts = [encodings[i].ids for i in range(rows.start, rows.stop) for _ in range(num_return_sequences)]
            generated = self._generate(prompts, settings)
            outputs = [{"generated_text": inputs.output(rows.start + n // num_return_sequences,
                                                        self._text("", prompt, new, False), return_full_text is not False)}
                       for n, (prompt, new) in enumerate(zip(prompts, generated))]
            results.extend(outputs[i:i + num_return_sequences] for i in range(0, len(outputs), num_return_sequences))
        return unbatch(results, single)

    def stream(self, text_inputs: Any, continue_final_message: bool | None = None, **kwargs: Any) -> TextStream:
        """Generate for one prompt (a string or one chat) and yield the new text as it
        comes: ``for piece in pipe.stream("Once upon", max_new_tokens=50): ...``. The
        pieces join to the ``generated_text`` that ``return_full_text=False`` gives. Takes
        the decoding arguments of a call for one sequence (greedy, sampling, or beam search,
        which streams the prefix its beams agree on); ``stream.cancel()``, from any thread, stops it before the next step."""
        check_stream_arguments(type(self).__call__, kwargs, ("text_inputs", "batch_size", "continue_final_message"))
        if kwargs.pop("return_full_text", None) is True:
            raise InputError("stream yields only the new text (return_full_text=False); the prompt is yours already")
        kwargs.pop("num_return_sequences", None)
        inputs = self._prompts(text_inputs, continue_final_message)
        if not inputs.single:
            raise InputError("stream takes one prompt (a string or one chat); call it once per prompt")
        settings = self.generation_settings(**kwargs)
        encodings = self._encode(inputs)
        self._check_context(encodings, settings.max_new_tokens, settings.max_length)
        ids = np.asarray([encodings[0].ids], dtype=np.int64)
        decoding = self.generator.start(ids, np.ones_like(ids), settings)
        detokenizer = IncrementalDetokenizer(lambda tokens: self.tokenizer.decode(tokens, skip_special_tokens=True),
                                             encodings[0].ids, clean_up_tokenization if self.clean_up_spaces else None)
        return TextStream(decoding, detokenizer, settings.eos_token_id, prompt=text_inputs)

    def _prompts(self, text_inputs: Any, continue_final_message: bool | None) -> Prompts:
        """Plain text, or chat messages rendered with the bundle's chat template."""
        if is_chat(text_inputs):
            return chat_prompts(self.chat_template, text_inputs, continue_final_message)
        if continue_final_message is not None:
            raise InputError("continue_final_message applies to chat messages only; text_inputs is plain text")
        texts, single = text_batch(text_inputs, "text_inputs")
        return Prompts(texts, single)

    def _encode(self, inputs: Prompts) -> list[Any]:
        """Token ids of each prompt. A rendered chat already holds its special tokens, so
        none are added again (transformers' add_special_tokens=False for chats)."""
        encodings = self.tokenizer.encode(inputs.texts, truncation=False, add_special_tokens=inputs.chats is None)
        for index, encoding in enumerate(encodings):
            if not encoding.ids:
                raise InputError(f"text_inputs[{index}] is empty and this tokenizer adds no BOS token, so there is "
                                 "nothing to continue from; pass at least one character")
        return encodings

    def _check_context(self, encodings: list[Any], max_new_tokens: int | None, max_length: int | None = None) -> None:
        """A prompt plus its new tokens must fit the model's positions: past them GPT-2's
        position table has no row and a RoPE model leaves the lengths it was trained on."""
        limit = self.bundle.manifest.generation.get("max_positions")
        if not isinstance(limit, int):
            return
        if max_new_tokens is None:
            if max_length is not None and max_length > limit:
                raise InputError(f"max_length={max_length} passes the model's {limit}-token context window; "
                                 f"lower it to {limit} or less")
            return
        for index, encoding in enumerate(encodings):
            if len(encoding.ids) + max_new_tokens > limit:
                raise InputError(
                    f"text_inputs[{index}] is {len(encoding.ids)} tokens; with max_new_tokens={max_new_tokens} that "
                    f"passes the model's {limit}-token context window; shorten the prompt or lower max_new_tokens"
                )

    def generation_settings(self, seed: int | None = None, generate_kwargs: dict[str, Any] | None = None,
                            **given: Any) -> GenerationSettings:
        """The decoding settings of a call with ``given`` arguments (None: not given; plus
        transformers' ``generate_kwargs`` dict form), checked, over the checkpoint's
        generation_config and the pipeline defaults (runtime/generation/arguments.py)."""
        if generate_kwargs is not None:
            if not isinstance(generate_kwargs, dict):
                raise InputError(f"generate_kwargs must be a dict of generation settings, got {generate_kwargs!r}")
            extra = dict(generate_kwargs)
            seed = extra.pop("seed", seed)
            given = {**extra, **{k: v for k, v in given.items() if v is not None}}
        values = merge(given, self.checkpoint_defaults, PIPELINE_DEFAULTS)
        return settings_from(values, seed, self.vocab_size)

    def _generate(self, prompts: list[list[int]], settings: GenerationSettings) -> list[list[int]]:
        """Each prompt's new tokens, the rows left-padded into one batch. ``prompts`` hold
        each prompt ``num_return_sequences`` times; the generator takes each once and
        returns ``num_return_sequences`` rows for it (sampled, or the best beams)."""
        prompts = prompts[::settings.num_return_sequences]
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
