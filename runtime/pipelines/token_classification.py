"""token-classification / ner, with transformers' arguments and outputs.

Texts are tokenized with offsets, run in padded batches (stride windows of every text
share the batches), and each window's scores go through :mod:`entity_grouping`, which
follows transformers' ``TokenClassificationPipeline`` rule for rule.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np

from edgeformers.models.errors import InputError
from edgeformers.runtime.pipelines.base import Pipeline, check_text, length_batches, softmax
from edgeformers.runtime.pipelines.entity_grouping import (
    AGGREGATION_STRATEGIES,
    EntityGrouper,
    merge_overlapping,
    plain,
)


@dataclass
class _Text:
    """One input: the sentence entities point into, and (pre-tokenized input only) where
    each word starts in it."""

    sentence: str
    words: list[str] | None = None
    word_to_chars: list[tuple[int, int]] | None = None


class TokenClassificationPipeline(Pipeline):
    task = "token-classification"

    def prepare(self) -> None:
        self.grouper = EntityGrouper(self.tokenizer, self.label, self.tokenizer.special_token_id("unk_token"))

    def __call__(
        self,
        inputs: Any,
        aggregation_strategy: Any = None,
        ignore_labels: Any = None,
        stride: int | None = None,
        batch_size: int | None = None,
        is_split_into_words: bool = False,
        delimiter: str | None = None,
        grouped_entities: bool | None = None,
        ignore_subwords: bool | None = None,
        offset_mapping: Any = None,
    ) -> Any:
        """Entities of a text (a list of dicts), or of each text of a list.

        Without aggregation each kept token gives ``{entity, score, index, word, start,
        end}``; with ``aggregation_strategy`` "simple", "first", "average" or "max"
        adjacent tokens/words merge into ``{entity_group, score, word, start, end}``.
        ``stride`` runs texts longer than the model maximum in windows overlapping by
        ``stride`` tokens. ``is_split_into_words=True`` takes lists of words, joined
        with ``delimiter`` (default " ") for the offsets. ``offset_mapping`` (transformers'
        slow-tokenizer crutch) is refused: bundles carry a fast tokenizer with offsets.
        """
        if offset_mapping is not None:
            raise InputError("offset_mapping is not taken: bundles carry a fast tokenizer, whose own offsets are used")
        strategy, explicit = _strategy(aggregation_strategy, grouped_entities, ignore_subwords)
        ignore = _ignore_labels(ignore_labels)
        self._check_stride(stride, strategy if explicit else None)
        texts, single = _texts(inputs, is_split_into_words, " " if delimiter is None else delimiter)
        if is_split_into_words and not self._takes_word_lists:
            raise InputError(
                "is_split_into_words=True needs a byte-level tokenizer that adds a prefix space; this "
                "bundle's tokenizer.json has add_prefix_space=false: pass the text as one string instead"
            )
        windows = self._windows(texts, stride, is_split_into_words)
        scores = self._scores([window for _, window in windows], batch_size)
        results: list[list[dict[str, Any]]] = [[] for _ in texts]
        counts = [0] * len(texts)
        for (owner, window), window_scores in zip(windows, scores):
            text = texts[owner]
            entities = self.grouper.entities(text.sentence, window, window_scores, strategy, text.word_to_chars)
            results[owner].extend(
                e for e in entities if e.get("entity") not in ignore and e.get("entity_group") not in ignore
            )
            counts[owner] += 1
        results = [merge_overlapping(r) if n > 1 else r for r, n in zip(results, counts)]
        output = [[plain(entity) for entity in entities] for entities in results]
        return output[0] if single else output

    def _check_stride(self, stride: Any, explicit_strategy: str | None) -> None:
        """transformers' checks, plus the tokenizer's own limit (it panics past it)."""
        if stride is None:
            return
        if not isinstance(stride, int) or isinstance(stride, bool) or stride < 0:
            raise InputError(f"stride must be a non-negative integer (tokens of overlap), got {stride!r}")
        if explicit_strategy == "none":
            raise InputError(
                'stride was given to process the whole text but aggregation_strategy="none"; '
                'pass aggregation_strategy="simple", "first", "average" or "max"'
            )
        limit = self.tokenizer.max_length
        if limit is None:
            return
        room = limit - self.tokenizer.num_special_tokens_to_add()
        if stride >= room:
            raise InputError(
                f"stride {stride} must be less than the model's max length {limit} minus its "
                f"{limit - room} special tokens; pass stride < {room}"
            )

    @cached_property
    def _takes_word_lists(self) -> bool:
        """transformers refuses word lists for byte-level BPE tokenizers that add no prefix
        space (RoBERTa/GPT-2 by default): every word but the first would lose its ``Ġ``."""
        pre_tokenizer = self.bundle.read_json("tokenizer.json").get("pre_tokenizer") or {}
        steps = pre_tokenizer.get("pretokenizers", [pre_tokenizer]) if isinstance(pre_tokenizer, dict) else []
        return not any(
            isinstance(step, dict) and step.get("type") == "ByteLevel" and not step.get("add_prefix_space")
            for step in steps
        )

    def _windows(self, texts: list[_Text], stride: int | None, pretokenized: bool) -> list[tuple[int, Any]]:
        """``(text index, encoding)`` for every model window: the truncated text, or with
        ``stride`` the text and all its overflowing windows."""
        items: list[Any] = [t.words for t in texts] if pretokenized else [t.sentence for t in texts]
        encodings = self.tokenizer.encode(items, stride=stride or 0, is_pretokenized=pretokenized)
        windows = []
        for owner, encoding in enumerate(encodings):
            group = [encoding, *encoding.overflowing] if stride is not None else [encoding]
            self.tokenizer.pad_windows(group)
            windows.extend((owner, window) for window in group)
        return windows

    def _scores(self, encodings: list[Any], batch_size: int | None) -> list[np.ndarray]:
        """Softmaxed (tokens, labels) scores per encoding, unpadded."""
        scores: list[np.ndarray] = [np.zeros((0, 0), np.float32)] * len(encodings)
        for rows in length_batches([len(e.ids) for e in encodings], batch_size):
            batch = self.tokenizer.pad([encodings[row] for row in rows])
            if batch.input_ids.shape[1] == 0:  # nothing to run (a tokenizer adding no special tokens, "")
                continue
            logits = self.model.run(batch.feed(), ["logits"])["logits"].astype(np.float32)
            for row, row_logits in zip(rows, logits):
                scores[row] = softmax(row_logits[: len(encodings[row].ids)])
        return scores


def _strategy(value: Any, grouped_entities: bool | None, ignore_subwords: bool | None) -> tuple[str, bool]:
    """``(strategy, explicitly given)``; the deprecated flags map as in transformers."""
    if grouped_entities is not None or ignore_subwords is not None:
        if grouped_entities and ignore_subwords:
            value = "first"
        elif grouped_entities:
            value = "simple"
        else:
            value = "none"
        warnings.warn(
            f'grouped_entities/ignore_subwords are deprecated; use aggregation_strategy="{value}"',
            FutureWarning,
            stacklevel=3,
        )
    if value is None:
        return "none", False
    name = getattr(value, "value", value)  # accept transformers' AggregationStrategy
    if not isinstance(name, str) or name.lower() not in AGGREGATION_STRATEGIES:
        raise InputError(
            f"aggregation_strategy {value!r} is unknown; expected one of: {', '.join(AGGREGATION_STRATEGIES)}"
        )
    return name.lower(), True


def _ignore_labels(value: Any) -> frozenset[str]:
    if value is None:
        return frozenset({"O"})
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise InputError(f"ignore_labels is {value!r}; expected a list of labels such as ['O']")
    return frozenset(value)


def _texts(inputs: Any, pretokenized: bool, delimiter: str) -> tuple[list[_Text], bool]:
    """Parsed inputs and whether a single result (not a list of them) is returned."""
    if pretokenized:
        if not isinstance(delimiter, str):
            raise InputError(f"delimiter is {delimiter!r}; expected a string such as ' '")
        if not isinstance(inputs, (list, tuple)) or not inputs:
            raise InputError("with is_split_into_words=True, inputs must be a list of words or a list of such lists")
        # transformers wraps a lone word list in a batch of one, and so returns [[...]].
        batch = inputs if all(isinstance(item, (list, tuple)) for item in inputs) else [inputs]
        return [_split_text(words, index, delimiter) for index, words in enumerate(batch)], False
    if isinstance(inputs, str):
        return [_Text(check_text(inputs, "inputs"))], True
    if isinstance(inputs, (list, tuple)) and inputs:
        texts = []
        for index, item in enumerate(inputs):
            if not isinstance(item, str):
                hint = "; pass is_split_into_words=True for lists of words" if isinstance(item, (list, tuple)) else ""
                raise InputError(f"inputs[{index}] is {type(item).__name__}; expected a string{hint}")
            texts.append(_Text(check_text(item, f"inputs[{index}]")))
        return texts, False
    raise InputError(f"inputs is {inputs!r}; expected a string or a non-empty list of strings")


def _split_text(words: Any, index: int, delimiter: str) -> _Text:
    if not isinstance(words, (list, tuple)) or not all(isinstance(word, str) for word in words):
        raise InputError(f"inputs[{index}] is {words!r}; with is_split_into_words=True expected a list of strings")
    for position, word in enumerate(words):
        check_text(word, f"inputs[{index}][{position}]")
    check_text(delimiter, "delimiter")
    spans, position = [], 0
    for word in words:
        spans.append((position, position + len(word)))
        position += len(word) + len(delimiter)
    return _Text(delimiter.join(words), list(words), spans)
