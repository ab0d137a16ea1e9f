"""Validation of encoder-decoder exports (exporter/seq2seq.py): the fp32 encoder and
merged decoder against PyTorch, greedy decoding through the runtime's own
:class:`~edgeformers.runtime.generation.seq2seq.Seq2SeqGenerator` against ``model.generate``
token for token, and a variant's greedy-token agreement with fp32 (both of its graphs).
Anything past the family's tolerance or below the task's bar is a :class:`ValidationError`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgeformers.exporter.agreement import AGREEMENT_TEXTS, BATCH_SIZE, GREEDY_NEW_TOKENS, AgreementCheck
from edgeformers.exporter.validate import VALIDATION_TEXTS, note_max_diff
from edgeformers.models.agreement import agreement_rule
from edgeformers.models.errors import ExportError, ValidationError

#: Prompts short enough for any encoder; the over-long validation text is left out here.
PROMPTS: tuple[str, ...] = VALIDATION_TEXTS[:4]
COMPONENTS = ("encoder_model", "decoder_model_merged")


def onnx_generator(graphs: dict[str, Path], section: dict[str, Any]) -> Any:
    """The runtime's generator over a pair of graph files, on CPU."""
    from edgeformers.runtime.devices import resolve_device
    from edgeformers.runtime.generation.seq2seq import Seq2SeqGenerator
    from edgeformers.runtime.session import OnnxModel

    plan = resolve_device("cpu")
    return Seq2SeqGenerator(OnnxModel(graphs["encoder_model"], plan), OnnxModel(graphs["decoder_model_merged"], plan),
                            section, str(graphs["decoder_model_merged"].parent))


def _greedy(generator: Any, ids: np.ndarray, mask: np.ndarray, new: int, eos: list[int]) -> np.ndarray:
    """``new`` greedy tokens per row, EOS held back throughout (as min_new_tokens does)."""
    from edgeformers.runtime.generation.settings import GenerationSettings

    settings = GenerationSettings(max_new_tokens=new, min_new_tokens=new, eos_token_id=list(eos))
    return generator.generate({"input_ids": ids, "attention_mask": mask}, settings)[:, 1:]


