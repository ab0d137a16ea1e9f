"""runtime/pipelines/whisper_decode.py against the transformers functions it re-does, on
crafted token sequences and random scores (no model needed, well under a second)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeformers.runtime.pipelines.whisper_decode import TimestampRules, longest_common_sequence, segment_tokens

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

NO_TS, EOS, VOCAB = 50, 40, 120  # a toy vocabulary: text < 40, EOS 40, specials 41-50, timestamps 51-119
BEGIN = NO_TS + 1


def test_timestamp_rules_equal_transformers() -> None:
    """Every rule branch (first step, lone timestamp, closed pair, going backwards, the
    probability-mass rule, max initial timestamp) on random scores."""
    from transformers.generation.logits_process import WhisperTimeStampLogitsProcessor

    config = transformers.GenerationConfig(no_timestamps_token_id=NO_TS, eos_token_id=EOS,
                                           max_initial_timestamp_index=5)
    prompt = [41, 42]
    rows = [prompt, prompt + [BEGIN + 3], prompt + [BEGIN + 3, 7], prompt + [BEGIN + 3, 7, BEGIN + 9],
            prompt + [BEGIN + 3, 7, BEGIN + 9, BEGIN + 9], prompt + [BEGIN, 5, 6, BEGIN + 20, 8]]
    rng = np.random.default_rng(0)
    for row in rows:
        for scale in (1.0, 8.0):  # 8: timestamps sometimes outweigh every text token
            scores = (rng.normal(size=(3, VOCAB)) * scale).astype(np.float32)
            scores[1, BEGIN:] += 6.0
            ids = np.tile(np.asarray(row, dtype=np.int64), (3, 1))
            theirs = WhisperTimeStampLogitsProcessor(config, begin_index=len(prompt))(
                torch.from_numpy(ids), torch.from_numpy(scores.copy())).numpy()
            ours = TimestampRules(NO_TS, EOS, len(prompt), 5)(ids, scores)
            np.testing.assert_array_equal(ours, theirs)


def test_longest_common_sequence_equals_transformers() -> None:
    """Overlapping chunk transcripts joined at the same cut as transformers' whisper join."""
    from transformers.models.whisper.tokenization_whisper import _find_longest_common_sequence

    cases = [[[1, 2, 3, 4, 5], [4, 5, 6, 7], [7, 8, 9]],
             [[1, 2, 3], [9, 9]],  # no overlap
             [[5, 6, 7, 8, 9, 10], [7, 8, 11, 10, 12], [10, 12, 13]],
             [[1], [1, 2], [2, 3, 3, 3]]]
    rng = np.random.default_rng(1)
    for _ in range(20):
        base = rng.integers(0, 6, size=30).tolist()
        cases.append([base[0:14], base[9:24], base[20:30]])
    for sequences in cases:
        assert longest_common_sequence(sequences) == _find_longest_common_sequence(sequences), sequences


@pytest.mark.parametrize("tokens, kept", [
    ([5, 6, EOS], [5, 6]),
    ([5, 6, EOS, EOS, EOS], [5, 6]),
    ([BEGIN, 5, BEGIN + 4, BEGIN + 4, 6, BEGIN + 9, EOS], [BEGIN, 5, BEGIN + 4, BEGIN + 4, 6, BEGIN + 9]),
    ([BEGIN, 5, BEGIN + 4, BEGIN + 4, 6, 7], [BEGIN, 5, BEGIN + 4, BEGIN + 4]),  # cut off mid-segment
    ([BEGIN, 5, BEGIN + 4, BEGIN + 4, 6, BEGIN + 8, BEGIN + 8], [BEGIN, 5, BEGIN + 4, BEGIN + 4, 6, BEGIN + 8,
                                                                  BEGIN + 8]),
])
def test_segment_tokens(tokens: list[int], kept: list[int]) -> None:
    """What Whisper's generate keeps of one window (as its _retrieve_segment slices it)."""
    assert segment_tokens(tokens, EOS, EOS, BEGIN) == kept
