"""Every architecture family the catalog lists really exports and runs: a tiny checkpoint
of each goes through the CLI and matches transformers.pipeline."""

from __future__ import annotations

import pytest
import transformers

from edgeformers.models import FAMILIES
from edgeformers.runtime import pipeline
from tests.fixtures.checkpoints import ARCHS

TEXTS = ["hello world", "  Café in Zürich 🙂 ", "a longer sentence about nothing much " * 6]


def test_every_family_has_a_fixture():
    assert set(FAMILIES) <= set(ARCHS), "add a tiny checkpoint recipe for each catalog family"


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_exports_and_matches_transformers(bundle_factory, family):
    checkpoint, bundle = bundle_factory(family, "sequence-classification", "text-classification")
    ours = pipeline("text-classification", bundle)(TEXTS, top_k=None)
    theirs = transformers.pipeline("text-classification", model=str(checkpoint))(TEXTS, top_k=None)
    for got, want in zip(ours, theirs):
        assert [r["label"] for r in got] == [r["label"] for r in want]
        assert [r["score"] for r in got] == pytest.approx([r["score"] for r in want], abs=1e-4)
