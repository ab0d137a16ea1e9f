"""image-to-text exports (a VisionEncoderDecoder such as ViT + GPT-2).

optimum's ``image-to-text-with-past`` writes ``encoder_model.onnx`` (pixel_values ->
last_hidden_state) and ``decoder_model_merged.onnx``. A GPT-2-style decoder caches only its
self-attention (``past_key_values.N.key/value``; cross-attention is recomputed from the encoder
states each step), so the manifest's encoder-decoder section lists those pasts and no
cross-attention ones: the runtime's Seq2SeqStepper needs nothing else. Bundle layout and
variants are the seq2seq branch's (exporter/seq2seq.py); the validation data are synthetic
images through the checkpoint's own image processor (exporter/vision_inputs.py).

fp32 is held to the family's tolerance on the encoder states and the decoder's logits without
and with past, and greedy tokens must equal PyTorch's ``generate``; variants are held to
greedy-token agreement with fp32 (both graphs of the variant).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from edgeformers.exporter.seq2seq import TwoGraphKind
from edgeformers.exporter.validate import note_max_diff
from edgeformers.models.errors import ExportError, ValidationError

EXPORT_TASK = "image-to-text-with-past"
NEW_TOKENS = 8
_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")


def is_image_to_text(export_task: str) -> bool:
    return export_task == EXPORT_TASK


def generation_section(folder: Path, config: dict[str, Any], graphs: dict[str, Path]) -> dict[str, Any]:
    """The manifest's encoder-decoder section for a decoder with self-attention pasts only."""
    from edgeformers.exporter.seq2seq import _io, _read

    enc_in, enc_out = _io(graphs["encoder_model"])
    dec_in, dec_out = _io(graphs["decoder_model_merged"])
    key = lambda n: (int(_PAST.match(n).group(1)), _PAST.match(n).group(2))  # type: ignore[union-attr]  # noqa: E731
    past = sorted((n for n in dec_in if _PAST.match(n)), key=key)
    present = [n.replace("past_key_values.", "present.", 1) for n in past]
    missing = [n for n in ("input_ids", "encoder_hidden_states", "use_cache_branch") if n not in dec_in]
    missing += [n for n in ("logits", *present) if n not in dec_out]
    if not past or missing or "last_hidden_state" not in enc_out or "pixel_values" not in enc_in:
        raise ExportError(f"{graphs['decoder_model_merged'].name}: not the image encoder + merged decoder optimum "
                          f"writes for image-to-text (missing {missing or ['past_key_values.*']})")
    heads, head_size = dec_in[past[0]][1], dec_in[past[0]][3]
    if not all(isinstance(v, int) and v for v in (heads, head_size)):
        raise ExportError(f"{past[0]} has no fixed head count / head size ({dec_in[past[0]]})")
    decoder = config.get("decoder") or {}
    generation = _read(folder / "generation_config.json")
    value = lambda name: generation.get(name, config.get(name, decoder.get(name)))  # noqa: E731
    eos = value("eos_token_id")
    section: dict[str, Any] = {
        "kind": "encoder-decoder",
        "encoder": {"component": "encoder_model", "inputs": {n: n for n in enc_in}, "output": "last_hidden_state"},
        "decoder": {
            "component": "decoder_model_merged",
            "inputs": {"input_ids": "input_ids", "encoder_hidden_states": "encoder_hidden_states",
                       "encoder_attention_mask": None, "use_cache_branch": "use_cache_branch"},
            "logits": "logits", "past_inputs": past, "present_outputs": present, "cross_past_inputs": [],
        },
        "num_layers": len(past) // 2,
        "num_heads": heads,
        "num_kv_heads": heads,
        "head_size": head_size,
        "max_positions": decoder.get("n_positions") or decoder.get("max_position_embeddings"),
        "vocab_size": decoder.get("vocab_size"),
        "decoder_start_token_id": value("decoder_start_token_id"),
        "bos_token_id": value("bos_token_id"),
        "eos_token_id": [eos] if isinstance(eos, int) else list(eos or []),
        "pad_token_id": value("pad_token_id"),
        "forced_bos_token_id": value("forced_bos_token_id"),
        "forced_eos_token_id": value("forced_eos_token_id"),
        "defaults": {k: v for k, v in generation.items() if k != "transformers_version"},
    }
    if not isinstance(section["decoder_start_token_id"], int):
        raise ExportError("the checkpoint names no decoder_start_token_id; an image-to-text model cannot start "
                          "decoding without it")
    return section


