"""feature-extraction: token hidden states as transformers returns them, or pooled sentence
embeddings (``pooling``/``normalize``, as transformers.js and sentence-transformers offer)."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeformers.models.errors import InputError
from edgeformers.runtime.pipelines.base import (
    Pipeline,
    check_count,
    check_fits,
    check_padding,
    chunks,
    text_batch,
    truncation_strategy,
)

_UNSET: Any = object()
POOLINGS = ("none", "mean", "cls", "max")
TOKENIZE_KWARGS = ("truncation", "max_length", "padding")


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
        return_tensors: bool | None = None,
        truncation: bool | str | None = None,
        tokenize_kwargs: dict[str, Any] | None = None,
        batch_size: int | None = None,
    ) -> Any:
        """Without pooling (a plain checkpoint's default): per text, the hidden states as
        ``[[token_vector, ...]]`` — transformers' ``(1, tokens, hidden)`` nesting. With
        ``pooling`` ("mean", "cls", "max"): one vector per text. ``return_tensors=True``
        gives numpy arrays instead of lists. ``truncation`` (default True) and
        ``tokenize_kwargs`` (``truncation``, ``max_length``, ``padding``) as transformers takes them."""
        texts, single = text_batch(inputs)
        truncate, max_length = _tokenize_options(truncation, tokenize_kwargs)
        defaults = self.sentence_defaults
        if pooling is _UNSET:
            pooling = defaults.get("pooling", "none")
            default_length = defaults.get("max_length")
        else:
            default_length = defaults.get("max_length") if pooling == defaults.get("pooling") else None
        max_length = max_length or default_length
        pooling = "none" if pooling is None else pooling
        if not isinstance(pooling, str) or pooling not in POOLINGS:
            raise InputError(f"pooling {pooling!r} is unknown; expected one of {', '.join(POOLINGS)}")
        if normalize is None:
            normalize = bool(defaults.get("normalize")) and pooling != "none"
        if not isinstance(normalize, bool):
            raise InputError(f"normalize must be True or False, got {normalize!r}")
        return_tensors = False if return_tensors is None else return_tensors
        if not isinstance(return_tensors, bool):
            raise InputError(f"return_tensors must be True or False, got {return_tensors!r}")
        if pooling == "none":
            results: list[Any] = []
            for part in chunks(len(texts), batch_size):
                hidden, mask = self._hidden(texts[part], truncate, max_length)
                for row, row_mask in zip(hidden, mask):
                    states = row[row_mask.astype(bool)]
                    states = _l2_normalize(states) if normalize else states
                    results.append(states[None] if return_tensors else states[None].tolist())
            return results[0] if single else results
        vectors = self.embed(texts, pooling, normalize, truncate, max_length, batch_size)
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
        encodings = self.tokenizer.encode(texts, truncation=truncation, max_length=max_length)
        if not truncation:
            check_fits(encodings, self.tokenizer.max_length)
        batch = self.tokenizer.pad(encodings)
        output = self.model.run(batch.feed(), [self.model.output_names[0]])
        return next(iter(output.values())).astype(np.float32), batch.attention_mask


def _tokenize_options(truncation: Any, tokenize_kwargs: Any) -> tuple[bool, int | None]:
    """``(truncate, max_length)`` from transformers' ``truncation`` and ``tokenize_kwargs``;
    as in transformers, ``truncation`` may not be given both ways."""
    if tokenize_kwargs is not None and not isinstance(tokenize_kwargs, dict):
        raise InputError(f"tokenize_kwargs is {tokenize_kwargs!r}; expected a dict such as {{'truncation': True}}")
    options = dict(tokenize_kwargs or {})
    unknown = sorted(map(str, set(options) - set(TOKENIZE_KWARGS)))
    if unknown:
        raise InputError(f"tokenize_kwargs {unknown} are not supported; the runtime takes {list(TOKENIZE_KWARGS)}")
    if truncation is not None:
        if "truncation" in options:
            raise InputError("truncation is given twice (as an argument and in tokenize_kwargs); pass it once")
        options["truncation"] = truncation
    check_padding(options.get("padding", False))
    check_count("max_length", options.get("max_length"))
    strategy = truncation_strategy(options.get("truncation", True))
    return strategy is not None, options.get("max_length")


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
