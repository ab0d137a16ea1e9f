"""Parity: the runtime's token-classification (ner) pipeline against transformers.pipeline
on tiny WordPiece (bert), byte-level BPE (roberta) and Unigram (deberta-v2) checkpoints,
for every aggregation strategy: entities, words and offsets exact, scores within 1e-4.

Random weights label noisily; that is fine, the grouping logic is what is compared, and
``test_multi_token_entities_appear`` proves the texts do produce multi-token groups."""

from __future__ import annotations

import warnings

import pytest
import transformers

from edgeformers.exporter.agreement import AGREEMENT_TEXTS
from edgeformers.runtime import InputError, pipeline
from tests.fixtures.floors import floor_for

STRATEGIES = ["none", "simple", "first", "average", "max"]
ARCHS = ["bert", "roberta", "deberta-v2"]
TEXTS = [
    "My name is Wolfgang and I live in Berlin.",
    "Hugging Face Inc. is based in New York City; Sarah Connor works there.",
    "  Café au lait in Zürich, naïve résumé  ",
    "東京は日本の首都です 🙂👍 Ünïcödé Straße",
    "",
]
# about 200 tokens for each tokenizer: longer than the 128-token maximum
LONG = " ".join(["Angela Merkel met Emmanuel Macron in Paris at the Élysée Palace on Tuesday."] * 12)
STRIDE = 16


def assert_same(ours, theirs, atol=1e-4):
    """Same entities in the same order: every key exact but the score; plain Python types."""
    assert isinstance(ours, list) and len(ours) == len(theirs), (ours, theirs)
    for a, b in zip(ours, theirs):
        if isinstance(b, list):
            assert_same(a, b, atol)
            continue
        assert list(a) == list(b), (a, b)
        for key, value in b.items():
            if key == "score":
                assert type(a[key]) is float
                assert a[key] == pytest.approx(float(value), abs=atol), (a, b)
            else:
                assert type(a[key]) in (int, str) and a[key] == value, (a, b)


@pytest.fixture(scope="module", params=ARCHS)
def arch(request, bundle_factory):
    """(ours, {strategy: transformers pipeline}, checkpoint) for one architecture."""
    checkpoint, bundle = bundle_factory(request.param, "token-classification", "token-classification")
    model = transformers.AutoModelForTokenClassification.from_pretrained(str(checkpoint))
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(checkpoint))
    references = {
        s: transformers.pipeline("ner", model=model, tokenizer=tokenizer, aggregation_strategy=s) for s in STRATEGIES
    }
    return pipeline("ner", bundle, device="cpu"), references, request.param


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # transformers' "fallback heuristic" warning, per token
        yield


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_texts_and_batch_match(arch, strategy):
    ours, references, _ = arch
    expected = references[strategy](TEXTS)
    for text, theirs in zip(TEXTS, expected):
        assert_same(ours(text, aggregation_strategy=strategy), theirs)
    assert_same(ours(TEXTS, aggregation_strategy=strategy, batch_size=2), expected)
    assert_same(ours(LONG, aggregation_strategy=strategy), references[strategy](LONG))  # truncated


@pytest.mark.parametrize("strategy", [*STRATEGIES[1:], None])
def test_stride_windows_match(arch, strategy):
    ours, references, _ = arch
    assert len(ours.tokenizer.encode([LONG], stride=STRIDE)[0].overflowing) >= 1
    reference = references[strategy or "none"]
    kwargs = {} if strategy is None else {"aggregation_strategy": strategy}
    expected = reference(LONG, stride=STRIDE)
    assert_same(ours(LONG, stride=STRIDE, **kwargs), expected)
    assert_same(ours([TEXTS[0], LONG], stride=STRIDE, batch_size=2, **kwargs),
                [reference(TEXTS[0], stride=STRIDE), expected])


def test_multi_token_entities_appear(arch):
    """The texts must exercise grouping: some entity covers several labelled tokens."""
    ours, _, _ = arch
    texts = [*TEXTS, LONG]
    tokens = ours(texts, ignore_labels=[])
    for strategy in STRATEGIES[1:]:
        grouped = ours(texts, aggregation_strategy=strategy)
        spans = [
            sum(e["start"] <= t["start"] < e["end"] for t in row_tokens)
            for row, row_tokens in zip(grouped, tokens) for e in row
        ]
        assert max(spans) >= 2, strategy


