"""One padding rule for every pipeline: batches are padded on the right behind the
attention mask, whatever ``padding_side`` says, so a left-padding tokenizer gives the
results transformers gives (it runs one input per forward pass, unpadded). Left padding
would shift BERT's position ids and change every score; ``padding_side`` only decides
what transformers decides with it: the question/context order in question-answering, and
the padding of one text's stride windows in token-classification (transformers' own
tokenizer call pads them, so its short last window is left-padded, positions shifted).

Each task runs a batch of texts of different lengths (so rows are padded) on a tiny BERT
whose tokenizer_config.json says ``padding_side: "left"``, against transformers.pipeline
on the same checkpoint.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import transformers

from edgeformers.runtime import pipeline
from tests.parity import assert_matches

NLI = ["contradiction", "neutral", "entailment"]
TEXTS = [
    "The cat likes the red ball.",
    "My friend Wolfgang lives in Berlin and the teacher lives in Paris, near the old river.",
    "great",
    "I had a café au lait in Zürich. 東京は日本の首都です 🙂",
]
LONG = " ".join(["Angela Merkel met Emmanuel Macron in Paris at the Élysée Palace on Tuesday."] * 12)

#: task -> (head, checkpoint kwargs, the call: (pipeline, mask token) -> (args, kwargs))
CASES = {
    "text-classification": ("sequence-classification", {}, lambda m: ((TEXTS,), {"top_k": None})),
    "feature-extraction": ("base", {}, lambda m: ((TEXTS,), {})),
    "zero-shot-classification": ("sequence-classification", {"labels": NLI},
                                 lambda m: ((TEXTS,), {"candidate_labels": ["sports", "food", "travel"]})),
    "fill-mask": ("masked-lm", {}, lambda m: ([t.replace("the", m, 1) if "the" in t else f"{m} {t}" for t in TEXTS],
                                              {"top_k": 3})),
    "token-classification": ("token-classification", {},
                             lambda m: ((TEXTS,), {"aggregation_strategy": "simple"})),
    "question-answering": ("question-answering", {},
                           lambda m: ((), {"question": ["Who lives in Berlin?", "Where?", "What is the capital?"],
                                           "context": [TEXTS[1], TEXTS[0], TEXTS[3]], "top_k": 2})),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, bundle_factory):
    task = request.param
    head, kwargs, call = CASES[task]
    checkpoint, bundle = bundle_factory("bert", head, task, dtypes=("fp32",), padding_side="left", **kwargs)
    assert json.loads((checkpoint / "tokenizer_config.json").read_text())["padding_side"] == "left"
    ours = pipeline(task, bundle, device="cpu")
    theirs = transformers.pipeline(task, model=str(checkpoint))
    assert theirs.tokenizer.padding_side == "left"
    return task, ours, theirs, call


def test_left_padding_tokenizer_matches_transformers(case):
    task, ours, theirs, call = case
    args, kwargs = call(ours.tokenizer.special_tokens.get("mask_token"))
    if task == "fill-mask":
        args = (args,)
    assert_matches(ours(*args, **kwargs), theirs(*args, **kwargs))


def test_batches_are_padded_on_the_right(case):
    """The rows of one padded batch: real tokens first, pads after, whatever the tokenizer
    config says; a row alone and the same row in a padded batch agree."""
    task, ours, _, call = case
    feeds = []
    run = ours.model.run
    ours.model.run = lambda feed, outputs=None: feeds.append(feed) or run(feed, outputs)
    try:
        args, kwargs = call(ours.tokenizer.special_tokens.get("mask_token"))
        ours(*((args,) if task == "fill-mask" else args), **kwargs)
    finally:
        del ours.model.run
    padded = [feed["attention_mask"] for feed in feeds if not feed["attention_mask"].all()]
    assert padded, "the batch should hold rows of different lengths"
    for mask in padded:
        lengths = mask.sum(axis=1)
        assert (mask == (np.arange(mask.shape[1]) < lengths[:, None])).all()


def test_question_answering_keeps_context_first(bundle_factory):
    """padding_side still decides what it decides in transformers: the order of question
    and context, with the context truncated (only_first) in long windows."""
    checkpoint, bundle = bundle_factory("bert", "question-answering", "question-answering", dtypes=("fp32",),
                                        padding_side="left")
    ours = pipeline("question-answering", bundle, device="cpu")
    theirs = transformers.pipeline("question-answering", model=str(checkpoint))
    assert not ours.question_first
    kwargs = dict(question=["Who met Macron?", "Where?"], context=[LONG, TEXTS[1]], top_k=2, doc_stride=32)
    assert_matches(ours(**kwargs), theirs(**kwargs))


def test_token_classification_stride_windows(bundle_factory):
    """transformers pads a text's stride windows together on the tokenizer's side; the
    last, shorter window is left-padded and its scores carry the shifted positions."""
    checkpoint, bundle = bundle_factory("bert", "token-classification", "token-classification", dtypes=("fp32",),
                                        padding_side="left")
    ours = pipeline("ner", bundle, device="cpu")
    theirs = transformers.pipeline("ner", model=str(checkpoint))
    kwargs = dict(aggregation_strategy="first", stride=16)
    assert_matches(ours([LONG, TEXTS[1]], **kwargs), theirs([LONG, TEXTS[1]], **kwargs))
