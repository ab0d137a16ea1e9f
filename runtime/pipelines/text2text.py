"""text2text-generation, summarization and translation on encoder-decoder bundles
(encoder_model + decoder_model_merged), with transformers' arguments and outputs:
``[{"generated_text"}]``, ``[{"summary_text"}]``, ``[{"translation_text"}]``.

As transformers does: inputs run one at a time unless ``batch_size`` > 1 (then padded
together behind the mask); T5-style checkpoints get the task's prefix and settings from
config.json ``task_specific_params`` (``translation_en_to_fr`` picks that key; plain
``translation`` the first translation key); a tokenizer with language codes (mBART-50)
takes ``src_lang``/``tgt_lang``, builds ``[src_lang] text </s>`` and forces the target
code as the first generated token. Decoding settings: text2text_settings.py.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgeformers.models.errors import BundleError, InputError
from edgeformers.models.processing import decode_strips
from edgeformers.runtime.generation.seq2seq import KIND, Seq2SeqGenerator
from edgeformers.runtime.generation.settings import GenerationSettings
from edgeformers.runtime.generation.streaming import IncrementalDetokenizer, TextStream, check_stream_arguments
from edgeformers.runtime.pipelines.base import (
    Pipeline,
    check_fits,
    chunks,
    text_batch,
    truncation_strategy,
)
from edgeformers.runtime.pipelines.fill_mask import clean_up_tokenization
from edgeformers.runtime.pipelines.text2text_settings import call_settings, pipeline_defaults

logger = logging.getLogger(__name__)


class Text2TextGenerationPipeline(Pipeline):
    task = "text2text-generation"
    components = ("encoder_model", "decoder_model_merged")
    #: The output key's stem: ``generated_text`` / ``generated_token_ids``.
    return_name = "generated"

    def prepare(self) -> None:
        section = self.bundle.manifest.generation
        if section.get("kind") != KIND:
            raise BundleError(f"{self.bundle.path}: the manifest has no encoder-decoder generation section; "
                              f"{self.task} needs a bundle exported by edgeformers with --task {self.task}")
        self.section = section
        self.generator = Seq2SeqGenerator(self.models["encoder_model"], self.models["decoder_model_merged"], section,
                                          str(self.bundle.path))
        config = self.bundle.read_json("config.json")
        task_key = self.task_key(config.get("task_specific_params") or {})
        params = (config.get("task_specific_params") or {}).get(task_key) if task_key else None
        self.defaults, self.prefix = pipeline_defaults(section.get("defaults") or {},
                                                       params if isinstance(params, dict) else None,
                                                       self.tokenizer.pad_id)
        self.languages: dict[str, int] = dict(section.get("language_codes") or {})
        self.strip_decoded = decode_strips(self.bundle.manifest.model_type)

    def task_key(self, params: dict[str, Any]) -> str | None:
        """The task_specific_params key transformers reads for this pipeline."""
        return self.task

    def __call__(
        self,
        inputs: Any,
        return_text: bool | None = None,
        return_tensors: bool | None = None,
        clean_up_tokenization_spaces: bool | None = None,
        truncation: bool | str = False,
        max_new_tokens: int | None = None,
        max_length: int | None = None,
        min_length: int | None = None,
        min_new_tokens: int | None = None,
        num_beams: int | None = None,
        num_return_sequences: int | None = None,
        length_penalty: float | None = None,
        early_stopping: bool | str | None = None,
        do_sample: bool | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        min_p: float | None = None,
        typical_p: float | None = None,
        repetition_penalty: float | None = None,
        no_repeat_ngram_size: int | None = None,
        bad_words_ids: list[list[int]] | None = None,
        forced_bos_token_id: int | None = None,
        forced_eos_token_id: int | list[int] | None = None,
        eos_token_id: int | list[int] | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
    ) -> Any:
        given = {k: v for k, v in locals().items() if k not in ("self", "inputs", "return_text", "return_tensors",
                                                                 "clean_up_tokenization_spaces", "truncation",
                                                                 "batch_size")}
        return self._run(inputs, given, return_text, return_tensors, clean_up_tokenization_spaces, truncation,
                         batch_size)

    def _run(self, inputs: Any, given: dict[str, Any], return_text: bool | None, return_tensors: bool | None,
             clean_up: bool | None, truncation: bool | str, batch_size: int | None,
             src_lang: str | None = None, tgt_lang: str | None = None) -> Any:
        texts, single = text_batch(inputs, "inputs")
        for name, value in (("return_text", return_text), ("return_tensors", return_tensors)):
            if value is not None and not isinstance(value, bool):
                raise InputError(f"{name} must be True or False, got {value!r}")
        settings, encodings = self._prepare(texts, given, clean_up, truncation, src_lang, tgt_lang)
        results: list[list[dict[str, Any]]] = []
        copies = settings.num_return_sequences
        for rows in chunks(len(texts), batch_size or 1):
            batch = encodings[rows]
            width = max(len(ids) for ids in batch)
            ids = np.full((len(batch), width), self.tokenizer.pad_id, dtype=np.int64)
            mask = np.zeros((len(batch), width), dtype=np.int64)
            for row, tokens in enumerate(batch):
                ids[row, :len(tokens)] = tokens
                mask[row, :len(tokens)] = 1
            sequences = self.generator.generate({"input_ids": ids, "attention_mask": mask}, settings)
            outputs = [self._record(row.tolist(), return_tensors, clean_up) for row in sequences]
            results.extend(outputs[i:i + copies] for i in range(0, len(outputs), copies))
        if single:
            return results[0]
        return [r[0] for r in results] if all(len(r) == 1 for r in results) else results

    def _prepare(self, texts: list[str], given: dict[str, Any], clean_up: bool | None, truncation: bool | str,
                 src_lang: str | None, tgt_lang: str | None) -> tuple[GenerationSettings, list[list[int]]]:
        """The checked settings of a call and the token ids of its texts."""
        if clean_up is not None and not isinstance(clean_up, bool):
            raise InputError(f"clean_up_tokenization_spaces must be True or False, got {clean_up!r}")
        strategy = truncation_strategy(truncation)
        if src_lang is not None or tgt_lang is not None:
            target = self._language(tgt_lang, "tgt_lang")
            if given.get("forced_bos_token_id") is None:  # mBART-50: the target code is the first token
                given["forced_bos_token_id"] = target
        settings = call_settings(self.defaults, given, self.generator.vocab_size)
        return settings, self._encode(texts, strategy, src_lang)

    def stream(self, inputs: str, **kwargs: Any) -> TextStream:
        """Generate for one text and yield the output text as it comes:
        ``for piece in pipe.stream(article): ...``. Takes the decoding arguments of a call
        for one sequence; the pieces join to the call's text. Beam search (a summarizer's
        usual default) streams the prefix its beams agree on, the rest when it ends;
        ``stream.cancel()``, from any thread, stops it before the next step."""
        return self._stream(inputs, kwargs, None, None)

    def _stream(self, inputs: Any, kwargs: dict[str, Any], src_lang: str | None, tgt_lang: str | None) -> TextStream:
        check_stream_arguments(type(self).__call__, kwargs,
                               ("inputs", "return_text", "return_tensors", "batch_size", "src_lang", "tgt_lang"))
        if not isinstance(inputs, str):
            raise InputError(f"stream takes one text (a string), got {type(inputs).__name__}; call it once per text")
        clean_up = kwargs.pop("clean_up_tokenization_spaces", None)
        truncation = kwargs.pop("truncation", False)
        settings, encodings = self._prepare([inputs], dict(kwargs), clean_up, truncation, src_lang, tgt_lang)
        ids = np.asarray(encodings, dtype=np.int64)
        decoding = self.generator.start({"input_ids": ids, "attention_mask": np.ones_like(ids)}, settings)
        detokenizer = IncrementalDetokenizer(lambda tokens: self.tokenizer.decode(tokens, skip_special_tokens=True),
                                             self.generator.start_ids(1)[0].tolist(),
                                             clean_up_tokenization if clean_up else None, strip=self.strip_decoded)
        return TextStream(decoding, detokenizer, settings.eos_token_id, prompt=inputs)

    def _language(self, code: str | None, name: str) -> int:
        """The token id of a language code; an unknown code names the accepted ones."""
        if not self.languages:
            raise InputError(f"{name}={code!r}: this checkpoint's tokenizer has no language codes")
        if code is None:
            raise InputError(f"translation with this checkpoint needs both src_lang and tgt_lang "
                             f"(e.g. {', '.join(list(self.languages)[:4])}); {name} is missing")
        if not isinstance(code, str) or code not in self.languages:
            raise InputError(f"{name}={code!r} is not a language code of this checkpoint; it accepts: "
                             f"{', '.join(self.languages)}")
        return int(self.languages[code])

    def _encode(self, texts: list[str], strategy: str | None, src_lang: str | None) -> list[list[int]]:
        """Token ids per text: the prefix in front; with ``src_lang``, the source template
        the manifest records (``[src_lang] text </s>`` for mBART-50) around the text."""
        prefix: list[int] = []
        suffix: list[int] = []
        limits = [n for n in (self.bundle.manifest.processing.get("max_length"), self.section.get("max_positions")) if n]
        limit = min(limits) if limits else None  # truncation=True stops at the positions the encoder has
        if src_lang is not None:
            template = self.section.get("source_template")
            if not isinstance(template, dict):
                raise BundleError(f"{self.bundle.path}: the manifest records language codes but no source template")
            code = self._language(src_lang, "src_lang")
            prefix = [code if t == "src_lang" else int(t) for t in template["prefix"]]
            suffix = [code if t == "src_lang" else int(t) for t in template["suffix"]]
            limit = limit - len(prefix) - len(suffix) if limit else None
        encodings = self.tokenizer.encode([self.prefix + text for text in texts], truncation=strategy is not None,
                                          strategy=strategy or "longest_first", max_length=limit,
                                          add_special_tokens=src_lang is None)
        ids = [prefix + list(e.ids) + suffix for e in encodings]
        check_fits([_Ids(i) for i in ids], self.section.get("max_positions"),
                   "pass truncation=True (inputs are not truncated by default, as in transformers)")
        for index, tokens in enumerate(ids):
            if not tokens:
                raise InputError(f"inputs[{index}] is empty and this tokenizer adds no special tokens, so the "
                                 "encoder has nothing to read; pass at least one character")
        return ids

    def _record(self, ids: list[int], return_tensors: bool | None, clean_up: bool | None) -> dict[str, Any]:
        if return_tensors:
            return {f"{self.return_name}_token_ids": ids}
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if self.strip_decoded:  # MarianTokenizer.decode strips; a tokenizer.json decoder cannot
            text = text.strip()
        return {f"{self.return_name}_text": clean_up_tokenization(text) if clean_up else text}


class _Ids:
    """An id list where check_fits expects an encoding."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = ids