def test_ungrouped_entities_have_token_index(arch):
    ours, references, _ = arch
    entities = ours(TEXTS[0])
    assert entities and all(list(e) == ["entity", "score", "index", "word", "start", "end"] for e in entities)
    assert all(type(e["index"]) is int and e["index"] >= 1 for e in entities)
    labelled = ours(TEXTS[0], ignore_labels=[])
    assert {e["entity"] for e in labelled} - {e["entity"] for e in entities} <= {"O"}


@pytest.mark.parametrize("ignore", [[], ["O", "B-PER", "I-LOC"]])
def test_ignore_labels(arch, ignore):
    ours, references, _ = arch
    for strategy in ("none", "simple"):
        assert_same(ours(TEXTS[:2], aggregation_strategy=strategy, ignore_labels=ignore),
                    references[strategy](TEXTS[:2], ignore_labels=ignore))


def test_split_into_words(arch):
    ours, references, name = arch
    words = ["Wolfgang", "lives", "in", "Zürich", "東京", "🙂"]
    batch = [words, words[:2]]
    if name == "roberta":  # byte-level BPE without add_prefix_space: transformers refuses too
        with pytest.raises(AssertionError):
            references["simple"](words, is_split_into_words=True)
        with pytest.raises(InputError, match="is_split_into_words"):
            ours(words, is_split_into_words=True)
        return
    for strategy in ("none", "first"):
        reference = references[strategy]
        assert_same(ours(words, is_split_into_words=True, aggregation_strategy=strategy),
                    reference(words, is_split_into_words=True))
        assert_same(ours(batch, is_split_into_words=True, delimiter="--", aggregation_strategy=strategy),
                    reference(batch, is_split_into_words=True, delimiter="--"))


@pytest.mark.parametrize("grouped, ignore_subwords", [(True, True), (True, False), (False, None)])
def test_deprecated_grouping_flags(arch, grouped, ignore_subwords):
    ours, references, _ = arch
    with pytest.warns(FutureWarning):
        result = ours(TEXTS[0], grouped_entities=grouped, ignore_subwords=ignore_subwords)
    assert_same(result, references["none"](TEXTS[0], grouped_entities=grouped, ignore_subwords=ignore_subwords))


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        (("hi",), {"aggregation_strategy": "longest"}, "none, simple, first, average, max"),
        ((LONG,), {"aggregation_strategy": "none", "stride": 8}, "aggregation_strategy"),
        ((LONG,), {"aggregation_strategy": "simple", "stride": 126}, "stride < 126"),
        ((LONG,), {"aggregation_strategy": "simple", "stride": -1}, "stride"),
        (("hi",), {"ignore_labels": "O"}, "ignore_labels"),
        (([],), {}, "non-empty"),
        ((None,), {}, "expected a string"),
        (([["a", "b"]],), {}, "is_split_into_words=True"),
        (("not words",), {"is_split_into_words": True}, "list of words"),
    ],
)
def test_bad_arguments_are_refused(bundle_factory, args, kwargs, message):
    _, bundle = bundle_factory("bert", "token-classification", "token-classification")
    with pytest.raises(InputError, match=message):
        pipeline("token-classification", bundle, device="cpu")(*args, **kwargs)


def test_accepts_transformers_enum(bundle_factory):
    from transformers.pipelines.token_classification import AggregationStrategy

    _, bundle = bundle_factory("bert", "token-classification", "token-classification")
    ours = pipeline("ner", bundle, device="cpu")
    assert ours(TEXTS[0], aggregation_strategy=AggregationStrategy.MAX) == ours(TEXTS[0], aggregation_strategy="MAX")


def test_q8_entities_agree_with_fp32_above_the_random_weight_floor(arch):
    """Over the exporter's ~40 texts, the q8 pipeline's entities (simple grouping) match
    fp32's — same start, end and type — at least the random-weight floor's share:
    matched / max(fp32's count, q8's count), summed over the texts."""
    ours, _, _ = arch
    quantized = pipeline("ner", ours.bundle.path, dtype="q8", device="cpu")
    texts = list(AGREEMENT_TEXTS)

    def spans(rows):
        return [{(e["start"], e["end"], e["entity_group"]) for e in row} for row in rows]

    want = spans(ours(texts, aggregation_strategy="simple"))
    got = spans(quantized(texts, aggregation_strategy="simple"))
    matched = sum(len(a & b) for a, b in zip(want, got))
    total = sum(max(len(a), len(b)) for a, b in zip(want, got))
    assert total > len(texts)  # the texts do produce entities to compare
    assert matched / total >= floor_for("token-classification"), (matched, total)
