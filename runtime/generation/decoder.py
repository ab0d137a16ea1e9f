"""Decoding for a decoder-only graph exported as one ``model.onnx`` with
``past_key_values.*`` inputs and ``present.*`` outputs: a :class:`DecoderOnlyStepper`
per batch (runtime/generation/stepper.py) driven by the search algorithms of
runtime/generation/search.py. The manifest's ``generation`` section names everything."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from edgeformers.models.errors import BundleError, InputError
from edgeformers.runtime.generation.beams import BeamSearch
from edgeformers.runtime.generation.search import Decoding, StopRule
from edgeformers.runtime.generation.settings import GenerationSettings
from edgeformers.runtime.generation.stepper import DecoderLayout, DecoderOnlyStepper
from edgeformers.runtime.generation.stopping import StopStrings
from edgeformers.runtime.session import OnnxModel

__all__ = ["DecoderLayout", "DecoderOnlyGenerator", "Decoding", "GenerationSettings"]


class DecoderOnlyGenerator:
    """Greedy, sampled or beam-search continuation of left-padded token rows, with a KV cache.

    Holds no per-call state: one generator serves any number of decodings, one after
    another or from several threads."""

    def __init__(self, model: OnnxModel, section: dict[str, Any], where: str,
                 decode: Callable[[list[int]], str] | None = None) -> None:
        self.model = model
        #: token ids -> text, for stop_strings (the pipeline gives its tokenizer's decode)
        self.decode = decode
        self.layout = DecoderLayout.from_section(section, where)
        missing = [n for n in (self.layout.input_ids, self.layout.attention_mask, *self.layout.past)
                   if n not in model.input_names]
        if missing:
            raise BundleError(f"{where}: the graph lacks the inputs the manifest names: {missing}")
        self.past_type = np.float16 if model.input_types.get(self.layout.past[0]) == np.float16 else np.float32
        positions = section.get("max_positions")
        self.max_positions = positions if isinstance(positions, int) else None

    def stepper(self, attention_mask: np.ndarray) -> DecoderOnlyStepper:
        """A fresh KV cache for the rows of ``attention_mask`` (left-padded, 0 on padding)."""
        return DecoderOnlyStepper(self.model, self.layout, attention_mask, self.past_type)

    def start(self, input_ids: np.ndarray, attention_mask: np.ndarray, settings: GenerationSettings,
              stop: StopRule | None = None) -> Decoding | BeamSearch:
        """A pull-style decoding of the rows ``input_ids`` (left-padded, mask 0 on
        padding): greedy or sampled (:class:`Decoding`, a token per row per ``step()``), or
        a :class:`BeamSearch` for ``num_beams`` > 1. Step until ``done`` (or ``cancel()``)."""
        _check_new_tokens(settings)
        stop = stop or self._stop_strings(settings, input_ids.shape[1])
        if settings.num_beams > 1:
            return BeamSearch(self.stepper(attention_mask), input_ids, settings, self.max_positions, stop)
        return Decoding(self.stepper(attention_mask), input_ids, settings, self.max_positions, stop)

    def generate(self, input_ids: np.ndarray, attention_mask: np.ndarray, settings: GenerationSettings,
                 stop: StopRule | None = None) -> np.ndarray:
        """The rows ``input_ids`` followed by their new tokens, ``num_return_sequences``
        rows per input row (as transformers: sampled rows repeat the input, beam search
        returns its best hypotheses); a row that finished is filled with the pad id."""
        if settings.num_beams == 1 and settings.num_return_sequences > 1:
            input_ids = np.repeat(input_ids, settings.num_return_sequences, axis=0)
            attention_mask = np.repeat(attention_mask, settings.num_return_sequences, axis=0)
        return self.start(input_ids, attention_mask, settings, stop).run()

    def _stop_strings(self, settings: GenerationSettings, fed: int) -> StopRule | None:
        if not settings.stop_strings:
            return None
        if self.decode is None:
            raise InputError("stop_strings needs a tokenizer to decode the new text; this generator has none")
        return StopStrings(self.decode, settings.stop_strings, fed)


def _check_new_tokens(settings: GenerationSettings) -> None:
    if settings.max_new_tokens is not None and settings.max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be >= 1, got {settings.max_new_tokens}")
