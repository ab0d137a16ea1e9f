"""Parity: feature-extraction token states against transformers.pipeline, and pooled
sentence embeddings against the PyTorch model pooled by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from edgeformers.runtime import InputError, pipeline

TEXTS = ["hello world", "  Café à Zürich  ", "東京は日本の首都です 🙂", "a " * 300, ""]


@pytest.fixture(scope="module", params=["bert", "roberta"])
def pair(request, bundle_factory):
    checkpoint, bundle = bundle_factory(request.param, "base", "feature-extraction")
    return checkpoint, pipeline("feature-extraction", bundle)


def test_token_states_match_transformers(pair):
    checkpoint, ours = pair
    theirs = transformers.pipeline("feature-extraction", model=str(checkpoint))
    for text in TEXTS:
        want = np.asarray(theirs(text, truncation=True))
        got = ours(text)
        assert isinstance(got, list) and isinstance(got[0][0][0], float)
        assert np.asarray(got).shape == want.shape
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-4)
    batch = ours(TEXTS)
    expected = theirs(TEXTS, truncation=True)
    assert len(batch) == len(expected)
    for got, want in zip(batch, expected):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-4)


def test_return_tensors_gives_numpy(pair):
    _, ours = pair
    states = ours("hello world", return_tensors=True)
    assert isinstance(states, np.ndarray) and states.ndim == 3 and states.shape[0] == 1


def _torch_pooled(checkpoint, texts, pooling):
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(checkpoint))
    model = transformers.AutoModel.from_pretrained(str(checkpoint)).eval()
    encoded = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**encoded).last_hidden_state
    if pooling == "cls":
        pooled = hidden[:, 0]
    else:
        mask = encoded["attention_mask"].unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_pooled_normalized_embeddings_match_pytorch(pair, pooling):
    checkpoint, ours = pair
    got = ours(TEXTS, pooling=pooling, normalize=True, return_tensors=True)
    want = _torch_pooled(checkpoint, TEXTS, pooling)
    np.testing.assert_allclose(got, want, atol=1e-4)
    single = ours(TEXTS[0], pooling=pooling, normalize=True)
    assert isinstance(single, list) and isinstance(single[0], float)
    np.testing.assert_allclose(single, want[0], atol=1e-4)


def test_unknown_pooling_is_refused(pair):
    _, ours = pair
    with pytest.raises(InputError, match="pooling 'sum' is unknown"):
        ours("x", pooling="sum")


def test_empty_list(pair):
    _, ours = pair
    assert ours([]) == []
