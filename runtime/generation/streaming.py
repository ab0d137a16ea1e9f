"""Streaming text out of a pull-style decoding, one stable piece at a time.

A desktop UI wants text as it is generated, but one token is not one piece of text:

* byte-level BPE can emit half of a multi-byte character (an emoji is 4 bytes, often 2
  tokens); decoding it alone gives U+FFFD, so text ending in U+FFFD is held back until
  the next token completes it;
* Metaspace / SentencePiece decoders strip the space of the first token they decode, so
  a token decoded alone loses its leading space. Each step decodes the tokens from a
  checkpoint a few tokens back (``prefix``) and emits only what the newest tokens add
  past the text already emitted (``read``): the stripped space belongs to the checkpoint
  token and cancels out (the scheme text-generation-inference uses);
* transformers' ``clean_up_tokenization`` (drop the space before ``.``, ``'s`` ...) looks
  a few characters around each space, so with it on, text is committed only up to a
  point where no later character can change it (see :class:`_CleanUp`);
* a beam search has no next token until its beams agree: it streams the prefix that no
  later step can change (:class:`BeamTokens`), the rest when the search ends.

The pieces join to exactly the non-streamed ``generated_text`` with
``return_full_text=False``: ``decode(prompt + new)[len(decode(prompt)):]``.
"""

from __future__ import annotations

import inspect
import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np

from edgeformers.models.errors import InputError
from edgeformers.runtime.generation.beams import BeamSearch
from edgeformers.runtime.generation.search import Decoding

logger = logging.getLogger(__name__)

#: How many prompt tokens the first checkpoint keeps as context: enough for a decoder that
#: treats the first token of a decode specially (Metaspace, Strip) to see a real one.
CONTEXT_TOKENS = 5
REPLACEMENT = "\ufffd"


def check_stream_arguments(call: Callable[..., Any], kwargs: dict[str, Any], not_streamed: tuple[str, ...]) -> None:
    """A stream takes the decoding arguments of the pipeline's ``call`` (but
    ``not_streamed``) for one sequence: any other name, or several sequences, is an
    InputError when ``stream()`` is called, not in the middle of iterating."""
    accepted = [name for name in inspect.signature(call).parameters if name not in ("self", *not_streamed)]
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise InputError(f"stream got unknown argument{'s' if len(unknown) > 1 else ''} "
                         f"{', '.join(map(repr, unknown))}; it accepts: {', '.join(accepted)}")
    if kwargs.get("num_return_sequences", 1) not in (1, None):
        raise InputError(f"stream generates one sequence; num_return_sequences={kwargs['num_return_sequences']!r} "
                         "needs the pipeline call instead")


class TokenSource(Protocol):
    """What a stream pulls from: the final tokens of one row, a model step at a time."""

    @property
    def done(self) -> bool: ...

    def advance(self) -> list[int]:
        """One model step; the tokens it makes final (none while beams disagree)."""
        ...

    def cancel(self) -> list[int]:
        """Stop before the next step; the tokens still owed to the text."""
        ...

    def reason(self) -> str:
        """Why it ended: "eos", "stop" (a stop rule) or "length"."""
        ...


class SampledTokens:
    """Greedy or sampled decoding: each step's token is final at once."""

    def __init__(self, decoding: Decoding, eos_token_ids: list[int]) -> None:
        self.decoding = decoding
        self.eos = set(eos_token_ids)
        self.last: int | None = None

    @property
    def done(self) -> bool:
        return self.decoding.done

    def advance(self) -> list[int]:
        self.last = int(self.decoding.step()[0])
        return [self.last]

    def cancel(self) -> list[int]:
        self.decoding.cancel()
        return []

    def reason(self) -> str:
        if self.last in self.eos:
            return "eos"
        return "length" if self.decoding.unfinished[0] else "stop"


class BeamTokens:
    """Beam search: a step makes final the tokens no later step can change
    (:meth:`BeamSearch.settled`); the end makes the best hypothesis final. A cancel
    delivers the likeliest answer so far, which starts with everything already delivered."""

    def __init__(self, search: BeamSearch) -> None:
        self.search = search
        self.sent = 0

    @property
    def done(self) -> bool:
        return self.search.done

    def _owed(self, tokens: np.ndarray) -> list[int]:
        owed = tokens[self.sent:].tolist()
        self.sent = max(self.sent, len(tokens))
        return owed

    def advance(self) -> list[int]:
        self.search.step()
        return self._owed(self.search.settled(0))

    def cancel(self) -> list[int]:
        self.search.cancel()
        return self._owed(self.search.leading(0))

    def reason(self) -> str:
        best = self.search.best(0)
        if best.size and int(best[-1]) in self.search.eos:
            return "eos"
        return "length" if self.search.fed + best.size >= self.search.max_length else "stop"


def token_source(decoding: Decoding | BeamSearch, eos_token_ids: list[int]) -> TokenSource:
    """The stream's view of a pull-style decoding of one row."""
    if isinstance(decoding, BeamSearch):
        return BeamTokens(decoding)
    return SampledTokens(decoding, eos_token_ids)


