"""Every bad argument is a typed error, and transformers' own arguments for these tasks
work with transformers' semantics (checked against transformers.pipeline on the same
tiny checkpoint): unknown names, batch_size, lone surrogates, truncation=False on an
over-long input, non-finite model outputs, and the CLI's one-line errors."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import warnings

import numpy as np
import onnxruntime
import pytest
import transformers
from click.testing import CliRunner

from edgeformers.models.errors import InputError, ModelOutputError
from edgeformers.runtime import pipeline
from edgeformers.runtime.cli import cli
from tests.parity import assert_matches

NLI = ["contradiction", "neutral", "entailment"]
LONG = " ".join(["the cat likes the red ball"] * 40)  # ~240 tokens: over the 128-token maximum
TEXTS = ["The cat likes the red ball.", "My friend Wolfgang lives in Berlin.", "great"]

#: task -> (head, checkpoint kwargs, one valid call as (args, kwargs), surrogate calls
#: as (args, kwargs, the index/position the error must name))
TASKS = {
    "text-classification": ("sequence-classification", {}, ((TEXTS,), {}), [
        (("a\ud800",), {}, r"inputs has a lone surrogate '\\ud800' at position 1"),
        ((["ok", "ab\udfff"],), {}, r"inputs\[1\] has a lone surrogate '\\udfff' at position 2"),
        (({"text": "ok", "text_pair": "\ud800"},), {}, r"inputs\['text_pair'\] has a lone surrogate"),
    ]),
    "feature-extraction": ("base", {}, ((TEXTS,), {}), [
        ((["ok", "x\ud800"],), {}, r"inputs\[1\] has a lone surrogate '\\ud800' at position 1"),
    ]),
    "zero-shot-classification": ("sequence-classification", {"labels": NLI},
                                 ((TEXTS,), {"candidate_labels": ["sports", "food"]}), [
        (("a\ud800",), {"candidate_labels": ["x"]}, r"sequences has a lone surrogate '\\ud800' at position 1"),
        (("ok",), {"candidate_labels": ["x", "y\ud800"]}, r"candidate_labels\[1\] has a lone surrogate"),
        (("ok",), {"candidate_labels": "x", "hypothesis_template": "\ud800 {}"}, r"hypothesis_template has a lone"),
    ]),
    "fill-mask": ("masked-lm", {}, ((["The [MASK] likes the red ball.", "a [MASK] day"],), {}), [
        ((["[MASK] ok", "[MASK] \ud800"],), {}, r"inputs\[1\] has a lone surrogate '\\ud800' at position 7"),
        (("[MASK] ok",), {"targets": ["the", "\udfff"]}, r"targets\[1\] has a lone surrogate"),
    ]),
    "token-classification": ("token-classification", {}, ((TEXTS,), {}), [
        ((["ok", "\ud800"],), {}, r"inputs\[1\] has a lone surrogate '\\ud800' at position 0"),
        ((["ok", "x\ud800"],), {"is_split_into_words": True}, r"inputs\[0\]\[1\] has a lone surrogate"),
    ]),
    "question-answering": ("question-answering", {},
                           ((), {"question": "Who lives in Berlin?", "context": TEXTS[1]}), [
        ((), {"question": "Who?", "context": "Berlin \ud800"}, r"inputs\[0\]\['context'\] has a lone surrogate"),
    ]),
}


@pytest.fixture(scope="module", params=sorted(TASKS))
def task(request, bundle_factory):
    """(task, ours, theirs, valid call, surrogate calls)."""
    name = request.param
    head, kwargs, valid, surrogates = TASKS[name]
    checkpoint, bundle = bundle_factory("bert", head, name, dtypes=("fp32",), **kwargs)
    return name, pipeline(name, bundle, device="cpu"), transformers.pipeline(name, model=str(checkpoint)), valid, \
        surrogates


def test_unknown_argument_is_named_with_the_accepted_ones(task):
    name, ours, _, (args, kwargs), _ = task
    with pytest.raises(InputError, match=r"got unknown argument 'foo'; it accepts: .*batch_size") as raised:
        ours(*args, **kwargs, foo=1)
    assert name in str(raised.value)
    with pytest.raises(InputError, match=r"unknown arguments 'foo', 'bar'"):
        ours(*args, **kwargs, foo=1, bar=2)


@pytest.mark.parametrize("batch_size", [0, -1, 1.5, "2", True, [2]])
def test_batch_size_must_be_a_positive_int(task, batch_size):
    _, ours, _, (args, kwargs), _ = task
    with pytest.raises(InputError, match=r"batch_size must be an integer >= 1.*got " + re.escape(repr(batch_size))):
        ours(*args, **kwargs, batch_size=batch_size)


def test_batch_sizes_give_transformers_results(task):
    _, ours, theirs, (args, kwargs), _ = task
    expected = theirs(*args, **kwargs)
    for batch_size in (None, 1, 2):
        assert_matches(ours(*args, **kwargs, batch_size=batch_size), expected)
    assert_matches(ours(*args, **kwargs, num_workers=2), expected)  # transformers' DataLoader workers: no effect


def test_lone_surrogates_are_refused_with_index_and_position(task):
    """transformers' fast tokenizer raises TypeError on them; the runtime names the spot."""
    _, ours, theirs, _, surrogates = task
    with pytest.raises(TypeError):
        theirs.tokenizer("a\ud800")
    for args, kwargs, message in surrogates:
        with pytest.raises(InputError, match=message):
            ours(*args, **kwargs)


