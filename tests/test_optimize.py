"""``--optimize`` requests refused before work; attention shapes read from each config style.
(The fused graphs themselves are exported, validated and run in tests/test_variants.py.)"""

from __future__ import annotations

import dataclasses

import pytest

from edgeformers.exporter.optimize import attention_shape, check_optimize
from edgeformers.models import FAMILIES
from edgeformers.models.errors import InputError, UnsupportedTaskError


def test_levels_a_family_cannot_take_are_refused():
    no_fusions = dataclasses.replace(FAMILIES["bert"], optimizer_model_type=None)
    with pytest.raises(UnsupportedTaskError, match="it takes --optimize O1"):
        check_optimize(no_fusions, "O2")
    check_optimize(no_fusions, "O1")
    with pytest.raises(InputError, match="expected one of O1, O2, O3"):
        check_optimize(FAMILIES["bert"], "O4")


def test_attention_shape_reads_bert_and_distilbert_configs():
    assert attention_shape({"num_attention_heads": 12, "hidden_size": 384}) == (12, 384)
    assert attention_shape({"n_heads": 12, "dim": 768}) == (12, 768)
    assert attention_shape({}) == (0, 0)  # onnxruntime reads them off the graph
