"""The search algorithms over any :class:`~edgeformers.runtime.generation.stepper.Stepper`:
greedy and sampling as a pull-style :class:`Decoding` (one token per row per ``step()``,
what streaming drives), and :func:`beam_search` as transformers 4.57's ``_beam_search``
computes it (vectorised top-k over beams x vocabulary, finished hypotheses scored by
sum of log-probabilities / generated_length ** length_penalty).

``sequences`` always hold what the stepper was first fed (the left-padded prompt of a
decoder-only model, the decoder start tokens of an encoder-decoder) followed by the new
tokens; processors and stopping rules see them as transformers' ``input_ids``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edgeformers.models.errors import InputError
from edgeformers.runtime.generation.processors import LogitsProcessors, log_softmax, softmax
from edgeformers.runtime.generation.settings import GenerationSettings
from edgeformers.runtime.generation.stepper import Stepper

#: A stopping rule beyond EOS and length (stop strings): the rows of ``sequences`` that are done.
StopRule = Callable[[np.ndarray], np.ndarray]
_BIG = np.float32(1.0e9)


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


def _top(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest values per row, best first (ties: lower index first)."""
    k = min(k, values.shape[1])
    part = np.argpartition(-values, k - 1, axis=1)[:, :k] if k < values.shape[1] else \
        np.tile(np.arange(values.shape[1]), (values.shape[0], 1))
    chosen = np.take_along_axis(values, part, axis=1)
    order = np.lexsort((part, -chosen), axis=1)
    return np.take_along_axis(part, order, axis=1)


def _divide(values: np.ndarray, divisor: float) -> np.ndarray:
    """``values / divisor`` as torch divides a float32 tensor by a Python scalar (the
    scalar rounded to float32 first), so scores that tie or order in transformers do here too."""
    return values / np.float32(divisor)


def _gather(values: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``values[b, indices[b, j], ...]``: transformers' _gather_beams."""
    return values[np.arange(values.shape[0])[:, None], indices]


def beam_search(stepper: Stepper, input_ids: np.ndarray, settings: GenerationSettings,
                max_positions: int | None = None, stop: StopRule | None = None) -> tuple[np.ndarray, np.ndarray]:
    """transformers' beam search over ``stepper`` for the rows ``input_ids``.

    Returns (sequences [batch * num_return_sequences, length], their scores): per input
    row, the best ``num_return_sequences`` finished hypotheses, best first, shorter ones
    filled with the pad id (else the first EOS) as transformers fills them."""
    beams, eos = settings.num_beams, list(settings.eos_token_id)
    if settings.do_sample:
        raise InputError("sampled beam search (do_sample=True with num_beams > 1) is not available; "
                         "use do_sample=False with num_beams, or num_beams=1 to sample")
    if settings.num_return_sequences > beams:
        raise InputError(f"num_return_sequences ({settings.num_return_sequences}) has to be smaller or equal to "
                         f"num_beams ({beams})")
    batch, fed = input_ids.shape
    max_length = settings.total_length(fed, max_positions)
    if max_length <= fed:
        raise InputError(f"max_length={max_length} leaves no room for new tokens after {fed} input tokens")
    processors = LogitsProcessors(settings, fed, max_length)
    early, penalty = settings.early_stopping, settings.length_penalty
    keep = max(2, 1 + len(eos)) * beams
    top_mask = np.arange(keep) < beams
    pad = settings.pad_token_id
    fill = ((pad if pad else eos[0]) if eos else -1)
    running = np.full((batch, beams, max_length), fill, dtype=np.int64)
    running[:, :, :fed] = input_ids[:, None, :]
    finished_seqs = running.copy()
    running_scores = np.zeros((batch, beams), dtype=np.float32)
    running_scores[:, 1:] = -_BIG
    finished_scores = np.full((batch, beams), -_BIG, dtype=np.float32)
    is_finished = np.zeros((batch, beams), dtype=bool)
    improvable = np.ones((batch, 1), dtype=bool)
    running_idx = np.full((batch, beams, max_length - fed), -1, dtype=np.int64)
    finished_idx = running_idx.copy()
    offsets = np.arange(batch)[:, None] * beams

    stepper.reorder(np.repeat(np.arange(batch), beams))
    feed = np.repeat(input_ids, beams, axis=0)
    cur = fed
    while True:
        flat = running[:, :, :cur].reshape(batch * beams, cur)
        logits = stepper.step(feed)
        log_probs = processors(flat, log_softmax(logits.astype(np.float32)))
        vocab = log_probs.shape[-1]
        totals = (log_probs.reshape(batch, beams, vocab) + running_scores[:, :, None]).reshape(batch, beams * vocab)
        # c. the best `keep` continuations over all beams
        top = _top(totals, keep)
        top_scores = np.take_along_axis(totals, top, axis=1)
        source = top // vocab
        top_seqs = _gather(running, source)
        top_seqs[:, :, cur] = top % vocab
        top_idx = _gather(running_idx, source)
        top_idx[:, :, cur - fed] = source + offsets
        # d. which of them finished (EOS, length, stop strings)
        last = top_seqs[:, :, cur]
        hits = np.isin(last, eos) if eos else np.zeros_like(last, dtype=bool)
        if cur + 1 >= max_length:
            hits[:] = True
        elif stop is not None:
            hits |= stop(top_seqs[:, :, :cur + 1].reshape(batch * keep, cur + 1)).reshape(batch, keep)
        # e. the best unfinished ones run on
        run_scores = top_scores + hits.astype(np.float32) * -_BIG
        chosen = _top(run_scores, beams)
        running, running_scores, running_idx = _gather(top_seqs, chosen), _gather(run_scores, chosen), \
            _gather(top_idx, chosen)
        # f. finished hypotheses enter the kept set if they beat it
        just_finished = hits & top_mask[None, :]
        scored = _divide(top_scores, (cur + 1 - fed) ** penalty)
        full = is_finished.all(axis=1, keepdims=True) & (early is True)
        scored = scored + full.astype(np.float32) * -_BIG + (~improvable).astype(np.float32) * -_BIG
        scored = scored + (~just_finished).astype(np.float32) * -_BIG
        merged_scores = np.concatenate([finished_scores, scored], axis=1)
        best = _top(merged_scores, beams)
        finished_seqs = _gather(np.concatenate([finished_seqs, top_seqs], axis=1), best)
        finished_scores = _gather(merged_scores, best)
        finished_idx = _gather(np.concatenate([finished_idx, top_idx], axis=1), best)
        is_finished = _gather(np.concatenate([is_finished, just_finished], axis=1), best)
        # g. next step: the cache follows the running beams
        cur += 1
        hypothetical = (max_length - fed) if (early == "never" and penalty > 0.0) else (cur - fed)
        best_running = _divide(running_scores[:, :1], hypothetical ** penalty)
        worst_done = np.where(is_finished, finished_scores.min(axis=1, keepdims=True), -_BIG)
        improvable = improvable & (best_running > worst_done).any(axis=-1, keepdims=True)
        if not (improvable.any() and not (is_finished.all() and early is True) and not hits.all()):
            break
        stepper.reorder(running_idx[:, :, cur - 1 - fed].reshape(-1))
        feed = running[:, :, cur - 1].reshape(batch * beams, 1)
    returned = settings.num_return_sequences
    seqs = finished_seqs[:, :returned].reshape(batch * returned, max_length)
    idx = finished_idx[:, :returned].reshape(batch * returned, -1)
    generated = int((idx != -1).sum(axis=1).max())
    return seqs[:, :fed + generated], finished_scores[:, :returned].reshape(-1)
