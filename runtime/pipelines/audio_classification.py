"""audio-classification (wav2vec2 / HuBERT sequence-classification heads), with
transformers' ``top_k`` (default 5, None for every label, capped at the label count) and
``function_to_apply`` ("softmax" by default, "sigmoid", "none")."""

from __future__ import annotations

from typing import Any

from edgeformers.models.errors import InputError
from edgeformers.runtime.audio.io import audio_inputs, load_audio
from edgeformers.runtime.audio.waveform import WaveformModel
from edgeformers.runtime.pipelines.base import Pipeline, check_count, check_top_k, sigmoid, softmax, unbatch

_FUNCTIONS = {"softmax": softmax, "sigmoid": sigmoid, "none": lambda x: x}


class AudioClassificationPipeline(Pipeline):
    task = "audio-classification"
    uses_tokenizer = False

    def prepare(self) -> None:
        self.waveform = WaveformModel(self.bundle, self.model)

    @property
    def sampling_rate(self) -> int:
        return self.waveform.sampling_rate

    def __call__(
        self,
        inputs: Any,
        top_k: int | None = 5,
        function_to_apply: str | None = None,
        batch_size: int | None = None,
    ) -> Any:
        """One input -> ``[{"score", "label"}, ...]`` best first; a list -> one such list
        per input. Inputs as the speech-recognition pipeline takes them. ``batch_size`` caps how
        many inputs of one length run together (the graph takes no attention mask)."""
        check_top_k(top_k)
        check_count("batch_size", batch_size)
        function = getattr(function_to_apply, "value", function_to_apply) or "softmax"
        if function not in _FUNCTIONS:
            raise InputError(f"function_to_apply {function_to_apply!r} is unknown; expected 'softmax', 'sigmoid' or "
                             "'none'")
        items, single = audio_inputs(inputs)
        wheres = ["inputs"] if single else [f"inputs[{index}]" for index in range(len(items))]
        audios = [load_audio(item, self.sampling_rate, where)[0] for item, where in zip(items, wheres)]
        results = []
        for logits in self.waveform.logits_batch(audios, wheres, batch_size):
            scores = _FUNCTIONS[function](logits.astype("float32"))
            count = len(scores) if top_k is None else min(top_k, len(scores))
            best = sorted(range(len(scores)), key=lambda i: -float(scores[i]))[:count]
            results.append([{"score": float(scores[i]), "label": self.label(i)} for i in best])
        return unbatch(results, single)
