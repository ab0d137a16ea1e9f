"""Stop strings, at the text level.

transformers' StopStringCriteria matches stop strings against the vocabulary's token
strings: generation stops as soon as a token completes a stop string, i.e. the stop
string appears in the text and overlaps the newest token (it may begin in the prompt).
Here the same rule is applied to decoded text: a row is done once the text decoded from
the tail of its tokens holds a stop string that ends inside the generated part. As in
transformers, the tokens that completed the stop string stay in the output (the text
ends with the stop string, or with the rest of the token that completed it).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


class StopStrings:
    """A stopping rule for the search: which rows hold a stop string that ends after the
    first ``fed`` tokens (the prompt). Only a tail of each row is decoded, long enough
    for any stop string, so a long generation costs no more per step than a short one."""

    def __init__(self, decode: Callable[[list[int]], str], strings: Sequence[str], fed: int) -> None:
        self.decode = decode
        self.strings = list(strings)
        self.fed = fed
        # a stop string of n characters spans at most n + 1 tokens of its own; byte-level
        # tokens may carry part of a character, so allow 4 tokens per character
        self.window = 4 * max(len(s) for s in self.strings) + 4

    def __call__(self, sequences: np.ndarray) -> np.ndarray:
        done = np.zeros(len(sequences), dtype=bool)
        for row, tokens in enumerate(sequences.tolist()):
            start = max(0, len(tokens) - self.window)
            text = self.decode(tokens[start:])
            prompt = len(self.decode(tokens[start:self.fed])) if start < self.fed else 0
            # a match must end past the prompt's text: p + len(s) > prompt
            done[row] = any(text.find(s, max(0, prompt - len(s) + 1)) >= 0 for s in self.strings)
        return done
