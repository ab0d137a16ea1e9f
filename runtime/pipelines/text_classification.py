"""text-classification / sentiment-analysis, with transformers' arguments and outputs."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeformers.models.errors import InputError
from edgeformers.runtime.pipelines.base import (
    Pipeline,
    check_top_k,
    chunks,
    sigmoid,
    softmax,
)

_UNSET: Any = object()
_FUNCTIONS = {"softmax": softmax, "sigmoid": sigmoid, "none": lambda x: x}


class TextClassificationPipeline(Pipeline):
    task = "text-classification"

    def default_function(self) -> str:
        """The activation transformers picks from the config's ``problem_type``."""
        problem_type = self.bundle.manifest.processing.get("problem_type")
        num_labels = len(self.labels)
        if problem_type == "regression":
            return "none"
        if problem_type == "multi_label_classification" or num_labels == 1:
            return "sigmoid"
        if problem_type == "single_label_classification" or num_labels > 1:
            return "softmax"
        return "none"

    def logits(self, texts: list[str], pairs: list[str] | None = None, truncation: bool = True,
               batch_size: int | None = None) -> np.ndarray:
        rows = []
        for part in chunks(len(texts), batch_size):
            batch = self.tokenizer(texts[part], None if pairs is None else pairs[part], truncation=truncation)
            rows.append(self.model.run(batch.feed(), ["logits"])["logits"])
        return np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, len(self.labels)), np.float32)

    def __call__(
        self,
        inputs: Any,
        top_k: Any = _UNSET,
        function_to_apply: str | None = None,
        truncation: bool = True,
        batch_size: int | None = None,
    ) -> Any:
        """Like transformers: without ``top_k`` a string gives ``[{label, score}]`` (the
        best label), a list gives one such dict per text; with ``top_k`` (None = all)
        each text gets a sorted list."""
        legacy = top_k is _UNSET
        if not legacy:
            check_top_k(top_k)
        texts, pairs, single = _text_inputs(inputs)
        function = (function_to_apply or self.default_function())
        function = getattr(function, "value", function)  # accept transformers' ClassificationFunction
        try:
            activate = _FUNCTIONS[str(function).lower()]
        except KeyError:
            raise InputError(
                f"function_to_apply {function_to_apply!r} is unknown; expected 'softmax', 'sigmoid' or 'none'"
            ) from None
        scores = activate(self.logits(texts, pairs, truncation, batch_size))
        results = [self._postprocess(row, None if legacy else top_k, legacy) for row in scores]
        if single:
            # transformers wraps a lone string's best label in a list, but not a lone pair
            return [results[0]] if legacy and isinstance(inputs, str) else results[0]
        return results

    def _postprocess(self, scores: np.ndarray, top_k: int | None, legacy: bool) -> Any:
        if legacy:
            best = int(scores.argmax())
            return {"label": self.label(best), "score": float(scores[best])}
        ranked = sorted(
            ({"label": self.label(i), "score": float(s)} for i, s in enumerate(scores)),
            key=lambda item: item["score"],
            reverse=True,
        )
        return ranked if top_k is None else ranked[:top_k]


def _text_inputs(inputs: Any) -> tuple[list[str], list[str] | None, bool]:
    """Strings, ``{"text", "text_pair"}`` dicts, or a list of either (not mixed)."""
    single = isinstance(inputs, (str, dict))
    items = [inputs] if single else inputs
    if not isinstance(items, (list, tuple)):
        raise InputError(f"inputs is {type(inputs).__name__}; expected a string, a dict or a list of them")
    texts: list[str] = []
    pairs: list[str | None] = []
    for index, item in enumerate(items):
        if isinstance(item, dict):
            text, pair = item.get("text"), item.get("text_pair")
            if not isinstance(text, str) or not isinstance(pair, (str, type(None))):
                raise InputError(f"inputs[{index}] is {item!r}; expected {{'text': str, 'text_pair': str}}")
            texts.append(text)
            pairs.append(pair)
        elif isinstance(item, str):
            texts.append(item)
            pairs.append(None)
        else:
            raise InputError(f"inputs[{index}] is {type(item).__name__}; expected a string")
    given = [pair for pair in pairs if pair is not None]
    if not given:
        return texts, None, single
    if len(given) != len(texts):
        raise InputError("inputs mixes plain strings and text pairs; pass one kind per call")
    return texts, given, single
