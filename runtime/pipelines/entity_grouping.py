"""Token-classification post-processing: tokens -> words -> entities, step for step as
transformers' ``TokenClassificationPipeline`` (4.57) does it.

Kept apart from the pipeline so the grouping rules (B-/I- prefixes, sub-word detection,
overlapping stride windows) read as plain functions over numpy score rows. The quirks
are transformers' own and are kept on purpose: a drop-in replacement must produce the
same entities, words and offsets, even where those look odd (empty words for a lone
``▁``, byte-level pieces decoded to U+FFFD).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeformers.runtime.tokenizer import TextTokenizer

#: transformers' AggregationStrategy values, in its order.
AGGREGATION_STRATEGIES = ("none", "simple", "first", "average", "max")
_WORD_STRATEGIES = ("first", "average", "max")

_HEURISTIC_WARNING = "Tokenizer does not support real words, using fallback heuristic"


@dataclass(frozen=True)
class EntityGrouper:
    """Everything grouping needs from the model: its tokenizer and its label names."""

    tokenizer: TextTokenizer
    label: Callable[[int], str]
    unk_id: int | None

    def entities(
        self,
        sentence: str,
        encoding: Any,
        scores: np.ndarray,
        strategy: str,
        word_to_chars: Sequence[tuple[int, int]] | None = None,
    ) -> list[dict[str, Any]]:
        """One window's entities (before ``ignore_labels``); ``scores`` is (tokens, labels)."""
        pre = self.pre_entities(sentence, encoding, scores, strategy, word_to_chars)
        if strategy in ("none", "simple"):
            entities = [self._token_entity(item) for item in pre]
        else:
            entities = self._aggregate_words(pre, strategy)
        return entities if strategy == "none" else self.group_entities(entities)

    def pre_entities(
        self,
        sentence: str,
        encoding: Any,
        scores: np.ndarray,
        strategy: str,
        word_to_chars: Sequence[tuple[int, int]] | None = None,
    ) -> list[dict[str, Any]]:
        """Non-special tokens with their token string, offsets and ``is_subword``.

        WordPiece-like tokenizers (a continuing-subword prefix) mark a sub-word by its
        token being longer than the text it covers (``##ing`` vs ``ing``); others fall
        back to "no space right before or at the token's start".
        """
        word_aware = self.tokenizer.continuing_subword_prefix is not None
        if not word_aware and strategy in _WORD_STRATEGIES:
            warnings.warn(_HEURISTIC_WARNING, UserWarning, stacklevel=4)
        word_ids = encoding.word_ids if word_to_chars is not None else None
        pre = []
        for index, (token_id, special) in enumerate(zip(encoding.ids, encoding.special_tokens_mask)):
            if special:
                continue
            word = self.tokenizer.id_to_token(token_id)
            start, end = encoding.offsets[index]
            if word_ids is not None and word_ids[index] is not None:
                shift = word_to_chars[word_ids[index]][0]
                start, end = start + shift, end + shift
            reference = sentence[start:end]
            if word_aware:
                is_subword = len(word) != len(reference)
            else:
                is_subword = start > 0 and " " not in sentence[start - 1 : start + 1]
            if token_id == self.unk_id:
                word, is_subword = reference, False
            pre.append(
                {"word": word, "scores": scores[index], "start": start, "end": end,
                 "index": index, "is_subword": is_subword}
            )
        return pre

    def _token_entity(self, item: dict[str, Any]) -> dict[str, Any]:
        best = int(item["scores"].argmax())
        return {
            "entity": self.label(best), "score": item["scores"][best], "index": item["index"],
            "word": item["word"], "start": item["start"], "end": item["end"],
        }

    def _aggregate_words(self, pre: list[dict[str, Any]], strategy: str) -> list[dict[str, Any]]:
        """Force one label per word: a word is a token plus the sub-words after it."""
        words: list[list[dict[str, Any]]] = []
        for item in pre:
            if words and item["is_subword"]:
                words[-1].append(item)
            else:
                words.append([item])
        return [self._aggregate_word(group, strategy) for group in words]

    def _aggregate_word(self, tokens: list[dict[str, Any]], strategy: str) -> dict[str, Any]:
        if strategy == "first":
            scores = tokens[0]["scores"]
        elif strategy == "max":
            scores = max(tokens, key=lambda token: token["scores"].max())["scores"]
        else:  # average
            scores = np.nanmean(np.stack([token["scores"] for token in tokens]), axis=0)
        best = int(scores.argmax())
        return {
            "entity": self.label(best),
            "score": scores[best],
            "word": self.tokenizer.convert_tokens_to_string([token["word"] for token in tokens]),
            "start": tokens[0]["start"],
            "end": tokens[-1]["end"],
        }

    def group_entities(self, entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Merge adjacent entities of one tag; a ``B-`` always opens a new group."""
        groups: list[dict[str, Any]] = []
        current: list[dict[str, Any]] = []
        for entity in entities:
            if current:
                bi, tag = get_tag(entity["entity"])
                _, last_tag = get_tag(current[-1]["entity"])
                if tag == last_tag and bi != "B":
                    current.append(entity)
                    continue
                groups.append(self._group(current))
            current = [entity]
        if current:
            groups.append(self._group(current))
        return groups

    def _group(self, entities: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "entity_group": entities[0]["entity"].split("-", 1)[-1],
            "score": np.nanmean([entity["score"] for entity in entities]),
            "word": self.tokenizer.convert_tokens_to_string([entity["word"] for entity in entities]),
            "start": entities[0]["start"],
            "end": entities[-1]["end"],
        }


def get_tag(name: str) -> tuple[str, str]:
    """``("B", "PER")`` for ``B-PER``; a label without a B-/I- prefix counts as ``I``."""
    if name.startswith("B-"):
        return "B", name[2:]
    if name.startswith("I-"):
        return "I", name[2:]
    return "I", name


def merge_overlapping(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entities of overlapping stride windows: of those starting inside another, keep the
    longer one (the higher score on equal length)."""
    if not entities:
        return entities
    ordered = sorted(entities, key=lambda entity: entity["start"])
    merged = []
    previous = ordered[0]
    for entity in ordered:
        if previous["start"] <= entity["start"] < previous["end"]:
            length = entity["end"] - entity["start"]
            previous_length = previous["end"] - previous["start"]
            if length > previous_length or (length == previous_length and entity["score"] > previous["score"]):
                previous = entity
        else:
            merged.append(previous)
            previous = entity
    merged.append(previous)
    return merged


def plain(entity: dict[str, Any]) -> dict[str, Any]:
    """The same dict with Python floats/ints instead of numpy scalars."""
    return {
        key: float(value) if key == "score" else int(value) if isinstance(value, np.integer) else value
        for key, value in entity.items()
    }