def _pixels(folder: Path, task: str, count: int | None = None) -> list[np.ndarray]:
    """Batches of pixel values of the synthetic validation (or agreement) images."""
    from edgeformers.exporter.vision_inputs import (
        BATCH_SIZE,
        agreement_images,
        preprocess,
        reference_processor,
        validation_images,
    )

    processor = reference_processor(folder)
    if count is None:
        images = validation_images()
        return [preprocess(processor, [image], ["pixel_values"])["pixel_values"] for image in images] + [
            preprocess(processor, images, ["pixel_values"])["pixel_values"]]
    images = agreement_images("object-detection")[:count]
    return [preprocess(processor, images[i:i + BATCH_SIZE], ["pixel_values"])["pixel_values"]
            for i in range(0, len(images), BATCH_SIZE)]


def _greedy(generator: Any, pixels: np.ndarray, section: dict[str, Any]) -> np.ndarray:
    from edgeformers.runtime.generation.settings import GenerationSettings

    settings = GenerationSettings(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS,
                                  eos_token_id=list(section["eos_token_id"]))
    return generator.generate({"pixel_values": pixels}, settings)[:, 1:]


def validate_image_to_text(checkpoint: Path, folder: Path, graphs: dict[str, Path], section: dict[str, Any],
                           atol: float) -> dict[str, Any]:
    """fp32 encoder states and decoder logits (without, then with past) against PyTorch's,
    and greedy tokens against ``generate``, on each validation image and all as one batch."""
    import torch
    import transformers

    from edgeformers.exporter.seq2seq_validate import onnx_generator
    from edgeformers.exporter.vision_inputs import describe_inputs

    try:
        model = transformers.VisionEncoderDecoderModel.from_pretrained(str(checkpoint), trust_remote_code=False).eval()
    except Exception as err:
        raise ExportError(f"{checkpoint}: transformers could not load it as VisionEncoderDecoderModel: {err}") from err
    generator = onnx_generator(graphs, section)
    start = int(section["decoder_start_token_id"])
    diffs = {"encoder_last_hidden_state": 0.0, "logits_without_past": 0.0, "logits_with_past": 0.0}
    rows = identical = 0
    plain = transformers.GenerationConfig(decoder_start_token_id=start, max_new_tokens=NEW_TOKENS,
                                          min_new_tokens=NEW_TOKENS, do_sample=False, num_beams=1,
                                          pad_token_id=section["pad_token_id"], eos_token_id=section["eos_token_id"])
    batches = _pixels(folder, "image-to-text")
    with torch.inference_mode():
        for pixels in batches:
            stepper = generator.stepper({"pixel_values": pixels})
            encoded = model.encoder(pixel_values=torch.from_numpy(pixels))
            note_max_diff(diffs, "encoder_last_hidden_state", stepper.hidden, encoded.last_hidden_state.numpy())
            first = np.full((len(pixels), 1), start, dtype=np.int64)
            want = model(encoder_outputs=encoded, decoder_input_ids=torch.from_numpy(first), use_cache=True)
            got = stepper.step(first)
            note_max_diff(diffs, "logits_without_past", got, want.logits[:, -1].numpy())
            nxt = got.argmax(-1)[:, None].astype(np.int64)
            want = model(encoder_outputs=encoded, decoder_input_ids=torch.from_numpy(nxt),
                         past_key_values=want.past_key_values, use_cache=True)
            note_max_diff(diffs, "logits_with_past", stepper.step(nxt), want.logits[:, -1].numpy())
            expected = model.generate(pixel_values=torch.from_numpy(pixels), generation_config=plain).numpy()[:, 1:]
            tokens = _greedy(generator, pixels, section)
            rows += len(tokens)
            identical += int(sum(np.array_equal(a, b) for a, b in zip(tokens, expected)))
    failures = {k: v for k, v in diffs.items() if not v <= atol}
    if failures:
        listing = ", ".join(f"{k}: {v:.3g}" for k, v in failures.items())
        raise ValidationError(f"the ONNX image-to-text model differs from PyTorch beyond atol={atol:g} ({listing})")
    if identical != rows:
        raise ValidationError(f"greedy decoding differs from PyTorch's generate on {rows - identical} of {rows} "
                              f"validation images ({NEW_TOKENS} new tokens each)")
    return {"reference": "pytorch", "inputs": len(batches), "images": describe_inputs(), "atol": atol,
            "max_abs_diff": diffs, "greedy_rows_identical": identical, "passed": True}


