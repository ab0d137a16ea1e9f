"""The catalog is complete and consistent: every family names known tasks, every task
the catalog offers has a runtime pipeline, and aliases resolve as transformers'."""

import pytest

from edgeformers.models import (
    FAMILIES,
    TASKS,
    UnsupportedTaskError,
    family_for,
    resolve_task,
)
from edgeformers.models.dtypes import DTYPES, onnx_file_name, parse_onnx_file_name
from edgeformers.models.errors import InputError
from edgeformers.models.families import Family, _register, check_supports
from edgeformers.runtime.pipelines import PIPELINES, pipeline_class


def test_every_family_names_only_known_tasks_and_unique_model_types():
    seen: set[str] = set()
    for family in FAMILIES.values():
        assert family.tasks <= set(TASKS), family.name
        assert not seen & set(family.model_types), family.name
        seen |= set(family.model_types)
        assert family.atol > 0


def test_every_task_has_a_runtime_pipeline_class():
    for task in TASKS:
        assert task in PIPELINES, f"catalog task {task} has no runtime pipeline"
        assert pipeline_class(task).task == task, f"{task} is served by the {pipeline_class(task).task} pipeline"
    assert len({pipeline_class(task) for task in TASKS}) == len(TASKS), "two tasks share one pipeline class"


@pytest.mark.parametrize(
    "alias, task",
    [("sentiment-analysis", "text-classification"), ("ner", "token-classification"),
     ("feature-extraction", "feature-extraction"), ("translation_en_to_fr", "translation"),
     ("translation_en-US_to_zh", "translation")],
)
def test_aliases_resolve_like_transformers(alias, task):
    assert resolve_task(alias).name == task


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(UnsupportedTaskError, match="unknown task 'sentiment'.*text-classification"):
        resolve_task("sentiment")


def test_family_lookup_and_task_support_errors():
    assert family_for("xlm-roberta").name == "roberta"
    with pytest.raises(UnsupportedTaskError, match="'reformer' is not in the catalog"):
        family_for("reformer")
    with pytest.raises(UnsupportedTaskError, match="'gpt2' .*cannot do 'fill-mask'.*text-generation"):
        check_supports("gpt2", "fill-mask")
    FAMILIES["limited"] = Family("limited", ("limited-arch",), frozenset({"text-classification"}))
    try:
        with pytest.raises(UnsupportedTaskError, match="cannot do 'fill-mask'"):
            check_supports("limited-arch", "fill-mask")
    finally:
        del FAMILIES["limited"]


def test_registering_a_family_twice_or_with_unknown_tasks_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        _register(Family("bert-again", ("bert",), frozenset({"text-classification"})))
    with pytest.raises(ValueError, match="unknown tasks"):
        _register(Family("odd", ("odd-arch",), frozenset({"not-a-task"})))
    assert "odd" not in FAMILIES


def test_adding_a_bert_like_family_is_one_call():
    family = _register(Family("toy-bert", ("toy-bert",), FAMILIES["bert"].tasks))
    try:
        assert check_supports("toy-bert", "question-answering") is family
    finally:
        del FAMILIES["toy-bert"]


def test_dtype_file_names_follow_transformers_js():
    assert onnx_file_name("model", "fp32") == "model.onnx"
    assert onnx_file_name("model", "q8") == "model_quantized.onnx"
    assert onnx_file_name("decoder_model_merged", "q4f16") == "decoder_model_merged_q4f16.onnx"
    for name in DTYPES:
        assert parse_onnx_file_name(onnx_file_name("model", name), ("model",)) == ("model", name)
    assert parse_onnx_file_name("model_other.onnx", ("model",)) is None
    with pytest.raises(InputError, match="unknown dtype 'int3'.*fp32"):
        onnx_file_name("model", "int3")


def test_length_batches_cap_rows_and_padding():
    from edgeformers.runtime.pipelines.base import length_batches

    assert list(length_batches([384, 265, 384, 384], 16)) == [[0, 2, 3], [1]]  # the short window alone
    assert list(length_batches([10, 9, 10, 8, 10], 2)) == [[0, 2], [4, 1], [3]]
    assert list(length_batches([24, 14, 20], 16)) == [[0, 2, 1]]  # a few pad tokens: one run
    assert sorted(i for batch in length_batches(list(range(1, 40)), 8) for i in batch) == list(range(39))
    with pytest.raises(InputError, match="batch_size"):
        list(length_batches([1], -1))
