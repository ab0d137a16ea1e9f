"""Parity: the runtime's text-classification pipeline against transformers.pipeline on
the same tiny checkpoints (labels exact, scores within 1e-4)."""

from __future__ import annotations

import pytest
import transformers

from edgeformers.exporter.agreement import AGREEMENT_TEXTS
from edgeformers.runtime import InputError, pipeline
from tests.fixtures.floors import floor_for

TEXTS = [
    "I love this.",
    "This was a terrible waste of time.",
    "  leading and trailing spaces  ",
    "Café au lait in Zürich, naïve résumé",
    "東京は日本の首都です 🙂👍",
    "",
]
LONG = " ".join(["the movie was long but the ending made up for it"] * 60)
ARCHS = ["bert", "distilbert", "roberta"]


def assert_same(ours, theirs, atol=1e-4):
    """Same structure, same labels, scores within atol."""
    if isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            assert_same(a, b, atol)
    else:
        assert set(ours) == set(theirs)
        assert ours["label"] == theirs["label"]
        assert type(ours["score"]) is float
        assert ours["score"] == pytest.approx(theirs["score"], abs=atol)


@pytest.fixture(scope="module", params=ARCHS)
def pair(request, bundle_factory):
    checkpoint, bundle = bundle_factory(
        request.param, "sequence-classification", "text-classification",
        labels=["NEGATIVE", "NEUTRAL", "POSITIVE"],
    )
    reference = transformers.pipeline("text-classification", model=str(checkpoint))
    return pipeline("sentiment-analysis", bundle, device="cpu"), reference


def test_single_inputs_match(pair):
    ours, theirs = pair
    for text in TEXTS:
        assert_same(ours(text), theirs(text))


def test_batch_matches_and_is_padded_per_batch(pair):
    ours, theirs = pair
    assert_same(ours(TEXTS), theirs(TEXTS))
    assert_same(ours(TEXTS, batch_size=2), theirs(TEXTS))


def test_long_input_is_truncated_like_transformers(pair):
    ours, theirs = pair
    assert_same(ours(LONG), theirs(LONG, truncation=True))
    assert_same(ours([LONG, "short"]), theirs([LONG, "short"], truncation=True))


@pytest.mark.parametrize("top_k", [None, 1, 2])
def test_top_k(pair, top_k):
    ours, theirs = pair
    assert_same(ours(TEXTS[0], top_k=top_k), theirs(TEXTS[0], top_k=top_k))
    assert_same(ours(TEXTS[:3], top_k=top_k), theirs(TEXTS[:3], top_k=top_k))


@pytest.mark.parametrize("function", ["sigmoid", "softmax", "none"])
def test_function_to_apply(pair, function):
    ours, theirs = pair
    assert_same(ours(TEXTS[:2], function_to_apply=function, top_k=None),
                theirs(TEXTS[:2], function_to_apply=function, top_k=None))


def test_text_pairs(pair):
    ours, theirs = pair
    pairs = [{"text": "I love it", "text_pair": "really"}, {"text": "Bad", "text_pair": "awful day"}]
    assert_same(ours(pairs[0]), theirs(pairs[0]))
    assert_same(ours(pairs), theirs(pairs))


@pytest.mark.parametrize(
    "problem_type, labels",
    [("multi_label_classification", ["joy", "anger", "fear"]), ("regression", ["score"])],
)
def test_activation_follows_problem_type(bundle_factory, problem_type, labels):
    checkpoint, bundle = bundle_factory(
        "bert", "sequence-classification", "text-classification", dtypes=("fp32",),
        labels=labels, problem_type=problem_type,
    )
    reference = transformers.pipeline("text-classification", model=str(checkpoint))
    ours = pipeline("text-classification", bundle)
    assert_same(ours(TEXTS, top_k=None), reference(TEXTS, top_k=None))
    assert_same(ours(TEXTS[0]), reference(TEXTS[0]))


def test_empty_list_gives_empty_list(pair):
    ours, theirs = pair
    assert ours([]) == theirs([]) == []


@pytest.mark.parametrize("bad", [None, 3, b"bytes", ["ok", None], {"text": 1}])
def test_non_string_inputs_are_refused(pair, bad):
    ours, _ = pair
    with pytest.raises(InputError, match="expected"):
        ours(bad)


@pytest.mark.parametrize("kwargs, message", [({"top_k": 0}, "top_k"), ({"function_to_apply": "relu"}, "function_to_apply")])
def test_bad_arguments_are_refused(pair, kwargs, message):
    ours, _ = pair
    with pytest.raises(InputError, match=message):
        ours("hello", **kwargs)


def test_q8_labels_agree_with_fp32_above_the_random_weight_floor(pair):
    """Over the exporter's ~40 texts, the q8 pipeline's top label is fp32's at least as
    often as the random-weight floor (tests/fixtures/floors.py); its scores still sum to one."""
    ours, _ = pair
    quantized = pipeline("text-classification", ours.bundle.path, dtype="q8")
    texts = list(AGREEMENT_TEXTS)
    q8 = quantized(texts, top_k=None, truncation=True)
    assert all(abs(sum(r["score"] for r in row) - 1) < 1e-4 for row in q8)
    fp32 = ours(texts, top_k=None, truncation=True)
    same = sum(a[0]["label"] == b[0]["label"] for a, b in zip(fp32, q8))
    assert same / len(texts) >= floor_for("text-classification"), (same, len(texts))
