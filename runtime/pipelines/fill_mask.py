"""fill-mask: predict the token behind the model's own mask token, with transformers'
FillMaskPipeline arguments (``top_k``, ``targets``, ``tokenizer_kwargs``) and outputs.

``token_str`` and ``sequence`` are decoded the way transformers decodes them: the
tokenizers decoder, padding ids dropped, special tokens skipped only when the input has
a single mask, then ``clean_up_tokenization_spaces`` if tokenizer_config.json asks for it.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgeformers.models.errors import BundleError, InputError
from edgeformers.runtime.pipelines.base import (
    DEFAULT_BATCH_SIZE,
    Pipeline,
    check_count,
    check_fits,
    check_padding,
    check_text,
    check_top_k,
    length_batches,
    softmax,
    text_batch,
    truncation_strategy,
)

logger = logging.getLogger(__name__)

DEFAULT_TOP_K = 5
# Without an explicit batch_size, batches shrink so the (rows, tokens, vocab) float32
# logits of one run stay under this many bytes (a 250k vocab at 512 tokens is 0.5 GB a row).
_LOGITS_BUDGET = 256 << 20
_TOKENIZER_KWARGS = ("truncation", "max_length", "padding")


def clean_up_tokenization(text: str) -> str:
    """transformers' ``clean_up_tokenization``: drop the space before English punctuation
    and contractions."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text


