"""Parity: the runtime's question-answering pipeline against transformers.pipeline on the
same tiny checkpoints (answers, start and end exact, scores within 1e-4), over WordPiece,
byte-level BPE and Unigram tokenizers, short and multi-window contexts."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import transformers
from click.testing import CliRunner

from edgeformers.exporter.agreement import qa_pairs
from edgeformers.runtime import InputError, pipeline
from edgeformers.runtime.cli import cli
from tests.fixtures.floors import floor_for

logger = logging.getLogger(__name__)

# transformers' own noise: numpy 2's __array__ copy notice on its torch p_mask, and the
# deprecation of list-of-dict inputs (which it still accepts, as do we).
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore:Passing a list of SQuAD examples:FutureWarning"),
]

CASES = [
    ("Where does Wolfgang live?", "My name is Wolfgang and I live in Berlin. The film was long but good."),
    ("What is around?", "  leading and trailing spaces around the answer  "),
    ("How much is the café?", "Café au lait in Zürich, naïve résumé: 4,50 € à la carte."),
    ("What is the capital? 🙂", "東京は日本の首都です 🙂👍 and Paris is the capital of France."),
    ("what?", "it was"),
]
LONG = " ".join(["the movie was long but the ending made up for it."] * 25) + " Wolfgang lives in Berlin."
ARCHS = ["bert", "roberta", "deberta-v2"]


def assert_same(ours, theirs, atol=1e-4):
    """Same structure, answers and character spans exact, scores within atol."""
    if isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), (ours, theirs)
        for a, b in zip(ours, theirs):
            assert_same(a, b, atol)
        return
    assert set(ours) == {"score", "start", "end", "answer"}
    assert (ours["answer"], ours["start"], ours["end"]) == (theirs["answer"], theirs["start"], theirs["end"])
    assert type(ours["score"]) is float and type(ours["start"]) is int
    assert ours["score"] == pytest.approx(theirs["score"], abs=atol)


def answers_of(result):
    return [a for item in (result if isinstance(result, list) else [result])
            for a in (item if isinstance(item, list) else [item])]


@pytest.fixture(scope="module", params=ARCHS)
def pair(request, bundle_factory):
    checkpoint, bundle = bundle_factory(request.param, "question-answering", "question-answering")
    reference = transformers.pipeline("question-answering", model=str(checkpoint))
    return pipeline("question-answering", bundle, device="cpu"), reference


def test_single_examples_match(pair):
    ours, theirs = pair
    for question, context in CASES:
        result = ours(question=question, context=context)
        assert_same(result, theirs(question=question, context=context))
        assert context[result["start"]:result["end"]] == result["answer"]


def test_batched_inputs_match(pair):
    ours, theirs = pair
    questions, contexts = [q for q, _ in CASES], [c for _, c in CASES]
    expected = theirs(question=questions, context=contexts)
    assert_same(ours(question=questions, context=contexts), expected)
    assert_same(ours(question=questions, context=contexts, batch_size=2), expected)
    dicts = [{"question": q, "context": c} for q, c in CASES[:2]]
    assert_same(ours(dicts), theirs(dicts))
    assert_same(ours(question=questions[:2], context=contexts[0]), theirs(question=questions[:2], context=contexts[0]))


def test_long_context_is_windowed_like_transformers(pair):
    ours, theirs = pair
    windows = ours._windows([("Who lives in Berlin?", LONG)], 128, 64)[0]
    assert len(windows) > 2
    question = "Who lives in Berlin?"
    assert_same(ours(question=question, context=LONG), theirs(question=question, context=LONG))
    small = dict(max_seq_len=48, doc_stride=20, top_k=3)
    assert_same(ours(question=question, context=LONG, **small), theirs(question=question, context=LONG, **small))
    # windows of a long and a short example share batches
    both = dict(question=[question, CASES[0][0]], context=[LONG, CASES[0][1]], max_seq_len=64, doc_stride=16)
    assert_same(ours(**both), theirs(**both))


@pytest.mark.parametrize("kwargs", [
    {"top_k": 3},
    {"max_answer_len": 2, "top_k": 2},
    {"handle_impossible_answer": True, "top_k": 2},
    {"handle_impossible_answer": True},
    {"align_to_words": False, "top_k": 3},
])
def test_decoding_arguments_match(pair, kwargs):
    ours, theirs = pair
    for question, context in CASES[:4]:
        result = ours(question=question, context=context, **kwargs)
        assert_same(result, theirs(question=question, context=context, **kwargs))
        for answer in answers_of(result):
            assert context[answer["start"]:answer["end"]] == answer["answer"]


def test_input_forms(pair):
    ours, theirs = pair
    question, context = CASES[0]
    expected = theirs(question=question, context=context)
    item = {"question": question, "context": context}
    assert_same(ours(item), expected)
    assert_same(ours([item]), expected)  # a list of one gives one result, as in transformers
    assert_same(ours(question, context), expected)
    ran = CliRunner().invoke(cli, ["run", str(ours.bundle.path), json.dumps(item)])  # a JSON object on the CLI
    assert ran.exit_code == 0, ran.output
    assert_same(json.loads(ran.output), expected)
    assert ours([]) == []


@pytest.mark.parametrize("call, message", [
    (lambda p: p(context="some context"), "question is missing"),
    (lambda p: p(question="who?"), "context is missing"),
    (lambda p: p({"question": "who?"}), "no context"),
    (lambda p: p(question="who?", context=""), "context 0 is empty"),
    (lambda p: p([{"question": "a", "context": "b"}, {"question": "", "context": "b"}]), "question 1 is empty"),
    (lambda p: p(question=["a", "b"], context=["c"]), "same length"),
    (lambda p: p("just a string"), "question="),
    (lambda p: p(question="who?", context="c", top_k=0), "top_k"),
    (lambda p: p(question="who?", context="c", max_answer_len=0), "max_answer_len"),
    (lambda p: p(question="who?", context="c", max_seq_len=64, doc_stride=64), "doc_stride=64 must be smaller"),
    (lambda p: p(question="who?", context="c", max_seq_len=512), "max_seq_len=512 exceeds"),
    (lambda p: p(question="who? " * 40, context=LONG, max_seq_len=64), "no room for the context"),
    (lambda p: p(question="who? " * 10, context=LONG, max_seq_len=64, doc_stride=50), "context tokens that fit"),
])
def test_bad_input_is_refused(bundle_factory, call, message):
    _, bundle = bundle_factory("bert", "question-answering", "question-answering")
    with pytest.raises(InputError, match=message):
        call(pipeline("question-answering", bundle, device="cpu"))


def test_blank_context_gives_the_empty_answer(bundle_factory):
    """[CLS] q [SEP] [SEP] has 16 span candidates, exactly top_k * 2 + 10 for top_k=3:
    transformers' argpartition goes out of bounds there; we return what it would."""
    checkpoint, bundle = bundle_factory("bert", "question-answering", "question-answering")
    ours = pipeline("question-answering", bundle, device="cpu")
    theirs = transformers.pipeline("question-answering", model=str(checkpoint))
    with pytest.raises(ValueError, match="out of bounds"):
        theirs(question="q", context=" ", top_k=3)
    assert ours(question="q", context=" ", top_k=3) == {"score": 0.0, "start": 0, "end": 0, "answer": ""}
    assert_same(ours(question="q", context=" "), theirs(question="q", context=" "))


