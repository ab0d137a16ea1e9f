"""transformers' logits processors and warpers (generation/logits_process.py, 4.57),
re-done in numpy with the same semantics, and :class:`LogitsProcessors`, which applies
them in the order ``generate`` builds its list: repetition penalty, no-repeat n-grams,
bad words, minimum length, forced BOS/EOS, suppressed tokens, then (sampling only)
temperature, top-k, top-p, min-p and typical-p."""

from __future__ import annotations

import numpy as np

from edgeformers.runtime.generation.settings import GenerationSettings

NEG_INF = np.float32(-np.inf)


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


def suppress(scores: np.ndarray, token_ids: list[int]) -> np.ndarray:
    """The given ids (those inside the vocabulary) can never be chosen."""
    ids = [i for i in token_ids if 0 <= i < scores.shape[-1]]
    if not ids:
        return scores
    scores = scores.copy()
    scores[:, ids] = NEG_INF
    return scores


def suppress_eos(scores: np.ndarray, eos_ids: list[int]) -> np.ndarray:
    """min_length / min_new_tokens: no EOS until enough tokens are generated."""
    return suppress(scores, eos_ids)


def force(scores: np.ndarray, token_ids: list[int]) -> np.ndarray:
    """Forced BOS/EOS: every score -inf except the forced ids, which get 0."""
    forced = np.full_like(scores, NEG_INF)
    forced[:, token_ids] = 0
    return forced


def no_repeat_ngram(scores: np.ndarray, sequences: np.ndarray, size: int) -> np.ndarray:
    """Ban each token that would complete an n-gram already in the row (prompt included,
    as transformers' NoRepeatNGramLogitsProcessor)."""
    length = sequences.shape[1]
    if size <= 0 or length + 1 < size:
        return scores
    scores = scores.copy()
    for row, tokens in enumerate(sequences.tolist()):
        prefix = tuple(tokens[length + 1 - size:]) if size > 1 else ()
        banned = [tokens[i + size - 1] for i in range(length - size + 1) if tuple(tokens[i:i + size - 1]) == prefix]
        scores[row, banned] = NEG_INF
    return scores


def bad_words(scores: np.ndarray, sequences: np.ndarray, words: list[list[int]], eos_ids: list[int]) -> np.ndarray:
    """NoBadWordsLogitsProcessor: a one-token word is always banned; a longer word bans its
    last token when the row ends with the rest. A word that is exactly one EOS id is
    ignored (transformers drops it so generation can still end)."""
    scores = scores.copy()
    for word in words:
        if len(word) == 1:
            if word[0] not in eos_ids:
                scores[:, word[0]] = NEG_INF
            continue
        if len(word) > sequences.shape[1]:
            continue
        match = (sequences[:, sequences.shape[1] - len(word) + 1:] == np.asarray(word[:-1])).all(axis=1)
        scores[match, word[-1]] = NEG_INF
    return scores


def temperature(scores: np.ndarray, value: float) -> np.ndarray:
    return scores if value == 1.0 else scores / np.float32(value)


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Keep the ``k`` best scores (ties at the k-th kept too), the rest -inf."""
    k = min(max(k, 1), scores.shape[-1])
    kth = -np.sort(-scores, axis=-1)[:, k - 1 : k]
    return np.where(scores < kth, NEG_INF, scores)


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
    return _unsort_fill(scores, order, remove)


def min_p(scores: np.ndarray, p: float) -> np.ndarray:
    """Drop tokens whose probability is below ``p`` times the best token's; the best stays."""
    probs = softmax(scores)
    remove = probs < p * probs.max(axis=-1, keepdims=True)
    best = scores.argmax(axis=-1)
    remove[np.arange(len(best)), best] = False
    return np.where(remove, NEG_INF, scores)


