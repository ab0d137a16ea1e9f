"""Encoder-decoder decoding: an encoder graph run once per batch, then a merged decoder
graph (optimum's ``decoder_model_merged``: the first step and the cached steps in one
graph, chosen by a ``use_cache_branch`` input) stepped by the search algorithms in
search.py like any :class:`~edgeformers.runtime.generation.stepper.Stepper`.

Everything about the graphs comes from the manifest's ``generation`` section of kind
``"encoder-decoder"`` (:class:`Seq2SeqLayout`), never from the architecture's name: the
encoder's input names are data (``input_ids``/``attention_mask`` for text,
``input_features`` for Whisper, ``pixel_values`` for images), so one stepper serves all.

The first decoder step runs the no-cache branch with empty past inputs and returns every
``present.*``; the cross-attention ones (``present.*.encoder.*``) depend only on the
encoder states, so they are kept from that step: the cached branch returns placeholders
for them. Later steps feed one token per row, the decoder's own presents of the step
before and the kept cross-attention ones.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgeformers.models.errors import BundleError, InputError
from edgeformers.runtime.generation.beams import BeamSearch
from edgeformers.runtime.generation.search import Decoding, StopRule
from edgeformers.runtime.generation.settings import GenerationSettings
from edgeformers.runtime.session import OnnxModel

KIND = "encoder-decoder"


@dataclass(frozen=True)
class Seq2SeqLayout:
    """The two graphs' names and cache shapes, from the manifest's ``generation`` section."""

    encoder_inputs: dict[str, str]
    encoder_output: str
    decoder_input_ids: str
    encoder_hidden_states: str
    encoder_attention_mask: str | None
    use_cache_branch: str | None
    logits: str
    past: tuple[str, ...]
    present: tuple[str, ...]
    #: The past inputs that hold cross-attention keys/values (fixed after the first step).
    cross_past: frozenset[str]
    num_kv_heads: int
    head_size: int
    decoder_start_token_id: int
    max_positions: int | None

    @classmethod
    def from_section(cls, section: dict[str, Any], where: str) -> Seq2SeqLayout:
        if section.get("kind") != KIND:
            raise BundleError(f"{where}: the manifest's generation section is of kind {section.get('kind')!r}, "
                              f"not {KIND!r}; this bundle is not an encoder-decoder generator")
        try:
            encoder, decoder = section["encoder"], section["decoder"]
            names = decoder["inputs"]
            max_positions = section.get("max_positions")
            layout = cls(
                encoder_inputs={str(k): str(v) for k, v in dict(encoder["inputs"]).items()},
                encoder_output=str(encoder["output"]),
                decoder_input_ids=str(names["input_ids"]),
                encoder_hidden_states=str(names["encoder_hidden_states"]),
                encoder_attention_mask=_optional(names.get("encoder_attention_mask")),
                use_cache_branch=_optional(names.get("use_cache_branch")),
                logits=str(decoder["logits"]),
                past=tuple(map(str, decoder["past_inputs"])),
                present=tuple(map(str, decoder["present_outputs"])),
                cross_past=frozenset(map(str, decoder.get("cross_past_inputs", ()))),
                num_kv_heads=int(section["num_kv_heads"]),
                head_size=int(section["head_size"]),
                decoder_start_token_id=int(section["decoder_start_token_id"]),
                max_positions=None if max_positions is None else int(max_positions),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise BundleError(f"{where}: the manifest's encoder-decoder generation section is incomplete or "
                              f"malformed ({err!r}); re-export the bundle with edgeformers") from None
        if len(layout.past) != len(layout.present) or not layout.past or not layout.cross_past <= set(layout.past):
            raise BundleError(f"{where}: the generation section pairs {len(layout.past)} past inputs with "
                              f"{len(layout.present)} present outputs (cross-attention ones among them)")
        return layout


def _optional(value: Any) -> str | None:
    return None if value is None else str(value)


class Seq2SeqStepper:
    """One batch: its encoder states (computed here, once) and the decoder's KV cache."""

    def __init__(self, encoder: OnnxModel, decoder: OnnxModel, layout: Seq2SeqLayout,
                 encoder_feed: dict[str, np.ndarray]) -> None:
        self.decoder = decoder
        self.layout = layout
        feed = {layout.encoder_inputs[role]: value for role, value in encoder_feed.items()
                if role in layout.encoder_inputs}
        self.hidden = encoder.run(feed, [layout.encoder_output])[layout.encoder_output]
        mask = encoder_feed.get("attention_mask")
        rows = self.hidden.shape[0]
        self.mask = None if mask is None else np.asarray(mask, dtype=np.int64)
        if layout.encoder_attention_mask is not None and self.mask is None:
            self.mask = np.ones(self.hidden.shape[:2], dtype=np.int64)
        past_type = np.float16 if decoder.input_types.get(layout.past[0]) == np.float16 else np.float32
        empty = np.zeros((rows, layout.num_kv_heads, 0, layout.head_size), dtype=past_type)
        self.past = {name: empty for name in layout.past}
        self._outputs = {name: present for name, present in zip(layout.past, layout.present)}
        self._self_outputs = [self._outputs[name] for name in layout.past if name not in layout.cross_past]
        #: Which input row each row's encoder states come from: rows of one source hold equal
        #: encoder states, masks and cross-attention caches, so beam reorders leave them alone.
        self.source = np.arange(rows)
        self.started = False

    def step(self, input_ids: np.ndarray) -> np.ndarray:
        layout = self.layout
        if input_ids.shape[0] != self.hidden.shape[0]:
            raise BundleError(f"the decoder step feeds {input_ids.shape[0]} rows for {self.hidden.shape[0]} "
                              "encoder rows")
        feed: dict[str, np.ndarray] = {layout.decoder_input_ids: np.asarray(input_ids, dtype=np.int64),
                                       layout.encoder_hidden_states: self.hidden, **self.past}
        if layout.encoder_attention_mask is not None and self.mask is not None:
            feed[layout.encoder_attention_mask] = self.mask
        if layout.use_cache_branch is not None:
            feed[layout.use_cache_branch] = np.array([self.started])
        # The cached branch returns placeholders for the cross-attention presents: keep the first step's.
        wanted = list(self._outputs.values()) if not self.started else self._self_outputs
        results = self.decoder.run(feed, [layout.logits, *wanted])
        for name, present in self._outputs.items():
            if present in results:
                self.past[name] = results[present]
        self.started = True
        return results[layout.logits][:, -1, :].astype(np.float32, copy=False)

    def reorder(self, rows: np.ndarray) -> None:
        source = self.source[rows]
        same_sources = np.array_equal(source, self.source)  # beams swapped within their input: no copy
        if not same_sources:
            self.hidden = self.hidden[rows]
            if self.mask is not None:
                self.mask = self.mask[rows]
        self.source = source
        self.past = {name: value if same_sources and name in self.layout.cross_past else value[rows]
                     for name, value in self.past.items()}


