"""text-classification / sentiment-analysis, with transformers' arguments and outputs."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from edgeformers.models.errors import InputError
from edgeformers.runtime.pipelines.base import (
    Pipeline,
    check_count,
    check_fits,
    check_padding,
    check_text,
    check_top_k,
    chunks,
    sigmoid,
    softmax,
    truncation_strategy,
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

    def logits(self, texts: list[str], pairs: list[str | None] | None = None, truncation: Any = None,
               batch_size: int | None = None, max_length: int | None = None, padding: Any = False) -> np.ndarray:
        check_count("max_length", max_length)
        if truncation is None:
            # transformers' default: truncate to max_length only when not padding (then
            # max_length is the padding width); the model maximum always, where
            # transformers would fail inside the model instead.
            truncation = True
            if padding not in (False, "do_not_pad"):
                max_length = None
        strategy = truncation_strategy(truncation)
        encodings = self.tokenizer.encode(texts, pairs, truncation=strategy is not None, max_length=max_length,
                                          strategy=strategy or "longest_first")
        check_fits(encodings, self.tokenizer.max_length)
        rows = []
        for part in chunks(len(texts), batch_size):
            batch = self.tokenizer.pad(encodings[part])
            rows.append(self.model.run(batch.feed(), ["logits"])["logits"])
        return np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, len(self.labels)), np.float32)

    def __call__(
        self,
        inputs: Any,
        top_k: Any = _UNSET,
        function_to_apply: str | None = None,
        return_all_scores: bool | None = None,
        truncation: bool | str | None = None,
        padding: bool | str = False,
        max_length: int | None = None,
        batch_size: int | None = None,
    ) -> Any:
        """Like transformers: without ``top_k`` a string gives ``[{label, score}]`` (the
        best label), a list gives one such dict per text; with ``top_k`` (None = all)
        each text gets a sorted list. The deprecated ``return_all_scores=True`` gives every
        label in label order, nested as transformers nests it (``[[...]]`` for a string).
        ``truncation``/``max_length``/``padding`` as transformers' tokenizer takes them,
        except that by default an input over the model maximum is truncated to it (where
        transformers fails); batches are always padded per batch, behind the mask."""
        legacy = top_k is _UNSET
        if not legacy:
            check_top_k(top_k)
        elif return_all_scores is not None:
            if not isinstance(return_all_scores, bool):
                raise InputError(f"return_all_scores must be True or False, got {return_all_scores!r}")
            warnings.warn("return_all_scores is deprecated (as in transformers); use top_k=None for all labels",
                          FutureWarning, stacklevel=3)
        all_scores = legacy and bool(return_all_scores)
        check_padding(padding)
        texts, pairs, single = _text_inputs(inputs)
        function = (function_to_apply or self.default_function())
        function = getattr(function, "value", function)  # accept transformers' ClassificationFunction
        try:
            activate = _FUNCTIONS[str(function).lower()]
        except KeyError:
            raise InputError(
                f"function_to_apply {function_to_apply!r} is unknown; expected 'softmax', 'sigmoid' or 'none'"
            ) from None
        scores = activate(self.logits(texts, pairs, truncation, batch_size, max_length, padding))
        results = [self._postprocess(row, None if legacy else top_k, legacy, all_scores) for row in scores]
        if single:
            # transformers wraps a lone string's legacy result in a list, but not a lone pair
            return [results[0]] if legacy and isinstance(inputs, str) else results[0]
        return results

    def _postprocess(self, scores: np.ndarray, top_k: int | None, legacy: bool, all_scores: bool) -> Any:
        labelled = [{"label": self.label(i), "score": float(s)} for i, s in enumerate(scores)]
        if all_scores:
            return labelled
        if legacy:
            best = int(scores.argmax())
            return {"label": self.label(best), "score": float(scores[best])}
        ranked = sorted(labelled, key=lambda item: item["score"], reverse=True)
        return ranked if top_k is None else ranked[:top_k]


def _text_inputs(inputs: Any) -> tuple[list[str], list[str | None] | None, bool]:
    """Strings, ``{"text", "text_pair"}`` dicts, or a list of either. As in transformers'
    tokenizer, an empty ``text_pair`` is no pair."""
    single = isinstance(inputs, (str, dict))
    items = [inputs] if single else inputs
    if not isinstance(items, (list, tuple)):
        raise InputError(f"inputs is {type(inputs).__name__}; expected a string, a dict or a list of them")
    texts: list[str] = []
    pairs: list[str | None] = []
    for index, item in enumerate(items):
        where = "inputs" if single else f"inputs[{index}]"
        if isinstance(item, dict):
            text, pair = item.get("text"), item.get("text_pair")
            unknown = sorted(map(str, set(item) - {"text", "text_pair"}))
            if not isinstance(text, str) or not isinstance(pair, (str, type(None))) or unknown:
                raise InputError(f"{where} is {item!r}; expected {{'text': str, 'text_pair': str}}")
            texts.append(check_text(text, f"{where}['text']"))
            pairs.append(check_text(pair, f"{where}['text_pair']") if pair else None)
        elif isinstance(item, str):
            texts.append(check_text(item, where))
            pairs.append(None)
        else:
            raise InputError(f"{where} is {type(item).__name__}; expected a string or a {{'text', 'text_pair'}} dict")
    return texts, pairs if any(pair is not None for pair in pairs) else None, single
