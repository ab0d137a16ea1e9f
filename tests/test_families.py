"""Every cell of the README's family × task table is exported and checked: a tiny checkpoint
of each family with each task's head goes through ``edgeformers export`` (fp32 only, to keep
the suite short; the variants have their own tests) and matches ``transformers.pipeline`` on
the same checkpoint — labels, tokens, answers and entities exactly, scores within 1e-4."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import transformers
from click.testing import CliRunner

from edgeformers.models import FAMILIES
from edgeformers.runtime import pipeline
from edgeformers.runtime.cli import cli
from tests.fixtures.checkpoints import ARCHS

ATOL = 1e-4
TEXTS = ["hello world", "  Café in Zürich 🙂 ", "a longer sentence about nothing much " * 6]
NLI = ["contradiction", "neutral", "entailment"]
MASKED = ["the cat likes {m} every day!", "I had a café au lait in {m}."]
QA = [
    {"question": "Where does Wolfgang live?", "context": "My name is Wolfgang and I live in Berlin."},
    {"question": "How much is the café?", "context": "Café au lait in Zürich costs 4,50 € à la carte."},
]
NER = ["My name is Wolfgang and I live in Berlin.", "  Café au lait in Zürich, naïve résumé  "]
LABELS = ["sports", "politics", "animals", "food"]


def _same_ranked(ours: list[dict[str, Any]], theirs: list[dict[str, Any]]) -> None:
    """Ranked results: the score of each rank within ATOL, every other key exact. Ranks
    whose reference scores tie within float noise may come in either order."""
    assert len(ours) == len(theirs), (ours, theirs)
    for got, want in zip(ours, theirs):
        assert set(got) == set(want), (got, want)
        assert type(got["score"]) is float
        assert got["score"] == pytest.approx(float(want["score"]), abs=ATOL), (got, want)
    rest = lambda items: [{k: v for k, v in item.items() if k != "score"} for item in items]  # noqa: E731
    if rest(ours) != rest(theirs):
        key = lambda item: (round(float(item["score"]), 5), repr(sorted(item.items())))  # noqa: E731
        assert rest(sorted(ours, key=key)) == rest(sorted(theirs, key=key)), (ours, theirs)


def _text_classification(ours: Any, theirs: Any) -> None:
    for got, want in zip(ours(TEXTS, top_k=None), theirs(TEXTS, top_k=None), strict=True):
        _same_ranked(got, want)


def _zero_shot(ours: Any, theirs: Any) -> None:
    for multi_label in (False, True):
        got_all = ours(TEXTS, candidate_labels=LABELS, multi_label=multi_label)
        want_all = theirs(TEXTS, candidate_labels=LABELS, multi_label=multi_label)
        for got, want in zip(got_all, want_all, strict=True):
            assert got["sequence"] == want["sequence"]
            _same_ranked([{"label": label, "score": score} for label, score in zip(got["labels"], got["scores"])],
                         [{"label": label, "score": score} for label, score in zip(want["labels"], want["scores"])])


def _feature_extraction(ours: Any, theirs: Any) -> None:
    for got, want in zip(ours(TEXTS), theirs(TEXTS, truncation=True), strict=True):
        assert np.asarray(got).shape == np.asarray(want).shape
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=ATOL)


def _fill_mask(ours: Any, theirs: Any) -> None:
    assert ours.mask_token == theirs.tokenizer.mask_token
    texts = [text.format(m=ours.mask_token) for text in MASKED]
    for got, want in zip(ours(texts, top_k=3), theirs(texts, top_k=3), strict=True):
        _same_ranked(got, want)


def _token_classification(ours: Any, theirs: Any) -> None:
    for strategy in ("none", "simple"):
        for text in NER:
            got, want = ours(text, aggregation_strategy=strategy), theirs(text, aggregation_strategy=strategy)
            assert len(got) == len(want), (got, want)
            for a, b in zip(got, want):
                assert list(a) == list(b), (a, b)
                assert a["score"] == pytest.approx(float(b["score"]), abs=ATOL), (a, b)
                assert {k: v for k, v in a.items() if k != "score"} == {k: v for k, v in b.items() if k != "score"}


def _question_answering(ours: Any, theirs: Any) -> None:
    for example in QA:
        got, want = ours(example, top_k=2), theirs(example, top_k=2)
        # Both give a dict instead of a list when only one answer is left.
        got, want = (got if isinstance(got, list) else [got]), (want if isinstance(want, list) else [want])
        _same_ranked(got, want)
        assert all(example["context"][a["start"]:a["end"]] == a["answer"] for a in got)


def _text_generation(ours: Any, theirs: Any) -> None:
    for text in TEXTS:
        assert ours(text, do_sample=False, max_new_tokens=8) == theirs(text, do_sample=False, max_new_tokens=8)


#: task -> (checkpoint head, checkpoint kwargs, comparison of our pipeline with transformers')
CELLS: dict[str, tuple[str, dict[str, Any], Callable[[Any, Any], None]]] = {
    "text-classification": ("sequence-classification", {}, _text_classification),
    "zero-shot-classification": ("sequence-classification", {"labels": NLI}, _zero_shot),
    "feature-extraction": ("base", {}, _feature_extraction),
    "fill-mask": ("masked-lm", {}, _fill_mask),
    "token-classification": ("token-classification", {}, _token_classification),
    "question-answering": ("question-answering", {}, _question_answering),
    "text-generation": ("causal-lm", {}, _text_generation),
}


#: Families whose tiny checkpoints and per-task transformers parity tests live in their own
#: module (image models: no tokenizer, an image processor): family -> that test module, which
#: lists the family in its ``ARCHS`` and exports each through the CLI.
TESTED_ELSEWHERE: dict[str, str] = {
    "vit": "tests.test_image_classification",
    "deit": "tests.test_image_classification",
    "convnext": "tests.test_image_classification",
    "detr": "tests.test_object_detection",
    "vision-encoder-decoder": "tests.test_image_to_text",
    "wav2vec2": "tests.test_speech_recognition_ctc",  # and tests.test_audio_classification
    "hubert": "tests.test_speech_recognition_ctc",
    "ast": "tests.test_audio_classification",
    "bart": "tests.test_seq2seq",
    "t5": "tests.test_seq2seq",
    "mbart": "tests.test_seq2seq",
    "marian": "tests.test_seq2seq",
    "whisper": "tests.test_whisper",
}


def test_every_family_has_a_fixture():
    assert set(FAMILIES) - set(TESTED_ELSEWHERE) <= set(ARCHS), "add a tiny checkpoint recipe for each catalog family"


def test_families_tested_elsewhere_are_in_their_modules():
    import importlib

    for family, module in TESTED_ELSEWHERE.items():
        assert family in FAMILIES, family
        assert family in importlib.import_module(module).ARCHS, (family, module)


def test_every_catalog_task_of_every_family_has_a_cell():
    tasks = {task for name, family in FAMILIES.items() if name not in TESTED_ELSEWHERE for task in family.tasks}
    assert tasks <= set(CELLS)


#: every (family, task) the catalog offers: the README's table, cell by cell
PAIRS = [(family, task) for family in sorted(FAMILIES) if family not in TESTED_ELSEWHERE
         for task in sorted(FAMILIES[family].tasks)]


@pytest.mark.filterwarnings("ignore:Tokenizer does not support real words:UserWarning")  # transformers, per token
@pytest.mark.filterwarnings("ignore:Passing a list of SQuAD examples:FutureWarning")
@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # numpy 2 on transformers' QA
@pytest.mark.parametrize("family, task", PAIRS)
def test_family_exports_and_matches_transformers(bundle_factory, family, task):
    head, kwargs, check_same = CELLS[task]
    # text-classification shares the fp32+q8 bundles other tests export; the rest need fp32 only.
    dtypes = ("fp32", "q8") if task == "text-classification" else ("fp32",)
    checkpoint, bundle = bundle_factory(family, head, task, dtypes=dtypes, **kwargs)
    theirs = transformers.pipeline(task, model=str(checkpoint))
    check_same(pipeline(task, bundle, device="cpu"), theirs)  # asserts per task, see CELLS


def test_a_task_the_exporter_cannot_make_is_refused_before_any_work(checkpoint_factory, tmp_path):
    """optimum-onnx has no ModernBERT question-answering export, so the catalog leaves it out
    and ``export`` says so in one line instead of failing inside optimum."""
    checkpoint = checkpoint_factory("modernbert", "question-answering")
    result = CliRunner().invoke(cli, ["export", str(checkpoint), str(tmp_path / "out"), "--task", "question-answering"])
    assert result.exit_code == 1
    assert "UnsupportedTaskError: architecture 'modernbert' (modernbert family) cannot do 'question-answering'" in (
        result.output
    )
    assert not (tmp_path / "out").exists()
