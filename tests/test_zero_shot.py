"""Parity: the runtime's zero-shot-classification pipeline against transformers.pipeline on
the same tiny NLI checkpoints (labels in the same order, scores within 1e-4)."""

from __future__ import annotations

import pytest
import transformers

from edgeformers.exporter.agreement import AGREEMENT_TEXTS
from edgeformers.runtime import BundleError, InputError, pipeline
from tests.fixtures.floors import floor_for

NLI = ["contradiction", "neutral", "entailment"]
TEXT = "The cat likes the red ball every day!"
TEXTS = [
    TEXT,
    "This movie was terrible",
    "  leading and trailing spaces  ",
    "I had a café au lait in Zürich.",
    "東京は日本の首都です 🙂👍",
]
LONG = " ".join(["the movie was long but the ending made up for it"] * 40)
LABELS = ["sports", "politics", "animals", "food"]
CASES = {
    "single-label": dict(candidate_labels=LABELS),
    "multi-label": dict(candidate_labels=LABELS, multi_label=True),
    "comma-string": dict(candidate_labels=" sports, politics ,, animals "),
    "one-label": dict(candidate_labels=["animals"]),
    "template": dict(candidate_labels=LABELS, hypothesis_template="Dieser Text handelt von {}!"),
    "template-multi": dict(candidate_labels=["café", "東京"], hypothesis_template="{} 🙂", multi_label=True),
}


def assert_same(ours, theirs, atol=1e-4):
    """Same sequence, same scores per label, labels in the same order (unless two scores
    are closer than float noise, where either order is right)."""
    if isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            assert_same(a, b, atol)
        return
    assert set(ours) == {"sequence", "labels", "scores"}
    assert ours["sequence"] == theirs["sequence"]
    assert all(type(s) is float for s in ours["scores"])
    want = dict(zip(theirs["labels"], theirs["scores"]))
    got = dict(zip(ours["labels"], ours["scores"]))
    assert got.keys() == want.keys()
    for label, score in want.items():
        assert got[label] == pytest.approx(score, abs=atol)
    gaps = [a - b for a, b in zip(theirs["scores"], theirs["scores"][1:])]
    if min(gaps, default=1.0) > 1e-5:
        assert ours["labels"] == theirs["labels"]


@pytest.fixture(scope="module", params=["bert", "roberta"])
def pair(request, bundle_factory):
    # roberta's bundle is exported as plain text-classification: zero-shot must accept it too.
    task = "zero-shot-classification" if request.param == "bert" else "text-classification"
    checkpoint, bundle = bundle_factory(request.param, "sequence-classification", task, labels=NLI)
    reference = transformers.pipeline("zero-shot-classification", model=str(checkpoint))
    return pipeline("zero-shot-classification", bundle, device="cpu"), reference, bundle


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_transformers(pair, case):
    ours, theirs, _ = pair
    kwargs = CASES[case]
    assert_same(ours(TEXT, **kwargs), theirs(TEXT, **kwargs))


def test_batch_of_texts_unicode_and_long(pair):
    ours, theirs, _ = pair
    texts = [*TEXTS, LONG]
    assert_same(ours(texts, candidate_labels=LABELS), theirs(texts, candidate_labels=LABELS))
    assert_same(ours(texts[:1], LABELS, multi_label=True), theirs(texts[:1], LABELS, multi_label=True))


def test_all_pairs_run_in_few_padded_batches(pair):
    ours, _, _ = pair
    calls = []
    run = ours.model.run

    def counting(feed, outputs=None):
        calls.append(feed["input_ids"].shape)
        return run(feed, outputs)

    ours.model.run = counting
    try:
        whole = ours(TEXTS, candidate_labels=LABELS)
        assert len(calls) == 2  # 20 pairs, default batch_size 16
        calls.clear()
        chunked = ours(TEXTS, candidate_labels=LABELS, batch_size=7)
        assert [rows for rows, _ in calls] == [7, 7, 6]
        calls.clear()
        one = ours(TEXTS[0], candidate_labels=LABELS, batch_size=100)
        assert len(calls) == 1 and calls[0][0] == 4
    finally:
        del ours.model.run
    assert_same(chunked, whole, atol=1e-5)
    assert_same(one, whole[0], atol=1e-5)


def test_entailment_id_comes_from_the_label_map(bundle_factory):
    checkpoint, bundle = bundle_factory(
        "bert", "sequence-classification", "zero-shot-classification", dtypes=("fp32",),
        labels=["ENTAILMENT", "NEUTRAL", "CONTRADICTION"],
    )
    ours = pipeline("zero-shot-classification", bundle, device="cpu")
    theirs = transformers.pipeline("zero-shot-classification", model=str(checkpoint))
    assert (ours.entailment_id, ours.contradiction_id) == (0, -1) == (theirs.entailment_id, -1)
    for multi in (False, True):
        assert_same(ours(TEXTS, LABELS, multi_label=multi), theirs(TEXTS, LABELS, multi_label=multi))


def test_model_without_entailment_label_is_refused(bundle_factory):
    _, bundle = bundle_factory(
        "bert", "sequence-classification", "text-classification", labels=["NEGATIVE", "NEUTRAL", "POSITIVE"]
    )
    with pytest.raises(BundleError, match="model has no entailment label.*'NEGATIVE'"):
        pipeline("zero-shot-classification", bundle, device="cpu")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(candidate_labels=[]), "candidate_labels is empty"),
        (dict(candidate_labels=" , ,"), "candidate_labels is empty"),
        (dict(), "candidate_labels is required"),
        (dict(candidate_labels=["a", 3]), r"candidate_labels\[1\] is int"),
        (dict(candidate_labels=LABELS, hypothesis_template="no slot"), "hypothesis_template .* no '{}'"),
        (dict(candidate_labels=LABELS, hypothesis_template="About {topic}."), "hypothesis_template .* could not"),
        (dict(candidate_labels=LABELS, hypothesis_template="About {."), "hypothesis_template .* could not"),
    ],
)
def test_bad_arguments(pair, kwargs, match):
    ours, _, _ = pair
    with pytest.raises(InputError, match=match):
        ours(TEXT, **kwargs)


def test_bad_sequences_and_call_forms(pair):
    ours, _, _ = pair
    with pytest.raises(InputError, match="sequences is an empty string"):
        ours("", LABELS)
    with pytest.raises(InputError, match=r"sequences\[1\] is int"):
        ours([TEXT, 3], LABELS)
    with pytest.raises(InputError, match="extra positional"):
        ours(TEXT, LABELS, candidate_labels=LABELS)
    assert ours([], LABELS) == []
    assert ours(TEXT, multi_class=True, candidate_labels=LABELS) == ours(TEXT, LABELS, multi_label=True)


def test_q8_top_labels_agree_with_fp32_above_the_random_weight_floor(pair):
    """Over the exporter's ~40 texts, the q8 pipeline ranks fp32's top label first at least
    as often as the random-weight floor (the catalog's bar is for trained NLI models)."""
    ours, _, bundle = pair
    q8 = pipeline("zero-shot-classification", bundle, device="cpu", dtype="q8")
    texts = list(AGREEMENT_TEXTS)
    agree = [a["labels"][0] == b["labels"][0] for a, b in zip(ours(texts, LABELS), q8(texts, LABELS))]
    assert sum(agree) / len(agree) >= floor_for("zero-shot-classification"), (sum(agree), len(agree))
