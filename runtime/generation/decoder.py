"""The KV-cache loop for a decoder-only graph exported as one ``model.onnx`` with
``past_key_values.*`` inputs and ``present.*`` outputs.

Everything about the graph comes from the manifest's ``generation`` section: input and
KV names, KV heads and head size (for the empty cache of the first step), BOS/EOS/pad
ids. The first step runs the whole (left-padded) prompt with an empty past; each next
step feeds one token per row, the previous step's ``present.*`` as ``past_key_values.*``,
the attention mask grown by one, and position ids as transformers' generate computes
them (cumulative sum of the mask minus one, 1 on padding).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgeformers.models.errors import BundleError, InputError
from edgeformers.runtime.generation import processors
from edgeformers.runtime.session import OnnxModel


@dataclass
class GenerationSettings:
    """One call's decoding settings, named and defaulted as transformers' GenerationConfig."""

    max_new_tokens: int = 20
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 50
    top_p: float = 1.0
    repetition_penalty: float = 1.0
    eos_token_id: list[int] = field(default_factory=list)
    pad_token_id: int | None = None
    seed: int | None = None


@dataclass(frozen=True)
class DecoderLayout:
    """The graph's names and KV shape, read from the manifest's ``generation`` section."""

    input_ids: str
    attention_mask: str
    position_ids: str | None
    logits: str
    past: tuple[str, ...]
    present: tuple[str, ...]
    num_kv_heads: int
    head_size: int

    @classmethod
    def from_section(cls, section: dict[str, Any], where: str) -> DecoderLayout:
        try:
            names = section["inputs"]
            past, present = tuple(section["past_inputs"]), tuple(section["present_outputs"])
            layout = cls(
                input_ids=str(names["input_ids"]),
                attention_mask=str(names["attention_mask"]),
                position_ids=None if names.get("position_ids") is None else str(names["position_ids"]),
                logits=str(section["logits"]),
                past=tuple(map(str, past)),
                present=tuple(map(str, present)),
                num_kv_heads=int(section["num_kv_heads"]),
                head_size=int(section["head_size"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise BundleError(f"{where}: the manifest's generation section is incomplete or malformed ({err!r}); "
                              "re-export the bundle with edgeformers") from None
        if len(layout.past) != len(layout.present) or not layout.past:
            raise BundleError(f"{where}: the generation section pairs {len(layout.past)} past inputs with "
                              f"{len(layout.present)} present outputs")
        return layout


class DecoderOnlyGenerator:
    """Greedy or sampled continuation of left-padded token rows, with a KV cache."""

    def __init__(self, model: OnnxModel, section: dict[str, Any], where: str) -> None:
        self.model = model
        self.layout = DecoderLayout.from_section(section, where)
        missing = [n for n in (self.layout.input_ids, self.layout.attention_mask, *self.layout.past)
                   if n not in model.input_names]
        if missing:
            raise BundleError(f"{where}: the graph lacks the inputs the manifest names: {missing}")
        self.past_type = np.float16 if model.input_types.get(self.layout.past[0]) == np.float16 else np.float32

    def start(self, input_ids: np.ndarray, attention_mask: np.ndarray, settings: GenerationSettings) -> Decoding:
        """A pull-style decoding of the rows ``input_ids`` (left-padded, mask 0 on
        padding): call :meth:`Decoding.step` for each next token until ``done``."""
        if settings.max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be >= 1, got {settings.max_new_tokens}")
        return Decoding(self, input_ids, attention_mask, settings)

    def generate(self, input_ids: np.ndarray, attention_mask: np.ndarray, settings: GenerationSettings) -> np.ndarray:
        """The rows ``input_ids`` (left-padded, mask 0 on padding) followed by their new
        tokens; a row that produced an EOS is filled with the pad id until all rows end."""
        decoding = self.start(input_ids, attention_mask, settings)
        while not decoding.done:
            decoding.step()
        return decoding.sequences

    def _step(self, ids: np.ndarray, mask: np.ndarray, past: dict[str, np.ndarray]) -> np.ndarray:
        layout = self.layout
        feed = {layout.input_ids: ids, layout.attention_mask: mask, **past}
        if layout.position_ids is not None:
            positions = np.cumsum(mask, axis=1) - 1
            positions[mask == 0] = 1
            feed[layout.position_ids] = positions[:, -ids.shape[1]:]
        results = self.model.run(feed, [layout.logits, *layout.present])
        for name, present in zip(layout.past, layout.present):
            past[name] = results[present]
        return results[layout.logits]

    @staticmethod
    def _choose(scores: np.ndarray, sequences: np.ndarray, step: int, eos: list[int], settings: GenerationSettings,
                rng: np.random.Generator) -> np.ndarray:
        scores = processors.repetition_penalty(scores, sequences, settings.repetition_penalty)
        if step < settings.min_new_tokens and eos:
            scores = processors.suppress_eos(scores, eos)
        if not settings.do_sample:
            return scores.argmax(axis=-1)
        scores = processors.temperature(scores, settings.temperature)
        if settings.top_k:
            scores = processors.top_k(scores, settings.top_k)
        scores = processors.top_p(scores, settings.top_p)
        probs = processors.softmax(scores.astype(np.float64))
        return np.array([rng.choice(probs.shape[-1], p=row) for row in probs], dtype=np.int64)


class Decoding:
    """One batch being decoded: the sequences so far, the attention mask, the KV cache
    (each step's ``present.*`` become the next step's ``past_key_values.*``; no copy is
    made of them here) and which rows are still running."""

    def __init__(self, generator: DecoderOnlyGenerator, input_ids: np.ndarray, attention_mask: np.ndarray,
                 settings: GenerationSettings) -> None:
        self.generator = generator
        self.settings = settings
        self.eos = list(settings.eos_token_id)
        self.pad = settings.pad_token_id if settings.pad_token_id is not None else (self.eos[0] if self.eos else 0)
        self.rng = np.random.default_rng(settings.seed)
        self.sequences = input_ids.astype(np.int64)
        self.mask = attention_mask.astype(np.int64)
        self.prompt_length = self.sequences.shape[1]
        layout, batch = generator.layout, self.sequences.shape[0]
        empty = np.zeros((batch, layout.num_kv_heads, 0, layout.head_size), dtype=generator.past_type)
        self.past = {name: empty for name in layout.past}
        self.unfinished = np.ones(batch, dtype=bool)
        self._next_input = self.sequences

    @property
    def new_tokens(self) -> int:
        return self.sequences.shape[1] - self.prompt_length

    @property
    def done(self) -> bool:
        """Every row produced an EOS, or max_new_tokens are generated."""
        return not self.unfinished.any() or self.new_tokens >= self.settings.max_new_tokens

    def step(self) -> np.ndarray:
        """Run the graph once and return one new token per row (the pad id for finished rows)."""
        if self.done:
            raise InputError("this decoding is done; start another to generate more")
        generator = self.generator
        logits = generator._step(self._next_input, self.mask, self.past)
        scores = logits[:, -1, :].astype(np.float32)
        next_ids = generator._choose(scores, self.sequences, self.new_tokens, self.eos, self.settings, self.rng)
        next_ids = np.where(self.unfinished, next_ids, self.pad)
        self.sequences = np.concatenate([self.sequences, next_ids[:, None]], axis=1)
        self.mask = np.concatenate([self.mask, np.ones((len(next_ids), 1), dtype=np.int64)], axis=1)
        self._next_input = next_ids[:, None]
        if self.eos:
            self.unfinished &= ~np.isin(next_ids, self.eos)
        return next_ids
