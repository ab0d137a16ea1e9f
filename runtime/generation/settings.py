"""One call's decoding settings, named and defaulted as transformers' ``GenerationConfig``
(4.57), and the length rules ``generate`` derives from them.

Lengths count what the search is first fed, as transformers does: the (left-padded)
prompt for a decoder-only model, the decoder start tokens for an encoder-decoder.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: transformers' GenerationConfig().max_length: when nothing sets a length, 20 new tokens.
DEFAULT_MAX_LENGTH = 20


@dataclass
class GenerationSettings:
    """Decoding settings. ``None`` means "not set", as in transformers: ``max_new_tokens``
    wins over ``max_length``; ``min_new_tokens`` (when set) replaces ``min_length``."""

    max_new_tokens: int | None = 20
    max_length: int | None = None
    min_new_tokens: int | None = None
    min_length: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    min_p: float | None = None
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    bad_words_ids: list[list[int]] | None = None
    forced_bos_token_id: int | None = None
    forced_eos_token_id: list[int] | None = None
    suppress_tokens: list[int] | None = None
    begin_suppress_tokens: list[int] | None = None
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    num_return_sequences: int = 1
    eos_token_id: list[int] = field(default_factory=list)
    pad_token_id: int | None = None
    seed: int | None = None
    stop_strings: list[str] | None = None

    def total_length(self, fed: int, max_positions: int | None = None) -> int:
        """The longest sequence (``fed`` first tokens included) the search may reach:
        transformers' ``_prepare_generated_length``. A ``max_length`` left unset gives 20
        new tokens, capped at the model's positions as transformers caps its default."""
        if self.max_new_tokens is not None:
            return fed + self.max_new_tokens
        if self.max_length is not None:
            return self.max_length
        total = fed + DEFAULT_MAX_LENGTH
        return min(total, max_positions) if max_positions else total

    def eos_floor(self, fed: int) -> int:
        """EOS is suppressed while the sequence is shorter than this (min_length, or the
        prompt plus min_new_tokens when that is set, which replaces min_length)."""
        if self.min_new_tokens is not None:
            return fed + self.min_new_tokens
        return self.min_length

    def pad_id(self) -> int:
        """The id written after a row finished: pad, else the first EOS (transformers warns
        and does the same), else 0."""
        if self.pad_token_id is not None:
            return self.pad_token_id
        return self.eos_token_id[0] if self.eos_token_id else 0
