"""Whisper exports (automatic-speech-recognition on a WhisperForConditionalGeneration).

optimum's ``automatic-speech-recognition-with-past`` writes ``encoder_model.onnx`` (input_features ->
last_hidden_state) and ``decoder_model_merged.onnx`` (first and cached steps behind use_cache_branch);
the bundle layout, manifest ``generation`` section (kind "encoder-decoder", encoder input
``input_features``, the generation config as ``defaults``) and quantized variants are the seq2seq
branch's (exporter/seq2seq.py). What differs is the validation data: log-mel features of synthetic
audio made by the checkpoint's own WhisperFeatureExtractor, and decoder prompts of Whisper's forced
tokens (``<|startoftranscript|>`` + ``<|notimestamps|>`` for English-only models).

fp32 is held to the family's tolerance (the Whisper encoder differs from PyTorch by ~1e-3 at
activations of |10|: attention over 1500 frames reorders float32 sums) on the encoder states and the
decoder's logits without and with past, and greedy tokens must equal PyTorch's; variants are held to
greedy-token agreement with fp32 (both graphs of the variant).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeformers.exporter.audio_inputs import copy_audio_files
from edgeformers.exporter.seq2seq import TwoGraphKind, generation_section
from edgeformers.exporter.validate import note_max_diff
from edgeformers.models.agreement import GREEDY_TOKEN_AGREEMENT, AgreementRule
from edgeformers.models.errors import ExportError, ValidationError

EXPORT_TASK = "automatic-speech-recognition-with-past"
NEW_TOKENS = 8
#: (kind, seconds) of the validation clips; the agreement set is twice as many, other seeds.
CLIPS: tuple[tuple[str, float], ...] = (("speechlike", 3.0), ("chirp", 2.0), ("tones", 1.0), ("speechlike", 6.5))
AGREEMENT_RULE = AgreementRule(
    GREEDY_TOKEN_AGREEMENT, 0.85,
    "Whisper: greedy decoder continuations (8 new tokens after the forced prompt, no EOS stop, the generation "
    "config's suppressed tokens applied) of synthetic audio clips by fp32 and the variant (encoder and decoder "
    "both of that variant): positions that agree up to and including each row's first difference",
)


def is_whisper(model_type: str) -> bool:
    return model_type == "whisper"


def prompt_ids(generation: dict[str, Any]) -> list[int]:
    """Whisper's forced start: decoder start, then forced_decoder_ids in position order (the
    English-only models force <|notimestamps|>; a multilingual one's language slot, None, is
    filled with English and its task with transcribe)."""
    defaults = generation.get("defaults", generation)
    ids = [int(generation["decoder_start_token_id"])]
    for position, token in sorted((int(p), t) for p, t in defaults.get("forced_decoder_ids") or []):
        if position != len(ids):
            break
        if token is None:
            token = (defaults.get("lang_to_id") or {}).get("<|en|>")
        if token is None:
            break
        ids.append(int(token))
    return ids


def _features(folder: Path, seeds: range) -> np.ndarray:
    from edgeformers.exporter.audio_inputs import reference_extractor, synthetic_audio

    extractor = reference_extractor(folder)
    rate = int(extractor.sampling_rate)
    clips = [synthetic_audio(kind, seconds, rate, seed) for seed in seeds for kind, seconds in CLIPS]
    return np.concatenate([extractor(clip, sampling_rate=rate, return_tensors="np")["input_features"]
                           for clip in clips]).astype(np.float32)


def _generator(graphs: dict[str, Path], section: dict[str, Any]) -> Any:
    from edgeformers.exporter.seq2seq_validate import onnx_generator

    return onnx_generator(graphs, section)


def _greedy(generator: Any, features: np.ndarray, section: dict[str, Any]) -> np.ndarray:
    from edgeformers.runtime.generation.settings import GenerationSettings

    defaults = section.get("defaults", {})
    prompt = prompt_ids(section)
    settings = GenerationSettings(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                                  eos_token_id=list(section["eos_token_id"]),
                                  suppress_tokens=defaults.get("suppress_tokens"),
                                  begin_suppress_tokens=defaults.get("begin_suppress_tokens"))
    ids = np.tile(np.asarray(prompt, dtype=np.int64), (len(features), 1))
    return generator.generate({"input_features": features}, settings, decoder_input_ids=ids)[:, len(prompt):]


def validate_whisper(checkpoint: Path, folder: Path, graphs: dict[str, Path], section: dict[str, Any],
                     atol: float) -> dict[str, Any]:
    """fp32 encoder states and decoder logits (without, then with past) against PyTorch's
    on synthetic audio, and greedy tokens (no processors, EOS held back) against a PyTorch
    greedy loop from the same prompt."""
    import torch
    import transformers

    try:
        model = transformers.WhisperForConditionalGeneration.from_pretrained(str(checkpoint)).eval()
    except Exception as err:
        raise ExportError(f"{checkpoint}: transformers could not load it as WhisperForConditionalGeneration: {err}") \
            from err
    features = _features(folder, range(1))
    prompt = np.tile(np.asarray(prompt_ids(section), dtype=np.int64), (len(features), 1))
    generator = _generator(graphs, section)
    stepper = generator.stepper({"input_features": features})
    diffs: dict[str, float] = {}
    with torch.inference_mode():
        encoded = model.get_encoder()(torch.from_numpy(features))
        note_max_diff(diffs, "encoder_last_hidden_state", stepper.hidden, encoded.last_hidden_state.numpy())
        want = model(encoder_outputs=encoded, decoder_input_ids=torch.from_numpy(prompt), use_cache=True)
        got = stepper.step(prompt)
        note_max_diff(diffs, "logits_without_past", got, want.logits[:, -1].numpy())
        nxt = got.argmax(-1)[:, None].astype(np.int64)
        want = model(encoder_outputs=encoded, decoder_input_ids=torch.from_numpy(nxt),
                     past_key_values=want.past_key_values, use_cache=True)
        note_max_diff(diffs, "logits_with_past", stepper.step(nxt), want.logits[:, -1].numpy())
        ids = torch.from_numpy(prompt)
        for _ in range(NEW_TOKENS):  # plain greedy, no cache, EOS held back: the reference for the runtime's loop
            logits = model(encoder_outputs=encoded, decoder_input_ids=ids).logits[:, -1]
            logits[:, list(section["eos_token_id"])] = -float("inf")
            ids = torch.cat([ids, logits.argmax(-1, keepdim=True)], dim=1)
    from edgeformers.runtime.generation.settings import GenerationSettings

    settings = GenerationSettings(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                                  eos_token_id=list(section["eos_token_id"]))
    tokens = generator.generate({"input_features": features}, settings, decoder_input_ids=prompt)
    identical = int(sum(np.array_equal(a, b) for a, b in zip(tokens, ids.numpy())))
    failures = {k: v for k, v in diffs.items() if not v <= atol}
    if failures:
        listing = ", ".join(f"{k}: {v:.3g}" for k, v in failures.items())
        raise ValidationError(f"the ONNX Whisper encoder-decoder differs from PyTorch beyond atol={atol:g} ({listing})")
    if identical != len(features):
        raise ValidationError(f"greedy decoding differs from PyTorch on {len(features) - identical} of {len(features)} "
                              f"synthetic clips ({NEW_TOKENS} new tokens each; first row: {tokens[0].tolist()} "
                              f"against {ids[0].tolist()})")
    return {"reference": "pytorch", "inputs": len(features), "clips": [list(c) for c in CLIPS], "atol": atol,
            "max_abs_diff": diffs, "greedy_rows_identical": identical, "passed": True}


class WhisperAgreement:
    """Greedy-token agreement of a variant's encoder + decoder with fp32's on synthetic clips."""

    def __init__(self, folder: Path, task: str, section: dict[str, Any], fp32: dict[str, Path],
                 min_agreement: float | None = None) -> None:
        from edgeformers.exporter.agreement import AgreementCheck, check_min_agreement

        self.section = section
        self.features = _features(folder, range(1, 3))
        self.check = AgreementCheck(task=task, rule=AGREEMENT_RULE, feeds=[], positions=[],
                                    examples=len(self.features),
                                    threshold=AGREEMENT_RULE.threshold if min_agreement is None else
                                    check_min_agreement(min_agreement),
                                    threshold_source="catalog" if min_agreement is None else "user")
        self.reference = self._run(fp32)

    def _run(self, graphs: dict[str, Path]) -> list[dict[str, np.ndarray]]:
        return [{"tokens": _greedy(_generator(graphs, self.section), self.features, self.section)}]

    def measure(self, graphs: dict[str, Path]) -> dict[str, Any]:
        from edgeformers.exporter.agreement import task_agreement

        return task_agreement(self.reference, self._run(graphs), self.check)


def _agreement(work: Path, task: str, generation: dict[str, Any], fp32: dict[str, Path], processing: dict[str, Any],
               min_agreement: float | None) -> WhisperAgreement:
    return WhisperAgreement(work, task, generation, fp32, min_agreement)


def build_whisper(checkpoint: Any, work: Path, spec: Any, family: Any, dtypes: list[str], opset: int | None,
                  atol: float | None, step: Any, external_data: bool, allow_degraded: bool, options: Any,
                  optimize: str | None, min_agreement: float | None) -> Any:
    """exporter/build.py's ``_build`` for Whisper: optimum's two graphs in the seq2seq bundle
    layout, Whisper's validation and agreement, the feature extractor's files."""
    from edgeformers.exporter import build
    from edgeformers.exporter.seq2seq import build_two_graphs

    if optimize:
        raise ExportError(f"--optimize {optimize}: Whisper exports take no graph optimization yet")
    step(f"[1/4] exporting {EXPORT_TASK} (encoder_model + decoder_model_merged) with optimum")
    raw = work / "_optimum"
    build._optimum_export(checkpoint.path, raw, EXPORT_TASK, opset)
    return build_two_graphs(checkpoint, work, raw, spec, family, dtypes, atol, step, external_data, allow_degraded,
                            options, min_agreement, KIND)



#: How exporter/seq2seq.py builds and re-validates a Whisper bundle.
KIND = TwoGraphKind(section=generation_section, validate=validate_whisper, agreement=_agreement,
                    copy_files=copy_audio_files)