class _CleanUp:
    """transformers' ``clean_up_tokenization`` applied to text arriving in pieces, with
    the result identical to cleaning the whole text at once.

    Every pattern it replaces starts with a space and is at most 4 characters long, so
    cleaning ``X + Y`` equals cleaning ``X`` then ``Y`` whenever the last 3 characters of
    ``X`` hold no space: no pattern can span the cut, and no replacement inside ``X`` brings
    a space into its last 3 characters. Text is committed at the last such cut; ``skip``
    drops the characters the cleaned prompt takes, as transformers slices them off."""

    def __init__(self, clean: Callable[[str], str], prompt_text: str) -> None:
        self.clean = clean
        cut = self._last_cut(prompt_text)
        self.pending = prompt_text[cut:]
        self.skip = len(clean(self.pending))

    @staticmethod
    def _last_cut(text: str) -> int:
        for end in range(len(text), 0, -1):
            if " " not in text[max(0, end - 3):end]:
                return end
        return 0

    def _emit(self, cleaned: str) -> str:
        out = cleaned[self.skip:]
        self.skip = max(0, self.skip - len(cleaned))
        return out

    def add(self, raw: str) -> str:
        self.pending += raw
        cut = self._last_cut(self.pending)
        if cut == 0:
            return ""
        committed, self.pending = self.pending[:cut], self.pending[cut:]
        return self._emit(self.clean(committed))

    def flush(self) -> str:
        committed, self.pending = self.pending, ""
        return self._emit(self.clean(committed))


class IncrementalDetokenizer:
    """Stable text pieces from a token sequence that grows at its end.

    ``decode`` turns ids into raw text (special tokens skipped); ``clean`` is the
    tokenizer's ``clean_up_tokenization`` when tokenizer_config.json turns it on."""

    def __init__(self, decode: Callable[[list[int]], str], prompt_ids: list[int],
                 clean: Callable[[str], str] | None = None, strip: bool = False) -> None:
        self._decode = decode
        self.ids = list(prompt_ids)
        self.prefix = max(0, len(self.ids) - CONTEXT_TOKENS)
        self.read = len(self.ids)
        self._clean = _CleanUp(clean, decode(self.ids)) if clean is not None else None
        #: ``strip``: the whole text is ``str.strip()``-ed (MarianTokenizer.decode), so
        #: leading whitespace is dropped and trailing whitespace held until text follows
        self._strip = strip
        self._started = False
        self._held = ""

    def _raw(self, final: bool) -> str:
        before = self._decode(self.ids[self.prefix:self.read])
        after = self._decode(self.ids[self.prefix:])
        if not final and (len(after) <= len(before) or after.endswith(REPLACEMENT)):
            return ""  # nothing new yet, or half a character: wait for the next token
        self.prefix, self.read = self.read, len(self.ids)
        return self._stripped(after[len(before):], final)

    def _stripped(self, raw: str, final: bool) -> str:
        if not self._strip:
            return raw
        text = self._held + raw
        if not self._started:
            text = text.lstrip()
            self._started = bool(text)
        body = text.rstrip()
        self._held = "" if final else text[len(body):]
        return body

    def add(self, token_ids: list[int]) -> str:
        """The text that ``token_ids`` (appended) make stable; often "" mid-character."""
        self.ids.extend(token_ids)
        raw = self._raw(final=False)
        if self._clean is None:
            return raw
        return self._clean.add(raw) if raw else ""

    def flush(self) -> str:
        """Whatever is held back, the generation being over."""
        raw = self._raw(final=True) if self.read < len(self.ids) else ""
        return raw if self._clean is None else self._clean.add(raw) + self._clean.flush()


class TextStream:
    """An iterator of text pieces for one prompt, generated as it is iterated.

    Each ``next()`` runs decoding steps until a piece of text is stable (or generation
    ends). :meth:`cancel` (from any thread, or inside the loop) stops it before the next
    step; the text the tokens generated so far make is still delivered, so the pieces
    join to the text of exactly the tokens generated. The pipeline is untouched by a
    cancel: its graph holds no state between steps, the stream holds it all."""

    def __init__(self, decoding: Decoding | BeamSearch, detokenizer: IncrementalDetokenizer,
                 eos_token_ids: list[int], prompt: Any = None) -> None:
        self._source = token_source(decoding, eos_token_ids)
        self._detokenizer = detokenizer
        self._cancel = threading.Event()
        self._lock = threading.Lock()
        self._finished = False
        self._pieces: list[str] = []
        #: the prompt as given (text or chat messages), for the caller's bookkeeping
        self.prompt = prompt
        #: the generated token ids so far (a final EOS included)
        self.token_ids: list[int] = []
        #: why generation ended: "eos", "stop" (a stop string), "length", "cancelled", or None while it runs
        self.finish_reason: str | None = None

    def cancel(self) -> None:
        """Stop before the next decoding step. Safe from any thread, any number of times."""
        self._cancel.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def text(self) -> str:
        """The text streamed so far (all of it once the stream is exhausted)."""
        return "".join(self._pieces)

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        # One consumer at a time: two threads iterating would interleave decoding steps.
        if not self._lock.acquire(blocking=False):
            raise InputError("this stream is being iterated by another thread; iterate it from one thread only "
                             "(cancel() is the call that is safe from any thread)")
        try:
            while not self._finished:
                piece = self._advance()
                if piece:
                    self._pieces.append(piece)
                    return piece
            raise StopIteration
        finally:
            self._lock.release()

    def _advance(self) -> str:
        """One decoding step (or the end of generation) and the text it makes stable. An
        EOS token goes to the text like any other (skipped there when it is a special token,
        as transformers' decode skips it)."""
        if self._cancel.is_set():
            return self._text(self._source.cancel()) + self._finish("cancelled")
        if self._source.done:
            return self._finish(self._source.reason())
        return self._text(self._source.advance())

    def _text(self, tokens: list[int]) -> str:
        if not tokens:
            return ""
        self.token_ids.extend(tokens)
        return self._detokenizer.add(tokens)

    def _finish(self, reason: str) -> str:
        self._finished = True
        self.finish_reason = reason
        logger.debug("stream finished (%s) after %d tokens", reason, len(self.token_ids))
        return self._detokenizer.flush()

    def close(self) -> None:
        """Same as :meth:`cancel` (the name a generator's consumers expect)."""
        self.cancel()

    def __enter__(self) -> TextStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cancel()
