"""Greedy CTC decoding with a wav2vec2-style character vocabulary, as transformers'
``Wav2Vec2CTCTokenizer.decode`` does it for the speech-recognition pipeline.

transformers has no fast (``tokenizer.json``) form of that tokenizer, so the runtime reads
its ``vocab.json`` and ``tokenizer_config.json`` itself: per frame the argmax id; runs of
the same id collapse to one; the pad token (CTC's blank) is dropped; the word delimiter
(``|``) becomes ``replace_word_delimiter_char`` (a space); the text is stripped, lower-cased
if ``do_lower_case``, and cleaned of spaces before punctuation if
``clean_up_tokenization_spaces``. Special tokens stay in the text, as the pipeline decodes
with ``skip_special_tokens=False``. Character and word offsets (in logit frames) are the
tokenizer's ``output_char_offsets`` / ``_get_word_offsets``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgeformers.models.errors import BundleError
from edgeformers.models.processing import special_token

#: transformers' ``clean_up_tokenization`` replacements, in its order.
_CLEAN_UP = ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
             (" 's", "'s"), (" 've", "'ve"), (" 're", "'re"))


class CtcVocabulary:
    """id -> token for greedy CTC decoding, built from a bundle's tokenizer files."""

    def __init__(self, vocab: dict[str, Any], tokenizer_config: dict[str, Any], where: str) -> None:
        target = tokenizer_config.get("target_lang")
        if target is not None:  # MMS-style nested vocabularies, one per language
            if not isinstance(vocab.get(target), dict):
                raise BundleError(f"{where}: vocab.json has no vocabulary for target_lang {target!r}")
            vocab = vocab[target]
        self.tokens: dict[int, str] = {}
        for token, index in vocab.items():
            if not isinstance(index, int) or isinstance(index, bool) or index < 0:
                raise BundleError(f"{where}: vocab.json maps {token!r:.40} to {index!r:.40}, not a token id")
            self.tokens[index] = token
        added = tokenizer_config.get("added_tokens_decoder") or {}
        if not isinstance(added, dict):
            raise BundleError(f"{where}: tokenizer_config.json added_tokens_decoder should be an object")
        for key, value in added.items():
            content = value.get("content") if isinstance(value, dict) else None
            if not (isinstance(key, str) and key.isdigit() and isinstance(content, str)):
                raise BundleError(f"{where}: tokenizer_config.json added_tokens_decoder entry {key!r:.40} is malformed")
            self.tokens[int(key)] = content

        def setting(name: str, default: str | None) -> str | None:
            value = special_token(tokenizer_config, name)
            return default if value is None and name not in tokenizer_config else value

        self.unk_token = setting("unk_token", "<unk>") or ""
        self.pad_token = setting("pad_token", "<pad>")
        self.word_delimiter = setting("word_delimiter_token", "|")
        replace = tokenizer_config.get("replace_word_delimiter_char", " ")
        self.replace_char = replace if isinstance(replace, str) else " "
        self.lower = bool(tokenizer_config.get("do_lower_case", False))
        self.clean_up = bool(tokenizer_config.get("clean_up_tokenization_spaces", False))

    def token(self, index: int) -> str:
        return self.tokens.get(index, self.unk_token)

    def _groups(self, ids: Sequence[int]) -> tuple[list[str], list[dict[str, Any]]]:
        """Collapsed, blank-free characters and their frame offsets."""
        chars: list[str] = []
        offsets: list[dict[str, Any]] = []
        start = 0
        for token, group in itertools.groupby(self.token(int(i)) for i in ids):
            count = sum(1 for _ in group)
            if token != self.pad_token:
                char = self.replace_char if token == self.word_delimiter else token
                chars.append(char)
                offsets.append({"char": char, "start_offset": start, "end_offset": start + count})
            start += count
        return chars, offsets

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        chars, _ = self._groups(ids)
        text = "".join(chars).strip()
        if self.lower:
            text = text.lower()
        if self.clean_up:
            for old, new in _CLEAN_UP:
                text = text.replace(old, new)
        return text

    def char_offsets(self, ids: Sequence[int] | np.ndarray) -> list[dict[str, Any]]:
        return self._groups(ids)[1]

    def word_offsets(self, ids: Sequence[int] | np.ndarray) -> list[dict[str, Any]]:
        """Words between delimiter characters, each from its first character's start frame
        to its last character's end frame."""
        words: list[dict[str, Any]] = []
        for is_space, group in itertools.groupby(self.char_offsets(ids), key=lambda o: o["char"] == self.replace_char):
            if not is_space:
                items = list(group)
                words.append({"word": "".join(o["char"] for o in items), "start_offset": items[0]["start_offset"],
                              "end_offset": items[-1]["end_offset"]})
        return words
