"""Property-based input handling of the six text pipelines, against transformers.

Hypothesis draws inputs (strings: empty, whitespace, control characters, lone
surrogates, CJK, emoji, over-long; lists, nested lists, dicts, None, numbers, bytes) and
keyword arguments (each real argument with valid and invalid values, unknown names), and
calls the runtime and ``transformers.pipeline`` on the same tiny checkpoint. Property:
the runtime either answers exactly like transformers (labels, tokens, spans exact; scores
within 1e-4), or raises a typed ``EdgeformersError``. Where transformers itself fails and
the runtime answers, the case must be one the README documents (``DOCUMENTED``). Never
another exception, never a hang.

``EDGEFORMERS_HYPOTHESIS_EXAMPLES`` sets the examples per pipeline (CI: 100); the outcome
table prints at the end of the module (``pytest -s``) and is written as JSON to
``EDGEFORMERS_PROPERTY_REPORT`` when that is set.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import re
import signal
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import transformers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeformers.models.errors import EdgeformersError
from edgeformers.runtime import pipeline
from tests.parity import assert_matches

EXAMPLES = int(os.environ.get("EDGEFORMERS_HYPOTHESIS_EXAMPLES", "100"))
CALL_TIMEOUT_S = 120  # a call this slow on a 2-layer, 32-wide model is a hang
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
NLI = ["contradiction", "neutral", "entailment"]

def _tuple_batch(args: tuple[Any, ...], kwargs: dict[str, Any], message: str) -> bool:
    return bool(args) and isinstance(args[0], tuple)


def _message(piece: str) -> Callable[[tuple[Any, ...], dict[str, Any], str], bool]:
    return lambda args, kwargs, message: piece in message


#: transformers failures the runtime answers instead, each one a README "Differences from
#: transformers" entry: (task or "*", does this call and transformers' message match?, reason).
DOCUMENTED: list[tuple[str, Callable[[tuple[Any, ...], dict[str, Any], str], bool], str]] = [
    ("*", _tuple_batch, "a tuple of inputs is a batch, like a list (transformers takes only lists)"),
    ("question-answering", _message("out of bounds"), "tiny context: transformers' argpartition goes out of bounds"),
    ("fill-mask", _message("selected index k out of range"), "top_k above the vocabulary size is capped"),
]

OUTCOMES: dict[str, Counter[str]] = {}
REFUSED_WHERE_TRANSFORMERS_ANSWERS: dict[str, Counter[str]] = {}


def _gist(error: BaseException) -> str:
    """An error message without the values, so that like refusals count together."""
    return re.sub(r"\d+|'[^']*'|\"[^\"]*\"", "_", str(error))[:90]


# --- strategies ---------------------------------------------------------------------------

WORDS = ["the", "cat", "likes", "red", "ball", "Berlin", "Paris", "movie", "was", "great", "terrible",
         "Wolfgang", "lives", "in", "café", "Zürich", "東京", "🙂", ",", "."]
SPECIAL_TEXTS = ["", " ", "   \t\n ", "\x00", "\x1b[31mred\x1b[0m", "\u200b\u200d", "e\u0301", "\ufeffbom",
                 "東京は日本の首都です", "🙂👍🏽👨‍👩‍👧", "a\ud800b", "\udfff", "line\r\nbreak", "\U0010ffff"]
TEXT = st.one_of(
    st.sampled_from(SPECIAL_TEXTS),
    st.text(max_size=30),
    st.text(st.characters(categories=["Cs", "Cc", "Zs", "Lo", "So", "Mn"]), max_size=8),
    st.lists(st.sampled_from(WORDS), max_size=25).map(" ".join),
    st.builds(lambda word, n: " ".join([word] * n), st.sampled_from(WORDS[:14]), st.integers(100, 300)),
)
JUNK = st.one_of(st.none(), st.integers(-3, 3), st.floats(), st.binary(max_size=6), st.booleans(),
                 st.just({}), st.just([]), st.just(()), st.just([[]]))
BATCH_SIZE = ([None, 1, 2, 16], [0, -1, 1.5, "2", True])
UNKNOWN = st.sampled_from(["foo", "inputs_2", "return_text", "device"])


def texts_or_junk(text: st.SearchStrategy[Any] = TEXT) -> st.SearchStrategy[Any]:
    """Mostly what a caller means to pass (a text, a list of texts), sometimes junk."""
    texts = st.lists(text, max_size=4)
    return st.one_of(text, text, text, texts, texts,
                     st.lists(st.one_of(text, JUNK, st.lists(text, max_size=2)), min_size=1, max_size=3), JUNK)


def keyword_arguments(options: dict[str, tuple[list[Any], list[Any]]]) -> st.SearchStrategy[dict[str, Any]]:
    """Any subset of ``options`` (name -> (valid values, invalid values)), each argument
    present or absent: most draws take valid values only (so most calls reach the model),
    the others any value, and sometimes an argument the pipeline lacks."""
    valid = st.fixed_dictionaries({}, optional={name: st.sampled_from(good) for name, (good, _) in options.items()})
    anything = st.fixed_dictionaries({}, optional={name: st.sampled_from(good + bad)
                                                   for name, (good, bad) in options.items()})
    unknown = st.dictionaries(UNKNOWN, st.integers(0, 2), max_size=1)
    return st.one_of(valid, valid, valid, anything, st.builds(lambda a, b: {**a, **b}, anything, unknown))


def with_masks(text: str, count: int, mask: str) -> str:
    words = text.split(" ")
    for index in range(count):
        words.insert(min(len(words), 1 + index * 2), mask)
    return " ".join(words)


# --- one call, bounded, classified ---------------------------------------------------------

class Hang(Exception):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise Hang(f"no answer within {CALL_TIMEOUT_S}s")


def bounded(call: Callable[[], Any]) -> tuple[str, Any]:
    """``("ok", result)``, ``("error", exception)`` or ``("hang", exception)``."""
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, CALL_TIMEOUT_S)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return "ok", call()
    except Hang as err:
        return "hang", err
    except BaseException as err:  # noqa: BLE001 - classifying every failure is the point
        if isinstance(err, KeyboardInterrupt):
            raise
        return "error", err
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def check_call(task: str, ours: Any, theirs: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    counts = OUTCOMES.setdefault(task, Counter())
    counts["tried"] += 1
    mine, mine_value = bounded(lambda: ours(*copy.deepcopy(args), **copy.deepcopy(kwargs)))
    reference, reference_value = bounded(lambda: theirs(*copy.deepcopy(args), **copy.deepcopy(kwargs)))
    call = f"{task}(*{args!r:.300}, **{kwargs!r:.300})"
    if mine == "hang":
        counts["hangs"] += 1
        pytest.fail(f"{call} hung")
    if mine == "error":
        if not isinstance(mine_value, EdgeformersError):
            counts["untyped crashes"] += 1
            raise AssertionError(f"{call} raised an untyped {type(mine_value).__name__}: {mine_value}") from mine_value
        counts["refused (typed)"] += 1
        counts["  of which transformers answers" if reference == "ok" else "  of which transformers fails too"] += 1
        if reference == "ok":  # allowed by the property; listed in the report to be documented
            REFUSED_WHERE_TRANSFORMERS_ANSWERS.setdefault(task, Counter())[_gist(mine_value)] += 1
        return
    if reference == "ok":
        try:
            assert_matches(mine_value, reference_value)
        except AssertionError:
            reason = _neighbouring_call(task, theirs, args, kwargs, mine_value)
            if reason is None:
                raise
            counts[f"answered where transformers differs (documented: {reason})"] += 1
        else:
            counts["answered like transformers"] += 1
        return
    reason = _neighbouring_call(task, theirs, args, kwargs, mine_value)
    if reason is None:
        message = str(reference_value)
        reason = next((why for name, matches, why in DOCUMENTED
                       if name in ("*", task) and matches(args, kwargs, message)), None)
        assert reason is not None, (
            f"{call} answered {mine_value!r:.300} where transformers {reference}: "
            f"{type(reference_value).__name__}: {message:.300}; answer like it, refuse, or document the difference"
        )
    counts[f"answered where transformers fails (documented: {reason})"] += 1


def _no_truncation_asked(task: str, kwargs: dict[str, Any]) -> bool:
    options = kwargs.get("tokenize_kwargs") if task == "feature-extraction" else kwargs
    return (task in ("text-classification", "feature-extraction") and kwargs.get("truncation") is None
            and not (isinstance(options, dict) and "truncation" in options))


def _truncate(kwargs: dict[str, Any]) -> dict[str, Any]:
    changed = {**kwargs, "truncation": True}
    if kwargs.get("padding") not in (None, False, "do_not_pad"):
        changed.pop("max_length", None)  # with padding, max_length is only the padding width
    return changed


def _batched_features(task: str, kwargs: dict[str, Any]) -> bool:
    return task == "feature-extraction" and kwargs.get("batch_size") not in (None, 1)


#: README differences where the runtime answers what transformers answers for a
#: neighbouring call: (reason, does it apply to this call?, the neighbouring call's kwargs).
NEIGHBOURS: list[tuple[str, Callable[[str, dict[str, Any]], bool], Callable[[dict[str, Any]], dict[str, Any]]]] = [
    # Over the model maximum, text-classification and feature-extraction truncate unless
    # told truncation=False; transformers does not truncate and fails once the input
    # outruns the position embeddings (the tiny fixtures have two spare positions, so up
    # to two tokens over it answers, untruncated).
    ("over-long input truncated", _no_truncation_asked, _truncate),
    # feature-extraction gives each text its own tokens' states; transformers with
    # batch_size > 1 returns the shorter texts' pad positions too (at batch_size=1, its
    # default, it gives what the runtime gives).
    ("each text's own tokens, as at batch_size=1", _batched_features, lambda kw: {**kw, "batch_size": 1}),
]


def _neighbouring_call(task: str, theirs: Any, args: tuple[Any, ...], kwargs: dict[str, Any], mine: Any) -> str | None:
    """The README reason whose neighbouring transformers call (or all applicable ones
    together) answers exactly what the runtime answered; None if there is none."""
    applicable = [(reason, change) for reason, applies, change in NEIGHBOURS if applies(task, kwargs)]
    if len(applicable) > 1:
        combined = kwargs
        for _, change in applicable:
            combined = change(combined)
        applicable.append((" + ".join(reason for reason, _ in applicable), lambda _: combined))
    for reason, change in applicable:
        state, value = bounded(lambda: theirs(*copy.deepcopy(args), **copy.deepcopy(change(kwargs))))
        if state != "ok":
            continue
        try:
            assert_matches(mine, value)
        except AssertionError:
            continue
        return reason
    return None


@pytest.fixture(scope="module", autouse=True)
def _outcome_table() -> Iterator[None]:
    transformers.logging.set_verbosity_error()
    logging.getLogger("edgeformers").setLevel(logging.ERROR)
    yield
    report: dict[str, Any] = {task: dict(counts) for task, counts in sorted(OUTCOMES.items())}
    print("\nproperty-based inputs per pipeline:")
    for task, counts in report.items():
        print(f"  {task}: " + ", ".join(f"{k.strip()}={v}" for k, v in counts.items()))
    report["refused where transformers answers"] = {
        task: dict(counts.most_common()) for task, counts in sorted(REFUSED_WHERE_TRANSFORMERS_ANSWERS.items())
    }
    path = os.environ.get("EDGEFORMERS_PROPERTY_REPORT")
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)


def _pair(bundle_factory: Any, arch: str, head: str, task: str, **kwargs: Any) -> tuple[Any, Any]:
    checkpoint, bundle = bundle_factory(arch, head, task, dtypes=("fp32",), **kwargs)
    return pipeline(task, bundle, device="cpu"), transformers.pipeline(task, model=str(checkpoint))


# --- the six pipelines ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def classifier(bundle_factory):
    return _pair(bundle_factory, "bert", "sequence-classification", "text-classification")


PAIR = st.fixed_dictionaries({"text": TEXT}, optional={"text_pair": st.one_of(TEXT, st.none())})
TEXT_CLASSIFICATION_INPUTS = st.one_of(texts_or_junk(), PAIR, st.lists(PAIR, max_size=3),
                                       st.fixed_dictionaries({"text": JUNK}))
TEXT_CLASSIFICATION_ARGUMENTS = keyword_arguments({
    "top_k": ([None, 1, 2, 3], [0, -1, 1.5, "2", True]),
    "function_to_apply": (["softmax", "sigmoid", "none", "SOFTMAX", None], ["tanh", 3]),
    "return_all_scores": ([True, False, None], ["yes"]),
    "truncation": ([True, False, "longest_first", "only_first", "do_not_truncate"], ["only_second", "bad", 2]),
    "padding": ([True, False, "longest", "max_length", "do_not_pad"], ["bad", 1]),
    "max_length": ([None, 1, 3, 16, 64, 128], [512, 0, -1, 2.5, "8"]),
    "batch_size": BATCH_SIZE,
})


@SETTINGS
@given(inputs=TEXT_CLASSIFICATION_INPUTS, kwargs=TEXT_CLASSIFICATION_ARGUMENTS)
def test_text_classification(classifier, inputs, kwargs):
    check_call("text-classification", *classifier, (inputs,), kwargs)


@pytest.fixture(scope="module")
def extractor(bundle_factory):
    return _pair(bundle_factory, "bert", "base", "feature-extraction")


FEATURE_EXTRACTION_ARGUMENTS = keyword_arguments({
    "truncation": ([True, False, None, "longest_first"], ["bad", 1]),
    "tokenize_kwargs": ([None, {}, {"truncation": True}, {"truncation": True, "max_length": 8}, {"max_length": 8},
                         {"padding": True}],
                        [{"truncation": "bad"}, {"add_special_tokens": False}, "truncation", {"max_length": 0}]),
    "return_tensors": ([True, False, None], ["pt"]),
    "batch_size": BATCH_SIZE,
})


@SETTINGS
@given(inputs=texts_or_junk(), kwargs=FEATURE_EXTRACTION_ARGUMENTS)
def test_feature_extraction(extractor, inputs, kwargs):
    check_call("feature-extraction", *extractor, (inputs,), kwargs)


@pytest.fixture(scope="module")
def zero_shot(bundle_factory):
    return _pair(bundle_factory, "bert", "sequence-classification", "zero-shot-classification", labels=NLI)


SHORT_TEXT = st.one_of(st.sampled_from(WORDS + SPECIAL_TEXTS), st.text(max_size=12))
GOOD_LABELS = st.one_of(st.lists(st.sampled_from(WORDS), min_size=1, max_size=4), st.just("sports, politics ,, food"))
LABELS = st.one_of(GOOD_LABELS, GOOD_LABELS, st.lists(SHORT_TEXT, max_size=4), SHORT_TEXT, JUNK,
                   st.lists(JUNK, min_size=1, max_size=2))
ZERO_SHOT_ARGUMENTS = keyword_arguments({
    "hypothesis_template": (["This example is {}.", "{}", "{} 🙂", "{0}"],
                            ["no braces", "{} and {}", "{x}", "{", "a\ud800{}", 3]),
    "multi_label": ([True, False, None], ["yes"]),
    "multi_class": ([None, True, False], []),
    "batch_size": BATCH_SIZE,
})


@SETTINGS
@given(inputs=texts_or_junk(), labels=LABELS, how=st.sampled_from(["keyword"] * 4 + ["positional", "both", "none"]),
       kwargs=ZERO_SHOT_ARGUMENTS)
def test_zero_shot(zero_shot, inputs, labels, how, kwargs):
    """Labels as ``candidate_labels=``, as the argument after the inputs (transformers
    allows both), both at once, or missing."""
    args = (inputs, labels) if how in ("positional", "both") else (inputs,)
    named = {"candidate_labels": labels} if how in ("keyword", "both") else {}
    check_call("zero-shot-classification", *zero_shot, args, {**named, **kwargs})


@pytest.fixture(scope="module")
def filler(bundle_factory):
    return _pair(bundle_factory, "bert", "masked-lm", "fill-mask")


MASKED = st.builds(with_masks, TEXT, st.sampled_from([0, 1, 1, 1, 2]), st.just("[MASK]"))
FILL_MASK_ARGUMENTS = keyword_arguments({
    "top_k": ([None, 1, 3, 5, 10_000], [0, -1, 1.5, "2", True]),
    "targets": ([None, "the", ["the", "cat"], ["zzzqqq"], ["東京", "🙂"]], [[], "", 3, [3], ["a\ud800"]]),
    "tokenizer_kwargs": ([None, {}, {"truncation": True}, {"truncation": True, "max_length": 16}, {"padding": True}],
                         [{"bad": 1}, "x", {"max_length": -1}]),
    "batch_size": BATCH_SIZE,
})


@SETTINGS
@given(inputs=texts_or_junk(MASKED), kwargs=FILL_MASK_ARGUMENTS)
def test_fill_mask(filler, inputs, kwargs):
    check_call("fill-mask", *filler, (inputs,), kwargs)


@pytest.fixture(scope="module")
def tagger(bundle_factory):
    return _pair(bundle_factory, "bert", "token-classification", "token-classification")


WORD_LISTS = st.one_of(st.lists(SHORT_TEXT, min_size=1, max_size=6),
                       st.lists(st.lists(SHORT_TEXT, min_size=1, max_size=4), min_size=1, max_size=3))
TOKEN_CLASSIFICATION_ARGUMENTS = keyword_arguments({
    "aggregation_strategy": (["none", "simple", "first", "average", "max", "SIMPLE"], ["bad", 3]),
    "ignore_labels": ([None, [], ["O"], ["O", "B-PER"]], ["O", 3]),
    "stride": ([None, 0, 8, 16, 125], [126, 200, -1, 1.5]),
    "is_split_into_words": ([True, False], []),
    "delimiter": ([None, " ", "-", ""], [3]),
    "grouped_entities": ([None, True, False], []),
    "ignore_subwords": ([None, True, False], []),
    "batch_size": BATCH_SIZE,
})


@SETTINGS
@given(inputs=st.one_of(texts_or_junk(), WORD_LISTS), kwargs=TOKEN_CLASSIFICATION_ARGUMENTS)
def test_token_classification(tagger, inputs, kwargs):
    check_call("token-classification", *tagger, (inputs,), kwargs)


@pytest.fixture(scope="module")
def reader(bundle_factory):
    return _pair(bundle_factory, "bert", "question-answering", "question-answering")


EXAMPLE = st.fixed_dictionaries({"question": TEXT, "context": TEXT})
QUESTION_ANSWERING_CALLS = st.one_of(
    st.tuples(st.just(()), st.fixed_dictionaries({"question": TEXT, "context": TEXT})),
    st.tuples(st.just(()), st.fixed_dictionaries({"question": st.lists(TEXT, max_size=3), "context": TEXT})),
    st.tuples(st.tuples(EXAMPLE), st.just({})),
    st.tuples(st.tuples(st.lists(EXAMPLE, max_size=3)), st.just({})),
    st.tuples(st.tuples(TEXT, TEXT), st.just({})),
    st.tuples(st.tuples(st.one_of(JUNK, st.fixed_dictionaries({"question": JUNK, "context": TEXT}))), st.just({})),
)
QUESTION_ANSWERING_ARGUMENTS = keyword_arguments({
    "top_k": ([None, 1, 2, 3], [0, -1, 1.5]),
    "topk": ([None, 2], []),
    "doc_stride": ([None, 0, 16, 64], [128, 200, -1]),
    "max_answer_len": ([None, 1, 15, 30], [0, -1]),
    "max_seq_len": ([None, 32, 64, 128], [129, 384, 0]),
    "max_question_len": ([None, 8, 64], []),
    "handle_impossible_answer": ([None, True, False], []),
    "align_to_words": ([None, True, False], []),
    "padding": ([None, True, False, "longest", "do_not_pad"], ["bad"]),
    "batch_size": BATCH_SIZE,
})


@SETTINGS
@given(call=QUESTION_ANSWERING_CALLS, kwargs=QUESTION_ANSWERING_ARGUMENTS)
def test_question_answering(reader, call, kwargs):
    args, named = call
    check_call("question-answering", *reader, args, {**named, **kwargs})