def test_missing_or_extra_positional_inputs_are_typed(task):
    name, ours, _, _, _ = task
    if name != "question-answering":  # QA takes its inputs as question=/context= too
        with pytest.raises(InputError, match="missing a required argument"):
            ours()
    extra = r"takes 1 positional argument \(inputs\) but got 3; pass the others by name: .*batch_size"
    if name == "zero-shot-classification":
        extra = "unexpected extra positional arguments"  # the labels may follow the inputs, nothing more
    elif name == "question-answering":
        extra = r"inputs\[0\] is a plain string; pass question="  # (question, context) or a list of examples
    with pytest.raises(InputError, match=extra):
        ours("a", ["b"], "c")


# --- transformers' arguments, with transformers' semantics -------------------------------

@pytest.fixture(scope="module")
def classifier(bundle_factory):
    checkpoint, bundle = bundle_factory("bert", "sequence-classification", "text-classification", dtypes=("fp32",))
    return pipeline("text-classification", bundle, device="cpu"), transformers.pipeline(
        "text-classification", model=str(checkpoint))


@pytest.mark.parametrize("inputs", [TEXTS[0], TEXTS, {"text": TEXTS[0], "text_pair": TEXTS[1]}])
@pytest.mark.parametrize("value", [True, False])
def test_return_all_scores(classifier, inputs, value):
    """Legacy: True gives every label in label order, nested [[...]] for a string."""
    ours, theirs = classifier
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = theirs(inputs, return_all_scores=value)
    with pytest.warns(FutureWarning, match="return_all_scores is deprecated"):
        got = ours(inputs, return_all_scores=value)
    assert_matches(got, expected)
    if value and isinstance(inputs, str):
        assert [item["label"] for item in got[0]] == ["NEGATIVE", "POSITIVE"]
    with pytest.raises(InputError, match="return_all_scores must be True or False"):
        ours(inputs, return_all_scores="yes")


def test_top_k_wins_over_return_all_scores(classifier):
    ours, theirs = classifier
    assert_matches(ours(TEXTS, top_k=1, return_all_scores=True), theirs(TEXTS, top_k=1, return_all_scores=True))