class ImageToTextAgreement:
    """Greedy-token agreement of a variant's encoder + decoder with fp32's on 16 synthetic images."""

    def __init__(self, folder: Path, task: str, section: dict[str, Any], fp32: dict[str, Path],
                 min_agreement: float | None = None) -> None:
        from edgeformers.exporter.agreement import AgreementCheck, check_min_agreement
        from edgeformers.models.agreement import agreement_rule

        rule = agreement_rule(task)
        self.section = section
        self.batches = _pixels(folder, task, count=16)
        self.check = AgreementCheck(task=task, rule=rule, feeds=[], positions=[],
                                    examples=sum(len(b) for b in self.batches),
                                    threshold=rule.threshold if min_agreement is None else
                                    check_min_agreement(min_agreement),
                                    threshold_source="catalog" if min_agreement is None else "user")
        self.reference = self._run(fp32)

    def _run(self, graphs: dict[str, Path]) -> list[dict[str, np.ndarray]]:
        from edgeformers.exporter.seq2seq_validate import onnx_generator

        generator = onnx_generator(graphs, self.section)
        return [{"tokens": _greedy(generator, pixels, self.section)} for pixels in self.batches]

    def measure(self, graphs: dict[str, Path]) -> dict[str, Any]:
        from edgeformers.exporter.agreement import task_agreement

        return task_agreement(self.reference, self._run(graphs), self.check)


def _agreement(work: Path, task: str, generation: dict[str, Any], fp32: dict[str, Path], processing: dict[str, Any],
               min_agreement: float | None) -> ImageToTextAgreement:
    return ImageToTextAgreement(work, task, generation, fp32, min_agreement)


def build_image_to_text(checkpoint: Any, work: Path, spec: Any, family: Any, dtypes: list[str], opset: int | None,
                        atol: float | None, step: Any, external_data: bool, allow_degraded: bool, options: Any,
                        optimize: str | None, min_agreement: float | None) -> Any:
    """exporter/build.py's ``_build`` for image-to-text: optimum's two graphs in the seq2seq
    bundle layout, image validation and agreement, the image processor's settings."""
    from edgeformers.exporter import build
    from edgeformers.exporter.seq2seq import build_two_graphs

    if optimize:
        raise ExportError(f"--optimize {optimize}: image-to-text exports take no graph optimization yet")
    step(f"[1/4] exporting {EXPORT_TASK} (encoder_model + decoder_model_merged) with optimum")
    raw = work / "_optimum"
    build._optimum_export(checkpoint.path, raw, EXPORT_TASK, opset)
    return build_two_graphs(checkpoint, work, raw, spec, family, dtypes, atol, step, external_data, allow_degraded,
                            options, min_agreement, KIND)



#: How exporter/seq2seq.py builds and re-validates an image-to-text bundle.
KIND = TwoGraphKind(section=generation_section, validate=validate_image_to_text, agreement=_agreement,
                    extra_files=("preprocessor_config.json",))