class SummarizationPipeline(Text2TextGenerationPipeline):
    task = "summarization"
    return_name = "summary"


class TranslationPipeline(Text2TextGenerationPipeline):
    """``translation_xx_to_yy`` names pick a T5 prefix (task_specific_params) and, for a
    tokenizer with language codes, ``src_lang``/``tgt_lang`` as transformers parses them."""

    task = "translation"
    return_name = "translation"

    def task_key(self, params: dict[str, Any]) -> str | None:
        if self.requested_task.startswith("translation_"):
            return self.requested_task
        keys = [key for key in params if key.startswith("translation")]
        if keys:  # transformers: plain "translation" takes the first translation_XX_to_YY key, with a warning
            logger.warning('"translation" task was used, instead of "translation_XX_to_YY", defaulting to "%s"',
                           keys[0])
            return keys[0]
        return None

    def __call__(  # type: ignore[override]
        self,
        inputs: Any,
        src_lang: str | None = None,
        tgt_lang: str | None = None,
        return_text: bool | None = None,
        return_tensors: bool | None = None,
        clean_up_tokenization_spaces: bool | None = None,
        truncation: bool | str = False,
        max_new_tokens: int | None = None,
        max_length: int | None = None,
        min_length: int | None = None,
        min_new_tokens: int | None = None,
        num_beams: int | None = None,
        num_return_sequences: int | None = None,
        length_penalty: float | None = None,
        early_stopping: bool | str | None = None,
        do_sample: bool | None = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        min_p: float | None = None,
        typical_p: float | None = None,
        repetition_penalty: float | None = None,
        no_repeat_ngram_size: int | None = None,
        bad_words_ids: list[list[int]] | None = None,
        forced_bos_token_id: int | None = None,
        forced_eos_token_id: int | list[int] | None = None,
        eos_token_id: int | list[int] | None = None,
        seed: int | None = None,
        batch_size: int | None = None,
    ) -> Any:
        given = {k: v for k, v in locals().items() if k not in ("self", "inputs", "return_text", "return_tensors",
                                                                 "clean_up_tokenization_spaces", "truncation",
                                                                 "batch_size", "src_lang", "tgt_lang")}
        return self._run(inputs, given, return_text, return_tensors, clean_up_tokenization_spaces, truncation,
                         batch_size, *self._pair(src_lang, tgt_lang))

    def stream(self, inputs: str, src_lang: str | None = None, tgt_lang: str | None = None,  # type: ignore[override]
               **kwargs: Any) -> TextStream:
        """The translation of one text as it comes (see :meth:`Text2TextGenerationPipeline.stream`)."""
        return self._stream(inputs, kwargs, *self._pair(src_lang, tgt_lang))

    def _pair(self, src_lang: str | None, tgt_lang: str | None) -> tuple[str | None, str | None]:
        """The languages of a call: the task name's (``translation_en_to_fr``) unless given;
        none for a single-pair model (transformers ignores them); both, for a model with codes."""
        if src_lang is None and tgt_lang is None and self.requested_task.startswith("translation_"):
            _, src_lang, _, tgt_lang = self.requested_task.split("_")
        if not self.languages:
            return None, None
        if src_lang is None or tgt_lang is None:  # transformers: "Translation requires a src_lang and a tgt_lang"
            missing = " and ".join(n for n, v in (("src_lang", src_lang), ("tgt_lang", tgt_lang)) if v is None)
            raise InputError(f"translation with this checkpoint needs both src_lang and tgt_lang "
                             f"(e.g. {', '.join(list(self.languages)[:4])}); "
                             f"{missing} {'are' if ' and ' in missing else 'is'} missing")
        return src_lang, tgt_lang
