"""Beam search as transformers 4.57's ``_beam_search`` computes it (vectorised top-k over
beams x vocabulary, finished hypotheses scored by sum of log-probabilities /
generated_length ** length_penalty), as a pull-style :class:`BeamSearch` so a stream can
show text while the beams still run.

What a beam search can show before it ends is its *settled* prefix. The final answer is
the best kept finished hypothesis, which only a better finished one can displace, and
those come from running beams; a running beam's score only falls as it grows (every
processed log-probability is <= 0), so a beam whose best possible final score (its score
over the longest length it could reach, or the shortest for length_penalty <= 0) is
below the best kept hypothesis can never win. The tokens that the best kept hypothesis
and every beam that can still win share can no longer change (:meth:`BeamSearch.settled`).
Beams of a summarizer or translator agree on most of their prefix, so most of the text
streams before the search ends.
"""

from __future__ import annotations

import numpy as np

from edgeformers.models.errors import InputError
from edgeformers.runtime.generation.processors import LogitsProcessors, log_softmax
from edgeformers.runtime.generation.search import StopRule
from edgeformers.runtime.generation.settings import GenerationSettings
from edgeformers.runtime.generation.stepper import Stepper

_BIG = np.float32(1.0e9)


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


def _common_prefix(rows: np.ndarray) -> int:
    """How many leading columns every row of ``rows`` [n, length] shares."""
    if rows.shape[0] == 0 or rows.shape[1] == 0:
        return rows.shape[1]
    differs = np.flatnonzero((rows != rows[:1]).any(axis=0))
    return int(differs[0]) if differs.size else rows.shape[1]


