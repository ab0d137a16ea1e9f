"""Pipelines are safe to share between threads: 8 threads call all six pipelines at once
with mixed inputs and arguments (truncation limits, batch sizes, strides, windows), and
every result equals the result of the same call made alone, serially."""

from __future__ import annotations

import random
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from edgeformers.runtime import pipeline
from tests.parity import plain

THREADS = 8
ROUNDS = 3
NLI = ["contradiction", "neutral", "entailment"]
TEXTS = [f"sentence number {i} with some words {'x' * i}" for i in range(12)] + [
    "The cat likes the red ball.", "My friend Wolfgang lives in Berlin.", "東京は日本の首都です 🙂", "",
]
LONG = " ".join(["Angela Merkel met Emmanuel Macron in Paris at the Élysée Palace on Tuesday."] * 12)

#: task -> (head, checkpoint kwargs, calls as (args, kwargs))
CALLS: dict[str, tuple[str, dict[str, Any], list[tuple[tuple[Any, ...], dict[str, Any]]]]] = {
    "text-classification": ("sequence-classification", {}, [
        ((TEXTS,), {}), ((TEXTS[3],), {"top_k": None}), ((TEXTS,), {"max_length": 5, "batch_size": 3}),
        (([LONG, TEXTS[0]],), {"max_length": 9}), (({"text": TEXTS[1], "text_pair": TEXTS[2]},), {"top_k": 1}),
        ((TEXTS[:5],), {"function_to_apply": "sigmoid", "return_all_scores": True}),
    ]),
    "feature-extraction": ("base", {}, [
        ((TEXTS,), {}), ((TEXTS[:4],), {"pooling": "mean", "normalize": True, "batch_size": 2}),
        (([LONG, "short"],), {"tokenize_kwargs": {"max_length": 7}}), ((LONG,), {"pooling": "cls"}),
    ]),
    "zero-shot-classification": ("sequence-classification", {"labels": NLI}, [
        ((TEXTS[:6], ["sports", "food", "travel"]), {}),
        ((LONG,), {"candidate_labels": "politics, art", "multi_label": True}),
        ((TEXTS[12:15],), {"candidate_labels": ["cats"], "hypothesis_template": "It is about {}.", "batch_size": 1}),
    ]),
    "fill-mask": ("masked-lm", {}, [
        ((["The [MASK] likes the red ball.", "[MASK] friend lives in [MASK]."],), {}),
        (("a [MASK] day",), {"top_k": 2, "targets": ["the", "cat", "ball"]}),
        (("[MASK] " + LONG,), {"tokenizer_kwargs": {"truncation": True, "max_length": 20}}),
    ]),
    "token-classification": ("token-classification", {}, [
        ((TEXTS,), {}), ((LONG,), {"aggregation_strategy": "max", "stride": 16}),
        ((TEXTS[:6],), {"aggregation_strategy": "simple", "batch_size": 4}),
        (([["Wolfgang", "lives", "in", "Berlin"]],), {"is_split_into_words": True, "aggregation_strategy": "first"}),
    ]),
    "question-answering": ("question-answering", {}, [
        ((), {"question": "Who met Macron?", "context": LONG, "doc_stride": 32, "top_k": 2}),
        ((), {"question": ["Where?", "Who?"], "context": [TEXTS[13], TEXTS[12]]}),
        (({"question": "Who lives in Berlin?", "context": TEXTS[13]},), {"handle_impossible_answer": True}),
        ((), {"question": "Who?", "context": LONG, "max_seq_len": 64, "doc_stride": 16, "batch_size": 3}),
    ]),
}


@pytest.fixture(scope="module")
def pipelines(bundle_factory):
    loaded = {}
    for task, (head, kwargs, _) in CALLS.items():
        _, bundle = bundle_factory("bert", head, task, dtypes=("fp32",), **kwargs)
        loaded[task] = pipeline(task, bundle, device="cpu")
    return loaded


def test_eight_threads_on_all_six_pipelines_match_serial_calls(pipelines):
    calls = [(task, args, kwargs) for task, (_, _, items) in CALLS.items() for args, kwargs in items]
    serial = [plain(pipelines[task](*args, **kwargs)) for task, args, kwargs in calls]
    order = [index for _ in range(ROUNDS) for index in range(len(calls))]
    random.Random(0).shuffle(order)
    start = threading.Barrier(THREADS)
    seen: set[int] = set()

    def call(index: int) -> Any:
        if threading.get_ident() not in seen:  # every worker starts at the same moment
            seen.add(threading.get_ident())
            start.wait(timeout=60)
        task, args, kwargs = calls[index]
        return plain(pipelines[task](*args, **kwargs))

    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        got = list(pool.map(call, order))
    assert len(seen) == THREADS
    mismatches = [calls[index][:1] + (calls[index][2],) for index, result in zip(order, got) if result != serial[index]]
    assert not mismatches, f"{len(mismatches)} of {len(order)} concurrent calls differ from serial: {mismatches[:3]}"


def test_truncation_settings_are_built_once_and_never_mutated(pipelines):
    """Mixed truncation limits from 8 threads: each call gets its own limit."""
    clf = pipelines["text-classification"]
    limits = [5, 9, 5, 9, 7, 7, 12, 3] * 4
    with ThreadPoolExecutor(max_workers=THREADS) as pool:
        lengths = list(pool.map(lambda n: len(clf.tokenizer.encode([TEXTS[-2] * 3], max_length=n)[0].ids), limits))
    assert lengths == limits
