"""transformers' logits processors and warpers (generation/logits_process.py, 4.57),
re-done in numpy with the same semantics and order: repetition penalty and the minimum
length first, then (sampling only) temperature, top-k and top-p."""

from __future__ import annotations

import numpy as np


def repetition_penalty(scores: np.ndarray, sequences: np.ndarray, penalty: float) -> np.ndarray:
    """Every token already in a row's sequence (prompt and padding included, as in
    transformers) has its score divided by ``penalty`` if positive, multiplied if negative."""
    if penalty == 1.0:
        return scores
    rows = np.arange(scores.shape[0])[:, None]
    seen = scores[rows, sequences]
    scores = scores.copy()
    scores[rows, sequences] = np.where(seen < 0, seen * penalty, seen / penalty)
    return scores


def suppress_eos(scores: np.ndarray, eos_ids: list[int]) -> np.ndarray:
    """min_new_tokens: no EOS until enough tokens are generated."""
    scores = scores.copy()
    scores[:, [i for i in eos_ids if 0 <= i < scores.shape[-1]]] = -np.inf
    return scores


def temperature(scores: np.ndarray, value: float) -> np.ndarray:
    return scores if value == 1.0 else scores / value


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Keep the ``k`` best scores (ties at the k-th kept too), the rest -inf."""
    k = min(max(k, 1), scores.shape[-1])
    kth = -np.sort(-scores, axis=-1)[:, k - 1 : k]
    return np.where(scores < kth, -np.inf, scores)


def top_p(scores: np.ndarray, p: float) -> np.ndarray:
    """Nucleus: drop the lowest-probability tokens whose cumulative probability (in
    ascending order) stays <= 1 - p; the best token always stays."""
    if p >= 1.0:
        return scores
    order = np.argsort(scores, axis=-1, kind="stable")
    ascending = np.take_along_axis(scores, order, axis=-1)
    cumulative = np.cumsum(softmax(ascending), axis=-1)
    remove = cumulative <= (1 - p)
    remove[:, -1] = False
    mask = np.zeros_like(remove)
    np.put_along_axis(mask, order, remove, axis=-1)
    return np.where(mask, -np.inf, scores)


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)