class Seq2SeqGenerator:
    """Greedy, sampled or beam-search generation from encoder inputs, on two graphs."""

    def __init__(self, encoder: OnnxModel, decoder: OnnxModel, section: dict[str, Any], where: str) -> None:
        self.encoder = encoder
        self.decoder = decoder
        self.layout = Seq2SeqLayout.from_section(section, where)
        vocab = section.get("vocab_size")
        #: Bounds the token ids a call may name (forced, bad words, EOS); None when unrecorded.
        self.vocab_size = vocab if isinstance(vocab, int) and not isinstance(vocab, bool) else None
        layout = self.layout
        missing = [n for n in layout.encoder_inputs.values() if n not in encoder.input_names]
        missing += [n for n in (layout.decoder_input_ids, layout.encoder_hidden_states, *layout.past)
                    if n not in decoder.input_names]
        missing += [n for n in (layout.encoder_output,) if n not in encoder.output_names]
        if missing:
            raise BundleError(f"{where}: the graphs lack the inputs/outputs the manifest names: {missing}")

    def stepper(self, encoder_feed: dict[str, np.ndarray]) -> Seq2SeqStepper:
        """A stepper over one batch; ``encoder_feed`` maps the encoder's input roles
        (``input_ids``, ``attention_mask``, ``input_features`` …) to arrays."""
        return Seq2SeqStepper(self.encoder, self.decoder, self.layout, encoder_feed)

    def start_ids(self, rows: int) -> np.ndarray:
        return np.full((rows, 1), self.layout.decoder_start_token_id, dtype=np.int64)

    def start(self, encoder_feed: dict[str, np.ndarray], settings: GenerationSettings,
              decoder_input_ids: np.ndarray | None = None, stop: StopRule | None = None) -> Decoding | BeamSearch:
        """A pull-style decoding of one sequence per row: greedy or sampled
        (:class:`Decoding`), or a :class:`BeamSearch` for ``num_beams`` > 1; step until
        ``done``. ``decoder_input_ids`` replaces the decoder start token (Whisper's forced
        prompt tokens)."""
        rows = next(iter(encoder_feed.values())).shape[0]
        ids = self.start_ids(rows) if decoder_input_ids is None else np.asarray(decoder_input_ids, dtype=np.int64)
        _check_new_tokens(settings, ids.shape[1], self.layout.max_positions)
        stepper = self.stepper(encoder_feed)
        if settings.num_beams > 1:
            return BeamSearch(stepper, ids, settings, self.layout.max_positions, stop)
        copies = settings.num_return_sequences
        if copies > 1:
            if not settings.do_sample:
                raise InputError(f"num_return_sequences={copies} needs num_beams >= {copies} or do_sample=True: "
                                 "greedy decoding gives one sequence per input")
            expand = np.repeat(np.arange(rows), copies)
            stepper.reorder(expand)
            ids = ids[expand]
        return Decoding(stepper, ids, settings, self.layout.max_positions, stop)

    def generate(self, encoder_feed: dict[str, np.ndarray], settings: GenerationSettings,
                 decoder_input_ids: np.ndarray | None = None, stop: StopRule | None = None) -> np.ndarray:
        """The decoder sequences (start token first) of every row, ``num_return_sequences``
        consecutive rows per input row; rows that ended early are filled with the pad id."""
        return self.start(encoder_feed, settings, decoder_input_ids, stop).run()


def _check_new_tokens(settings: GenerationSettings, fed: int, max_positions: int | None) -> None:
    """At least one new token, and no more than the decoder has positions for (its
    position table has no row past them: a typed error here, not one from onnxruntime)."""
    if settings.max_new_tokens is not None and settings.max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be >= 1, got {settings.max_new_tokens}")
    total = settings.total_length(fed, max_positions)
    if max_positions and total > max_positions:
        asked = (f"max_new_tokens={settings.max_new_tokens}" if settings.max_new_tokens is not None
                 else f"max_length={settings.max_length}")
        raise InputError(f"{asked} passes the decoder's {max_positions} positions ({fed} start token(s) + new tokens); "
                         f"pass max_new_tokens <= {max_positions - fed}")