@pytest.mark.parametrize("kwargs", [
    {"padding": "max_length"}, {"padding": True, "max_length": 5}, {"max_length": 5},
    {"truncation": True, "max_length": 5}, {"truncation": "only_first", "max_length": 14}, {"padding": "longest"},
    {"truncation": "longest_first"}, {"truncation": False, "padding": "do_not_pad"},
])
def test_tokenizer_arguments_of_text_classification(classifier, kwargs):
    ours, theirs = classifier
    inputs = TEXTS + [{"text": TEXTS[1], "text_pair": TEXTS[0]}]
    assert_matches(ours(inputs, top_k=None, **kwargs), theirs(inputs, top_k=None, **kwargs))


@pytest.fixture(scope="module")
def extractor(bundle_factory):
    checkpoint, bundle = bundle_factory("bert", "base", "feature-extraction", dtypes=("fp32",))
    return pipeline("feature-extraction", bundle, device="cpu"), transformers.pipeline(
        "feature-extraction", model=str(checkpoint))


@pytest.mark.parametrize("kwargs", [
    {"truncation": True}, {"tokenize_kwargs": {"truncation": True}},
    {"tokenize_kwargs": {"truncation": True, "max_length": 8}}, {"tokenize_kwargs": {"max_length": 8}},
    {"truncation": True, "tokenize_kwargs": {"max_length": 12, "padding": True}},
])
def test_truncation_and_tokenize_kwargs_of_feature_extraction(extractor, kwargs):
    ours, theirs = extractor
    inputs = [LONG, TEXTS[0]]
    assert_matches(ours(inputs, **kwargs), theirs(inputs, **kwargs))


def test_feature_extraction_refuses_what_transformers_refuses(extractor):
    ours, theirs = extractor
    twice = dict(truncation=True, tokenize_kwargs={"truncation": True})
    with pytest.raises(ValueError, match="truncation parameter defined twice"):
        theirs("hello", **twice)
    with pytest.raises(InputError, match="truncation is given twice"):
        ours("hello", **twice)
    with pytest.raises(InputError, match=r"tokenize_kwargs \['stride'\] are not supported.*'max_length'"):
        ours("hello", tokenize_kwargs={"stride": 2})


