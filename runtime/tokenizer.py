"""Text tokenization with the ``tokenizers`` library alone, padded per batch.

Limits come from ``tokenizer_config.json`` (what transformers uses), never from the
padding/truncation that some ``tokenizer.json`` files hard-code. Each configured
``Tokenizer`` is built once and never mutated afterwards, so calls from several threads
are safe.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeformers.models.errors import BundleError, InputError
from edgeformers.models.processing import special_token
from edgeformers.runtime.bundle_files import MAX_TOKENIZER_BYTES, BundleFolder

_SPECIAL_NAMES = ("pad_token", "unk_token", "cls_token", "sep_token", "mask_token", "bos_token", "eos_token")


@dataclass
class Batch:
    """Padded arrays for one model call, plus the encodings they came from (offsets,
    word ids) for post-processing."""

    input_ids: np.ndarray
    attention_mask: np.ndarray
    token_type_ids: np.ndarray
    encodings: list[Any]

    def feed(self) -> dict[str, np.ndarray]:
        return {
            "input_ids": self.input_ids,
            "attention_mask": self.attention_mask,
            "token_type_ids": self.token_type_ids,
        }


class TextTokenizer:
    def __init__(self, folder: Path, max_length: int | None) -> None:
        from tokenizers import Tokenizer

        # Every file is read through the bundle's path checks and size limits (bundle_files).
        files = BundleFolder(folder)
        if not files.exists("tokenizer.json"):
            raise BundleError(
                f"{folder}: tokenizer.json is missing; text bundles need a fast tokenizer "
                "(re-export with edgeformers, which converts slow tokenizers)"
            )
        serialized = files.read_bytes("tokenizer.json", MAX_TOKENIZER_BYTES)
        try:
            base = Tokenizer.from_str(serialized.decode("utf-8"))
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as err:  # pyo3's PanicException is a BaseException
            raise BundleError(f"{folder}/tokenizer.json: the tokenizers library cannot read it: {err}"[:500]) from None
        base.no_padding()
        base.no_truncation()
        self._serialized = base.to_str()
        self._base = base
        self._variants: dict[tuple[int, int, str], Any] = {}
        self._lock = threading.Lock()
        self.max_length = max_length
        config = files.read_json("tokenizer_config.json")
        special_map = files.read_json("special_tokens_map.json")
        self.special_tokens: dict[str, str] = {}
        for name in _SPECIAL_NAMES:
            token = special_token(config, name) or special_token(special_map, name)
            if token is not None:
                self.special_tokens[name] = token
        self.padding_left = config.get("padding_side") == "left"
        self.pad_id = self._pad_id(files)

    def _pad_id(self, files: BundleFolder) -> int:
        pad = self.special_tokens.get("pad_token")
        if pad is not None and self._base.token_to_id(pad) is not None:
            return int(self._base.token_to_id(pad))
        config_pad = files.read_json("config.json").get("pad_token_id")
        return int(config_pad) if isinstance(config_pad, int) and not isinstance(config_pad, bool) else 0

    def special_token_id(self, name: str) -> int | None:
        """The id of a special token by role ("mask_token", "cls_token" …), if it has one."""
        token = self.special_tokens.get(name)
        return None if token is None else self.token_to_id(token)

    def token_to_id(self, token: str) -> int | None:
        return self._base.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self._base.id_to_token(token_id)

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self._base.decode(ids, skip_special_tokens=skip_special_tokens)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Token strings joined by the tokenizer's decoder, as transformers'
        ``convert_tokens_to_string`` does (token-classification words)."""
        decoder = self._base.decoder
        return decoder.decode(tokens) if decoder is not None else " ".join(tokens)

    @property
    def continuing_subword_prefix(self) -> str | None:
        """WordPiece's ``##`` marker (None for byte-level BPE and Unigram, which mark word
        starts instead): transformers uses it to tell sub-words from words."""
        return getattr(self._base.model, "continuing_subword_prefix", None) or None

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        processor = self._base.post_processor
        return int(processor.num_special_tokens_to_add(pair)) if processor is not None else 0

    def _configured(self, max_length: int | None, stride: int, strategy: str) -> Any:
        """A tokenizer truncating to ``max_length``; built once per setting, then shared."""
        if max_length is None:
            return self._base
        key = (max_length, stride, strategy)
        with self._lock:
            tokenizer = self._variants.get(key)
            if tokenizer is None:
                from tokenizers import Tokenizer

                tokenizer = Tokenizer.from_str(self._serialized)
                tokenizer.enable_truncation(max_length, stride=stride, strategy=strategy)
                self._variants[key] = tokenizer
        return tokenizer

    def encode(
        self,
        texts: list[str],
        pairs: list[str | None] | None = None,
        truncation: bool = True,
        max_length: int | None = None,
        stride: int = 0,
        strategy: str = "longest_first",
        add_special_tokens: bool = True,
        is_pretokenized: bool = False,
    ) -> list[Any]:
        """Encodings (with ``.overflowing`` windows when truncated); with
        ``is_pretokenized`` each text is a list of words; a None in ``pairs`` leaves that text
        alone. Whatever the ``tokenizers`` library refuses (its ValueError, TypeError, or a
        Rust panic) comes out as ``InputError``."""
        limit = (max_length or self.max_length) if truncation else None
        inputs: list[Any] = list(texts)
        if pairs is not None:
            inputs = [text if pair is None else (text, pair) for text, pair in zip(texts, pairs)]
        try:
            tokenizer = self._configured(limit, stride, strategy)
            return tokenizer.encode_batch(
                inputs, add_special_tokens=add_special_tokens, is_pretokenized=is_pretokenized
            )
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as err:  # pyo3's PanicException is a BaseException
            raise InputError(f"the tokenizer cannot encode these inputs: {type(err).__name__}: {err}") from None

    def pad(self, encodings: list[Any]) -> Batch:
        """Pad to the longest sequence of this batch, not to the model maximum, always on
        the right, whatever ``padding_side`` says. transformers runs one input per forward
        pass (no padding); right padding behind the attention mask reproduces that, while
        left padding would shift the position ids of absolute-position models (BERT).
        ``padding_side`` only decides what transformers decides with it: QA's question/context
        order, and the padding of one text's NER stride windows (:meth:`pad_windows`)."""
        width = max((len(e.ids) for e in encodings), default=0)
        shape = (len(encodings), width)
        ids = np.full(shape, self.pad_id, dtype=np.int64)
        mask = np.zeros(shape, dtype=np.int64)
        types = np.zeros(shape, dtype=np.int64)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            ids[row, :n] = encoding.ids
            mask[row, :n] = encoding.attention_mask
            types[row, :n] = encoding.type_ids
        return Batch(ids, mask, types, list(encodings))

    def pad_windows(self, windows: list[Any]) -> None:
        """Pad one text's stride windows in place to the longest of them, on the tokenizer's
        side: what transformers' own ``padding=True`` tokenizer call does for them
        (token-classification with ``stride``). Right padding changes nothing behind the
        attention mask; left padding shifts the short window's position ids, and
        transformers' results carry that shift, so this reproduces it."""
        if not self.padding_left or len(windows) < 2:
            return
        width = max(len(window.ids) for window in windows)
        pad_token = self.special_tokens.get("pad_token", "")
        for window in windows:
            window.pad(width, direction="left", pad_id=self.pad_id, pad_type_id=0, pad_token=pad_token)

    def __call__(self, texts: list[str], pairs: list[str] | None = None, **kwargs: Any) -> Batch:
        return self.pad(self.encode(texts, pairs, **kwargs))