class BeamSearch:
    """transformers' beam search over ``stepper`` for the rows ``input_ids``, one model
    step per :meth:`step`; :meth:`run` steps to the end and gives the result."""

    def __init__(self, stepper: Stepper, input_ids: np.ndarray, settings: GenerationSettings,
                 max_positions: int | None = None, stop: StopRule | None = None) -> None:
        beams, eos = settings.num_beams, list(settings.eos_token_id)
        if settings.do_sample:
            raise InputError("sampled beam search (do_sample=True with num_beams > 1) is not available; "
                             "use do_sample=False with num_beams, or num_beams=1 to sample")
        if settings.num_return_sequences > beams:
            raise InputError(f"num_return_sequences ({settings.num_return_sequences}) has to be smaller or equal to "
                             f"num_beams ({beams})")
        batch, fed = input_ids.shape
        self.max_length = settings.total_length(fed, max_positions)
        if self.max_length <= fed:
            raise InputError(f"max_length={self.max_length} leaves no room for new tokens after {fed} input tokens")
        self.stepper, self.settings, self.stop, self.eos = stepper, settings, stop, eos
        self.batch, self.beams, self.fed = batch, beams, fed
        self.processors = LogitsProcessors(settings, fed, self.max_length)
        self.keep = max(2, 1 + len(eos)) * beams
        pad = settings.pad_token_id
        fill = ((pad if pad else eos[0]) if eos else -1)
        self.running = np.full((batch, beams, self.max_length), fill, dtype=np.int64)
        self.running[:, :, :fed] = input_ids[:, None, :]
        self.finished_seqs = self.running.copy()
        self.running_scores = np.zeros((batch, beams), dtype=np.float32)
        self.running_scores[:, 1:] = -_BIG
        self.finished_scores = np.full((batch, beams), -_BIG, dtype=np.float32)
        self.is_finished = np.zeros((batch, beams), dtype=bool)
        self.improvable = np.ones((batch, 1), dtype=bool)
        self.running_idx = np.full((batch, beams, self.max_length - fed), -1, dtype=np.int64)
        self.finished_idx = self.running_idx.copy()
        self.cur = fed
        self.done = False
        self.cancelled = False
        stepper.reorder(np.repeat(np.arange(batch), beams))
        self._feed = np.repeat(input_ids, beams, axis=0)

    def cancel(self) -> None:
        """Stop before the next step (:meth:`leading` holds the best running beam)."""
        self.cancelled = self.done = True

    def step(self) -> None:
        """One model step for every beam: extend, keep the best, store finished hypotheses."""
        if self.done:
            raise InputError("this beam search is done; start another to generate more")
        batch, beams, fed, cur, eos = self.batch, self.beams, self.fed, self.cur, self.eos
        early, penalty = self.settings.early_stopping, self.settings.length_penalty
        flat = self.running[:, :, :cur].reshape(batch * beams, cur)
        logits = self.stepper.step(self._feed)
        log_probs = self.processors(flat, log_softmax(logits.astype(np.float32)))
        vocab = log_probs.shape[-1]
        totals = (log_probs.reshape(batch, beams, vocab) + self.running_scores[:, :, None]).reshape(batch, -1)
        # c. the best `keep` continuations over all beams
        top = _top(totals, self.keep)
        top_scores = np.take_along_axis(totals, top, axis=1)
        source = top // vocab
        top_seqs = _gather(self.running, source)
        top_seqs[:, :, cur] = top % vocab
        top_idx = _gather(self.running_idx, source)
        top_idx[:, :, cur - fed] = source + np.arange(batch)[:, None] * beams
        # d. which of them finished (EOS, length, stop strings)
        last = top_seqs[:, :, cur]
        hits = np.isin(last, eos) if eos else np.zeros_like(last, dtype=bool)
        if cur + 1 >= self.max_length:
            hits[:] = True
        elif self.stop is not None:
            hits |= self.stop(top_seqs[:, :, :cur + 1].reshape(batch * self.keep, cur + 1)).reshape(batch, self.keep)
        # e. the best unfinished ones run on
        run_scores = top_scores + hits.astype(np.float32) * -_BIG
        chosen = _top(run_scores, beams)
        self.running, self.running_scores = _gather(top_seqs, chosen), _gather(run_scores, chosen)
        self.running_idx = _gather(top_idx, chosen)
        # f. finished hypotheses enter the kept set if they beat it
        just_finished = hits & (np.arange(self.keep) < beams)[None, :]
        scored = _divide(top_scores, (cur + 1 - fed) ** penalty)
        full = self.is_finished.all(axis=1, keepdims=True) & (early is True)
        scored = scored + full.astype(np.float32) * -_BIG + (~self.improvable).astype(np.float32) * -_BIG
        scored = scored + (~just_finished).astype(np.float32) * -_BIG
        merged_scores = np.concatenate([self.finished_scores, scored], axis=1)
        best = _top(merged_scores, beams)
        self.finished_seqs = _gather(np.concatenate([self.finished_seqs, top_seqs], axis=1), best)
        self.finished_scores = _gather(merged_scores, best)
        self.finished_idx = _gather(np.concatenate([self.finished_idx, top_idx], axis=1), best)
        self.is_finished = _gather(np.concatenate([self.is_finished, just_finished], axis=1), best)
        # g. next step: the cache follows the running beams
        self.cur = cur = cur + 1
        hypothetical = (self.max_length - fed) if (early == "never" and penalty > 0.0) else (cur - fed)
        best_running = _divide(self.running_scores[:, :1], hypothetical ** penalty)
        worst_done = np.where(self.is_finished, self.finished_scores.min(axis=1, keepdims=True), -_BIG)
        self.improvable = self.improvable & (best_running > worst_done).any(axis=-1, keepdims=True)
        if not (self.improvable.any() and not (self.is_finished.all() and early is True) and not hits.all()):
            self.done = True
            return
        self.stepper.reorder(self.running_idx[:, :, cur - 1 - fed].reshape(-1))
        self._feed = self.running[:, :, cur - 1].reshape(batch * beams, 1)

    def _lengths(self) -> np.ndarray:
        """New tokens of each kept finished hypothesis [batch, beams]."""
        return (self.finished_idx != -1).sum(axis=2)

    def _contenders(self, row: int) -> np.ndarray:
        """The running beams of row ``row`` whose descendants could still become its answer."""
        beams = np.arange(self.beams)
        if not self.is_finished[row].any() or getattr(self.settings, "logits_processors", None):
            return beams  # nothing to beat yet; or model-specific processors, whose signs are not ours to assume
        penalty = self.settings.length_penalty
        length = (self.max_length - self.fed) if penalty > 0 else (self.cur - self.fed + 1)
        best_possible = _divide(self.running_scores[row], length ** penalty)
        return beams[best_possible >= self.finished_scores[row, 0]]

    def settled(self, row: int) -> np.ndarray:
        """The new tokens of input row ``row`` that no later step can change: the prefix
        that its best kept hypothesis and every running beam that can still beat it share
        (see the module's docstring). Once done: the best hypothesis."""
        if self.done and not self.cancelled:
            return self.best(row)
        fed, cur = self.fed, self.cur
        contenders = self.running[row, self._contenders(row), fed:cur]
        if not self.is_finished[row, 0]:
            return contenders[0, :_common_prefix(contenders)]
        best = self.best(row)
        if not contenders.shape[0]:
            return best  # no running beam can displace it: it is the answer
        shared = _common_prefix(np.concatenate([contenders[:, :best.size], best[None, :]]))
        return best[:shared]

    def leading(self, row: int) -> np.ndarray:
        """Row ``row``'s likeliest answer so far (what a cancel leaves): its best running
        beam, or its best kept hypothesis when no running beam can beat that. It starts
        with :meth:`settled`."""
        if (self.done and not self.cancelled) or (self.is_finished[row, 0] and not self._contenders(row).size):
            return self.best(row)
        return self.running[row, 0, self.fed:self.cur]

    def best(self, row: int) -> np.ndarray:
        """The new tokens of row ``row``'s best finished hypothesis (the search is done)."""
        return self.finished_seqs[row, 0, self.fed:self.fed + int(self._lengths()[row, 0])]

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """(sequences [batch * num_return_sequences, length], their scores): per input
        row, the best ``num_return_sequences`` finished hypotheses, best first, shorter ones
        filled with the pad id (else the first EOS) as transformers fills them."""
        returned = self.settings.num_return_sequences
        seqs = self.finished_seqs[:, :returned].reshape(self.batch * returned, self.max_length)
        generated = int(self._lengths()[:, :returned].max())
        return seqs[:, :self.fed + generated], self.finished_scores[:, :returned].reshape(-1)

    def run(self) -> np.ndarray:
        """Step until done; the sequences of :meth:`result` (as :meth:`Decoding.run` gives them)."""
        while not self.done:
            self.step()
        return self.result()[0]


def beam_search(stepper: Stepper, input_ids: np.ndarray, settings: GenerationSettings,
                max_positions: int | None = None, stop: StopRule | None = None) -> tuple[np.ndarray, np.ndarray]:
    """transformers' beam search over ``stepper`` for the rows ``input_ids``, to the end:
    see :meth:`BeamSearch.result`."""
    search = BeamSearch(stepper, input_ids, settings, max_positions, stop)
    search.run()
    return search.result()