def test_question_answering_deprecated_topk_and_padding(bundle_factory):
    checkpoint, bundle = bundle_factory("bert", "question-answering", "question-answering", dtypes=("fp32",))
    ours = pipeline("question-answering", bundle, device="cpu")
    theirs = transformers.pipeline("question-answering", model=str(checkpoint))
    example = dict(question="Who lives in Berlin?", context=TEXTS[1] + " " + TEXTS[0])
    with pytest.warns(FutureWarning, match="topk is deprecated"):
        got = ours(**example, topk=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert_matches(got, theirs(**example, topk=3))
    assert_matches(ours(**example, padding="longest", top_k=2), theirs(**example, padding="longest", top_k=2))


# --- over-long inputs with truncation off ---------------------------------------------------

@pytest.mark.parametrize("call", [
    lambda pipe: pipe([TEXTS[0], LONG], truncation=False),
    lambda pipe: pipe([TEXTS[0], LONG], truncation="do_not_truncate", top_k=None),
])
def test_over_long_text_classification_with_truncation_off(classifier, call):
    ours, theirs = classifier
    with pytest.raises(InputError, match=r"inputs\[1\] is 242 tokens, longer than the model's 128-token maximum"):
        call(ours)
    with pytest.raises(Exception):  # transformers runs into the position embeddings
        call(theirs)


def test_over_long_feature_extraction_with_truncation_off(extractor):
    ours, _ = extractor
    for kwargs in ({"truncation": False}, {"tokenize_kwargs": {"truncation": False}}):
        with pytest.raises(InputError, match=r"inputs\[0\] is 242 tokens, longer than the model's 128-token"):
            ours(LONG, **kwargs)


def test_over_long_fill_mask_without_truncation(bundle_factory):
    _, bundle = bundle_factory("bert", "masked-lm", "fill-mask", dtypes=("fp32",))
    ours = pipeline("fill-mask", bundle, device="cpu")
    with pytest.raises(InputError, match=r"inputs\[1\] is 243 tokens.*tokenizer_kwargs=\{\"truncation\": True\}"):
        ours(["a [MASK] day", "[MASK] " + LONG])


# --- non-finite outputs ---------------------------------------------------------------------

def _nan_graph(path):
    """A text-classification graph whose logits are 0/0 = NaN for every row."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["ids", "axes"], ["sum"], keepdims=1),
        helper.make_node("Sub", ["sum", "sum"], ["zero"]),
        helper.make_node("Div", ["zero", "zero"], ["nan"]),
        helper.make_node("Concat", ["nan", "nan"], ["logits"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "nan_classifier",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


@pytest.fixture(scope="module")
def nan_bundle(bundle_factory, tmp_path_factory):
    """A copy of the text-classification bundle whose graph answers NaN (manifest updated)."""
    _, bundle = bundle_factory("bert", "sequence-classification", "text-classification", dtypes=("fp32",))
    folder = tmp_path_factory.mktemp("nan") / "bundle"
    shutil.copytree(bundle, folder)
    graph = folder / "onnx" / "model.onnx"
    _nan_graph(graph)
    manifest_path = folder / "edgeformers.json"
    manifest = json.loads(manifest_path.read_text())
    data = graph.read_bytes()
    manifest["files"]["onnx/model.onnx"] = {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return folder


def test_non_finite_logits_raise_a_typed_error(nan_bundle):
    clf = pipeline("text-classification", nan_bundle, device="cpu")
    with pytest.raises(ModelOutputError, match=r"model.onnx: output 'logits' has 6 non-finite values"):
        clf(TEXTS)


def test_run_prints_one_error_line_never_nan(nan_bundle):
    result = CliRunner().invoke(cli, ["run", str(nan_bundle), "hello", "--device", "cpu"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [result.output.strip()]
    assert result.output.startswith("Error: ModelOutputError: model.onnx: output 'logits' has 2 non-finite")
    assert "NaN" not in result.output.replace("(NaN or inf)", "")


def test_run_refuses_infinity_that_slips_through(bundle_factory, monkeypatch):
    """Belt and braces: should a non-finite float reach the printer, it is an error line."""
    _, bundle = bundle_factory("bert", "sequence-classification", "text-classification", dtypes=("fp32",))
    monkeypatch.setattr("edgeformers.runtime.session.check_finite", lambda *args: None)
    real_run = onnxruntime.InferenceSession.run
    monkeypatch.setattr(onnxruntime.InferenceSession, "run",
                        lambda self, names, feed, *a: [np.full_like(out, np.inf) for out in real_run(self, names, feed)])
    result = CliRunner().invoke(cli, ["run", str(bundle), "hello", "-o", "function_to_apply=none", "--device", "cpu"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: ModelOutputError: the result holds a value JSON cannot carry")
    assert "Infinity" not in result.output


def test_run_unknown_option_is_one_line(bundle_factory):
    _, bundle = bundle_factory("bert", "sequence-classification", "text-classification", dtypes=("fp32",))
    result = CliRunner().invoke(cli, ["run", str(bundle), "x", "-o", "foo=1", "--device", "cpu"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "Error: InputError: text-classification got unknown argument 'foo'; it accepts: inputs, top_k, "
        "function_to_apply, return_all_scores, truncation, padding, max_length, batch_size, num_workers"
    ]


def test_onnxruntime_failures_are_typed(bundle_factory, monkeypatch):
    _, bundle = bundle_factory("bert", "sequence-classification", "text-classification", dtypes=("fp32",))
    clf = pipeline("text-classification", bundle, device="cpu")

    def fail(*args, **kwargs):
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code")

    monkeypatch.setattr(clf.model.session, "run", fail)
    with pytest.raises(ModelOutputError, match=r"model.onnx: onnxruntime failed on inputs of shapes"):
        clf("hello")
