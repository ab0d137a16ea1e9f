"""feature-extraction: token hidden states as transformers returns them, or pooled sentence
embeddings (``pooling``/``normalize``, as transformers.js and sentence-transformers offer)."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeformers.models.errors import InputError
from edgeformers.runtime.pipelines.base import Pipeline, chunks, text_batch

_UNSET: Any = object()
POOLINGS = ("none", "mean", "cls", "max")


class FeatureExtractionPipeline(Pipeline):
    task = "feature-extraction"

    @property
    def sentence_defaults(self) -> dict[str, Any]:
        """Pooling recorded from a sentence-transformers checkpoint; empty for plain models."""
        return dict(self.bundle.manifest.processing.get("sentence_embedding") or {})

    def __call__(
        self,
        inputs: Any,
        pooling: Any = _UNSET,
        normalize: bool | None = None,
        return_tensors: bool = False,
        truncation: bool = True,
        batch_size: int | None = None,
    ) -> Any:
        """Without pooling (a plain checkpoint's default): per text, the hidden states as
        ``[[token_vector, ...]]`` — transformers' ``(1, tokens, hidden)`` nesting. With
        ``pooling`` ("mean", "cls", "max"): one vector per text. ``return_tensors=True``
        gives numpy arrays instead of lists."""
        texts, single = text_batch(inputs)
        defaults = self.sentence_defaults
        if pooling is _UNSET:
            pooling = defaults.get("pooling", "none")
            max_length = defaults.get("max_length")
        else:
            max_length = defaults.get("max_length") if pooling == defaults.get("pooling") else None
        pooling = "none" if pooling is None else pooling
        if pooling not in POOLINGS:
            raise InputError(f"pooling {pooling!r} is unknown; expected one of {', '.join(POOLINGS)}")
        if normalize is None:
            normalize = bool(defaults.get("normalize")) and pooling != "none"
        if pooling == "none":
            results: list[Any] = []
            for part in chunks(len(texts), batch_size):
                hidden, mask = self._hidden(texts[part], truncation, max_length)
                for row, row_mask in zip(hidden, mask):
                    states = row[row_mask.astype(bool)] if not self.tokenizer.padding_left else row[-int(row_mask.sum()):]
                    states = _l2_normalize(states) if normalize else states
                    results.append(states[None] if return_tensors else states[None].tolist())
            return results[0] if single else results
        vectors = self.embed(texts, pooling, normalize, truncation, max_length, batch_size)
        if return_tensors:
            return vectors[0] if single else vectors
        return vectors[0].tolist() if single else vectors.tolist()

    def embed(
        self,
        texts: list[str],
        pooling: str = "mean",
        normalize: bool = True,
        truncation: bool = True,
        max_length: int | None = None,
        batch_size: int | None = None,
    ) -> np.ndarray:
        """Sentence embeddings as one ``(len(texts), hidden)`` float32 array."""
        parts = []
        for part in chunks(len(texts), batch_size):
            hidden, mask = self._hidden(texts[part], truncation, max_length)
            pooled = POOLERS[pooling](hidden, mask)
            parts.append(_l2_normalize(pooled) if normalize else pooled)
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    def _hidden(self, texts: list[str], truncation: bool, max_length: int | None) -> tuple[np.ndarray, np.ndarray]:
        batch = self.tokenizer(texts, truncation=truncation, max_length=max_length)
        output = self.model.run(batch.feed(), [self.model.output_names[0]])
        return next(iter(output.values())).astype(np.float32), batch.attention_mask


def mean_pooling(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(hidden.dtype)
    return (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)


def cls_pooling(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return hidden[:, 0]


def max_pooling(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    masked = np.where(mask[..., None].astype(bool), hidden, -1e9)
    return masked.max(axis=1)


POOLERS = {"mean": mean_pooling, "cls": cls_pooling, "max": max_pooling}


def _l2_normalize(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.clip(norms, 1e-12, None)
