"""image-to-text (a VisionEncoderDecoder such as ViT + GPT-2), with transformers'
arguments (``max_new_tokens``, ``generate_kwargs``) and output: ``[{"generated_text"}]`` per
image. The image encoder runs once per batch, then the merged decoder is stepped by the
generation core (Seq2SeqGenerator: greedy, sampling, beams), settings merged as
transformers merges them (text2text_settings.py) with this pipeline's own default,
``max_new_tokens=256``."""

from __future__ import annotations

from typing import Any

from edgeformers.models.errors import BundleError, InputError
from edgeformers.runtime.generation.arguments import SETTING_NAMES
from edgeformers.runtime.generation.seq2seq import KIND, Seq2SeqGenerator
from edgeformers.runtime.pipelines.base import chunks
from edgeformers.runtime.pipelines.image_classification import ImagePipeline
from edgeformers.runtime.pipelines.text2text_settings import call_settings, pipeline_defaults
from edgeformers.runtime.vision.images import image_batch


class ImageToTextPipeline(ImagePipeline):
    task = "image-to-text"
    uses_tokenizer = True
    components = ("encoder_model", "decoder_model_merged")

    def prepare(self) -> None:
        super().prepare()
        section = self.bundle.manifest.generation
        if section.get("kind") != KIND:
            raise BundleError(f"{self.bundle.path}: the manifest has no encoder-decoder generation section; "
                              "image-to-text needs a bundle exported by edgeformers with --task image-to-text")
        self.generator = Seq2SeqGenerator(self.models["encoder_model"], self.models["decoder_model_merged"], section,
                                          str(self.bundle.path))
        model_defaults = section.get("defaults") or {}
        self.defaults, _ = pipeline_defaults(model_defaults, None, self.tokenizer.pad_id if self.tokenizer else None)
        # ImageToTextPipeline's own default is max_new_tokens=256 only (no num_beams=4 as text2text's)
        self.defaults["num_beams"] = model_defaults.get("num_beams", 1)

    def __call__(self, inputs: Any, max_new_tokens: int | None = None, generate_kwargs: dict[str, Any] | None = None,
                 prompt: str | None = None, timeout: float | None = None, batch_size: int | None = None) -> Any:
        """One image gives ``[{"generated_text": ...}]`` (one record per returned sequence);
        a list gives one such list per image. ``generate_kwargs`` takes the generation
        core's arguments (num_beams, do_sample, temperature, top_k, top_p, repetition_penalty,
        no_repeat_ngram_size, min_new_tokens, seed ...). ``prompt`` (conditional captioning,
        deprecated in transformers) is refused for VisionEncoderDecoder, as transformers does."""
        if prompt is not None:
            raise InputError("prompt: a vision-encoder-decoder model does not support conditional text generation")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))):
            raise InputError(f"timeout must be a number of seconds or None, got {timeout!r}")
        if generate_kwargs is not None and not isinstance(generate_kwargs, dict):
            raise InputError(f"generate_kwargs must be a dict of generation arguments, got {generate_kwargs!r}")
        given = dict(generate_kwargs or {})
        unknown = sorted(set(given) - set(SETTING_NAMES) - {"seed"})
        if unknown:
            raise InputError(f"generate_kwargs: unknown generation argument(s) {unknown}; accepted: "
                             f"{', '.join(sorted(SETTING_NAMES))}, seed")
        if max_new_tokens is not None:
            if "max_new_tokens" in given:
                raise InputError("max_new_tokens is given both as an argument and inside generate_kwargs; use one")
            given["max_new_tokens"] = max_new_tokens
        settings = call_settings(self.defaults, given, self.generator.vocab_size)
        images, single = image_batch(inputs)
        results: list[list[dict[str, str]]] = []
        copies = settings.num_return_sequences
        for part in chunks(len(images), batch_size or 1):
            sequences = self.generator.generate(self.feed(images[part]), settings)
            texts = [{"generated_text": self.tokenizer.decode(row.tolist(), skip_special_tokens=True)}
                     for row in sequences]
            results.extend(texts[i:i + copies] for i in range(0, len(texts), copies))
        return results[0] if single else results
