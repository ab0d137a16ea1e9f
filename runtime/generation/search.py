"""Greedy and sampled decoding over any :class:`~edgeformers.runtime.generation.stepper.Stepper`
as a pull-style :class:`Decoding` (one token per row per ``step()``, what streaming
drives); beam search is its sibling in runtime/generation/beams.py.

``sequences`` always hold what the stepper was first fed (the left-padded prompt of a
decoder-only model, the decoder start tokens of an encoder-decoder) followed by the new
tokens; processors and stopping rules see them as transformers' ``input_ids``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgeformers.models.errors import InputError
from edgeformers.runtime.generation.processors import LogitsProcessors, softmax
from edgeformers.runtime.generation.settings import GenerationSettings
from edgeformers.runtime.generation.stepper import Stepper

#: A stopping rule beyond EOS and length (stop strings): the rows of ``sequences`` that are done.
StopRule = Callable[[np.ndarray], np.ndarray]


class Decoding:
    """Greedy or sampled decoding of one batch, a token per row per :meth:`step`.

    A row that produced an EOS (or hit ``stop``) gets the pad id until every row is done;
    :meth:`cancel` ends the decoding early (the stepper's model stays usable)."""

    def __init__(self, stepper: Stepper, input_ids: np.ndarray, settings: GenerationSettings,
                 max_positions: int | None = None, stop: StopRule | None = None) -> None:
        if settings.num_beams > 1:
            raise InputError("beam search is not pull-style: use beam_search() (or generate()) for num_beams > 1")
        self.stepper = stepper
        self.settings = settings
        self.sequences = np.asarray(input_ids, dtype=np.int64)
        self.prompt_length = self.sequences.shape[1]
        self.max_length = settings.total_length(self.prompt_length, max_positions)
        if self.max_length <= self.prompt_length:
            raise InputError(f"max_length={self.max_length} leaves no room for new tokens after "
                             f"{self.prompt_length} input tokens; raise max_length or use max_new_tokens")
        self.processors = LogitsProcessors(settings, self.prompt_length, self.max_length)
        self.eos = np.asarray(settings.eos_token_id, dtype=np.int64)
        self.pad = settings.pad_id()
        self.stop = stop
        self.rng = np.random.default_rng(settings.seed)
        self.unfinished = np.ones(self.sequences.shape[0], dtype=bool)
        self.cancelled = False
        self._next_input = self.sequences

    @property
    def new_tokens(self) -> int:
        return self.sequences.shape[1] - self.prompt_length

    @property
    def done(self) -> bool:
        """Every row finished, the length limit is reached, or the decoding was cancelled."""
        return self.cancelled or not self.unfinished.any() or self.sequences.shape[1] >= self.max_length

    def cancel(self) -> None:
        """Stop before the next step; ``sequences`` keep what was generated so far."""
        self.cancelled = True

    def step(self) -> np.ndarray:
        """Run the model once and return one new token per row (the pad id for finished rows)."""
        if self.done:
            raise InputError("this decoding is done; start another to generate more")
        logits = self.stepper.step(self._next_input)
        scores = self.processors(self.sequences, logits)
        next_ids = self._sample(scores) if self.settings.do_sample else scores.argmax(axis=-1)
        next_ids = np.where(self.unfinished, next_ids, self.pad).astype(np.int64)
        self.sequences = np.concatenate([self.sequences, next_ids[:, None]], axis=1)
        self._next_input = next_ids[:, None]
        if self.eos.size:
            self.unfinished &= ~np.isin(next_ids, self.eos)
        if self.stop is not None and self.unfinished.any():
            running = np.flatnonzero(self.unfinished)  # finished rows are not decoded again
            self.unfinished[running[self.stop(self.sequences[running])]] = False
        return next_ids

    def _sample(self, scores: np.ndarray) -> np.ndarray:
        probs = softmax(scores.astype(np.float64))
        return np.array([self.rng.choice(probs.shape[-1], p=row) for row in probs], dtype=np.int64)

    def run(self) -> np.ndarray:
        """Step until done; the sequences (first fed tokens, then the new ones)."""
        while not self.done:
            self.step()
        return self.sequences