def test_context_first_when_tokenizer_pads_left(checkpoint_factory, tmp_path):
    """A left-padding tokenizer puts the context first and truncates it (only_first)."""
    from edgeformers.exporter.build import export

    checkpoint = tmp_path / "left"
    shutil.copytree(checkpoint_factory("bert", "question-answering"), checkpoint)
    config_path = checkpoint / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "padding_side": "left"}))
    export(str(checkpoint), tmp_path / "bundle", task="question-answering", dtypes=("fp32",))
    ours = pipeline("question-answering", tmp_path / "bundle", device="cpu")
    theirs = transformers.pipeline("question-answering", model=str(checkpoint))
    assert not ours.question_first
    both = dict(question=["Who lives in Berlin?", CASES[0][0]], context=[LONG, CASES[0][1]], top_k=2)
    assert_same(ours(**both), theirs(**both))


def test_q8_answers_agree_with_fp32_above_the_random_weight_floor(pair):
    """Over the exporter's ~40 question/context pairs, the q8 pipeline answers with the
    same span as fp32 at least as often as the random-weight floor (tests/fixtures/floors.py)."""
    ours, _ = pair
    quantized = pipeline("question-answering", ours.bundle.path, dtype="q8", device="cpu")
    questions, contexts = (list(x) for x in zip(*qa_pairs()))
    fp32 = ours(question=questions, context=contexts)
    q8 = quantized(question=questions, context=contexts)
    for result, context in zip(q8, contexts):
        assert context[result["start"]:result["end"]] == result["answer"]
    same = sum((a["start"], a["end"]) == (b["start"], b["end"]) for a, b in zip(fp32, q8))
    assert same / len(fp32) >= floor_for("question-answering"), (same, len(fp32))
