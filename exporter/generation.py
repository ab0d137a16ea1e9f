"""Decoder-only exports (``text-generation``): the fp32 graph checked against PyTorch
with and without past key/values, and the manifest's ``generation`` section, which
records everything the runtime's decoding loop must not guess."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from edgeformers.exporter.validate import VALIDATION_TEXTS, note_max_diff
from edgeformers.models.errors import ExportError, ValidationError

_PAST = re.compile(r"^past_key_values\.(\d+)\.(key|value)$")
#: Prompts short enough for any context window; the over-long text is left out here.
PROMPTS: tuple[str, ...] = VALIDATION_TEXTS[:4]


def generation_section(folder: Path, config: dict[str, Any], graph: Path) -> dict[str, Any]:
    """Names, KV layout and token ids of a decoder-only graph with past key/values.

    KV heads and head size are read from the graph's ``past_key_values.*`` shapes (what
    the graph really takes: GQA models have fewer KV heads than query heads)."""
    import onnx

    model = onnx.load(str(graph), load_external_data=False)
    shapes = {i.name: [d.dim_value or d.dim_param for d in i.type.tensor_type.shape.dim] for i in model.graph.input}
    outputs = [o.name for o in model.graph.output]
    past = sorted((n for n in shapes if _PAST.match(n)),
                  key=lambda n: (int(_PAST.match(n).group(1)), _PAST.match(n).group(2) != "key"))  # type: ignore[union-attr]
    present = [n.replace("past_key_values.", "present.", 1) for n in past]
    missing = [n for n in ("input_ids", "attention_mask", "logits", *present)
               if n not in shapes and n not in outputs]
    if not past or missing:
        raise ExportError(f"{graph.name}: not a decoder graph with past key/values as optimum writes it "
                          f"(missing {missing or ['past_key_values.*']})")
    kv_heads, head_size = shapes[past[0]][1], shapes[past[0]][3]
    if not isinstance(kv_heads, int) or not isinstance(head_size, int) or not kv_heads or not head_size:
        raise ExportError(f"{graph.name}: {past[0]} has no fixed head count / head size ({shapes[past[0]]})")
    generation_config = _read(folder / "generation_config.json")
    eos = generation_config.get("eos_token_id", config.get("eos_token_id"))
    return {
        "kind": "decoder-only",
        "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                   "position_ids": "position_ids" if "position_ids" in shapes else None},
        "logits": "logits",
        "past_inputs": past,
        "present_outputs": present,
        "num_layers": len(past) // 2,
        "num_heads": _first(config, "num_attention_heads", "n_head"),
        "num_kv_heads": kv_heads,
        "head_size": head_size,
        "max_positions": _first(config, "max_position_embeddings", "n_positions"),
        "bos_token_id": generation_config.get("bos_token_id", config.get("bos_token_id")),
        "eos_token_id": [eos] if isinstance(eos, int) else list(eos or []),
        "pad_token_id": generation_config.get("pad_token_id", config.get("pad_token_id")),
        "defaults": {k: v for k, v in generation_config.items() if k != "transformers_version"},
    }


def validate_decoder(checkpoint: Path, folder: Path, graph: Path, atol: float) -> dict[str, Any]:
    """fp32 logits and present key/values against PyTorch on the prompts alone and as one
    left-padded batch: first with an empty past (the prompt step), then one greedy token
    fed with the past both sides produced (a decoding step)."""
    import onnxruntime
    import torch
    import transformers

    from edgeformers.exporter.validate import reference_tokenizer

    tokenizer = reference_tokenizer(folder)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(checkpoint), trust_remote_code=False).eval()
    except Exception as err:
        raise ExportError(f"{checkpoint}: transformers could not load it as AutoModelForCausalLM: {err}") from err
    session = onnxruntime.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    section = generation_section(folder, model.config.to_dict(), graph)
    feeds = [tokenizer(text, return_tensors="np") for text in PROMPTS]
    feeds.append(tokenizer(list(PROMPTS), padding=True, return_tensors="np"))
    diffs = {"logits_without_past": 0.0, "present_without_past": 0.0, "logits_with_past": 0.0}
    with torch.inference_mode():
        for feed in feeds:
            ids, mask = feed["input_ids"].astype(np.int64), feed["attention_mask"].astype(np.int64)
            want = model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                         position_ids=torch.from_numpy(_positions(mask, ids.shape[1])), use_cache=True)
            got = _run(session, section, ids, mask, None)
            note_max_diff(diffs, "logits_without_past", got["logits"], want.logits.float().numpy())
            for layer in range(section["num_layers"]):
                keys, values = want.past_key_values[layer][:2]
                note_max_diff(diffs, "present_without_past", got[f"present.{layer}.key"], keys.float().numpy())
                note_max_diff(diffs, "present_without_past", got[f"present.{layer}.value"], values.float().numpy())
            next_ids = got["logits"][:, -1].argmax(-1)[:, None].astype(np.int64)
            mask = np.concatenate([mask, np.ones_like(next_ids)], axis=1)
            want = model(input_ids=torch.from_numpy(next_ids), attention_mask=torch.from_numpy(mask),
                         position_ids=torch.from_numpy(_positions(mask, 1)), past_key_values=want.past_key_values,
                         use_cache=True)
            got = _run(session, section, next_ids, mask, got)
            note_max_diff(diffs, "logits_with_past", got["logits"], want.logits.float().numpy())
    failures = {k: v for k, v in diffs.items() if not v <= atol}
    if failures:
        listing = ", ".join(f"{k}: {v:.3g}" for k, v in failures.items())
        raise ValidationError(f"the ONNX decoder differs from PyTorch beyond atol={atol:g} ({listing})")
    return {"reference": "pytorch", "inputs": len(feeds), "texts": list(PROMPTS), "atol": atol,
            "max_abs_diff": diffs, "passed": True}


def _positions(mask: np.ndarray, last: int) -> np.ndarray:
    """Position ids as transformers' generate makes them: cumsum(mask) - 1, 1 on padding."""
    positions = np.cumsum(mask, axis=1) - 1
    positions[mask == 0] = 1
    return positions[:, -last:]


def _run(session: Any, section: dict[str, Any], ids: np.ndarray, mask: np.ndarray,
         previous: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    feed: dict[str, np.ndarray] = {"input_ids": ids, "attention_mask": mask}
    if section["inputs"]["position_ids"]:
        feed["position_ids"] = _positions(mask, ids.shape[1])
    empty = np.zeros((ids.shape[0], section["num_kv_heads"], 0, section["head_size"]), dtype=np.float32)
    for past, present in zip(section["past_inputs"], section["present_outputs"]):
        feed[past] = empty if previous is None else previous[present]
    names = ["logits", *section["present_outputs"]]
    return dict(zip(names, session.run(names, feed)))



def _first(config: dict[str, Any], *names: str) -> int | None:
    for name in names:
        if isinstance(config.get(name), int):
            return int(config[name])
    return None


def _read(path: Path) -> dict[str, Any]:
    from edgeformers.runtime.bundle import read_json

    return read_json(path) if path.is_file() else {}