class FillMaskPipeline(Pipeline):
    task = "fill-mask"

    def prepare(self) -> None:
        mask = self.tokenizer.special_tokens.get("mask_token")
        mask_id = self.tokenizer.special_token_id("mask_token")
        if mask is None or mask_id is None:
            raise BundleError(
                f"{self.bundle.path}: the tokenizer defines no mask_token in its vocabulary; fill-mask needs a "
                "masked-language model's tokenizer (tokenizer_config.json 'mask_token')"
            )
        self.mask_token: str = mask
        self.mask_token_id: int = mask_id
        # transformers drops pad ids from the filled sequence; with no pad token it drops nothing.
        self._pad_id = self.tokenizer.special_token_id("pad_token")
        config = self.bundle.read_json("tokenizer_config.json")
        self._clean_up = bool(config.get("clean_up_tokenization_spaces", False))
        vocab = self.bundle.read_json("config.json").get("vocab_size")
        self._vocab_size = vocab if isinstance(vocab, int) and vocab > 0 else 32_000

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        """``tokenizer.decode`` as transformers' fast tokenizers do it."""
        text = self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
        return clean_up_tokenization(text) if self._clean_up else text

    def __call__(
        self,
        inputs: Any,
        top_k: int | None = None,
        targets: str | list[str] | None = None,
        tokenizer_kwargs: dict[str, Any] | None = None,
        batch_size: int | None = None,
    ) -> Any:
        """Like transformers: for one text with one mask, a list of ``top_k`` dicts
        ``{score, token, token_str, sequence}``; with several masks, one such list per
        mask; for a list of texts, one result per text (a one-item list is unwrapped,
        as transformers does)."""
        check_top_k(top_k)
        top_k = DEFAULT_TOP_K if top_k is None else top_k
        texts, single = text_batch(inputs)
        target_ids = None if targets is None else self.target_ids(targets)
        encodings = self._encode(texts, tokenizer_kwargs)
        positions = [[p for p, token in enumerate(e.ids) if token == self.mask_token_id] for e in encodings]
        for index, found in enumerate(positions):
            if not found:
                where = "inputs" if single else f"inputs[{index}]"
                raise InputError(
                    f"{where} has no mask token; put {self.mask_token!r} where the word to predict goes, "
                    f"e.g. 'Paris is the {self.mask_token} of France.'"
                )
        results: list[Any] = [None] * len(texts)
        lengths = [len(e.ids) for e in encodings]
        for group in length_batches(lengths, batch_size or self._default_batch_size(lengths)):
            batch = self.tokenizer.pad([encodings[i] for i in group])
            logits = self.model.run(batch.feed(), ["logits"])["logits"]
            for row, index in enumerate(group):
                rows = logits[row, positions[index]].astype(np.float32)
                results[index] = self._postprocess(encodings[index].ids, positions[index], rows, top_k, target_ids)
        if single or len(results) == 1:
            return results[0]
        return results

    def target_ids(self, targets: Any) -> np.ndarray:
        """Vocabulary ids for ``targets``; a target that is not one token is tokenized and
        its first token used, with a warning, as transformers does."""
        if isinstance(targets, str):
            targets = [targets]
        if not isinstance(targets, (list, tuple)) or not all(isinstance(t, str) for t in targets):
            raise InputError(f"targets is {targets!r}; expected a string or a list of strings")
        for index, target in enumerate(targets):
            check_text(target, f"targets[{index}]")
        ids: list[int] = []
        for target in targets:
            token_id = self.tokenizer.token_to_id(target)
            if token_id is None:
                pieces = self.tokenizer.encode([target], truncation=False, add_special_tokens=False)[0].ids
                if not pieces:
                    logger.warning("target %r is not in the model vocabulary and tokenizes to nothing; "
                                   "ignoring it", target)
                    continue
                token_id = pieces[0]
                logger.warning("target %r is not in the model vocabulary; using its first token %r instead",
                               target, self.tokenizer.id_to_token(token_id))
            ids.append(int(token_id))
        unique = list(set(ids))  # transformers' order (it matters only for tied scores)
        if not unique:
            raise InputError(
                f"targets {list(targets)!r} name no usable token; pass words from the model's vocabulary"
            )
        return np.array(unique, dtype=np.int64)

    def _encode(self, texts: list[str], tokenizer_kwargs: dict[str, Any] | None) -> list[Any]:
        """No truncation by default (as transformers); too-long inputs get a clear error."""
        if tokenizer_kwargs is not None and not isinstance(tokenizer_kwargs, dict):
            raise InputError(f"tokenizer_kwargs is {tokenizer_kwargs!r}; expected a dict such as {{'truncation': True}}")
        options = dict(tokenizer_kwargs or {})
        unknown = sorted(map(str, set(options) - set(_TOKENIZER_KWARGS)))
        if unknown:
            raise InputError(
                f"tokenizer_kwargs {unknown} are not supported; the runtime takes {list(_TOKENIZER_KWARGS)}"
            )
        check_padding(options.get("padding", False))
        check_count("max_length", options.get("max_length"))
        truncate = truncation_strategy(options.get("truncation", False)) is not None
        encodings = self.tokenizer.encode(texts, truncation=truncate, max_length=options.get("max_length"))
        check_fits(encodings, self.tokenizer.max_length, 'pass tokenizer_kwargs={"truncation": True}')
        return encodings

    def _default_batch_size(self, lengths: list[int]) -> int:
        per_row = max(lengths, default=1) * self._vocab_size * 4
        return max(1, min(DEFAULT_BATCH_SIZE, _LOGITS_BUDGET // max(per_row, 1)))

    def _postprocess(
        self,
        ids: list[int],
        positions: list[int],
        logits: np.ndarray,
        top_k: int,
        target_ids: np.ndarray | None,
    ) -> list[Any]:
        probs = softmax(logits)
        if target_ids is not None:
            probs = probs[:, target_ids]
        k = min(top_k, probs.shape[-1])
        single = len(positions) == 1
        rows = []
        for position, scores in zip(positions, probs):
            row = []
            for choice in _top(scores, k):
                token = int(target_ids[choice]) if target_ids is not None else int(choice)
                filled = list(ids)
                filled[position] = token
                if self._pad_id is not None:
                    filled = [t for t in filled if t != self._pad_id]
                row.append({
                    "score": float(scores[choice]),
                    "token": token,
                    "token_str": self.decode([token]),
                    # other masks stay visible when there are several, as in transformers
                    "sequence": self.decode(filled, skip_special_tokens=single),
                })
            rows.append(row)
        return rows[0] if single else rows


def _top(scores: np.ndarray, k: int) -> list[int]:
    """Indices of the ``k`` highest scores, best first (lower index first on ties)."""
    if k < scores.shape[0]:
        candidates = np.argpartition(-scores, k - 1)[:k]
    else:
        candidates = np.arange(scores.shape[0])
    return sorted(candidates.tolist(), key=lambda i: (-scores[i], i))