def typical_p(scores: np.ndarray, mass: float) -> np.ndarray:
    """Locally typical sampling: keep the tokens whose surprisal is closest to the
    entropy until their probability mass reaches ``mass`` (the closest always stays)."""
    if mass >= 1.0:
        return scores
    logp = log_softmax(scores)
    p = np.exp(logp)
    with np.errstate(invalid="ignore"):  # -inf * 0 on filtered tokens: nansum skips them, as torch's
        entropy = -np.nansum(logp * p, axis=-1, keepdims=True)
    shifted = np.abs(-logp - entropy)
    order = np.argsort(shifted, axis=-1, kind="stable")
    sorted_shifted = np.take_along_axis(shifted, order, axis=-1)
    cumulative = np.cumsum(softmax(np.take_along_axis(scores, order, axis=-1)), axis=-1)
    last = np.minimum((cumulative < mass).sum(axis=-1), scores.shape[-1] - 1)
    remove = sorted_shifted > np.take_along_axis(sorted_shifted, last[:, None], axis=-1)
    remove[:, 0] = False
    return _unsort_fill(scores, order, remove)


def _unsort_fill(scores: np.ndarray, order: np.ndarray, remove_sorted: np.ndarray) -> np.ndarray:
    mask = np.zeros_like(remove_sorted)
    np.put_along_axis(mask, order, remove_sorted, axis=-1)
    return np.where(mask, NEG_INF, scores)


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def log_softmax(scores: np.ndarray) -> np.ndarray:
    shifted = scores - scores.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


class LogitsProcessors:
    """The processors one decoding applies each step, built once from its settings.

    ``fed`` is the length of what the search is first fed (prompt, or decoder start
    tokens); ``max_length`` the total length the search may reach (forced EOS lands on
    its last position)."""

    def __init__(self, settings: GenerationSettings, fed: int, max_length: int) -> None:
        self.settings = settings
        self.max_length = max_length
        self.eos_floor = settings.eos_floor(fed)
        forced_bos = settings.forced_bos_token_id
        # SuppressTokensAtBeginLogitsProcessor's begin index, as generate computes it
        self.begin_index = fed if (fed > 1 or forced_bos is None) else fed + 1

    def __call__(self, sequences: np.ndarray, scores: np.ndarray) -> np.ndarray:
        """The processed scores for the next token after ``sequences`` ([rows, length])."""
        s, length = self.settings, sequences.shape[1]
        scores = repetition_penalty(scores, sequences, s.repetition_penalty)
        if s.no_repeat_ngram_size:
            scores = no_repeat_ngram(scores, sequences, s.no_repeat_ngram_size)
        if s.bad_words_ids:
            scores = bad_words(scores, sequences, s.bad_words_ids, s.eos_token_id)
        if s.eos_token_id and length < self.eos_floor:
            scores = suppress_eos(scores, s.eos_token_id)
        if s.forced_bos_token_id is not None and length == 1:
            scores = force(scores, [s.forced_bos_token_id])
        if s.forced_eos_token_id and length == self.max_length - 1:
            scores = force(scores, s.forced_eos_token_id)
        if s.suppress_tokens:
            scores = suppress(scores, s.suppress_tokens)
        if s.begin_suppress_tokens and length == self.begin_index:
            scores = suppress(scores, s.begin_suppress_tokens)
        # A pipeline's model-specific processors ``(sequences, scores) -> scores`` (Whisper's timestamp
        # rules), attached to the settings object, not a user setting: last, as transformers appends them.
        for extra in getattr(s, "logits_processors", None) or ():
            scores = extra(sequences, scores)
        return self.warp(scores) if s.do_sample else scores

    def warp(self, scores: np.ndarray) -> np.ndarray:
        """Sampling's warpers: temperature, top-k, top-p, min-p, typical-p."""
        s = self.settings
        scores = temperature(scores, s.temperature)
        if s.top_k:
            scores = top_k(scores, s.top_k)
        scores = top_p(scores, s.top_p)
        if s.min_p is not None:
            scores = min_p(scores, s.min_p)
        return typical_p(scores, s.typical_p)