def validate_seq2seq(checkpoint: Path, folder: Path, graphs: dict[str, Path], section: dict[str, Any],
                     atol: float) -> dict[str, Any]:
    """fp32 encoder states, decoder logits without and with past against PyTorch, and
    greedy tokens against ``generate``, on the prompts alone and as one padded batch."""
    import torch
    import transformers

    from edgeformers.exporter.validate import reference_tokenizer

    tokenizer = reference_tokenizer(folder)
    try:
        model = transformers.AutoModelForSeq2SeqLM.from_pretrained(str(checkpoint), trust_remote_code=False).eval()
    except Exception as err:
        raise ExportError(f"{checkpoint}: transformers could not load it as AutoModelForSeq2SeqLM: {err}") from err
    generator = onnx_generator(graphs, section)
    start = section["decoder_start_token_id"]
    feeds = [tokenizer(text, return_tensors="np") for text in PROMPTS]
    feeds.append(tokenizer(list(PROMPTS), padding=True, return_tensors="np"))
    diffs = {"encoder_last_hidden_state": 0.0, "logits_without_past": 0.0, "logits_with_past": 0.0}
    greedy = {"rows": 0, "identical": 0}
    plain = transformers.GenerationConfig(decoder_start_token_id=start, max_new_tokens=GREEDY_NEW_TOKENS,
                                          min_new_tokens=GREEDY_NEW_TOKENS, do_sample=False, num_beams=1,
                                          pad_token_id=section["pad_token_id"], eos_token_id=None)
    with torch.inference_mode():
        for feed in feeds:
            ids, mask = feed["input_ids"].astype(np.int64), feed["attention_mask"].astype(np.int64)
            stepper = generator.stepper({"input_ids": ids, "attention_mask": mask})
            encoded = model.get_encoder()(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
            note_max_diff(diffs, "encoder_last_hidden_state", stepper.hidden, encoded.last_hidden_state.float().numpy())
            first = np.full((ids.shape[0], 1), start, dtype=np.int64)
            want = model(encoder_outputs=encoded, attention_mask=torch.from_numpy(mask),
                         decoder_input_ids=torch.from_numpy(first), use_cache=True)
            got = stepper.step(first)
            note_max_diff(diffs, "logits_without_past", got, want.logits[:, -1].float().numpy())
            nxt = got.argmax(-1)[:, None].astype(np.int64)
            want = model(encoder_outputs=encoded, attention_mask=torch.from_numpy(mask),
                         decoder_input_ids=torch.from_numpy(nxt), past_key_values=want.past_key_values, use_cache=True)
            note_max_diff(diffs, "logits_with_past", stepper.step(nxt), want.logits[:, -1].float().numpy())
            expected = model.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                                      generation_config=plain, use_model_defaults=False).numpy()[:, 1:]
            tokens = _greedy(generator, ids, mask, GREEDY_NEW_TOKENS, section["eos_token_id"])
            greedy["rows"] += len(tokens)
            greedy["identical"] += int(sum(np.array_equal(a, b) for a, b in zip(tokens, expected)))
    failures = {k: v for k, v in diffs.items() if not v <= atol}
    if failures:
        listing = ", ".join(f"{k}: {v:.3g}" for k, v in failures.items())
        raise ValidationError(f"the ONNX encoder-decoder differs from PyTorch beyond atol={atol:g} ({listing})")
    if greedy["identical"] != greedy["rows"]:
        raise ValidationError(f"greedy decoding differs from PyTorch's generate on {greedy['rows'] - greedy['identical']} "
                              f"of {greedy['rows']} validation rows ({GREEDY_NEW_TOKENS} new tokens each)")
    return {"reference": "pytorch", "inputs": len(feeds), "texts": list(PROMPTS), "atol": atol,
            "max_abs_diff": diffs, "greedy_rows_identical": greedy["identical"], "passed": True}


class Seq2SeqAgreement:
    """The greedy-token agreement of a variant's encoder + decoder with fp32's, on the
    exporter's validation texts (batches of 8, truncated to the model's maximum)."""

    def __init__(self, folder: Path, task: str, section: dict[str, Any], fp32: dict[str, Path],
                 max_length: int | None, min_agreement: float | None = None) -> None:
        from edgeformers.exporter.agreement import check_min_agreement
        from edgeformers.exporter.validate import reference_tokenizer

        rule = agreement_rule(task)
        self.section = section
        tokenizer = reference_tokenizer(folder)
        texts = [text for text in AGREEMENT_TEXTS if text.strip()]
        positions = section.get("max_positions")
        max_length = min(max_length or positions or 0, positions or max_length or 0) or None
        limit = {"max_length": max_length} if max_length else {}
        self.feeds = [tokenizer(texts[i:i + BATCH_SIZE], padding=True, truncation=True, return_tensors="np", **limit)
                      for i in range(0, len(texts), BATCH_SIZE)]
        self.check = AgreementCheck(task=task, rule=rule, feeds=[], positions=[], examples=len(texts),
                                    threshold=rule.threshold if min_agreement is None else
                                    check_min_agreement(min_agreement),
                                    threshold_source="catalog" if min_agreement is None else "user")
        self.reference = self._run(fp32)

    def _run(self, graphs: dict[str, Path]) -> list[dict[str, np.ndarray]]:
        generator = onnx_generator(graphs, self.section)
        return [{"tokens": _greedy(generator, feed["input_ids"].astype(np.int64),
                                   feed["attention_mask"].astype(np.int64), GREEDY_NEW_TOKENS,
                                   self.section["eos_token_id"])} for feed in self.feeds]

    def measure(self, graphs: dict[str, Path]) -> dict[str, Any]:
        from edgeformers.exporter.agreement import task_agreement

        return task_agreement(self.reference, self._run(graphs), self.check)

