"""One pipeline shared by several threads gives the same answers as sequential calls."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from edgeformers.runtime import pipeline

TEXTS = [f"sentence number {i} with some words {'x' * i}" for i in range(24)]


def test_concurrent_calls_match_sequential(bundle_factory):
    _, bundle = bundle_factory("bert", "sequence-classification", "text-classification")
    clf = pipeline("text-classification", bundle, threads=1)
    expected = [clf(text, top_k=None) for text in TEXTS]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda t: clf(t, top_k=None), TEXTS * 3))
    assert got == expected * 3
    # Truncation settings are built once per limit, never mutated: mixed limits in parallel.
    with ThreadPoolExecutor(max_workers=4) as pool:
        lengths = list(pool.map(lambda n: len(clf.tokenizer.encode([TEXTS[-1]], max_length=n)[0].ids), [5, 9, 5, 9, 7, 7]))
    assert lengths == [5, 9, 5, 9, 7, 7]
