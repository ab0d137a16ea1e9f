"""What a beam search streams before it ends (runtime/generation/beams.py): the settled
prefix must never be taken back. On random history-dependent toy models, for every
length penalty sign and early-stopping kind, each step's settled tokens extend the last
ones and begin the final answer, which beam_search (the search transformers' tests hold
equal to ``generate``) gives too; pruning beams that can no longer win lets text out
sooner than the beams' common prefix alone would."""

from __future__ import annotations

import hashlib
import itertools

import numpy as np
import pytest

from edgeformers.runtime.generation.beams import BeamSearch, beam_search
from edgeformers.runtime.generation.settings import GenerationSettings

VOCAB, EOS = 7, 0


class HistoryStepper:
    """Logits drawn from a generator seeded by each row's whole history (so reordering
    beams matters, as with a real KV cache); EOS gets ``eos_bias``."""

    def __init__(self, seed: int, eos_bias: float) -> None:
        self.seed, self.eos_bias = seed, eos_bias
        self.history: list[tuple[int, ...]] = []

    def step(self, input_ids: np.ndarray) -> np.ndarray:
        if not self.history:
            self.history = [()] * input_ids.shape[0]
        self.history = [h + tuple(int(t) for t in row) for h, row in zip(self.history, input_ids)]
        logits = []
        for history in self.history:
            digest = hashlib.sha256(repr((self.seed, history)).encode()).digest()
            row = np.random.default_rng(int.from_bytes(digest[:8], "little")).normal(0, 2.0, VOCAB)
            row[EOS] += self.eos_bias
            logits.append(row)
        return np.asarray(logits, dtype=np.float32)

    def reorder(self, rows: np.ndarray) -> None:
        self.history = [self.history[i] for i in rows] if self.history else [()] * len(rows)


CASES = list(itertools.product(range(12), (2, 3, 4), (-1.0, 0.0, 1.0, 2.0), (True, False, "never")))


@pytest.mark.parametrize("seed, beams, penalty, early", CASES)
def test_settled_tokens_are_never_taken_back(seed, beams, penalty, early):
    settings = GenerationSettings(num_beams=beams, length_penalty=penalty, early_stopping=early, max_new_tokens=12,
                                  eos_token_id=[EOS], pad_token_id=EOS)
    prompt = np.array([[3, 5]], dtype=np.int64)
    search = BeamSearch(HistoryStepper(seed, eos_bias=0.5 * (seed % 4)), prompt, settings)
    shown: list[int] = []
    while not search.done:
        search.step()
        settled = search.settled(0).tolist()
        assert settled[:len(shown)] == shown, "settled tokens were taken back"
        assert search.leading(0).tolist()[:len(settled)] == settled, "a cancel would not start with the text shown"
        shown = settled
    expected, _ = beam_search(HistoryStepper(seed, eos_bias=0.5 * (seed % 4)), prompt, settings)
    answer = expected[0, 2:].tolist()
    best = search.best(0).tolist()
    assert answer[:len(best)] == best and all(t == EOS for t in answer[len(best):])  # pad fill after the answer
    assert shown == best


def test_pruning_settles_text_the_common_prefix_would_hold_back():
    """Count the steps where beams that can no longer win disagree with the best kept
    hypothesis: there the stream shows more than the beams' plain common prefix."""
    gained = 0
    for seed, penalty in itertools.product(range(40), (0.0, 1.0)):
        settings = GenerationSettings(num_beams=3, length_penalty=penalty, early_stopping=False, max_new_tokens=10,
                                      eos_token_id=[EOS], pad_token_id=EOS)
        search = BeamSearch(HistoryStepper(seed, eos_bias=2.0), np.array([[1]], dtype=np.int64), settings)
        while not search.done:
            search.step()
            if search.done:
                break
            running = search.running[0, :, 1:search.cur]
            common = int(np.argmax((running != running[:1]).any(axis=0))) if (running != running[:1]).any() \
                else running.shape[1]
            gained += search.settled(0).size > min(common, search.best(0).size if search.is_finished[0, 0] else common)
    assert gained > 0
