"""The model side of decoding, apart from the search algorithms: a :class:`Stepper`
turns the next tokens of each row into next-token logits and keeps its own KV cache,
attention mask and positions. The search (runtime/generation/search.py) drives any
stepper: this decoder-only one, or the encoder-decoder one in seq2seq.py.

:class:`DecoderOnlyStepper` runs a decoder-only graph exported as one ``model.onnx``
with ``past_key_values.*`` inputs and ``present.*`` outputs. Everything about the graph
comes from the manifest's ``generation`` section (:class:`DecoderLayout`): input and KV
names, KV heads and head size (for the empty cache of the first step). The first step
feeds the whole left-padded prompt with an empty past; each next step one token per row,
the previous step's ``present.*`` as ``past_key_values.*`` (no copy is made of them), the
attention mask grown by one, and position ids as transformers' generate computes them
(cumulative sum of the mask minus one, 1 on padding).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from edgeformers.models.errors import BundleError
from edgeformers.runtime.session import OnnxModel


class Stepper(Protocol):
    def step(self, input_ids: np.ndarray) -> np.ndarray:
        """Feed the new tokens of each row ([rows, n] int64: on the first call the whole
        prompt (decoder-only) or the decoder start tokens (seq2seq); afterwards [rows, 1])
        and return the next-token logits [rows, vocab] as float32."""
        ...

    def reorder(self, rows: np.ndarray) -> None:
        """Keep/reorder/repeat the cache rows by index (beam search after each step;
        np.repeat at the start to expand a batch for beams or several sequences). Also
        applies to masks and encoder states."""
        ...


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
    #: transformers.js's decoder_model_merged: False on the first step, True after.
    use_cache_branch: str | None = None

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
                use_cache_branch=None if names.get("use_cache_branch") is None else str(names["use_cache_branch"]),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise BundleError(f"{where}: the manifest's generation section is incomplete or malformed ({err!r}); "
                              "re-export the bundle with edgeformers") from None
        if len(layout.past) != len(layout.present) or not layout.past:
            raise BundleError(f"{where}: the generation section pairs {len(layout.past)} past inputs with "
                              f"{len(layout.present)} present outputs")
        return layout


class DecoderOnlyStepper:
    """One batch's KV cache over a decoder-only graph (see the module docstring)."""

    def __init__(self, model: OnnxModel, layout: DecoderLayout, attention_mask: np.ndarray,
                 past_type: type = np.float32) -> None:
        self.model = model
        self.layout = layout
        self.mask = np.asarray(attention_mask, dtype=np.int64)
        empty = np.zeros((self.mask.shape[0], layout.num_kv_heads, 0, layout.head_size), dtype=past_type)
        self.past = {name: empty for name in layout.past}
        self.started = False

    def step(self, input_ids: np.ndarray) -> np.ndarray:
        layout, rows, n = self.layout, input_ids.shape[0], input_ids.shape[1]
        cached = self.started
        if self.started:
            self.mask = np.concatenate([self.mask, np.ones((rows, n), dtype=np.int64)], axis=1)
        elif self.mask.shape != input_ids.shape:
            raise BundleError(f"the first step feeds {input_ids.shape} tokens for an attention mask of "
                              f"{self.mask.shape}")
        self.started = True
        feed = {layout.input_ids: input_ids.astype(np.int64, copy=False), layout.attention_mask: self.mask,
                **self.past}
        if layout.position_ids is not None:
            positions = np.cumsum(self.mask, axis=1) - 1
            positions[self.mask == 0] = 1
            feed[layout.position_ids] = positions[:, -n:]
        if layout.use_cache_branch is not None:
            feed[layout.use_cache_branch] = np.array([cached])
        # only the logits are checked for NaN/inf: a broken cache shows in the next step's logits
        results = self.model.run(feed, [layout.logits, *layout.present], checked=[layout.logits])
        for name, present in zip(layout.past, layout.present):
            self.past[name] = results[present]
        return results[layout.logits][:, -1, :].astype(np.float32, copy=False)

    def reorder(self, rows: np.ndarray) -> None:
        if len(rows) == len(self.mask) and (rows == np.arange(len(rows))).all():
            return  # beams that all kept their own row: no copy of the cache
        self.mask = self.mask[rows]
        self.past = {name: value[rows] for name, value in self.past.items()}
