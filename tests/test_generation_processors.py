"""The numpy logits processors and warpers against transformers' own (4.57) on random
scores, alone and as the whole list in generate's order; sampling checked statistically
on a toy model (a stepper that always returns the same logits); the pull-style decoding's
cancel and the text-level stop strings."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tg = pytest.importorskip("transformers.generation")

from edgeformers.models.errors import InputError  # noqa: E402
from edgeformers.runtime.generation import Decoding, GenerationSettings  # noqa: E402
from edgeformers.runtime.generation import processors as P  # noqa: E402
from edgeformers.runtime.generation.processors import LogitsProcessors  # noqa: E402
from edgeformers.runtime.generation.stopping import StopStrings  # noqa: E402

VOCAB = 40


def _random(seed: int, rows: int = 5, length: int = 12) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    scores = (rng.normal(size=(rows, VOCAB)) * 3).astype(np.float32)
    scores[:, 7] = scores[:, 8]  # a tie at any rank
    ids = rng.integers(0, 6, size=(rows, length))  # few distinct ids: n-grams repeat
    return scores, ids


def _theirs(processor, ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
    return processor(torch.from_numpy(ids), torch.from_numpy(scores.copy())).numpy()


@pytest.mark.parametrize("seed", range(3))
def test_each_processor_matches_transformers(seed):
    scores, ids = _random(seed)
    length = ids.shape[1]
    cases = [
        (P.no_repeat_ngram(scores, ids, 2), tg.NoRepeatNGramLogitsProcessor(2)),
        (P.no_repeat_ngram(scores, ids, 3), tg.NoRepeatNGramLogitsProcessor(3)),
        (P.no_repeat_ngram(scores, ids, 1), tg.NoRepeatNGramLogitsProcessor(1)),
        (P.no_repeat_ngram(scores, ids, length + 2), tg.NoRepeatNGramLogitsProcessor(length + 2)),
        (P.bad_words(scores, ids, [[3], [1, 2], [ids[0, -2], ids[0, -1], 9], [5]], [5]),
         tg.NoBadWordsLogitsProcessor([[3], [1, 2], [int(ids[0, -2]), int(ids[0, -1]), 9], [5]], eos_token_id=5)),
        (P.suppress(scores, [0, 4, 39]), tg.SuppressTokensLogitsProcessor([0, 4, 39])),
        (P.force(scores, [11]), lambda _, s: tg.ForcedBOSTokenLogitsProcessor(11)(torch.from_numpy(ids[:, :1]), s)),
        (P.force(scores, [2, 3]), tg.ForcedEOSTokenLogitsProcessor(length + 1, [2, 3])),
        (P.min_p(scores, 0.05), tg.MinPLogitsWarper(0.05)),
        (P.min_p(scores, 0.6), tg.MinPLogitsWarper(0.6)),
        (P.typical_p(scores, 0.5), tg.TypicalLogitsWarper(0.5)),
        (P.typical_p(scores, 0.95), tg.TypicalLogitsWarper(0.95)),
        (P.top_p(scores, 0.5), tg.TopPLogitsWarper(0.5)),
        (P.top_k(scores, 3), tg.TopKLogitsWarper(3)),
        (P.temperature(scores, 0.7), tg.TemperatureLogitsWarper(0.7)),
        (P.log_softmax(scores), lambda _, s: torch.log_softmax(s, dim=-1)),
    ]
    for ours, theirs in cases:
        expected = _theirs(theirs, ids, scores)
        assert not np.array_equal(expected, scores) or theirs is cases[3][1], f"{theirs!r} must change something here"
        np.testing.assert_allclose(ours, expected, rtol=1e-6, atol=1e-6, err_msg=repr(theirs))


def _their_list(settings: GenerationSettings, fed: int, max_length: int):
    """transformers' processors for these settings, in _get_logits_processor's order."""
    eos = settings.eos_token_id
    listed = [tg.RepetitionPenaltyLogitsProcessor(settings.repetition_penalty),
              tg.NoRepeatNGramLogitsProcessor(settings.no_repeat_ngram_size),
              tg.NoBadWordsLogitsProcessor(settings.bad_words_ids, eos),
              tg.MinLengthLogitsProcessor(settings.min_length, eos),
              tg.ForcedBOSTokenLogitsProcessor(settings.forced_bos_token_id),
              tg.ForcedEOSTokenLogitsProcessor(max_length, settings.forced_eos_token_id),
              tg.SuppressTokensLogitsProcessor(settings.suppress_tokens),
              tg.SuppressTokensAtBeginLogitsProcessor(settings.begin_suppress_tokens, fed),
              tg.TemperatureLogitsWarper(settings.temperature), tg.TopKLogitsWarper(settings.top_k),
              tg.TopPLogitsWarper(settings.top_p), tg.MinPLogitsWarper(settings.min_p),
              tg.TypicalLogitsWarper(settings.typical_p)]
    return tg.LogitsProcessorList(listed)


@pytest.mark.parametrize("length", [1, 3, 6, 7])
def test_the_whole_list_in_generate_order(length):
    """Every processor on at once, at the step where each length-dependent one fires."""
    scores, ids = _random(length, length=length)
    fed, max_length = 3, 8
    settings = GenerationSettings(
        do_sample=True, repetition_penalty=1.3, no_repeat_ngram_size=2, bad_words_ids=[[9], [1, 2]],
        min_length=7, eos_token_id=[4], forced_bos_token_id=12, forced_eos_token_id=[4], suppress_tokens=[13],
        begin_suppress_tokens=[14, 15], temperature=0.8, top_k=30, top_p=0.97, min_p=0.01, typical_p=0.99,
        max_new_tokens=None, max_length=max_length)
    ours = LogitsProcessors(settings, fed, max_length)(ids, scores)
    expected = _their_list(settings, fed, max_length)(torch.from_numpy(ids), torch.from_numpy(scores.copy())).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-6)


class ToyStepper:
    """A 'model' whose next-token logits are always the same: sampling's distribution is
    then exactly the processed softmax of these logits."""

    def __init__(self, logits: np.ndarray) -> None:
        self.logits = logits.astype(np.float32)
        self.rows = 0

    def step(self, input_ids: np.ndarray) -> np.ndarray:
        self.rows = input_ids.shape[0]
        return np.tile(self.logits, (self.rows, 1))

    def reorder(self, rows: np.ndarray) -> None:
        pass


TOY = np.array([2.0, 1.7, 1.5, 1.2, 1.0, 0.8, 0.5, 0.1, -0.3, -1.0, -2.0, -3.0], dtype=np.float32)


@pytest.mark.parametrize("kwargs", [
    {"temperature": 0.7, "top_k": 6},
    {"top_k": 0, "top_p": 0.8},
    {"top_k": 0, "min_p": 0.2, "temperature": 1.3},
    {"top_k": 0, "typical_p": 0.6},
])
def test_sampling_follows_the_processed_distribution(kwargs):
    """20000 one-token draws: each token's frequency within 4 standard errors of
    softmax(transformers' warpers(logits)), and filtered tokens never drawn."""
    draws = 20000
    settings = GenerationSettings(do_sample=True, max_new_tokens=1, seed=1234, **kwargs)
    ids = np.zeros((draws, 1), dtype=np.int64)
    tokens = Decoding(ToyStepper(TOY), ids, settings).run()[:, -1]
    theirs = [tg.TemperatureLogitsWarper(settings.temperature)]
    theirs += [tg.TopKLogitsWarper(settings.top_k)] if settings.top_k else []
    theirs += [tg.TopPLogitsWarper(settings.top_p)]
    theirs += [tg.MinPLogitsWarper(settings.min_p)] if settings.min_p is not None else []
    theirs += [tg.TypicalLogitsWarper(settings.typical_p)] if settings.typical_p < 1 else []
    processed = tg.LogitsProcessorList(theirs)(torch.zeros((1, 1), dtype=torch.long), torch.from_numpy(TOY[None].copy()))
    expected = torch.softmax(processed, dim=-1)[0].numpy().astype(np.float64)
    assert 1 < np.count_nonzero(expected) < TOY.size, "the warper must cut some tokens and keep several"
    counts = np.bincount(tokens, minlength=TOY.size) / draws
    assert (counts[expected == 0] == 0).all()
    bound = 4 * np.sqrt(expected * (1 - expected) / draws)
    assert (np.abs(counts - expected) <= bound + 1e-12).all(), (counts, expected)
    again = Decoding(ToyStepper(TOY), ids[:50], settings).run()
    assert np.array_equal(again, Decoding(ToyStepper(TOY), ids[:50], settings).run()), "a seed repeats"


def test_top_k_1_sampling_is_greedy_on_the_toy_model():
    ids = np.zeros((64, 1), dtype=np.int64)
    sampled = Decoding(ToyStepper(TOY), ids, GenerationSettings(do_sample=True, top_k=1, seed=3, max_new_tokens=4))
    assert (sampled.run()[:, 1:] == int(TOY.argmax())).all()


def test_cancel_stops_a_pull_decoding_and_keeps_what_was_generated():
    decoding = Decoding(ToyStepper(TOY), np.zeros((2, 3), dtype=np.int64), GenerationSettings(max_new_tokens=10))
    decoding.step()
    decoding.step()
    decoding.cancel()
    assert decoding.done and decoding.sequences.shape == (2, 5) and decoding.new_tokens == 2
    with pytest.raises(InputError, match="this decoding is done"):
        decoding.step()


def test_stop_strings_end_a_row_at_the_token_that_completes_them():
    """Rows stop once a stop string ends in their new text; one that begins in the prompt
    counts (as transformers' StopStringCriteria), one wholly inside the prompt does not.
    The toy vocabulary: token i is the i-th letter, the prompt is the first 2 tokens."""
    letters = "abcdefghijklmnopqrstuvwxyz "
    rule = StopStrings(lambda ids: "".join(letters[i] for i in ids), ["cat", "z"], fed=2)
    rows = np.array([
        [1, 1, 2, 0, 19, 1],  # "bbcatb": "cat" in the new text
        [2, 0, 1, 1, 1, 1],   # "cabbbb": no stop string
        [25, 25, 0, 1, 1, 1],  # "zzabbb": "z" only in the prompt
        [1, 2, 0, 19, 1, 1],  # "bcatbb": "cat" begins in the prompt, ends in the new text
        [2, 0, 19, 1, 1, 1],  # "catbbb": the first new token completes "ca" + "t"
        [2, 0, 1, 25, 1, 1],  # "cabzbb": "z" in the new text
    ])
    assert rule(rows).tolist() == [True, False, False, True, True, True]


@pytest.mark.parametrize(("settings", "match"), [
    ({"max_new_tokens": None, "max_length": 3}, r"max_length=3 leaves no room for new tokens after 3 input tokens"),
    ({"num_beams": 2}, r"beam search is not pull-style"),
])
def test_decoding_refuses_what_it_cannot_do(settings, match):
    with pytest.raises(InputError, match=match):
        Decoding(ToyStepper(TOY), np.zeros((1, 3), dtype=np.int64), GenerationSettings(**settings))


def test_settings_merge_as_transformers_pipelines_do():
    """Call > checkpoint generation_config > pipeline defaults; a stored max_length of 20
    is the global default; a checkpoint's own max_length replaces the pipeline's
    max_new_tokens default; a call's max_length is honoured."""
    from edgeformers.runtime.generation.arguments import merge, settings_from

    pipeline_defaults = {"max_new_tokens": 256, "do_sample": True}
    assert merge({}, {"max_length": 20, "top_k": 5}, pipeline_defaults) == {"max_new_tokens": 256, "do_sample": True,
                                                                            "top_k": 5}
    assert merge({}, {"max_length": 142, "num_beams": 4}, pipeline_defaults) == {"max_length": 142, "num_beams": 4,
                                                                                 "do_sample": True}
    assert merge({"max_length": 30, "do_sample": False}, {}, pipeline_defaults) == {"max_length": 30,
                                                                                    "do_sample": False}
    assert merge({"top_k": None, "temperature": 0.5}, {"temperature": 0.9, "top_k": 7}, {}) == {"temperature": 0.5,
                                                                                               "top_k": 7}
    settings = settings_from({"max_length": 30, "eos_token_id": 3, "early_stopping": "never"}, seed=1)
    assert settings.total_length(10) == 30 and settings.eos_token_id == [3] and settings.max_new_tokens is None
    assert GenerationSettings(max_new_tokens=None).total_length(10, max_positions=25) == 25  # 20 new, capped
    assert settings_from({"min_new_tokens": 2, "min_length": 50}).eos_floor(10) == 12  # min_new_tokens wins
    with pytest.raises(InputError, match=r"seed must be a non-negative integer"):
        settings_from({}, seed=-1)
    with pytest.raises(InputError, match=r"forced_bos_token_id must hold token ids .* below the vocabulary size 10"):
        settings_from({"forced_bos_token_id": 10}, vocab_size=10)
