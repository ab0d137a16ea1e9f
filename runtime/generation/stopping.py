"""Stop strings, at the text level.

transformers' StopStringCriteria matches stop strings against the vocabulary's token
strings at the end of the sequence. Here the rule is the plain one it approximates: a
row is done as soon as the text decoded from its new tokens contains one of the stop
strings. As in transformers, the tokens that completed the stop string stay in the
output (the returned text ends with the stop string, or with the rest of the token
that completed it); nothing is cut off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


class StopStrings:
    """A stopping rule for the search: which rows' new text (tokens after the first
    ``fed`` ones) contains a stop string. Only the tail of a row that could hold a new
    match is decoded each time, so a long generation costs no more per step than a short one."""

    def __init__(self, decode: Callable[[list[int]], str], strings: Sequence[str], fed: int) -> None:
        self.decode = decode
        self.strings = list(strings)
        self.fed = fed
        # a stop string of n characters spans at most n + 1 tokens on its own; byte-level
        # tokens may carry part of a character, so allow 4 tokens per character
        self.window = 4 * max(len(s) for s in self.strings) + 4

    def __call__(self, sequences: np.ndarray) -> np.ndarray:
        new = sequences[:, self.fed:]
        done = np.zeros(len(sequences), dtype=bool)
        for row, tokens in enumerate(new.tolist()):
            text = self.decode(tokens[-self.window:])
            done[row] = any(s in text for s in self.strings)
        return done
